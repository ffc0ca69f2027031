"""Weight-decay parameter groups for AdamW, as in nanoGPT's ``configure_optimizers`` and Hugging Face's
``Trainer`` (``get_decay_parameter_names``).

Decoupled weight decay pulls weights towards zero. That is a prior on the matrices that mix features
(linear, convolution, attention and recurrent weights), not on parameters whose scale *is* the meaning:

- **decayed**: every parameter with ``dim >= 2`` — linear, convolution, attention projections, GRU
  matrices, and embeddings (here the speaker embedding). nanoGPT decays its token and position embeddings
  too (its rule is exactly ``p.dim() >= 2``); we follow it.
- **not decayed**: biases and every other 1-d parameter; the weights of normalisation layers (LayerNorm,
  RMSNorm, GroupNorm, BatchNorm — gains of 1 that decay would shrink); and parameters flagged
  ``_no_weight_decay = True`` — the Mamba ``A_log`` (2-d, the log of the state decay rates) and ``D`` (skip),
  as ``mamba_simple.py`` flags them.

    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.01), lr=3e-4)

This is the one rule of every optimizer in merc: :func:`merc.loop.run_loop` builds its AdamW from
these groups for dialogue models, fine-tuned text encoders (the encoder and its head each split this way,
with their own learning rates) and stage-2 adapters.
"""
from __future__ import annotations

import torch.nn as nn

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def decay_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters that get weight decay and of those that do not (module docstring).
    A parameter shared by several modules appears once, under its first name."""
    decay, no_decay, seen = [], [], set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            flagged = getattr(p, "_no_weight_decay", False)
            if isinstance(module, NORM_TYPES) or flagged or p.dim() < 2:
                no_decay.append(name)
            else:
                decay.append(name)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float, *, lr: float | None = None) -> list[dict]:
    """Two AdamW parameter groups: ``{"params": decayed, "weight_decay": weight_decay}`` and
    ``{"params": the rest, "weight_decay": 0.0}``; each group also carries its parameter ``names``, and
    ``lr`` when given (a module trained at its own rate, e.g. a classifier head beside its encoder)."""
    params = dict(model.named_parameters())
    decay, no_decay = decay_split(model)
    extra = {} if lr is None else {"lr": lr}
    return [{"params": [params[n] for n in decay], "weight_decay": weight_decay, "names": decay, **extra},
            {"params": [params[n] for n in no_decay], "weight_decay": 0.0, "names": no_decay, **extra}]
