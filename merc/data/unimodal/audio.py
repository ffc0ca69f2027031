"""Acted speech emotion corpora for the stage-2 audio adapter, read by their published file-name conventions
and mapped onto the seven MELD classes.

Every ``*.wav`` under the folder given is parsed (recursively; other files are ignored). A ``.wav`` whose
name does not follow the corpus convention, or carries an unknown code, raises :class:`InputError`
naming the file (``strict=False`` counts it as dropped instead, reason ``bad file name``).

| corpus | file name | codes → MELD class | dropped |
|---|---|---|---|
| CREMA-D (Cao et al. 2014) | ``AudioWAV/1001_DFA_ANG_XX.wav``: actor (1001–1091) _ sentence (IEO, TIE, IOM, IWW, TAI, MTI, IWL, ITH, DFA, ITS, TSI, WSI) _ emotion _ level (LO, MD, HI, XX, X) | ANG anger, DIS disgust, FEA fear, HAP joy, NEU neutral, SAD sadness | — (no surprise) |
| RAVDESS (Livingstone & Russo 2018) | ``Actor_12/03-01-05-01-02-01-12.wav``: modality (01 AV, 02 video, 03 audio) - channel (01 speech, 02 song) - emotion - intensity (01, 02) - statement (01, 02) - repetition (01, 02) - actor (01–24) | 01 neutral, 03 joy, 04 sadness, 05 anger, 06 fear, 07 disgust, 08 surprise | 02 calm (no MELD class; ``calm="neutral"`` maps it), song (``include_song=True`` keeps it) |
| SAVEE (Haq & Jackson 2009) | ``AudioData/DC/a01.wav`` (speaker folders DC, JE, JK, KL) or flat ``DC_a01.wav`` | a anger, d disgust, f fear, h joy, n neutral, sa sadness, su surprise | — |
| TESS (Dupuis & Pichora-Fuller 2010) | ``OAF_angry/OAF_back_angry.wav``: speaker (OAF, YAF) _ word _ emotion | angry anger, disgust disgust, fear fear, happy joy, neutral neutral, sad sadness, ps / pleasant_surprise(d) surprise | — |

Item ids are ``<corpus>:<file stem>`` (SAVEE: ``savee:<speaker>_<stem>``); ``speaker`` is the actor,
so a speaker-disjoint split is possible. Items are sorted by id.
"""  # noqa: E501 (the mapping tables)
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Callable

from merc.data.unimodal.items import EmotionItem, ItemSet
from merc.errors import ConfigError, InputError, MissingFileError

CREMAD_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "joy", "NEU": "neutral", "SAD": "sadness"}
CREMAD_SENTENCES = {"IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"}
CREMAD_LEVELS = {"LO", "MD", "HI", "XX", "X"}
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "joy", "04": "sadness", "05": "anger", "06": "fear",
                    "07": "disgust", "08": "surprise"}
SAVEE_EMOTIONS = {"a": "anger", "d": "disgust", "f": "fear", "h": "joy", "n": "neutral", "sa": "sadness",
                  "su": "surprise"}
SAVEE_SPEAKERS = {"DC", "JE", "JK", "KL"}
TESS_EMOTIONS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "joy", "neutral": "neutral",
                 "sad": "sadness", "ps": "surprise", "pleasant_surprise": "surprise", "pleasant_surprised": "surprise"}

_CREMAD = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")
_RAVDESS = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_SAVEE = re.compile(r"^(?:([A-Z]{2})_)?(sa|su|a|d|f|h|n)(\d{2})$")
_TESS = re.compile(r"^(OAF|YAF|OA|YA)_([A-Za-z]+)_([A-Za-z_]+)$")

# helpers


def _wavs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise MissingFileError(f"audio corpus folder {root} does not exist")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".wav")


def _read(name: str, root: str | Path, parse: Callable[[Path], tuple[str, str, str, str | None, dict] | str],
          strict: bool) -> ItemSet:
    """Apply ``parse(path) -> (item id, label, raw code, speaker, meta)`` or a drop reason (str) to every wav.

    ``parse`` raises ``ValueError(msg)`` for a bad name; that becomes an InputError naming the file."""
    root = Path(root)
    items, dropped = [], Counter()
    for p in _wavs(root):
        try:
            got = parse(p)
        except ValueError as e:
            if strict:
                raise InputError(f"{p}: {e}") from None
            dropped["bad file name"] += 1
            continue
        if isinstance(got, str):
            dropped[got] += 1
            continue
        iid, label, raw, speaker, meta = got
        items.append(EmotionItem(f"{name}:{iid}", label, name, "audio", media=str(p.resolve()), raw_label=raw,
                                 speaker=speaker, meta=meta))
    if not items and not dropped:
        raise InputError(f"{root}: no .wav files found for {name}")
    items.sort(key=lambda it: it.item_id)
    return ItemSet(name, "audio", items, dropped, str(root))

