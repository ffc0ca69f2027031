"""Run directories: everything needed to reload a trained dialogue model (transformers-style
``save_pretrained`` / ``from_pretrained``).

A run directory holds ``config.json`` (model, training, data and encoder settings), ``model.safetensors``,
``labels.json``, ``metrics.json`` and plots. A multi-seed run holds one such directory per seed
(``seed_<n>/``) plus ``summary.json``; loading it picks the seed with the best **dev** weighted F1.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from merc.data.schema import Conversation
from merc.io import write_json
from merc.models.dialogue import DialogueConfig, DialogueModel
from merc.training.batching import build_dialogues
from merc.training.trainer import TrainConfig, predict_dialogues
from merc.training.weights import load_into, record_checksum


@dataclass
class RunConfig:
    model: DialogueConfig
    train: TrainConfig
    dataset: str = ""
    data_dir: str = ""
    modalities: list[str] = field(default_factory=lambda: ["text"])
    text_encoder: str = "mpnet"
    text_encoder_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        d = dict(d)
        return cls(model=DialogueConfig(**d.pop("model")), train=TrainConfig(**d.pop("train")), **d)


def save_run(run_dir: str | Path, model: DialogueModel, config: RunConfig, labels: Sequence[str],
             metrics: dict[str, Any] | None = None) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, run_dir / "model.safetensors")
    record_checksum(run_dir)  # checksums.json: sha256 of the weights, verified by from_pretrained
    write_json(run_dir / "config.json", config.to_dict())
    write_json(run_dir / "labels.json", list(labels))
    if metrics is not None:
        write_json(run_dir / "metrics.json", metrics)
    return run_dir


def resolve_run_dir(run_dir: str | Path) -> Path:
    """A single run, or the dev-best seed of a multi-seed run."""
    run_dir = Path(run_dir)
    if (run_dir / "model.safetensors").exists():
        return run_dir
    summary = run_dir / "summary.json"
    if summary.exists():
        best = json.loads(summary.read_text())["dev_selected_seed_dir"]
        return run_dir / best
    raise FileNotFoundError(f"{run_dir} is not a merc run directory (no model.safetensors or summary.json); "
                            f"create one with `merc train ... --out {run_dir}`")


@dataclass
class TrainedRun:
    """A loaded run: the model, its labels and config, and the means to predict on new conversations."""
    model: DialogueModel
    labels: list[str]
    config: RunConfig
    path: Path

    @classmethod
    def from_pretrained(cls, run_dir: str | Path) -> "TrainedRun":
        path = resolve_run_dir(run_dir)
        config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
        labels = json.loads((path / "labels.json").read_text())
        model = DialogueModel(config.model)
        load_into(model, path)  # checksum (when recorded), parse, finite values: IncompatibleRunError otherwise
        model.eval()
        return cls(model, labels, config, path)

    def features_for(self, conversations: Sequence[Conversation], *, progress: bool = False,
                     encoder=None) -> dict[str, dict[str, np.ndarray]]:
        if self.config.modalities != ["text"]:
            raise ValueError(f"prediction from raw input supports text-only runs; this run uses {self.config.modalities}")
        from merc.encoders import get_text_encoder
        enc = encoder or get_text_encoder(self.config.text_encoder)
        if self.config.text_encoder_fingerprint and enc.fingerprint != self.config.text_encoder_fingerprint:
            raise ValueError(f"text encoder {self.config.text_encoder!r} differs from the one this run was trained "
                             f"with (fingerprint {enc.fingerprint} != {self.config.text_encoder_fingerprint})")
        utts = [u for c in conversations for u in c]
        X = enc.encode(enc.texts_for(utts), progress=progress)
        return {"text": {u.utterance_id: x for u, x in zip(utts, X)}}

    def predict(self, conversations: Sequence[Conversation], *, features=None, progress: bool = False) -> list[np.ndarray]:
        """Per conversation, class probabilities (seq_len, n_classes) in ``self.labels`` order."""
        features = features or self.features_for(conversations, progress=progress)
        stripped = [Conversation(c.conversation_id, c.split,
                                 [type(u)(**{**u.__dict__, "emotion": None}) for u in c]) for c in conversations]
        dialogues = build_dialogues(stripped, features, self.labels, max_speakers=self.config.model.max_speakers)
        return predict_dialogues(self.model, dialogues)


def from_pretrained(run_dir: str | Path) -> TrainedRun:
    return TrainedRun.from_pretrained(run_dir)
