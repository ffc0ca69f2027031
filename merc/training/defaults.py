"""Fusion settings by run: what ``merc train --fusion {auto,plain,residual}`` turns into model and training configs.

    fusion_defaults(model_config, train_config, modalities, mode="auto") -> (model_config, train_config)

``plain``: the dialogue model as before issue #32 — every modality projected, summed, through the context model
to the classifier. ``residual``: the same model plus a per-utterance linear classifier per modality whose logits
are added to the context head's (``merc.models.fusion``), started from the linear probe of the run's own inputs
whose C has the lowest dev log loss (``TrainConfig.probe_select``), with the context head at zero (LP-FT,
``merc.training.probe.init_from_probe``), and trained for
at least ``RESIDUAL_MIN_STEPS`` optimizer steps (a small corpus gets more epochs and patience; MELD's 25 epochs
of 65 steps are already more). ``stacked``: the same path, frozen at that probe, and the context model trained
on out-of-fold probe logits, whose probabilities it also reads (``merc.training.stacking``). ``auto`` (the
default): ``residual`` when a dialogue model's (mamba, gru,
transformer, mlp) run uses audio or faces, ``plain`` for text alone, whose MELD figures were measured and tuned
with it, and with stage-2 adapters (their model wraps the dialogue model: the probe would see other inputs than the
path it initialises). MaTAV gets ``residual`` only for a single non-text modality and ``plain`` whenever it fuses two
or more: its cross-attention has nothing to attend across with one modality (it is then a per-utterance network
before the Mamba), and there ``residual`` gained (audio 66.84 → 68.35, face 82.52 → 84.46), while with two or
three modalities its own fusion beat the probe in every measured cell and ``residual`` lost 0.7–1.8 points
(``benchmarks/results/fusion/``).

Measured on the generated multimodal corpus (``benchmarks/results/fusion/``): with ``plain``, the Mamba model
scored below a logistic regression on the same eGeMAPS features; ``residual`` starts from that probe and is
selected on dev against it, so it is never below it on dev, and the context model adds what the dialogue
carries on top. The start is chosen on dev log loss, not weighted F1: on the control corpus with all three
modalities the F1-chosen probe (C=10, dev log loss 4.7 on 2,000 label-free dimensions) held the model at
45.65 against 52.87 for text alone; the log-loss probe (C=0.001) gave 53.69.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from merc.errors import ConfigError
from merc.models.dialogue import DialogueConfig
from merc.models.factory import ModelConfig
from merc.models.matav import MatavConfig
from merc.training.trainer import TrainConfig

FUSION_MODES = ("auto", "plain", "residual", "stacked")
RESIDUAL_MIN_STEPS = 600  # 60 epochs of the generated corpus' 10 steps (150 dialogues, batches of 16)


def resolve_fusion(mode: str, modalities: Sequence[str], *, adapters: bool = False) -> str:
    """``auto`` -> ``residual`` for runs with audio or faces (without adapters), else ``plain``."""
    if mode not in FUSION_MODES:
        raise ConfigError(f"unknown fusion {mode!r}; choose one of {FUSION_MODES}")
    if mode == "auto":
        return "residual" if any(m != "text" for m in modalities) and not adapters else "plain"
    if mode in ("residual", "stacked") and adapters:
        raise ConfigError(f"--fusion {mode} starts the per-utterance path from a probe of the model's inputs; with "
                          "--adapters those are the adapters' outputs, which change in training: use --fusion plain")
    return mode


def fusion_defaults(model_config: ModelConfig, train_config: TrainConfig, modalities: Sequence[str], *,
                    mode: str = "auto", adapters: bool = False, min_steps: int | None = None
                    ) -> tuple[ModelConfig, TrainConfig]:
    """The configs of a run with ``mode`` fusion (see the module docstring); ``min_steps`` overrides the
    residual schedule's minimum number of optimizer steps. A linear probe is returned unchanged."""
    if not isinstance(model_config, (DialogueConfig, MatavConfig)):
        return model_config, train_config
    if mode == "auto" and isinstance(model_config, MatavConfig) and (len(modalities) > 1 or "text" in modalities):
        mode = "plain"  # measured: residual cost MaTAV 1.5 points on text+audio (and gained on audio and face)
    mode = resolve_fusion(mode, modalities, adapters=adapters)
    if mode == "plain":
        return (replace(model_config, utterance_logits=False, stacked=False),
                replace(train_config, probe_init=False, min_steps=min_steps or 0))
    return (replace(model_config, utterance_logits=True, stacked=mode == "stacked"),
            replace(train_config, probe_init=True, min_steps=RESIDUAL_MIN_STEPS if min_steps is None else min_steps))
