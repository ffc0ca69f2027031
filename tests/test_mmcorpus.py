"""The multimodal benchmark corpus generator (merc.testing.mmcorpus) on a tiny hand-made MELD-like CSV."""
from __future__ import annotations

import csv
import hashlib
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("dlib")
pytest.importorskip("skimage")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng not installed (apt-get install espeak-ng)", allow_module_level=True)

from merc.data import load_corpus  # noqa: E402
from merc.media import MediaError, load_audio, load_frames, probe  # noqa: E402
from merc.testing.expression import landmarks  # noqa: E402
from merc.testing.mmcorpus import PROSODY, MMCorpusConfig, generate, plan_corpus  # noqa: E402
from merc.testing.synth import MELD_COLUMNS  # noqa: E402

pytestmark = pytest.mark.slow  # media fixtures / several trainings: not in make test-fast

TEXTS = {"joy": "This is the best day of my whole life!", "sadness": "I miss her so much, it is over.",
         "anger": "Get out of my apartment right now!", "neutral": "The coffee house opens at nine.",
         "surprise": "Wait, you did what?", "fear": "Somebody is in the kitchen.", "disgust": "Ugh, that is gross."}


def write_meld_like(folder: Path, dialogues: dict[str, list[list[tuple[str, str]]]]) -> Path:
    """MELD CSVs: split -> dialogues -> (speaker, emotion) utterances (text from TEXTS)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, dias in dialogues.items():
        with open(folder / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(MELD_COLUMNS)
            n = 0
            for d, utts in enumerate(dias):
                for k, (spk, emo) in enumerate(utts):
                    n += 1
                    sent = {"joy": "positive", "surprise": "positive", "neutral": "neutral"}.get(emo, "negative")
                    w.writerow([n, TEXTS[emo], spk, emo, sent, d, k, 1, 2, f"00:00:{2 * k:02d},000",
                                f"00:00:{2 * k + 1:02d},500"])
    return folder


TINY = {"train": [[("Ross", "joy"), ("Rachel", "sadness"), ("Ross", "anger"), ("Rachel", "neutral")]],
        "dev": [[("Ross", "sadness"), ("Gunther", "joy"), ("Ross", "neutral")]],
        "test": [[("Rachel", "anger"), ("Ross", "surprise"), ("Rachel", "sadness")]]}
CFG = dict(train_dialogues=1, dev_dialogues=1, test_dialogues=1, signal=1.0, selection_tries=1)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_meld_like(tmp_path_factory.mktemp("meldlike"), TINY)


@pytest.fixture(scope="module")
def tts_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tts")


@pytest.fixture(scope="module")
def signal(tmp_path_factory, source, tts_cache):
    cfg = MMCorpusConfig(**CFG, defect_rate=0.4)  # 10 utterances: one of each defect kind
    return generate(tmp_path_factory.mktemp("signal"), source, cfg, workers=2, cache_dir=tts_cache, progress=False)


@pytest.fixture(scope="module")
def control(tmp_path_factory, source, tts_cache):
    cfg = MMCorpusConfig(**CFG, control=True, defect_rate=0.0, seed=3)
    return generate(tmp_path_factory.mktemp("control"), source, cfg, workers=1, cache_dir=tts_cache, progress=False)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".mmcorpus" not in p.parts
            and p.name not in ("mmcorpus.json",)}


def _rms(path: str) -> float:
    return float(np.sqrt(np.mean(load_audio(path, sr=16000) ** 2)))


def test_reads_as_meld_with_media(signal):
    corpus = load_corpus("meld", signal.root, media_dir=signal.root)
    got = {s: [(u.speaker, u.emotion) for c in convs for u in c.utterances] for s, convs in corpus.splits.items()}
    assert got == {s: [u for d in dias for u in d] for s, dias in TINY.items()}
    assert corpus.splits["train"][0].utterances[0].text == TEXTS["joy"]
    defects = {r["uid"]: r["defect"] for r in signal.records}
    assert sorted(d for d in defects.values() if d) == ["corrupt", "missing", "no_audio", "no_face"]
    for conv in corpus.splits.values():
        for u in conv[0].utterances:
            assert u.video == u.audio and Path(u.video).name.startswith("dia0_utt")
            assert Path(u.video).exists() == (defects[u.utterance_id] != "missing")
            if defects[u.utterance_id] is None:
                info = probe(u.video)
                assert info.has_audio and info.has_video and (info.width, info.height) == (224, 224)
                rec = next(r for r in signal.records if r["uid"] == u.utterance_id)
                assert abs(info.duration - rec["duration"]) < 0.5  # clip length = speech length


def test_defects_are_what_they_claim(signal):
    by = {r["defect"]: signal.root / r["clip"] for r in signal.records if r["defect"]}
    assert not by["missing"].exists()
    with pytest.raises(MediaError):
        load_audio(by["corrupt"])
    assert not probe(by["no_audio"]).has_audio and probe(by["no_audio"]).has_video
    frames = load_frames(by["no_face"], fps=1.0)
    assert frames and all(f.image.mean() < 5 for f in frames) and landmarks(frames[0].image) is None
    assert probe(by["no_face"]).has_audio
    # a clean clip shows a face
    clean = next(signal.root / r["clip"] for r in signal.records if r["defect"] is None)
    assert landmarks(load_frames(clean, fps=1.0)[0].image) is not None


def test_same_seed_same_files_and_resume(signal, source, tts_cache, tmp_path):
    again = generate(tmp_path / "again", source, MMCorpusConfig(**CFG, defect_rate=0.4), workers=1,
                     cache_dir=tts_cache, progress=False)
    assert _files(again.root) == _files(signal.root)
    # resume: nothing is rewritten; a deleted clip is made again, byte for byte
    clip = next(again.root / r["clip"] for r in again.records if r["defect"] is None)
    before = {p: p.stat().st_mtime_ns for p in again.root.rglob("*.mp4")}
    clip.unlink()
    generate(again.root, source, MMCorpusConfig(**CFG, defect_rate=0.4), workers=1, cache_dir=tts_cache,
             progress=False)
    after = {p: p.stat().st_mtime_ns for p in again.root.rglob("*.mp4")}
    assert {p for p in after if after[p] != before.get(p)} == {clip}
    assert _files(again.root) == _files(signal.root)


def test_signal_prosody_and_face_follow_labels(signal):
    for r in signal.records:
        assert r["audio_emotion"] == r["emotion"] and r["face_emotion"] == r["emotion"]  # signal = 1.0
        amp, _, _ = PROSODY[r["emotion"]]
        assert r["espeak"]["a"] == amp
    # measured: angry/joyful speech is louder than sad speech of the same speakers
    ok = [r for r in signal.records if r["defect"] not in ("missing", "corrupt", "no_audio")]
    loud = [_rms(signal.root / r["clip"]) for r in ok if r["emotion"] in ("anger", "joy")]
    quiet = [_rms(signal.root / r["clip"]) for r in ok if r["emotion"] == "sadness"]
    assert loud and quiet and min(loud) > 2 * max(quiet)
    # the face differs from the neutral photo of the same speaker
    def frame(r):
        return load_frames(signal.root / r["clip"], fps=1.0)[0].image.astype(float)
    ross = {r["emotion"]: r for r in ok if r["speaker"] == "Ross" and r["defect"] is None}
    assert np.abs(frame(ross["joy"]) - frame(ross["neutral"])).mean() > 1.0


def test_control_cues_ignore_labels_but_keep_their_distribution(source, tmp_path):
    # a bigger plan (no clips): 4 labels x 15 utterances
    emos = ["joy", "sadness", "anger", "neutral"] * 15
    random.Random(0).shuffle(emos)
    big = write_meld_like(tmp_path / "big", {s: [[("Ross" if i % 2 else "Monica", e) for i, e in
                                                  enumerate(emos[j:j + 10])] for j in range(0, 60, 10)]
                                             for s in ("train", "dev", "test")})
    n = dict(train_dialogues=6, dev_dialogues=6, test_dialogues=6)
    sig = plan_corpus(big, MMCorpusConfig(**n, signal=1.0))
    ctl = plan_corpus(big, MMCorpusConfig(**n, signal=1.0, control=True))
    for split in ("train", "dev", "test"):
        s = [p for p in sig if p["split"] == split]
        c = [p for p in ctl if p["split"] == split]
        labels = Counter(p["emotion"] for p in s)
        assert Counter(p["audio_emotion"] for p in c) == labels == Counter(p["face_emotion"] for p in c)
        assert all(p["audio_emotion"] == p["emotion"] for p in s)
        assert np.mean([p["audio_emotion"] == p["emotion"] for p in c]) < 0.5  # chance is 0.25
    # partial signal: the rest is neutral, in both modes
    part = plan_corpus(big, MMCorpusConfig(**n, signal=0.5))
    match = np.mean([p["audio_emotion"] == p["emotion"] for p in part if p["emotion"] != "neutral"])
    assert 0.3 < match < 0.7
    assert all(p["audio_emotion"] in (p["emotion"], "neutral") for p in part)


def test_control_measured_loudness_follows_the_cue_not_the_label(control):
    ok = [r for r in control.records if r["defect"] is None]
    assert any(r["audio_emotion"] != r["emotion"] for r in ok)
    amps = np.array([r["espeak"]["a"] for r in ok])
    rms = np.array([_rms(control.root / r["clip"]) for r in ok])
    from scipy.stats import spearmanr
    assert spearmanr(amps, rms).correlation > 0.8
