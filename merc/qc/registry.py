"""The QC check registry: built-in check names, how a check is built from a spec, and the default order.

A spec is ``"module:Factory"`` (imported lazily: heavy models load only when a check is used) or a picklable
callable; the factory takes the check's config object, or nothing for its defaults.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from merc.errors import ConfigError
from merc.qc.base import Check

DEFAULT_CHECKS = ("integrity", "alignment", "speaker", "faces")
BUILTIN_CHECKS = {  # name -> "module:factory"; the factory takes the check's config (or nothing)
    "integrity": "merc.qc.integrity:IntegrityCheck",
    "alignment": "merc.qc.alignment:AlignmentCheck",
    "speaker": "merc.qc.speaker:SpeakerIdentityCheck",
    "faces": "merc.qc.faces:FaceCheck",
}


def resolve_factory(spec: Any) -> Callable[..., Check]:
    """``"module:Name"`` -> the object; a callable is returned as is."""
    if callable(spec):
        return spec
    module, _, name = str(spec).partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):  # the spec names a module that does not exist
            raise ConfigError(f"cannot load QC check {spec!r}: no module {e.name!r}") from e
        raise  # the check's own module failed to import: a bug or a broken install, with its traceback
    except AttributeError as e:
        raise ConfigError(f"cannot load QC check {spec!r}: {module} has no {name!r}") from e


def build_check(spec: Any, config: Any) -> Check:
    factory = resolve_factory(spec)
    return factory(config) if config is not None else factory()
