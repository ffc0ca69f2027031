"""Dialogue models: a padded batch of utterance features -> per-utterance emotion logits.

    feats[m] (batch, seq_len, d_m) ──Linear+LayerNorm+Dropout per modality──▶ sum over modalities
        + speaker-index embedding (index = order of first appearance in the dialogue)
        ──context encoder (mamba | gru | transformer | mlp)──▶ LayerNorm, Dropout, Linear ──▶ logits

Modalities are fused by a **masked sum** of their d_model projections (each has its own Linear+LayerNorm,
so the sum is a concat + Linear followed by per-block normalisation; it keeps d_model fixed for any set of
modalities). Where an utterance lacks modality m (``present[m]`` False) its slot contributes a **learned
absent embedding** ``absent[m]`` (d_model, initialised to zero: at first an absent modality adds nothing,
as in a plain masked sum) instead of its projection. The absent slot's values are never read: they are
replaced by zeros *before* the projection (so NaN or garbage there is harmless, including in gradients) and
the projection is then replaced by ``absent[m]`` — the output does not depend on them at all. We chose
sum + absent embedding over a masked mean because with every modality present it is exactly the fusion
of earlier versions (old run directories load and predict the same; their checkpoints have no absent
embeddings and get zeros), and because the model can learn what a missing face or voice means rather than
only seeing a smaller sum. ``present=None`` means every real utterance has every modality.

Context encoders: ``mamba`` = n_layers of pre-norm (Bi)Mamba residual layers
(``merc.models.mamba``); ``gru`` = a (bi)GRU over packed sequences; ``transformer`` = a pre-norm
TransformerEncoder with a key padding mask and sinusoidal positions (any length; causal when
``bidirectional=False``); ``mlp`` = no context, a residual per-utterance MLP (the ablation baseline).
Every kind honours the mask: padded positions never change outputs at real positions (right padding,
as made by ``merc.training.batching``).

References: bc-LSTM (Poria et al., ACL 2017) for GRU/LSTM context over utterances; Transformer
(Vaswani et al., 2017); Mamba (Gu & Dao, arXiv:2312.00752).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from merc.errors import ConfigError
from merc.models.fusion import UtteranceLogits
from merc.models.mamba import MambaConfig, MambaStack

KINDS = ("mamba", "gru", "transformer", "mlp")


@dataclass
class DialogueConfig:
    kind: str = "mamba"  # "mamba" | "gru" | "transformer" | "mlp"
    input_dims: dict[str, int] = field(default_factory=lambda: {"text": 768})  # modality -> feature dim
    n_classes: int = 7
    d_model: int = 128
    n_layers: int = 2
    dropout: float = 0.5
    bidirectional: bool = True
    max_speakers: int = 16  # speaker indices >= max_speakers share the last embedding
    d_state: int = 16  # mamba
    d_conv: int = 4
    expand: int = 2
    n_heads: int = 4  # transformer
    # fusion (issue #32): a per-utterance linear classifier per modality whose logits are added to the context
    # head's (merc.models.fusion.UtteranceLogits)
    utterance_logits: bool = False
    # stacked fusion: that path is a frozen probe, and the context model also reads its class probabilities
    # (trained on out-of-fold probe logits: merc.training.stacking)
    stacked: bool = False
    # the modalities the context encoder reads (None: all); the others reach the classifier only through the
    # per-utterance path (late fusion: a cue that is per utterance never passes through the context model)
    context_modalities: list[str] | None = None
    # gated fusion: each modality's projection is scaled by a per-utterance gate σ(w_m·h_m + b_m) before the sum,
    # so the model can turn a modality down where it carries nothing (initialised open: σ(b_m) = 0.88)
    gated: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"unknown dialogue model kind {self.kind!r}; choose one of {KINDS}")
        if self.stacked and not self.utterance_logits:
            raise ConfigError("stacked fusion needs the per-utterance path (utterance_logits=True)")
        if not self.input_dims:
            raise ConfigError("input_dims is empty: give at least one modality, e.g. {'text': 768}")
        if self.context_modalities is not None:
            if not self.context_modalities or set(self.context_modalities) - set(self.input_dims):
                raise ConfigError(f"context_modalities {self.context_modalities} must be a non-empty subset of "
                                  f"the model's modalities {list(self.input_dims)}")
            if not self.utterance_logits and set(self.input_dims) - set(self.context_modalities):
                raise ConfigError("a modality outside context_modalities needs the per-utterance path "
                                  "(utterance_logits=True), or the model never reads it")

    @property
    def context_inputs(self) -> dict[str, int]:
        """modality -> feature dim of the modalities the context encoder reads."""
        keep = self.input_dims if self.context_modalities is None else self.context_modalities
        return {m: d for m, d in self.input_dims.items() if m in keep}

# helpers


def sinusoidal_positions(seq_len: int, dim: int, *, device=None) -> Tensor:
    """(seq_len, dim) fixed sin/cos position codes (Vaswani et al., 2017)."""
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(seq_len, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe

# context encoders: (batch, seq_len, d_model), mask -> (batch, seq_len, d_model)


class GRUContext(nn.Module):
    def __init__(self, c: DialogueConfig):
        super().__init__()
        hidden = c.d_model // 2 if c.bidirectional else c.d_model
        self.gru = nn.GRU(c.d_model, hidden, num_layers=c.n_layers, batch_first=True,
                          bidirectional=c.bidirectional, dropout=c.dropout if c.n_layers > 1 else 0.0)
        self.proj = nn.Linear(2 * hidden if c.bidirectional else hidden, c.d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(1).clamp(min=1).cpu()                            # packing wants lengths >= 1
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return self.proj(out)                                               # (batch, seq_len, d_model)


class TransformerContext(nn.Module):
    def __init__(self, c: DialogueConfig):
        super().__init__()
        self.causal = not c.bidirectional
        layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, dim_feedforward=4 * c.d_model, dropout=c.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, norm=nn.LayerNorm(c.d_model),
                                             enable_nested_tensor=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        seq_len = x.shape[1]
        x = x + sinusoidal_positions(seq_len, x.shape[-1], device=x.device).to(x.dtype)
        padding = ~mask
        padding[:, 0] &= mask.any(1)                                        # an all-padding row would give NaN
        future = torch.ones(seq_len, seq_len, dtype=torch.bool, device=x.device).triu(1) if self.causal else None
        return self.encoder(x, mask=future, src_key_padding_mask=padding, is_causal=self.causal)


class MambaContext(nn.Module):
    def __init__(self, c: DialogueConfig):
        super().__init__()
        mc = MambaConfig(d_model=c.d_model, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand)
        self.stack = MambaStack(mc, n_layers=c.n_layers, bidirectional=c.bidirectional, dropout=c.dropout,
                                norm="layer")

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.stack(x, mask)


class MLPContext(nn.Module):
    """No context: each utterance alone, through n_layers residual (LayerNorm, Linear, GELU, Dropout) blocks."""

    def __init__(self, c: DialogueConfig):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(c.d_model), nn.Linear(c.d_model, c.d_model),
                                                  nn.GELU(), nn.Dropout(c.dropout)) for _ in range(c.n_layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


CONTEXTS = {"mamba": MambaContext, "gru": GRUContext, "transformer": TransformerContext, "mlp": MLPContext}

# the model


class DialogueModel(nn.Module):
    def __init__(self, config: DialogueConfig):
        super().__init__()
        self.config = c = config
        self.inputs = nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, c.d_model), nn.LayerNorm(c.d_model),
                                                      nn.Dropout(c.dropout))
                                     for m, dim in c.context_inputs.items()})
        self.absent = nn.ParameterDict({m: nn.Parameter(torch.zeros(c.d_model)) for m in c.context_inputs})
        self.gates = nn.ModuleDict({m: nn.Linear(c.d_model, 1) for m in c.context_inputs}) if c.gated else None
        if self.gates is not None:
            for g in self.gates.values():  # open at first: close to the plain sum
                nn.init.zeros_(g.weight)
                nn.init.constant_(g.bias, 2.0)
        self.speaker = nn.Embedding(c.max_speakers, c.d_model)
        nn.init.normal_(self.speaker.weight, std=0.02)
        self.context = CONTEXTS[c.kind](c)
        self.head = nn.Sequential(nn.LayerNorm(c.d_model), nn.Dropout(c.dropout), nn.Linear(c.d_model, c.n_classes))
        self.utterance = UtteranceLogits(c.input_dims, c.n_classes, dropout=c.dropout) if c.utterance_logits else None
        self.probe_in = None
        if c.stacked:  # the probe's class probabilities as one more input of the context model
            self.utterance.requires_grad_(False)
            self.probe_in = nn.Linear(c.n_classes, c.d_model)  # random: the head's last layer (zero) keeps it silent

    def forward(self, feats: dict[str, Tensor], speakers: Tensor, mask: Tensor,
                present: dict[str, Tensor] | None = None, *, return_hidden: bool = False,
                utt_logits: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """feats[m] (batch, seq_len, input_dims[m]), speakers (batch, seq_len) long, mask (batch, seq_len) bool
        True = real utterance, present[m] (batch, seq_len) bool True = the utterance has modality m (None, or a
        modality missing from the dict: every utterance has it) -> logits (batch, seq_len, n_classes). Logits
        at padded positions are meaningless; mask them out of the loss. ``return_hidden``: also the context
        encoder's output, the classifier's input, (batch, seq_len, d_model) (for representation losses,
        ``merc.objectives.supcon``); the logits are the same either way. ``utt_logits`` (batch, seq_len,
        n_classes): per-utterance logits to use instead of the path's own (stacked fusion trains on out-of-fold
        probe logits; ``merc.training.stacking``)."""
        missing = [m for m in self.config.input_dims if m not in feats]
        if missing:
            raise KeyError(f"feats has no {missing}; this model was built for modalities "
                           f"{list(self.config.input_dims)}")
        x = sum(self._gate(m, self._project(m, feats[m], None if present is None else present.get(m)))
                for m in self.inputs)                                           # (batch, seq_len, d_model)
        x = x + self.speaker(speakers.clamp(0, self.config.max_speakers - 1))  # (batch, seq_len, d_model)
        utt = None
        if self.utterance is not None:                                          # per-utterance evidence
            utt = utt_logits if utt_logits is not None else self.utterance(feats, present)  # (batch, seq_len, K)
        if self.probe_in is not None:                                           # stacked: the probe's beliefs
            x = x + self.probe_in(utt.detach().to(x.dtype).softmax(-1))         # (batch, seq_len, d_model)
        x = x * mask[..., None]                                                 # padded utterances carry nothing
        h = self.context(x, mask)                                               # (batch, seq_len, d_model)
        logits = self.head(h)                                                   # (batch, seq_len, n_classes)
        if utt is not None:
            logits = logits + utt
        return (logits, h) if return_hidden else logits

    def _gate(self, m: str, h: Tensor) -> Tensor:
        """(batch, seq_len, d_model) -> the same scaled by modality m's gate in (0, 1) per utterance (gated)."""
        return h if self.gates is None else h * torch.sigmoid(self.gates[m](h))

    def _project(self, m: str, f: Tensor, present: Tensor | None) -> Tensor:
        """(batch, seq_len, d_m) -> (batch, seq_len, d_model); absent[m] where ``present`` is False."""
        f = f.to(self.speaker.weight.dtype)
        if present is None:
            return self.inputs[m](f)
        p = present.to(torch.bool)[..., None]                                   # (batch, seq_len, 1)
        h = self.inputs[m](torch.where(p, f, torch.zeros((), dtype=f.dtype, device=f.device)))
        return torch.where(p, h, self.absent[m].to(h.dtype))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # checkpoints from before absent embeddings (config_version 1) have none: zeros = the plain sum of old
        for m in self.inputs:
            state_dict.setdefault(f"{prefix}absent.{m}", torch.zeros(self.config.d_model))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
