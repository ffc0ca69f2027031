"""``--device auto|cpu|cuda``: where torch models run, chosen once per command.

The command line resolves the flag (:func:`resolve_device`) and makes it the process's device
(:func:`use_device`), as ``--threads`` sets torch's threads; library code that builds a model or an encoder asks
:func:`current_device` (CPU unless a command chose otherwise); batches move with :func:`merc.loop.to_device`. So a
programmatic user gets the CPU unless they call ``use_device`` or pass a device themselves.

- ``auto``: CUDA when torch sees a GPU, else the CPU (the default of every command that takes the flag);
- ``cpu``: the CPU, always;
- ``cuda`` (or ``cuda:N``): a GPU; without one it is a one-line error (exit 2), never a silent fallback.
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Any

from merc.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
_current: Any = None  # torch.device chosen by use_device; None = CPU


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The one definition of ``--device`` (every command that runs a torch model takes it)."""
    parser.add_argument("--device", default="auto", metavar="{auto,cpu,cuda}",
                        help="where the models run: auto = a CUDA GPU when torch sees one, else the CPU; cuda "
                             "without a GPU is an error")


def cuda_available() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def resolve_device(name: str | None):
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` -> a ``torch.device``; ConfigError (one line) when CUDA is
    asked for and torch sees no GPU, or for any other name."""
    import torch
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not cuda_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "torch sees no GPU"
            raise ConfigError(f"--device {name}: no CUDA device is available ({why}, torch {torch.__version__}); "
                              "use --device cpu, or auto to take a GPU only when there is one")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"--device {name!r}: expected cuda or cuda:N") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0")
        return device
    raise ConfigError(f"--device {name!r}: expected one of {', '.join(DEVICES)} (or cuda:N)")


def use_device(device) -> None:
    """Make ``device`` (a name or ``torch.device``) the device of what this process builds from now on."""
    global _current
    import torch
    _current = device if isinstance(device, torch.device) else resolve_device(device)


@contextlib.contextmanager
def using_device(device):
    """``use_device(device)`` for the duration of a ``with`` block (a command), then the previous choice again."""
    global _current
    before = _current
    use_device(device)
    try:
        yield current_device()
    finally:
        _current = before


def current_device():
    """The device :func:`use_device` chose; the CPU when none was chosen."""
    import torch
    return _current if _current is not None else torch.device("cpu")
