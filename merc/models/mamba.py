"""A Mamba-1 block that runs on CPU, with padding masks, a step (recurrent) mode, and a bidirectional wrapper.

The block follows state-spaces/mamba ``mamba_simple.py``: in_proj to (x, z), causal depthwise conv + SiLU,
x_proj to (dt, B, C), dt_proj with the standard dt init, S4D-real A, D skip, the selective scan
(``merc.models.scan``), gating by SiLU(z), out_proj.

Padding. ``mask`` (batch, seq_len) is True at real positions. Two things keep padded positions from
touching real ones: (1) the conv input x is zeroed at padded positions, so the conv only ever sees zeros
there (exactly what its own causal zero-padding feeds it); (2) delta is set to 0 at padded positions, so
there exp(delta * A) = 1 and delta * B * u = 0: the SSM state passes through unchanged. Together, right-
and left-padded sequences give exactly the outputs of the unpadded ones; padded outputs are set to 0.
(Inside a sequence a masked hole keeps the state, but the conv window still spans it as zeros.)

References:
- A. Gu, T. Dao. "Mamba: Linear-Time Sequence Modeling with Selective State Spaces". arXiv:2312.00752.
- state-spaces/mamba ``mamba_ssm/modules/mamba_simple.py`` (block, init, ``step``) and
  HF transformers ``modeling_mamba.py`` (slow path with attention mask).
- Bidirectional Mamba as the sum of a forward and a reversed-sequence Mamba: Vision Mamba
  (Zhu et al., arXiv:2401.09417) and BiMamba (Schiff et al., Caduceus, arXiv:2403.03234).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from merc.errors import ConfigError
from merc.models.scan import selective_scan, selective_scan_ref


@dataclass
class MambaConfig:
    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"  # "auto" = ceil(d_model / 16)
    bias: bool = False  # in_proj / out_proj
    conv_bias: bool = True
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    chunk_size: int | None = None  # selective_scan positions per chunk; None adapts them to the shape
    reference_scan: bool = False  # use the slow sequential scan (tests, benchmarks)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)


@dataclass
class MambaState:
    """Recurrent state of one block for ``Mamba.step``."""
    conv: Tensor  # (batch, d_inner, d_conv)  last d_conv conv inputs
    ssm: Tensor   # (batch, d_inner, d_state)

# helpers


def flip_padded(x: Tensor, mask: Tensor | None) -> Tensor:
    """Reverse each sequence's real positions among themselves; padded positions stay where they are.

    x: (batch, seq_len, ...), mask: (batch, seq_len) True = real. For right padding this reverses the
    prefix [0, length) of each row. Applying it twice gives x back.
    """
    if mask is None:
        return x.flip(1)
    batch, seq_len = mask.shape
    rank = mask.long().cumsum(1) - 1                                        # (batch, seq_len) rank among real
    length = mask.sum(1, keepdim=True)                                      # (batch, 1)
    real_by_rank = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real positions first, in order
    source = real_by_rank.gather(1, (length - 1 - rank).clamp(min=0))
    source = torch.where(mask, source, torch.arange(seq_len, device=x.device).expand(batch, -1))
    index = source.view(batch, seq_len, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "rms":
        return nn.RMSNorm(dim, eps=1e-5)
    if kind == "layer":
        return nn.LayerNorm(dim)
    raise ConfigError(f"norm must be 'rms' or 'layer', got {kind!r}")

# classes


class Mamba(nn.Module):
    """One Mamba block: (batch, seq_len, d_model) -> (batch, seq_len, d_model), causal."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = c = config
        d_inner, rank = c.d_inner, c.rank
        self.in_proj = nn.Linear(c.d_model, 2 * d_inner, bias=c.bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, kernel_size=c.d_conv, groups=d_inner, padding=c.d_conv - 1,
                                bias=c.conv_bias)
        self.x_proj = nn.Linear(d_inner, rank + 2 * c.d_state, bias=False)
        self.dt_proj = nn.Linear(rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, c.d_model, bias=c.bias)

        # dt init: weight so dt_proj(dt) starts small; bias = softplus^-1 of dt ~ LogUniform[dt_min, dt_max]
        dt_std = rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        dt = torch.exp(torch.rand(d_inner) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min))
        dt = dt.clamp(min=c.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        # S4D-real init: A = -[1, 2, ..., d_state] for every channel; D = 1
        A = torch.arange(1, c.d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # (d_inner, d_state)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def _ssm_params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., d_inner) -> delta (..., d_inner) after softplus, B and C (..., d_state)."""
        dt, B, C = self.x_proj(x).split([self.config.rank, self.config.d_state, self.config.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """hidden (batch, seq_len, d_model), mask (batch, seq_len) bool True = real -> (batch, seq_len, d_model)."""
        seq_len = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)                        # (batch, seq_len, d_inner) each
        if mask is not None:
            x = x * mask[..., None]                                         # padded inputs never reach the conv
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :seq_len])           # (batch, d_inner, seq_len)
        delta, B, C = self._ssm_params(x.transpose(1, 2))                   # (batch, seq_len, d_inner / d_state)
        delta = delta.transpose(1, 2)                                       # (batch, d_inner, seq_len)
        if mask is not None:
            delta = delta * mask[:, None, :]                                # state passes padded positions unchanged
        A = -torch.exp(self.A_log.float())                                  # (d_inner, d_state)
        args = (x, delta, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z.transpose(1, 2))
        if self.config.reference_scan:
            y = selective_scan_ref(*args)
        else:
            y = selective_scan(*args, chunk_size=self.config.chunk_size)    # (batch, d_inner, seq_len)
        out = self.out_proj(y.transpose(1, 2))                              # (batch, seq_len, d_model)
        return out if mask is None else out * mask[..., None]

    def allocate_state(self, batch: int, *, device: torch.device | None = None,
                       dtype: torch.dtype | None = None) -> MambaState:
        c, p = self.config, self.A_log
        device, dtype = device or p.device, dtype or self.in_proj.weight.dtype
        return MambaState(conv=torch.zeros(batch, c.d_inner, c.d_conv, device=device, dtype=dtype),
                          ssm=torch.zeros(batch, c.d_inner, c.d_state, device=device, dtype=dtype))

    def step(self, hidden: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One position: hidden (batch, d_model) -> (batch, d_model), new state.
        Equals ``forward`` position by position."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)                        # (batch, d_inner) each
        conv = torch.cat([state.conv[..., 1:], x[..., None]], dim=-1)       # (batch, d_inner, d_conv)
        x = (conv * self.conv1d.weight[:, 0]).sum(-1)                       # (batch, d_inner)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        delta, B, C = self._ssm_params(x)                                   # (batch, d_inner), (batch, d_state) x 2
        A = -torch.exp(self.A_log.float())                                  # (d_inner, d_state)
        ssm = torch.exp(delta[..., None] * A) * state.ssm + (delta * x)[..., None] * B[:, None, :]
        y = (ssm * C[:, None, :]).sum(-1) + self.D * x                      # (batch, d_inner)
        y = y * F.silu(z)
        return self.out_proj(y), MambaState(conv=conv, ssm=ssm)


class BiMamba(nn.Module):
    """Bidirectional Mamba: a forward block plus a block over each sequence reversed (real part only).

    The two outputs are **summed**. Each direction has its own out_proj, so the sum equals a
    concat + Linear(2 * d_inner -> d_model) over the two gated scan outputs, at no extra cost.
    """

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.forward_mamba = Mamba(config)
        self.backward_mamba = Mamba(config)

    def forward(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        back = self.backward_mamba(flip_padded(hidden, mask), mask)
        return self.forward_mamba(hidden, mask) + flip_padded(back, mask)   # (batch, seq_len, d_model)


class MambaLayer(nn.Module):
    """Pre-norm residual block: x + dropout(mixer(norm(x))), mixer = Mamba or BiMamba."""

    def __init__(self, config: MambaConfig, *, bidirectional: bool = False, dropout: float = 0.0,
                 norm: str = "rms"):
        super().__init__()
        self.bidirectional = bidirectional
        self.norm = make_norm(norm, config.d_model)
        self.mixer = BiMamba(config) if bidirectional else Mamba(config)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x + self.dropout(self.mixer(self.norm(x), mask))

    def allocate_state(self, batch: int, **kw) -> MambaState:
        if self.bidirectional:
            raise RuntimeError("a bidirectional layer sees the future: it has no step mode")
        return self.mixer.allocate_state(batch, **kw)

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        if self.bidirectional:
            raise RuntimeError("a bidirectional layer sees the future: it has no step mode")
        y, state = self.mixer.step(self.norm(x), state)
        return x + self.dropout(y), state


class MambaStack(nn.Module):
    """n_layers MambaLayers and a final norm: (batch, seq_len, d_model) -> (batch, seq_len, d_model)."""

    def __init__(self, config: MambaConfig, *, n_layers: int = 2, bidirectional: bool = False,
                 dropout: float = 0.0, norm: str = "rms"):
        super().__init__()
        self.layers = nn.ModuleList(MambaLayer(config, bidirectional=bidirectional, dropout=dropout, norm=norm)
                                    for _ in range(n_layers))
        self.norm = make_norm(norm, config.d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)

    def allocate_state(self, batch: int, **kw) -> list[MambaState]:
        return [layer.allocate_state(batch, **kw) for layer in self.layers]

    def step(self, x: Tensor, states: list[MambaState]) -> tuple[Tensor, list[MambaState]]:
        """x (batch, d_model) at one position -> (batch, d_model), new states (unidirectional stacks only)."""
        new = []
        for layer, state in zip(self.layers, states):
            x, state = layer.step(x, state)
            new.append(state)
        return self.norm(x), new
