"""Fit the linear probe (``merc.models.linear``): z-score on train, logistic regression per C, keep the dev-best.

    fit_probe(model, train, dev, labels, config) -> TrainHistory   (one history row per C, in grid order)

The same contract as the trainer's ``fit``: ``model`` holds the selected weights on return, the test split is
never seen, and dev weighted F1 alone picks C (ties: the smaller C, i.e. the stronger regularisation); the
history's ``best_epoch`` row holds it (``metrics.json["C"]`` in a run). The config is left as given, so a
resumed run compares equal.
``config.class_weights`` weights the samples as it weights the dialogue models' loss (``none`` by default).
L-BFGS is deterministic, so every seed of a probe gives the same weights.
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Sequence

import numpy as np
import torch
from scipy.special import softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, log_loss

from merc.errors import ConfigError, InputError
from merc.models.linear import LinearConfig, LinearProbe
from merc.training.batching import IGNORE, Dialogue
from merc.training.trainer import TrainConfig, TrainHistory, class_weight_vector

log = logging.getLogger(__name__)
MIN_STD = 1e-6  # a constant dimension is centred, not scaled
UNSEEN_LOGIT = -30.0  # bias of a class with no training example: never predicted


def _stack(dialogues: Sequence[Dialogue], modalities: Sequence[str]) -> tuple[dict, dict, np.ndarray]:
    """Labelled utterances of ``dialogues``: feats[m] (n, d_m), present[m] (n,), y (n,)."""
    feats: dict[str, list] = {m: [] for m in modalities}
    present: dict[str, list] = {m: [] for m in modalities}
    ys = []
    for d in dialogues:
        keep = d.labels != IGNORE
        for m in modalities:
            feats[m].append(d.feats[m][keep])
            present[m].append(d.present.get(m, np.ones(len(d.labels), dtype=bool))[keep])
        ys.append(d.labels[keep])
    return ({m: np.concatenate(v) for m, v in feats.items()}, {m: np.concatenate(v) for m, v in present.items()},
            np.concatenate(ys))


def set_statistics(model: LinearProbe, feats: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> None:
    """Store each modality's train mean and std (over the utterances that have it) in the probe's buffers."""
    for m in model.modalities:
        X = feats[m][present[m]].astype(np.float64)  # (n_present, d_m)
        if len(X) == 0:
            continue
        std = X.std(0)
        getattr(model, f"mean_{m}").copy_(torch.from_numpy(X.mean(0)).float())
        getattr(model, f"std_{m}").copy_(torch.from_numpy(np.where(std < MIN_STD, 1.0, std)).float())


@torch.no_grad()
def design_matrix(model: LinearProbe, feats: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
    """(n, n_inputs) float64: exactly what the probe's Linear sees at prediction time."""
    return model.design({m: torch.from_numpy(v) for m, v in feats.items()},
                        {m: torch.from_numpy(v) for m, v in present.items()}).double().numpy()


