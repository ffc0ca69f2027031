"""``merc train --out DIR`` when DIR exists: refuse, replace (``--overwrite``) or resume (``--resume``).

Resuming keeps every seed whose run directory is complete (config, labels, metrics and verified weights)
and trained with the same settings, and trains the others — a multi-seed run interrupted after seed 3 of 5
picks up at seed 4. A seed trained with different settings is an error, not silently mixed into the mean.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from merc.errors import IncompatibleRunError, OutputExistsError

log = logging.getLogger(__name__)

RUN_FILES = ("config.json", "model.safetensors", "labels.json", "metrics.json", "summary.json")
# settings that must agree for a finished seed to count in a resumed run (provenance fields may differ)
SAME_SETTINGS = ("model", "train", "dataset", "modalities", "text_encoder", "text_encoder_fingerprint", "encoders",
                 "encoder_fingerprints", "modality_dropout", "adapters", "tune_adapters")


def _is_run_dir(path: Path) -> bool:
    if (path / "search").is_dir() or (path / "search.json").is_file():  # `merc train --search`, maybe unfinished
        return True
    return any((path / f).exists() for f in RUN_FILES) or any(
        (p / "config.json").exists() for p in path.glob("seed_*"))


def prepare_out(out: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Check ``out`` before training; with ``overwrite``, delete an existing *run* directory (never a folder
    that holds anything else)."""
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return out
    if not out.is_dir():
        raise OutputExistsError(f"--out {out}: a file of that name exists; choose another --out")
    if resume:
        return out
    if overwrite:
        if not _is_run_dir(out):
            raise OutputExistsError(f"--out {out}: the folder exists and is not a merc run directory; refusing to "
                                    "delete it even with --overwrite — choose another --out")
        log.warning("--overwrite: deleting the existing run directory %s", out)
        shutil.rmtree(out)
        return out
    raise OutputExistsError(f"--out {out} already exists; pass --overwrite to replace it, --resume to keep its "
                            "finished seeds and train the rest, or choose another --out")


def _canon(d: Any) -> Any:
    return json.loads(json.dumps(d, default=str))


def _with_defaults(model: Any) -> Any:
    """A recorded model config with the settings added since it was written at their defaults (a seed trained
    before ``stacked`` existed is the same run as one with ``stacked=False``); as recorded when it does not parse."""
    if not isinstance(model, dict):
        return model
    from dataclasses import asdict

    from merc.errors import ConfigError
    from merc.models.factory import config_from_dict
    try:
        return _canon(asdict(config_from_dict(dict(model))))
    except (ConfigError, TypeError, KeyError):
        return model


def completed_seed(run_dir: str | Path, config_dict: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of a finished seed in ``run_dir`` trained with ``config_dict``'s settings; None when the
    seed is absent or unfinished (it is then trained). Raises IncompatibleRunError on different settings."""
    from merc.training.weights import verify_checksum
    run_dir = Path(run_dir)
    if not all((run_dir / f).is_file() for f in RUN_FILES[:4]):
        return None
    try:
        verify_checksum(run_dir)
        recorded = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (IncompatibleRunError, ValueError) as e:
        log.warning("%s: unfinished or damaged (%s); training this seed again", run_dir, e)
        return None
    want = _canon(config_dict)
    if isinstance(recorded.get("train"), dict):  # training settings added since that seed ran: their defaults
        from dataclasses import asdict

        from merc.training.trainer import TrainConfig
        recorded["train"] = _canon({**asdict(TrainConfig()), **recorded["train"]})
    recorded["model"], want["model"] = _with_defaults(recorded.get("model")), _with_defaults(want.get("model"))
    diff = [k for k in SAME_SETTINGS if k in recorded and k in want and recorded[k] != want[k]]
    if diff:
        k = diff[0]
        raise IncompatibleRunError(f"--resume: {run_dir / 'config.json'} was trained with other settings ({k}: "
                                   f"{recorded[k]} now {want[k]}); rerun with the same options, or --overwrite")
    log.info("%s: finished earlier, kept (--resume)", run_dir)
    return metrics
