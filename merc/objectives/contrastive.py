"""Contrastive alignment pieces (MoCo / ALBEF): a queue of past key vectors, a momentum (EMA) copy of
modules, InfoNCE against the queue, and MaTAV's MEC loss.

    q  = g(x)  / ||g(x)||      online query (gets gradients)
    k′ = g′(x) / ||g′(x)||     momentum key of the *other* modality of the same utterance (no gradient)
    s(X, Y′) = mean_i  -log  exp(q_i·k′_i / τ) / (exp(q_i·k′_i / τ) + Σ_j exp(q_i·n_j / τ))

with negatives n_j = the Y′ queue (keys of earlier batches) and, when ``in_batch_negatives`` (ALBEF's
form, the default), the momentum keys of the *other* utterances of the batch. The batch keys matter at
the start of training, when the queue is still empty (MoCo fills its queue with random vectors instead).

MEC (Li et al., eq. for L_MEC) = s(T, A′) + s(A, V′) + s(T, V′).

**Symmetric terms (default on).** With momentum keys, the key side of s(X, Y′) gets no gradient, so in
the paper's one-directional form the online video head g_v is never trained by MEC at all (V is only
ever a key) and the audio head only as a query against V′. We therefore default to ALBEF's symmetric
form, each pair averaged: ½[s(T, A′) + s(A, T′)] + ½[s(A, V′) + s(V, A′)] + ½[s(T, V′) + s(V, T′)], which keeps
the paper's scale (three terms) and trains every head; ``symmetric=False`` gives the paper's three terms.

Missing modalities. ``valid[m]`` (N,) says which rows have modality m. A term s(X, Y′) averages over the
rows valid for both X and Y; its in-batch negatives are the Y′ keys of rows valid for Y. A term with no
valid row is exactly 0 (so with text alone MEC is 0 and MaTAV is its fusion + Mamba part only). Rows that
are not valid never enter a queue (``FeatureQueue.enqueue(keys, valid)``).

References:
- K. He et al. "Momentum Contrast for Unsupervised Visual Representation Learning" (MoCo), CVPR 2020.
- J. Li et al. "Align before Fuse: Vision and Language Representation Learning with Momentum
  Distillation" (ALBEF), NeurIPS 2021 (ITC loss with momentum encoders and queues).
- A. van den Oord et al. "Representation Learning with Contrastive Predictive Coding" (InfoNCE), 2018.
- Li et al. "Mamba-Enhanced Text-Audio-Video Alignment Network for Emotion Recognition in
  Conversations" (MaTAV): the MEC loss over text, audio and video.
"""
from __future__ import annotations

import copy
from typing import Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from merc.errors import ConfigError

# the three MEC pairs (query modality, key modality), in the paper's order s(T, A′), s(A, V′), s(T, V′)
MEC_PAIRS: tuple[tuple[str, str], ...] = (("text", "audio"), ("audio", "face"), ("text", "face"))


