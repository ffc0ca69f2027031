"""The per-check measurement cache of the QC pipeline: one append-only JSONL file per check.

Each line ``{"utterance_id", "media", "key", "seconds", "result"}`` is flushed and fsynced when written,
so a rerun (or a run after a crash or Ctrl-C) skips finished utterances. A cached measurement is reused
while the media path and :func:`measure_key` (the check's measure-relevant config) are unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from merc.qc.base import Check, config_dict, jsonable

log = logging.getLogger(__name__)


def measure_key(check: Check) -> str:
    """A short hash of the check's class and of the config fields that affect ``check.measure``.

    Those fields are the check's ``measure_fields``; a check without them hashes its whole config (safe:
    any change remeasures). A check's ``measure_version`` (when set) is hashed too."""
    cfg = config_dict(getattr(check, "config", None))
    fields = getattr(check, "measure_fields", None)
    if fields is not None and isinstance(cfg, dict):
        cfg = {k: cfg[k] for k in fields if k in cfg}
    blob = json.dumps(jsonable(cfg), sort_keys=True, default=repr)
    version = getattr(check, "measure_version", None)  # a check whose measure changed, under the same config
    if version:
        blob += f"|{version}"
    return hashlib.sha1(f"{type(check).__module__}.{type(check).__qualname__}|{blob}".encode()).hexdigest()[:12]


class MeasureCache:
    """Append-only JSONL cache of one check's measurements:
    ``{"utterance_id", "media", "key", "seconds", "result"}`` (``key``: see :func:`measure_key`).

    Each line is flushed and fsynced when written. On load, a truncated last line (a crash mid-write)
    is ignored and cut off so that appends start on a clean line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = None

    def load(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return records
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        lines = data.split(b"\n")
        for i, raw in enumerate(lines):
            is_last = i == len(lines) - 1
            end = pos + len(raw) + (0 if is_last else 1)
            if raw.strip():
                try:
                    rec = json.loads(raw)
                    ok = isinstance(rec, dict) and "utterance_id" in rec and "result" in rec
                except (json.JSONDecodeError, UnicodeDecodeError):
                    ok = False
                if ok and not is_last:  # a last line without "\n" is a partial write
                    records[rec["utterance_id"]] = rec
                    good_end = end
                elif not is_last and not ok:
                    log.warning("%s:%d: unreadable cache line ignored", self.path, i + 1)
                    good_end = end
            elif not is_last:
                good_end = end
            pos = end
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return records

    def append(self, record: dict[str, Any]) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open across appends)
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