# readers


def read_cremad(root: str | Path, *, strict: bool = True) -> ItemSet:
    """CREMA-D ``ActorID_Sentence_Emotion_Level.wav`` (e.g. ``1001_DFA_ANG_XX.wav``)."""
    def parse(p: Path):
        m = _CREMAD.match(p.stem)
        if not m:
            raise ValueError("not a CREMA-D name (expected ActorID_Sentence_Emotion_Level, e.g. 1001_DFA_ANG_XX.wav)")
        actor, sent, emo, level = m.groups()
        if emo not in CREMAD_EMOTIONS:
            raise ValueError(f"unknown CREMA-D emotion code {emo!r} (expected one of {sorted(CREMAD_EMOTIONS)})")
        if sent not in CREMAD_SENTENCES:
            raise ValueError(f"unknown CREMA-D sentence code {sent!r} (expected one of {sorted(CREMAD_SENTENCES)})")
        if level not in CREMAD_LEVELS:
            raise ValueError(f"unknown CREMA-D level {level!r} (expected one of {sorted(CREMAD_LEVELS)})")
        return p.stem, CREMAD_EMOTIONS[emo], emo, actor, {"sentence": sent, "level": level}
    return _read("cremad", root, parse, strict)


def read_ravdess(root: str | Path, *, strict: bool = True, calm: str = "drop", include_song: bool = False) -> ItemSet:
    """RAVDESS ``modality-channel-emotion-intensity-statement-repetition-actor.wav``."""
    if calm not in ("drop", "neutral"):
        raise ConfigError(f"calm must be 'drop' or 'neutral', not {calm!r}")

    def parse(p: Path):
        m = _RAVDESS.match(p.stem)
        if not m:
            raise ValueError("not a RAVDESS name (expected seven 2-digit codes, e.g. 03-01-05-01-02-01-12.wav)")
        modality, channel, emo, intensity, statement, rep, actor = m.groups()
        checks = [("modality", modality, {"01", "02", "03"}), ("vocal channel", channel, {"01", "02"}),
                  ("emotion", emo, set(RAVDESS_EMOTIONS)), ("intensity", intensity, {"01", "02"}),
                  ("statement", statement, {"01", "02"}), ("repetition", rep, {"01", "02"})]
        for what, code, ok in checks:
            if code not in ok:
                raise ValueError(f"unknown RAVDESS {what} code {code!r} (expected one of {sorted(ok)})")
        if not 1 <= int(actor) <= 24:
            raise ValueError(f"RAVDESS actor {actor!r} outside 01-24")
        if channel == "02" and not include_song:
            return "song"
        label = RAVDESS_EMOTIONS[emo]
        if label == "calm":
            if calm == "drop":
                return "calm (no MELD class)"
            label = "neutral"
        return p.stem, label, emo, f"ravdess_actor{actor}", {"intensity": intensity, "statement": statement,
                                                             "channel": "song" if channel == "02" else "speech"}
    return _read("ravdess", root, parse, strict)


def read_savee(root: str | Path, *, strict: bool = True) -> ItemSet:
    """SAVEE ``<speaker>/a01.wav`` (speaker folders DC, JE, JK, KL) or flat ``DC_a01.wav``."""
    def parse(p: Path):
        m = _SAVEE.match(p.stem)
        if not m:
            raise ValueError("not a SAVEE name (expected <code><2 digits> in a speaker folder, e.g. DC/a01.wav, "
                             "or DC_a01.wav; codes a, d, f, h, n, sa, su)")
        speaker, code, num = m.groups()
        speaker = speaker or p.parent.name
        if speaker not in SAVEE_SPEAKERS:
            raise ValueError(f"SAVEE speaker {speaker!r} unknown (expected a folder or prefix in "
                             f"{sorted(SAVEE_SPEAKERS)})")
        return f"{speaker}_{code}{num}", SAVEE_EMOTIONS[code], code, f"savee_{speaker}", {}
    return _read("savee", root, parse, strict)


def read_tess(root: str | Path, *, strict: bool = True) -> ItemSet:
    """TESS ``OAF_back_angry.wav`` (speaker_word_emotion), usually in ``OAF_angry/``-style folders."""
    def parse(p: Path):
        m = _TESS.match(p.stem)
        if not m:
            raise ValueError("not a TESS name (expected speaker_word_emotion, e.g. OAF_back_angry.wav)")
        speaker, word, emo = m.groups()
        if emo.lower() not in TESS_EMOTIONS:
            raise ValueError(f"unknown TESS emotion {emo!r} (expected one of {sorted(TESS_EMOTIONS)})")
        speaker = {"OA": "OAF", "YA": "YAF"}.get(speaker, speaker)  # a few release files drop the F
        return p.stem, TESS_EMOTIONS[emo.lower()], emo, f"tess_{speaker}", {"word": word}
    return _read("tess", root, parse, strict)
