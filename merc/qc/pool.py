"""Measuring QC items: in this process, in a spawn process pool that survives worker crashes, or on the workers
of an executor (``merc qc --executor ray``: :func:`measure_on`, :mod:`merc.executors`).

``measure_one`` never raises for a bad item: an exception becomes ``{"error": "Type: message", "raised": True}``
(one bad file never stops a run). In the pool each worker builds its checks once, lazily, with one torch
thread; when a worker dies (a crash in native code) the pool is rebuilt, the batches in flight are retried
item by item, each alone, and an item that crashes a worker twice is recorded as an error.

:func:`measure_batch` measures a few utterances with every check that still needs them, in one place, so each
clip is decoded once for all checks (:mod:`merc.media.clip`: a clip cache is active while the batch runs and a
thread decodes the next clips while the models work), and a check that defines ``prepare(items)`` runs its
model once over the batch (alignment: one batched Whisper encoder call) before ``measure`` on each item.
Integrity runs first on the whole batch; what it finds gates the later checks (``media_gate``).
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import sys
import time
from typing import Any, Iterator

from merc.qc.base import Check, QCItem, jsonable
from merc.qc.registry import build_check

NOT_MEASURED = "not measured"  # the prefix of every "not measured" reason (merc.qc.result re-exports it)
Work = tuple[QCItem, list[str], "dict[str, Any] | None"]  # (item, checks to measure, its cached integrity result)


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


def gated(reason: str) -> dict[str, Any]:
    return {"error": f"{NOT_MEASURED}: {reason}", "gated": True}


def measure_batch(checks: dict[str, Check], order: list[str], work: list[Work], *, gate: bool = True,
                  prefetch: bool = True) -> Iterator[tuple[str, str, dict[str, Any], float]]:
    """Yield ``(utterance_id, check, result, seconds)`` for every (item, check) of ``work``, check by check in
    ``order``; integrity (when in ``order``) first, and its result (measured here or given as cached) gates the
    others when ``gate``. Gated results come back with ``seconds`` 0 and ``"gated": True``."""
    from merc.media.clip import ClipCache, Prefetcher
    integrity = checks.get("integrity")
    known = {it.utterance_id: m for it, _, m in work}
    with ClipCache(max_clips=max(8, 2 * len(work))) as cache:
        fetch = None
        if prefetch:
            jobs = [(path, fn) for it, need, _ in work for name in need
                    for path, fn in getattr(checks[name], "decode_jobs", lambda _it: [])(it)]
            fetch = Prefetcher(cache, jobs, ahead=max(4, len(jobs))).start() if jobs else None
        try:
            for name in order:
                todo = [it for it, need, _ in work if name in need]
                if not todo:
                    continue
                chk = checks[name]
                ready = []
                for it in todo:
                    why = media_gate(integrity, known.get(it.utterance_id)) \
                        if gate and name != "integrity" and integrity is not None else None
                    if why:
                        yield it.utterance_id, name, gated(why), 0.0
                    else:
                        ready.append(it)
                share = 0.0  # prepare()'s time, shared out over the batch's items (it does part of their measuring)
                if ready and hasattr(chk, "prepare"):
                    t0 = time.perf_counter()
                    try:
                        chk.prepare(ready)
                    except Exception:  # noqa: BLE001 - measure() meets the same problem per item, and records it
                        pass
                    share = (time.perf_counter() - t0) / len(ready)
                for it in ready:
                    result, secs = measure_one(chk, it)
                    secs += share
                    if name == "integrity":
                        known[it.utterance_id] = result
                    yield it.utterance_id, name, result, secs
        finally:
            if fetch is not None:
                fetch.stop()


# worker side (a spawn pool: each process builds its checks once, lazily)

_WORKER_SPECS: dict[str, tuple[Any, Any]] = {}
_WORKER_CHECKS: dict[str, Check] = {}


def _worker_init(specs: dict[str, tuple[Any, Any]]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _WORKER_SPECS.update(specs)


def _worker_checks(names: list[str]) -> dict[str, Check]:
    for name in names:
        if name not in _WORKER_CHECKS:
            spec, config = _WORKER_SPECS[name]
            _WORKER_CHECKS[name] = build_check(spec, config)
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(1)
    return {n: _WORKER_CHECKS[n] for n in names}


def _worker_batch(order: list[str], work: list[Work], gate: bool) -> list[tuple[str, str, dict[str, Any], float]]:
    names = sorted({n for _, need, _ in work for n in need} | ({"integrity"} & set(_WORKER_SPECS)))
    return list(measure_batch(_worker_checks(names), order, work, gate=gate))


def executor_batch(cache: dict, payload: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], float]]:
    """An executor worker's batch: :func:`measure_batch` with checks built once per worker (kept in ``cache``,
    keyed by their whole spec and config), one torch thread, as in the process pool."""
    checks = {}
    for name, (spec, config) in payload["specs"].items():
        key = ("qc", name, repr(spec), repr(config))
        if key not in cache:
            _worker_init({})
            cache[key] = build_check(spec, config)
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(1)
        checks[name] = cache[key]
    return list(measure_batch(checks, payload["order"], payload["work"], gate=payload["gate"]))


def measure_on(executor, specs: dict[str, tuple[Any, Any]], order: list[str], batches: list[list[Work]],
               gate: bool) -> Iterator[tuple[str, str, dict[str, Any], float]]:
    """:meth:`MeasurePool.measure_batches` on an executor's workers: each batch's results as it finishes."""
    payloads = ({"specs": {n: specs[n] for n in sorted({n for _, need, _ in b for n in need} | ({"integrity"} &
                                                                                              set(specs)))},
                 "order": order, "work": b, "gate": gate} for b in batches)
    for _, rows in executor.map_workers(executor_batch, payloads):
        yield from rows


class MeasurePool:
    """A spawn process pool measuring items of named checks; ``specs``: name -> (factory spec, config)."""

    def __init__(self, workers: int, specs: dict[str, tuple[Any, Any]]):
        self.workers = workers
        self.specs = specs
        self._executor: cf.ProcessPoolExecutor | None = None

    def _pool(self) -> cf.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                                    initializer=_worker_init, initargs=(self.specs,))
        return self._executor

    def shutdown(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=not cancel, cancel_futures=True)
            self._executor = None

    def measure_batches(self, order: list[str], batches: list[list[Work]], gate: bool
                        ) -> Iterator[tuple[str, str, dict[str, Any], float]]:
        """:func:`measure_batch` of each batch in a worker, ``workers`` batches in flight. After a crash a batch
        is retried item by item, each suspect alone (nothing else in flight), so an item recorded as a crash of each
        check it still needed is one that crashed a worker twice, the second time on its own."""
        queue: list[tuple[list[Work], int]] = [(b, 0) for b in reversed(batches)]
        while queue:
            pool = self._pool()
            inflight: dict[cf.Future, tuple[list[Work], int]] = {}
            try:
                while queue or inflight:
                    while queue and len(inflight) < self.workers:
                        batch, strikes = queue[-1]
                        if inflight and (strikes or any(k for _, k in inflight.values())):
                            break  # a suspect (in flight at a crash) runs alone, so a crash then names it
                        inflight[pool.submit(_worker_batch, order, batch, gate)] = (batch, strikes)
                        queue.pop()
                    done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()
                        inflight.pop(fut)
                        yield from res
            except cf.process.BrokenProcessPool:
                self.shutdown(cancel=True)
                for fut, (batch, strikes) in list(inflight.items()):
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        yield from fut.result()
                        continue
                    if len(batch) > 1:  # which item crashed is unknown: retry each on its own
                        queue.extend(([w], strikes + 1) for w in reversed(batch))
                    elif strikes + 1 >= 2:
                        it, need, _ = batch[0]
                        for name in need:
                            yield it.utterance_id, name, {"error": "WorkerCrash: the worker process died measuring "
                                                                   f"this file ({it.media})", "raised": True}, 0.0
                    else:
                        queue.append((batch, strikes + 1))
