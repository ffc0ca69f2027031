"""Stage 3 of identity-based transfer (``merc train --adapters``, ``--tune-adapters``) and ``merc experiment
transfer``: tiny adapters fitted on synthetic stage-1 features, fake audio / face providers whose features carry
the label (the text does not), tiny dialogue models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from merc.cli import main
from merc.encoders import register_encoder
from merc.errors import ConfigError, IncompatibleRunError
from merc.models.adapted import AdaptedModel
from merc.models.adapter import Adapter
from merc.models.dialogue import DialogueConfig
from merc.testing.fakes import FakeProvider, HashedWords, write_label_free_corpus
from merc.training import experiment
from merc.training.adapt import AdaptTrainConfig, fit_adapter
from merc.training.adapters import parse_adapters
from merc.training.features import FEATURE_PROVIDERS
from merc.training.run import from_pretrained
from merc.training.trainer import TrainConfig

pytestmark = pytest.mark.slow  # media fixtures / several trainings: not in make test-fast

LABELS = ["angry", "calm", "happy"]
HIDDEN: dict[str, str] = {}  # utterance id -> label, known to the fake audio / face encoders only
TINY_ADAPTER = dict(hidden=16, bottleneck=8, epochs=40, patience=40, batch_size=32, lr=1e-2, dropout=0.2)


register_encoder("toytr", lambda **kw: HashedWords("toytr"), modality="text", dim=None, overwrite=True)


def audio_vector(label: str, r: np.random.Generator) -> np.ndarray:
    """6 raw dims around a label-dependent mean, offset and scaled (the adapter standardises its input)."""
    return 200.0 + 50.0 * (np.eye(3)[LABELS.index(label)].repeat(2) + 0.5 * r.normal(size=6))


def face_vector(label: str, r: np.random.Generator) -> np.ndarray:
    """4 dims, a weaker label signal than the audio's."""
    return np.r_[np.eye(3)[LABELS.index(label)], 0.0] + 1.5 * r.normal(size=4)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_label_free_corpus(tmp_path_factory.mktemp("tr"), LABELS, HIDDEN,
                                   sizes={"train": 60, "dev": 20, "test": 20}, turns=(3, 7))


@pytest.fixture
def providers(monkeypatch, tmp_path):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    audio = FakeProvider("fakeaudio", "fakeaudio-v1", 0.125, audio_vector, HIDDEN)
    monkeypatch.setitem(FEATURE_PROVIDERS, "audio", audio)
    monkeypatch.setitem(FEATURE_PROVIDERS, "face", FakeProvider("fakeface", "fakeface-v1", 0.2, face_vector, HIDDEN))


def make_adapter(folder: Path, *, modality: str, encoder: dict, X: np.ndarray, y: np.ndarray) -> Adapter:
    """A tiny adapter fitted on synthetic stage-1 features of 'another corpus' and saved as merc adapt would."""
    torch.manual_seed(0)
    res = fit_adapter(X.astype(np.float32), y, LABELS, AdaptTrainConfig(**TINY_ADAPTER), progress=False)
    res.adapter.modality, res.adapter.encoder = modality, encoder
    res.adapter.save_pretrained(folder)
    return res.adapter


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    r = np.random.default_rng(7)
    y = r.integers(0, 3, size=300)
    Xa = np.stack([audio_vector(LABELS[k], r) for k in y])
    make_adapter(root / "audio", modality="audio", encoder={"name": "fakeaudio", "fingerprint": "fakeaudio-v1",
                                                            "dim": 6}, X=Xa, y=y)
    make_adapter(root / "audio_other", modality="audio", encoder={"name": "otheraudio", "fingerprint": "other-v9",
                                                                  "dim": 6}, X=Xa, y=y)
    Xt = HashedWords("toytr").encode([str(r.choice(["ok then", "sure", "well"])) for _ in y], progress=False)
    make_adapter(root / "text", modality="text", encoder={"name": "toytr", "fingerprint": "toytr-v1", "dim": 16},
                 X=Xt, y=y)
    return root


