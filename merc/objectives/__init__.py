"""Training objectives: ``objective(model, batch) -> (loss, logs)``, logs a dict of floats.

- ``CrossEntropy`` (class weights, label smoothing, ignore index) — every dialogue model.
- ``FocalLoss`` (γ, class weights α) and ``class_weights`` (balanced, sqrt, effective number) — rare classes.
- ``distillation_loss`` — T²·KL to a teacher's softened distribution (encoder distillation).
- ``SupConObjective`` — classification loss + λ·supervised contrastive term over the model's hidden states.
- ``MatavObjective`` — MaTAV: cross-entropy + λ·MEC with the momentum and queue updates.
- ``contrastive``: ``FeatureQueue``, ``MomentumEncoder``, ``mec_loss`` (MoCo / ALBEF pieces).

This package imports nothing from merc above ``merc.errors``; models may use its pieces.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from merc.errors import ConfigError
from merc.objectives.class_weights import SCHEMES, class_weights
from merc.objectives.classification import IGNORE_INDEX, CrossEntropy, cross_entropy, model_logits
from merc.objectives.contrastive import MEC_PAIRS, FeatureQueue, MomentumEncoder, contrastive_term, mec_loss
from merc.objectives.distill import distillation_loss
from merc.objectives.focal import FocalLoss, focal_loss
from merc.objectives.mec import MatavObjective
from merc.objectives.supcon import SupConObjective, check_hidden, supcon_loss

LOSSES = ("ce", "focal", "supcon")


class Objective(Protocol):
    def __call__(self, model: torch.nn.Module, batch) -> tuple[Tensor, dict[str, float]]: ...


def objective_for(model: torch.nn.Module, *, weight: Tensor | None = None, label_smoothing: float = 0.0,
                  loss: str = "ce", focal_gamma: float = 2.0, supcon_weight: float = 0.1,
                  supcon_temperature: float = 0.1) -> Objective:
    """The model's objective. ``loss``: ``ce`` cross-entropy (today's default), ``focal`` focal loss with
    γ = ``focal_gamma``, ``supcon`` cross-entropy + ``supcon_weight`` · SupCon (dialogue models only); ``weight``
    (n_classes,) class weights for either. A model with ``forward_train`` (MaTAV) wraps the classification
    loss in CE + λ·MEC."""
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {loss!r}")
    if loss == "focal":
        if label_smoothing:
            raise ConfigError("the focal loss does not take label smoothing; use --loss ce with label smoothing")
        cls = FocalLoss(gamma=focal_gamma, weight=weight)
    else:
        cls = CrossEntropy(weight=weight, label_smoothing=label_smoothing)
    if loss == "supcon":
        check_hidden(model)
        return SupConObjective(cls, weight=supcon_weight, temperature=supcon_temperature)
    return MatavObjective(cls) if hasattr(model, "forward_train") else cls


__all__ = ["IGNORE_INDEX", "LOSSES", "MEC_PAIRS", "SCHEMES", "CrossEntropy", "FeatureQueue", "FocalLoss",
           "MatavObjective", "MomentumEncoder", "Objective", "SupConObjective", "class_weights", "contrastive_term",
           "cross_entropy", "distillation_loss", "focal_loss", "mec_loss", "model_logits", "objective_for",
           "supcon_loss"]
