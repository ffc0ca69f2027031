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
from merc.qc.pool import MeasurePool, Work, gated, measure_batch, measure_on, media_gate  # noqa: F401
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

    def __init__(self, config: QCConfig | None = None, *, executor: Any = None):
        """``executor``: a :mod:`merc.executors` executor other than local measures the batches on its workers
        (``config.workers`` is then unused); judging, the cache and the report stay here."""
        self.config = config or QCConfig()
        self.executor = executor if getattr(executor, "name", "local") != "local" else None
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

    def _measure_all(self, items: list[QCItem], cache_dir: Path, progress: bool, hook: Hook | None
                     ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
        """Phase 1 for every check: cached measurements are reused, the rest measured a batch of utterances at a
        time with every check that still needs them (:func:`merc.qc.pool.measure_batch`: each clip decoded once
        for all checks), in this process or in the worker pool. Integrity (cached or measured) gates the others."""
        names = list(self.config.checks)
        gate = self.config.gate_on_integrity and "integrity" in names
        integ = self.check("integrity") if gate else None
        caches = {n: MeasureCache(cache_dir / f"{n}.jsonl") for n in names}
        cached = {n: caches[n].load() for n in names}
        keys = {n: measure_key(self.check(n)) for n in names}
        out: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
        secs: dict[str, float] = {n: 0.0 for n in names}
        n_cached = {n: 0 for n in names}
        stale = {n: 0 for n in names}
        work: list[Work] = []
        by_id = {it.utterance_id: it for it in items}

        def hit(n: str, it: QCItem) -> dict[str, Any] | None:
            c = cached[n].get(it.utterance_id)
            return c if c is not None and c.get("media") == it.media and c.get("key") == keys[n] else None

        for it in items:
            uid, need = it.utterance_id, []
            m_int = None
            if gate:
                c = hit("integrity", it)
                if c is not None:
                    m_int = out["integrity"][uid] = c["result"]
                    n_cached["integrity"] += 1
                    secs["integrity"] += c.get("seconds", 0.0)
                else:
                    stale["integrity"] += uid in cached["integrity"]
                    need.append("integrity")
            why = media_gate(integ, m_int) if gate and m_int is not None else None
            for n in names:
                if gate and n == "integrity":
                    continue
                if why:
                    out[n][uid] = gated(why)
                    continue
                c = hit(n, it)
                if c is not None:
                    out[n][uid] = c["result"]
                    n_cached[n] += 1
                    secs[n] += c.get("seconds", 0.0)
                else:
                    stale[n] += uid in cached[n]
                    need.append(n)
            if need:
                work.append((it, need, m_int))
        for n in names:
            if stale[n]:
                log.info("qc %s: %d cached measurement(s) were made with another config or media path; "
                         "measuring them again", n, stale[n])
        measured = {n: sum(n in need for _, need, _ in work) for n in names}
        need_of = {it.utterance_id: set(need) for it, need, _ in work}
        bars = {n: tqdm(total=len(items), initial=len(items) - measured[n], desc=f"qc {n}", unit="utt",
                        disable=not progress, leave=True, dynamic_ncols=True) for n in names}
        size = max(1, self.config.batch_size)
        order = sorted(names, key=lambda n: n != "integrity")  # integrity first: it gates the others
        batches = [work[i:i + size] for i in range(0, len(work), size)]
        t0 = time.perf_counter()
        try:
            if self.executor is not None and work:  # batches on the executor's workers, as they finish
                specs = {n: (self.spec(n), self.check_config(n)) for n in names}
                results = measure_on(self.executor, specs, order, batches, gate)
            elif self.config.workers > 1 and len(work) > 1:
                if self._pool is None:
                    specs = {n: (self.spec(n), self.check_config(n)) for n in names}
                    self._pool = MeasurePool(self.config.workers, specs)
                results = self._pool.measure_batches(order, batches, gate)
            else:
                checks = {n: self.check(n) for n in names}
                results = (r for b in batches for r in measure_batch(checks, order, b, gate=gate))
            for uid, name, result, sec in results:
                out[name][uid] = result
                if result.get("gated"):
                    measured[name] -= 1
                else:
                    secs[name] += sec
                    caches[name].append({"utterance_id": uid, "media": by_id[uid].media, "key": keys[name],
                                         "seconds": round(sec, 4), "result": result})
                if name == "integrity" and gate:  # a fresh integrity result may gate checks found in the cache
                    why = media_gate(integ, result)
                    for n in names:
                        if why and n != "integrity" and n not in need_of[uid] and uid in out[n] \
                                and not out[n][uid].get("gated"):
                            out[n][uid] = gated(why)
                            n_cached[n] -= 1
                bars[name].update(1)
                if hook is not None:
                    hook(name, completed=bars[name].n, total=len(items))
        except BaseException:
            self._shutdown(cancel=True)
            raise
        finally:
            for n in names:
                caches[n].close()
                bars[n].close()
        wall = time.perf_counter() - t0
        total = sum(secs[n] for n in names) or 1.0
        timings = {n: {"measured": measured[n], "cached": n_cached[n],
                       "gated": sum(bool(m.get("gated")) for m in out[n].values()),
                       "measure_seconds": round(secs[n], 3),
                       # checks share the measuring loop: its wall time, shared out by measuring time
                       "wall_seconds": round(wall * secs[n] / total, 3)} for n in names}
        return out, timings

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
        t_start = time.perf_counter()
        try:
            measurements, timings = self._measure_all(items, cache_dir, progress, hook)
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
