"""The QC pipeline: run checks over a corpus, cache per-utterance measurements, judge, keep or drop.

Modelled on pyannote.audio's ``Pipeline``: one object built from a config, called on a corpus with an
optional progress hook; its steps (checks) are swappable; its output is a typed result to inspect::

    from merc.data import load_corpus
    from merc.qc import QCConfig, QCPipeline
    result = QCPipeline(QCConfig(workers=2)).run(load_corpus("meld", "MELD.Raw"), "qc_out")
    print(result)                          # summary table
    result.failed("speaker")               # the failing flags of one check

Phase 1 (``measure``, per utterance) is cached in ``out_dir/cache/<check>.jsonl``: one JSON line per
utterance, flushed and fsynced as it finishes, so a rerun, or a run after a crash or Ctrl-C, skips
finished utterances (a cached measurement is reused while the media path and the check's measure-relevant
config are unchanged). A ``measure`` that raises is recorded as ``{"error": "Type: message", "raised": True}``;
later checks are not measured on utterances whose media the integrity check found missing or undecodable;
both become flags "not measured: ..." made by the pipeline. A check's own ``{"error": ...}`` result
(e.g. integrity: "missing file") goes to its ``judge``. Optionally a check is calibrated on the corpus
between the phases (``QCConfig.calibrate``). Phase 2 (``judge``) runs over the corpus and returns Flags;
every utterance gets exactly one Flag per check. An utterance is dropped when a check in ``drop_on``
fails it (including "not measured").
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import inspect
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from merc.data.schema import Conversation, Corpus
from merc.qc.base import Check, Flag, QCItem

DEFAULT_CHECKS = ("integrity", "alignment", "speaker", "faces")
BUILTIN_CHECKS = {  # name -> "module:factory"; the factory takes the check's config (or nothing)
    "integrity": "merc.qc.integrity:IntegrityCheck",
    "alignment": "merc.qc.alignment:AlignmentCheck",
    "speaker": "merc.qc.speaker:SpeakerIdentityCheck",
    "faces": "merc.qc.faces:FaceCheck",
}
# Config fields that change what ``measure`` returns (the rest only change ``judge``): a cached measurement
# is reused only when these are unchanged. A check may declare its own ``measure_fields``; a check with
# neither uses its whole config (safe: any change remeasures).
MEASURE_FIELDS: dict[str, tuple[str, ...]] = {
    "integrity": ("sample_rate", "vad_threshold", "vad_max_seconds", "require_video"),
    "speaker": ("sr", "max_seconds"),
    "faces": ("fps", "max_frames", "detector", "upsample", "min_score", "min_iou", "link_distance", "max_gap"),
    "alignment": ("asr", "whisper_model", "max_seconds", "align_beam"),
}
NOT_MEASURED = "not measured"
Hook = Callable[..., Any]  # hook(step, completed=i, total=n)


@dataclass
class QCConfig:
    """What to run and how.

    checks: check names, run in this order (integrity first: it gates the media checks).
    check_configs: name -> that check's config object (thresholds); missing -> the check's default.
    factories: name -> "module:Class" or a picklable callable(config) -> Check; overrides built-ins.
    workers: processes for phase 1 (1 = in this process; >1 = a spawn pool, checks built once per worker).
    fps: frames per second for video checks (set on every check config that has an ``fps`` field).
    drop_on: checks whose failures drop an utterance from the manifest; None = every check run.
    gate_on_integrity: skip later checks on utterances whose media integrity found unusable.
    gallery_exclude_from: checks whose failures are kept out of reference galleries of later checks
        (passed as ``exclude_from_gallery`` to a ``judge`` that accepts it, e.g. faces after speaker).
    calibrate: checks whose thresholds are fitted on this corpus between measuring and judging (alignment:
        ``calibrate_alignment`` on true vs deranged transcript pairs; no labels needed).
    calibrate_max: calibrate on at most this many measured utterances (a seeded random sample).
    seed: for that sample and the calibration's derangement.
    drop_not_measured: also drop utterances a dropping check could not measure (``Flag.measured`` False);
        by default "not measured" is its own state and does not drop (a missing or undecodable file is
        still dropped: the integrity check fails it).
    """
    checks: list[str] = field(default_factory=lambda: list(DEFAULT_CHECKS))
    check_configs: dict[str, Any] = field(default_factory=dict)
    factories: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    fps: float | None = None
    drop_on: list[str] | None = None
    gate_on_integrity: bool = True
    gallery_exclude_from: list[str] = field(default_factory=lambda: ["speaker"])
    calibrate: list[str] = field(default_factory=list)
    calibrate_max: int = 300
    seed: int = 0
    drop_not_measured: bool = False

    def __post_init__(self) -> None:
        if len(set(self.checks)) != len(self.checks) or not self.checks:
            raise ValueError(f"QCConfig.checks must be a non-empty list of distinct names, got {self.checks}")
        unknown = [c for c in self.checks if c not in BUILTIN_CHECKS and c not in self.factories]
        if unknown:
            raise ValueError(f"unknown QC check(s) {unknown}; choose from {sorted(BUILTIN_CHECKS)} "
                             "or register a factory in QCConfig.factories")
        if self.workers < 1:
            raise ValueError(f"QCConfig.workers must be >= 1, got {self.workers}")
        bad_cal = [c for c in self.calibrate if c not in self.checks]
        if bad_cal:
            raise ValueError(f"QCConfig.calibrate names check(s) {bad_cal} that are not run ({self.checks})")
        bad_drop = [c for c in (self.drop_on or []) if c not in self.checks]
        if bad_drop:
            raise ValueError(f"QCConfig.drop_on names check(s) {bad_drop} that are not run ({self.checks})")

    @property
    def dropping(self) -> list[str]:
        return list(self.checks) if self.drop_on is None else list(self.drop_on)


@dataclass
class QCResult:
    """What a QC run found: one Flag per utterance per check, the kept/dropped ids and a summary."""
    flags: list[Flag]
    items: list[QCItem]
    kept: list[str]  # utterance ids, corpus order
    dropped: dict[str, list[str]]  # utterance id -> the dropping checks that failed it
    summary: dict[str, Any]
    measurements: dict[str, dict[str, dict[str, Any]]] = field(repr=False, default_factory=dict)
    speaker_tracks: Any = None  # from the faces check: utterance id -> the labelled speaker's face track
    face_galleries: dict[str, list[str]] | None = None  # from the faces check: speaker -> gallery utterance ids
    corpus: Corpus | None = field(default=None, repr=False)

    def by_check(self, check: str) -> list[Flag]:
        if check not in self.summary["checks"]:
            raise KeyError(f"no check {check!r} in this result; it has {list(self.summary['checks'])}")
        return [f for f in self.flags if f.check == check]

    def failed(self, check: str | None = None) -> list[Flag]:
        return [f for f in (self.flags if check is None else self.by_check(check)) if not f.passed]

    def flags_for(self, utterance_id: str) -> list[Flag]:
        return [f for f in self.flags if f.utterance_id == utterance_id]

    def table(self) -> str:
        """A plain-text table: per check checked / passed / failed / not measured; kept vs dropped."""
        rows = [("check", "checked", "passed", "failed", "not measured")]
        for name, c in self.summary["checks"].items():
            t = c["total"]
            rows.append((name, str(t["checked"]), str(t["passed"]), str(t["failed"]), str(t["not_measured"])))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for split, s in self.summary["splits"].items():
            lines.append(f"{split}: kept {s['kept']} of {s['utterances']} utterances, dropped {s['dropped']}")
        for name, cal in self.summary.get("calibration", {}).items():
            rule = " and ".join(f"{m} {'<=' if m == 'wer' else '>='} {t:.3g}"
                                for m, t in cal.get("rule_thresholds", {}).items())
            lines.append(f"{name} calibrated on {cal['utterances']} utterances: pass when {rule or '?'}"
                         + (f" (balanced accuracy {cal['rule_balanced_accuracy']:.2f} on true vs deranged "
                            "transcripts)" if "rule_balanced_accuracy" in cal else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# helpers

def resolve_factory(spec: Any) -> Callable[..., Check]:
    """``"module:Name"`` -> the object; a callable is returned as is."""
    if callable(spec):
        return spec
    module, _, name = str(spec).partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"cannot load QC check {spec!r}: {e}") from e


def build_check(spec: Any, config: Any) -> Check:
    factory = resolve_factory(spec)
    return factory(config) if config is not None else factory()


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
            raise ValueError(f"corpus {corpus.name!r}: duplicate utterance_id {it.utterance_id!r} "
                             f"(split {it.split}); QC needs unique ids")
        seen.add(it.utterance_id)
    return items


def jsonable(x: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain JSON types (for measurements)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return x.tolist()
    return x


def measure_one(check: Check, item: QCItem) -> tuple[dict[str, Any], float]:
    """Run ``check.measure`` on one item; an exception becomes ``{"error": "Type: message", "raised": True}``."""
    t0 = time.perf_counter()
    try:
        result = check.measure(item)
        if not isinstance(result, dict):
            raise TypeError(f"{type(check).__name__}.measure returned {type(result).__name__}, expected a dict")
        result = jsonable(result)
        json.dumps(result)
    except Exception as e:  # one bad file never stops the run
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        result = {"error": f"{type(e).__name__}: {msg}" if msg else type(e).__name__, "raised": True}
    return result, time.perf_counter() - t0


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


def measure_key(name: str, check: Check) -> str:
    """A short hash of the config fields that affect ``check.measure`` (see MEASURE_FIELDS)."""
    cfg = _config_dict(getattr(check, "config", None))
    fields = getattr(check, "measure_fields", None) or MEASURE_FIELDS.get(name)
    if fields is not None and isinstance(cfg, dict):
        cfg = {k: cfg[k] for k in fields if k in cfg}
    blob = json.dumps(jsonable(cfg), sort_keys=True, default=repr)
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
                    print(f"warning: {self.path}:{i + 1}: unreadable cache line ignored", file=sys.stderr)
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
            self._f = open(self.path, "a", encoding="utf-8")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


# worker side (a spawn pool: each process builds its checks once, lazily)

_WORKER_SPECS: dict[str, tuple[Any, Any]] = {}
_WORKER_CHECKS: dict[str, Check] = {}


def _worker_init(specs: dict[str, tuple[Any, Any]]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _WORKER_SPECS.update(specs)


def _worker_measure(name: str, item: QCItem) -> tuple[str, dict[str, Any], float]:
    if name not in _WORKER_CHECKS:
        spec, config = _WORKER_SPECS[name]
        _WORKER_CHECKS[name] = build_check(spec, config)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
    result, secs = measure_one(_WORKER_CHECKS[name], item)
    return item.utterance_id, result, secs


# classes

class QCPipeline:
    """Integrity -> alignment -> speaker -> faces over a corpus (see the module docstring)."""

    def __init__(self, config: QCConfig | None = None):
        self.config = config or QCConfig()
        self._checks: dict[str, Check] = {}
        self._executor: cf.ProcessPoolExecutor | None = None

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
    def _pool(self) -> cf.ProcessPoolExecutor:
        if self._executor is None:
            specs = {n: (self.spec(n), self.check_config(n)) for n in self.config.checks}
            self._executor = cf.ProcessPoolExecutor(self.config.workers, mp_context=mp.get_context("spawn"),
                                                    initializer=_worker_init, initargs=(specs,))
        return self._executor

    def _shutdown(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=not cancel, cancel_futures=True)
            self._executor = None

    def _measure_parallel(self, name: str, todo: list[QCItem]):
        """Yield (uid, result, seconds) from the pool, ``workers`` items in flight at a time.

        If a worker process dies (a crash in native code), the pool is rebuilt and the in-flight items
        retried once; an item in flight during two crashes is recorded as an error.
        """
        queue = list(reversed(todo))
        strikes: Counter = Counter()
        while queue:
            pool = self._pool()
            inflight: dict[cf.Future, QCItem] = {}
            try:
                while queue or inflight:
                    while queue and len(inflight) < self.config.workers:
                        inflight[pool.submit(_worker_measure, name, queue[-1])] = queue[-1]
                        queue.pop()  # only once submitted: submit raises when the pool just broke
                    done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()  # raises BrokenProcessPool with fut still in flight
                        inflight.pop(fut)
                        yield res
            except cf.process.BrokenProcessPool:
                self._shutdown(cancel=True)
                for fut, it in list(inflight.items()):
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        yield fut.result()
                        continue
                    strikes[it.utterance_id] += 1
                    if strikes[it.utterance_id] >= 2:
                        yield it.utterance_id, {"error": "WorkerCrash: the worker process died measuring this "
                                                         f"file ({it.media})", "raised": True}, 0.0
                    else:
                        queue.append(it)

    def _measure_check(self, name: str, items: list[QCItem], cache_dir: Path, gates: dict[str, str],
                       progress: bool, hook: Hook | None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        cache = MeasureCache(cache_dir / f"{name}.jsonl")
        cached = cache.load()
        key = measure_key(name, self.check(name))
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
        if stale and progress:
            print(f"qc {name}: {stale} cached measurement(s) were made with another config or media path; "
                  "measuring them again", file=sys.stderr)
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
        """Fit a check's thresholds on this corpus from its measurements (before judging).

        alignment: :func:`merc.qc.alignment.calibrate_alignment` on up to ``calibrate_max`` measured
        utterances: each with its own transcript (the cached measurement) and with another's (scored
        again, reusing the stored ASR hypothesis). Another check: its ``calibrate(items, measurements)``.
        """
        import random

        chk = self.check(name)
        usable = [it for it in items if "error" not in meas[it.utterance_id] and not _unmeasured(meas[it.utterance_id])]
        if len(usable) > self.config.calibrate_max:
            usable = sorted(random.Random(self.config.seed).sample(usable, self.config.calibrate_max),
                            key=items.index)
        if len(usable) < 2:
            raise ValueError(f"cannot calibrate {name!r}: only {len(usable)} utterance(s) were measured without error")
        t0 = time.perf_counter()
        sub = {it.utterance_id: meas[it.utterance_id] for it in usable}
        if name == "alignment" and hasattr(chk, "score") and hasattr(chk, "use_calibration"):
            from merc.qc.alignment import calibrate_alignment
            bar = tqdm(total=len(usable), desc=f"calibrate {name}", unit="utt", disable=not progress,
                       dynamic_ncols=True)

            def score(item: QCItem, text: str) -> dict[str, Any]:
                out = chk.score(item, text, hypothesis=sub[item.utterance_id].get("hypothesis"))
                bar.update(1)
                return out
            try:
                cal = calibrate_alignment(usable, score, seed=self.config.seed, true_scores=sub)
            finally:
                bar.close()
            chk.use_calibration(cal)
        elif hasattr(chk, "calibrate"):
            cal = chk.calibrate(usable, sub)
        else:
            raise ValueError(f"check {name!r} cannot be calibrated (it has no calibrate method)")
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
            raise ValueError(f"corpus {corpus.name!r} has no utterances to check")
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
        failed_by: dict[str, list[str]] = defaultdict(list)
        for f in flags:
            if (not f.passed and f.check in self.config.dropping
                    and (f.measured or self.config.drop_not_measured)):
                failed_by[f.utterance_id].append(f.check)
        kept = [it.utterance_id for it in items if it.utterance_id not in failed_by]
        dropped = {it.utterance_id: failed_by[it.utterance_id] for it in items if it.utterance_id in failed_by}
        tracks = galleries = None
        if "faces" in self.config.checks:
            tracks = getattr(self.check("faces"), "speaker_tracks", None)
            galleries = getattr(self.check("faces"), "galleries", None)
        timings["total_seconds"] = round(time.perf_counter() - t_start, 3)
        result = QCResult(flags=flags, items=items, kept=kept, dropped=dropped, summary={},
                          measurements=measurements, speaker_tracks=tracks, face_galleries=galleries,
                          corpus=corpus)
        result.summary = summarize(result, self, timings)
        if calibration:
            result.summary["calibration"] = calibration
        if write:
            from merc.qc.report import write_outputs
            write_outputs(result, out_dir)
        return result


def _unmeasured(m: dict[str, Any]) -> bool:
    return bool(m.get("gated") or m.get("raised"))


def audio_seconds(item: QCItem, integrity: dict[str, Any] | None) -> float:
    """The utterance's audio length: integrity's measured duration when present, else end - start."""
    for key in ("duration", "audio_seconds", "seconds"):
        v = (integrity or {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return float(item.utterance.duration or 0.0)


def summarize(result: QCResult, pipeline: QCPipeline, timings: dict[str, Any]) -> dict[str, Any]:
    """Counts per check and per split (checked = passed + failed + not measured), kept vs dropped
    per split, thresholds used, timings with throughput and real-time factor."""
    split_of = {it.utterance_id: it.split for it in result.items}
    splits = list(dict.fromkeys(it.split for it in result.items))
    checks: dict[str, Any] = {}
    for name in pipeline.config.checks:
        per = {s: Counter() for s in ["total", *splits]}
        for f in result.flags:
            if f.check != name:
                continue
            kind = "passed" if f.passed else ("not_measured" if f.reason.startswith(NOT_MEASURED) else "failed")
            for s in ("total", split_of[f.utterance_id]):
                per[s]["checked"] += 1
                per[s][kind] += 1
        checks[name] = {"total": _counts(per["total"]), "splits": {s: _counts(per[s]) for s in splits}}
    dropped = set(result.dropped)
    split_summary = {}
    for s in splits:
        ids = [it.utterance_id for it in result.items if it.split == s]
        n_drop = sum(u in dropped for u in ids)
        split_summary[s] = {"utterances": len(ids), "kept": len(ids) - n_drop, "dropped": n_drop}
    integ = result.measurements.get("integrity", {})
    total_audio = sum(audio_seconds(it, integ.get(it.utterance_id)) for it in result.items)
    for name in pipeline.config.checks:
        t = timings[name]
        if t["measured"]:
            t["utterances_per_second"] = round(t["measured"] / max(t["wall_seconds"], 1e-9), 3)
        t["rtf"] = round(t["measure_seconds"] / total_audio, 5) if total_audio else None
    thresholds = {}
    for name in pipeline.config.checks:
        cfg = pipeline.check_config(name)
        thresholds[name] = jsonable(_config_dict(cfg))
    drop_reasons = Counter(c for cs in result.dropped.values() for c in cs)
    return {"corpus": result.corpus.name if result.corpus else None, "utterances": len(result.items),
            "kept": len(result.kept), "dropped": len(result.dropped), "dropped_by_check": dict(drop_reasons),
            "checks": checks, "splits": split_summary, "thresholds": thresholds, "drop_on": pipeline.config.dropping,
            "audio_seconds": round(total_audio, 3), "timings": timings,
            "workers": pipeline.config.workers, "fps": pipeline.config.fps}


def _counts(c: Counter) -> dict[str, int]:
    return {k: int(c.get(k, 0)) for k in ("checked", "passed", "failed", "not_measured")}


def _config_dict(cfg: Any) -> Any:
    if cfg is None:
        return {}
    if is_dataclass(cfg):
        from dataclasses import asdict
        return asdict(cfg)
    if isinstance(cfg, dict):
        return cfg
    return {k: v for k, v in vars(cfg).items() if not k.startswith("_")} if hasattr(cfg, "__dict__") else repr(cfg)


def subset_corpus(corpus: Corpus, keep: set[str]) -> Corpus:
    """The corpus restricted to utterances in ``keep`` (conversations left empty are omitted)."""
    splits: dict[str, list[Conversation]] = {}
    for split, convs in corpus.splits.items():
        out = []
        for c in convs:
            utts = [u for u in c if u.utterance_id in keep]
            if utts:
                out.append(Conversation(c.conversation_id, split, utts))
        splits[split] = out
    return Corpus(name=corpus.name, splits=splits, labels=list(corpus.labels), root=corpus.root)
