"""Step mode of a causal Mamba dialogue model: one utterance at a time, O(1) work and state per utterance.

A dialogue model is per-utterance fusion, then a context encoder over the sequence, then a per-utterance head:

    feats[m] (1, 1, d_m), speaker index ──fusion──▶ x (1, 1, d) ──context──▶ h (1, 1, d) ──head──▶ logits

Only the context encoder looks across utterances. So a causal run steps through a conversation by calling the
model itself on a one-utterance "sequence" with the context encoder swapped for :class:`StepContext`, which
runs :meth:`merc.models.mamba.MambaStack.step` and carries the stack's recurrent state (conv window and SSM
state per layer) to the next call. Everything else — fusion, absent-modality embeddings, speaker embedding,
stage-2 adapters, per-utterance logits beside the head — is the model's own code, not a copy of it.

The swap is done on a shallow view of the model (:func:`stepping_view`): parameters are shared, the loaded
model is never modified, and each stream has its own state. Whether stepping equals the model's whole-sequence
causal forward is not assumed: :func:`step_matches_forward` checks it on random inputs when a predictor loads
(a model whose context is not a causal Mamba stack, or whose other parts look across utterances, fails the check
and is served by recomputing the prefix instead).

Reference: the recurrent ``step`` of state-spaces/mamba ``mamba_simple.py``; ``merc.models.mamba``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch import Tensor

from merc.models.mamba import MambaStack

# helpers


def _context_path(model: nn.Module) -> tuple[str, MambaStack] | None:
    """Dotted name of the module called ``context`` that is (or wraps, as ``.stack``) a unidirectional
    MambaStack, and that stack; None when the model has none."""
    for name, module in model.named_modules():
        if name.split(".")[-1] != "context":
            continue
        stack = module if isinstance(module, MambaStack) else getattr(module, "stack", None)
        if isinstance(stack, MambaStack) and not any(layer.bidirectional for layer in stack.layers):
            return name, stack
    return None


def can_step(model: nn.Module) -> bool:
    return _context_path(model) is not None

# classes


class StepContext(nn.Module):
    """Stands in for a context encoder: (1, 1, d_model), mask -> (1, 1, d_model), one step of ``stack``."""

    def __init__(self, stack: MambaStack):
        super().__init__()
        self.stack = stack
        self.states = None

    def reset(self) -> None:
        self.states = None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.shape[:2] != (1, 1):
            raise ValueError(f"step mode takes one utterance of one dialogue, got input {tuple(x.shape)}")
        if self.states is None:
            self.states = self.stack.allocate_state(1, device=x.device, dtype=x.dtype)
        h, self.states = self.stack.step(x[:, 0], self.states)           # (1, d_model)
        return h[:, None]                                                 # (1, 1, d_model)


def stepping_view(model: nn.Module) -> tuple[nn.Module, StepContext]:
    """A shallow copy of ``model`` whose context encoder is a fresh :class:`StepContext`; the modules on the way
    to it are copied too (their parameters shared), so ``model`` itself is untouched."""
    found = _context_path(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no causal Mamba context encoder to step")
    name, stack = found
    step = StepContext(stack)
    path = name.split(".")
    root = copy.copy(model)
    root._modules = dict(model._modules)
    parent = root
    for part in path[:-1]:
        child = copy.copy(parent._modules[part])
        child._modules = dict(child._modules)
        parent._modules[part] = child
        parent = child
    parent._modules[path[-1]] = step
    return root, step


@torch.no_grad()
def step_matches_forward(model: nn.Module, input_dims: dict[str, int], *, length: int = 6, atol: float = 1e-4,
                         seed: int = 0) -> bool:
    """Whether stepping ``model`` through a random dialogue (random features, two speakers, one utterance
    missing its first modality) gives the logits of its whole-sequence forward, position by position."""
    if not can_step(model):
        return False
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(1, length, d, generator=g) for m, d in input_dims.items()}  # (1, length, d_m)
    speakers = torch.tensor([[i % 2 for i in range(length)]])                            # (1, length)
    mask = torch.ones(1, length, dtype=torch.bool)
    present = {m: torch.ones(1, length, dtype=torch.bool) for m in input_dims}
    present[next(iter(input_dims))][0, length // 2] = False
    was_training = model.training
    model.eval()
    try:
        full = model(feats, speakers, mask, present=present)                           # (1, length, n_classes)
        view, _ = stepping_view(model)
        steps = [view({m: f[:, t:t + 1] for m, f in feats.items()}, speakers[:, t:t + 1], mask[:, t:t + 1],
                      present={m: p[:, t:t + 1] for m, p in present.items()}) for t in range(length)]
    finally:
        model.train(was_training)
    return torch.allclose(full, torch.cat(steps, dim=1), atol=atol)
