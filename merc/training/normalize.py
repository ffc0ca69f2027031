"""Per-modality feature standardisation, fitted on the train split only and saved with the run.

Acoustic functionals (eGeMAPS: Hz, dB, rates) and face scores live on very different scales; the model's
per-modality Linear+LayerNorm copes with some of it, but a fixed z-scoring makes every dimension start on an
equal footing. Statistics come from the **train** split only, over utterances that *have* the modality
(absent rows are excluded), and are applied unchanged to dev, test, ``merc evaluate`` and ``merc predict``
(scikit-learn's ``StandardScaler`` ``fit``/``transform``, stored as JSON in the run's ``config.json``).

By default every modality except text is standardised: text encoders give L2-normalised sentence
embeddings, and leaving them as they are keeps text-only runs exactly as before.

After standardisation the train mean is zero, which is also the value an absent slot holds
(``merc.training.batching``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from merc.errors import IncompatibleRunError

DEFAULT_STANDARDIZED = ("audio", "face")
MIN_STD = 1e-6  # a constant dimension is centred but not scaled

Table = Mapping[str, "np.ndarray | None"]  # utterance id -> (d,) vector, None = absent


def _present_rows(table: Table) -> np.ndarray | None:
    rows = [np.asarray(v, dtype=np.float64).reshape(-1) for v in table.values() if v is not None]
    rows = [r for r in rows if np.isfinite(r).all()]
    return np.stack(rows) if rows else None


@dataclass
class FeatureNormalizer:
    """``stats[m] = {"mean": [...], "std": [...]}``; modalities without stats pass through unchanged."""
    stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @classmethod
    def fit(cls, train: Mapping[str, Table], modalities: Sequence[str] = DEFAULT_STANDARDIZED) -> "FeatureNormalizer":
        """``train[m][uid] -> vector | None``: mean/std per dimension over the present rows of each modality in
        ``modalities`` (others are not standardised)."""
        stats = {}
        for m in modalities:
            if m not in train:
                continue
            X = _present_rows(train[m])
            if X is None:
                continue
            std = X.std(0)
            stats[m] = {"mean": X.mean(0).tolist(), "std": np.where(std < MIN_STD, 1.0, std).tolist()}
        return cls(stats)

    def transform_table(self, m: str, table: Table) -> dict[str, np.ndarray | None]:
        if m not in self.stats:
            return dict(table)
        mean = np.asarray(self.stats[m]["mean"], dtype=np.float32)
        std = np.asarray(self.stats[m]["std"], dtype=np.float32)
        out: dict[str, np.ndarray | None] = {}
        for uid, v in table.items():
            if v is None:
                out[uid] = None
                continue
            v = np.asarray(v, dtype=np.float32).reshape(-1)
            if v.shape != mean.shape:
                raise IncompatibleRunError(f"{m} feature of utterance {uid!r} has dimension {v.shape[0]}, but the "
                                           f"run's standardisation was fitted on {mean.shape[0]}-d features")
            out[uid] = (v - mean) / std
        return out

    def transform(self, features: Mapping[str, Table]) -> dict[str, dict[str, np.ndarray | None]]:
        """``features[m][uid]`` standardised (a new mapping; None stays None)."""
        return {m: self.transform_table(m, table) for m, table in features.items()}

    def to_dict(self) -> dict[str, Any]:
        return {m: {"mean": list(s["mean"]), "std": list(s["std"])} for m, s in self.stats.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "FeatureNormalizer":
        stats = {}
        for m, s in (d or {}).items():
            if len(s.get("mean", ())) != len(s.get("std", ())) or not s.get("mean"):
                raise IncompatibleRunError(f"standardisation stats for {m!r} are malformed (mean and std must be "
                                           f"non-empty lists of one length)")
            stats[m] = {"mean": [float(x) for x in s["mean"]], "std": [float(x) for x in s["std"]]}
        return cls(stats)
