"""Per-class loss weights from the training label counts.

- ``none``: no weights.
- ``balanced``: inverse frequency, ``N / (C · n_c)`` (scikit-learn's ``class_weight="balanced"``).
- ``sqrt``: its square root (a milder re-weighting).
- ``effective``: inverse *effective number of samples*, ``(1 - β) / (1 - β^n_c)`` (Cui et al., "Class-Balanced
  Loss Based on Effective Number of Samples", CVPR 2019, arXiv:1901.05555). β → 0 gives no re-weighting,
  β → 1 gives inverse frequency; β = 0.999 or 0.9999 are the paper's usual values.

Every scheme is normalised to mean 1 over the classes (the paper's "sum to C"), so the loss scale stays that
of the unweighted loss. A class absent from train is counted as 1 (its weight is then the largest).
"""
from __future__ import annotations

import numpy as np

from merc.errors import ConfigError

SCHEMES = ("none", "balanced", "sqrt", "effective")


def class_weights(counts: np.ndarray, scheme: str, *, beta: float = 0.999) -> np.ndarray | None:
    """counts (n_classes,) training utterances per class -> weights (n_classes,) of mean 1, or None for ``none``."""
    if scheme == "none":
        return None
    counts = np.maximum(np.asarray(counts, dtype=float), 1.0)
    if scheme in ("balanced", "sqrt"):
        w = counts.sum() / (len(counts) * counts)
        if scheme == "sqrt":
            w = np.sqrt(w)
    elif scheme == "effective":
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"the class-balanced beta must be in [0, 1), not {beta}")
        w = (1.0 - beta) / (1.0 - np.power(beta, counts))
    else:
        raise ConfigError(f"class_weights must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    return w / w.mean()
