"""Stage-2 training data: unimodal corpora pooled, de-duplicated, class-balanced, and encoded by a frozen
stage-1 encoder.

An encoder here is anything with ``name``, ``fingerprint``, ``dim`` and ``encode(items) -> (n, dim)``
float32 (:class:`ItemEncoder`). Every stage-1 encoder goes through the feature store (once per sample,
resumable): text encoders through :class:`CachedTextEncoder`, audio and face ones through
:mod:`merc.encoders.items`; items an encoder cannot use are absent and :func:`encode_sample` leaves them out.
Any other function plugs in via :func:`callable_encoder`.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from merc.data.unimodal import (
    EmotionItem,
    ItemSet,
    balanced_sample,
    drop_duplicate_texts,
    items_to_corpus,
    merge,
    read_unimodal,
    sample_digest,
)
from merc.errors import ConfigError

log = logging.getLogger(__name__)


class ItemEncoder(Protocol):
    name: str
    fingerprint: str
    dim: int

    def encode(self, items: Sequence[EmotionItem]) -> np.ndarray: ...  # (n, dim) float32


@dataclass
class CallableEncoder:
    """Wraps ``fn(items) -> (n, dim)`` (an audio / face stage-1 encoder) as an :class:`ItemEncoder`."""
    name: str
    fingerprint: str
    dim: int
    fn: Callable[[Sequence[EmotionItem]], np.ndarray]

    def encode(self, items: Sequence[EmotionItem]) -> np.ndarray:
        X = np.asarray(self.fn(items), dtype=np.float32)
        if X.shape != (len(items), self.dim) or not np.isfinite(X).all():
            raise RuntimeError(f"encoder {self.name!r} returned {X.shape} (or non-finite values) for {len(items)} "
                               f"items; expected ({len(items)}, {self.dim}) finite values")
        return X


def callable_encoder(name: str, fingerprint: str, dim: int, fn: Callable) -> CallableEncoder:
    return CallableEncoder(name, fingerprint, dim, fn)


class CachedTextEncoder:
    """A merc text encoder (``mpnet``, ``minilm``, a folder) over items, through the feature store.

    Items have no speaker: an encoder whose template uses ``{speaker}`` (an emotion-tuned folder with
    ``"{speaker}: {text}"``) sees an empty one, i.e. ``": text"``. An item with an empty text is absent."""

    def __init__(self, name_or_encoder: Any, *, cache_dir: str | Path | None = None, progress: bool = True,
                 corpus_name: str = "adapt_text"):
        if isinstance(name_or_encoder, str):
            from merc.encoders import get_encoder
            name_or_encoder = get_encoder(name_or_encoder, "text")
        self.text_encoder = name_or_encoder
        self.name, self.fingerprint, self.dim = name_or_encoder.name, name_or_encoder.fingerprint, name_or_encoder.dim
        self.cache_dir, self.progress, self.corpus_name = cache_dir, progress, corpus_name
        self.last_meta: dict[str, Any] = {}

    def encode_items(self, items: Sequence[EmotionItem]):
        """:class:`merc.encoders.EncodeResult` of ``items`` (rows in item order)."""
        from merc.encoders import EncodeResult, FeatureStore
        corpus = items_to_corpus(items, self.corpus_name, split="sample")
        feats = FeatureStore(self.cache_dir).get(corpus, "sample", self.text_encoder, progress=self.progress)
        self.last_meta = {k: v for k, v in feats.meta.items() if k != "ids"}  # encoding seconds, cache hit, …
        return EncodeResult(feats.X, feats.present, feats.reasons)

    def encode(self, items: Sequence[EmotionItem]) -> np.ndarray:
        return self.encode_items(items).X  # (n, dim), rows in item order


def encode_sample(encoder: ItemEncoder, items: Sequence[EmotionItem], *, max_examples: int = 50
                  ) -> tuple[np.ndarray, list[EmotionItem], dict[str, Any]]:
    """``(X (n_usable, dim), usable items, unusable report)``. An encoder with ``encode_items(items) ->
    EncodeResult`` (audio / face, :mod:`merc.encoders.items`) may mark items absent; they are left out and
    reported as ``{"n", "reasons": {kind: count}, "examples": {item_id: reason}}`` (first ``max_examples``).
    A plain :class:`ItemEncoder` must encode every item."""
    from merc.encoders.features import reason_kind
    items = list(items)
    if not hasattr(encoder, "encode_items"):
        return encoder.encode(items), items, {"n": 0, "reasons": {}, "examples": {}}
    res = encoder.encode_items(items)
    X = np.asarray(res.X, dtype=np.float32)
    if X.shape != (len(items), encoder.dim) or not np.isfinite(X).all():
        raise RuntimeError(f"encoder {encoder.name!r} returned {X.shape} (or non-finite values) for {len(items)} "
                           f"items; expected ({len(items)}, {encoder.dim})")
    bad = [(it.item_id, r or "absent") for it, ok, r in zip(items, res.present, res.reasons) if not ok]
    report = {"n": len(bad), "reasons": dict(Counter(reason_kind(r) for _, r in bad).most_common()),
              "examples": dict(bad[:max_examples])}
    if bad:
        log.warning("%d of %d sampled items unusable by %s, left out: %s", len(bad), len(items), encoder.name,
                    report["reasons"])
    if len(bad) == len(items):
        raise ConfigError(f"none of the {len(items)} sampled items could be encoded by {encoder.name!r}: "
                          f"{report['reasons']}")
    keep = np.asarray(res.present, bool)
    return X[keep], [it for it, ok in zip(items, keep) if ok], report


def parse_corpus_specs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``["goemotions=DIR", ...]`` -> ``[("goemotions", "DIR"), ...]``."""
    out = []
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--corpus {s!r}: expected NAME=DIR (e.g. goemotions=../shared/data/goemotions)")
        out.append((name.strip(), path.strip()))
    return out


