"""Where merc's parallel work runs: in this process (``--executor local``, the default) or on a Ray cluster
(``--executor ray``, the optional extra ``merc[ray]``).

Two kinds of work, one interface for both executors::

    with open_executor("ray", address=None) as ex:            # LocalExecutor() / RayExecutor(...)
        for i, out in ex.map_workers(fn, payloads):            # many small batches, state kept per worker
            ...
        for i, out in ex.map_tasks(fn, payloads, shared=obj):  # a few long tasks (seeds, search configurations)
            ...

- ``map_workers(fn, payloads)``: ``fn(cache, payload) -> out`` is a module-level function; ``cache`` is a dict
  that lives as long as the worker, where ``fn`` keeps what is expensive to build (an encoder, a QC check):
  built once per worker, not once per batch. Local: one cache, payloads in order. Ray: one actor per worker
  CPU for the call (``max_restarts`` / ``max_task_retries``: an actor whose process dies is restarted and its
  batch run again), a few batches in flight per actor, results as they finish; the actors end with the call.
- ``map_tasks(fn, payloads, shared=obj)``: ``fn(shared, payload) -> out``. Ray: one task per payload
  (``num_cpus=1``, retried when its worker dies), ``shared`` put in the object store once. ``payloads`` may be
  a generator: the next one is drawn only when a slot frees, so a caller can stop submitting (a search budget).

Both yield ``(index of the payload, out)``. Whatever a task writes (store chunks, seed folders) it writes
atomically, so a retried task never leaves a half-written file, and rewriting the same rows is harmless.

Ray address: ``--ray-address`` or, when not given, ``RAY_ADDRESS``; neither: a local Ray instance started for
the run (loopback only, its own temporary folder, stopped afterwards). An address that does not answer is a
:class:`~merc.errors.ConfigError` before anything runs; ``ray`` missing is a
:class:`~merc.errors.MissingDependencyError` naming ``pip install 'merc[ray]'``.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import shutil
import socket
import tempfile
from typing import Any, Callable, Iterable, Iterator

from merc.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
INSTALL_HINT = "pip install 'merc[ray]'"
IN_FLIGHT_PER_WORKER = 2  # batches queued per actor: the next one is ready when a batch finishes
RETRIES = 3  # restarts of a dead actor / retries of a task whose worker died
LOCAL_OBJECT_STORE = 512 * 1024 ** 2  # bytes, for a Ray instance started for the run


def add_executor_flags(p: argparse.ArgumentParser) -> None:
    """``--executor`` and ``--ray-address`` (merc extract, qc, train)."""
    g = p.add_argument_group("executor (where the work runs)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: this machine, as merc always ran; ray: a Ray cluster (pip install 'merc[ray]'), "
                        "see --ray-address")
    g.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="the Ray cluster's head (`ray start --head` prints it); None: $RAY_ADDRESS, else a local "
                        "Ray instance started for this run")


def require_ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(f"--executor ray needs the ray package: {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError when nothing listens at ``address`` (``host:port`` or ``ray://host:port``); "auto" and
    "local" are Ray's own words and are left to it."""
    if address in ("auto", "local"):
        return
    rest = address.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected HOST:PORT (as `ray start --head` prints it), "
                          "ray://HOST:PORT, or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start one with "
                          "`ray start --head`, or check --ray-address / RAY_ADDRESS") from None


