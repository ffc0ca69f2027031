"""A tiny context-dependent JSONL corpus and hashed bag-of-words text encoders ("toy" 32-d, "toy-levers" 16-d)
shared by the training, seed-ensemble and hyper-parameter-search tests."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from merc.encoders import register_encoder
from merc.encoders.text import TextEncoder

LABELS = ["angry", "calm", "happy"]
CUE = {"angry": "furious", "calm": "fine", "happy": "great"}


class HashedWords(TextEncoder):
    """Bag of hashed words, L2-normalised: linear models can read the cue words."""

    def __init__(self, name: str, dim: int):
        self.name, self.dim, self.fingerprint = name, dim, f"{name}-v1"

    def _encode_batch(self, texts):
        X = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", "").split():
                X[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-6)


register_encoder("toy", lambda **kw: HashedWords("toy", 32), modality="text", dim=None, overwrite=True)
register_encoder("toy-levers", lambda **kw: HashedWords("toy-levers", 16), modality="text", dim=None, overwrite=True)


def conversations(n: int, rng: np.random.Generator, prefix: str, lengths: tuple[int, int] = (3, 7)) -> list[dict]:
    """Each speaker keeps one mood per dialogue; only their first utterance says it ('I feel great'),
    later ones are neutral filler ('ok then') — labelling those needs the dialogue context."""
    convs = []
    for c in range(n):
        moods = {s: LABELS[rng.integers(3)] for s in ("A", "B")}
        utts = []
        for i in range(int(rng.integers(*lengths))):
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
