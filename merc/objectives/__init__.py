"""Training objectives: ``objective(model, batch) -> (loss, logs)``, logs a dict of floats.

- ``CrossEntropy`` (class weights, label smoothing, ignore index) — every dialogue model.
- ``MatavObjective`` — MaTAV: cross-entropy + λ·MEC with the momentum and queue updates.
- ``contrastive``: ``FeatureQueue``, ``MomentumEncoder``, ``mec_loss`` (MoCo / ALBEF pieces).

This package imports nothing from merc above ``merc.errors``; models may use its pieces.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from merc.objectives.classification import IGNORE_INDEX, CrossEntropy, cross_entropy, model_logits
from merc.objectives.contrastive import MEC_PAIRS, FeatureQueue, MomentumEncoder, contrastive_term, mec_loss
from merc.objectives.mec import MatavObjective


class Objective(Protocol):
    def __call__(self, model: torch.nn.Module, batch) -> tuple[Tensor, dict[str, float]]: ...


def objective_for(model: torch.nn.Module, *, weight: Tensor | None = None, label_smoothing: float = 0.0) -> Objective:
    """The model's own objective: CE + λ·MEC for a model with ``forward_train`` (MaTAV), cross-entropy otherwise."""
    ce = CrossEntropy(weight=weight, label_smoothing=label_smoothing)
    return MatavObjective(ce) if hasattr(model, "forward_train") else ce


__all__ = ["IGNORE_INDEX", "MEC_PAIRS", "CrossEntropy", "FeatureQueue", "MatavObjective", "MomentumEncoder",
           "Objective", "contrastive_term", "cross_entropy", "mec_loss", "model_logits", "objective_for"]
