"""What happened to the utterances without a modality, said in one readable line (train logs, evaluate prints).

A presence report (:func:`merc.training.features.presence_report`) counts absences by reason *kind* (file names
and numbers masked, so that "missing file <file>" counts all missing clips together); these lines show, per
kind, the count, the first such reason in full (its real file) and the utterance ids it happened to.
"""
from __future__ import annotations

from typing import Any, Mapping

from merc.errors import ConfigError, an

SHOWN_IDS = 3  # utterance ids named per reason
MEDIA_OF = {"audio": "audio or video", "face": "video"}  # what a modality's encoders read from an utterance


def has_media(u, modality: str) -> bool:
    """Whether utterance ``u`` names a file that ``modality``'s encoders read (audio falls back to the video)."""
    return bool(u.audio or u.video) if modality == "audio" else bool(u.video) if modality == "face" else True


def check_media_named(corpus, modalities, *, dataset: str, data_dir: str, media_dir: str | None) -> None:
    """ConfigError before any encoding when MELD is read without ``--media-dir`` for a run with audio or faces:
    its CSVs name no clip, so no utterance could have them. (Other corpora name their media themselves, and a
    registered feature provider may need no file at all: those find out from the extraction report.)"""
    media = [m for m in modalities if m != "text"]
    if not media or media_dir or not dataset.startswith("meld"):
        return
    if any(has_media(u, m) for u in corpus.utterances("train") for m in media):
        return
    raise ConfigError(f"--modalities {','.join(modalities)}: no train utterance of {dataset} at {data_dir} names "
                      f"{an(MEDIA_OF[media[0]])} file, so there is no {' or '.join(media)} to learn from; MELD's "
                      "clips are found through --media-dir (the folder holding train_splits/, "
                      "dev_splits_complete/, output_repeated_splits_test/)")


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
