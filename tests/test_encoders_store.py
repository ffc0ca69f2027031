"""The feature store: resume after an interruption, re-extract a changed clip only, absent rows stored with
their reasons (retried when the file changes), text through the same store, modality blocks, summaries."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from merc.data.schema import Conversation, Corpus, Utterance
from merc.encoders.base import MediaEncoder, media_key
from merc.encoders.features import Features, reason_kind
from merc.encoders.store import FeatureStore, extract_modality, extract_split, store_key
from merc.errors import CorruptMedia, MissingMedia


class FakeAudio(MediaEncoder):
    """4-d vector from a hash of the file's bytes; files starting with b"BAD" are unusable."""

    modality, dim, needs = "audio", 4, ("audio",)

    def __init__(self, *, fingerprint: str = "fake-audio-v1", fail_after: int | None = None, name: str = "fake"):
        self.name, self._fp, self.fail_after = name, fingerprint, fail_after
        self.seen: list[str] = []  # utterance ids encoded
        self.batches = 0

    @property
    def fingerprint(self) -> str:
        return self._fp

    def content_key(self, u) -> str:
        return media_key(u.audio, None, None)

    def encode_batch(self, utterances, *, progress=False):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.batches += 1
        return super().encode_batch(utterances, progress=progress)

    def _encode_one(self, u):
        self.seen.append(u.utterance_id)
        if not os.path.exists(u.audio):
            raise MissingMedia(f"missing file {u.audio}")
        data = open(u.audio, "rb").read()
        if data.startswith(b"BAD"):
            raise CorruptMedia(f"corrupt clip {u.audio}")
        seed = int(hashlib.sha1(data).hexdigest()[:8], 16)
        return np.random.default_rng(seed).normal(size=4)


def make_corpus(root, n: int = 11, *, missing=(), bad=()) -> Corpus:
    utts = []
    for i in range(n):
        p = root / f"clip{i}.wav"
        if i not in missing and not p.exists():
            p.write_bytes((b"BAD" if i in bad else b"RIFF") + os.urandom(64))
        utts.append(Utterance(f"train_dia{i // 4}_utt{i % 4}", "A", f"line {i}", audio=str(p)))
    convs: dict[str, list[Utterance]] = {}
    for u in utts:
        convs.setdefault(u.utterance_id.rsplit("_", 1)[0], []).append(u)
    return Corpus("toy", {"train": [Conversation(c, "train", us) for c, us in convs.items()]}, ["neutral"])


