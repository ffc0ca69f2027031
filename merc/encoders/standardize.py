"""Per-dimension standardisation fitted on the train split only, serialisable so it travels with a run.

Encoders whose outputs have wildly different scales (openSMILE functionals: Hz, dB, ratios; flagged by
``Encoder.standardize = True``) are standardised before the emotion adapters. Statistics come from the
*present* train rows only (absent rows are zeros and would bias them); constant dimensions get std 1.
The training plumbing fits one per (modality, encoder) on train, applies it to every split, and stores
``to_dict()`` in the run config; ``from_dict`` restores it for evaluate/predict.
(scikit-learn's StandardScaler, minus the presence mask and with a JSON round trip.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from merc.errors import IncompatibleRunError


@dataclass
class Standardizer:
    mean: np.ndarray  # (dim,) float32
    std: np.ndarray  # (dim,) float32, >= eps
    n: int = 0  # train rows the statistics came from

    @classmethod
    def fit(cls, X: np.ndarray, present: np.ndarray | None = None, *, eps: float = 1e-6) -> "Standardizer":
        """Mean/std of the present rows of ``X`` ``(n, dim)``."""
        X = np.asarray(X, np.float64)
        rows = X if present is None else X[np.asarray(present, bool)]
        if len(rows) == 0:
            raise ValueError("Standardizer.fit: no present rows to compute statistics from")
        std = rows.std(axis=0)
        std = np.where(std < eps, 1.0, std)
        return cls(rows.mean(axis=0).astype(np.float32), std.astype(np.float32), int(len(rows)))

    def transform(self, X: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """``(X - mean) / std`` as float32; absent rows stay zero."""
        X = np.asarray(X, np.float32)
        if X.shape[-1] != self.mean.shape[0]:
            raise IncompatibleRunError(f"Standardizer was fitted on {self.mean.shape[0]}-d features, got "
                                       f"{X.shape[-1]}-d; the encoder differs from the run's")
        Z = ((X - self.mean) / self.std).astype(np.float32)
        if present is not None:
            Z[~np.asarray(present, bool)] = 0.0
        return Z

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std], "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Standardizer":
        mean, std = np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32)
        if mean.shape != std.shape or mean.ndim != 1 or (std <= 0).any():
            raise IncompatibleRunError(f"bad standardizer statistics: mean {mean.shape}, std {std.shape}")
        return cls(mean, std, int(d.get("n", 0)))
