"""Per-utterance evidence beside the dialogue context: one linear classifier per modality, late-fused.

    feats[m] (batch, seq_len, d_m) ──Dropout──▶ Linear_m ──▶ (batch, seq_len, n_classes)
        where present[m]; the learned per-class vector ``absent[m]`` where not ──▶ sum over modalities

The dialogue models add these logits to their context head's (``utterance_logits=True`` in
``DialogueConfig`` and ``MatavConfig``):

    logits = head(context(fuse(feats))) + UtteranceLogits(feats)

Why. How a line was said is a per-utterance cue: an angry voice is angry whatever came before. In the fused
models such a cue must survive a d_model projection with dropout, a sum with the other modalities and the
speaker embedding, and every context layer before it reaches the classifier; on small corpora the model
then learns the context and the text first and leaves much of the cue unused (issue #32: a logistic
regression on eGeMAPS alone beat the Mamba model given eGeMAPS and text). With this path the model holds
a linear probe of every modality as a sub-model; the context head learns what the dialogue adds on top
(a residual in logit space). Each modality has its own classifier, so a strong modality is not diluted by
the others before the classifier sees it, and an absent modality contributes a learned bias, never the
values of its (zeroed) slot.

Reference: late fusion of per-modality classifiers (e.g. Baltrušaitis et al., "Multimodal Machine
Learning: A Survey and Taxonomy", TPAMI 2019, §4); residual connections (He et al., CVPR 2016).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from merc.models.linear import LinearProbe


class UtteranceLogits(nn.Module):
    def __init__(self, input_dims: dict[str, int], n_classes: int, *, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear = nn.ModuleDict({m: nn.Linear(d, n_classes) for m, d in input_dims.items()})
        for lin in self.linear.values():  # starts silent: at first the model is the context model alone
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.absent = nn.ParameterDict({m: nn.Parameter(torch.zeros(n_classes)) for m in input_dims})

    @torch.no_grad()
    def load_probe(self, probe: LinearProbe) -> None:
        """Make this path compute exactly ``probe``'s logits (a probe fitted on the same inputs and modalities).

        The probe's logits are b + Σ_m [present_m · (W_m z_m + v_m)] with z_m = (f_m − μ_m)/σ_m and v_m the
        weight of m's presence indicator; here modality m gives A_m f_m + c_m where present and absent_m where
        not. So A_m = W_m / σ_m, c_m = v_m − A_m μ_m + b/M and absent_m = b/M (the bias shared by the M
        modalities, present or not)."""
        if list(probe.modalities) != list(self.linear):
            raise ValueError(f"probe modalities {probe.modalities} != this path's {list(self.linear)}")
        W, b = probe.linear.weight, probe.linear.bias                                    # (n_classes, n_inputs)
        col, share = 0, b / len(self.linear)
        for m, lin in self.linear.items():
            d = lin.in_features
            mean, std = getattr(probe, f"mean_{m}"), getattr(probe, f"std_{m}")          # (d_m,)
            A = W[:, col:col + d] / std                                                  # (n_classes, d_m)
            lin.weight.copy_(A)
            lin.bias.copy_(W[:, col + d] - A @ mean + share)
            self.absent[m].copy_(share)
            col += d + 1

    def forward(self, feats: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> Tensor:
        """feats[m] (batch, seq_len, d_m), present[m] (batch, seq_len) bool (None or missing: all present)
        -> (batch, seq_len, n_classes)."""
        out = 0
        for m, lin in self.linear.items():
            f = feats[m].to(lin.weight.dtype)
            p = None if present is None else present.get(m)
            if p is None:
                out = out + lin(self.drop(f))
                continue
            p = p.to(torch.bool)[..., None]                                             # (batch, seq_len, 1)
            f = torch.where(p, f, torch.zeros((), dtype=f.dtype, device=f.device))      # absent values never read
            out = out + torch.where(p, lin(self.drop(f)), self.absent[m].to(f.dtype))    # (batch, seq_len, n_classes)
        return out
