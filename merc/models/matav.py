"""MaTAV: text–audio–video alignment (MEC), cross-attention fusion and Mamba over the dialogue.

    feats[m] (batch, seq_len, d_m), m ∈ {text, audio, face} (any non-empty subset)
      ──proj_m: Linear+LayerNorm+Dropout──▶ h_m (batch, seq_len, d_model)
      ├─ g_m: Linear ──▶ L2-normalised z_m (d_align)      ┐ MEC (merc.objectives.contrastive): online z_m
      └─ momentum copy of proj_m, g_m ──▶ z′_m (no grad)  ┘ vs momentum z′ and three queues of past z′
      tokens [t ‖ a ‖ v] (+ modality embedding; a learned "absent" vector where a modality is missing)
      ──n_cross_layers × pre-norm multi-head attention (Q, K, V = W[t‖a‖v], paper eq. 6) + MLP──▶
      merge f = W_F [t ‖ a ‖ v] (d_model) ──FC + GELU──▶ (d_mamba) + speaker-index embedding
      ──bidirectional Mamba over the dialogue (or, use_mamba=False, nothing: per-utterance)──▶
      LayerNorm, Dropout, Linear ──▶ logits (batch, seq_len, n_classes)   (softmax in the loss)

What attends to what (the paper leaves it open): ``attention="modality"`` (default) — each utterance's
modality vectors attend to each other, utterance by utterance (sequence length = number of modalities);
``attention="dialogue"`` — every modality vector attends to every present modality vector of every
utterance in the dialogue (sequence length = seq_len × number of modalities, with sinusoidal utterance
positions), i.e. cross-modal and cross-utterance at once.

Missing modalities (``present[m]`` (batch, seq_len) bool, None = every real utterance has every modality).
A missing modality's token must exist (the merge W_F reads a fixed [t‖a‖v]), so it is a learned
``absent`` vector per modality, and it is **masked out as a key** of attention: present modalities never
read it, and the value in the absent slot (zeroed before the projection) never reaches the output. An
utterance with no modality at all (and every padded position) attends to its absent vectors only.
Padded positions are treated as absent everywhere, never act as keys, and the Mamba stack masks them,
so padding never changes outputs at real positions.

MEC. Built only when ``mec_weight > 0`` and at least one MEC pair (text–audio, audio–face, text–face) is
among the modalities: then the model owns the momentum copies (``momentum``) and one ``FeatureQueue`` per
modality (``queues``). With text alone there is no pair: MaTAV on text is its fusion + Mamba part only.
``forward_train`` returns the logits and the aligned vectors; ``merc.objectives.mec.MatavObjective``
turns them into CE + λ·MEC and does the momentum and queue updates (ALBEF's order: momentum update,
forward, loss, enqueue).

References:
- Li et al. "Mamba-Enhanced Text-Audio-Video Alignment Network for Emotion Recognition in Conversations"
  (MaTAV): MEC loss (three InfoNCE terms s(T, A′), s(A, V′), s(T, V′)), 6 cross-attention layers over
  [t‖a‖v] (eq. 6), merge W_F, Mamba over the dialogue; MEC weight 0.3.
- J. Li et al. ALBEF (NeurIPS 2021) and K. He et al. MoCo (CVPR 2020): momentum encoders and queues.
- A. Gu, T. Dao. Mamba (arXiv:2312.00752); ``merc.models.mamba``. Style: karpathy/nanoGPT ``model.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from merc.errors import ConfigError
from merc.models.dialogue import sinusoidal_positions
from merc.models.fusion import UtteranceLogits
from merc.models.mamba import MambaConfig, MambaStack
from merc.objectives.contrastive import MEC_PAIRS, FeatureQueue, MomentumEncoder

MODALITIES = ("text", "audio", "face")  # token order [t ‖ a ‖ v]
ATTENTION = ("modality", "dialogue")


@dataclass
class MatavConfig:
    kind: str = "matav"  # run directories tell model families apart by this field
    input_dims: dict[str, int] = field(default_factory=lambda: {"text": 768, "audio": 88, "face": 512})
    n_classes: int = 7
    d_model: int = 128            # unimodal projections and the cross-attention width
    d_align: int = 256            # MEC projection heads g_t, g_a, g_v (paper: 256)
    n_cross_layers: int = 6       # paper: 6
    n_heads: int = 4
    attention: str = "modality"   # "modality" | "dialogue" (see module docstring)
    mlp_ratio: int = 4
    dropout: float = 0.3
    max_speakers: int = 16
    use_mamba: bool = True        # False = --no-mamba: per-utterance classifier after fusion
    d_mamba: int = 128            # the FC after the merge maps to this width
    n_mamba_layers: int = 2
    bidirectional: bool = True
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    mec_weight: float = 0.3       # λ (paper 0.3); 0 = --no-mec (no momentum copies, no queues)
    queue_size: int = 4096        # M, per modality: ~40 % of a MELD training epoch's utterances
    momentum: float = 0.995       # EMA factor of the momentum copies (ALBEF 0.995)
    temperature: float = 0.07     # τ (MoCo / ALBEF initial value), fixed
    mec_symmetric: bool = True    # add s(A, T′), s(V, A′), s(V, T′) (each pair averaged), see contrastive.py
    mec_in_batch_negatives: bool = True  # ALBEF: the batch's other momentum keys are negatives too
    utterance_logits: bool = False  # + a per-utterance linear classifier per modality (merc.models.fusion)
    stacked: bool = False  # that path frozen, its probabilities an input of the Mamba (merc.training.stacking)

    def __post_init__(self):
        if self.kind != "matav":
            raise ConfigError(f"MatavConfig.kind must be 'matav', got {self.kind!r}")
        if self.stacked and not self.utterance_logits:
            raise ConfigError("stacked fusion needs the per-utterance path (utterance_logits=True)")
        unknown = [m for m in self.input_dims if m not in MODALITIES]
        if not self.input_dims or unknown:
            raise ConfigError(f"MaTAV modalities must be a non-empty subset of {MODALITIES}; "
                              f"got {list(self.input_dims)}")
        if self.attention not in ATTENTION:
            raise ConfigError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.mec_weight < 0 or self.temperature <= 0 or not 0 <= self.momentum <= 1:
            raise ConfigError(f"need mec_weight >= 0, temperature > 0, momentum in [0, 1]; got {self.mec_weight}, "
                              f"{self.temperature}, {self.momentum}")

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.input_dims]

    @property
    def mec_pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in MEC_PAIRS if a in self.input_dims and b in self.input_dims]

    @property
    def has_mec(self) -> bool:
        return self.mec_weight > 0 and bool(self.mec_pairs)

# helpers


def presence(feats: dict[str, Tensor], mask: Tensor, present: dict[str, Tensor] | None,
             modalities: list[str]) -> dict[str, Tensor]:
    """valid[m] (batch, seq_len) bool: a real utterance that has modality m."""
    if present is None:
        return {m: mask for m in modalities}
    missing = [m for m in modalities if m not in present]
    if missing:
        raise KeyError(f"present has no mask for {missing}; give one per modality or present=None")
    return {m: mask & present[m].bool() for m in modalities}

# classes


class CrossAttention(nn.Module):
    """Multi-head attention over the tokens: Q, K, V = W[t‖a‖v] (one Linear to 3·d_model)."""

    def __init__(self, c: MatavConfig):
        super().__init__()
        self.n_heads, self.dropout = c.n_heads, c.dropout
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.out = nn.Linear(c.d_model, c.d_model)

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        """x (batch', L, d_model), keys (batch', L) bool True = may be attended to -> (batch', L, d_model)."""
        Bp, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)                              # (batch', L, d_model) each
        q, k, v = (t.view(Bp, L, self.n_heads, D // self.n_heads).transpose(1, 2)
                   for t in (q, k, v))                                      # (batch', heads, L, d_head)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keys[:, None, None, :],  # (batch', 1, 1, L)
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(Bp, L, D))                # (batch', L, d_model)


