"""A user's own labelled sentences, clips or face images for a stage-2 adapter: one JSON object per line.

    {"text": "I can't believe it!", "emotion": "surprise"}                 # text
    {"audio": "clips/a1.wav", "emotion": "anger", "speaker": "s1"}        # audio
    {"image": "faces/f1.png", "emotion": "joy", "id": "f1"}                # face

``path`` is a ``.jsonl`` file or a folder whose ``*.jsonl`` files are read in name order. Media paths are
relative to the file's folder. ``emotion`` is a MELD class or one of its common spellings (angry,
happy, happiness, sad, surprised, fearful, afraid, disgusted); ``null`` marks an unlabelled line
(dropped, counted). Optional: ``id`` (default ``<file stem>_<line>``), ``speaker``, ``meta``. A line
that is not JSON, lacks the modality's field, or has an unknown emotion raises :class:`InputError`
naming the file and line. A media file that does not exist is dropped and counted (``media missing``).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from merc.data.unimodal.items import LABEL_ALIASES, MODALITIES, EmotionItem, ItemSet
from merc.errors import ConfigError, InputError, MissingFileError, an

FIELD = {"text": "text", "audio": "audio", "face": "image"}


def read_emotion_jsonl(path: str | Path, modality: str, *, name: str = "jsonl") -> ItemSet:
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {list(MODALITIES)}, not {modality!r}")
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise MissingFileError(f"{path} holds no .jsonl files")
    elif path.is_file():
        files = [path]
    else:
        raise MissingFileError(f"{path} does not exist")
    key = FIELD[modality]
    items, dropped, seen = [], Counter(), set()
    for f in files:
        for line, raw in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw)
            except json.JSONDecodeError as e:
                raise InputError(f"{f}, line {line}: not JSON ({e.msg})") from None
            if not isinstance(d, dict) or not isinstance(d.get(key), str) or not d[key].strip():
                raise InputError(f"{f}, line {line}: expected an object with a non-empty string {key!r} "
                                 f"({an(modality)} item), got {raw[:80]!r}")
            emo = d.get("emotion")
            if emo is None:
                dropped["unlabelled"] += 1
                continue
            label = LABEL_ALIASES.get(str(emo).strip().lower())
            if label is None:
                raise InputError(f"{f}, line {line}: emotion {emo!r} is not a MELD class "
                                 f"({', '.join(sorted(set(LABEL_ALIASES.values())))}) or a known spelling of one")
            iid = f"{name}:{d.get('id', f'{f.stem}_{line}')}"
            if iid in seen:
                raise InputError(f"{f}, line {line}: id {iid!r} occurs twice")
            seen.add(iid)
            item = EmotionItem(iid, label, name, modality, raw_label=str(emo), speaker=d.get("speaker"),
                               meta=d.get("meta") or {})
            if modality == "text":
                item.text = d[key].strip()
            else:
                media = (f.parent / d[key]).resolve()
                if not media.is_file():
                    dropped["media missing"] += 1
                    continue
                item.media = str(media)
            items.append(item)
    return ItemSet(name, modality, items, dropped, str(path))
