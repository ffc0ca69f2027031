"""A fault-injection QC corpus built from material the QC tests never use ("unseen" data).

The QC tests and ``benchmarks/bench_qc.py`` build their fixtures with :func:`merc.testing.synth.build_corpus_fixture`:
generated sentences from a fixed vocabulary, the eleven espeak-ng voices of ``merc.testing.synth.VOICES``, faces
from ``merc.testing.synth.face_images`` (scikit-image astronaut, matplotlib Grace Hopper, then the first LFW
faces) and scikit-image ``coffee()`` as the face-less scene. Thresholds tuned there can overfit that
material. This corpus swaps every ingredient:

* **sentences**: real MELD *train* utterances (``train_sent_emo.csv``: names, numbers, contractions,
  curly quotes, ellipses as the release writes them), whole dialogues among the six main characters;
* **voices**: six espeak-ng base voices + variants + pitch/speed that are not in ``synth.VOICES``;
* **faces**: scikit-image ``lfw_subset()`` faces from index 50 on (upscaled 8x), kept when dlib finds
  exactly one face and it is >= 0.6 from the faces already kept; ``rocket()`` as the face-less scene.

It is written in the MELD raw layout (``train_sent_emo.csv`` + ``train_splits/dia{D}_utt{U}.mp4``) with a
fraction of utterances faulted, spread evenly over :data:`merc.testing.synth.FAULTS`, and returns the ground
truth as a :class:`merc.testing.synth.Fixture`.

    fx = build_unseen_corpus("/tmp/unseen", meld_csv="../shared/data/meld/train_sent_emo.csv",
                             n_utterances=320, fault_rate=0.10)
"""
from __future__ import annotations

import csv
import random
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from merc.errors import InputError
from merc.testing.synth import (
    FAULTS,
    MELD_MEDIA,
    Fixture,
    FixtureUtterance,
    _write_meld,
    damage_media,
    distinct_faces,
    faulted_audio,
    lfw_faces,
    speak,
    write_faulted_clip,
)

MAIN_CAST = ("Chandler", "Monica", "Ross", "Rachel", "Joey", "Phoebe")
# (espeak-ng voice, pitch 0-99, words per minute): none of these is in merc.testing.synth.VOICES
UNSEEN_VOICES: dict[str, tuple[str, int, int]] = {
    "Chandler": ("en-us+m3", 45, 165), "Monica": ("en-gb-x-gbcwmd+f2", 65, 170),
    "Ross": ("en-029+m1", 35, 160), "Rachel": ("en-us+f3", 72, 175),
    "Joey": ("en-gb+m4", 25, 155), "Phoebe": ("en-gb-scotland+f5", 82, 180),
}
LFW_FIRST = 50  # the tests' face pool takes LFW faces greedily from index 0 and needs only a handful


def spread_faults(n_faults: int, kinds: list[str] | tuple[str, ...] = FAULTS) -> dict[str, int]:
    """``n_faults`` over ``kinds`` as evenly as possible (the first kinds get the remainder)."""
    base, extra = divmod(n_faults, len(kinds))
    return {k: base + (i < extra) for i, k in enumerate(kinds)}


@lru_cache(maxsize=2)
def unseen_faces(n: int) -> tuple[np.ndarray, ...]:
    """``n`` distinct faces from ``lfw_subset()[LFW_FIRST:100]`` (8x bicubic), one dlib detection each."""
    out = [img for _, img in distinct_faces(lfw_faces(LFW_FIRST), n)]
    if len(out) < n:
        raise InputError(f"only {len(out)} distinct LFW faces found after index {LFW_FIRST}; need {n}")
    return tuple(out)


def no_face_scene() -> np.ndarray:
    """scikit-image ``rocket()``: a scene without a face (the tests use ``coffee()``)."""
    from skimage import data
    return data.rocket().copy()


