"""Feature cache with a tiny counting encoder: reuse, invalidation, resume, corruption, atomic writes."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from merc.data.schema import Conversation, Corpus, Utterance
from merc.encoders import (
    Features,
    TextEncoder,
    encode_split,
    feature_cache_dir,
    get_text_encoder,
    register_text_encoder,
)


class CountingEncoder(TextEncoder):
    """Deterministic 8-d vectors from a hash of the text; counts texts encoded; may fail after N calls."""

    def __init__(self, *, fingerprint: str = "fake-v1", fail_after: int | None = None, **_):
        self.name, self.dim, self.fingerprint = "fake", 8, fingerprint
        self.batch_size = 4
        self.calls = 0  # encode() calls (one per cache chunk)
        self.texts = 0
        self.fail_after = fail_after

    def encode(self, texts, *, batch_size=None, progress=True):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.texts += len(texts)
        return super().encode(texts, batch_size=batch_size, progress=progress)

    def _encode_batch(self, texts):
        seeds = [int(hashlib.sha1(t.encode()).hexdigest()[:8], 16) for t in texts]
        X = np.stack([np.random.default_rng(s).normal(size=self.dim) for s in seeds])
        return X / np.linalg.norm(X, axis=1, keepdims=True)


def make_corpus(n: int = 23, *, edit: str | None = None) -> Corpus:
    utts = [Utterance(f"train_dia{i // 5}_utt{i % 5}", "A", f"sentence number {i}") for i in range(n)]
    if edit is not None:
        utts[3].text = edit
    convs: dict[str, list[Utterance]] = {}
    for u in utts:
        convs.setdefault(u.utterance_id.rsplit("_", 1)[0], []).append(u)
    return Corpus("toy", {"train": [Conversation(c, "train", us) for c, us in convs.items()]}, ["neutral"])


def tmp_files(root):
    return [p for p in root.rglob("*") if p.name.startswith(".tmp")]


def test_encode_then_reuse(tmp_path):
    corpus, enc = make_corpus(), CountingEncoder()
    f = encode_split(corpus, "train", enc, cache_dir=tmp_path, chunk_size=5, progress=False)
    assert isinstance(f, Features) and f.X.shape == (23, 8) and f.X.dtype == np.float32
    assert f.ids == [u.utterance_id for u in corpus.utterances("train")]
    assert enc.calls == 5 and enc.texts == 23
    folder = feature_cache_dir(corpus, "train", enc, cache_dir=tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["features.safetensors", "meta.json"]  # chunks removed
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["fingerprint"] == "fake-v1" and meta["ids"] == f.ids and meta["n"] == 23

    again = encode_split(corpus, "train", enc, cache_dir=tmp_path, chunk_size=5, progress=False)
    assert enc.calls == 5  # nothing re-encoded
    assert again.meta["cache_hit"] and not f.meta["cache_hit"]
    np.testing.assert_array_equal(again.X, f.X)
    # lookup
    np.testing.assert_array_equal(f["train_dia1_utt2"], f.X[7])
    np.testing.assert_array_equal(f.take(["train_dia0_utt1", "train_dia0_utt0"]), f.X[[1, 0]])
    assert "train_dia0_utt0" in f and "nope" not in f
    with pytest.raises(KeyError, match="nope"):
        f.take(["nope"])


def test_changed_text_or_fingerprint_invalidates(tmp_path):
    enc = CountingEncoder()
    base = encode_split(make_corpus(), "train", enc, cache_dir=tmp_path, chunk_size=5, progress=False)
    edited = encode_split(make_corpus(edit="a different line"), "train", enc, cache_dir=tmp_path,
                          chunk_size=5, progress=False)
    assert enc.calls == 10
    assert not np.allclose(edited["train_dia0_utt3"], base["train_dia0_utt3"])
    np.testing.assert_array_equal(edited["train_dia0_utt4"], base["train_dia0_utt4"])

    enc2 = CountingEncoder(fingerprint="fake-v2")
    encode_split(make_corpus(), "train", enc2, cache_dir=tmp_path, chunk_size=5, progress=False)
    assert enc2.calls == 5  # new weights: encoded again, into another folder
    assert len(list((tmp_path / "toy" / "train").iterdir())) == 3


def test_interrupted_run_resumes_with_missing_chunks_only(tmp_path):
    corpus = make_corpus()
    ref = encode_split(corpus, "train", CountingEncoder(), cache_dir=tmp_path / "ref", chunk_size=5, progress=False)

    broken = CountingEncoder(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        encode_split(corpus, "train", broken, cache_dir=tmp_path / "run", chunk_size=5, progress=False)
    folder = feature_cache_dir(corpus, "train", broken, cache_dir=tmp_path / "run")
    assert sorted(p.name for p in (folder / "chunks_5").iterdir()) == [f"chunk_0000{k}.npy" for k in range(3)]
    assert not (folder / "meta.json").exists()

    resumed = CountingEncoder()
    f = encode_split(corpus, "train", resumed, cache_dir=tmp_path / "run", chunk_size=5, progress=False)
    assert resumed.calls == 2 and resumed.texts == 8  # chunks 3 (5 texts) and 4 (3 texts)
    assert f.meta["chunks_reused"] == 3
    np.testing.assert_array_equal(f.X, ref.X)
    assert tmp_files(tmp_path) == []


def test_truncated_chunk_is_recomputed(tmp_path):
    corpus = make_corpus()
    with pytest.raises(KeyboardInterrupt):
        encode_split(corpus, "train", CountingEncoder(fail_after=4), cache_dir=tmp_path, chunk_size=5, progress=False)
    chunks = feature_cache_dir(corpus, "train", CountingEncoder(), cache_dir=tmp_path) / "chunks_5"
    c1 = chunks / "chunk_00001.npy"
    c1.write_bytes(c1.read_bytes()[:100])  # truncated mid-array
    np.save(chunks / "chunk_00002.npy", np.zeros((3, 8), np.float32))  # wrong shape
    enc = CountingEncoder()
    f = encode_split(corpus, "train", enc, cache_dir=tmp_path, chunk_size=5, progress=False)
    assert enc.calls == 3  # chunks 1, 2 recomputed + chunk 4 never written
    ref = encode_split(corpus, "train", CountingEncoder(), cache_dir=tmp_path / "ref", chunk_size=5, progress=False)
    np.testing.assert_array_equal(f.X, ref.X)


def test_corrupt_final_file_is_recomputed(tmp_path):
    corpus, enc = make_corpus(), CountingEncoder()
    f = encode_split(corpus, "train", enc, cache_dir=tmp_path, chunk_size=50, progress=False)
    feat = feature_cache_dir(corpus, "train", enc, cache_dir=tmp_path) / "features.safetensors"
    feat.write_bytes(feat.read_bytes()[:-40])
    g = encode_split(corpus, "train", enc, cache_dir=tmp_path, chunk_size=50, progress=False)
    assert enc.calls == 2
    np.testing.assert_array_equal(f.X, g.X)


def test_atomic_write_failure_leaves_no_tmp(tmp_path, monkeypatch):
    import merc.io

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(merc.io.os, "replace", boom)  # the atomic writer (merc.io) renames into place
    with pytest.raises(OSError, match="disk full"):
        encode_split(make_corpus(), "train", CountingEncoder(), cache_dir=tmp_path, chunk_size=5, progress=False)
    assert tmp_files(tmp_path) == [] and not list(tmp_path.rglob("*.npy"))


def test_registered_encoder_through_the_registry(tmp_path):
    register_text_encoder("fake-counting", lambda **kw: CountingEncoder(**kw), overwrite=True)
    enc = get_text_encoder("fake-counting", batch_size=3)
    f = encode_split(make_corpus(7), "train", enc, cache_dir=tmp_path, progress=False)
    assert f.X.shape == (7, 8) and enc.calls == 1
    np.testing.assert_allclose(np.linalg.norm(f.X, axis=1), 1.0, atol=1e-6)


def test_default_cache_dir_follows_merc_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "mc"))
    corpus, enc = make_corpus(4), CountingEncoder()
    encode_split(corpus, "train", enc, progress=False)
    assert feature_cache_dir(corpus, "train", enc).is_relative_to(tmp_path / "mc" / "features")
    assert (feature_cache_dir(corpus, "train", enc) / "meta.json").is_file()
