"""Text through the one feature store, with a tiny counting encoder: reuse, invalidation by rendered input,
resume, corruption, atomic writes, empty transcripts, dialogue context."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from merc.data.schema import Conversation, Corpus, Utterance
from merc.encoders import Features, FeatureStore, TextEncoder, get_encoder, register_encoder
from merc.encoders.store import store_key


class CountingEncoder(TextEncoder):
    """Deterministic 8-d vectors from a hash of the text; counts texts encoded; may fail after N calls."""

    def __init__(self, *, fingerprint: str = "fake-v1", fail_after: int | None = None, **_):
        self.name, self.dim, self.fingerprint = "fake", 8, fingerprint
        self.batch_size = 4
        self.calls = 0  # encode() calls (one per store chunk)
        self.texts = 0
        self.seen: list[str] = []
        self.fail_after = fail_after

    def encode(self, texts, *, batch_size=None, progress=True):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.texts += len(texts)
        self.seen += list(texts)
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


def folder_of(store, corpus, enc):
    return store.folder(store_key(corpus, "train"), "train", enc)


def test_encode_then_reuse(tmp_path):
    corpus, enc = make_corpus(), CountingEncoder()
    store = FeatureStore(tmp_path, chunk_size=5)
    f = store.get(corpus, "train", enc, progress=False)
    assert isinstance(f, Features) and f.X.shape == (23, 8) and f.X.dtype == np.float32 and f.present.all()
    assert f.ids == [u.utterance_id for u in corpus.utterances("train")]
    assert enc.calls == 5 and enc.texts == 23
    folder = folder_of(store, corpus, enc)
    assert folder.parent.name == "text"
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "rows.safetensors"]  # pending chunks removed
    index = json.loads((folder / "index.json").read_text())
    assert index["fingerprint"] == "fake-v1" and index["ids"] == f.ids and index["n"] == 23

    again = store.get(corpus, "train", enc, progress=False)
    assert enc.calls == 5  # nothing re-encoded
    assert again.meta["cache_hit"] and not f.meta["cache_hit"]
    np.testing.assert_array_equal(again.X, f.X)
    # lookup
    np.testing.assert_array_equal(f["train_dia1_utt2"], f.X[7])
    np.testing.assert_array_equal(f.take(["train_dia0_utt1", "train_dia0_utt0"]), f.X[[1, 0]])
    assert "train_dia0_utt0" in f and "nope" not in f
    with pytest.raises(KeyError, match="nope"):
        f.take(["nope"])


def test_rows_are_those_of_the_encoders_own_chunks(tmp_path):
    """The store encodes in corpus order, one chunk per encode() call, every utterance (a repeated text too):
    the rows are exactly those of encoding the same chunks directly (batches sorted by length inside a chunk)."""
    corpus = make_corpus(12)
    corpus.splits["train"][1].utterances[0].text = "sentence number 0"  # a repeat of utterance 0
    f = FeatureStore(tmp_path, chunk_size=5).get(corpus, "train", CountingEncoder(), progress=False)
    texts = [u.text for u in corpus.utterances("train")]
    direct = np.concatenate([CountingEncoder().encode(texts[s:s + 5], progress=False) for s in range(0, 12, 5)])
    np.testing.assert_array_equal(f.X, direct)


def test_changed_text_or_fingerprint_invalidates(tmp_path):
    enc = CountingEncoder()
    store = FeatureStore(tmp_path, chunk_size=5)
    base = store.get(make_corpus(), "train", enc, progress=False)
    enc = CountingEncoder()
    edited = store.get(make_corpus(edit="a different line"), "train", enc, progress=False)
    assert enc.seen == ["a different line"]  # only the edited utterance
    assert not np.allclose(edited["train_dia0_utt3"], base["train_dia0_utt3"])
    np.testing.assert_array_equal(edited["train_dia0_utt4"], base["train_dia0_utt4"])

    enc2 = CountingEncoder(fingerprint="fake-v2")
    store.get(make_corpus(), "train", enc2, progress=False)
    assert enc2.calls == 5  # new weights: encoded again, into another folder
    assert folder_of(store, make_corpus(), enc2) != folder_of(store, make_corpus(), enc)


def test_template_and_context_are_part_of_the_key(tmp_path, monkeypatch):
    from merc.encoders import context as context_mod
    from merc.encoders.context import ContextSpec
    store = FeatureStore(tmp_path)
    plain = store.get(make_corpus(10), "train", CountingEncoder(), progress=False)
    templ = CountingEncoder()
    templ.template = "{speaker}: {text}"
    f = store.get(make_corpus(10), "train", templ, progress=False)
    assert templ.seen[0].startswith("A: ") and templ.texts == 10
    assert not np.allclose(f.X, plain.X)

    ctx = CountingEncoder(fingerprint="fake-ctx")
    ctx.context = ContextSpec(past=1, future=0, sep="|", max_tokens=64)
    ctx.context_tokenizer = lambda: (None, 0)
    monkeypatch.setattr(context_mod, "tokenizer_counter", lambda tok: lambda texts: [len(t.split()) for t in texts])
    store.get(make_corpus(10), "train", ctx, progress=False)
    ctx.seen = []
    store.get(make_corpus(10, edit="a different line"), "train", ctx, progress=False)
    # utterance 3 changed, and so did the input of 4 (3 is its past turn); nothing else is encoded again
    assert len(ctx.seen) == 2 and all("a different line" in t for t in ctx.seen)


def test_empty_transcript_is_absent(tmp_path):
    corpus = make_corpus(6, edit="   ")
    enc = CountingEncoder()
    f = FeatureStore(tmp_path).get(corpus, "train", enc, progress=False)
    assert f.present.tolist() == [True, True, True, False, True, True] and f.reasons[3] == "empty text"
    assert enc.texts == 5 and not f["train_dia0_utt3"].any()


def test_interrupted_run_resumes_with_missing_chunks_only(tmp_path):
    corpus = make_corpus()
    ref = FeatureStore(tmp_path / "ref", chunk_size=5).get(corpus, "train", CountingEncoder(), progress=False)
    store = FeatureStore(tmp_path / "run", chunk_size=5)
    broken = CountingEncoder(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        store.get(corpus, "train", broken, progress=False)
    folder = folder_of(store, corpus, broken)
    assert sorted(p.name for p in (folder / "pending").iterdir()) == [f"chunk_0000{k}.npz" for k in range(3)]
    assert not (folder / "index.json").exists()

    resumed = CountingEncoder()
    f = store.get(corpus, "train", resumed, progress=False)
    assert resumed.calls == 2 and resumed.texts == 8  # chunks 3 (5 texts) and 4 (3 texts)
    assert f.meta["reused"] == 15
    np.testing.assert_array_equal(f.X, ref.X)
    assert tmp_files(tmp_path) == []


def test_truncated_chunk_is_recomputed(tmp_path):
    corpus = make_corpus()
    store = FeatureStore(tmp_path, chunk_size=5)
    with pytest.raises(KeyboardInterrupt):
        store.get(corpus, "train", CountingEncoder(fail_after=4), progress=False)
    pending = folder_of(store, corpus, CountingEncoder()) / "pending"
    c1 = pending / "chunk_00001.npz"
    c1.write_bytes(c1.read_bytes()[:100])  # truncated mid-file
    enc = CountingEncoder()
    f = store.get(corpus, "train", enc, progress=False)
    assert enc.texts == 8  # chunk 1 (5 texts) recomputed + chunk 4 (3 texts) never written
    ref = FeatureStore(tmp_path / "ref", chunk_size=5).get(corpus, "train", CountingEncoder(), progress=False)
    np.testing.assert_allclose(f.X, ref.X, atol=1e-6)


def test_corrupt_final_file_is_recomputed(tmp_path):
    corpus, enc = make_corpus(), CountingEncoder()
    store = FeatureStore(tmp_path, chunk_size=50)
    f = store.get(corpus, "train", enc, progress=False)
    rows = folder_of(store, corpus, enc) / "rows.safetensors"
    rows.write_bytes(rows.read_bytes()[:-40])
    g = store.get(corpus, "train", enc, progress=False)
    assert enc.calls == 2
    np.testing.assert_array_equal(f.X, g.X)


def test_atomic_write_failure_leaves_no_tmp(tmp_path, monkeypatch):
    import merc.io

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(merc.io.os, "replace", boom)  # the atomic writer (merc.io) renames into place
    with pytest.raises(OSError, match="disk full"):
        FeatureStore(tmp_path, chunk_size=5).get(make_corpus(), "train", CountingEncoder(), progress=False)
    assert tmp_files(tmp_path) == [] and not list(tmp_path.rglob("*.npz"))


def test_registered_encoder_through_the_registry(tmp_path):
    register_encoder("fake-counting", lambda **kw: CountingEncoder(**kw), modality="text", dim=8, overwrite=True)
    enc = get_encoder("fake-counting", "text", batch_size=3)
    f = FeatureStore(tmp_path).get(make_corpus(7), "train", enc, progress=False)
    assert f.X.shape == (7, 8) and enc.calls == 1
    np.testing.assert_allclose(np.linalg.norm(f.X, axis=1), 1.0, atol=1e-6)


def test_default_store_follows_merc_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "mc"))
    corpus, enc = make_corpus(4), CountingEncoder()
    store = FeatureStore()
    store.get(corpus, "train", enc, progress=False)
    assert folder_of(store, corpus, enc).is_relative_to(tmp_path / "mc" / "store")
    assert (folder_of(store, corpus, enc) / "index.json").is_file()