class CrossLayer(nn.Module):
    """Pre-norm block: x + attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, c: MatavConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.attn = CrossAttention(c)
        self.mlp = nn.Sequential(nn.Linear(c.d_model, c.mlp_ratio * c.d_model), nn.GELU(),
                                 nn.Linear(c.mlp_ratio * c.d_model, c.d_model), nn.Dropout(c.dropout))
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, keys: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), keys))                     # (batch', L, d_model)
        return x + self.mlp(self.ln2(x))                                    # (batch', L, d_model)


class MatavModel(nn.Module):
    def __init__(self, config: MatavConfig):
        super().__init__()
        self.config = c = config
        mods = c.modalities
        M = len(mods)
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(c.input_dims[m], c.d_model), nn.LayerNorm(c.d_model),
                                                    nn.Dropout(c.dropout)) for m in mods})
        self.heads = nn.ModuleDict({m: nn.Linear(c.d_model, c.d_align) for m in mods})    # g_t, g_a, g_v
        self.modality_emb = nn.Parameter(torch.randn(M, c.d_model) * 0.02)               # which slot is which
        self.absent = nn.Parameter(torch.randn(M, c.d_model) * 0.02)                     # token of a missing modality
        self.cross = nn.ModuleList(CrossLayer(c) for _ in range(c.n_cross_layers))
        self.ln_cross = nn.LayerNorm(c.d_model)
        self.merge = nn.Linear(M * c.d_model, c.d_model)                                 # f = W_F [t‖a‖v]
        self.fc = nn.Sequential(nn.Linear(c.d_model, c.d_mamba), nn.GELU(), nn.Dropout(c.dropout))
        self.speaker = nn.Embedding(c.max_speakers, c.d_mamba)
        nn.init.normal_(self.speaker.weight, std=0.02)
        self.context = (MambaStack(MambaConfig(d_model=c.d_mamba, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand),
                                   n_layers=c.n_mamba_layers, bidirectional=c.bidirectional, dropout=c.dropout,
                                   norm="layer") if c.use_mamba else None)
        self.head = nn.Sequential(nn.LayerNorm(c.d_mamba), nn.Dropout(c.dropout), nn.Linear(c.d_mamba, c.n_classes))
        self.utterance = (UtteranceLogits({m: c.input_dims[m] for m in mods}, c.n_classes, dropout=c.dropout)
                          if c.utterance_logits else None)
        self.probe_in = None
        if c.stacked:  # the probe's class probabilities as one more input of the dialogue model
            self.utterance.requires_grad_(False)
            self.probe_in = nn.Linear(c.n_classes, c.d_mamba)  # random: the head's last layer (zero) keeps it silent
        self.momentum: MomentumEncoder | None = None
        self.queues: nn.ModuleDict | None = None
        if c.has_mec:
            aligned = sorted({m for pair in c.mec_pairs for m in pair}, key=MODALITIES.index)
            self.momentum = MomentumEncoder({m: nn.Sequential(self.proj[m], self.heads[m]) for m in aligned})
            self.queues = nn.ModuleDict({m: FeatureQueue(c.queue_size, c.d_align) for m in aligned})

    # the pieces

    def unimodal(self, feats: dict[str, Tensor], mask: Tensor, present: dict[str, Tensor] | None
                 ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """-> h[m] (batch, seq_len, d_model), valid[m] (batch, seq_len) bool, and the cleaned inputs x[m]
        (zero where not valid, so absent or padded values reach nothing)."""
        missing = [m for m in self.proj if m not in feats]
        if missing:
            raise KeyError(f"feats has no {missing}; this model was built for modalities {list(self.proj)}")
        valid = presence(feats, mask, present, list(self.proj))
        dtype = self.absent.dtype
        x = {m: feats[m].to(dtype).masked_fill(~valid[m][..., None], 0.0) for m in self.proj}  # (batch, seq_len, d_m)
        h = {m: self.proj[m](x[m]) for m in self.proj}                                  # (batch, seq_len, d_model)
        return h, valid, x

    def fuse(self, h: dict[str, Tensor], valid: dict[str, Tensor]) -> Tensor:
        """Cross-attention over [t‖a‖v] and the merge: -> f (batch, seq_len, d_model)."""
        mods = list(self.proj)
        B, T, D = h[mods[0]].shape
        M = len(mods)
        tokens = torch.stack([torch.where(valid[m][..., None], h[m], self.absent[i]) for i, m in enumerate(mods)],
                             dim=2)                                         # (batch, seq_len, M, d_model)
        tokens = tokens + self.modality_emb                                 # (batch, seq_len, M, d_model)
        keys = torch.stack([valid[m] for m in mods], dim=2)                 # (batch, seq_len, M)
        if self.config.attention == "modality":
            x, keys = tokens.reshape(B * T, M, D), keys.reshape(B * T, M)   # (batch·seq_len, M, ·)
        else:
            pos = sinusoidal_positions(T, D, device=tokens.device).to(tokens.dtype)  # (seq_len, d_model)
            x = (tokens + pos[None, :, None, :]).reshape(B, T * M, D)       # (batch, seq_len·M, d_model)
            keys = keys.reshape(B, T * M)                                   # (batch, seq_len·M)
        keys = keys | ~keys.any(-1, keepdim=True)                           # nothing present: attend to absent tokens
        for layer in self.cross:
            x = layer(x, keys)                                              # (batch', L, d_model)
        x = self.ln_cross(x).reshape(B, T, M * D)                           # (batch, seq_len, M·d_model) = [t‖a‖v]
        return self.merge(x)                                                # (batch, seq_len, d_model)

    def classify(self, f: Tensor, speakers: Tensor, mask: Tensor, utt: Tensor | float = 0.0) -> Tensor:
        """f (batch, seq_len, d_model), per-utterance logits ``utt`` -> logits (batch, seq_len, n_classes)."""
        x = self.fc(f) + self.speaker(speakers.clamp(0, self.config.max_speakers - 1))  # (batch, seq_len, d_mamba)
        if self.probe_in is not None:                                       # stacked: the probe's beliefs
            x = x + self.probe_in(utt.detach().to(x.dtype).softmax(-1))     # (batch, seq_len, d_mamba)
        x = x * mask[..., None]                                             # padded utterances carry nothing
        if self.context is not None:
            x = self.context(x, mask)                                       # (batch, seq_len, d_mamba)
        return self.head(x) + utt                                           # (batch, seq_len, n_classes)

    def evidence(self, x: dict[str, Tensor], valid: dict[str, Tensor], utt_logits: Tensor | None = None
                 ) -> Tensor | float:
        """Per-utterance logits (batch, seq_len, n_classes) of ``merc.models.fusion`` (0 when not configured);
        ``utt_logits`` replace the path's own (stacked fusion's out-of-fold logits in training)."""
        if self.utterance is None:
            return 0.0
        return utt_logits if utt_logits is not None else self.utterance(x, valid)

    # the model

    def forward(self, feats: dict[str, Tensor], speakers: Tensor, mask: Tensor,
                present: dict[str, Tensor] | None = None, *, utt_logits: Tensor | None = None) -> Tensor:
        """feats[m] (batch, seq_len, input_dims[m]), speakers (batch, seq_len) long, mask (batch, seq_len) bool
        True = real utterance, present[m] (batch, seq_len) bool or None -> logits (batch, seq_len, n_classes).
        Logits at padded positions are meaningless. ``utt_logits``: see ``evidence``."""
        h, valid, x = self.unimodal(feats, mask, present)
        return self.classify(self.fuse(h, valid), speakers, mask, self.evidence(x, valid, utt_logits))

    def forward_train(self, feats: dict[str, Tensor], speakers: Tensor, mask: Tensor,
                      present: dict[str, Tensor] | None = None, *, utt_logits: Tensor | None = None
                      ) -> tuple[Tensor, dict[str, dict[str, Tensor]] | None]:
        """As ``forward``, plus (when the model has MEC) the aligned vectors for the MEC loss:
        ``{"z": {m: (batch, seq_len, d_align)}, "z_m": {…} momentum (no grad), "valid": {m: (batch, seq_len)}}``."""
        h, valid, x = self.unimodal(feats, mask, present)
        logits = self.classify(self.fuse(h, valid), speakers, mask, self.evidence(x, valid, utt_logits))
        if self.momentum is None:
            return logits, None
        mods = list(self.queues)
        z = {m: F.normalize(self.heads[m](h[m]), dim=-1) for m in mods}     # (batch, seq_len, d_align)
        z_m = {m: F.normalize(self.momentum(m, x[m]), dim=-1) for m in mods}  # (batch, seq_len, d_align), no grad
        return logits, {"z": z, "z_m": z_m, "valid": {m: valid[m] for m in mods}}

    @torch.no_grad()
    def momentum_update(self) -> None:
        if self.momentum is not None:
            self.momentum.update(self.config.momentum)

    @torch.no_grad()
    def enqueue(self, aux: dict[str, dict[str, Tensor]]) -> None:
        """Push the momentum vectors of valid utterances into their modality's queue."""
        for m, q in self.queues.items():
            q.enqueue(aux["z_m"][m].flatten(0, 1), aux["valid"][m].flatten())

    def num_parameters(self, trainable: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)