def _train(root, out, modalities, *extra):
    return main(["train", "--dataset", "jsonl", "--data-dir", str(root), "--model", "gru", "--text-encoder", "toytr",
                 "--modalities", modalities, "--audio-encoders", "fakeaudio", "--face-encoders", "fakeface",
                 "--epochs", "12", "--d-model", "16", "--layers", "1", "--dropout", "0.1", "--lr", "3e-3", "--quiet",
                 "--out", str(out), *extra])


def _state(adapter: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in adapter.state_dict().items()}


# the model


def test_frozen_adapter_output_is_refine_of_the_raw_features_and_ignores_absent_slots(adapter_dirs):
    adapter = Adapter.from_pretrained(adapter_dirs / "audio")
    model = AdaptedModel(DialogueConfig(kind="mamba", input_dims={"text": 16, "audio": 6}, n_classes=3, d_model=16,
                                        n_layers=1), {"audio": Adapter.from_pretrained(adapter_dirs / "audio")})
    model.train()  # frozen adapters stay in eval mode (no dropout) while the dialogue model trains
    assert not model.adapters.training and model.inner.training
    assert all(not p.requires_grad for p in model.adapters.parameters())
    raw = torch.randn(2, 5, 6) * 50 + 200  # (batch, seq_len, d_in)
    refined = model.refine({"audio": raw, "text": torch.zeros(2, 5, 16)})["audio"]
    assert refined.shape == (2, 5, 8)
    np.testing.assert_allclose(refined.detach().reshape(-1, 8).numpy(), adapter.refine(raw.reshape(-1, 6)), rtol=1e-5,
                               atol=1e-6)
    # an absent slot's values (NaN included) reach neither the output nor the gradient
    present = {"audio": torch.tensor([[True, False, True, True, True], [True] * 5]),
               "text": torch.ones(2, 5, dtype=torch.bool)}
    feats = {"text": torch.randn(2, 5, 16), "audio": raw.clone()}
    mask, speakers = torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.long)
    model.eval()
    a = model(feats, speakers, mask, present)
    feats["audio"][0, 1] = float("nan")
    b = model(feats, speakers, mask, present)
    assert torch.equal(a, b)
    model.train()
    b.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_parse_adapters():
    assert parse_adapters("text=a/b, face=c") == {"text": "a/b", "face": "c"}
    assert parse_adapters(None) == {}
    for bad in ("text", "smell=x", "text=a,text=b", "audio="):
        with pytest.raises(ConfigError):
            parse_adapters(bad)

# training


def test_frozen_run_keeps_adapter_weights_and_round_trips_at_predict(corpus_dir, providers, adapter_dirs, tmp_path,
                                                                      capsys):
    folder = tmp_path / "audio_adapter"
    shutil.copytree(adapter_dirs / "audio", folder)
    assert _train(corpus_dir, tmp_path / "run", "text,audio", "--adapters", f"audio={folder}") == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    rec = cfg["adapters"]["audio"]
    assert rec["path"] == str(folder.resolve()) and len(rec["sha256"]) == 64 and cfg["tune_adapters"] is False
    assert rec["encoder"] == {"name": "fakeaudio", "fingerprint": "fakeaudio-v1", "dim": 6}
    assert "audio" not in cfg["normalization"]  # the adapter takes raw features (its own standardisation)
    assert cfg["model"]["input_dims"] == {"text": 16, "audio": 6}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dev"]["weighted_f1"] > 0.7  # the refined audio carries the label (chance ≈ 0.33)
    original = Adapter.from_pretrained(folder)
    shutil.rmtree(folder)  # the run holds the adapter's weights: predict needs no folder
    run = from_pretrained(tmp_path / "run")
    assert isinstance(run.model, AdaptedModel)
    for k, v in _state(original).items():
        assert torch.equal(run.model.adapters["audio"].state_dict()[k], v), k
    from merc.data import load_corpus
    test = load_corpus("jsonl", str(corpus_dir))["test"]
    probs = run.predict(test)
    y = [LABELS.index(u.emotion) for c in test for u in c]
    assert np.mean(np.concatenate(probs).argmax(-1) == np.array(y)) == pytest.approx(metrics["test"]["accuracy"])
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weighted_f1"] == pytest.approx(metrics["test"]["weighted_f1"])


