"""The trainer: objectives and callbacks, and resuming from a checkpoint gives the uninterrupted run's history."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from merc.errors import IncompatibleRunError
from merc.models.dialogue import DialogueConfig, DialogueModel
from merc.models.matav import MatavConfig, MatavModel
from merc.objectives import CrossEntropy
from merc.training.batching import Dialogue
from merc.training.trainer import Callback, TrainConfig, fit

DIMS = {"text": 8, "audio": 4, "face": 3}
LABELS = ["a", "b", "c"]


def dialogues(n: int, seed: int) -> list[Dialogue]:
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n):
        T = int(rng.integers(2, 6))
        y = rng.integers(0, 3, T)
        feats = {m: rng.normal(size=(T, d)).astype(np.float32) for m, d in DIMS.items()}
        feats["text"][:, :3] += 2 * np.eye(3, dtype=np.float32)[y]      # the label is readable from text
        out.append(Dialogue(f"d{c}", [f"d{c}_{i}" for i in range(T)], feats, np.arange(T) % 2, y.astype(np.int64)))
    return out


TRAIN, DEV = dialogues(24, 0), dialogues(8, 1)


def make(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "matav":
        return MatavModel(MatavConfig(input_dims=DIMS, n_classes=3, d_model=8, d_align=8, n_cross_layers=1, n_heads=2,
                                      d_mamba=8, n_mamba_layers=1, d_state=4, dropout=0.2, queue_size=16))
    return DialogueModel(DialogueConfig(kind=kind, input_dims=DIMS, n_classes=3, d_model=8, n_layers=1, dropout=0.2,
                                        d_state=4))


CONFIG = TrainConfig(epochs=5, batch_size=6, lr=1e-2, patience=10, warmup_epochs=1, class_weights="balanced")


class Killed(Exception):
    pass


class KillAfter(Callback):
    """Stands for a killed process: raises once epoch ``k`` is finished (its checkpoint is already written)."""

    def __init__(self, k: int):
        self.k = k

    def on_epoch_end(self, model, row, epoch):
        if epoch == self.k:
            raise Killed


class Steps(Callback):
    def __init__(self):
        self.steps, self.epochs = [], []

    def on_step_end(self, model, batch, step):
        self.steps.append(step)

    def on_epoch_end(self, model, row, epoch):
        self.epochs.append(epoch)


def rows(history):
    return [{k: v for k, v in r.items()} for r in history.epochs]


@pytest.mark.parametrize("kind", ["mlp", "matav"])
def test_resume_after_kill_gives_the_uninterrupted_history(kind, tmp_path):
    full_model = make(kind)
    full = fit(full_model, TRAIN, DEV, LABELS, CONFIG, progress=False, checkpoint_dir=tmp_path / "full")
    model = make(kind)
    with pytest.raises(Killed):
        fit(model, TRAIN, DEV, LABELS, CONFIG, progress=False, checkpoint_dir=tmp_path / "cut",
            callbacks=[KillAfter(1)])
    resumed_model = make(kind, seed=123)           # other initial weights: everything comes from the checkpoint
    steps = Steps()
    resumed = fit(resumed_model, TRAIN, DEV, LABELS, CONFIG, progress=False, checkpoint_dir=tmp_path / "cut",
                  callbacks=[steps])
    assert steps.epochs == [2, 3, 4]                                    # continued after epoch 1
    assert steps.steps[0] == 2 * 4 and len(steps.steps) == 3 * 4        # 24 dialogues / batch 6 = 4 steps per epoch
    assert len(resumed.epochs) == len(full.epochs) == 5
    for a, b in zip(rows(full), rows(resumed)):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    assert resumed.best_epoch == full.best_epoch
    for (k, v), w in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)
    if kind == "matav":
        assert len(resumed_model.queues["text"]) == 16 and "train_mec" in resumed.epochs[0]
    assert not [p for p in (tmp_path / "cut").iterdir() if p.name != "checkpoint.pt"]   # no temp files left


def test_finished_run_returns_at_once_and_settings_must_match(tmp_path):
    model = make("mlp")
    first = fit(model, TRAIN, DEV, LABELS, CONFIG, progress=False, checkpoint_dir=tmp_path)
    steps = Steps()
    again_model = make("mlp", seed=5)
    again = fit(again_model, TRAIN, DEV, LABELS, CONFIG, progress=False, checkpoint_dir=tmp_path, callbacks=[steps])
    assert steps.steps == [] and rows(again) == rows(first)
    for v, w in zip(model.state_dict().values(), again_model.state_dict().values()):
        torch.testing.assert_close(v, w)                                # the dev-best weights
    other = TrainConfig(**{**CONFIG.__dict__, "lr": 1e-3})
    with pytest.raises(IncompatibleRunError, match="lr"):
        fit(make("mlp"), TRAIN, DEV, LABELS, other, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(IncompatibleRunError, match="another model"):
        fit(make("gru"), TRAIN, DEV, LABELS, CONFIG, progress=False, checkpoint_dir=tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(IncompatibleRunError, match="delete it"):
        fit(make("mlp"), TRAIN, DEV, LABELS, CONFIG, progress=False, checkpoint_dir=tmp_path)


def test_default_objective_is_the_configured_cross_entropy_and_custom_objectives_are_used():
    from merc.training.trainer import class_weight_vector
    default = fit(make("mlp"), TRAIN, DEV, LABELS, CONFIG, progress=False)
    ce = CrossEntropy(weight=class_weight_vector(TRAIN, 3, "balanced"))
    explicit = fit(make("mlp"), TRAIN, DEV, LABELS, CONFIG, progress=False, objective=ce)
    assert rows(default) == rows(explicit)
    assert all(r["train_ce"] == pytest.approx(r["train_loss"]) for r in default.epochs)

    calls = []

    def scaled(model, batch):                                           # any callable (model, batch) -> (loss, logs)
        loss, logs = ce(model, batch)
        calls.append(1)
        return 0.0 * loss, {"custom": 1.0}
    model = make("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    h = fit(model, TRAIN, DEV, LABELS, TrainConfig(**{**CONFIG.__dict__, "weight_decay": 0.0}), progress=False,
            objective=scaled)
    assert len(calls) == 5 * 4 and h.epochs[0]["train_custom"] == 1.0 and h.epochs[0]["train_loss"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a zero loss moves nothing


def test_merc_train_resume_continues_a_seed_killed_part_way(tmp_path, monkeypatch):
    """`merc train --resume` after a kill in the middle of a seed continues at its last finished epoch (the
    seed's training state sits in <run>/.train_state until the seed is saved) and ends with the history of a
    run that was never interrupted."""
    import json

    from toy_corpus import TINY, write_corpus

    import merc.training.experiment as experiment
    from merc.cli import main
    from merc.training.experiment import TRAIN_STATE

    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    data = write_corpus(tmp_path / "data")
    args = ["train", "--dataset", "jsonl", "--data-dir", str(data), *TINY, "--epochs", "4"]
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0
    assert not (whole / TRAIN_STATE).exists()  # removed once the seed is saved

    class Kill:
        def on_step_end(self, model, batch, step):
            pass

        def on_epoch_end(self, model, row, epoch):
            if epoch == 1:
                raise KeyboardInterrupt

    real_fit = experiment.fit
    epochs_run = []
    monkeypatch.setattr(experiment, "fit", lambda *a, **k: real_fit(*a, callbacks=[Kill()], **k))
    run = tmp_path / "run"
    assert main([*args, "--out", str(run)]) == 130
    assert (run / TRAIN_STATE).is_dir() and not (run / "metrics.json").exists()

    def counting_fit(*a, **k):
        k["on_epoch"] = lambda row: epochs_run.append(row["epoch"])
        return real_fit(*a, **k)

    monkeypatch.setattr(experiment, "fit", counting_fit)
    assert main([*args, "--out", str(run), "--resume"]) == 0
    assert epochs_run == [2, 3]  # epochs 0 and 1 were not trained again
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (run, whole))
    drop = ("seconds", "train_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in got["history"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in want["history"]]
    assert got["test"]["weighted_f1"] == want["test"]["weighted_f1"]
    assert not (run / TRAIN_STATE).exists()
