"""The linear probe: multinomial logistic regression on each utterance's features, no dialogue context.

    feats[m] (batch, seq_len, d_m) ──z-score with train statistics (0 where absent)──▶ concat over modalities
        ‖ presence indicators (one per modality) ──Linear──▶ logits (batch, seq_len, n_classes)

It is the floor every fusion model is measured against (``merc train --model linear``): a model that sees
the same features plus the whole dialogue should never score below it. The weights are not trained by SGD
but fitted by scikit-learn's ``LogisticRegression`` (L-BFGS, L2 penalty) with the inverse regularisation
strength ``C`` chosen on **dev** weighted F1 (``merc.training.probe``); they are then copied into this
module, so a probe is an ordinary run directory: ``merc evaluate`` and ``merc predict`` load it like any
other model, from ``model.safetensors``.

An absent modality (``present[m]`` False) contributes zeros — the train mean after z-scoring — and its
indicator lets the probe learn a bias for "no audio" or "no face". Speakers and ``mask`` are accepted for
the common model interface and not used (padded positions give meaningless logits, masked by the caller).

Reference: the linear-evaluation protocol of representation learning (e.g. Alain & Bengio, "Understanding
intermediate layers using linear classifier probes", 2016).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch import Tensor

from merc.errors import ConfigError

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strengths tried; the dev-best is kept


@dataclass
class LinearConfig:
    kind: str = "linear"  # run directories tell model families apart by this field
    input_dims: dict[str, int] = field(default_factory=lambda: {"text": 768})  # modality -> feature dim
    n_classes: int = 7
    c_grid: tuple[float, ...] = C_GRID  # what the fit tries; the dev-selected C is in the run's metrics.json
    max_iter: int = 2000  # L-BFGS iterations
    max_speakers: int = 16  # the batching interface's; a probe ignores speakers

    def __post_init__(self):
        if self.kind != "linear":
            raise ConfigError(f"LinearConfig.kind must be 'linear', got {self.kind!r}")
        if not self.input_dims:
            raise ConfigError("input_dims is empty: give at least one modality, e.g. {'text': 768}")
        self.c_grid = tuple(float(c) for c in self.c_grid)
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ConfigError(f"c_grid must hold positive values, got {self.c_grid}")

    @property
    def n_inputs(self) -> int:
        """Width of the design matrix: every modality's features and one presence indicator each."""
        return sum(self.input_dims.values()) + len(self.input_dims)


class LinearProbe(nn.Module):
    def __init__(self, config: LinearConfig):
        super().__init__()
        self.config = c = config
        self.modalities = list(c.input_dims)
        for m, d in c.input_dims.items():  # train statistics, set by the fit (identity until then)
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"std_{m}", torch.ones(d))
        self.linear = nn.Linear(c.n_inputs, c.n_classes)

    def design(self, feats: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> Tensor:
        """feats[m] (..., d_m), present[m] (...) bool -> the probe's inputs (..., n_inputs)."""
        missing = [m for m in self.modalities if m not in feats]
        if missing:
            raise KeyError(f"feats has no {missing}; this probe was built for modalities {self.modalities}")
        cols = []
        for m in self.modalities:
            f = feats[m].to(self.linear.weight.dtype)                              # (..., d_m)
            p = (present or {}).get(m)
            p = torch.ones(f.shape[:-1], dtype=torch.bool, device=f.device) if p is None else p.to(torch.bool)
            z = (f - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")       # (..., d_m)
            cols += [torch.where(p[..., None], z, torch.zeros((), dtype=z.dtype, device=z.device)),
                     p[..., None].to(z.dtype)]                                      # (..., 1)
        return torch.cat(cols, dim=-1)                                              # (..., n_inputs)

    def forward(self, feats: dict[str, Tensor], speakers: Tensor | None = None, mask: Tensor | None = None,
                present: dict[str, Tensor] | None = None) -> Tensor:
        """feats[m] (batch, seq_len, d_m) -> logits (batch, seq_len, n_classes); see the module docstring."""
        return self.linear(self.design(feats, present))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
