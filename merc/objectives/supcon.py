"""Supervised contrastive term over the utterance representations of a dialogue model, added to the
classification loss:

    loss = CE (or focal) + λ · SupCon(z, y)

    z_i = h_i / ‖h_i‖, h_i the dialogue model's hidden state of utterance i (its context encoder's output,
          the input of the classifier head: ``model(..., return_hidden=True)``)
    SupCon = mean over anchors i with at least one positive of
             - 1/|P(i)| Σ_{p ∈ P(i)} log( exp(z_i·z_p/τ) / Σ_{a ≠ i} exp(z_i·z_a/τ) )
    P(i) = the other labelled utterances of the batch with i's label; a runs over every other labelled one.

The anchors and their contrast set are every labelled utterance of the batch (all its dialogues);
padding and unlabelled positions (label ``IGNORE_INDEX``) are neither anchors, positives nor negatives.
A batch without a positive pair adds 0. Pulling same-class utterances together (and pushing the classes
apart) gives the rare classes compact clusters; the "L_out" form (the mean over positives outside the log)
is the one the paper recommends.

References: Khosla et al., "Supervised Contrastive Learning" (NeurIPS 2020, arXiv:2004.11362, eq. 2);
Song et al., "Supervised Prototypical Contrastive Learning for Emotion Recognition in Conversation" (SPCL,
EMNLP 2022, arXiv:2210.08713) apply it to ERC (with prototypes and a curriculum, not done here).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from merc.errors import ConfigError
from merc.objectives.classification import IGNORE_INDEX, CrossEntropy, batch_extras


def supcon_loss(hidden: Tensor, labels: Tensor, *, temperature: float = 0.1,
                ignore_index: int = IGNORE_INDEX) -> Tensor:
    """hidden (batch, max_len, d) or (N, d), labels (batch, max_len) or (N,) -> scalar SupCon (L_out)."""
    h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)   # (N, d), (N,)
    keep = y != ignore_index
    z, y = F.normalize(h[keep].float(), dim=-1), y[keep]              # (n, d), (n,)
    n = y.numel()
    if n < 2:
        return hidden.sum() * 0.0
    sim = z @ z.T / temperature                                        # (n, n)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))                    # a ≠ i
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)         # (n, n) log softmax over a ≠ i
    pos = (y[:, None] == y[None, :]) & ~self_mask                      # (n, n) P(i)
    n_pos = pos.sum(1)                                                 # (n,)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return hidden.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)[anchors] / n_pos[anchors])  # (n_anchors,)
    return per_anchor.mean()


def check_hidden(model: torch.nn.Module) -> None:
    """ConfigError unless ``model.forward`` takes ``return_hidden`` (the dialogue models; not MaTAV)."""
    if "return_hidden" not in inspect.signature(model.forward).parameters:
        raise ConfigError(f"the supcon loss needs the utterance representations of a dialogue model (mamba, gru, "
                          f"transformer, mlp); {type(model).__name__} does not expose them — use --loss ce or focal")


@dataclass
class SupConObjective:
    """``SupConObjective(classification, weight, temperature)(model, batch) -> (loss, logs)``: the
    classification loss (``CrossEntropy`` or ``FocalLoss``: anything with ``.loss(logits, labels)``) plus
    ``weight`` · SupCon over the model's hidden states. The model's forward must accept ``return_hidden=True``
    and then return ``(logits, hidden (batch, max_len, d))`` (the dialogue models do; MaTAV does not)."""
    classification: object = field(default_factory=CrossEntropy)
    weight: float = 0.1
    temperature: float = 0.1

    def __call__(self, model: torch.nn.Module, batch) -> tuple[Tensor, dict[str, float]]:
        check_hidden(model)
        logits, hidden = model(batch.feats, batch.speakers, batch.mask, present=getattr(batch, "present", None),
                               return_hidden=True, **batch_extras(batch))  # (batch, max_len, n_classes), (…, d)
        cls = self.classification.loss(logits, batch.labels)
        sc = supcon_loss(hidden, batch.labels, temperature=self.temperature)
        return cls + self.weight * sc, {"cls": float(cls.detach()), "supcon": float(sc.detach())}
