"""Focal loss over the labelled utterances of a padded dialogue batch, as an Objective.

    FL(p_y) = - α_y · (1 - p_y)^γ · log p_y,    mean weighted by α_y over labelled positions

γ (``gamma``) down-weights utterances the model already classifies confidently, so the rare, hard classes
(fear, disgust on MELD) weigh more in the gradient; α (``weight``) are optional per-class weights (e.g. the
class-balanced weights of :mod:`merc.objectives.class_weights`). The weighted mean uses the same normaliser
as ``torch.nn.functional.cross_entropy`` (Σ α_y), so γ = 0 is exactly the (weighted) cross-entropy.

Reference: Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017, arXiv:1708.02002).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from merc.objectives.classification import IGNORE_INDEX, model_logits


def focal_loss(logits: Tensor, labels: Tensor, *, gamma: float = 2.0, weight: Tensor | None = None,
               ignore_index: int = IGNORE_INDEX) -> Tensor:
    """logits (batch, max_len, n_classes), labels (batch, max_len) -> scalar; ``ignore_index`` positions left out."""
    logits, labels = logits.flatten(0, 1), labels.flatten()          # (N, n_classes), (N,)
    keep = labels != ignore_index
    logits, labels = logits[keep], labels[keep]                      # (n, n_classes), (n,)
    if labels.numel() == 0:
        return logits.sum() * 0.0                                    # no labelled utterance: zero, still a graph
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None]).squeeze(1)  # (n,) log p_y
    loss = -((1.0 - logp.exp()).clamp(min=0.0) ** gamma) * logp if gamma else -logp
    w = weight.to(loss.device, loss.dtype)[labels] if weight is not None else torch.ones_like(loss)  # (n,) α_y
    return (w * loss).sum() / w.sum()


@dataclass
class FocalLoss:
    """``FocalLoss(gamma, weight)(model, batch) -> (loss, {"focal": value})``; ``.loss(logits, labels)`` as
    :class:`~merc.objectives.classification.CrossEntropy` (so MaTAV's objective can use it in CE's place)."""
    gamma: float = 2.0
    weight: Tensor | None = None
    ignore_index: int = IGNORE_INDEX

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return focal_loss(logits, labels, gamma=self.gamma, weight=self.weight, ignore_index=self.ignore_index)

    def __call__(self, model: torch.nn.Module, batch) -> tuple[Tensor, dict[str, float]]:
        loss = self.loss(model_logits(model, batch), batch.labels)
        return loss, {"focal": float(loss.detach())}