def fit_probe(model: LinearProbe, train: Sequence[Dialogue], dev: Sequence[Dialogue], labels: Sequence[str],
              config: TrainConfig, *, progress: bool = True, select: str = "weighted_f1") -> TrainHistory:
    """Fit ``model`` in place on ``train``; C from ``model.config.c_grid`` chosen on ``dev`` weighted F1
    (``select="loss"``: on dev log loss, the smaller C on ties). ``best_dev_weighted_f1`` is the selected C's."""
    t0 = time.time()
    n_classes = len(labels)
    ftr, ptr, ytr = _stack(train, model.modalities)
    fdv, pdv, ydv = _stack(dev, model.modalities)
    if len(ytr) == 0 or len(ydv) == 0:
        raise InputError("the linear probe needs labelled utterances in train and dev; "
                         f"found {len(ytr)} in train and {len(ydv)} in dev")
    set_statistics(model, ftr, ptr)
    Xtr, Xdv = design_matrix(model, ftr, ptr), design_matrix(model, fdv, pdv)
    w = class_weight_vector(train, n_classes, config.class_weights, beta=config.cb_beta)
    sample_weight = None if w is None else w.numpy()[ytr]
    history, weights = TrainHistory(), []
    for i, C in enumerate(model.config.c_grid):
        clf = LogisticRegression(C=C, max_iter=model.config.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported below instead, once per C
            clf.fit(Xtr, ytr, sample_weight=sample_weight)
        if clf.n_iter_.max() >= model.config.max_iter:
            log.warning("linear probe: L-BFGS stopped at max_iter=%d for C=%g before converging",
                        model.config.max_iter, C)
        W, b = _full_weights(clf, n_classes)
        pdev, ptrain = softmax(Xdv @ W.T + b, axis=1), softmax(Xtr @ W.T + b, axis=1)
        row = {"epoch": i, "C": C,
               "train_loss": float(log_loss(ytr, ptrain, labels=range(n_classes))),
               "dev_loss": float(log_loss(ydv, pdev, labels=range(n_classes))),
               "dev_weighted_f1": float(f1_score(ydv, pdev.argmax(1), labels=range(n_classes), average="weighted",
                                                 zero_division=0)),
               "dev_accuracy": float((pdev.argmax(1) == ydv).mean())}
        history.epochs.append(row)
        if progress:
            log.info("linear probe C=%g: dev weighted F1 %.4f", C, row["dev_weighted_f1"])
        weights.append((W, b))
    history.best_epoch = selected_c(history.epochs, select)
    history.best_dev_weighted_f1 = history.epochs[history.best_epoch]["dev_weighted_f1"]
    W, b = weights[history.best_epoch]
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(W).float())
        model.linear.bias.copy_(torch.from_numpy(b).float())
    history.seconds = time.time() - t0
    return history


def selected_c(rows: Sequence[dict], select: str = "weighted_f1") -> int:
    """Index of the dev-selected row of a probe's history (one row per C, in grid order): the highest dev
    weighted F1, or with ``select="loss"`` the lowest dev log loss; ties go to the first row, the smaller C."""
    score = (lambda r: -r["dev_loss"]) if select == "loss" else (lambda r: r["dev_weighted_f1"])
    return max(range(len(rows)), key=lambda i: (score(rows[i]), -i))


def _full_weights(clf: LogisticRegression, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_classes, n_inputs), (n_classes,): sklearn's rows put in label order; a class absent from train gets
    zero weights and a very low bias. Two classes: sklearn fits one row w; softmax over (−w/2, w/2) equals it."""
    coef, icpt = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:
        coef, icpt = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-icpt[0] / 2, icpt[0] / 2])
    W = np.zeros((n_classes, coef.shape[1]))
    b = np.full(n_classes, UNSEEN_LOGIT)
    W[clf.classes_], b[clf.classes_] = coef, icpt
    return W, b


def init_from_probe(model: torch.nn.Module, train: Sequence[Dialogue], dev: Sequence[Dialogue],
                    labels: Sequence[str], config: TrainConfig, *, progress: bool = True) -> TrainHistory:
    """Linear probing, then fine-tuning (LP-FT; Kumar et al., "Fine-Tuning can Distort Pretrained Features and
    Underperform Out-of-Distribution", ICLR 2022): fit the probe on ``model``'s own inputs (C on dev by
    ``config.probe_select``, dev log loss by default: the training objective, and a calibrated start), load it into
    the model's per-utterance path (``merc.models.fusion.UtteranceLogits.load_probe``) and zero the context
    head's last layer, so training starts from the probe's predictions and the context learns what the dialogue
    adds on top. Returns the probe's history (one row per C)."""
    if getattr(model, "utterance", None) is None:
        raise ConfigError(f"{type(model).__name__} has no per-utterance path to initialise from a probe "
                          f"(utterance_logits is off, or the model wraps stage-2 adapters)")
    path = model.utterance
    probe = LinearProbe(LinearConfig(input_dims={m: lin.in_features for m, lin in path.linear.items()},
                                     n_classes=len(labels)))
    history = fit_probe(probe, train, dev, labels, config, progress=progress, select=config.probe_select)
    path.load_probe(probe)
    last = model.head[-1]  # (d, n_classes) Linear of the context head
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return history