def tmp_files(root):
    return [p for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_extract_then_reuse(tmp_path):
    corpus = make_corpus(tmp_path, missing={2}, bad={5})
    store, enc = FeatureStore(tmp_path / "store", chunk_size=4), FakeAudio()
    f = store.get(corpus, "train", enc, progress=False)
    assert isinstance(f, Features) and f.X.shape == (11, 4) and f.X.dtype == np.float32
    assert f.ids == [u.utterance_id for u in corpus.utterances("train")]
    assert f.present.tolist() == [i not in (2, 5) for i in range(11)]
    assert "missing file" in f.reasons[2] and "corrupt clip" in f.reasons[5] and f.reasons[0] is None
    np.testing.assert_array_equal(f.X[[2, 5]], 0.0)
    s = f.summary()
    assert s["present"] == 9 and s["absent"] == 2 and sum(s["reasons"].values()) == 2
    folder = store.folder(store_key(corpus, "train"), "train", enc)
    assert sorted(p.name for p in folder.iterdir()) == ["index.json", "rows.safetensors"]  # pending removed
    assert folder.parent.name == "audio" and folder.parent.parent.name == "train"

    again = store.get(corpus, "train", enc, progress=False)
    assert len(enc.seen) == 11 and again.meta["cache_hit"] and not f.meta["cache_hit"]
    np.testing.assert_array_equal(again.X, f.X)
    assert again.reasons == f.reasons and again.present.tolist() == f.present.tolist()
    assert again.take_present(["train_dia0_utt2", "train_dia0_utt0"]).tolist() == [False, True]


def test_interrupted_run_resumes_with_the_rest_only(tmp_path):
    corpus = make_corpus(tmp_path)
    ref = FeatureStore(tmp_path / "ref").get(corpus, "train", FakeAudio(), progress=False)
    store = FeatureStore(tmp_path / "store", chunk_size=3)
    broken = FakeAudio(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        store.get(corpus, "train", broken, progress=False)
    folder = store.folder(store_key(corpus, "train"), "train", broken)
    assert sorted(p.name for p in (folder / "pending").iterdir()) == ["chunk_00000.npz", "chunk_00001.npz"]
    assert not (folder / "index.json").exists()

    resumed = FakeAudio()
    f = store.get(corpus, "train", resumed, progress=False)
    assert len(resumed.seen) == 5 and f.meta["reused"] == 6 and f.meta["extracted"] == 5
    np.testing.assert_array_equal(f.X, ref.X)
    assert tmp_files(tmp_path) == []


def test_changed_clip_is_reextracted_alone(tmp_path):
    corpus = make_corpus(tmp_path)
    store = FeatureStore(tmp_path / "store")
    base = store.get(corpus, "train", FakeAudio(), progress=False)
    (tmp_path / "clip3.wav").write_bytes(b"RIFF" + os.urandom(80))  # re-encoded clip
    enc = FakeAudio()
    f = store.get(corpus, "train", enc, progress=False)
    assert enc.seen == ["train_dia0_utt3"] and f.meta["reused"] == 10
    assert not np.allclose(f.X[3], base.X[3])
    np.testing.assert_array_equal(np.delete(f.X, 3, 0), np.delete(base.X, 3, 0))

    other = FakeAudio(fingerprint="fake-audio-v2")  # new weights/settings: a new folder, all extracted
    store.get(corpus, "train", other, progress=False)
    assert len(other.seen) == 11
    assert len(list((tmp_path / "store" / store_key(corpus, "train") / "train" / "audio").iterdir())) == 2


def test_absent_rows_are_not_retried_until_the_file_changes(tmp_path):
    corpus = make_corpus(tmp_path, missing={1}, bad={4})
    store = FeatureStore(tmp_path / "store")
    store.get(corpus, "train", FakeAudio(), progress=False)
    enc = FakeAudio()
    f = store.get(corpus, "train", enc, progress=False)
    assert enc.seen == [] and f.present.sum() == 9  # no retry for unchanged absent clips

    (tmp_path / "clip1.wav").write_bytes(b"RIFF" + os.urandom(64))  # the missing clip appears
    (tmp_path / "clip4.wav").write_bytes(b"RIFF" + os.urandom(64))  # the corrupt clip is replaced
    enc = FakeAudio()
    f = store.get(corpus, "train", enc, progress=False)
    assert sorted(enc.seen) == ["train_dia0_utt1", "train_dia1_utt0"] and f.present.all()

    forced = FeatureStore(tmp_path / "store", retry_absent=True)
    (tmp_path / "clip6.wav").unlink()
    enc = FakeAudio()
    forced.get(corpus, "train", enc, progress=False)  # clip6's key changed (missing): extracted once
    enc = FakeAudio()
    forced.get(corpus, "train", enc, progress=False)
    assert enc.seen == ["train_dia1_utt2"]  # retry_absent: the absent one is tried again, nothing else


def test_corrupt_store_files_are_rebuilt(tmp_path):
    corpus = make_corpus(tmp_path)
    store = FeatureStore(tmp_path / "store", chunk_size=3)
    with pytest.raises(KeyboardInterrupt):
        store.get(corpus, "train", FakeAudio(fail_after=3), progress=False)
    pending = store.folder(store_key(corpus, "train"), "train", FakeAudio()) / "pending"
    c1 = pending / "chunk_00001.npz"
    c1.write_bytes(c1.read_bytes()[:50])  # truncated
    enc = FakeAudio()
    f = store.get(corpus, "train", enc, progress=False)
    assert len(enc.seen) == 3 + 2  # chunk 1 again + the 2 never extracted
    rows = store.folder(store_key(corpus, "train"), "train", enc) / "rows.safetensors"
    rows.write_bytes(rows.read_bytes()[:-20])
    enc = FakeAudio()
    g = store.get(corpus, "train", enc, progress=False)
    assert len(enc.seen) == 11
    np.testing.assert_array_equal(f.X, g.X)


def test_write_failure_leaves_no_tmp(tmp_path, monkeypatch):
    import merc.io as io_mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        FeatureStore(tmp_path / "store").get(make_corpus(tmp_path), "train", FakeAudio(), progress=False)
    assert tmp_files(tmp_path) == [] and not list((tmp_path / "store").rglob("*.npz"))


def test_modality_block_concatenates_and_masks(tmp_path):
    corpus = make_corpus(tmp_path, missing={0})
    store = FeatureStore(tmp_path / "store")
    b = extract_modality(corpus, "train", "audio", [FakeAudio(name="a"), FakeAudio(name="b", fingerprint="x")],
                         store=store, progress=False)
    assert b.X.shape == (11, 8) and b.present.tolist() == [False] + [True] * 10
    assert b.reasons[0].startswith("a: ") and b.summary()["absent"] == 1
    a = extract_split(corpus, "train", FakeAudio(name="a"), store=store, progress=False)
    np.testing.assert_array_equal(b.X[1, :4], a.X[1])
    assert b.meta["modality"] == "audio" and list(b.meta["parts"]) == ["a", "b"]
    with pytest.raises(ValueError, match="duplicate utterance id"):
        dup = make_corpus(tmp_path)
        dup.splits["train"][1].utterances[0].utterance_id = "train_dia0_utt0"
        extract_split(dup, "train", FakeAudio(), store=store, progress=False)


def test_reason_kind_drops_files_and_numbers():
    assert reason_kind("missing file /data/MELD/train_splits/dia3_utt1.mp4") == "missing file <file>"
    assert reason_kind("no face in 0/4 sampled frames of dia3_utt1.mp4") == "no face in N/N sampled frames of <file>"


def test_concatenated_features_take_rows_and_presence(tmp_path):
    corpus = make_corpus(tmp_path, missing={3})
    b = extract_modality(corpus, "train", "audio", [FakeAudio(name="one"), FakeAudio(name="two", fingerprint="r")],
                         store=FeatureStore(tmp_path / "store"), progress=False)
    X = b.take(["train_dia0_utt3", "train_dia0_utt0"])
    assert X.shape == (2, 8) and b.take_present(["train_dia0_utt3", "train_dia0_utt0"]).tolist() == [False, True]
    np.testing.assert_array_equal(X[0], 0.0)
    assert b.table()["train_dia0_utt3"] is None
    with pytest.raises(KeyError, match="nope"):
        b.take(["nope"])


def test_two_corpora_with_one_reader_name_get_their_own_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = make_corpus(tmp_path / "a"), make_corpus(tmp_path / "b")
    assert a.name == b.name and store_key(a, "train") != store_key(b, "train")
    store = FeatureStore(tmp_path / "store")
    store.get(a, "train", FakeAudio(), progress=False)
    store.get(b, "train", FakeAudio(), progress=False)
    enc = FakeAudio()
    store.get(a, "train", enc, progress=False)  # b did not overwrite a's rows: nothing is extracted again
    assert enc.seen == []


# honest failures: only the named conditions (merc.errors.UnusableInput) make an utterance absent


@pytest.mark.parametrize("kind", ["MissingMedia", "CorruptMedia", "NoAudioStream", "TooLittleSpeech", "NoFace"])
def test_a_named_condition_is_an_absent_row_with_its_reason(tmp_path, monkeypatch, kind):
    import merc.errors
    corpus = make_corpus(tmp_path, n=3)
    enc = FakeAudio()
    real = FakeAudio._encode_one

    def one(self, u):
        if u.utterance_id == "train_dia0_utt1":
            raise getattr(merc.errors, kind)(f"{kind} in {u.audio}")
        return real(self, u)

    monkeypatch.setattr(FakeAudio, "_encode_one", one)
    f = FeatureStore(tmp_path / "store").get(corpus, "train", enc, progress=False)
    assert f.present.tolist() == [True, False, True]
    assert f.reasons[1] == f"{kind} in {tmp_path / 'clip1.wav'}" and not f.X[1].any()


def test_media_errors_of_the_decoder_are_named_conditions(tmp_path):
    from merc.errors import UnusableInput
    from merc.media.decode import MediaError, load_audio
    assert issubclass(MediaError, UnusableInput)
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all" * 10)
    for path in (tmp_path / "nothing.wav", tmp_path / "junk.wav"):
        with pytest.raises(UnusableInput):
            load_audio(str(path))


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), TypeError("unsupported operand"),
                                 ValueError("operands could not be broadcast together"), KeyError("X")])