@dataclass
class AdaptData:
    """The pooled corpora and the balanced sample drawn from them."""
    pooled: ItemSet  # every kept item of every corpus (after de-duplication)
    sample: list[EmotionItem]  # the balanced training sample (train + held-out)
    per_class: int | None
    seed: int

    def provenance(self) -> dict[str, Any]:
        return {"per_class": self.per_class, "seed": self.seed, "sample_sha256": sample_digest(self.sample),
                "pooled_counts": self.pooled.counts(), "dropped": dict(sorted(self.pooled.dropped.items())),
                "sample_counts": dict(sorted(Counter(it.label for it in self.sample).items())),
                "sample_by_source": dict(sorted(Counter(it.source for it in self.sample).items())),
                "sample_by_class_and_source": {lab: dict(sorted(Counter(it.source for it in self.sample
                                                                        if it.label == lab).items()))
                                               for lab in sorted({it.label for it in self.sample})}}


def collect(modality: str, corpora: Sequence[tuple[str, str | Path]], *, per_class: int | None, seed: int = 0,
            dedup_text: bool = True) -> AdaptData:
    """Read ``corpora`` (``(name, dir)`` pairs) of ``modality``, pool them, drop duplicate texts, and draw
    at most ``per_class`` items per class (seeded)."""
    if not corpora:
        raise ConfigError("no corpora given: pass --corpus NAME=DIR at least once")
    sets = [read_unimodal(name, path, modality=modality) for name, path in corpora]
    for s in sets:
        log.info("%s: %d items %s, dropped %s", s.name, len(s), s.counts(), dict(s.dropped))
    pooled = merge(sets)
    if modality == "text" and dedup_text:
        pooled.items = drop_duplicate_texts(pooled.items, pooled.dropped)
    if not pooled.items:
        raise ConfigError(f"corpora {[n for n, _ in corpora]} hold no usable {modality} items")
    return AdaptData(pooled, balanced_sample(pooled.items, per_class, seed=seed), per_class, seed)
