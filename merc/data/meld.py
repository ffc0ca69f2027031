"""MELD reader: ``{train,dev,test}_sent_emo.csv`` -> :class:`~merc.data.schema.Corpus`.

Columns (declare-lab/MELD): Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID,
Season, Episode, StartTime, EndTime. Ids are ``{split}_dia{D}_utt{U}`` / ``{split}_dia{D}``;
dialogues come in Dialogue_ID order, utterances in Utterance_ID order.

The dyadic variant (``dyadic=True``, dataset ``meld_dyadic``; declare-lab/MELD ``data/MELD_Dyadic``) reads
``{split}_sent_emo_dya.csv``: the same utterances re-grouped into two-speaker dialogues, with the columns
Old_Dialogue_ID and Old_Utterance_ID added (no Sr No.). Ids use the dyadic Dialogue_ID / Utterance_ID; the old
ids are kept as ints in ``meta["old_dialogue_id"]`` / ``meta["old_utterance_id"]`` and name the clip
(``dia{Old_Dialogue_ID}_utt{Old_Utterance_ID}.mp4``), so several utterances may share one clip.

Repairs (counted in ``corpus.repaired``, never silent):
- ``mojibake``: strings with cp1252 mojibake (``\\x92``, ``â€™``) fixed with ``ftfy.fix_encoding``;
- ``cp1252_files``: files that are not valid UTF-8, decoded as Windows-1252;
- ``short_milliseconds``: time stamps like ``00:06:47,28`` (three in the release), read as a decimal
  fraction (47.28 s).
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import ftfy
import ftfy.bad_codecs  # noqa: F401  (registers the "sloppy-windows-1252" codec)

from merc.data.labels import MELD_LABELS
from merc.data.schema import SPLITS, Conversation, Corpus, CorpusError, Utterance

# raw release layout of the clips, per split
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
REQUIRED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID", "StartTime", "EndTime")
OLD_IDS = ("Old_Dialogue_ID", "Old_Utterance_ID")  # dyadic variant: ids of the original MELD utterance
_TIME = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})[,.](\d{1,3})")


# helpers

def csv_path(data_dir: str | Path, split: str, dyadic: bool = False) -> Path:
    return Path(data_dir) / f"{split}_sent_emo{'_dya' if dyadic else ''}.csv"


def parse_time(value: str) -> tuple[float, bool]:
    """``HH:MM:SS,mmm`` -> (seconds, whether the fraction had fewer than 3 digits). Raises ValueError."""
    m = _TIME.fullmatch(value.strip())
    if not m:
        raise ValueError(value)
    h, mi, s, frac = m.groups()
    if int(mi) >= 60 or int(s) >= 60:
        raise ValueError(value)
    return int(h) * 3600 + int(mi) * 60 + int(s) + float("0." + frac), len(frac) < 3


def decode_file(path: Path, repaired: Counter) -> str:
    """UTF-8 (BOM allowed); a file that is not valid UTF-8 is decoded as Windows-1252 and counted."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        repaired["cp1252_files"] += 1
        return data.decode("sloppy-windows-1252")


def fix_mojibake(text: str, repaired: Counter) -> str:
    if text.isascii():  # pure ASCII cannot be mojibake
        return text
    fixed = ftfy.fix_encoding(text)
    if fixed != text:
        repaired["mojibake"] += 1
    return fixed


