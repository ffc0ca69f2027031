"""Unimodal emotion items: one sentence, clip or face image with one of the seven MELD classes.

Every unimodal reader (``merc.data.unimodal.text`` / ``audio`` / ``face`` / ``jsonl``) returns an
:class:`ItemSet`: the kept :class:`EmotionItem` s and a count of what was dropped, by reason. Nothing is
dropped silently. :func:`balanced_sample` draws the class-balanced training sample of Wang & Beigi
(stage 2: ≈6.2k per emotion pooled over corpora); :func:`items_to_corpus` wraps text items as a merc
:class:`~merc.data.schema.Corpus` of one-utterance conversations so the stage-1 feature store
(:mod:`merc.encoders.store`) encodes them once, resumably.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from merc.data.labels import MELD_LABELS
from merc.data.schema import Conversation, Corpus, Utterance

MODALITIES = ("text", "audio", "face")

# the user's own labels (generic JSONL) may use these spellings of the MELD classes
LABEL_ALIASES: dict[str, str] = {
    **{lab: lab for lab in MELD_LABELS},
    "angry": "anger", "disgusted": "disgust", "fearful": "fear", "afraid": "fear", "happy": "joy",
    "happiness": "joy", "sad": "sadness", "surprised": "surprise", "neutrality": "neutral",
}


@dataclass
class EmotionItem:
    """One labelled unimodal example.

    ``text`` for sentences; ``media`` (absolute path) for clips and images; ``pixels`` for images held
    inline (FER2013's 48×48 grey rows, ``uint8``). ``speaker`` is the actor / poser / author when the
    corpus says so (for speaker-disjoint splits).
    """
    item_id: str  # "<source>:<id in the corpus>", unique across corpora
    label: str  # one of MELD_LABELS
    source: str  # corpus name: goemotions, crowdflower, isear, cremad, ravdess, savee, tess, fer2013, …
    modality: str  # text | audio | face
    text: str | None = None
    media: str | None = None
    pixels: Any = None  # (h, w) uint8 array, for corpora that store images inline
    raw_label: str = ""  # the corpus' own label before mapping
    speaker: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemSet:
    """What a unimodal reader returns: kept items and dropped counts (``reason -> count``)."""
    name: str
    modality: str
    items: list[EmotionItem]
    dropped: Counter = field(default_factory=Counter)
    root: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        """Kept items per MELD class (all seven, zeros included)."""
        c = Counter(it.label for it in self.items)
        return {lab: c.get(lab, 0) for lab in MELD_LABELS}

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "modality": self.modality, "root": self.root, "n": len(self.items),
                "labels": self.counts(), "dropped": dict(sorted(self.dropped.items()))}


def merge(sets: Sequence[ItemSet], name: str | None = None) -> ItemSet:
    """Pool several readers' outputs (one modality); dropped reasons are prefixed with the corpus name."""
    if not sets:
        raise ValueError("merge: no item sets given")
    mods = {s.modality for s in sets}
    if len(mods) != 1:
        raise ValueError(f"merge: item sets of different modalities {sorted(mods)}")
    items: list[EmotionItem] = []
    dropped: Counter = Counter()
    for s in sets:
        items.extend(s.items)
        for reason, n in s.dropped.items():
            dropped[f"{s.name}: {reason}"] += n
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"merge: item id {dup!r} occurs more than once (the same corpus given twice?)")
    return ItemSet(name or "+".join(s.name for s in sets), sets[0].modality, items, dropped)


def drop_duplicate_texts(items: Iterable[EmotionItem], dropped: Counter) -> list[EmotionItem]:
    """Keep the first item of each text (case- and space-insensitive); later copies are counted as dropped
    (``duplicate text``), so no sentence sits on both sides of a held-out split."""
    seen: set[str] = set()
    out = []
    for it in items:
        key = " ".join((it.text or "").lower().split())
        if key in seen:
            dropped["duplicate text"] += 1
            continue
        seen.add(key)
        out.append(it)
    return out


def balanced_sample(items: Sequence[EmotionItem], per_class: int | None, *, seed: int = 0) -> list[EmotionItem]:
    """At most ``per_class`` items of each class, drawn uniformly (seeded) from the items of all corpora
    pooled; a class with fewer items keeps them all (no oversampling). ``None`` keeps everything.

    The result is in a deterministic order (class, then the seeded draw), a function of ``seed`` and of
    the items' ids only, so the same arguments give the same sample and hence the same feature-cache key.
    """
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be >= 1 (or None for all), got {per_class}")
    by_class: dict[str, list[EmotionItem]] = defaultdict(list)
    for it in sorted(items, key=lambda it: it.item_id):
        by_class[it.label].append(it)
    out: list[EmotionItem] = []
    for lab in sorted(by_class):
        pool = by_class[lab]
        rng = random.Random(f"{seed}:{lab}")
        if per_class is not None and len(pool) > per_class:
            pool = rng.sample(pool, per_class)
        else:
            pool = list(pool)
            rng.shuffle(pool)
        out.extend(pool)
    return out


def sample_digest(items: Sequence[EmotionItem]) -> str:
    """Short sha256 over (id, label, text or media) of ``items`` in order: names a sample in provenance."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.item_id}\0{it.label}\0{it.text or it.media or ''}\n".encode())
    return h.hexdigest()[:16]


def items_to_corpus(items: Sequence[EmotionItem], name: str, split: str = "all") -> Corpus:
    """Text items as a merc Corpus: one conversation per item (speaker "", the item id as utterance id)."""
    bad = [it.item_id for it in items if it.text is None]
    if bad:
        raise ValueError(f"items_to_corpus needs text items; {len(bad)} have no text (first: {bad[0]!r})")
    convs = [Conversation(it.item_id, split, [Utterance(it.item_id, "", it.text, it.label)]) for it in items]
    return Corpus(name, {split: convs}, list(MELD_LABELS))