def test_tune_adapters_changes_adapter_weights(corpus_dir, providers, adapter_dirs, tmp_path):
    assert _train(corpus_dir, tmp_path / "tuned", "text,audio", "--adapters",
                  f"audio={adapter_dirs / 'audio'},text={adapter_dirs / 'text'}", "--tune-adapters") == 0
    cfg = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert cfg["tune_adapters"] is True and set(cfg["adapters"]) == {"audio", "text"}
    run = from_pretrained(tmp_path / "tuned")
    for m in ("audio", "text"):
        before, after = _state(Adapter.from_pretrained(adapter_dirs / m)), run.model.adapters[m].state_dict()
        assert not torch.allclose(before["fc1.weight"], after["fc1.weight"]), m
        assert not torch.allclose(before["fc2.weight"], after["fc2.weight"]), m
        # the input standardisation is a buffer of the adapter's own corpus: never trained
        assert torch.equal(before["in_mean"], after["in_mean"])


def test_mismatched_encoder_or_modality_is_refused(corpus_dir, providers, adapter_dirs, tmp_path, capsys):
    assert _train(corpus_dir, tmp_path / "x", "text,audio", "--adapters", f"audio={adapter_dirs / 'audio_other'}") == 2
    err = capsys.readouterr().err
    assert "'otheraudio'" in err and "'fakeaudio'" in err and "other-v9" in err and "fakeaudio-v1" in err
    assert _train(corpus_dir, tmp_path / "y", "text", "--adapters", f"audio={adapter_dirs / 'audio'}") == 2
    assert "--modalities is text" in capsys.readouterr().err
    assert _train(corpus_dir, tmp_path / "z", "text,audio", "--adapters", f"text={adapter_dirs / 'audio'}") == 2
    assert "holds an audio adapter; it was given for text" in capsys.readouterr().err
    assert _train(corpus_dir, tmp_path / "w", "text,audio", "--tune-adapters") == 2
    assert "--tune-adapters needs --adapters" in capsys.readouterr().err

# merc experiment transfer


def _transfer(root, out, *extra):
    return main(["experiment", "transfer", "--dataset", "jsonl", "--data-dir", str(root), "--text-encoder", "toytr",
                 "--audio-encoders", "fakeaudio", "--face-encoders", "fakeface", "--model", "gru", "--epochs", "4",
                 "--d-model", "16", "--layers", "1", "--dropout", "0.1", "--lr", "3e-3", "--seeds", "2", "--quiet",
                 "--out", str(out), *extra])


