"""Text emotion corpora for the stage-2 text adapter, mapped onto the seven MELD classes.

Layouts are those of ``../shared/data`` (see each folder's SOURCE.md), which are the public releases:

- **GoEmotions** (Demszky et al., ACL 2020): ``{train,dev,test}.tsv`` (text, comma-separated label ids,
  comment id; no header; quoted fields — parsed with :mod:`csv`), ``emotions.txt`` (the 28 label names,
  read when present) and ``ekman_mapping.json`` (read when present, else the copy below).
- **CrowdFlower** "Sentiment Analysis in Text": ``text_emotion.csv`` (tweet_id, sentiment, author, content).
- **ISEAR** (Scherer & Wallbott): ``isear.csv`` (the py_isear_dataset export: ``|``-separated, SIT may
  contain ``|``) or ``isear_text_emotion.csv`` (id, emotion, text, text_raw).

Mapping onto MELD (anger, disgust, fear, joy, neutral, sadness, surprise):

| corpus | MELD class ← corpus labels | dropped |
|---|---|---|
| GoEmotions | Ekman grouping: anger ← anger, annoyance, disapproval; disgust ← disgust; fear ← fear, nervousness; joy ← joy, amusement, approval, excitement, gratitude, love, optimism, relief, pride, admiration, desire, caring; sadness ← sadness, disappointment, embarrassment, grief, remorse; surprise ← surprise, realization, confusion, curiosity; neutral ← neutral | rows whose labels map to two or more classes (7,102 + 878 + 837 multi-label rows include them; neutral + an emotion counts as two) |
| CrowdFlower | anger ← anger, hate; fear ← worry; joy ← happiness, love, fun, relief, enthusiasm; neutral ← neutral; sadness ← sadness; surprise ← surprise | empty (827), boredom (179): no MELD class fits |
| ISEAR | anger, disgust, fear, joy, sadness ← themselves | shame, guilt (no MELD class); non-answers ("[ No response.]", "NO RESPONSE.", "Nothing.", …) |

Multi-label GoEmotions rows whose labels all fall in one Ekman class are kept (e.g. joy + love → joy);
rows spanning classes are dropped rather than duplicated or resolved by a guess. Every reader also
drops empty texts. All drops are counted by reason in the returned :class:`ItemSet`.

Reference: Wang & Beigi, "Quality-Controlled Multimodal Emotion Recognition in Conversations with
Identity-Based Transfer Learning and MAMBA Fusion" (stage 2: a balanced ≈6.2k-per-emotion text sample).
"""  # noqa: E501 (the mapping tables)
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

from merc.data.unimodal.items import EmotionItem, ItemSet
from merc.errors import InputError, MissingFileError

GOEMOTIONS_LABELS = ["admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
                     "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
                     "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
                     "remorse", "sadness", "surprise", "neutral"]
GOEMOTIONS_EKMAN = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": ["joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief", "pride",
            "admiration", "desire", "caring"],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
}
CROWDFLOWER_MAP: dict[str, str | None] = {
    "anger": "anger", "hate": "anger", "worry": "fear", "happiness": "joy", "love": "joy", "fun": "joy",
    "relief": "joy", "enthusiasm": "joy", "neutral": "neutral", "sadness": "sadness", "surprise": "surprise",
    "empty": None, "boredom": None,
}
ISEAR_MAP: dict[str, str | None] = {"anger": "anger", "disgust": "disgust", "fear": "fear", "joy": "joy",
                                    "sadness": "sadness", "shame": None, "guilt": None}
# ISEAR answers that describe no situation
_ISEAR_NON_ANSWER = re.compile(r"^\s*(\[.*\]|no response\.?|nothing\.?|none\.?|not applicable\.?|doesn't apply\.?"
                               r"|can't think of any\.?|never (felt|experienced).*)\s*$", re.IGNORECASE)

TEXT_READERS = ("goemotions", "crowdflower", "isear")

# helpers


def _file(root: Path, *names: str) -> Path:
    """``root`` itself when it is a file, else the first of ``names`` inside it."""
    if root.is_file():
        return root
    if not root.is_dir():
        raise MissingFileError(f"{root} does not exist")
    for n in names:
        if (root / n).is_file():
            return root / n
    raise MissingFileError(f"{root} holds none of {list(names)}")


def _clean_isear(text: str) -> str:
    return " ".join(text.replace("á", " ").replace("|", " ").replace("\\", "").split())

# readers


