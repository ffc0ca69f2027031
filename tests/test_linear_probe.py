"""The linear probe (``--model linear``): sklearn's logistic regression with C chosen on dev, copied into a torch
module that loads, evaluates and predicts like every other run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from merc.cli import main
from merc.models.factory import build_model, config_from_dict
from merc.models.linear import LinearConfig, LinearProbe
from merc.testing.fakes import FakeProvider, write_label_free_corpus
from merc.training.batching import Dialogue
from merc.training.features import FEATURE_PROVIDERS
from merc.training.probe import design_matrix, fit_probe
from merc.training.run import from_pretrained
from merc.training.trainer import TrainConfig, predict_dialogues

LABELS = ["angry", "calm", "happy"]


def dialogues(n: int, rng: np.random.Generator, *, absent: float = 0.0) -> list[Dialogue]:
    """Text is noise; audio (offset, scaled) carries the label; a fraction of audio slots is absent (NaN there)."""
    out = []
    for c in range(n):
        T = int(rng.integers(2, 6))
        y = rng.integers(0, 3, T)
        audio = (100.0 + 20.0 * (np.eye(3)[y] + 0.4 * rng.normal(size=(T, 3)))).astype(np.float32)
        has = rng.random(T) >= absent
        audio[~has] = np.nan  # never read: the probe replaces absent slots by zeros
        out.append(Dialogue(f"c{c}", [f"c{c}_u{t}" for t in range(T)],
                            {"text": rng.normal(size=(T, 4)).astype(np.float32), "audio": audio},
                            np.zeros(T, dtype=np.int64), y.astype(np.int64),
                            {"text": np.ones(T, dtype=bool), "audio": has}))
    return out


def test_probe_fits_chooses_c_on_dev_and_matches_sklearn():
    rng = np.random.default_rng(0)
    train, dev = dialogues(60, rng, absent=0.1), dialogues(20, rng, absent=0.1)
    model = LinearProbe(LinearConfig(input_dims={"text": 4, "audio": 3}, n_classes=3))
    h = fit_probe(model, train, dev, LABELS, TrainConfig(), progress=False)
    assert [r["C"] for r in h.epochs] == list(model.config.c_grid)
    best = max(range(len(h.epochs)), key=lambda i: h.epochs[i]["dev_weighted_f1"])
    assert h.best_epoch == best and model.config.C == h.epochs[best]["C"]
    assert h.best_dev_weighted_f1 > 0.8  # audio carries the label; text is noise
    # the torch module gives sklearn's probabilities for the selected C on the same design matrix
    from merc.training.probe import _stack
    f, p, y = _stack(train, ["text", "audio"])
    X = design_matrix(model, f, p)
    assert np.isfinite(X).all()  # absent (NaN) audio never reaches the design matrix
    assert X[~p["audio"]][:, 5:8].tolist() == [[0.0] * 3] * int((~p["audio"]).sum())
    assert np.allclose(X[p["audio"]][:, 5:8].mean(0), 0, atol=1e-4)  # z-scored with train statistics
    ref = LogisticRegression(C=model.config.C, max_iter=model.config.max_iter).fit(X, y)
    fd, pd_, _ = _stack(dev, ["text", "audio"])
    got = np.concatenate(predict_dialogues(model, dev))
    assert np.allclose(got, ref.predict_proba(design_matrix(model, fd, pd_)), atol=1e-4)


def test_probe_handles_a_class_missing_from_train_and_round_trips_its_config():
    rng = np.random.default_rng(1)
    train = dialogues(30, rng)
    for d in train:
        d.labels[d.labels == 2] = 1  # nobody is happy in train
    model = LinearProbe(LinearConfig(input_dims={"text": 4, "audio": 3}, n_classes=3, c_grid=(1.0,)))
    fit_probe(model, train, dialogues(10, rng), LABELS, TrainConfig(), progress=False)
    probs = np.concatenate(predict_dialogues(model, dialogues(10, rng)))
    assert probs[:, 2].max() < 1e-6 and np.allclose(probs.sum(1), 1)
    cfg = config_from_dict(json.loads(json.dumps(model.config.__dict__)))
    assert cfg == model.config and isinstance(build_model(cfg), LinearProbe)


HIDDEN: dict[str, str] = {}


def audio_vector(label: str, r: np.random.Generator) -> np.ndarray:
    return 200.0 + 50.0 * (np.eye(3)[LABELS.index(label)].repeat(2) + 0.5 * r.normal(size=6))


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(FEATURE_PROVIDERS, "audio", FakeProvider("fakeaudio", "fakeaudio-v1", 0.125, audio_vector,
                                                                 HIDDEN, seed_prefix="", reason="no audio stream"))
    (tmp_path / "mm").mkdir()
    return write_label_free_corpus(tmp_path / "mm", LABELS, HIDDEN, sizes={"train": 60, "dev": 20, "test": 20})


def test_cli_trains_evaluates_and_predicts_a_probe(corpus, tmp_path, capsys):
    from merc.encoders import register_text_encoder
    from merc.testing.fakes import HashedWords
    register_text_encoder("toyprobe", lambda **kw: HashedWords("toyprobe", 16), overwrite=True)
    out = tmp_path / "probe"
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", "linear", "--modalities",
                 "text,audio", "--text-encoder", "toyprobe", "--audio-encoders", "fakeaudio", "--quiet",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dev"]["weighted_f1"] > 0.8 and len(m["history"]) == len(LinearConfig().c_grid)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["kind"] == "linear" and cfg["model"]["C"] == m["history"][m["best_epoch"]]["C"]
    assert (out / "training_curve.png").is_file() and (out / "confusion_test.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weighted_f1"] == pytest.approx(m["test"]["weighted_f1"])
    run = from_pretrained(out)
    assert isinstance(run.model, LinearProbe)
    assert torch.equal(run.model.linear.weight, run.model.linear.weight)  # loaded, finite
    assert np.isfinite(run.model.linear.weight.detach().numpy()).all()