def test_transfer_table_rows_and_resume(corpus_dir, providers, adapter_dirs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "transfer"
    assert _transfer(corpus_dir, out, "--adapters", f"audio={adapter_dirs / 'audio'}") == 0
    result = json.loads((out / "transfer.json").read_text())
    keys = [r["key"] for r in result["rows"]]
    assert keys == ["text", "text+speaker", "text+speaker+adapters", "text+face", "text+speaker+face",
                    "text+speaker+face+adapters"]
    by = {r["key"]: r for r in result["rows"]}
    assert by["text+speaker+adapters"]["adapters"] == {"audio": str(adapter_dirs / "audio")}
    assert by["text+speaker+face"]["modalities"] == ["text", "audio", "face"]
    for r in result["rows"]:
        for k in ("weighted_f1", "accuracy", "macro_f1"):
            assert r["table"]["test"][k]["n"] == 2 and 0 <= r["table"]["test"][k]["mean"] <= 1
    assert len(result["omitted"]) == 2 and all("no adapter was given" in o for o in result["omitted"])
    md = (out / "transfer.md").read_text()
    assert "| text + speaker, with adapters | audio |" in md and "left out: text + face, with adapters" in md
    assert "| text | none (stage-1 features) |" in md
    # each cell is a real run; its config records the adapters of that row only
    cfg = json.loads((out / "text+speaker+adapters" / "seed_1" / "config.json").read_text())
    assert set(cfg["adapters"]) == {"audio"}
    assert json.loads((out / "text+speaker" / "seed_0" / "config.json").read_text())["adapters"] == {}
    # resume: finished cells are not trained again; a lost cell is
    (out / "cells" / "text+face_seed1.json").unlink()
    calls = []
    real = experiment.run_experiment

    def counting(**kw):
        calls.append((tuple(kw["modalities"]), kw["train_config"].seed))
        return real(**kw)
    monkeypatch.setattr(experiment, "run_experiment", counting)
    capsys.readouterr()
    assert _transfer(corpus_dir, out, "--adapters", f"audio={adapter_dirs / 'audio'}") == 0
    assert calls == [(("text", "face"), 1)]
    again = json.loads((out / "transfer.json").read_text())
    assert [r["table"] for r in again["rows"] if r["key"] != "text+face"] == \
        [r["table"] for r in result["rows"] if r["key"] != "text+face"]
    # other settings on the same --out are refused, not mixed into the means
    assert _transfer(corpus_dir, out, "--adapters", f"audio={adapter_dirs / 'audio'}", "--lr", "1e-3") == 2
    assert "other settings" in capsys.readouterr().err


def test_transfer_without_adapters_says_so(corpus_dir, providers, tmp_path):
    assert _transfer(corpus_dir, tmp_path / "t", "--systems", "text,text+face", "--seeds", "1") == 0
    result = json.loads((tmp_path / "t" / "transfer.json").read_text())
    assert [r["key"] for r in result["rows"]] == ["text", "text+face"]
    assert "No stage-2 adapters were given" in (tmp_path / "t" / "transfer.md").read_text()


def test_adapters_refused_for_matav(corpus_dir, providers, adapter_dirs, tmp_path, capsys):
    assert _train(corpus_dir, tmp_path / "m", "text,audio", "--model", "matav", "--adapters",
                  f"audio={adapter_dirs / 'audio'}") == 2
    assert "dialogue models" in capsys.readouterr().err


def test_frozen_adapter_in_a_direct_experiment_matches_refine(corpus_dir, providers, adapter_dirs, tmp_path):
    """The refined feature the trained model sees is adapter.refine of the raw provider features."""
    from merc.data import load_corpus
    run_dir = tmp_path / "r"
    experiment.run_experiment(dataset="jsonl", data_dir=str(corpus_dir), out=run_dir,
                              model_config=DialogueConfig(kind="mlp", d_model=8, n_layers=1),
                              train_config=TrainConfig(epochs=1), modalities=["text", "audio"],
                              text_encoder="toytr", encoders={"audio": ["fakeaudio"]}, progress=False,
                              adapters={"audio": adapter_dirs / "audio"})
    run = from_pretrained(run_dir)
    test = load_corpus("jsonl", str(corpus_dir))["test"]
    raw = run.features_for(test)["audio"]
    ids = [k for k, v in raw.items() if v is not None][:10]
    X = torch.tensor(np.stack([raw[k] for k in ids]), dtype=torch.float32)[None]  # (1, 10, 6)
    got = run.model.refine({"audio": X})["audio"][0].detach().numpy()
    np.testing.assert_allclose(got, Adapter.from_pretrained(adapter_dirs / "audio").refine(X[0]), rtol=1e-5, atol=1e-6)
    with pytest.raises(IncompatibleRunError):
        Adapter.from_pretrained(adapter_dirs / "audio").refine(np.zeros((2, 5)))