def read_meld_dialogues(meld_csv: str | Path, *, min_words: int = 3, max_words: int = 30,
                        cast: tuple[str, ...] = MAIN_CAST) -> list[list[dict]]:
    """MELD dialogues (csv order) whose speakers are all in ``cast``, as lists of rows ``{text, speaker,
    emotion}``; utterances of fewer than ``min_words`` or more than ``max_words`` words are left out."""
    meld_csv = Path(meld_csv)
    if not meld_csv.exists():
        raise InputError(f"{meld_csv}: no such MELD csv (expected MELD's train_sent_emo.csv)")
    dialogues: dict[str, list[dict]] = {}
    with open(meld_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            dialogues.setdefault(row["Dialogue_ID"], []).append(
                {"text": " ".join(row["Utterance"].split()), "speaker": row["Speaker"].strip(),
                 "emotion": row["Emotion"].strip()})
    out = []
    for rows in dialogues.values():
        if not all(r["speaker"] in cast for r in rows):
            continue
        rows = [r for r in rows if min_words <= len(r["text"].split()) <= max_words]
        if len({r["speaker"] for r in rows}) >= 2 and len(rows) >= 3:
            out.append(rows)
    return out


def build_unseen_corpus(root: str | Path, *, meld_csv: str | Path, n_utterances: int = 320,
                        fault_rate: float = 0.10, seed: int = 0, fps: int = 10, too_long_seconds: float = 40.0,
                        max_per_dialogue: int = 10, cache_dir: str | Path | None = None) -> Fixture:
    """Write the corpus under ``root/MELD`` (train split only) and return its ground truth.

    Dialogues are drawn at random (``seed``) from :func:`read_meld_dialogues` until ``n_utterances`` are
    reached (at most ``max_per_dialogue`` consecutive utterances each). Faults as in
    :func:`merc.testing.synth.build_corpus_fixture`: swapped_speaker (label names another speaker of the
    dialogue), wrong_transcript (label text is another utterance's), corrupt, missing, silent, too_long,
    no_face, no_audio; ``round(fault_rate * n)`` of them spread evenly over the kinds, on distinct utterances.
    """
    rng = random.Random(seed)
    root = Path(root)
    data_dir = root / "MELD"
    data_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir else None
    pool = read_meld_dialogues(meld_csv)
    rng.shuffle(pool)
    plan: list[dict] = []
    for d, rows in enumerate(pool):
        if len(plan) >= n_utterances:
            break
        start = rng.randrange(0, max(1, len(rows) - max_per_dialogue + 1))
        rows = rows[start:start + max_per_dialogue][: n_utterances - len(plan)]
        dia = {"split": "train", "d": d, "id": f"train_dia{d}", "speakers": sorted({r["speaker"] for r in rows})}
        for u, r in enumerate(rows):
            plan.append({"dia": dia, "u": u, "uid": f"train_dia{d}_utt{u}", "speaker": r["speaker"],
                         "text": r["text"], "emotion": r["emotion"]})
    if len(plan) < n_utterances:
        raise InputError(f"{meld_csv}: only {len(plan)} usable utterances, asked for {n_utterances}")
    counts = spread_faults(int(round(fault_rate * len(plan))))
    order = list(range(len(plan)))
    rng.shuffle(order)
    fault_of: dict[str, str] = {}
    for kind, n in counts.items():
        picked = [i for i in order if plan[i]["uid"] not in fault_of
                  and (kind != "swapped_speaker" or len(plan[i]["dia"]["speakers"]) >= 2)][:n]
        for i in picked:
            fault_of[plan[i]["uid"]] = kind
    texts = [r["text"] for r in plan]
    for row in plan:
        fault = row["fault"] = fault_of.get(row["uid"])
        row["label_speaker"], row["label_text"] = row["speaker"], row["text"]
        if fault == "swapped_speaker":
            row["label_speaker"] = rng.choice([s for s in row["dia"]["speakers"] if s != row["speaker"]])
        elif fault == "wrong_transcript":
            norm = row["text"].lower()
            row["label_text"] = rng.choice([t for t in texts if t.lower() != norm])

    faces = unseen_faces(len(MAIN_CAST))
    face_of = {s: i for i, s in enumerate(MAIN_CAST)}
    fixture = Fixture(root=root, layout="meld", data_dir=data_dir, media_dir=data_dir, faults=fault_of,
                      speakers={s: UNSEEN_VOICES[s][0] for s in MAIN_CAST})
    media_dir = data_dir / MELD_MEDIA["train"]
    media_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="merc_unseen_"))
    try:
        cursor: dict[str, float] = {}
        from tqdm.auto import tqdm
        for n, row in enumerate(tqdm(plan, desc="unseen corpus", unit="utt")):
            dia, fault = row["dia"], row["fault"]
            voice, pitch, speed = UNSEEN_VOICES[row["speaker"]]
            speech = speak(row["text"], voice, tmp / f"{n}.wav", cache_dir=cache, pitch=pitch, speed=speed)
            dur = sf.info(str(speech)).duration
            start = cursor.get(dia["id"], 1.0 + rng.random() * 5)
            row["start"], row["end"] = start, start + dur
            cursor[dia["id"]] = start + dur + 0.2 + rng.random()
            wav_in = faulted_audio(fault, speech, dur, tmp / f"{n}", seed=seed + n, too_long_seconds=too_long_seconds)
            media = media_dir / f"dia{dia['d']}_utt{row['u']}.mp4"
            face = face_of[row["speaker"]]
            if not write_faulted_clip(fault, wav_in, faces[face], no_face_scene(), media, dur, fps=fps):
                face = -1
            damage_media(fault, media, rng)
            row["media"] = str(media)
            fixture.utterances[row["uid"]] = FixtureUtterance(
                utterance_id=row["uid"], conversation_id=dia["id"], split="train", true_speaker=row["speaker"],
                label_speaker=row["label_speaker"], true_text=row["text"], label_text=row["label_text"],
                media=str(media), voice=voice, face=face, fault=fault)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _write_meld(data_dir, plan, rng)
    return fixture
