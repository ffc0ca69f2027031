"""What the Ray workers of tests/test_ray.py import by name (the tests folder is on their PYTHONPATH): the toy
encoders' registration, and encoders / QC checks that kill their own worker process once (a marker file says it
happened), so Ray has to restart the worker and run the batch again."""
from __future__ import annotations

import os
from pathlib import Path


def setup() -> None:
    """Ray's ``worker_process_setup_hook``: register the toy text encoders in every worker."""
    import toy_corpus  # noqa: F401  (registers "toy" and "toy-levers")


def _die_once(marker: str) -> None:
    """Kill this process the first time any worker gets here (the marker file remembers it)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)  # no cleanup, no exception: the worker process is gone, as after a crash or an OOM kill


class KillOnce:
    """An encoder that behaves like ``inner`` but kills its worker process on its first batch (once per run)."""

    def __init__(self, inner, marker: str):
        self._inner, self._marker = inner, marker

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def encode_batch(self, inputs, *, progress=False):
        _die_once(self._marker)
        return self._inner.encode_batch(inputs, progress=progress)


class FailOn:
    """An encoder that raises (a bug, not an unusable input) on utterances of one split: a run that dies part-way."""

    def __init__(self, inner, split: str):
        self._inner, self._split = inner, split

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def encode_batch(self, inputs, *, progress=False):
        if any(u.utterance_id.startswith(self._split) for u in inputs):
            raise RuntimeError(f"simulated failure on the {self._split} split")
        return self._inner.encode_batch(inputs, progress=progress)


def kill_once_encoder(name: str, modality: str, **options):
    """``make`` for merc.training.extract: the named encoder wrapped in KillOnce (marker in $MERC_TEST_KILL_DIR)."""
    from merc.encoders.base import get_encoder
    return KillOnce(get_encoder(name, modality, **options), str(Path(os.environ["MERC_TEST_KILL_DIR"]) / "extract"))


def fail_on_test_encoder(name: str, modality: str, **options):
    from merc.encoders.base import get_encoder
    return FailOn(get_encoder(name, modality, **options), "test")


def kill_once_integrity(config=None):
    """A QC integrity check that kills its worker once, on its first measure."""
    from merc.qc.integrity import IntegrityCheck
    chk = IntegrityCheck(config) if config is not None else IntegrityCheck()
    marker = str(Path(os.environ["MERC_TEST_KILL_DIR"]) / "qc")
    measure = chk.measure

    def measure_or_die(item):
        _die_once(marker)
        return measure(item)

    chk.measure = measure_or_die
    return chk

