"""Turn conversations + cached utterance features into padded dialogue batches, with per-modality presence.

A dialogue becomes ``feats[m]: (seq_len, d_m)``, ``present[m]: (seq_len,)`` bool, ``speakers: (seq_len,)``
(per-dialogue speaker index in order of first appearance) and ``labels: (seq_len,)`` (``IGNORE`` where
unlabelled); a batch pads them to ``(batch, max_len, …)`` with ``mask`` True at real utterances and
``present[m]`` False at padding.

Missing modalities never drop an utterance. ``features[m]`` maps utterance id -> ``(d_m,)`` vector; an
utterance missing from that mapping, mapped to ``None``, or whose vector is not finite is **absent** for
``m``: its slot is filled with zeros and ``present[m]`` is False there. (After standardisation, see
``merc.training.normalize``, zero is the train mean, so even a model that ignores ``present`` sees a neutral
value.) The one exception is ``strict`` modalities (text by default): an utterance missing from their
mapping means the features and the corpus disagree (a stale cache), which is an error; ``None`` there still
means absent (e.g. an utterance without a transcript).

Modality dropout (training only): ``iterate_batches(..., modality_dropout={"audio": 0.1, ...}, rng=rng)``
marks each present modality of each utterance absent with its probability, never all the modalities an
utterance has (one of those is then kept, chosen at random), and zeroes the dropped slots. Evaluation and
prediction call ``iterate_batches`` without it.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from merc.data.schema import Conversation
from merc.errors import ConfigError, InputError

log = logging.getLogger(__name__)

IGNORE = -100  # label of padding and unlabelled utterances (torch cross_entropy's ignore_index)
STRICT_MODALITIES = ("text",)  # a missing mapping entry is an error (None still means absent)


@dataclass
class Dialogue:
    conversation_id: str
    utterance_ids: list[str]
    feats: dict[str, np.ndarray]  # modality -> (seq_len, d_m) float32, zeros where absent
    speakers: np.ndarray  # (seq_len,) int64
    labels: np.ndarray  # (seq_len,) int64, IGNORE where unlabelled
    present: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (seq_len,) bool; missing key = all
    utt_logits: np.ndarray | None = None  # (seq_len, n_classes) out-of-fold probe logits (stacked fusion, training)


@dataclass
class DialogueBatch:
    feats: dict[str, torch.Tensor]  # modality -> (batch, max_len, d_m)
    speakers: torch.Tensor  # (batch, max_len) long
    mask: torch.Tensor  # (batch, max_len) bool, True = real utterance
    labels: torch.Tensor  # (batch, max_len) long, IGNORE at padding / unlabelled
    utterance_ids: list[list[str]]
    present: dict[str, torch.Tensor] = field(default_factory=dict)  # modality -> (batch, max_len) bool
    utt_logits: torch.Tensor | None = None  # (batch, max_len, n_classes) when every dialogue has them


def speaker_indices(speakers: Sequence[str], max_speakers: int) -> np.ndarray:
    """Index of each speaker by order of first appearance in the dialogue; the ``max_speakers``-th and later
    speakers share the last index."""
    order: dict[str, int] = {}
    out = [order.setdefault(s, len(order)) for s in speakers]
    return np.minimum(np.asarray(out, dtype=np.int64), max_speakers - 1)


def _feature_dim(m: str, table: Mapping[str, np.ndarray | None], dims: Mapping[str, int] | None) -> int:
    if dims and m in dims:
        return int(dims[m])
    for v in table.values():
        if v is not None:
            return int(np.asarray(v).shape[-1])
    raise ConfigError(f"modality {m!r}: no utterance has a feature and no dimension was given (dims={dims}); "
                      f"nothing can be learned from it: drop it from --modalities or check its media")


def build_dialogues(conversations: Sequence[Conversation], features: Mapping[str, Mapping[str, np.ndarray | None]],
                    labels: Sequence[str], *, max_speakers: int = 16, dims: Mapping[str, int] | None = None,
                    strict: Sequence[str] = STRICT_MODALITIES) -> list[Dialogue]:
    """``features[modality][utterance_id] -> (d_m,)`` (or None / missing = absent). Every utterance keeps its
    place; absent slots are zeros with ``present`` False. ``dims[m]`` gives d_m when no vector is available
    (e.g. a split where no utterance has a face). Count what is absent with :func:`absence_counts`."""
    label_index = {lab: i for i, lab in enumerate(labels)}
    d = {m: _feature_dim(m, table, dims) for m, table in features.items()}
    out = []
    for conv in conversations:
        ids = [u.utterance_id for u in conv]
        feats, present = {}, {}
        for m, table in features.items():
            X = np.zeros((len(ids), d[m]), dtype=np.float32)
            has = np.zeros(len(ids), dtype=bool)
            for t, uid in enumerate(ids):
                if uid not in table:
                    if m in strict:
                        raise InputError(f"no {m} feature for utterance {uid!r} (conversation {conv.conversation_id}); "
                                         f"the features do not match the corpus: re-encode it")
                    continue
                v = table[uid]
                if v is None:
                    continue
                v = np.asarray(v, dtype=np.float32).reshape(-1)
                if v.shape[0] != d[m]:
                    raise InputError(f"{m} feature of utterance {uid!r} has dimension {v.shape[0]}, expected {d[m]}")
                if not np.isfinite(v).all():
                    log.warning("%s feature of utterance %s is not finite: treated as absent", m, uid)
                    continue
                X[t], has[t] = v, True
            feats[m], present[m] = X, has
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
                            speaker_indices([u.speaker for u in conv], max_speakers), np.asarray(ys, dtype=np.int64),
                            present))
    return out


def absence_counts(dialogues: Sequence[Dialogue]) -> dict[str, int]:
    """Per modality, how many utterances lack it."""
    counts: Counter = Counter()
    for d in dialogues:
        for m in d.feats:
            p = d.present.get(m)
            counts[m] += 0 if p is None else int((~p).sum())
    return {m: counts[m] for m in (dialogues[0].feats if dialogues else {})}


def collate(dialogues: Sequence[Dialogue]) -> DialogueBatch:
    B = len(dialogues)
    T = max(len(d.utterance_ids) for d in dialogues)
    feats = {m: torch.zeros(B, T, d0.shape[1]) for m, d0 in dialogues[0].feats.items()}
    present = {m: torch.zeros(B, T, dtype=torch.bool) for m in feats}
    speakers = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, d in enumerate(dialogues):
        n = len(d.utterance_ids)
        for m in feats:
            feats[m][b, :n] = torch.from_numpy(d.feats[m])
            p = d.present.get(m)
            present[m][b, :n] = True if p is None else torch.from_numpy(p)
        speakers[b, :n] = torch.from_numpy(d.speakers)
        mask[b, :n] = True
        labels[b, :n] = torch.from_numpy(d.labels)
    utt = None
    if all(d.utt_logits is not None for d in dialogues):
        utt = torch.zeros(B, T, dialogues[0].utt_logits.shape[1])
        for b, d in enumerate(dialogues):
            utt[b, :len(d.utterance_ids)] = torch.from_numpy(d.utt_logits)
    return DialogueBatch(feats, speakers, mask, labels, [d.utterance_ids for d in dialogues], present, utt)


def check_modality_dropout(p: Mapping[str, float] | None, modalities: Sequence[str]) -> dict[str, float]:
    """Validate per-modality dropout probabilities: known modalities, each in [0, 1)."""
    p = dict(p or {})
    for m, q in p.items():
        if m not in modalities:
            raise ConfigError(f"modality dropout for {m!r}, which this run does not use "
                              f"(modalities {list(modalities)})")
        if not 0.0 <= float(q) < 1.0:
            raise ConfigError(f"modality dropout for {m!r} must be in [0, 1), got {q}")
    return {m: float(q) for m, q in p.items() if q > 0}


def apply_modality_dropout(batch: DialogueBatch, p: Mapping[str, float], rng: np.random.Generator) -> DialogueBatch:
    """Mark present modalities absent with probability ``p[m]`` per utterance (in place; returns the batch).

    Never removes every modality an utterance has: where all of its present modalities were drawn, one of
    them, chosen uniformly, is kept. Dropped slots are zeroed (as absent slots are)."""
    p = check_modality_dropout(p, list(batch.feats))
    if not p:
        return batch
    mods = list(batch.feats)
    B, T = batch.mask.shape
    had = np.stack([batch.present[m].numpy() for m in mods])  # (M, B, T)
    probs = np.array([p.get(m, 0.0) for m in mods])[:, None, None]
    drop = (rng.random(had.shape) < probs) & had
    all_gone = had.any(0) & ~(had & ~drop).any(0)  # (B, T) utterances that would lose everything
    if all_gone.any():
        # keep one originally-present modality, uniformly among them: argmax of random scores over present ones
        score = np.where(had, rng.random(had.shape), -1.0)
        keep = score.argmax(0)  # (B, T)
        for k in range(len(mods)):
            drop[k] &= ~(all_gone & (keep == k))
    for k, m in enumerate(mods):
        d = torch.from_numpy(drop[k])
        if d.any():
            batch.present[m] = batch.present[m] & ~d
            batch.feats[m] = batch.feats[m].masked_fill(d[..., None], 0.0)
    return batch


def iterate_batches(dialogues: Sequence[Dialogue], batch_size: int, *, shuffle: bool = False,
                    rng: np.random.Generator | None = None,
                    modality_dropout: Mapping[str, float] | None = None) -> Iterator[DialogueBatch]:
    """Batches in order (or shuffled by ``rng``). ``modality_dropout`` (training only) is drawn from ``rng``,
    so a seeded trainer gets the same drops every run."""
    rng = rng if rng is not None else np.random.default_rng()
    order = np.arange(len(dialogues))
    if shuffle:
        rng.shuffle(order)
    for i in range(0, len(order), batch_size):
        batch = collate([dialogues[j] for j in order[i:i + batch_size]])
        if modality_dropout:
            batch = apply_modality_dropout(batch, modality_dropout, rng)
        yield batch
