"""Cross-entropy over the real, labelled utterances of a padded dialogue batch, as an Objective."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # = merc.training.batching.IGNORE (padding and unlabelled utterances)


def model_logits(model: torch.nn.Module, batch) -> Tensor:
    """logits (batch, max_len, n_classes); passes the batch's presence masks, and its per-utterance logits
    (stacked fusion's out-of-fold probe logits), when it has them."""
    return model(batch.feats, batch.speakers, batch.mask, present=getattr(batch, "present", None),
                 **batch_extras(batch))


def batch_extras(batch) -> dict:
    """Keyword arguments a batch adds to the model call: ``utt_logits`` when the batch carries them."""
    utt = getattr(batch, "utt_logits", None)
    return {} if utt is None else {"utt_logits": utt}


def cross_entropy(logits: Tensor, labels: Tensor, *, weight: Tensor | None = None, label_smoothing: float = 0.0,
                  ignore_index: int = IGNORE_INDEX) -> Tensor:
    """logits (batch, max_len, n_classes), labels (batch, max_len) -> mean over labelled positions."""
    weight = None if weight is None else weight.to(logits.device)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), weight=weight, ignore_index=ignore_index,
                           label_smoothing=label_smoothing)


@dataclass
class CrossEntropy:
    """``CrossEntropy(weight, label_smoothing)(model, batch) -> (loss, {"ce": value})``.

    weight (n_classes,) class weights or None; positions labelled ``ignore_index`` (padding, unlabelled)
    are left out."""
    weight: Tensor | None = None
    label_smoothing: float = 0.0
    ignore_index: int = IGNORE_INDEX

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return cross_entropy(logits, labels, weight=self.weight, label_smoothing=self.label_smoothing,
                             ignore_index=self.ignore_index)

    def __call__(self, model: torch.nn.Module, batch) -> tuple[Tensor, dict[str, float]]:
        loss = self.loss(model_logits(model, batch), batch.labels)
        return loss, {"ce": float(loss.detach())}