def read_goemotions(root: str | Path, *, splits: tuple[str, ...] = ("train", "dev", "test")) -> ItemSet:
    """GoEmotions rows whose labels fall in exactly one Ekman class (+ neutral); see the module table."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"GoEmotions folder {root} does not exist")
    names = GOEMOTIONS_LABELS
    if (root / "emotions.txt").is_file():
        names = [ln.strip() for ln in (root / "emotions.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    ekman = GOEMOTIONS_EKMAN
    if (root / "ekman_mapping.json").is_file():
        ekman = json.loads((root / "ekman_mapping.json").read_text(encoding="utf-8"))
    to_class = {fine: coarse for coarse, fines in ekman.items() for fine in fines}
    to_class["neutral"] = "neutral"
    unmapped = [n for n in names if n not in to_class]
    if unmapped:
        raise InputError(f"{root}: GoEmotions labels {unmapped} have no class in the Ekman mapping")
    items, dropped = [], Counter()
    for split in splits:
        path = root / f"{split}.tsv"
        if not path.is_file():
            raise MissingFileError(f"GoEmotions split file {path} does not exist (splits asked: {list(splits)})")
        with open(path, encoding="utf-8", newline="") as f:
            for line, row in enumerate(csv.reader(f, delimiter="\t"), 1):
                if len(row) != 3:
                    raise InputError(f"{path}, line {line}: {len(row)} fields, expected 3 (text, label ids, id)")
                text, ids, cid = row
                try:
                    fine = [names[int(i)] for i in ids.split(",")]
                except (ValueError, IndexError):
                    raise InputError(f"{path}, line {line}: label ids {ids!r} are not comma-separated integers "
                                     f"in 0..{len(names) - 1}") from None
                classes = sorted({to_class[x] for x in fine})
                if not text.strip():
                    dropped["empty text"] += 1
                elif len(classes) > 1:
                    dropped["labels map to 2+ classes"] += 1
                else:
                    items.append(EmotionItem(f"goemotions:{cid}", classes[0], "goemotions", "text", text=text.strip(),
                                             raw_label=",".join(fine), meta={"split": split}))
    return ItemSet("goemotions", "text", items, dropped, str(root))


def read_crowdflower(root: str | Path) -> ItemSet:
    """CrowdFlower ``text_emotion.csv`` (a folder holding it, or the file)."""
    path = _file(Path(root), "text_emotion.csv")
    items, dropped = [], Counter()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"tweet_id", "sentiment", "content"}
        if not need <= set(reader.fieldnames or []):
            raise InputError(f"{path}: header {reader.fieldnames} lacks {sorted(need - set(reader.fieldnames or []))}")
        for line, row in enumerate(reader, 2):
            raw = (row["sentiment"] or "").strip()
            if raw not in CROWDFLOWER_MAP:
                raise InputError(f"{path}, line {line}: unknown sentiment {raw!r}; expected one of "
                                 f"{sorted(CROWDFLOWER_MAP)}")
            label, text = CROWDFLOWER_MAP[raw], (row["content"] or "").strip()
            if label is None:
                dropped[f"label {raw} (no MELD class)"] += 1
            elif not text:
                dropped["empty text"] += 1
            else:
                items.append(EmotionItem(f"crowdflower:{row['tweet_id']}", label, "crowdflower", "text", text=text,
                                         raw_label=raw, speaker=row.get("author")))
    return ItemSet("crowdflower", "text", items, dropped, str(path.parent))


def _isear_rows(path: Path):
    """(line, id, label, text) from either ISEAR file format."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.name == "isear_text_emotion.csv" or f.readline().startswith("id,"):
            f.seek(0)
            for line, row in enumerate(csv.DictReader(f), 2):
                yield line, row["id"], row["emotion"], row["text"]
            return
        f.seek(0)
        header = f.readline().rstrip("\r\n").split("|")
        try:
            i_lab, i_key = header.index("Field1"), header.index("MYKEY")
        except ValueError:
            raise InputError(f"{path}, line 1: header lacks Field1/MYKEY; expected the py_isear_dataset "
                             "isear.csv ('|'-separated, 43 fields)") from None
        n = len(header)
        for line, raw in enumerate(f, 2):
            parts = raw.rstrip("\r\n").split("|")
            if len(parts) < n:
                raise InputError(f"{path}, line {line}: {len(parts)} '|'-separated fields, expected at least {n}")
            sit = "|".join(parts[n - 3:len(parts) - 2])  # SIT may contain '|': it spans what the 40 + 2 leave
            yield line, parts[i_key], parts[i_lab], _clean_isear(sit)


def read_isear(root: str | Path) -> ItemSet:
    """ISEAR (``isear.csv`` preferred, else ``isear_text_emotion.csv``; or either file)."""
    path = _file(Path(root), "isear.csv", "isear_text_emotion.csv")
    items, dropped = [], Counter()
    for line, key, raw, text in _isear_rows(path):
        raw = raw.strip().lower()
        if raw not in ISEAR_MAP:
            raise InputError(f"{path}, line {line}: unknown emotion {raw!r}; expected one of {sorted(ISEAR_MAP)}")
        label, text = ISEAR_MAP[raw], text.strip()
        if label is None:
            dropped[f"label {raw} (no MELD class)"] += 1
        elif not text:
            dropped["empty text"] += 1
        elif _ISEAR_NON_ANSWER.match(text):
            dropped["non-answer"] += 1
        else:
            items.append(EmotionItem(f"isear:{key}", label, "isear", "text", text=text, raw_label=raw))
    return ItemSet("isear", "text", items, dropped, str(path.parent))
