"""Features: the one container of stage-1 features, whatever the modality or encoder.

Row ``i`` of ``X`` belongs to utterance ``ids[i]``; ``present[i]`` is False where the encoder had no usable
input for it (the row is zeros and ``reasons[i]`` says why: "missing file <file>", "no face in N/N sampled
frames", "empty text", …). ``meta`` records where the rows came from (encoder, fingerprint, seconds, cache hit).

    feats["dia0_utt1"]            (dim,) row (zeros when absent)
    feats.take(ids)               (len(ids), dim) rows in the given order
    feats.take_present(ids)       (len(ids),) bool
    feats.table()                 {utterance id: row or None when absent}
    concat([(name, feats), ...])  several encoders of one modality side by side
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

# helpers


def reason_kind(reason: str) -> str:
    """A reason without its file names and numbers, for counting ("no face in N/N sampled frames of <file>")."""
    path = r"(?=[^\s:]*[A-Za-z])[^\s:]*[/\\][^\s:]*|\S+\.(?:mp4|avi|wav|mkv|mov|webm|flac|mp3|m4a)\b"
    r = re.sub(path, "<file>", reason)
    r = re.sub(r"\d+(?:\.\d+)?", "N", r)
    r = re.sub(r"utterance \S+", "utterance <id>", r)
    return r.strip()

# classes


@dataclass
class Features:
    """Features of one encoder (or several, concatenated) for a list of utterances (module docstring)."""
    ids: list[str]
    X: np.ndarray  # (n, dim) float32; absent rows are zeros
    present: np.ndarray | None = None  # (n,) bool; None: all present
    reasons: list[str | None] | None = None  # None where present, else why not; None: no reasons
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.ids = list(self.ids)
        self.present = np.ones(n, bool) if self.present is None else np.asarray(self.present, bool)
        self.reasons = [None] * n if self.reasons is None else list(self.reasons)
        if self.X.ndim != 2 or self.X.shape[0] != n:
            raise ValueError(f"Features: X has shape {self.X.shape} but there are {n} ids")
        if self.present.shape != (n,) or len(self.reasons) != n:
            raise ValueError(f"Features: {n} ids but present {self.present.shape}, {len(self.reasons)} reasons")
        self.index = {u: i for i, u in enumerate(self.ids)}

    @classmethod
    def from_table(cls, ids: Sequence[str], table: Mapping[str, "np.ndarray | None"],
                   reasons: Mapping[str, str] | None = None, meta: dict[str, Any] | None = None) -> "Features":
        """From ``{utterance id: (dim,) row, or None / missing when absent}`` (e.g. precomputed features)."""
        rows = [table.get(u) for u in ids]
        dim = next((int(np.asarray(r).size) for r in rows if r is not None), 0)
        X = np.zeros((len(ids), dim), np.float32)
        present = np.zeros(len(ids), bool)
        why: list[str | None] = []
        for i, (u, r) in enumerate(zip(ids, rows)):
            if r is None:
                why.append((reasons or {}).get(u) or "no feature")
                continue
            r = np.asarray(r, np.float32).reshape(-1)
            if r.size != dim:
                raise ValueError(f"utterance {u!r} has a {r.size}-d row, other utterances {dim}-d")
            X[i], present[i] = r, True
            why.append(None)
        return cls(list(ids), X, present, why, dict(meta or {}))

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, uid: object) -> bool:
        return uid in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def _row(self, uid: str) -> int:
        try:
            return self.index[uid]
        except KeyError:
            raise KeyError(f"utterance {uid!r} is not in these features ({len(self)} utterances of "
                           f"{self.meta.get('corpus', '?')}/{self.meta.get('split', '?')})") from None

    def __getitem__(self, uid: str) -> np.ndarray:
        return self.X[self._row(uid)]

    def get(self, uid: str, default: np.ndarray | None = None) -> np.ndarray | None:
        return self.X[self.index[uid]] if uid in self.index else default

    def take(self, ids: Iterable[str]) -> np.ndarray:
        """Rows for ``ids`` in the given order, ``(len(ids), dim)``."""
        rows = np.asarray([self._row(u) for u in ids], dtype=np.int64)
        return self.X[rows].reshape(len(rows), self.dim)

    def take_present(self, ids: Iterable[str]) -> np.ndarray:
        """Presence for ``ids`` in the given order, ``(len(ids),)`` bool."""
        return np.asarray([self.present[self._row(u)] for u in ids], bool)

    def table(self) -> dict[str, np.ndarray | None]:
        """``{utterance id: (dim,) row, or None when absent}``."""
        return {u: (self.X[i] if self.present[i] else None) for i, u in enumerate(self.ids)}

    def summary(self) -> dict[str, Any]:
        """{"n", "present", "absent", "reasons": {kind: count}} (most common first)."""
        kinds = Counter(reason_kind(r or "absent") for r, p in zip(self.reasons, self.present) if not p)
        return {"n": len(self.ids), "present": int(self.present.sum()), "absent": int((~self.present).sum()),
                "reasons": dict(kinds.most_common())}


def concat(parts: Sequence[tuple[str, Features]], *, ids: Sequence[str] | None = None) -> Features:
    """Several encoders' features side by side, ``(n, sum of dims)``, rows in ``ids`` order (default: the first
    part's). An utterance is present only when every part has a finite row for it: a half-filled row would look
    like real values to a model. Its reason is that of the first part (in order) without it, prefixed with the
    part's name. ``meta["parts"]`` holds each part's meta, ``meta["fingerprints"]`` their fingerprints."""
    if not parts:
        raise ValueError("concat: no features given")
    ids = list(parts[0][1].ids if ids is None else ids)
    cols, present = [], np.ones(len(ids), bool)
    reasons: list[str | None] = [None] * len(ids)
    for name, f in parts:
        X, ok = f.take(ids), f.take_present(ids)
        finite = np.isfinite(X).all(axis=1)
        why = {u: f.reasons[f.index[u]] for u in ids}
        for i, u in enumerate(ids):
            if present[i] and not (ok[i] and finite[i]):
                reasons[i] = f"{name}: {why[u] or 'no feature'}" if not ok[i] else f"{name}: non-finite values"
        present &= ok & finite
        cols.append(X)
    X = np.concatenate(cols, axis=1).astype(np.float32) if cols else np.zeros((len(ids), 0), np.float32)
    X[~present] = 0.0
    meta = {"parts": {n: f.meta for n, f in parts},
            "fingerprints": [str(f.meta.get("fingerprint", "")) for _, f in parts]}
    return Features(ids, X, present, reasons, meta)
