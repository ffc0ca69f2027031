"""Turn conversations + cached utterance features into padded dialogue batches.

A dialogue becomes ``feats[m]: (seq_len, d_m)``, ``speakers: (seq_len,)`` (per-dialogue speaker index in
order of first appearance) and ``labels: (seq_len,)`` (``IGNORE`` where unlabelled); a batch pads them to
``(batch, max_len, …)`` with ``mask`` True at real utterances.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from merc.data.schema import Conversation
from merc.errors import InputError

IGNORE = -100  # label of padding and unlabelled utterances (torch cross_entropy's ignore_index)


@dataclass
class Dialogue:
    conversation_id: str
    utterance_ids: list[str]
    feats: dict[str, np.ndarray]  # modality -> (seq_len, d_m) float32
    speakers: np.ndarray  # (seq_len,) int64
    labels: np.ndarray  # (seq_len,) int64, IGNORE where unlabelled


@dataclass
class DialogueBatch:
    feats: dict[str, torch.Tensor]  # modality -> (batch, max_len, d_m)
    speakers: torch.Tensor  # (batch, max_len) long
    mask: torch.Tensor  # (batch, max_len) bool, True = real utterance
    labels: torch.Tensor  # (batch, max_len) long, IGNORE at padding / unlabelled
    utterance_ids: list[list[str]]


def speaker_indices(speakers: Sequence[str], max_speakers: int) -> np.ndarray:
    """Index of each speaker by order of first appearance in the dialogue; the ``max_speakers``-th and later
    speakers share the last index."""
    order: dict[str, int] = {}
    out = [order.setdefault(s, len(order)) for s in speakers]
    return np.minimum(np.asarray(out, dtype=np.int64), max_speakers - 1)


def build_dialogues(conversations: Sequence[Conversation], features: Mapping[str, Mapping[str, np.ndarray]],
                    labels: Sequence[str], *, max_speakers: int = 16) -> list[Dialogue]:
    """``features[modality][utterance_id] -> (d_m,)``. Every utterance must have every modality's feature."""
    label_index = {lab: i for i, lab in enumerate(labels)}
    out = []
    for conv in conversations:
        ids = [u.utterance_id for u in conv]
        feats = {}
        for m, table in features.items():
            missing = [i for i in ids if i not in table]
            if missing:
                raise KeyError(f"no {m} feature for utterance {missing[0]!r} (conversation {conv.conversation_id}, "
                               f"{len(missing)} missing); re-encode the corpus")
            feats[m] = np.stack([np.asarray(table[i], dtype=np.float32) for i in ids])
        ys = []
        for u in conv:
            if u.emotion is None:
                ys.append(IGNORE)
            elif u.emotion in label_index:
                ys.append(label_index[u.emotion])
            else:
                raise InputError(f"utterance {u.utterance_id}: emotion {u.emotion!r} is not in the label set "
                                 f"{list(labels)}")
        out.append(Dialogue(conv.conversation_id, ids, feats,
                            speaker_indices([u.speaker for u in conv], max_speakers), np.asarray(ys, dtype=np.int64)))
    return out


def collate(dialogues: Sequence[Dialogue]) -> DialogueBatch:
    B = len(dialogues)
    T = max(len(d.utterance_ids) for d in dialogues)
    feats = {m: torch.zeros(B, T, d0.shape[1]) for m, d0 in dialogues[0].feats.items()}
    speakers = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, d in enumerate(dialogues):
        n = len(d.utterance_ids)
        for m in feats:
            feats[m][b, :n] = torch.from_numpy(d.feats[m])
        speakers[b, :n] = torch.from_numpy(d.speakers)
        mask[b, :n] = True
        labels[b, :n] = torch.from_numpy(d.labels)
    return DialogueBatch(feats, speakers, mask, labels, [d.utterance_ids for d in dialogues])


def iterate_batches(dialogues: Sequence[Dialogue], batch_size: int, *, shuffle: bool = False,
                    rng: np.random.Generator | None = None) -> Iterator[DialogueBatch]:
    order = np.arange(len(dialogues))
    if shuffle:
        (rng or np.random.default_rng()).shuffle(order)
    for i in range(0, len(order), batch_size):
        yield collate([dialogues[j] for j in order[i:i + batch_size]])
