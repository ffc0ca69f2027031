"""The data model every part of merc speaks: Utterance, Conversation, Corpus.

Ids are stable and readable because reports, QC flags and manifests refer to them:
MELD ``{split}_dia{D}_utt{U}`` (conversation ``{split}_dia{D}``), IEMOCAP turn names
(``Ses01F_impro01_F000``, conversation ``Ses01F_impro01``), JSONL ids are the user's own.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from merc.errors import InputError

SPLITS = ("train", "dev", "test")


class CorpusError(InputError):
    """Bad input in a corpus file; the message names the file, the line and the offending value."""


@dataclass
class Utterance:
    utterance_id: str
    speaker: str
    text: str
    emotion: str | None = None  # None when unlabelled
    start: float | None = None  # seconds
    end: float | None = None
    audio: str | None = None  # absolute path, or None
    video: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # corpus-specific extras (season, VAD, …)

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Utterance":
        return cls(**d)


@dataclass
class Conversation:
    conversation_id: str
    split: str
    utterances: list[Utterance]

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    @property
    def speakers(self) -> list[str]:
        """Speakers in order of first appearance."""
        return list(dict.fromkeys(u.speaker for u in self.utterances))

    def to_dict(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id,
                "utterances": [u.to_dict() for u in self.utterances]}


@dataclass
class Corpus:
    """What a reader returns: conversations per split, the label set, and what was dropped or repaired."""
    name: str
    splits: dict[str, list[Conversation]]
    labels: list[str]
    dropped: dict[str, Counter] = field(default_factory=dict)  # split -> reason -> count
    repaired: dict[str, int] = field(default_factory=dict)  # what -> count (e.g. mojibake strings)
    root: str | None = None

    def __getitem__(self, split: str) -> list[Conversation]:
        if split not in self.splits:
            raise KeyError(f"corpus {self.name!r} has no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split]

    def utterances(self, split: str) -> list[Utterance]:
        return [u for c in self[split] for u in c]

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataset": self.name, "labels": list(self.labels), "splits": {},
                               "repaired": dict(self.repaired)}
        for split, convs in self.splits.items():
            utts = [u for c in convs for u in c]
            dist = Counter(u.emotion for u in utts if u.emotion is not None)
            out["splits"][split] = {
                "conversations": len(convs),
                "utterances": len(utts),
                "speakers": len({u.speaker for u in utts}),
                "unlabelled": sum(u.emotion is None for u in utts),
                "labels": {lab: dist.get(lab, 0) for lab in self.labels},
                "dropped": dict(self.dropped.get(split, {})),
            }
        return out
