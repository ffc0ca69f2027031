"""`merc train/evaluate --qc-dir`: the face encoders get the QC run's speaker_tracks.json (through the default
store provider, as the real fer/dlib encoders do), the run records the folder, evaluate reuses it, and predict
on new media (which QC never saw) falls back to the largest face with the same networks."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from merc.cli import main
from merc.encoders.base import Encoder, EncodeResult, register_encoder
from merc.encoders.face_expr import load_speaker_tracks, without_face_choice
from merc.encoders.text import TextEncoder

LABELS = ["calm", "happy"]
SEEN: list[object] = []  # the speaker_tracks option each FakeFace was built with


class ToyQC(TextEncoder):
    name, dim, fingerprint = "toyqc", 8, "toyqc-v1"

    def _encode_batch(self, texts):
        X = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            X[i, zlib.crc32(t.encode()) % self.dim] = 1.0
        return X


class FakeFace(Encoder):
    """A face 'encoder' that, like FaceFrameEncoder, uses the QC track when given tracks (absent without one)
    and the largest face otherwise; its fingerprint ends with how the face was chosen."""
    name, modality, dim = "fakeface", "face", 4

    def __init__(self, speaker_tracks=None):
        SEEN.append(speaker_tracks)
        self.tracks = load_speaker_tracks(speaker_tracks)

    @property
    def fingerprint(self) -> str:
        return f"fakeface-v1-{'qc' if self.tracks is not None else 'largest'}"

    def content_key(self, u) -> str:
        return f"{u.utterance_id}-{self.tracks is not None and u.utterance_id in self.tracks}"

    def encode_batch(self, utterances, *, progress=False):
        res = EncodeResult.empty(len(utterances), self.dim)
        for i, u in enumerate(utterances):
            if self.tracks is not None and u.utterance_id not in self.tracks:
                res.reasons[i] = "QC found no face track of the labelled speaker"
                continue
            res.X[i] = np.random.default_rng(zlib.crc32(u.utterance_id.encode())).normal(size=self.dim)
            res.present[i], res.reasons[i] = True, None
        return res


register_encoder("toyqc", lambda **kw: ToyQC(), modality="text", dim=None, overwrite=True)
register_encoder("fakeface", FakeFace, modality="face", dim=4, description="test double", overwrite=True)


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    ids = {}
    for split, n in (("train", 6), ("dev", 3), ("test", 3)):
        lines = []
        for c in range(n):
            utts = [{"utterance_id": f"{split}{c}_u{i}", "speaker": "AB"[i % 2], "text": f"words {c} {i}",
                     "emotion": LABELS[int(rng.integers(2))]} for i in range(4)]
            lines.append(json.dumps({"conversation_id": f"{split}{c}", "utterances": utts}))
            ids.setdefault(split, []).extend(u["utterance_id"] for u in utts)
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "labels.json").write_text(json.dumps(LABELS))
    qc = tmp_path / "qc"
    qc.mkdir()
    every_other = [u for split in ids.values() for u in split[::2]]  # QC found the speaker in half the utterances
    (qc / "speaker_tracks.json").write_text(json.dumps({u: {"times": [0.0], "boxes": [[0, 0, 10, 10]]}
                                                        for u in every_other}))
    SEEN.clear()
    return root, qc, ids


def _train(root, out, *extra):
    return main(["train", "--dataset", "jsonl", "--data-dir", str(root), "--modalities", "text,face",
                 "--text-encoder", "toyqc", "--face-encoders", "fakeface", "--model", "gru", "--epochs", "2",
                 "--d-model", "8", "--layers", "1", "--quiet", "--out", str(out), *extra])


def test_qc_dir_reaches_face_encoders_and_is_recorded(corpus, tmp_path, capsys):
    root, qc, ids = corpus
    run = tmp_path / "run"
    assert _train(root, run, "--qc-dir", str(qc)) == 0
    assert SEEN and all(s == str(qc.resolve()) for s in SEEN)
    config = json.loads((run / "config.json").read_text())
    assert config["qc_dir"] == str(qc.resolve())
    assert config["encoder_fingerprints"]["face"] == ["fakeface-v1-qc"]
    ext = json.loads((run / "metrics.json").read_text())["extraction"]
    for split, uids in ids.items():
        assert ext[split]["face"]["absent"] == len(uids) // 2
        assert ext[split]["face"]["reasons"] == {"fakeface: QC found no face track of the labelled speaker":
                                                 len(uids) // 2}

    # evaluate uses the recorded folder (else the fingerprints would differ: largest face vs QC tracks)
    SEEN.clear()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(ids["test"])
    assert SEEN == [str(qc.resolve())]
    # ... or the one given; a folder without speaker_tracks.json is refused before any extraction
    empty = tmp_path / "empty_qc"
    empty.mkdir()
    assert main(["evaluate", str(run), "--split", "test", "--qc-dir", str(empty)]) != 0
    assert "speaker_tracks.json does not exist; run `merc qc` first" in capsys.readouterr().err

    # predict on new conversations: QC never saw them, so the largest face, through the same encoder
    SEEN.clear()
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"conversation_id": "n", "utterances": [
        {"utterance_id": "n0", "speaker": "A", "text": "hello"}, {"utterance_id": "n1", "speaker": "B",
                                                                   "text": "hi"}]}) + "\n")
    assert main(["predict", str(run), str(new), "--json", "--no-plots", "--quiet"]) == 0
    [rec] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert SEEN == [None] and [u["modalities"] for u in rec["utterances"]] == [["text", "face"]] * 2


def test_train_qc_dir_without_tracks_is_a_clear_error(corpus, tmp_path, capsys):
    root, _, _ = corpus
    empty = tmp_path / "not_qc"
    empty.mkdir()
    assert _train(root, tmp_path / "run", "--qc-dir", str(empty)) != 0
    err = capsys.readouterr().err
    assert f"{empty / 'speaker_tracks.json'} does not exist" in err and not (tmp_path / "run" / "config.json").exists()


def test_without_face_choice():
    assert without_face_choice("fer-minixception-abc-m0.25-fps1.0-max30-hog1-qc") == \
        without_face_choice("fer-minixception-abc-m0.25-fps1.0-max30-hog1-largest") == \
        "fer-minixception-abc-m0.25-fps1.0-max30-hog1"
    assert without_face_choice("something-else") == "something-else"
    # the largest face found by the reduced scan (the default) or with tracking: the same network and frames
    for tail in ("-largest-lvl64", "-largest-lvl64-track4-7.0", "-largest-track3-7.0"):
        assert without_face_choice("fer-minixception-abc-m0.25-fps1.0-max30-hog1" + tail) == \
            "fer-minixception-abc-m0.25-fps1.0-max30-hog1"
    from merc.encoders.face_expr import FaceFrameConfig, FerEncoder
    pytest.importorskip("h5py")
    largest, tracked = FerEncoder(), FerEncoder(speaker_tracks={})
    assert largest.fingerprint != tracked.fingerprint
    assert without_face_choice(largest.fingerprint) == without_face_choice(tracked.fingerprint)
    assert without_face_choice(FerEncoder(FaceFrameConfig(detect_every=3)).fingerprint) == \
        without_face_choice(tracked.fingerprint)


def test_predict_loads_each_encoder_once_across_chunks(corpus, tmp_path, capsys):
    """`merc predict` asks for features chunk by chunk (--batch-utterances); the run keeps the encoders it
    loaded, so the face encoder (and the text encoder) are built once, not once per chunk."""
    root, _, _ = corpus
    run = tmp_path / "run"
    assert _train(root, run) == 0
    built: list[str] = []
    original = ToyQC.__init__

    def counting_init(self, *a, **kw):
        built.append("toyqc")
        original(self, *a, **kw)
    ToyQC.__init__ = counting_init
    try:
        SEEN.clear()
        new = tmp_path / "new.jsonl"
        new.write_text("".join(json.dumps({"conversation_id": f"n{c}", "utterances": [
            {"utterance_id": f"n{c}_{i}", "speaker": "AB"[i % 2], "text": f"hello {c} {i}"} for i in range(3)]}) + "\n"
            for c in range(4)))
        capsys.readouterr()
        assert main(["predict", str(run), str(new), "--json", "--no-plots", "--quiet", "--batch-utterances", "3"]) == 0
        recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    finally:
        ToyQC.__init__ = original
    assert len(recs) == 4  # four chunks of one conversation each
    assert SEEN == [None] and built == ["toyqc"]
