"""Stacked fusion: the context model learns from out-of-fold probe logits, not from the probe's own train fit.

    out_of_fold_logits(train, dev, labels, config, C=C, input_dims=dims) -> train dialogues with ``utt_logits``

Why. With ``--fusion residual`` the per-utterance path starts as the linear probe fitted on all of train. On
train its logits are in-sample: more confident and more often right than on any new dialogue, so the context
head, trained on the same utterances, sees little error left to correct and learns little (issue #32: on the
generated corpus the Mamba model stayed within half a point of the probe on audio alone, where a logistic
regression over the neighbours' out-of-fold probe probabilities gained about 4 points). Stacked generalisation
(Wolpert, "Stacked Generalization", Neural Networks 1992) trains the second level on first-level predictions
for data the first level did not see: here the train dialogues are split into ``folds`` groups, a probe with
the dev-chosen C is fitted on the other groups, and its logits for each group's utterances become the
``utt_logits`` the model is trained with (``merc.models.dialogue``: they replace the frozen path's output, and
their probabilities are one more input of the context model). Dev, test and prediction use the frozen path,
i.e. the probe fitted on all of train, as stacking does.

Dialogues, not utterances, are split: the utterances of a dialogue share speakers and topic, so a probe that
saw a dialogue's neighbours would still be in-sample for it. The split is fixed (seed 0) so every training
seed sees the same logits; L-BFGS is deterministic.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from merc.errors import InputError
from merc.models.linear import LinearConfig, LinearProbe
from merc.objectives.classification import model_logits
from merc.training.batching import Dialogue, iterate_batches
from merc.training.probe import fit_probe
from merc.training.trainer import TrainConfig

log = logging.getLogger(__name__)
FOLDS = 5


def dialogue_folds(n: int, folds: int = FOLDS, *, seed: int = 0) -> list[np.ndarray]:
    """``min(folds, n)`` disjoint index arrays covering range(n), from a seeded permutation."""
    if n < 2:
        raise InputError(f"stacked fusion needs at least 2 training dialogues for out-of-fold logits; found {n}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(order, min(folds, n))]


@torch.no_grad()
def probe_logits(probe: LinearProbe, dialogues: Sequence[Dialogue]) -> list[np.ndarray]:
    """Per dialogue, in order: (seq_len, n_classes) float32 logits of ``probe``."""
    probe.eval()
    out = []
    for batch in iterate_batches(dialogues, 32):
        logits = model_logits(probe, batch)                                       # (batch, max_len, n_classes)
        out += [logits[b, :len(ids)].float().numpy() for b, ids in enumerate(batch.utterance_ids)]
    return out


def out_of_fold_logits(train: Sequence[Dialogue], dev: Sequence[Dialogue], labels: Sequence[str],
                       config: TrainConfig, *, C: float, input_dims: dict[str, int], folds: int = FOLDS
                       ) -> list[Dialogue]:
    """Copies of ``train`` whose ``utt_logits`` come from probes (C fixed) that never saw their dialogue.
    ``dev`` only reports each fold probe's dev score (nothing is selected on it here)."""
    parts = dialogue_folds(len(train), folds)
    utt: list[np.ndarray | None] = [None] * len(train)
    for k, held in enumerate(parts):
        rest = np.setdiff1d(np.arange(len(train)), held)
        probe = LinearProbe(LinearConfig(input_dims=dict(input_dims), n_classes=len(labels), c_grid=[C]))
        history = fit_probe(probe, [train[i] for i in rest], dev, labels, config, progress=False)
        log.debug("stacking fold %d/%d: %d dialogues held out, fold probe dev weighted F1 %.4f",
                  k + 1, len(parts), len(held), history.best_dev_weighted_f1)
        for i, lg in zip(held, probe_logits(probe, [train[i] for i in held])):
            utt[i] = lg
    return [replace(d, utt_logits=u) for d, u in zip(train, utt)]
