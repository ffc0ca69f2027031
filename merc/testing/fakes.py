"""Fake stage-1 encoders for tests of multimodal training: a text encoder whose features carry no label, feature
providers whose features do, and a JSONL corpus whose labels only those providers know.

    hidden = {}                                            # utterance id -> label, for the fake providers only
    write_label_free_corpus(root, LABELS, hidden, sizes={"train": 60, "dev": 20, "test": 20})
    register_encoder("toy", lambda **kw: HashedWords("toy"), modality="text", dim=16, overwrite=True)
    FEATURE_PROVIDERS["audio"] = FakeProvider("fakeaudio", "fakeaudio-v1", 0.125, make_vector, hidden)

Nothing here touches media, models or the network: it is cheap enough for ``make test-fast``.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from numpy.random import Generator

from merc.encoders.features import Features
from merc.encoders.text import TextEncoder

FILLERS = ("ok then", "sure", "right", "well", "I see", "hmm maybe")


class HashedWords(TextEncoder):
    """Bag of hashed words, L2-normalised (``dim`` buckets by CRC32): a deterministic text feature."""

    def __init__(self, name: str, dim: int = 16):
        self.name, self.dim, self.fingerprint = name, dim, f"{name}-v1"

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        X = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        for i, t in enumerate(texts):
            for w in t.split():
                X[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-6)


class FakeProvider:
    """A ``FEATURE_PROVIDERS`` entry: per utterance, ``make(label, rng)`` with a generator seeded by ``seed_prefix``
    + the utterance id (deterministic across splits and runs); a fraction ``absent`` has no feature ("nothing
    found"). ``hidden`` maps utterance ids to the labels only this provider knows."""

    def __init__(self, name: str, fingerprint: str, absent: float, make: Callable[[str, Generator], np.ndarray],
                 hidden: dict[str, str], *, seed_prefix: str | None = None, reason: str = "nothing found"):
        self.encoders, self.fingerprint, self.absent, self.make = (name,), fingerprint, absent, make
        self.hidden, self.reason = hidden, reason
        self.seed_prefix = name if seed_prefix is None else seed_prefix

    def __call__(self, corpus, split, name, *, media_dir=None, progress=True) -> Features:
        feats, reasons = {}, {}
        for u in corpus.utterances(split):
            r = np.random.default_rng(zlib.crc32((self.seed_prefix + u.utterance_id).encode()))
            if r.random() < self.absent:
                feats[u.utterance_id], reasons[u.utterance_id] = None, self.reason
                continue
            feats[u.utterance_id] = self.make(self.hidden[u.utterance_id], r)
        ids = [u.utterance_id for u in corpus.utterances(split)]
        return Features.from_table(ids, feats, reasons, {"fingerprint": self.fingerprint})


def write_label_free_corpus(root: str | Path, labels: Sequence[str], hidden: dict[str, str], *,
                            sizes: dict[str, int], turns: tuple[int, int] = (3, 7), seed: int = 0) -> Path:
    """``{split}.jsonl`` files of ``sizes[split]`` two-speaker conversations of ``turns`` (low, high exclusive)
    utterances each, with random labels from ``labels`` (recorded in ``hidden``) and filler texts that say
    nothing about them."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in sizes.items():
        lines = []
        for c in range(n):
            utts = []
            for i in range(int(rng.integers(*turns))):
                uid, lab = f"{split}{c}_u{i}", labels[rng.integers(len(labels))]
                hidden[uid] = lab
                utts.append({"utterance_id": uid, "speaker": "AB"[i % 2], "text": str(rng.choice(FILLERS)),
                             "emotion": lab})
            lines.append(json.dumps({"conversation_id": f"{split}{c}", "utterances": utts}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root
