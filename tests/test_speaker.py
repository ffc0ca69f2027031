"""Speaker encoder (resemblyzer) and the speaker-identity QC check, on espeak-ng fixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from merc.data.schema import Utterance
from merc.qc.base import QCItem
from merc.qc.speaker import SpeakerCheckConfig, SpeakerIdentityCheck, cosine_centroid, robust_centroid

pytest.importorskip("resemblyzer")
synth = pytest.importorskip("merc.testing.synth")


# helpers

pytestmark = pytest.mark.slow  # speaker embeddings of synthesized speech (resemblyzer)

def item(uid: str, speaker: str, media: str | None, conv: str = "c0") -> QCItem:
    u = Utterance(uid, speaker, "text", audio=media if media and media.endswith(".wav") else None,
                  video=media if media and media.endswith(".mp4") else None)
    return QCItem(u, conv, "train", media, {"audio": u.audio, "video": u.video, "video_segment": None})


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# fixtures

@pytest.fixture(scope="session")
def corpus(tmp_path_factory, espeak):
    """A 2-dialogue JSONL corpus (mp4 clips, 3 espeak voices), one swapped-speaker label, plus a
    speaker with a single utterance (new voice, wav), a missing file and a silent wav; all measured once."""
    root = tmp_path_factory.mktemp("spk")
    fx = synth.build_corpus_fixture(root, layout="jsonl", n_dialogues=2, utts_per_dialogue=7, n_speakers=3,
                                    faults={"swapped_speaker": 1}, seed=3, cache_dir=None)
    items = [item(u.utterance_id, u.label_speaker, u.media, u.conversation_id) for u in fx.utterances.values()]
    lone = synth.speak("Could I get you guys some more coffee?", synth.VOICES[6], root / "gunther.wav")
    silent = synth.silence(1.5, root / "silent.wav", noise=0.0)
    extra = [item("lone_u0", "Gunther", str(lone)), item("missing_u0", fx.utterances["c0_u0"].label_speaker,
                                                         str(root / "nope.mp4")),
             item("silent_u0", fx.utterances["c0_u1"].label_speaker, str(silent))]
    check = SpeakerIdentityCheck()
    meas = {it.utterance_id: check.measure(it) for it in items + extra}
    return fx, items, extra, check, meas


# encoder

def test_encoder_embeds_and_rejects_silence() -> None:
    from merc.encoders.speaker import AudioTooShortError, get_speaker_embedder
    enc = get_speaker_embedder()
    assert enc is get_speaker_embedder() and enc.dim == 256 and enc.fingerprint.startswith("resemblyzer-")
    with pytest.raises(AudioTooShortError, match="silent"):
        enc.embed(np.zeros(16000, np.float32))
    with pytest.raises(AudioTooShortError, match="too short"):
        enc.embed(np.full(800, 0.1, np.float32))
    with pytest.raises(AudioTooShortError, match="too little speech"):  # faint noise: VAD finds no speech
        enc.embed((np.random.default_rng(0).standard_normal(16000) * 2e-3).astype(np.float32))


@pytest.mark.slow
def test_same_voice_closer_than_other_voices(corpus) -> None:
    fx, items, _, _, meas = corpus
    clean = [u for u in fx.clean]
    emb = {u: np.asarray(meas[u]["embedding"]) for u in clean}
    for e in emb.values():
        assert e.shape == (256,) and abs(np.linalg.norm(e) - 1) < 1e-4
    voice = {u: fx.utterances[u].voice for u in clean}
    same = [emb[a] @ emb[b] for a in clean for b in clean if a < b and voice[a] == voice[b]]
    diff = [emb[a] @ emb[b] for a in clean for b in clean if a < b and voice[a] != voice[b]]
    print(f"\nresemblyzer cos, same voice: {min(same):.3f}-{max(same):.3f}; "
          f"different voices: {min(diff):.3f}-{max(diff):.3f}")
    assert np.mean(same) > np.mean(diff) + 0.05
    for u in clean:  # every utterance is nearest (on average) to the other utterances of its own voice
        by_voice: dict[str, list[float]] = {}
        for v in clean:
            if v != u:
                by_voice.setdefault(voice[v], []).append(float(emb[u] @ emb[v]))
        means = {k: np.mean(c) for k, c in by_voice.items()}
        assert max(means, key=means.get) == voice[u], (u, means)


# judge logic on synthetic embeddings (no model)

def test_robust_centroid_ignores_outliers() -> None:
    rng = np.random.default_rng(0)
    inl = rng.normal(0, 0.1, (14, 8)) + 1.0
    out = rng.normal(0, 0.1, (6, 8)) - 3.0
    x = np.vstack([inl, out])
    c = robust_centroid(x, trim=0.3, iters=3)
    assert np.linalg.norm(c - inl.mean(0)) < 0.1 < np.linalg.norm(x.mean(0) - inl.mean(0))
    u = cosine_centroid(x)
    assert abs(np.linalg.norm(u) - 1) < 1e-9


def test_judge_synthetic_embeddings() -> None:
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((3, 256)))
    names = ["Ross", "Joey", "Rachel"]
    items, meas = [], {}
    for k, name in enumerate(names):
        for j in range(5):
            uid = f"{name}_{j}"
            items.append(item(uid, name, f"/x/{uid}.wav"))
            meas[uid] = {"embedding": unit(centres[k] + 0.03 * rng.standard_normal(256)).tolist()}
    items.append(item("wrong", "Joey", "/x/w.wav"))  # Ross's voice, labelled Joey
    meas["wrong"] = {"embedding": unit(centres[0] + 0.03 * rng.standard_normal(256)).tolist()}
    items.append(item("odd", "Rachel", "/x/o.wav"))  # nobody's voice
    meas["odd"] = {"embedding": unit(rng.standard_normal(256)).tolist()}
    items += [item("few_0", "Gunther", "/x/g0.wav"), item("few_1", "Gunther", "/x/g1.wav"),
              item("bad", "Ross", "/x/b.wav")]
    meas["few_0"] = {"embedding": unit(rng.standard_normal(256)).tolist()}
    meas["few_1"] = {"embedding": unit(rng.standard_normal(256)).tolist()}
    meas["bad"] = {"error": "missing file /x/b.wav"}
    flags = {f.utterance_id: f for f in SpeakerIdentityCheck(SpeakerCheckConfig(min_utts=3)).judge(items, meas)}
    assert len(flags) == len(items)
    wrong = flags["wrong"]
    assert not wrong.passed and "matches 'Ross'" in wrong.reason and "labelled 'Joey'" in wrong.reason
    assert not flags["odd"].passed and "far from" in flags["odd"].reason
    for uid in ("few_0", "few_1"):
        assert flags[uid].passed and "not judged" in flags[uid].reason and "Gunther" in flags[uid].reason
    assert not flags["bad"].passed and "missing file" in flags["bad"].reason
    assert all(flags[f"{n}_{j}"].passed for n in names for j in range(5))


def test_rivals_per_conversation() -> None:
    """With rivals="conversation", only speakers labelled in the same conversation are candidates."""
    rng = np.random.default_rng(2)
    centres = unit(rng.standard_normal((3, 256)))
    items, meas = [], {}
    for k, (name, conv) in enumerate([("A", "c0"), ("B", "c0"), ("C", "c1")]):
        for j in range(4):
            uid = f"{name}{j}"
            items.append(item(uid, name, f"/x/{uid}.wav", conv))
            meas[uid] = {"embedding": unit(centres[k] + 0.03 * rng.standard_normal(256)).tolist()}
    items.append(item("x", "A", "/x/x.wav", "c0"))  # C's voice in c0, labelled A
    meas["x"] = {"embedding": unit(centres[2] + 0.03 * rng.standard_normal(256)).tolist()}
    corpus_wide = {f.utterance_id: f for f in SpeakerIdentityCheck().judge(items, meas)}
    local_check = SpeakerIdentityCheck(SpeakerCheckConfig(rivals="conversation"))
    local = {f.utterance_id: f for f in local_check.judge(items, meas)}
    assert "matches 'C'" in corpus_wide["x"].reason
    assert not local["x"].passed and "far from" in local["x"].reason and "'C'" not in local["x"].reason


# the check on real media

@pytest.mark.slow
def test_check_flags_swapped_speaker(corpus) -> None:
    fx, items, extra, check, meas = corpus
    flags = {f.utterance_id: f for f in check.judge(items + extra, meas)}
    assert len(flags) == len(items) + len(extra)
    (swapped,) = [u for u, f in fx.faults.items() if f == "swapped_speaker"]
    truth = fx.utterances[swapped]
    f = flags[swapped]
    assert not f.passed
    assert f"voice matches {truth.true_speaker!r}" in f.reason and f"labelled {truth.label_speaker!r}" in f.reason
    clean = [flags[u] for u in fx.clean]
    assert all(c.passed for c in clean), [c.reason for c in clean if not c.passed]
    own = [c.score for c in clean]
    print(f"\nspeaker check: clean cos to own centroid {min(own):.3f}-{max(own):.3f}; swapped {swapped}: {f.reason}")
    assert f.score < min(own)
    lone = flags["lone_u0"]
    assert lone.passed and "not judged" in lone.reason and "'Gunther'" in lone.reason
    assert not flags["missing_u0"].passed and "missing file" in flags["missing_u0"].reason
    assert not flags["silent_u0"].passed and "silent" in flags["silent_u0"].reason


@pytest.mark.slow
def test_measure_never_raises_on_bad_media(corpus, tmp_path: Path) -> None:
    _, _, _, check, meas = corpus
    assert "error" in meas["missing_u0"] and "nope.mp4" in meas["missing_u0"]["error"]
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 50)
    for it in (item("junk", "A", str(junk)), item("none", "A", None)):
        m = check.measure(it)
        assert set(m) >= {"error"} and "embedding" not in m


def test_leave_one_out_centroids_exact_and_fast_paths_agree() -> None:
    from merc.qc.speaker import leave_one_out_centroids
    rng = np.random.default_rng(4)
    x = np.vstack([rng.normal(1.0, 0.2, (90, 16)), rng.normal(-2.0, 0.2, (10, 16))])
    exact = leave_one_out_centroids(x, trim=0.2, exact_max=1000)
    fast = leave_one_out_centroids(x, trim=0.2, exact_max=10)
    assert exact.shape == fast.shape == (100, 16)
    assert np.abs(exact - fast).max() < 0.02
    for i in (0, 95):  # the exact path really leaves row i out
        assert np.allclose(exact[i], robust_centroid(np.delete(x, i, axis=0), trim=0.2))


def test_media_segment_only_for_shared_recordings() -> None:
    from merc.qc.speaker import media_segment
    u = Utterance("Ses01F_impro01_F000", "Ses01_F", "Hi.", start=6.29, end=8.24,
                  audio="/d/F000.wav", video="/d/Ses01F_impro01.avi")
    it = QCItem(u, "Ses01F_impro01", "train", u.audio,
                {"audio": u.audio, "video": u.video, "video_segment": [6.29, 8.24]})
    assert media_segment(it, u.video) == (6.29, 8.24)  # the dialogue video: cut the turn
    assert media_segment(it, u.audio) == (None, None)  # the turn wav: whole file


@pytest.mark.slow
def test_embed_batch_equals_embed_one_by_one(corpus) -> None:
    """The batched forward (all partial windows of many utterances at once, split into chunks) gives the vectors of
    ``embed`` one by one, and hands back the same error for a bad utterance without spoiling the others."""
    from merc.encoders.speaker import AudioTooShortError, get_speaker_embedder
    from merc.media.clip import open_clip
    _, items, _, _, _ = corpus
    enc = get_speaker_embedder()
    wavs = [open_clip(it.media).audio(16000) for it in items[:6]]
    wavs.insert(2, np.zeros(16000, np.float32))  # silent: its own error, the rest still embedded
    wavs.append(np.concatenate(wavs[:2]))  # a longer clip: more partial windows
    ref = [enc.embed(w) if i != 2 else None for i, w in enumerate(wavs)]
    for max_partials in (256, 3):  # one forward, and partial windows split across forwards mid-utterance
        got = enc.embed_batch(wavs, max_partials=max_partials)
        assert isinstance(got[2], AudioTooShortError) and "silent" in str(got[2])
        for i, (r, g) in enumerate(zip(ref, got)):
            if r is not None:
                assert g.shape == (256,) and g.dtype == np.float32
                np.testing.assert_allclose(g, r, atol=1e-5, err_msg=f"utterance {i}")
    assert enc.embed_batch([]) == []


@pytest.mark.slow
def test_prepared_measurements_and_flags_equal_one_by_one(corpus) -> None:
    """``prepare`` (one batched forward for the batch) changes neither the measurements nor the flags."""
    _, items, extra, check, meas = corpus
    fast = SpeakerIdentityCheck()
    fast.prepare(items + extra)
    assert fast._prepared  # the batch was embedded ahead, not left to measure()
    got = {it.utterance_id: fast.measure(it) for it in items + extra}
    assert not fast._prepared  # every prepared vector was used
    for uid, m in meas.items():
        assert set(got[uid]) == set(m), uid
        if "embedding" in m:
            np.testing.assert_allclose(got[uid]["embedding"], m["embedding"], atol=1e-5, err_msg=uid)
            assert got[uid]["seconds"] == m["seconds"]
        else:
            assert got[uid] == m, uid
    ref = {f.utterance_id: (f.passed, f.weak, f.reason) for f in check.judge(items + extra, meas)}
    new = {f.utterance_id: (f.passed, f.weak, f.reason) for f in fast.judge(items + extra, got)}
    assert new == ref
