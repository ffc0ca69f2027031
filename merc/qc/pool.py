"""Measuring QC items: in this process, or in a spawn process pool that survives worker crashes.

``measure_one`` never raises for a bad item: an exception becomes ``{"error": "Type: message", "raised": True}``
(one bad file never stops a run). In the pool each worker builds its checks once, lazily, with one torch
thread; when a worker dies (a crash in native code) the pool is rebuilt and the in-flight items are retried
once; an item in flight during two crashes is recorded as an error.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from typing import Any, Iterator

from merc.qc.base import Check, QCItem, jsonable
from merc.qc.registry import build_check


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

    def measure(self, name: str, todo: list[QCItem]) -> Iterator[tuple[str, dict[str, Any], float]]:
        """Yield (uid, result, seconds), ``workers`` items in flight at a time (crash retry: module docstring)."""
        queue = list(reversed(todo))
        strikes: Counter = Counter()
        while queue:
            pool = self._pool()
            inflight: dict[cf.Future, QCItem] = {}
            try:
                while queue or inflight:
                    while queue and len(inflight) < self.workers:
                        inflight[pool.submit(_worker_measure, name, queue[-1])] = queue[-1]
                        queue.pop()  # only once submitted: submit raises when the pool just broke
                    done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()  # raises BrokenProcessPool with fut still in flight
                        inflight.pop(fut)
                        yield res
            except cf.process.BrokenProcessPool:
                self.shutdown(cancel=True)
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
