"""Stage 3 of identity-based transfer: a dialogue model over stage-2 refined features.

    raw stage-1 feats[m] (batch, seq_len, d_in[m]) ─adapter[m].bottleneck─▶ (batch, seq_len, 128)   m adapted
    raw stage-1 feats[m] (batch, seq_len, d_m)     ─────────────────────────▶ unchanged               otherwise
        ──▶ inner dialogue model (DialogueModel: masked-sum fusion, speaker embedding, (Bi)Mamba, classifier)

``AdaptedModel`` owns the adapters (:class:`merc.models.adapter.Adapter`, whole: their classifier heads are
kept so a saved run holds the complete adapter, but only the MLP up to the 128-d bottleneck is used). With
``tune=False`` (the default of ``merc train --adapters``) the adapters are **frozen**: no gradient, and always
in eval mode (no dropout), so the refined feature is exactly ``adapter.refine(x)``. With ``tune=True`` they are
trained with the dialogue loss (``merc train --tune-adapters``), dropout included.

Absent inputs (``present[m]`` False) are replaced by zeros *before* the adapter, so whatever sits in an absent
slot (NaN included) reaches neither the output nor the gradients; the inner model then puts its learned
absent embedding there (``merc.models.dialogue``).

Reference: Wang & Beigi, "Quality-Controlled Multimodal Emotion Recognition in Conversations with
Identity-Based Transfer Learning and MAMBA Fusion" (stage 3: Mamba fusion of the 128-d refined features).
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
from torch import Tensor

from merc.errors import ConfigError, an
from merc.models.adapter import Adapter
from merc.models.dialogue import DialogueConfig, DialogueModel


class AdaptedModel(nn.Module):
    """``AdaptedModel(config, adapters, tune)``: ``config.input_dims`` are the **raw** stage-1 dimensions (what
    batches carry); the inner model sees each adapted modality at its adapter's bottleneck width."""

    def __init__(self, config: DialogueConfig, adapters: dict[str, Adapter], *, tune: bool = False):
        super().__init__()
        if not isinstance(config, DialogueConfig):
            raise ConfigError(f"stage-2 adapters feed the dialogue models ({type(config).__name__} given); "
                              f"use --model mamba, gru, transformer or mlp with --adapters")
        for m, a in adapters.items():
            if m not in config.input_dims:
                raise ConfigError(f"{an(m)} adapter was given but the run's modalities are {list(config.input_dims)}")
            if a.config.d_in != config.input_dims[m]:
                raise ConfigError(f"the {m} adapter takes {a.config.d_in}-d features, the run's {m} features are "
                                  f"{config.input_dims[m]}-d")
        self.config, self.tune = config, tune
        self.adapters = nn.ModuleDict(adapters)
        inner_dims = {m: (adapters[m].config.bottleneck if m in adapters else d) for m, d in config.input_dims.items()}
        self.inner = DialogueModel(replace(config, input_dims=inner_dims))
        if not tune:
            self.adapters.requires_grad_(False)
            self.adapters.eval()

    def train(self, mode: bool = True) -> "AdaptedModel":
        super().train(mode)
        if not self.tune:
            self.adapters.eval()  # frozen adapters never drop out
        return self

    def refine(self, feats: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Raw feats -> the inner model's inputs: adapted modalities (batch, seq_len, bottleneck), the rest as given."""
        out = dict(feats)
        for m, adapter in self.adapters.items():
            f = feats[m].to(adapter.fc1.weight.dtype)  # (batch, seq_len, d_in)
            p = None if present is None else present.get(m)
            if p is not None:
                f = torch.where(p.to(torch.bool)[..., None], f, torch.zeros((), dtype=f.dtype, device=f.device))
            out[m] = adapter.bottleneck(f)  # (batch, seq_len, bottleneck)
        return out

    def forward(self, feats: dict[str, Tensor], speakers: Tensor, mask: Tensor,
                present: dict[str, Tensor] | None = None, *, return_hidden: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        """As :meth:`DialogueModel.forward`, on raw stage-1 features -> logits (batch, seq_len, n_classes)
        (and the hidden states (batch, seq_len, d_model) with ``return_hidden``)."""
        missing = [m for m in self.adapters if m not in feats]
        if missing:
            raise KeyError(f"feats has no {missing}; this model was built for {list(self.config.input_dims)}")
        return self.inner(self.refine(feats, present), speakers, mask, present=present, return_hidden=return_hidden)

    def num_parameters(self, trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)
