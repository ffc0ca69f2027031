"""What happened to the utterances without a modality, said in one readable line (train logs, evaluate prints).

A presence report (:func:`merc.training.features.presence_report`) counts absences by reason *kind* (file names
and numbers masked, so that "missing file <file>" counts all missing clips together); these lines show, per
kind, the count, the first such reason in full (its real file) and the utterance ids it happened to.
"""
from __future__ import annotations

from typing import Any, Mapping

SHOWN_IDS = 3  # utterance ids named per reason


def describe(rep: Mapping[str, Any]) -> str:
    """``"2 × missing file /m/dia1_utt2.mp4 (test_dia1_utt2, test_dia3_utt0); 1 × …"`` for a presence report."""
    parts = []
    for kind, n in rep.get("reasons", {}).items():
        ids = list(rep.get("examples", {}).get(kind, []))
        first = rep.get("first", {}).get(kind, kind)
        shown = ", ".join(ids[:SHOWN_IDS]) + (f", +{n - min(len(ids), SHOWN_IDS)} more" if n > SHOWN_IDS else "")
        like = "" if n == 1 else " and the like"
        parts.append(f"{n} × {first}{like} ({shown})")
    return "; ".join(parts)


def absent_line(rep: Mapping[str, Any], modality: str, split: str, *, verb: str = "had") -> str:
    """``"2 of 12 test utterances had no audio (…)"`` (``describe`` in the brackets)."""
    return f"{rep['absent']} of {rep['utterances']} {split} utterances {verb} no {modality} ({describe(rep)})"


def untrained_labels(corpus) -> list[str]:
    """Labels of ``corpus`` that no utterance of its train split has (the model never sees an example)."""
    seen = {u.emotion for u in corpus.utterances("train") if u.emotion is not None}
    return [lab for lab in corpus.labels if lab not in seen]
