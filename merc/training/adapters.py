"""Stage-2 adapters in dialogue training (``merc train --adapters text=DIR,audio=DIR,face=DIR [--tune-adapters]``).

For each modality given an adapter folder (``merc adapt ... --out DIR``), the modality's stage-1 feature is
replaced by the adapter's 128-d bottleneck before the dialogue model (:class:`merc.models.adapted.AdaptedModel`);
a modality without an adapter keeps its stage-1 feature. Any subset of the run's modalities may be adapted.

Standardisation (a decision, documented here): an adapter standardises its input itself, with the mean and
std of the corpus it was trained on (stored with its weights). So the adapter is applied to the **raw**
stage-1 feature, and the run's train-split standardisation (``merc.training.normalize``) is **not** applied to
an adapted modality — neither to its input (which would move it away from what the adapter learned) nor to its
128-d output (a GELU bottleneck of bounded scale, followed in the dialogue model by a per-modality Linear +
LayerNorm). Consequences: the refined feature is exactly ``adapter.refine(x)`` of the raw feature; a frozen
and a tuned adapter are the same function when training starts; the run needs no statistics for it.

Checks: each adapter records its stage-1 encoder (``{"name", "fingerprint", "dim"}``). A modality's stage-1
encoder in a run is its encoder list joined by ``+`` (``egemaps+resemblyzer``: several encoders are
concatenated), with the fingerprints joined likewise. When both fingerprints are known they must be equal;
otherwise the names must be; the dimension must always agree. A mismatch is a ConfigError naming both.
Face fingerprints are compared without how the face was chosen (QC speaker tracks in a run with ``--qc-dir``,
the largest face otherwise, a still image for an adapter's corpus): the same network and settings match.

The run config records, per adapted modality, the folder (absolute path), the sha256 of its weights, its
encoder, model config and labels (``RunConfig.adapters``), and whether they were tuned
(``RunConfig.tune_adapters``). The adapters' weights — frozen or tuned — are saved inside the run's
``model.safetensors``, so ``evaluate`` / ``predict`` / ``from_pretrained`` apply them without the folder.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from merc.errors import ConfigError, IncompatibleRunError, an
from merc.models.adapted import AdaptedModel
from merc.models.adapter import WEIGHTS_FILE, Adapter, AdapterConfig
from merc.models.dialogue import DialogueConfig
from merc.models.factory import build_model

log = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "face")


def parse_adapters(spec: str | None) -> dict[str, str]:
    """``"text=DIR,audio=DIR"`` -> ``{"text": DIR, "audio": DIR}`` (ConfigError on a malformed or repeated item)."""
    out: dict[str, str] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        m, sep, folder = part.partition("=")
        m, folder = m.strip(), folder.strip()
        if not sep or not folder or m not in MODALITIES:
            raise ConfigError(f"--adapters {spec!r}: expected modality=FOLDER items (modality one of "
                              f"{list(MODALITIES)}), e.g. text=adapters/text,face=adapters/face; got {part!r}")
        if m in out:
            raise ConfigError(f"--adapters {spec!r} names {m} twice")
        out[m] = folder
    return out


def load_adapters(folders: Mapping[str, str | Path], modalities: Sequence[str]) -> dict[str, Adapter]:
    """Adapter per modality from its folder; ConfigError for a modality the run does not use or a folder holding
    another modality's adapter (MissingFileError for a folder that is not an adapter)."""
    out = {}
    for m, folder in folders.items():
        if m not in modalities:
            raise ConfigError(f"--adapters gives {an(m)} adapter ({folder}) but --modalities is {','.join(modalities)}")
        a = Adapter.from_pretrained(folder)
        if a.modality != m:
            raise ConfigError(f"{folder} holds {an(a.modality)} adapter; it was given for {m}")
        out[m] = a
    return out


def stage1_identity(names: Sequence[str], fingerprints: Sequence[str]) -> tuple[str, str]:
    """(name, fingerprint) of a modality's stage-1 feature: encoders joined by ``+`` (concatenated in order)."""
    return "+".join(names), ("+".join(fingerprints) if all(fingerprints) else "")


