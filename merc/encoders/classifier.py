"""A sentence encoder with a linear classifier head: what ``merc encoder finetune`` trains and saves.

The embedding (the model's pooling, or the mean over the target's tokens of a context window), dropout, one
linear layer. A tuned folder holds the encoder as a sentence-transformers model and the head as
``classifier.safetensors``; :func:`folder_classifier` loads both for inference (its own-classifier scores,
a distillation teacher's logits).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from merc.encoders.context import ContextSpec, pooling_target, target_embeddings

HEAD_FILE = "classifier.safetensors"


class EncoderClassifier:
    """Sentence encoder + dropout + linear head, as one trainable unit."""

    def __init__(self, st_model, n_classes: int, dropout: float, target: tuple[ContextSpec, int] | None = None):
        import torch
        self.target = target  # (spec, separator id): pool the target's tokens only
        self.st = st_model
        dim = int((getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension)())
        self.head = torch.nn.Linear(dim, n_classes, device=st_model.device)  # where the encoder is (--device)
        self.drop = torch.nn.Dropout(dropout)

    def parameters(self):
        return [*self.st.parameters(), *self.head.parameters()]

    def train(self, mode: bool = True) -> None:
        self.st.train(mode)
        self.head.train(mode)
        self.drop.train(mode)

    def logits(self, texts: list[str]):
        from merc.encoders.layer_cache import tokenize
        from merc.loop import to_device
        feats = to_device(tokenize(self.st, texts), self.st.device)
        if self.target is None:
            emb = self.st(feats)["sentence_embedding"]  # (batch, dim)
        else:
            emb = target_embeddings(self.st, feats, self.target)  # (batch, dim)
        return self.head(self.drop(emb))  # (batch, n_classes)

    def predict(self, texts: list[str], *, batch_size: int = 64, progress: bool = False, desc: str = "") -> np.ndarray:
        import torch
        self.train(False)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty(len(texts), dtype=np.int64)
        with torch.inference_mode():
            for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
                idx = order[s:s + batch_size]
                out[idx] = self.logits([texts[i] for i in idx]).argmax(-1).cpu().numpy()
        return out


def folder_classifier(out_dir: str | Path, n_labels: int) -> tuple[EncoderClassifier, Any]:
    """A tuned folder's encoder with its saved classifier head, for inference: ``(classifier, encoder)``, the
    encoder a ``SentenceTransformerEncoder`` that renders inputs as the folder's ``merc_encoder.json`` says."""
    from safetensors.torch import load_file

    from merc.encoders.text import SentenceTransformerEncoder
    enc = SentenceTransformerEncoder(out_dir)
    st = enc.model
    clf = EncoderClassifier(st, n_labels, 0.0, pooling_target(st, enc.context))
    clf.head.load_state_dict(load_file(str(Path(out_dir) / HEAD_FILE)))
    clf.train(False)
    return clf, enc