def _meta_key(column: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", column.strip().lower()).strip("_")


def _maybe_int(value: str) -> int | str:
    v = value.strip()
    return int(v) if re.fullmatch(r"-?\d+", v) else v


def _int_fields(row: list[str], col: dict[str, int], names: Iterable[str], where: str) -> list[int]:
    """The non-negative integers in columns ``names``; raises CorpusError naming ``where`` and the value."""
    out = []
    for name in names:
        value = row[col[name]].strip()
        if not value.isdigit():
            raise CorpusError(f"{where}: {name} is {value!r}, expected a non-negative integer")
        out.append(int(value))
    return out


# reader

def read_split(path: Path, split: str, media_dir: str | Path | None, repaired: Counter,
               dropped: Counter, dyadic: bool = False) -> list[Conversation]:
    """Read one MELD CSV into conversations (ordered by Dialogue_ID, then Utterance_ID).

    With ``dyadic`` the Old_Dialogue_ID / Old_Utterance_ID columns are required, go to ``meta`` as ints and
    name the clip; otherwise the clip is named by Dialogue_ID / Utterance_ID.
    """
    required = REQUIRED + OLD_IDS if dyadic else REQUIRED
    reader = csv.reader(io.StringIO(decode_file(path, repaired), newline=""))
    header = next(reader, None)
    if header is None:
        raise CorpusError(f"{path}:1: empty file; expected a CSV header with columns {list(required)}")
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise CorpusError(f"{path}:1: missing column(s) {missing}; the header is {header}, "
                          f"expected at least {list(required)}")
    col = {name: i for i, name in enumerate(header)}
    extra = [c for c in header if c not in REQUIRED]  # Sr No., Sentiment, Season, Old_*, ... -> meta

    media_root = None if media_dir is None else Path(media_dir).expanduser().resolve() / CLIP_DIRS[split]
    dialogues: dict[int, list[tuple[int, Utterance]]] = {}
    seen: dict[str, int] = {}
    line = reader.line_num
    for row in reader:
        start_line, line = line + 1, reader.line_num
        where = f"{path}:{start_line}"
        if not row:  # an empty line is not a record
            continue
        if all(not f.strip() for f in row):
            dropped["blank_row"] += 1
            continue
        if len(row) != len(header):
            raise CorpusError(f"{where}: row has {len(row)} fields, expected {len(header)} ({header}): {row!r}")
        dia, utt = _int_fields(row, col, ("Dialogue_ID", "Utterance_ID"), where)
        clip = _int_fields(row, col, OLD_IDS, where) if dyadic else [dia, utt]
        times = []
        for name in ("StartTime", "EndTime"):
            try:
                seconds, short = parse_time(row[col[name]])
            except ValueError:
                raise CorpusError(f"{where}: {name} is {row[col[name]]!r}, expected HH:MM:SS,mmm") from None
            repaired["short_milliseconds"] += short
            times.append(seconds)
        emotion = row[col["Emotion"]].strip().lower()
        if emotion not in MELD_LABELS:
            raise CorpusError(f"{where}: Emotion is {row[col['Emotion']]!r}, expected one of {MELD_LABELS}")
        uid = f"{split}_dia{dia}_utt{utt}"
        if uid in seen:
            raise CorpusError(f"{where}: duplicate utterance Dialogue_ID={dia} Utterance_ID={utt} "
                              f"({uid!r}), first seen on line {seen[uid]}; expected unique ids")
        seen[uid] = start_line
        media = None if media_root is None else os.path.join(media_root, f"dia{clip[0]}_utt{clip[1]}.mp4")
        meta: dict[str, Any] = {_meta_key(c): _maybe_int(row[col[c]]) for c in extra}
        if dyadic:
            meta["old_dialogue_id"], meta["old_utterance_id"] = clip
        if "sentiment" in meta:
            meta["sentiment"] = str(meta["sentiment"]).lower()
        u = Utterance(utterance_id=uid, speaker=fix_mojibake(row[col["Speaker"]].strip(), repaired),
                      text=fix_mojibake(row[col["Utterance"]], repaired), emotion=emotion,
                      start=times[0], end=times[1], audio=media, video=media, meta=meta)
        dialogues.setdefault(dia, []).append((utt, u))
    return [Conversation(f"{split}_dia{d}", split, [u for _, u in sorted(dialogues[d], key=lambda t: t[0])])
            for d in sorted(dialogues)]


def _missing_file(path: Path, data_dir: Path, split: str, dyadic: bool) -> CorpusError:
    """The error for an absent split file, pointing at the other variant when its file is there."""
    other = csv_path(data_dir, split, not dyadic)
    hint = (f"; {other.name} is there: use dataset {'meld' if dyadic else 'meld_dyadic'!r}"
            if other.is_file() else "")
    return CorpusError(f"{path}: no such file; expected {'MELD dyadic' if dyadic else 'MELD'}'s {path.name} "
                       f"in {data_dir}{hint}")


def read_meld(data_dir: str | Path, media_dir: str | Path | None = None,
              splits: Iterable[str] = SPLITS, dyadic: bool = False) -> Corpus:
    """Read MELD from ``data_dir/{split}_sent_emo.csv``; with ``media_dir`` set audio and video to the clips.

    The audio lives inside the mp4, so ``audio == video``; paths are set even for missing files (QC flags them).
    With ``dyadic`` read the dyadic variant ``{split}_sent_emo_dya.csv`` instead (corpus name ``meld_dyadic``).
    """
    data_dir = Path(data_dir).expanduser()
    repaired: Counter = Counter()
    out: dict[str, list[Conversation]] = {}
    dropped: dict[str, Counter] = {}
    for split in splits:
        if split not in CLIP_DIRS:
            raise CorpusError(f"unknown MELD split {split!r}; expected some of {list(SPLITS)}")
        path = csv_path(data_dir, split, dyadic)
        if not path.is_file():
            raise _missing_file(path, data_dir, split, dyadic)
        dropped[split] = Counter()
        out[split] = read_split(path, split, media_dir, repaired, dropped[split], dyadic)
    return Corpus(name="meld_dyadic" if dyadic else "meld", splits=out, labels=list(MELD_LABELS), dropped=dropped,
                  repaired={"mojibake": 0, **{k: v for k, v in repaired.items() if v}},
                  root=str(data_dir.resolve()))


def read_meld_dyadic(data_dir: str | Path, media_dir: str | Path | None = None,
                     splits: Iterable[str] = SPLITS) -> Corpus:
    """Read the dyadic MELD variant from ``data_dir/{split}_sent_emo_dya.csv`` (see the module docstring)."""
    return read_meld(data_dir, media_dir, splits, dyadic=True)
