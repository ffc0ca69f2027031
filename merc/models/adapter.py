"""Stage-2 emotion adapter: an MLP that refines a frozen stage-1 embedding into a 128-d emotion feature.

    x (n, d_in) ─standardise─▶ Linear(d_in, hidden) ─GELU─dropout─▶ Linear(hidden, 128) ─GELU─▶ h (n, 128)
                                                                   h ─dropout─▶ Linear(128, n_classes) ─▶ logits

``h`` (the bottleneck activations) is the refined feature that stage 3 (Mamba fusion over the dialogue)
consumes; the classifier on top is what it was trained with, and scores the adapter on its own. The
input standardisation (per-dimension mean and std of the adapter's training features) is stored with
the weights, so eGeMAPS-like inputs of wildly different scales need no outside scaler.

An adapter folder (HF-style ``save_pretrained`` / ``from_pretrained``) holds ``config.json``
(``{"model": AdapterConfig, "modality", "encoder": {"name", "fingerprint", "dim"}, …}``),
``model.safetensors`` and ``labels.json``; the trainer (``merc.training.adapt``) adds ``metrics.json``
and plots. The encoder fingerprint lets stage 3 refuse features from a different stage-1 encoder.

Reference: Wang & Beigi, "Quality-Controlled Multimodal Emotion Recognition in Conversations with
Identity-Based Transfer Learning and MAMBA Fusion" (stage 2: emotion-specific MLP per modality, 128-d).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from merc.errors import IncompatibleRunError, MissingFileError, an
from merc.io import atomic_write_bytes, write_json

CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE = "config.json", "model.safetensors", "labels.json"


@dataclass
class AdapterConfig:
    d_in: int
    n_classes: int
    hidden: int = 512
    bottleneck: int = 128
    dropout: float = 0.2


class Adapter(nn.Module):
    """The stage-2 MLP (see the module docstring). ``labels[i]`` names class ``i``."""

    def __init__(self, config: AdapterConfig, *, labels: Sequence[str] | None = None, modality: str = "text",
                 encoder: dict[str, Any] | None = None, extra: dict[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.labels = list(labels) if labels is not None else [str(i) for i in range(config.n_classes)]
        if len(self.labels) != config.n_classes:
            raise ValueError(f"{len(self.labels)} labels for n_classes={config.n_classes}")
        self.modality = modality
        self.encoder = dict(encoder or {})  # name, fingerprint, dim of the stage-1 encoder it expects
        self.extra = dict(extra or {})  # anything else recorded in config.json (corpora, counts, provenance)
        self.register_buffer("in_mean", torch.zeros(config.d_in))  # (d_in,)
        self.register_buffer("in_std", torch.ones(config.d_in))  # (d_in,)
        self.fc1 = nn.Linear(config.d_in, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.bottleneck)
        self.head = nn.Linear(config.bottleneck, config.n_classes)
        self.drop = nn.Dropout(config.dropout)

    # forward passes

    def set_input_stats(self, X: np.ndarray | torch.Tensor) -> None:
        """Standardise inputs with the per-dimension mean / std of ``X`` (n, d_in) (the training features)."""
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        self.in_mean.copy_(X.mean(0))
        self.in_std.copy_(X.std(0, unbiased=False).clamp_min(1e-6))

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.in_mean) / self.in_std  # (n, d_in)
        h = self.drop(F.gelu(self.fc1(x)))  # (n, hidden)
        return F.gelu(self.fc2(h))  # (n, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.bottleneck(x)))  # (n, n_classes)

    # numpy verbs (eval mode, no gradient)

    def _check(self, X: np.ndarray | torch.Tensor) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X, dtype=np.float32)) if not isinstance(X, torch.Tensor) else X.float()
        if X.ndim != 2 or X.shape[1] != self.config.d_in:
            raise IncompatibleRunError(f"adapter expects ({'{n}'}, {self.config.d_in}) features from encoder "
                                       f"{self.encoder.get('name', '?')!r}; got shape {tuple(X.shape)}")
        return X

    @torch.no_grad()
    def refine(self, X: np.ndarray | torch.Tensor, *, batch_size: int = 4096) -> np.ndarray:
        """The refined features: bottleneck activations ``(n, bottleneck)`` float32 of stage-1 features X (n, d_in)."""
        X, was = self._check(X), self.training
        self.eval()
        out = [self.bottleneck(X[s:s + batch_size]) for s in range(0, len(X), batch_size)]
        self.train(was)
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.bottleneck), np.float32)

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray | torch.Tensor, *, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` in ``self.labels`` order."""
        X, was = self._check(X), self.training
        self.eval()
        out = [F.softmax(self(X[s:s + batch_size]), -1) for s in range(0, len(X), batch_size)]
        self.train(was)
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.n_classes), np.float32)

    def predict(self, X: np.ndarray | torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(X).argmax(1)]

    def check_encoder(self, fingerprint: str | None, name: str | None = None) -> None:
        """Refuse features from a different stage-1 encoder than the one this adapter was trained on."""
        want = self.encoder.get("fingerprint")
        if want and fingerprint and fingerprint != want:
            raise IncompatibleRunError(
                f"this {self.modality} adapter was trained on features of {self.encoder.get('name')!r} "
                f"(fingerprint {want}); the features given come from {name or '?'!r} (fingerprint {fingerprint})")

    # folders

    def config_dict(self) -> dict[str, Any]:
        return {"model": asdict(self.config), "modality": self.modality, "encoder": self.encoder,
                "labels": self.labels, **self.extra}

    def save_pretrained(self, folder: str | Path) -> Path:
        from safetensors.torch import save
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / WEIGHTS_FILE, save({k: v.contiguous() for k, v in self.state_dict().items()}))
        write_json(folder / LABELS_FILE, self.labels)
        write_json(folder / CONFIG_FILE, self.config_dict())
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Adapter":
        from safetensors.torch import load_file
        folder = Path(folder)
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE) if not (folder / f).is_file()]
        if missing:
            raise MissingFileError(f"{folder} is not an adapter folder (missing {missing}); "
                                   f"create one with `merc adapt ... --out {folder}`")
        cfg = json.loads((folder / CONFIG_FILE).read_text())
        labels = json.loads((folder / LABELS_FILE).read_text())
        extra = {k: v for k, v in cfg.items() if k not in ("model", "modality", "encoder", "labels")}
        model = cls(AdapterConfig(**cfg["model"]), labels=labels, modality=cfg.get("modality", "text"),
                    encoder=cfg.get("encoder"), extra=extra)
        try:
            model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        except RuntimeError as e:
            raise IncompatibleRunError(f"{folder / WEIGHTS_FILE} does not fit its config.json: {e}") from None
        model.eval()
        return model


@dataclass
class AdapterBundle:
    """Adapters by modality, as stage 3 will take them (``--adapters text=DIR,audio=DIR``)."""
    adapters: dict[str, Adapter] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: dict[str, str | Path]) -> "AdapterBundle":
        out = {}
        for modality, folder in spec.items():
            a = Adapter.from_pretrained(folder)
            if a.modality != modality:
                raise IncompatibleRunError(f"{folder} is {an(a.modality)} adapter, given for {modality}")
            out[modality] = a
        return cls(out)
