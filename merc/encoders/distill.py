"""A fine-tuned folder's own classifier as a distillation teacher (issue 15, "distillation for speed").

``merc encoder finetune --teacher encoders/mpnet-meld-ctx-full`` trains a (smaller, faster) student with
``(1 - α) · CE(labels) + α · T² · KL(teacher ‖ student)`` (:func:`merc.objectives.distill.distillation_loss`).
The teacher's class logits are computed once per training utterance, each input rendered as the *teacher*
saw its own training data (its template, dialogue context and pooling, from its ``merc_encoder.json``), so
student and teacher may use different windows and tokenizers; utterances are matched by id.

The teacher pass goes through the feature store (:mod:`merc.encoders.store`) as a text "encoder" whose
features are its logits: it is resumable chunk by chunk, checked, and shared by every student of the same
teacher on the same corpus.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from merc.data.schema import Corpus
from merc.encoders.classifier import HEAD_FILE, folder_classifier
from merc.encoders.features import Features
from merc.encoders.store import FeatureStore
from merc.encoders.template import META_FILE
from merc.encoders.text import SentenceTransformerEncoder, TextEncoder
from merc.errors import IncompatibleRunError, MissingFileError


class TeacherLogits(TextEncoder):
    """``(n, n_classes)`` class logits of a ``merc encoder finetune`` folder's own classifier."""
    description = "class logits of a fine-tuned encoder's own classifier (distillation teacher)"

    def __init__(self, folder: str | Path, labels: Sequence[str], *, batch_size: int = 32):
        from safetensors import safe_open
        self.folder = Path(folder).expanduser()
        meta_path, head = self.folder / META_FILE, self.folder / HEAD_FILE
        if not meta_path.is_file() or not head.is_file():
            raise MissingFileError(f"{self.folder}: not a folder written by `merc encoder finetune` (it needs "
                                   f"{META_FILE} and {HEAD_FILE}); a distillation teacher needs its classifier")
        recorded = list(json.loads(meta_path.read_text(encoding="utf-8")).get("labels") or [])
        if recorded != list(labels):
            raise IncompatibleRunError(f"teacher {meta_path} was trained on labels {recorded}; the corpus has "
                                       f"{list(labels)}: a teacher must share the student's label set")
        with safe_open(str(head), "np") as f:
            n_classes, hidden = f.get_slice("weight").get_shape()  # (n_classes, dim): no weights loaded yet
        self._inner = SentenceTransformerEncoder(self.folder, dim=int(hidden))  # template, context, fingerprint
        self.template, self.context = self._inner.template, self._inner.context
        self.name = f"teacher-{self.folder.name}"
        self.fingerprint = f"{self._inner.fingerprint}-logits"
        self.dim, self.batch_size = int(n_classes), batch_size
        self._clf = None

    def context_tokenizer(self):
        return self._inner.context_tokenizer()

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch
        if self._clf is None:
            self._clf, _ = folder_classifier(self.folder, self.dim)
        with torch.inference_mode():
            return self._clf.logits(texts).float().numpy()  # (b, n_classes)


def teacher_features(folder: str | Path, corpus: Corpus, split: str, *, cache_dir: str | Path | None = None,
                     progress: bool = True) -> Features:
    """The teacher's logits ``(n, n_classes)`` for every utterance of ``corpus``'s ``split``, from the feature
    store (under ``cache_dir`` when given) or computed into it; ``.take(ids)`` matches them to utterance ids,
    ``.meta`` holds the teacher's fingerprint and the pass's seconds (``cache_hit`` when it was read back)."""
    return FeatureStore(cache_dir).get(corpus, split, TeacherLogits(folder, corpus.labels), progress=progress)
