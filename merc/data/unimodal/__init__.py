"""Unimodal emotion corpora (stage 2 of the identity-transfer system): sentences, clips and face images with
one of the seven MELD classes. ``read_unimodal(name, path)`` is the entry point; each reader's module
docstring has its mapping table.

| modality | readers |
|---|---|
| text | goemotions, crowdflower, isear, jsonl |
| audio | cremad, ravdess, savee, tess, jsonl |
| face | fer2013, rafdb, ckplus, jaffe, jsonl |
"""
from __future__ import annotations

import importlib
from pathlib import Path

from merc.data.unimodal.items import (
    EmotionItem,
    ItemSet,
    balanced_sample,
    drop_duplicate_texts,
    items_to_corpus,
    merge,
    sample_digest,
)
from merc.errors import ConfigError, an

# reader name -> (modality, "module:function")
READERS: dict[str, tuple[str, str]] = {
    "goemotions": ("text", "merc.data.unimodal.text:read_goemotions"),
    "crowdflower": ("text", "merc.data.unimodal.text:read_crowdflower"),
    "isear": ("text", "merc.data.unimodal.text:read_isear"),
    "cremad": ("audio", "merc.data.unimodal.audio:read_cremad"),
    "ravdess": ("audio", "merc.data.unimodal.audio:read_ravdess"),
    "savee": ("audio", "merc.data.unimodal.audio:read_savee"),
    "tess": ("audio", "merc.data.unimodal.audio:read_tess"),
    "fer2013": ("face", "merc.data.unimodal.face:read_fer2013"),
    "rafdb": ("face", "merc.data.unimodal.face:read_rafdb"),
    "ckplus": ("face", "merc.data.unimodal.face:read_ckplus"),
    "jaffe": ("face", "merc.data.unimodal.face:read_jaffe"),
}


# reader name -> "module:constant" holding its raw label -> MELD class map (None = dropped)
_MAPPINGS = {"goemotions": "text:GOEMOTIONS_EKMAN", "crowdflower": "text:CROWDFLOWER_MAP", "isear": "text:ISEAR_MAP",
             "cremad": "audio:CREMAD_EMOTIONS", "ravdess": "audio:RAVDESS_EMOTIONS", "savee": "audio:SAVEE_EMOTIONS",
             "tess": "audio:TESS_EMOTIONS", "fer2013": "face:FER2013_EMOTIONS", "rafdb": "face:RAFDB_EMOTIONS",
             "ckplus": "face:CKPLUS_EMOTIONS", "jaffe": "face:JAFFE_EMOTIONS", "jsonl": "items:LABEL_ALIASES"}


def label_mapping(name: str) -> dict[str, object]:
    """The corpus' own labels -> MELD class (``None``: dropped; GoEmotions: MELD class -> its labels), for
    recording in an adapter's config.json."""
    if name not in _MAPPINGS:
        raise ConfigError(f"unknown unimodal corpus {name!r}; choose one of {sorted(_MAPPINGS)}")
    module, const = _MAPPINGS[name].split(":")
    table = getattr(importlib.import_module(f"merc.data.unimodal.{module}"), const)
    return {str(k): v for k, v in table.items()}


def readers_for(modality: str) -> list[str]:
    """Reader names of ``modality`` (``jsonl`` reads every modality)."""
    return [n for n, (m, _) in READERS.items() if m == modality] + ["jsonl"]


def read_unimodal(name: str, path: str | Path, *, modality: str | None = None, **options) -> ItemSet:
    """Read corpus ``name`` from ``path``; ``modality`` checks that the reader fits (required for ``jsonl``)."""
    if name == "jsonl":
        if modality is None:
            raise ConfigError("the jsonl reader needs the modality (text, audio or face)")
        from merc.data.unimodal.jsonl import read_emotion_jsonl
        return read_emotion_jsonl(path, modality, **options)
    if name not in READERS:
        raise ConfigError(f"unknown unimodal corpus {name!r}; choose one of {sorted(READERS) + ['jsonl']}")
    kind, target = READERS[name]
    if modality is not None and kind != modality:
        raise ConfigError(f"corpus {name!r} is {an(kind)} corpus, not {modality}; {modality} corpora: "
                          f"{readers_for(modality)}")
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(path, **options)


__all__ = ["EmotionItem", "ItemSet", "READERS", "balanced_sample", "drop_duplicate_texts", "items_to_corpus",
           "label_mapping", "merge", "read_unimodal", "readers_for", "sample_digest"]
