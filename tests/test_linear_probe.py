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
    assert h.best_epoch == best
    assert h.best_dev_weighted_f1 > 0.8  # audio carries the label; text is noise
    # the torch module gives sklearn's probabilities for the selected C on the same design matrix
    from merc.training.probe import _stack
    f, p, y = _stack(train, ["text", "audio"])
    X = design_matrix(model, f, p)
    assert np.isfinite(X).all()  # absent (NaN) audio never reaches the design matrix
    assert X[~p["audio"]][:, 5:8].tolist() == [[0.0] * 3] * int((~p["audio"]).sum())
    assert np.allclose(X[p["audio"]][:, 5:8].mean(0), 0, atol=1e-4)  # z-scored with train statistics
    ref = LogisticRegression(C=h.epochs[best]["C"], max_iter=model.config.max_iter).fit(X, y)
    fd, pd_, _ = _stack(dev, ["text", "audio"])
    got = np.concatenate(predict_dialogues(model, dev))
    assert np.allclose(got, ref.predict_proba(design_matrix(model, fd, pd_)), atol=1e-4)


def test_probe_can_choose_c_on_dev_log_loss():
    rng = np.random.default_rng(1)
    train, dev = dialogues(40, rng), dialogues(15, rng)
    model = LinearProbe(LinearConfig(input_dims={"text": 4, "audio": 3}, n_classes=3))
    h = fit_probe(model, train, dev, LABELS, TrainConfig(), progress=False, select="loss")
    losses = [r["dev_loss"] for r in h.epochs]
    assert h.best_epoch == int(np.argmin(losses))  # first of equal losses: the smaller C
    assert h.best_dev_weighted_f1 == h.epochs[h.best_epoch]["dev_weighted_f1"]
    # the module holds that C's weights: its dev log loss is the recorded one
    probs = np.concatenate(predict_dialogues(model, dev))
    y = np.concatenate([d.labels for d in dev])
    assert -np.log(probs[np.arange(len(y)), y]).mean() == pytest.approx(losses[h.best_epoch], rel=1e-4)
    with pytest.raises(Exception, match="unknown probe_select 'accuracy'"):
        TrainConfig(probe_select="accuracy")


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
    from merc.encoders import register_encoder
    from merc.testing.fakes import HashedWords
    register_encoder("toyprobe", lambda **kw: HashedWords("toyprobe", 16), modality="text", dim=16,
                     overwrite=True)
    out = tmp_path / "probe"
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", "linear", "--modalities",
                 "text,audio", "--text-encoder", "toyprobe", "--audio-encoders", "fakeaudio", "--quiet",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dev"]["weighted_f1"] > 0.8 and len(m["history"]) == len(LinearConfig().c_grid)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["kind"] == "linear" and m["probe"]["C"] == m["history"][m["best_epoch"]]["C"]
    # the config is the one given (the dev-selected C lives in metrics.json), so --resume finds it equal
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", "linear", "--modalities",
                 "text,audio", "--text-encoder", "toyprobe", "--audio-encoders", "fakeaudio", "--quiet",
                 "--out", str(out), "--resume"]) == 0
    assert (out / "training_curve.png").is_file() and (out / "confusion_test.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weighted_f1"] == pytest.approx(m["test"]["weighted_f1"])
    run = from_pretrained(out)
    assert isinstance(run.model, LinearProbe)
    assert torch.equal(run.model.linear.weight, run.model.linear.weight)  # loaded, finite
    assert np.isfinite(run.model.linear.weight.detach().numpy()).all()


# fusion: the per-utterance path started from the probe (LP-FT), the schedule, the defaults by run


@pytest.mark.parametrize("family", ["mamba", "matav"])
def test_probe_init_makes_the_model_compute_the_probe(family):
    from merc.models.dialogue import DialogueConfig
    from merc.models.matav import MatavConfig
    from merc.training.probe import init_from_probe
    rng = np.random.default_rng(3)
    train, dev = dialogues(40, rng, absent=0.2), dialogues(15, rng, absent=0.2)
    dims = {"text": 4, "audio": 3}
    cfg = (DialogueConfig(kind="mamba", input_dims=dims, n_classes=3, d_model=8, n_layers=1, d_state=4,
                          utterance_logits=True) if family == "mamba" else
           MatavConfig(input_dims=dims, n_classes=3, d_model=8, d_align=8, n_cross_layers=1, n_heads=2, d_mamba=8,
                       n_mamba_layers=1, d_state=4, queue_size=8, utterance_logits=True))
    torch.manual_seed(0)
    model = build_model(cfg)
    h = init_from_probe(model, train, dev, LABELS, TrainConfig(), progress=False)
    probe = LinearProbe(LinearConfig(input_dims=dims, n_classes=3, c_grid=(h.epochs[h.best_epoch]["C"],)))
    fit_probe(probe, train, dev, LABELS, TrainConfig(), progress=False)
    got, want = np.concatenate(predict_dialogues(model, dev)), np.concatenate(predict_dialogues(probe, dev))
    assert np.allclose(got, want, atol=1e-5)  # absent audio (NaN in its slot) included
    with pytest.raises(Exception, match="no per-utterance path"):
        init_from_probe(build_model(replace_cfg(cfg)), train, dev, LABELS, TrainConfig(), progress=False)


def replace_cfg(cfg):
    from dataclasses import replace
    return replace(cfg, utterance_logits=False)