class FeatureQueue(nn.Module):
    """A ring buffer of the last ``size`` L2-normalised key vectors (MoCo's queue).

    Starts empty (``len(q) == 0``) and fills up; once full, each enqueue overwrites the oldest rows, wrapping
    around the end of the buffer. Buffers (not parameters): saved in ``state_dict`` so that a resumed run
    continues with the same queue.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ConfigError(f"queue size must be >= 1, got {size}")
        self.size, self.dim = size, dim
        self.register_buffer("feats", torch.zeros(size, dim))                # (size, dim)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))       # next row to write
        self.register_buffer("count", torch.zeros((), dtype=torch.long))     # rows filled so far (<= size)

    def __len__(self) -> int:
        return int(self.count)

    def get(self) -> Tensor:
        """The filled rows, oldest first: (len(self), dim). A detached copy."""
        n, p = int(self.count), int(self.ptr)
        if n < self.size:
            return self.feats[:n].clone()
        return torch.cat([self.feats[p:], self.feats[:p]]).clone()          # (size, dim) oldest -> newest

    @torch.no_grad()
    def enqueue(self, keys: Tensor, valid: Tensor | None = None) -> None:
        """keys (N, dim), valid (N,) bool: append the valid rows (normalised), dropping the oldest when full."""
        keys = keys.detach().reshape(-1, self.dim)
        if valid is not None:
            keys = keys[valid.reshape(-1)]                                  # masked rows never enter the queue
        keys = F.normalize(keys.float(), dim=-1)[-self.size:]               # (n, dim), at most size rows
        n = keys.shape[0]
        if n == 0:
            return
        p = int(self.ptr)
        idx = (p + torch.arange(n, device=self.feats.device)) % self.size   # wrap around
        self.feats[idx] = keys.to(self.feats.dtype)
        self.ptr.fill_((p + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))


class MomentumEncoder(nn.Module):
    """An exponential-moving-average copy of some modules: θ′ ← m·θ′ + (1 − m)·θ (MoCo eq. 2).

    ``MomentumEncoder({"text": proj_t, ...})`` deep-copies the modules; the copy's parameters have
    ``requires_grad=False`` and the copy always runs in eval mode (no dropout noise on the keys).
    ``update(m)`` pulls the copy towards the current online modules; call it under no autograd.
    """

    def __init__(self, online: Mapping[str, nn.Module]):
        super().__init__()
        self._online = list(online.items())  # plain list: the online modules are registered by their owner
        self.copies = nn.ModuleDict({k: copy.deepcopy(mod) for k, mod in online.items()})
        for p in self.copies.parameters():
            p.requires_grad_(False)
        self.copies.eval()

    def train(self, mode: bool = True) -> "MomentumEncoder":  # the copy stays in eval mode
        super().train(mode)
        self.copies.eval()
        return self

    def pairs(self) -> Iterable[tuple[Tensor, Tensor]]:
        for key, online in self._online:
            yield from zip(online.parameters(), self.copies[key].parameters())

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"momentum must be in [0, 1], got {momentum}")
        for p, p_m in self.pairs():
            p_m.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)

    def forward(self, key: str, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.copies[key](x)


def contrastive_term(q: Tensor, k: Tensor, q_valid: Tensor, k_valid: Tensor, queue: Tensor, temperature: float,
                     *, in_batch_negatives: bool = True) -> Tensor:
    """s(X, Y′): q (N, d) online X queries, k (N, d) momentum Y′ keys of the same rows, validity (N,) bool,
    queue (K, d) earlier Y′ keys. Mean over rows valid for both; 0 when there is none."""
    rows = q_valid & k_valid                                                # (N,)
    if not rows.any():
        return q.sum() * 0.0                                                # keeps the graph, exactly 0
    qi = q[rows]                                                            # (n, d)
    pos = (qi * k[rows]).sum(-1, keepdim=True)                              # (n, 1)
    negs = [qi @ queue.t()]                                                 # (n, K)
    if in_batch_negatives:
        batch = qi @ k[k_valid].t()                                         # (n, n_k) includes each row's positive
        own = rows.nonzero().squeeze(1)[:, None] == k_valid.nonzero().squeeze(1)[None, :]  # (n, n_k)
        negs.append(batch.masked_fill(own, float("-inf")))                  # the positive is not its own negative
    logits = torch.cat([pos, *negs], dim=1) / temperature                   # (n, 1 + K [+ n_k])
    return -logits.log_softmax(-1)[:, 0].mean()


def mec_loss(z: Mapping[str, Tensor], z_m: Mapping[str, Tensor], valid: Mapping[str, Tensor],
             queues: Mapping[str, Tensor], temperature: float, *, symmetric: bool = True,
             in_batch_negatives: bool = True,
             pairs: Iterable[tuple[str, str]] = MEC_PAIRS) -> tuple[Tensor, dict[str, float]]:
    """MEC = Σ over pairs (X, Y) of s(X, Y′) (or ½[s(X, Y′) + s(Y, X′)] when ``symmetric``).

    z[m] (N, d) online normalised vectors, z_m[m] (N, d) momentum ones, valid[m] (N,) bool, queues[m] (K_m, d)
    earlier momentum keys of modality m. Pairs with a modality not in ``z`` contribute 0.
    Returns the loss and the value of each term (``"s(text,audio')"``, …) for logging.
    """
    total = next(iter(z.values())).sum() * 0.0
    logs: dict[str, float] = {}
    for x, y in pairs:
        if x not in z or y not in z:
            continue
        directions = [(x, y), (y, x)] if symmetric else [(x, y)]
        for a, b in directions:
            term = contrastive_term(z[a], z_m[b], valid[a], valid[b], queues[b], temperature,
                                    in_batch_negatives=in_batch_negatives)
            total = total + term / len(directions)
            logs[f"s({a},{b}')"] = float(term.detach())
    return total, logs