def _face_network(fingerprint: str) -> str:
    from merc.encoders.face_expr import without_face_choice
    return "+".join(without_face_choice(f) for f in fingerprint.split("+"))


def check_adapter_encoders(adapters: Mapping[str, Adapter], encoders: Mapping[str, Sequence[str]],
                           fingerprints: Mapping[str, Sequence[str]], dims: Mapping[str, int],
                           folders: Mapping[str, str | Path] | None = None) -> None:
    """ConfigError when an adapter was trained on another stage-1 encoder than the run's for its modality."""
    for m, a in adapters.items():
        name, fp = stage1_identity(encoders[m], fingerprints.get(m) or [""])
        want_name, want_fp = str(a.encoder.get("name") or ""), str(a.encoder.get("fingerprint") or "")
        where = (folders or {}).get(m, "the adapter folder")
        if m == "face":  # QC speaker tracks or the largest face: how a face is chosen, not what encodes it
            fp, want_fp = _face_network(fp), _face_network(want_fp)
        same = (fp == want_fp) if (fp and want_fp) else (name == want_name)
        if not same:
            raise ConfigError(
                f"the {m} adapter ({where}) was trained on stage-1 features of {want_name!r} (fingerprint "
                f"{want_fp or '?'}), but this run's {m} features are {name!r} (fingerprint {fp or '?'}); use "
                f"--{'text-encoder' if m == 'text' else m + '-encoders'} {want_name.replace('+', ',')} or an "
                "adapter trained on the run's encoders "
                f"(`merc adapt --modality {m} --encoder {name.replace('+', ',')} ...`)")
        if a.config.d_in != int(dims[m]):
            raise ConfigError(f"the {m} adapter ({where}) takes {a.config.d_in}-d features; the run's {m} features "
                              f"({name}) are {dims[m]}-d")


def adapter_records(adapters: Mapping[str, Adapter], folders: Mapping[str, str | Path]) -> dict[str, dict[str, Any]]:
    """What the run config keeps per adapted modality (provenance + what is needed to rebuild the module)."""
    from merc.io import file_digest
    out = {}
    for m, a in adapters.items():
        folder = Path(folders[m]).resolve()
        out[m] = {"path": str(folder), "sha256": file_digest(folder / WEIGHTS_FILE, chars=None),
                  "encoder": dict(a.encoder), "model": asdict(a.config), "labels": list(a.labels)}
    return out


def build_run_model(model_config, adapters: Mapping[str, Mapping[str, Any]] | None = None, *, tune: bool = False,
                    from_folders: bool = False) -> torch.nn.Module:
    """The model of a run: ``build_model(model_config)``, wrapped in an :class:`AdaptedModel` when the run has
    adapters. ``from_folders`` initialises the adapters from their folders (training; the sha256 is checked);
    otherwise they are built empty from the recorded configs and the run's weights are loaded into them."""
    if not adapters:
        return build_model(model_config)
    if not isinstance(model_config, DialogueConfig):
        raise ConfigError(f"stage-2 adapters feed the dialogue models (mamba, gru, transformer, mlp), not "
                          f"{getattr(model_config, 'kind', type(model_config).__name__)!r}")
    modules = {}
    for m, rec in adapters.items():
        if from_folders:
            from merc.io import file_digest
            got = file_digest(Path(rec["path"]) / WEIGHTS_FILE, chars=None)
            if rec.get("sha256") and got != rec["sha256"]:
                raise IncompatibleRunError(f"the {m} adapter at {rec['path']} changed since the run was configured "
                                           f"(sha256 {got[:12]}… != {rec['sha256'][:12]}…)")
            modules[m] = Adapter.from_pretrained(rec["path"])
        else:
            modules[m] = Adapter(AdapterConfig(**rec["model"]), labels=rec.get("labels"), modality=m,
                                 encoder=rec.get("encoder"))
    return AdaptedModel(model_config, modules, tune=tune)
