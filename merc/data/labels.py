"""Label sets per corpus, in the order models and reports use.

MELD: the 7 Emotion classes of the release. IEMOCAP: the usual 6-class set (Hazarika et al. 2018,
DialogueRNN) and the 4-class set where *excited* is merged into *happy* (Poria et al. 2017).
"""
from __future__ import annotations

from merc.errors import ConfigError

MELD_LABELS: list[str] = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]

IEMOCAP_6: list[str] = ["neu", "hap", "sad", "ang", "exc", "fru"]
IEMOCAP_4: list[str] = ["neu", "hap", "sad", "ang"]

# IEMOCAP label -> class in the 4-class variant (labels not listed are dropped).
IEMOCAP_4_MAP: dict[str, str] = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}
IEMOCAP_6_MAP: dict[str, str] = {lab: lab for lab in IEMOCAP_6}


def iemocap_label_map(classes: int) -> dict[str, str]:
    """The raw-label -> class map for IEMOCAP with ``classes`` in {4, 6}."""
    if classes == 6:
        return dict(IEMOCAP_6_MAP)
    if classes == 4:
        return dict(IEMOCAP_4_MAP)
    raise ConfigError(f"IEMOCAP classes must be 4 or 6, got {classes!r}")


def iemocap_labels(classes: int) -> list[str]:
    """The IEMOCAP label list for ``classes`` in {4, 6}."""
    iemocap_label_map(classes)  # validates
    return list(IEMOCAP_6 if classes == 6 else IEMOCAP_4)