class LocalExecutor:
    """Everything in this process, in order (the default; what merc did before executors existed)."""

    name = "local"
    workers = 1

    def map_workers(self, fn: Callable[[dict, Any], Any], payloads: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        cache: dict = {}
        for i, p in enumerate(payloads):
            yield i, fn(cache, p)

    def map_tasks(self, fn: Callable[[Any, Any], Any], payloads: Iterable[Any], *, shared: Any = None
                  ) -> Iterator[tuple[int, Any]]:
        for i, p in enumerate(payloads):
            yield i, fn(shared, p)


class _Worker:
    """A Ray actor (decorated in :meth:`RayExecutor._actor_class`): runs ``fn(cache, payload)`` with one cache."""

    def __init__(self) -> None:
        self.cache: dict = {}

    def run(self, fn, payload):
        return fn(self.cache, payload)


def _call(fn, shared, payload):
    return fn(shared, payload)


class RayExecutor:
    """Work spread over a Ray cluster's CPUs (module docstring). ``workers``: actors / tasks at a time
    (None: the cluster's CPU count)."""

    name = "ray"

    def __init__(self, ray, workers: int | None = None) -> None:
        self.ray = ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or cpus, cpus))

    def _actor_class(self):
        return self.ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(_Worker)

    def map_workers(self, fn, payloads: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """One actor per worker for this call; the actors end with it (each holds a CPU while it lives, which
        the tasks of a later ``map_tasks`` need)."""
        cls = self._actor_class()
        actors = [cls.remote() for _ in range(self.workers)]
        try:
            yield from self._map_actors(actors, fn, payloads)
        finally:
            for a in actors:
                with contextlib.suppress(Exception):
                    self.ray.kill(a)

    def _map_actors(self, actors: list, fn, payloads: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        load = {k: 0 for k in range(len(actors))}
        inflight: dict[Any, tuple[int, int]] = {}  # ref -> (payload index, actor index)
        todo = iter(enumerate(payloads))
        while True:
            for i, p in itertools.islice(todo, max(0, IN_FLIGHT_PER_WORKER * len(actors) - len(inflight))):
                k = min(load, key=load.get)
                inflight[actors[k].run.remote(fn, p)] = (i, k)
                load[k] += 1
            if not inflight:
                return
            done, _ = self.ray.wait(list(inflight), num_returns=1)
            i, k = inflight.pop(done[0])
            load[k] -= 1
            yield i, self.ray.get(done[0])

    def map_tasks(self, fn, payloads: Iterable[Any], *, shared: Any = None) -> Iterator[tuple[int, Any]]:
        remote = self.ray.remote(num_cpus=1, max_retries=RETRIES)(_call)
        ref = self.ray.put(shared)
        inflight: dict[Any, int] = {}
        todo = iter(enumerate(payloads))
        while True:
            for i, p in itertools.islice(todo, max(0, self.workers - len(inflight))):
                inflight[remote.remote(fn, ref, p)] = i
            if not inflight:
                return
            done, _ = self.ray.wait(list(inflight), num_returns=1)
            yield inflight.pop(done[0]), self.ray.get(done[0])


@contextlib.contextmanager
def open_executor(kind: str = "local", *, address: str | None = None, workers: int | None = None):
    """The executor ``kind`` for the duration of a command. Ray: connect to ``address`` (else ``RAY_ADDRESS``;
    neither: start a local instance, stopped at the end). Already connected (``ray.init`` called by the
    caller, as tests do): that session is used and left running (an explicit ``address`` is still checked)."""
    if kind == "local":
        yield LocalExecutor()
        return
    if kind != "ray":
        raise ConfigError(f"--executor {kind!r}: choose from {', '.join(EXECUTORS)}")
    ray = require_ray()
    started, temp = False, None
    address = address or (None if ray.is_initialized() else os.environ.get("RAY_ADDRESS")) or None
    if address:
        check_reachable(address)  # one line now, not a long wait inside ray.init
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:  # a private instance: loopback, its own folder, no dashboard
                temp = tempfile.mkdtemp(prefix="merc-ray-")
                ray.init(address="local", num_cpus=workers or os.cpu_count(), include_dashboard=False,
                         object_store_memory=LOCAL_OBJECT_STORE, logging_level=logging.WARNING,
                         log_to_driver=False, _node_ip_address="127.0.0.1", _temp_dir=temp)
        except (ConnectionError, TimeoutError) as e:
            raise ConfigError(f"cannot connect to the Ray cluster at {address or 'a local instance'}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        started = True
        info = ray.cluster_resources()
        log.info("ray: %s, %d CPU(s) on %d node(s)", address or "local instance started for this run",
                 int(info.get("CPU", 0)), len([n for n in ray.nodes() if n.get("Alive")]))
    try:
        yield RayExecutor(ray, workers)
    finally:
        if started:
            ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


def executor_from_args(args: argparse.Namespace, *, workers: int | None = None):
    """:func:`open_executor` from ``--executor`` / ``--ray-address`` (absent flags: local)."""
    return open_executor(getattr(args, "executor", "local") or "local", address=getattr(args, "ray_address", None),
                         workers=workers)
