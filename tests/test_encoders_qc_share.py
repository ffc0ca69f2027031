"""QC's speaker and face measurements seed the feature store: the resemblyzer/dlib features are not computed
twice, and agree with a fresh extraction up to the QC cache's rounding."""
from __future__ import annotations

import json

import numpy as np
import pytest

from merc.data.schema import Conversation, Corpus, Utterance
from merc.encoders.store import FeatureStore

synth = pytest.importorskip("merc.testing.synth")
pytest.importorskip("resemblyzer")
pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def qc_run(tmp_path_factory, espeak):
    from merc.qc.base import QCItem
    from merc.qc.cache import MeasureCache, measure_key
    from merc.qc.faces import FaceCheck
    from merc.qc.speaker import SpeakerIdentityCheck
    root = tmp_path_factory.mktemp("qcshare")
    faces = synth.face_images(2)
    utts = []
    for i, text in enumerate(["We were on a break!", "Could this be any more awkward?"]):
        wav = synth.speak(text, synth.VOICES[i], root / f"u{i}.wav")
        clip = synth.make_clip(wav, faces[i], root / f"u{i}.mp4")
        utts.append(Utterance(f"train_dia0_utt{i}", f"S{i}", text, audio=str(clip), video=str(clip)))
    utts.append(Utterance("train_dia0_utt2", "S0", "gone", audio=str(root / "nope.mp4"), video=str(root / "nope.mp4")))
    corpus = Corpus("toy", {"train": [Conversation("train_dia0", "train", utts)]}, ["neutral"])
    qc = root / "qc"
    items = [QCItem(u, "train_dia0", "train", u.audio, {"audio": u.audio, "video": u.video, "video_segment": None})
             for u in utts]
    tracks = {}
    for name, check in (("speaker", SpeakerIdentityCheck()), ("faces", FaceCheck())):
        cache = MeasureCache(qc / "cache" / f"{name}.jsonl")
        for it in items:
            res = check.measure(it)
            cache.append({"utterance_id": it.utterance_id, "media": it.media, "key": measure_key(check),
                          "seconds": 0.1, "result": res})
            if name == "faces" and res.get("tracks"):
                check._record(it.utterance_id, 0, res["tracks"][0], res, None, "unverified")
        cache.close()
        if name == "faces":
            tracks = check.speaker_tracks
    (qc / "speaker_tracks.json").write_text(json.dumps(tracks))
    return corpus, qc


@pytest.mark.slow
def test_qc_measurements_seed_the_store(qc_run, tmp_path):
    from merc.encoders.base import get_encoder
    from merc.qc.share import seed_store_from_qc
    corpus, qc = qc_run
    store = FeatureStore(tmp_path / "store")
    written = seed_store_from_qc(qc, corpus, "train", store=store)
    assert written == {"resemblyzer": 2, "dlib": 2}  # the missing clip is not seeded (cheap to find missing again)

    class Spy:  # any extraction would go through encode_batch
        calls = 0

    for name, modality, kw in (("resemblyzer", "audio", {}), ("dlib", "face", {"speaker_tracks": qc})):
        enc = get_encoder(name, modality, **kw)
        real = enc.encode_batch

        def spy(us, progress=False, real=real):
            Spy.calls += len(us)
            return real(us, progress=progress)

        enc.encode_batch = spy
        f = store.get(corpus, "train", enc, progress=False)
        fresh = get_encoder(name, modality, **kw).encode_batch(corpus.utterances("train"))
        assert f.present.tolist() == fresh.present.tolist() == [True, True, False]
        np.testing.assert_allclose(f.X, fresh.X, atol=5e-3)
        assert "missing" in f.reasons[2]
    assert Spy.calls == 2  # only the missing clip, once per encoder, was looked at by the encoders
    assert seed_store_from_qc(qc, corpus, "train", store=store) == {"resemblyzer": 0, "dlib": 0}  # already there


@pytest.mark.slow
def test_training_features_with_qc_dir_reuse_the_qc_descriptors(qc_run, tmp_path, monkeypatch):
    """corpus_features (merc extract / train --qc-dir) seeds the store from QC first: the dlib rows are QC's
    track descriptors as cached (rounded to 5 decimals), not a second extraction."""
    from merc.qc.cache import MeasureCache
    from merc.training.features import corpus_features
    corpus, qc = qc_run
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    feats, report, _ = corpus_features(corpus, ["train"], ["face"], {"face": ["dlib"]}, qc_dir=str(qc),
                                       progress=False)
    cached = MeasureCache(qc / "cache" / "faces.jsonl").load()
    for u in corpus.utterances("train")[:2]:
        want = np.asarray(cached[u.utterance_id]["result"]["tracks"][0]["embedding"], np.float32)
        np.testing.assert_array_equal(feats["train"]["face"][u.utterance_id], want)
    assert report["train"]["face"]["absent"] == 1  # the missing clip
