"""Evaluation metrics, all from scikit-learn: weighted F1 (the MELD/IEMOCAP headline), accuracy,
macro F1, per-class F1 and the confusion matrix. Fractions in [0, 1]."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from merc.errors import InputError


def evaluate_predictions(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Scores for integer class predictions; ``labels[i]`` names class ``i``.

    A class no utterance of ``y_true`` has is listed in ``absent_classes`` and left out of the macro F1 (its F1
    is undefined: averaging a 0 for it would punish the model for a class the split does not test); weighted F1
    gives it no weight anyway. ``per_class_f1`` still lists every class (0 for an absent one)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
    if y_true.size == 0:
        raise InputError("no labelled utterances to evaluate")
    idx = list(range(len(labels)))
    tested = [i for i in idx if (y_true == i).any()]
    per_class = f1_score(y_true, y_pred, labels=idx, average=None, zero_division=0)
    return {
        "weighted_f1": float(f1_score(y_true, y_pred, labels=idx, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=tested, average="macro", zero_division=0)),
        "per_class_f1": {lab: float(f) for lab, f in zip(labels, per_class)},
        "n": int(y_true.size),
        "absent_classes": [labels[i] for i in idx if i not in tested],
        "confusion": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}
