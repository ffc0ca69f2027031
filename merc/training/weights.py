"""Integrity of a run's weights: a sha256 of ``model.safetensors`` recorded at save time, checked at load.

A truncated copy, a damaged header or scrambled bytes in the middle of the tensors must not become a model
that silently predicts NaN (or plausible nonsense). ``save_run`` calls :func:`record_checksum`, which writes
``checksums.json`` next to the weights; ``TrainedRun.from_pretrained`` calls :func:`load_weights`, which

1. compares size and sha256 with ``checksums.json`` when it exists (runs saved before it existed, such as
   old run directories, have none and skip this step),
2. parses the file with safetensors (a bad header or truncated data is an error naming the file),
3. checks every floating-point tensor is finite.

Every failure is an :class:`~merc.errors.IncompatibleRunError` naming the file and what to do.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from merc.errors import IncompatibleRunError
from merc.io import file_digest, write_json

WEIGHTS = "model.safetensors"
CHECKSUMS = "checksums.json"


def record_checksum(run_dir: str | Path, name: str = WEIGHTS) -> Path:
    """Write ``checksums.json`` ``{name: {"sha256": ..., "bytes": ...}}`` for the weights just saved."""
    run_dir = Path(run_dir)
    path = run_dir / name
    record = {"sha256": file_digest(path, chars=None), "bytes": path.stat().st_size}
    return write_json(run_dir / CHECKSUMS, {name: record})


def verify_checksum(run_dir: str | Path, name: str = WEIGHTS) -> bool:
    """Compare ``run_dir/name`` with ``checksums.json``; False when no checksum was recorded (old runs).
    Raises IncompatibleRunError on a size or digest mismatch."""
    run_dir = Path(run_dir)
    path, record = run_dir / name, run_dir / CHECKSUMS
    if not record.is_file():
        return False
    try:
        expected = json.loads(record.read_text(encoding="utf-8"))[name]
        want_bytes, want_sha = int(expected["bytes"]), str(expected["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise IncompatibleRunError(f"{record}: unreadable checksum record ({e}); the run directory is damaged — "
                                   "restore it from a copy or retrain") from None
    size = path.stat().st_size
    if size != want_bytes:
        what = "truncated" if size < want_bytes else "longer than saved"
        raise IncompatibleRunError(f"{path}: damaged weights file ({what}: {size} bytes, {want_bytes} at save "
                                   f"time); restore the run directory from a copy or retrain")
    got = file_digest(path, chars=None)
    if got != want_sha:
        raise IncompatibleRunError(f"{path}: damaged weights file (sha256 {got[:16]}… differs from "
                                   f"{want_sha[:16]}… recorded at save time); restore the run directory from a "
                                   "copy or retrain")
    return True


def load_weights(run_dir: str | Path, name: str = WEIGHTS) -> dict[str, torch.Tensor]:
    """The state dict in ``run_dir/name``, verified (checksum if recorded, parse, finite values)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(run_dir) / name
    verify_checksum(run_dir, name)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise IncompatibleRunError(f"{path}: not a readable safetensors file ({e}); the weights are damaged — "
                                   "restore the run directory from a copy or retrain") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise IncompatibleRunError(f"{path}: tensor(s) {bad[:3]} hold NaN or infinite values; the weights are "
                                   "damaged — restore the run directory from a copy or retrain")
    return state


def load_into(model: torch.nn.Module, run_dir: str | Path, name: str = WEIGHTS) -> None:
    """``model.load_state_dict`` with the verified weights; a shape or key mismatch is an IncompatibleRunError."""
    state = load_weights(run_dir, name)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise IncompatibleRunError(f"{Path(run_dir) / name}: the weights do not fit the model described by "
                                   f"config.json ({first[1].strip() if len(first) > 1 else first[0]})") from None
