"""Knowledge distillation: the student matches a teacher's softened class distribution.

    KD(s, t) = T² · KL( softmax(t / T) ‖ softmax(s / T) ),   batch mean

``T`` (temperature) > 1 spreads the teacher's probability over the classes it finds plausible ("dark
knowledge": a fear utterance that reads a little like surprise); the T² factor keeps the gradient's scale
independent of T, so the term mixes with the label loss as ``(1 - α) · CE + α · KD``.

Reference: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (arXiv:1503.02531), §2.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from merc.errors import ConfigError


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """student_logits (batch, n_classes), teacher_logits (batch, n_classes) -> scalar T²·KL(teacher ‖ student)."""
    if temperature <= 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                          f"{tuple(teacher_logits.shape)} differ in shape")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)        # (batch, n_classes)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)  # (batch, n_classes)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)     # Σ p_t (log p_t - log p_s) / batch
    return kl * temperature ** 2
