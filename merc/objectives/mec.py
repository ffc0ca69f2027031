"""MaTAV's training objective: cross-entropy + λ · MEC, with the momentum and queue updates.

One call on a training batch does, in ALBEF's order: (1) the momentum update of the EMA copies (after the
previous optimizer step), (2) the forward pass (logits, online and momentum aligned vectors), (3) the loss
CE + λ·MEC against the queues as they were before this batch, (4) the enqueue of this batch's momentum
vectors (valid utterances only). The updates happen only in train mode, so scoring a batch in eval mode
changes nothing. The momentum and queue updates live here rather than in trainer callbacks, so a MaTAV
model cannot be trained with MEC but without them. A model with ``mec_weight == 0`` (or no modality pair)
gets plain cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from merc.objectives.classification import CrossEntropy, batch_extras
from merc.objectives.contrastive import mec_loss


@dataclass
class MatavObjective:
    """``MatavObjective(CrossEntropy(weight, smoothing))(model, batch) -> (loss, logs)``; logs hold
    ``ce``, ``mec`` and each InfoNCE term. The model must have ``forward_train``, ``momentum_update``,
    ``enqueue``, ``queues`` and ``config`` (``merc.models.matav.MatavModel``)."""
    ce: CrossEntropy = field(default_factory=CrossEntropy)

    def __call__(self, model: torch.nn.Module, batch) -> tuple[Tensor, dict[str, float]]:
        c = model.config
        if model.training:
            model.momentum_update()
        logits, aux = model.forward_train(batch.feats, batch.speakers, batch.mask,
                                          present=getattr(batch, "present", None), **batch_extras(batch))
        ce = self.ce.loss(logits, batch.labels)
        logs = {"ce": float(ce.detach())}
        if aux is None:
            return ce, logs
        flat = {k: {m: t.flatten(0, 1) for m, t in aux[k].items()} for k in ("z", "z_m")}  # (batch·seq_len, d_align)
        valid = {m: v.flatten() for m, v in aux["valid"].items()}                          # (batch·seq_len,)
        queues = {m: q.get() for m, q in model.queues.items()}                              # (len, d_align)
        mec, terms = mec_loss(flat["z"], flat["z_m"], valid, queues, c.temperature, symmetric=c.mec_symmetric,
                              in_batch_negatives=c.mec_in_batch_negatives, pairs=c.mec_pairs)
        if model.training:
            model.enqueue(aux)
        logs.update(mec=float(mec.detach()), **terms)
        return ce + c.mec_weight * mec, logs