def test_schedule_length_stretches_small_corpora_only():
    from merc.training.trainer import schedule_length
    assert schedule_length(TrainConfig(), 65) == (25, 5)                      # MELD: 1,625 steps already
    assert schedule_length(TrainConfig(min_steps=600), 65) == (25, 5)
    assert schedule_length(TrainConfig(min_steps=600), 10) == (60, 12)        # 150 dialogues in batches of 16
    assert schedule_length(TrainConfig(min_steps=0), 1) == (25, 5)


def test_fusion_defaults_by_run():
    from merc.errors import ConfigError
    from merc.models.dialogue import DialogueConfig
    from merc.training.defaults import RESIDUAL_MIN_STEPS, fusion_defaults, resolve_fusion
    assert resolve_fusion("auto", ["text"]) == "plain"
    assert resolve_fusion("auto", ["text", "audio"]) == "residual" == resolve_fusion("auto", ["face"])
    assert resolve_fusion("auto", ["text", "audio"], adapters=True) == "plain"
    with pytest.raises(ConfigError, match="--adapters"):
        resolve_fusion("residual", ["audio"], adapters=True)
    mc, tc = fusion_defaults(DialogueConfig(), TrainConfig(), ["text"])
    assert mc == DialogueConfig() and tc == TrainConfig()  # text-only runs are exactly as before
    mc, tc = fusion_defaults(DialogueConfig(), TrainConfig(), ["text", "audio"])
    assert mc.utterance_logits and tc.probe_init and tc.min_steps == RESIDUAL_MIN_STEPS
    assert fusion_defaults(DialogueConfig(), TrainConfig(), ["audio"], min_steps=0)[1].min_steps == 0
    assert fusion_defaults(LinearConfig(), TrainConfig(), ["audio"]) == (LinearConfig(), TrainConfig())
    from merc.models.matav import MatavConfig  # MaTAV keeps its own fusion unless asked (measured: see defaults)
    assert fusion_defaults(MatavConfig(), TrainConfig(), ["text", "audio"]) == (MatavConfig(), TrainConfig())
    assert fusion_defaults(MatavConfig(), TrainConfig(), ["text"]) == (MatavConfig(), TrainConfig())
    assert fusion_defaults(MatavConfig(), TrainConfig(), ["audio"], mode="residual")[0].utterance_logits
    for single in (["audio"], ["face"]):  # one modality: nothing to cross-attend, the per-utterance path instead
        mc, tc = fusion_defaults(MatavConfig(), TrainConfig(), single)
        assert mc.utterance_logits and tc.probe_init and tc.min_steps == RESIDUAL_MIN_STEPS
    assert fusion_defaults(MatavConfig(), TrainConfig(), ["audio"], mode="plain") == (MatavConfig(), TrainConfig())


@pytest.mark.slow
def test_cli_residual_fusion_starts_from_the_probe_and_never_falls_below_it_on_dev(corpus, tmp_path, capsys):
    from merc.encoders import register_encoder
    from merc.testing.fakes import HashedWords
    register_encoder("toyprobe", lambda **kw: HashedWords("toyprobe", 16), modality="text", dim=16,
                     overwrite=True)
    common = ["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--modalities", "text,audio",
              "--text-encoder", "toyprobe", "--audio-encoders", "fakeaudio", "--quiet", "--d-model", "16",
              "--layers", "1", "--epochs", "3"]
    assert main([*common, "--model", "linear", "--out", str(tmp_path / "probe")]) == 0
    assert main([*common, "--model", "gru", "--min-steps", "30", "--out", str(tmp_path / "res")]) == 0  # auto: residual
    assert main([*common, "--model", "gru", "--fusion", "plain", "--out", str(tmp_path / "plain")]) == 0
    probe = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    res = json.loads((tmp_path / "res" / "metrics.json").read_text())
    cfg = json.loads((tmp_path / "res" / "config.json").read_text())
    assert cfg["model"]["utterance_logits"] and cfg["train"]["probe_init"] and cfg["train"]["min_steps"] == 30
    # the start is the probe whose C has the lowest dev log loss (the probe row chooses C on dev weighted F1)
    by_loss = min(probe["history"], key=lambda r: (r["dev_loss"], r["C"]))
    assert res["probe"]["C"] == by_loss["C"] and cfg["train"]["probe_select"] == "loss"
    assert res["probe"]["dev_weighted_f1"] == pytest.approx(by_loss["dev_weighted_f1"])
    assert res["dev"]["weighted_f1"] >= res["probe"]["dev_weighted_f1"] - 1e-9  # never below its start on dev
    assert main([*common, "--model", "gru", "--min-steps", "30", "--probe-select", "weighted_f1",
                 "--out", str(tmp_path / "res_f1")]) == 0  # the criterion of runs before probe_select
    res_f1 = json.loads((tmp_path / "res_f1" / "metrics.json").read_text())
    assert res_f1["probe"]["C"] == probe["history"][probe["best_epoch"]]["C"]
    assert res_f1["dev"]["weighted_f1"] >= probe["dev"]["weighted_f1"] - 1e-9
    assert len(res["history"]) > 3  # 30 steps of 4 dialogue batches: the 3 epochs were stretched
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not plain["model"]["utterance_logits"] and not plain["train"]["probe_init"]
    with pytest.raises(SystemExit):
        main([*common, "--model", "gru", "--min-steps", "-3", "--out", str(tmp_path / "bad")])
    assert "--min-steps: expected a number of steps >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--model", "gru", "--probe-select", "accuracy", "--out", str(tmp_path / "bad")])
    assert "--probe-select: invalid choice: 'accuracy'" in capsys.readouterr().err
    # the run loads and evaluates to the recorded figures
    assert main(["evaluate", str(tmp_path / "res"), "--split", "dev", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weighted_f1"] == pytest.approx(res["dev"]["weighted_f1"])
