"""A tiny context-dependent JSONL corpus and a hashed bag-of-words text encoder ("toy-levers") for the tests of
seed ensembles and the hyper-parameter search (as in test_training.py, smaller)."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from merc.encoders import register_text_encoder
from merc.encoders.text import TextEncoder

LABELS = ["angry", "calm", "happy"]
CUE = {"angry": "furious", "calm": "fine", "happy": "great"}


class ToyLevers(TextEncoder):
    name, dim, fingerprint = "toy-levers", 16, "toy-levers-v1"

    def _encode_batch(self, texts):
        X = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", "").split():
                X[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-6)


register_text_encoder("toy-levers", lambda **kw: ToyLevers(), overwrite=True)


def conversations(n: int, rng: np.random.Generator, prefix: str) -> list[dict]:
    convs = []
    for c in range(n):
        moods = {s: LABELS[rng.integers(3)] for s in ("A", "B")}
        utts = []
        for i in range(int(rng.integers(3, 7))):
            s = "AB"[i % 2]
            text = f"I feel {CUE[moods[s]]}." if i < 2 else str(rng.choice(["ok then.", "sure.", "right."]))
            utts.append({"utterance_id": f"{prefix}{c}_u{i}", "speaker": s, "text": text, "emotion": moods[s]})
        convs.append({"conversation_id": f"{prefix}{c}", "utterances": utts})
    return convs


def write_corpus(root: Path, sizes=(("train", 40), ("dev", 12), ("test", 12)), seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in sizes:
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(c) for c in conversations(n, rng, split)) + "\n")
    return root


TINY = ["--text-encoder", "toy-levers", "--epochs", "3", "--d-model", "8", "--layers", "1", "--dropout", "0.0",
        "--lr", "3e-3", "--batch-size", "8", "--quiet"]
