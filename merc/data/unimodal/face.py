"""Facial expression corpora for the stage-2 face adapter, read by their release layouts and mapped onto the
seven MELD classes.

| corpus | layout | codes → MELD class | dropped |
|---|---|---|---|
| FER2013 (Goodfellow et al. 2013) | ``fer2013.csv``: emotion, pixels (2,304 grey values, 48×48), Usage (Training, PublicTest, PrivateTest) | 0 anger, 1 disgust, 2 fear, 3 joy, 4 sadness, 5 surprise, 6 neutral | usages not asked for (``usages=``) |
| RAF-DB basic (Li et al. 2017) | ``Image/aligned/train_00001_aligned.jpg`` (else ``Image/original/train_00001.jpg``) + ``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``) | 1 surprise, 2 fear, 3 disgust, 4 joy, 5 sadness, 6 anger, 7 neutral | listed images missing on disk |
| CK+ (Lucey et al. 2010) | ``cohn-kanade-images/S005/001/S005_001_00000011.png`` + ``Emotion/S005/001/S005_001_00000011_emotion.txt`` (one number) | 1 anger, 3 disgust, 4 fear, 5 joy, 6 sadness, 7 surprise; the last ``peak_frames`` (3) frames of a labelled sequence carry its label, its first frame is neutral (``neutral_first``) | 2 contempt (no MELD class), sequences without an emotion file (CK+ labels 327 of 593), sequences whose images are missing |
| JAFFE (Lyons et al. 1998) | ``KA.AN1.39.tiff``: poser . expression + take . image number | AN anger, DI disgust, FE fear, HA joy, NE neutral, SA sadness, SU surprise | — |

A file name that does not follow the convention, an unknown code, or a malformed label line raises
:class:`InputError` naming the file (and line). ``speaker`` is the poser / subject where the corpus
says so. :func:`load_face_image` gives any face item's image as a grey ``uint8`` array.
"""  # noqa: E501 (the mapping tables)
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from merc.data.unimodal.items import EmotionItem, ItemSet
from merc.errors import InputError, MissingFileError

FER2013_EMOTIONS = {0: "anger", 1: "disgust", 2: "fear", 3: "joy", 4: "sadness", 5: "surprise", 6: "neutral"}
FER2013_USAGES = ("Training", "PublicTest", "PrivateTest")
RAFDB_EMOTIONS = {1: "surprise", 2: "fear", 3: "disgust", 4: "joy", 5: "sadness", 6: "anger", 7: "neutral"}
CKPLUS_EMOTIONS = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "joy", 6: "sadness",
                   7: "surprise"}
JAFFE_EMOTIONS = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "joy", "NE": "neutral", "SA": "sadness",
                  "SU": "surprise"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}

_JAFFE = re.compile(r"^([A-Z]{2})\.([A-Z]{2})(\d+)\.(\d+)$")
_CK_FRAME = re.compile(r"^(S\d{3})_(\d{3})_(\d{8})$")
_CK_EMOTION = re.compile(r"^(S\d{3})_(\d{3})_(\d{8})_emotion$")


def load_face_image(item: EmotionItem) -> np.ndarray:
    """The item's image as a grey ``uint8`` array ``(h, w)`` (inline pixels or the file via Pillow)."""
    if item.pixels is not None:
        return np.asarray(item.pixels, dtype=np.uint8)
    from PIL import Image
    try:
        with Image.open(item.media) as im:
            return np.asarray(im.convert("L"))
    except (OSError, ValueError) as e:
        raise InputError(f"{item.media}: cannot read image of {item.item_id} ({e})") from None


