"""Stage-2 adapters: the model's shapes and folder round trip, the fit on synthetic features (audio / face
style, through a plain callable encoder), text through the feature cache with a stub encoder, and
``merc adapt`` end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_wav

from merc.data.unimodal.items import EmotionItem
from merc.encoders.text import TextEncoder
from merc.errors import IncompatibleRunError, MissingFileError, OutputExistsError
from merc.models.adapter import Adapter, AdapterBundle, AdapterConfig
from merc.training.adapt import AdaptTrainConfig, evaluate_transfer, fit_adapter, stratified_split, train_adapter
from merc.training.adapt_data import callable_encoder

TINY = dict(hidden=16, bottleneck=8, epochs=30, patience=30, batch_size=32, lr=1e-2)


def blobs(n_per: int, n_classes: int, d: int, *, sep: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d)) * sep
    y = np.repeat(np.arange(n_classes), n_per)
    return (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def test_adapter_shapes_and_round_trip(tmp_path):
    a = Adapter(AdapterConfig(d_in=12, n_classes=3, hidden=10, bottleneck=6), labels=["a", "b", "c"],
                modality="audio", encoder={"name": "egemaps", "fingerprint": "fp1", "dim": 12}, extra={"note": 1})
    X = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32) * 50 + 7
    a.set_input_stats(X)
    a.eval()
    assert a.refine(X).shape == (5, 6) and a.refine(X).dtype == np.float32
    assert a.predict_proba(X).shape == (5, 3) and np.allclose(a.predict_proba(X).sum(1), 1, atol=1e-5)
    a.save_pretrained(tmp_path / "ad")
    b = Adapter.from_pretrained(tmp_path / "ad")
    assert np.allclose(a.refine(X), b.refine(X)) and b.labels == ["a", "b", "c"] and b.modality == "audio"
    assert b.encoder["fingerprint"] == "fp1" and b.extra == {"note": 1}
    with pytest.raises(IncompatibleRunError, match=r"\(5, 11\)"):
        b.refine(X[:, :11])
    with pytest.raises(IncompatibleRunError, match="fingerprint fp2"):
        b.check_encoder("fp2", "other")
    b.check_encoder("fp1")
    with pytest.raises(IncompatibleRunError, match="audio adapter, given for face"):
        AdapterBundle.load({"face": tmp_path / "ad"})
    with pytest.raises(MissingFileError, match="merc adapt"):
        Adapter.from_pretrained(tmp_path / "nothing")


def test_stratified_split_keeps_every_class():
    y = np.array([0] * 50 + [1] * 10 + [2] * 3)
    tr, ho = stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([tr, ho]).tolist()) == list(range(len(y)))
    assert [int((y[ho] == c).sum()) for c in range(3)] == [10, 2, 1]


@pytest.mark.slow
def test_fit_learns_separable_features_and_not_noise():
    X, y = blobs(60, 4, 10, sep=3.0)
    res = fit_adapter(X, y, ["w", "x", "y", "z"], AdaptTrainConfig(**TINY))
    assert res.metrics["heldout"]["weighted_f1"] > 0.9
    assert res.metrics["n_heldout"] == 24 and res.metrics["best_epoch"] >= 1
    rng = np.random.default_rng(1)
    noise = rng.normal(size=X.shape).astype(np.float32)
    res0 = fit_adapter(noise, rng.permutation(y), ["w", "x", "y", "z"], AdaptTrainConfig(**TINY))
    assert res0.metrics["heldout"]["weighted_f1"] < 0.6  # chance is 0.25; no leak of labels into features


def _audio_items(root: Path, n_per: int) -> list[str]:
    names = []
    for emo in ("ANG", "HAP", "SAD"):
        for k in range(n_per):
            name = f"{1001 + k}_{['IEO', 'TIE', 'DFA'][k % 3]}_{emo}_XX"
            write_wav(root / f"{name}.wav", seconds=0.01)
            names.append(name)
    return names


def test_train_adapter_audio_with_callable_encoder(tmp_path):
    """The audio path: a real reader over a generated CREMA-D tree, a synthetic stage-1 encoder whose
    features carry the emotion (by the file name), the folder, and refine() on new features."""
    _audio_items(tmp_path / "cremad", 40)
    centres = {"anger": 4.0, "joy": -4.0, "sadness": 0.0}

    def fake_encoder(items: list[EmotionItem]) -> np.ndarray:  # (n, 6) "emotion features"
        rng = np.random.default_rng(len(items))
        base = np.array([[centres[it.label], -centres[it.label], 1.0, 0.0, 0.0, 0.0] for it in items])
        return (base + rng.normal(size=base.shape)).astype(np.float32)

    enc = callable_encoder("fake-egemaps", "fake-fp", 6, fake_encoder)
    out = tmp_path / "adapter"
    res = train_adapter("audio", [("cremad", str(tmp_path / "cremad"))], enc, out, per_class=30,
                        config=AdaptTrainConfig(**TINY, heldout=0.2), progress=False)
    assert res.metrics["heldout"]["weighted_f1"] > 0.85
    for f in ("config.json", "model.safetensors", "labels.json", "metrics.json", "confusion_heldout.png",
              "training_curve.png"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["encoder"] == {"name": "fake-egemaps", "fingerprint": "fake-fp", "dim": 6}
    assert cfg["modality"] == "audio" and cfg["labels"] == ["anger", "joy", "sadness"]
    assert cfg["counts"]["sample_counts"] == {"anger": 30, "joy": 30, "sadness": 30}
    assert cfg["counts"]["pooled_counts"]["anger"] == 40 and cfg["corpora"][0]["name"] == "cremad"
    assert cfg["mapping"]["corpora"]["cremad"]["labels"]["ANG"] == "anger"
    assert cfg["provenance"]["date"] and cfg["train"]["seed"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["heldout"]) >= {"weighted_f1", "accuracy", "per_class_f1", "confusion"}
    a = Adapter.from_pretrained(out)
    X = fake_encoder([EmotionItem("x", "anger", "x", "audio")] * 4)
    assert a.refine(X).shape == (4, 8)
    assert a.predict(X) == ["anger"] * 4
    with pytest.raises(OutputExistsError):
        train_adapter("audio", [("cremad", str(tmp_path / "cremad"))], enc, out, per_class=30,
                      config=AdaptTrainConfig(**TINY), progress=False)


def test_evaluate_transfer_scores_unlearnt_classes_zero():
    a = Adapter(AdapterConfig(d_in=2, n_classes=2, hidden=4, bottleneck=2), labels=["joy", "sadness"])
    with torch.no_grad():
        for p in a.parameters():
            p.zero_()
        a.head.bias.copy_(torch.tensor([1.0, 0.0]))  # always joy
    m = evaluate_transfer(a, np.zeros((4, 2), np.float32), ["joy", "joy", "neutral", "sadness"],
                          ["joy", "neutral", "sadness"])
    assert m["accuracy"] == 0.5 and m["per_class_f1"]["neutral"] == 0.0 and m["n"] == 4


class HashTextEncoder(TextEncoder):
    """A deterministic stand-in text encoder: emotion words light up fixed dimensions."""
    name, dim, fingerprint = "hash", 8, "hash-v1"
    WORDS = ["angry", "happy", "sad", "scared"]

    def __init__(self):
        self.calls = 0

    def _encode_batch(self, texts):
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for j, w in enumerate(self.WORDS):
                out[i, j] = float(w in t)
            out[i, 4 + len(t) % 4] = 0.5
        return out


def _text_corpus(tmp_path: Path) -> Path:
    lines = [json.dumps({"text": f"{w} thing number {k}", "emotion": e})
             for w, e in (("angry", "anger"), ("happy", "joy"), ("sad", "sadness"), ("scared", "fear"))
             for k in range(30)]
    (tmp_path / "mine.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "mine.jsonl"


def test_text_adapter_through_feature_cache(tmp_path, monkeypatch):
    from merc.training.adapt_data import CachedTextEncoder
    path = _text_corpus(tmp_path)
    enc = HashTextEncoder()
    cached = CachedTextEncoder(enc, cache_dir=tmp_path / "cache", progress=False)
    cfg = AdaptTrainConfig(**TINY, heldout=0.2)
    res = train_adapter("text", [("jsonl", str(path))], cached, tmp_path / "a1", per_class=25, config=cfg,
                        progress=False)
    assert enc.calls == 100 and res.metrics["heldout"]["weighted_f1"] > 0.9
    train_adapter("text", [("jsonl", str(path))], cached, tmp_path / "a2", per_class=25, config=cfg, progress=False)
    assert enc.calls == 100  # the second run read the cache


@pytest.mark.slow
def test_merc_adapt_cli(tmp_path, monkeypatch):
    from merc import cli
    from merc.encoders import base
    path = _text_corpus(tmp_path)
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    info = base.EncoderInfo("hash", "text", 8, "", lambda **kw: HashTextEncoder())
    monkeypatch.setitem(base._REGISTRY, ("text", "hash"), info)
    out = tmp_path / "adapter"
    argv = ["adapt", "--modality", "text", "--encoder", "hash", "--corpus", f"jsonl={path}", "--per-class", "20",
            "--hidden", "16", "--epochs", "5", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    assert json.loads((out / "config.json").read_text())["encoder"]["name"] == "hash"
    assert cli.main(argv) == 2  # exists: one-line error, not a traceback
    assert cli.main(argv[:-3] + ["--corpus", "nonsense", "--out", str(tmp_path / "b")]) == 2
    audio = ["adapt", "--modality", "audio", "--encoder", "egemaps", "--corpus", f"cremad={tmp_path}", "--out",
             str(tmp_path / "c")]
    assert cli.main(audio) == 2 and not (tmp_path / "c").exists()  # no CREMA-D wavs there: a clear error
