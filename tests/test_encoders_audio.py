"""Audio encoders on espeak-ng fixture media: shape, determinism, fingerprints, absent clips with reasons."""
from __future__ import annotations

import numpy as np
import pytest

from merc.data.schema import Utterance
from merc.encoders.base import get_encoder
from merc.errors import MissingDependencyError

pytestmark = pytest.mark.slow  # media fixtures / several trainings: not in make test-fast

synth = pytest.importorskip("merc.testing.synth")
pytest.importorskip("opensmile")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, espeak):
    """Two voices in mp4 and wav, a video-only clip, a truncated clip, a missing file, a silent wav."""
    root = tmp_path_factory.mktemp("audio")
    a = synth.speak("I told you a hundred times, I am not going back there.", synth.VOICES[0], root / "a.wav")
    b = synth.speak("Well, that is the best news I have heard all week!", synth.VOICES[3], root / "b.wav")
    face = synth.face_images(1)[0]
    mp4 = synth.make_clip(a, face, root / "a.mp4")
    vonly = synth.make_video_only_clip(face, root / "vonly.mp4", 1.5)
    bad = synth.truncate_file(synth.make_clip(b, face, root / "bad.mp4"), 0.3)
    silent = synth.silence(1.0, root / "silent.wav", noise=0.0)

    def utt(uid, path, **kw):
        return Utterance(uid, "A", "text", audio=str(path), video=str(path) if str(path).endswith(".mp4") else None,
                         **kw)
    good = [utt("a_mp4", mp4), utt("a_wav", a), utt("b_wav", b)]
    broken = [utt("vonly", vonly), utt("bad", bad), utt("missing", root / "nope.mp4"),
              Utterance("nofile", "A", "text")]
    return good, broken, utt("silent", silent)


@pytest.mark.parametrize("name,dim", [("egemaps", 88), ("resemblyzer", 256)])
def test_shape_determinism_and_absent_clips(clips, name, dim):
    good, broken, silent = clips
    enc = get_encoder(name, "audio")
    assert enc.dim == dim and enc.modality == "audio"
    r = enc.encode_batch(good + broken)
    assert r.X.shape == (7, dim) and r.X.dtype == np.float32
    assert r.present.tolist() == [True] * 3 + [False] * 4
    reasons = dict(zip([u.utterance_id for u in good + broken], r.reasons))
    assert "no audio stream" in reasons["vonly"]
    assert "nope.mp4" in reasons["missing"] and "missing" in reasons["missing"]
    assert reasons["bad"] and "bad.mp4" in reasons["bad"]
    assert "no audio or video file" in reasons["nofile"]
    np.testing.assert_array_equal(r.X[3:], 0.0)
    again = enc.encode_batch(good[::-1])  # deterministic, order preserved
    np.testing.assert_allclose(again.X[::-1], r.X[:3], rtol=1e-5, atol=1e-5)
    # the same speech through mp4/AAC and wav gives close features; another voice is further away
    a_mp4, a_wav, b_wav = r.X[:3]
    if name == "resemblyzer":
        np.testing.assert_allclose(np.linalg.norm(r.X[:3], axis=1), 1.0, atol=1e-4)
        assert a_mp4 @ a_wav > a_mp4 @ b_wav
    # silence: resemblyzer has no speech to embed (absent); eGeMAPS still measures the (silent) signal
    s = enc.encode_batch([silent])
    assert s.present[0] == (name == "egemaps"), s.reasons


def test_egemaps_measures_pitch(clips):
    """eGeMAPS' first functional is the mean F0 in semitones: a higher-pitched espeak voice scores higher."""
    good, _, _ = clips
    enc = get_encoder("egemaps", "audio")
    names = enc.smile.feature_names
    assert names[0].startswith("F0semitone") and len(names) == 88


def test_compare_is_6373_d(clips):
    good, _, _ = clips
    r = get_encoder("compare", "audio").encode_batch(good[:1])
    assert r.X.shape == (1, 6373) and r.present.all()


def test_fingerprint_changes_with_settings_and_model(clips):
    from merc.encoders.audio import AudioConfig, OpenSmileEncoder
    a, b = OpenSmileEncoder("egemaps"), OpenSmileEncoder("egemaps", AudioConfig(max_seconds=10.0))
    assert a.fingerprint == OpenSmileEncoder("egemaps").fingerprint
    assert a.fingerprint != b.fingerprint != OpenSmileEncoder("compare").fingerprint
    assert get_encoder("resemblyzer").fingerprint.startswith("resemblyzer-ge2e-")
    good, _, _ = clips
    u = good[1]
    seg = Utterance(u.utterance_id, "A", "t", audio=u.audio, meta={"segment": [0.2, 1.2]})
    assert a.content_key(u) != a.content_key(seg)  # a segment is part of the content key
    r = a.encode_batch([u, seg])
    assert r.present.all() and not np.allclose(r.X[0], r.X[1])


def test_user_weight_encoders_fail_clearly_without_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("MERC_WAVLM_MODEL", raising=False)
    monkeypatch.delenv("MERC_ECAPA_MODEL", raising=False)
    with pytest.raises(MissingDependencyError, match="MERC_WAVLM_MODEL"):
        get_encoder("wavlm", "audio")
    with pytest.raises(MissingDependencyError, match="MERC_ECAPA_MODEL"):
        get_encoder("ecapa", "audio")
    pytest.importorskip("transformers")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDependencyError, match="no WavLM weights"):
        get_encoder("wavlm", "audio", model=str(tmp_path / "empty"))