def test_an_unexpected_exception_propagates_naming_the_utterance(tmp_path, monkeypatch, bug):
    corpus = make_corpus(tmp_path, n=3)
    real = FakeAudio._encode_one

    def one(self, u):
        if u.utterance_id == "train_dia0_utt2":
            raise bug  # a bug in an encoder, not a property of the clip
        return real(self, u)

    monkeypatch.setattr(FakeAudio, "_encode_one", one)
    store = FeatureStore(tmp_path / "store")
    with pytest.raises(type(bug)) as info:
        store.get(corpus, "train", FakeAudio(), progress=False)
    assert info.value is bug and any("train_dia0_utt2" in n for n in getattr(info.value, "__notes__", []))
    assert not list((tmp_path / "store").rglob("index.json"))  # nothing was stored as if the clip were absent


def test_a_bug_inside_a_real_encoder_propagates(tmp_path, monkeypatch):
    pytest.importorskip("opensmile")
    import merc.encoders.audio as audio_mod
    from merc.encoders.base import get_encoder
    from merc.testing.synth import write_wav
    t = np.arange(16000) / 16000
    wav = write_wav((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), tmp_path / "tone.wav")  # 1 s tone
    enc = get_encoder("egemaps", "audio")
    assert enc.encode_batch([Utterance("u0", "A", "hi", audio=str(wav))]).present.all()  # the clip is fine
    monkeypatch.setattr(audio_mod.OpenSmileEncoder, "_embed", lambda self, w: np.zeros(3)[w.size])  # IndexError
    with pytest.raises(IndexError):
        enc.encode_batch([Utterance("u0", "A", "hi", audio=str(wav))])
