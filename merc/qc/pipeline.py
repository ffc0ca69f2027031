"""The QC pipeline: run checks over a corpus, cache per-utterance measurements, judge, keep or drop.

Modelled on pyannote.audio's ``Pipeline``: one object built from a config, called on a corpus with an
optional progress hook; its steps (checks) are swappable; its output is a typed result to inspect::

    from merc.data import load_corpus
    from merc.qc import QCConfig, QCPipeline
    result = QCPipeline(QCConfig(workers=2)).run(load_corpus("meld", "MELD.Raw"), "qc_out")
    result.table()                         # summary table
    result.failed("speaker")               # the failing flags of one check

Phase 1 (``measure``, per utterance) is cached in ``out_dir/cache/<check>.jsonl``: one JSON line per
utterance, flushed and fsynced as it finishes, so a rerun, or a run after a crash or Ctrl-C, skips
finished utterances (a cached measurement is reused while the media path and the check's measure-relevant
config are unchanged). A ``measure`` that raises is recorded as ``{"error": "Type: message", "raised": True}``;
later checks are not measured on utterances whose media the integrity check found missing or undecodable;
both become flags "not measured: ..." made by the pipeline. A check's own ``{"error": ...}`` result
(e.g. integrity: "missing file") goes to its ``judge``. Optionally a check is calibrated on the corpus
between the phases (``QCConfig.calibrate``). Phase 2 (``judge``) runs over the corpus and returns Flags;
every utterance gets exactly one Flag per check, and weak failures that another check vouches against are
overruled (:mod:`merc.qc.corroborate`). An utterance is dropped when a check in ``drop_on`` fails it. A
"not measured" flag is neither pass nor failure and does not drop the utterance unless
``QCConfig.drop_not_measured``; a missing or undecodable file is still dropped, because the integrity check
fails it.

The pieces, one concern per module: :mod:`merc.qc.config` (``QCConfig``), :mod:`merc.qc.registry`
(check names and factories), :mod:`merc.qc.cache` (``MeasureCache``), :mod:`merc.qc.pool` (measuring,
in-process or in a crash-tolerant process pool), :mod:`merc.qc.result` (``QCResult``, the summary); this
module orchestrates them. What is specific to one check lives on the check (see :mod:`merc.qc.base`).
"""
from __future__ import annotations

import inspect
import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import is_dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from merc.data.schema import Corpus
from merc.errors import ConfigError, InputError
from merc.qc.base import Check, Flag, QCItem, jsonable
from merc.qc.cache import MeasureCache, measure_key
from merc.qc.config import QCConfig
from merc.qc.corroborate import corroborate
from merc.qc.pool import MeasurePool, measure_one
from merc.qc.registry import BUILTIN_CHECKS, build_check
from merc.qc.result import NOT_MEASURED, QCResult, summarize

log = logging.getLogger(__name__)
Hook = Callable[..., Any]  # hook(step, completed=i, total=n)


# helpers

def build_items(corpus: Corpus) -> list[QCItem]:
    """One QCItem per utterance, corpus order (splits, then conversations).

    ``media`` is the file audio checks decode: the clip (MELD, JSONL) or the turn wav (IEMOCAP).
    ``extra`` holds ``audio``, ``video`` and ``video_segment``: ``[start, end]`` when the video is a
    recording shared by several utterances of the conversation (IEMOCAP's dialogue avi), else None.
    """
    items = []
    for split, convs in corpus.splits.items():
        for conv in convs:
            shared = Counter(u.video for u in conv if u.video)
            for u in conv:
                segment = None
                if u.video and shared[u.video] > 1 and u.start is not None and u.end is not None:
                    segment = [u.start, u.end]
                items.append(QCItem(utterance=u, conversation_id=conv.conversation_id, split=split,
                                    media=u.audio or u.video,
                                    extra={"audio": u.audio, "video": u.video, "video_segment": segment}))
    seen: set[str] = set()
    for it in items:
        if it.utterance_id in seen:
            raise InputError(f"corpus {corpus.name!r}: duplicate utterance_id {it.utterance_id!r} "
                             f"(split {it.split}); QC needs unique ids")
        seen.add(it.utterance_id)
    return items


def media_gate(integrity: Check | None, m: dict[str, Any] | None) -> str | None:
    """Why later checks cannot measure this utterance (from its integrity measurement), or None.

    The integrity check may define ``gate(measurement) -> str | None``; otherwise a missing file
    (``failed == "file"`` or ``exists`` false), an undecodable one (``failed == "decode"`` or
    ``decodable`` false) or any integrity measurement error block the media checks.
    """
    if integrity is None or m is None:
        return None
    if hasattr(integrity, "gate"):
        return integrity.gate(m)
    if m.get("exists") is False or m.get("failed") == "file":
        return "media missing"
    if m.get("decodable") is False or m.get("failed") == "decode":
        return "media undecodable"
    if "error" in m:
        return "media unusable (integrity could not measure it)"
    return None


def _unmeasured(m: dict[str, Any]) -> bool:
    return bool(m.get("gated") or m.get("raised"))