def _root(root: str | Path, what: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise MissingFileError(f"{what} {root} does not exist")
    return root

# readers


def read_fer2013(root: str | Path, *, usages: tuple[str, ...] = FER2013_USAGES) -> ItemSet:
    """FER2013 ``fer2013.csv`` (a folder holding it, or the file); pixels are kept inline (48×48 uint8)."""
    import csv
    root = _root(root, "FER2013 folder")
    path = root if root.is_file() else root / "fer2013.csv"
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist (FER2013 is one file, fer2013.csv)")
    bad = [u for u in usages if u not in FER2013_USAGES]
    if bad:
        raise InputError(f"FER2013 usages {bad} unknown; expected some of {list(FER2013_USAGES)}")
    items, dropped = [], Counter()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not {"emotion", "pixels"} <= set(reader.fieldnames or []):
            raise InputError(f"{path}, line 1: header {reader.fieldnames}; expected emotion,pixels,Usage")
        for line, row in enumerate(reader, 2):
            usage = row.get("Usage") or "Training"
            try:
                code = int(row["emotion"])
                label = FER2013_EMOTIONS[code]
                px = np.array(row["pixels"].split(), dtype=np.int64)
            except (KeyError, ValueError, TypeError):
                raise InputError(f"{path}, line {line}: emotion {row.get('emotion')!r} not in 0-6 or pixels not "
                                 "integers") from None
            if px.size != 48 * 48 or px.min(initial=0) < 0 or px.max(initial=0) > 255:
                raise InputError(f"{path}, line {line}: {px.size} pixel values (expected 2,304 in 0-255)")
            if usage not in usages:
                dropped[f"usage {usage} not asked for"] += 1
                continue
            items.append(EmotionItem(f"fer2013:{line - 2:05d}", label, "fer2013", "face", media=str(path.resolve()),
                                     pixels=px.astype(np.uint8).reshape(48, 48), raw_label=str(code),
                                     meta={"usage": usage, "row": line - 2}))
    return ItemSet("fer2013", "face", items, dropped, str(path.parent))


def read_rafdb(root: str | Path) -> ItemSet:
    """RAF-DB basic: ``EmoLabel/list_patition_label.txt`` + ``Image/aligned`` (or ``Image/original``).

    ``root`` is the ``basic`` folder or its parent."""
    root = _root(root, "RAF-DB folder")
    if not (root / "EmoLabel").is_dir() and (root / "basic" / "EmoLabel").is_dir():
        root = root / "basic"
    path = root / "EmoLabel" / "list_patition_label.txt"
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist (RAF-DB basic: EmoLabel/list_patition_label.txt)")
    items, dropped = [], Counter()
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in RAFDB_EMOTIONS:
            raise InputError(f"{path}, line {line}: {raw!r}; expected '<image name> <label 1-7>'")
        name, code = parts[0], int(parts[1])
        stem = Path(name).stem
        candidates = [root / "Image" / "aligned" / f"{stem}_aligned.jpg", root / "Image" / "original" / name]
        img = next((c for c in candidates if c.is_file()), None)
        if img is None:
            dropped["image missing"] += 1
            continue
        split = "test" if stem.startswith("test") else "train"
        items.append(EmotionItem(f"rafdb:{stem}", RAFDB_EMOTIONS[code], "rafdb", "face", media=str(img.resolve()),
                                 raw_label=str(code), meta={"split": split}))
    return ItemSet("rafdb", "face", items, dropped, str(root))


def read_ckplus(root: str | Path, *, peak_frames: int = 3, neutral_first: bool = True) -> ItemSet:
    """CK+: ``cohn-kanade-images/<subject>/<sequence>/*.png`` and ``Emotion/<subject>/<sequence>/*_emotion.txt``."""
    root = _root(root, "CK+ folder")
    images, labels = root / "cohn-kanade-images", root / "Emotion"
    for d in (images, labels):
        if not d.is_dir():
            raise MissingFileError(f"{d} does not exist (CK+ layout: cohn-kanade-images/ and Emotion/)")
    if peak_frames < 1:
        raise InputError(f"peak_frames must be >= 1, got {peak_frames}")
    items, dropped = [], Counter()
    sequences = sorted(d for d in images.glob("*/*") if d.is_dir())
    for seq in sequences:
        frames = sorted(p for p in seq.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for p in frames:
            if not _CK_FRAME.match(p.stem):
                raise InputError(f"{p}: not a CK+ frame name (expected S005_001_00000001.png)")
        emo_files = sorted((labels / seq.parent.name / seq.name).glob("*.txt"))
        if not emo_files:
            dropped["sequence without emotion label"] += 1
            continue
        if not frames:
            dropped["labelled sequence without images"] += 1
            continue
        ef = emo_files[0]
        if not _CK_EMOTION.match(ef.stem):
            raise InputError(f"{ef}: not a CK+ emotion file name (expected S005_001_00000011_emotion.txt)")
        try:
            code = int(float(ef.read_text().strip()))
            label = CKPLUS_EMOTIONS[code]
        except (ValueError, KeyError):
            raise InputError(f"{ef}: content {ef.read_text()[:40]!r} is not a CK+ emotion code 0-7") from None
        if label == "contempt":
            dropped["contempt (no MELD class)"] += 1
            continue
        subject = seq.parent.name
        chosen = [(p, label, str(code)) for p in frames[-peak_frames:]]
        if neutral_first and len(frames) > peak_frames:
            chosen.insert(0, (frames[0], "neutral", "first frame"))
        for p, lab, raw in chosen:
            items.append(EmotionItem(f"ckplus:{p.stem}", lab, "ckplus", "face", media=str(p.resolve()), raw_label=raw,
                                     speaker=f"ckplus_{subject}", meta={"sequence": f"{subject}_{seq.name}"}))
    if not sequences:
        raise InputError(f"{images}: no <subject>/<sequence> folders found")
    return ItemSet("ckplus", "face", items, dropped, str(root))


def read_jaffe(root: str | Path) -> ItemSet:
    """JAFFE ``KA.AN1.39.tiff`` (poser . expression code + take . number); every .tiff/.tif under ``root``."""
    root = _root(root, "JAFFE folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".tiff", ".tif"))
    if not files:
        raise InputError(f"{root}: no .tiff files found for JAFFE")
    items = []
    for p in files:
        m = _JAFFE.match(p.stem)
        if not m:
            raise InputError(f"{p}: not a JAFFE name (expected poser.EXPRn.number.tiff, e.g. KA.AN1.39.tiff)")
        poser, code, _take, _num = m.groups()
        if code not in JAFFE_EMOTIONS:
            raise InputError(f"{p}: unknown JAFFE expression code {code!r} (expected one of {sorted(JAFFE_EMOTIONS)})")
        items.append(EmotionItem(f"jaffe:{p.stem}", JAFFE_EMOTIONS[code], "jaffe", "face", media=str(p.resolve()),
                                 raw_label=code, speaker=f"jaffe_{poser}"))
    return ItemSet("jaffe", "face", items, Counter(), str(root))
