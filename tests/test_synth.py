"""The synthetic corpus builder: voices, faces, clips, and corpora in the MELD / IEMOCAP / JSONL layouts."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng not installed (apt-get install espeak-ng)", allow_module_level=True)

from merc.data import load_corpus  # noqa: E402
from merc.errors import MissingDependencyError  # noqa: E402
from merc.media import MediaError, load_audio, load_frames, probe  # noqa: E402
from merc.testing import synth  # noqa: E402
from merc.testing.synth import (  # noqa: E402
    FAULTS,
    VOICES,
    build_corpus_fixture,
    face_images,
    make_clip,
    no_face_image,
    sentence,
    speak,
)

ALL_FAULTS = {f: 1 for f in FAULTS}

pytestmark = pytest.mark.slow  # synthesizes speech, faces and clips


@pytest.fixture(scope="session")
def tts_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tts_cache")


@pytest.fixture(scope="session")
def meld_fixture(tmp_path_factory, tts_cache):
    return build_corpus_fixture(tmp_path_factory.mktemp("meld"), layout="meld", n_dialogues=4,
                                utts_per_dialogue=5, n_speakers=3, faults=ALL_FAULTS, seed=1,
                                too_long_seconds=40, cache_dir=tts_cache)


@pytest.fixture(scope="session")
def dlib_models():
    pytest.importorskip("dlib")
    models = synth._dlib_models()
    if models[2] is None:
        pytest.skip("face-recognition-models not installed")
    return models


def test_sentences_are_short_varied_english():
    rng = random.Random(0)
    texts = [sentence(rng) for _ in range(200)]
    lengths = [len(t.split()) for t in texts]
    assert min(lengths) >= 4 and max(lengths) <= 12
    assert len(set(lengths)) >= 5
    assert len(set(texts)) >= 190
    assert all(t[0].isupper() and t[-1] in ".?!" for t in texts)


def test_speak_writes_16k_mono_speech_and_caches(tmp_path, tts_cache, monkeypatch):
    out = speak("The doctor bought the red bicycle yesterday.", VOICES[0], tmp_path / "a.wav", cache_dir=tts_cache)
    info = probe(out)
    assert info.audio_rate == 16000 and not info.has_video
    assert 1.0 < info.duration < 6.0
    wav = load_audio(out)
    assert np.sqrt(np.mean(wav ** 2)) > 0.01
    # a cache hit needs no espeak-ng at all
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    again = speak("The doctor bought the red bicycle yesterday.", VOICES[0], tmp_path / "b.wav", cache_dir=tts_cache)
    assert again.read_bytes() == out.read_bytes()
    with pytest.raises(MissingDependencyError, match="espeak-ng"):
        speak("A sentence never synthesized before.", VOICES[0], tmp_path / "c.wav", cache_dir=tts_cache)


def test_first_voices_are_distinct_for_a_speaker_encoder(tmp_path, tts_cache):
    resemblyzer = pytest.importorskip("resemblyzer")
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is several times faster
    try:
        _check_voices(resemblyzer, tmp_path, tts_cache)
    finally:
        torch.set_num_threads(threads)


def _check_voices(resemblyzer, tmp_path, tts_cache):
    enc = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
    rng = random.Random(5)
    texts = [sentence(rng) for _ in range(2)]
    emb = {v: [enc.embed_utterance(resemblyzer.preprocess_wav(
        load_audio(speak(t, v, tmp_path / f"{i}_{k}.wav", cache_dir=tts_cache)), source_sr=16000))
        for k, t in enumerate(texts)] for i, v in enumerate(VOICES[:3])}
    for v, (a, b) in emb.items():
        same = float(a @ b)
        cross = max(float(a @ o) for w, es in emb.items() if w != v for o in es)
        assert same > cross + 0.05, (v, same, cross)


def test_face_images_have_exactly_one_face_each_and_differ(dlib_models):
    detector, shape, encoder = dlib_models
    faces = face_images(4)
    assert len(faces) == 4
    descriptors = []
    for img in faces:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        dets = detector(img, 1)
        assert len(dets) == 1
        descriptors.append(np.asarray(encoder.compute_face_descriptor(img, shape(img, dets[0]))))
    d = np.linalg.norm(np.array(descriptors)[:, None] - np.array(descriptors)[None], axis=-1)
    assert d[np.triu_indices(4, 1)].min() >= 0.6  # dlib's different-person threshold
    assert len(detector(no_face_image(), 1)) == 0


def test_clip_frames_keep_a_detectable_face(tmp_path, tts_cache, dlib_models):
    detector = dlib_models[0]
    wav = speak("Well, we fixed the picture in the garden.", VOICES[1], tmp_path / "s.wav", cache_dir=tts_cache)
    clip = make_clip(wav, face_images(2)[1], tmp_path / "c.mp4", fps=10)
    assert probe(clip).duration == pytest.approx(probe(wav).duration, abs=0.1)
    frames = load_frames(clip, fps=2)
    assert all(len(detector(f.image, 1)) == 1 for f in frames)


def test_meld_fixture_reads_back_with_labels_as_written(meld_fixture):
    fx = meld_fixture
    corpus = load_corpus("meld", fx.data_dir, fx.media_dir)
    utts = {u.utterance_id: u for s in corpus.splits for u in corpus.utterances(s)}
    assert set(utts) == set(fx.utterances) and len(utts) == 20
    assert {s: len(corpus.utterances(s)) for s in corpus.splits} == {"train": 10, "dev": 5, "test": 5}
    for uid, truth in fx.utterances.items():
        u = utts[uid]
        assert (u.speaker, u.text) == (truth.label_speaker, truth.label_text)
        assert Path(u.video) == Path(truth.media) and u.audio == u.video
        assert Path(u.video).name == f"dia{uid.split('_dia')[1].split('_')[0]}_utt{uid.rsplit('utt', 1)[1]}.mp4"
        assert u.start is not None and u.end > u.start
    assert sorted(fx.faults.values()) == sorted(FAULTS)
    assert set(fx.clean) == set(fx.utterances) - set(fx.faults)


def test_meld_fixture_faults_are_in_the_files(meld_fixture, dlib_models):
    fx = meld_fixture
    by_fault = {f: fx.utterances[u] for u, f in fx.faults.items()}
    assert not Path(by_fault["missing"].media).exists()
    with pytest.raises(MediaError):
        probe(by_fault["corrupt"].media)
    assert probe(by_fault["too_long"].media).duration > 40
    assert not probe(by_fault["no_audio"].media).has_audio
    assert np.abs(load_audio(by_fault["silent"].media)).max() < 0.01
    swapped = by_fault["swapped_speaker"]
    assert swapped.label_speaker != swapped.true_speaker
    wrong = by_fault["wrong_transcript"]
    assert wrong.label_text != wrong.true_text
    assert wrong.label_text in {t.true_text for t in fx.utterances.values()}
    detector = dlib_models[0]
    assert all(len(detector(f.image, 1)) == 0 for f in load_frames(by_fault["no_face"].media, fps=1))
    # clean clips: audio with speech, one face, each speaker with one voice
    for uid in fx.clean[:3]:
        t = fx.utterances[uid]
        assert np.sqrt(np.mean(load_audio(t.media) ** 2)) > 0.01
        assert len(detector(load_frames(t.media, fps=1, max_frames=1)[0].image, 1)) == 1
    voices = {}
    for t in fx.utterances.values():
        assert voices.setdefault(t.true_speaker, t.voice) == t.voice
    assert len(set(voices.values())) == len(voices)


def test_iemocap_fixture_reads_back(tmp_path, tts_cache):
    fx = build_corpus_fixture(tmp_path, layout="iemocap", n_dialogues=3, utts_per_dialogue=4,
                              faults={"swapped_speaker": 1, "corrupt": 1, "missing": 1}, seed=2, cache_dir=tts_cache)
    corpus = load_corpus("iemocap", fx.data_dir)
    utts = {u.utterance_id: u for s in corpus.splits for u in corpus.utterances(s)}
    assert set(utts) == set(fx.utterances) and len(utts) == 12
    assert len(corpus.utterances("test")) == 4  # the last dialogue is Session5
    for uid, truth in fx.utterances.items():
        assert utts[uid].speaker == truth.label_speaker == f"{uid[:5]}_{uid.rsplit('_', 1)[1][0]}"
        assert utts[uid].text == truth.label_text and Path(utts[uid].audio) == Path(truth.media)
    swapped = next(fx.utterances[u] for u, f in fx.faults.items() if f == "swapped_speaker")
    assert swapped.true_speaker != swapped.label_speaker
    missing = next(fx.utterances[u] for u, f in fx.faults.items() if f == "missing")
    assert not Path(missing.media).exists()
    with pytest.raises(ValueError, match="no_face"):
        build_corpus_fixture(tmp_path / "x", layout="iemocap", faults={"no_face": 1}, cache_dir=tts_cache)


def test_jsonl_fixture_reads_back(tmp_path, tts_cache):
    fx = build_corpus_fixture(tmp_path, layout="jsonl", n_dialogues=3, utts_per_dialogue=3, n_speakers=2,
                              faults={"wrong_transcript": 1}, seed=3, cache_dir=tts_cache)
    corpus = load_corpus("jsonl", fx.data_dir)
    utts = {u.utterance_id: u for s in corpus.splits for u in corpus.utterances(s)}
    assert set(utts) == set(fx.utterances) and len(utts) == 9
    for uid, truth in fx.utterances.items():
        assert Path(utts[uid].audio) == Path(truth.media) and Path(truth.media).exists()
    assert '"clips/' in (fx.data_dir / "train.jsonl").read_text()  # relative media paths


def test_bad_requests_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown fault"):
        build_corpus_fixture(tmp_path, faults={"garbled": 1}, cache_dir=None)
    with pytest.raises(ValueError, match="cannot inject"):
        build_corpus_fixture(tmp_path, n_dialogues=1, utts_per_dialogue=2, faults={"missing": 3}, cache_dir=None)
    with pytest.raises(ValueError, match="layout"):
        build_corpus_fixture(tmp_path, layout="csv", cache_dir=None)