def _accepted(fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments ``fn`` accepts."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


# classes

class QCPipeline:
    """Integrity -> alignment -> speaker -> faces over a corpus (see the module docstring)."""

    def __init__(self, config: QCConfig | None = None):
        self.config = config or QCConfig()
        self._checks: dict[str, Check] = {}
        self._pool: MeasurePool | None = None

    # --- construction
    def spec(self, name: str) -> Any:
        return self.config.factories.get(name, BUILTIN_CHECKS.get(name))

    def check(self, name: str) -> Check:
        """The main-process instance of a check (built once; used for judging and workers=1)."""
        if name not in self._checks:
            chk = build_check(self.spec(name), self.config.check_configs.get(name))
            cfg = getattr(chk, "config", None)
            if self.config.fps is not None and is_dataclass(cfg) and hasattr(cfg, "fps") \
                    and cfg.fps != self.config.fps:
                chk = build_check(self.spec(name), replace(cfg, fps=self.config.fps))
            self._checks[name] = chk
        return self._checks[name]

    def check_config(self, name: str) -> Any:
        return getattr(self.check(name), "config", self.config.check_configs.get(name))

    # --- phase 1
    def _shutdown(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel=cancel)

    def _measure_parallel(self, name: str, todo: list[QCItem]):
        if self._pool is None:
            specs = {n: (self.spec(n), self.check_config(n)) for n in self.config.checks}
            self._pool = MeasurePool(self.config.workers, specs)
        return self._pool.measure(name, todo)

    def _measure_check(self, name: str, items: list[QCItem], cache_dir: Path, gates: dict[str, str],
                       progress: bool, hook: Hook | None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        cache = MeasureCache(cache_dir / f"{name}.jsonl")
        cached = cache.load()
        key = measure_key(self.check(name))
        out: dict[str, dict[str, Any]] = {}
        todo: list[QCItem] = []
        n_cached = stale = 0
        for it in items:
            uid = it.utterance_id
            if uid in gates:
                out[uid] = {"error": f"{NOT_MEASURED}: {gates[uid]}", "gated": True}
            elif uid in cached and cached[uid].get("media") == it.media and cached[uid].get("key") == key:
                out[uid] = cached[uid]["result"]
                n_cached += 1
            else:
                stale += uid in cached
                todo.append(it)
        if stale:
            log.info("qc %s: %d cached measurement(s) were made with another config or media path; "
                     "measuring them again", name, stale)
        seconds = sum(cached[u].get("seconds", 0.0) for u in out if u in cached and u not in gates)
        by_id = {it.utterance_id: it for it in todo}
        t0 = time.perf_counter()
        bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"qc {name}", unit="utt",
                   disable=not progress, leave=True, dynamic_ncols=True)
        try:
            if self.config.workers > 1 and len(todo) > 1:
                results = self._measure_parallel(name, todo)
            else:
                chk = self.check(name)
                results = ((it.utterance_id, *measure_one(chk, it)) for it in todo)
            for uid, result, secs in results:
                out[uid] = result
                seconds += secs
                cache.append({"utterance_id": uid, "media": by_id[uid].media, "key": key,
                              "seconds": round(secs, 4), "result": result})
                bar.update(1)
                if hook is not None:
                    hook(name, completed=bar.n, total=len(items))
        except BaseException:
            self._shutdown(cancel=True)
            raise
        finally:
            cache.close()
            bar.close()
        timing = {"measured": len(todo), "cached": n_cached, "gated": sum(u in gates for u in out),
                  "measure_seconds": round(seconds, 3), "wall_seconds": round(time.perf_counter() - t0, 3)}
        return out, timing

    # --- phase 2
    def _judge(self, name: str, items: list[QCItem], meas: dict[str, dict[str, Any]],
               earlier: list[Flag]) -> list[Flag]:
        """``check.judge`` on the measured items; the pipeline flags the unmeasured ones itself.

        Unmeasured = gated by integrity or ``measure`` raised. A measurement the check itself returned
        as ``{"error": ...}`` goes to its ``judge``, which knows what it means (integrity: file missing).

        ``earlier``: flags of the checks judged before; failures of ``gallery_exclude_from`` checks go to
        a judge that takes ``exclude_from_gallery`` (a swapped speaker must not enter a face gallery).
        """
        ok = [it for it in items if not _unmeasured(meas[it.utterance_id])]
        chk = self.check(name)
        kwargs: dict[str, Any] = {}
        if "exclude_from_gallery" in inspect.signature(chk.judge).parameters:
            kwargs["exclude_from_gallery"] = sorted({f.utterance_id for f in earlier if not f.passed
                                                     and f.check in self.config.gallery_exclude_from})
        got = chk.judge(ok, {it.utterance_id: meas[it.utterance_id] for it in ok}, **kwargs) if ok else []
        by_uid: dict[str, Flag] = {}
        for f in got:
            if f.check != name:  # the registered name is the one users select and read in reports
                f = replace(f, check=name)
            if f.utterance_id in by_uid:
                raise RuntimeError(f"check {name!r} returned two flags for utterance {f.utterance_id!r}")
            by_uid[f.utterance_id] = f
        flags = []
        for it in items:
            uid, m = it.utterance_id, meas[it.utterance_id]
            if _unmeasured(m):
                reason = m["error"] if m["error"].startswith(NOT_MEASURED) else f"{NOT_MEASURED}: {m['error']}"
                flags.append(Flag(uid, name, False, None, None, reason, measured=False))
            elif uid in by_uid:
                flags.append(by_uid[uid])
            else:
                flags.append(Flag(uid, name, False, None, None, f"{NOT_MEASURED}: check {name!r} gave no flag",
                                  measured=False))
        return flags

    def _calibrate(self, name: str, items: list[QCItem], meas: dict[str, dict[str, Any]],
                   progress: bool) -> dict[str, Any]:
        """Fit a check's thresholds on this corpus from its measurements (before judging): its
        ``calibrate(items, measurements, *, seed, progress)`` on up to ``calibrate_max`` utterances
        measured without error."""
        chk = self.check(name)
        if not hasattr(chk, "calibrate"):
            raise ConfigError(f"check {name!r} cannot be calibrated (it has no calibrate method)")
        usable = [it for it in items if "error" not in meas[it.utterance_id] and not _unmeasured(meas[it.utterance_id])]
        if len(usable) > self.config.calibrate_max:
            usable = sorted(random.Random(self.config.seed).sample(usable, self.config.calibrate_max),
                            key=items.index)
        if len(usable) < 2:
            raise InputError(f"cannot calibrate {name!r}: only {len(usable)} utterance(s) were measured without error")
        t0 = time.perf_counter()
        sub = {it.utterance_id: meas[it.utterance_id] for it in usable}
        cal = chk.calibrate(usable, sub, **_accepted(chk.calibrate, seed=self.config.seed, progress=progress))
        info = cal.to_dict() if hasattr(cal, "to_dict") else cal
        return {"utterances": len(usable), "seconds": round(time.perf_counter() - t0, 3), **jsonable(info)}

    # --- the whole run
    def run(self, corpus: Corpus, out_dir: str | Path, *, progress: bool = True, hook: Hook | None = None,
            write: bool = True) -> QCResult:
        """Measure (cached, resumable), judge, decide kept/dropped and (``write``) write the outputs.

        ``hook(step, completed=i, total=n)`` is called after each measured utterance (step = check name)
        and once per judged check (step = ``"judge:<check>"``).
        """
        out_dir = Path(out_dir).expanduser().resolve()
        cache_dir = out_dir / "cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        items = build_items(corpus)
        if not items:
            raise InputError(f"corpus {corpus.name!r} has no utterances to check")
        measurements: dict[str, dict[str, dict[str, Any]]] = {}
        timings: dict[str, dict[str, Any]] = {}
        t_start = time.perf_counter()
        try:
            for name in self.config.checks:
                gates: dict[str, str] = {}
                if name != "integrity" and "integrity" in measurements and self.config.gate_on_integrity:
                    integ = self.check("integrity")
                    for uid, m in measurements["integrity"].items():
                        g = media_gate(integ, m)
                        if g:
                            gates[uid] = g
                measurements[name], timings[name] = self._measure_check(name, items, cache_dir, gates,
                                                                        progress, hook)
        finally:
            self._shutdown()
        calibration = {name: self._calibrate(name, items, measurements[name], progress)
                       for name in self.config.calibrate}
        flags: list[Flag] = []
        for k, name in enumerate(self.config.checks):
            t0 = time.perf_counter()
            flags.extend(self._judge(name, items, measurements[name], flags))
            timings[name]["judge_seconds"] = round(time.perf_counter() - t0, 3)
            if hook is not None:
                hook(f"judge:{name}", completed=k + 1, total=len(self.config.checks))
        flags, corroboration = corroborate(flags, {k: [v for v in vs if v in self.config.checks]
                                                   for k, vs in self.config.corroborate.items()
                                                   if k in self.config.checks})
        failed_by: dict[str, list[str]] = defaultdict(list)
        for f in flags:
            if (not f.passed and f.check in self.config.dropping
                    and (f.measured or self.config.drop_not_measured)):
                failed_by[f.utterance_id].append(f.check)
        kept = [it.utterance_id for it in items if it.utterance_id not in failed_by]
        dropped = {it.utterance_id: failed_by[it.utterance_id] for it in items if it.utterance_id in failed_by}
        artifacts = {name: dict(self.check(name).artifacts()) for name in self.config.checks
                     if hasattr(self.check(name), "artifacts")}
        timings["total_seconds"] = round(time.perf_counter() - t_start, 3)
        result = QCResult(flags=flags, items=items, kept=kept, dropped=dropped, summary={},
                          measurements=measurements, artifacts=artifacts, corpus=corpus)
        result.summary = summarize(result, self.config, {n: self.check_config(n) for n in self.config.checks},
                                   timings)
        if corroboration:
            result.summary["corroboration"] = corroboration
        if calibration:
            result.summary["calibration"] = calibration
        if write:
            from merc.qc.report import write_outputs
            write_outputs(result, out_dir)
        return result
