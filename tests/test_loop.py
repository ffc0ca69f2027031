"""The shared training loop (merc.loop): selection on the dev metric, early stopping, the best weights,
checkpoints that resume (between and inside epochs, and from the dialogue trainer's format-1 files), schedules,
devices; and that the adapter fit through it equals the loop it replaced."""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from merc.errors import IncompatibleRunError
from merc.loop import Callback, LoopConfig, lr_lambda, run_loop, to_device

DATA = Path(__file__).parent / "data"


class Toy:
    """A linear classifier on fixed random data; ``evaluate`` returns a scripted dev metric (or the real accuracy)
    so the selection can be checked exactly."""

    def __init__(self, metrics: list[float] | None = None, n: int = 20, batch_size: int = 6, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.X, self.y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
        self.batch_size, self.metrics, self.calls = batch_size, metrics, 0
        self.steps_per_epoch = math.ceil(n / batch_size)

    def batches(self, epoch: int):
        perm = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(epoch))  # replays per epoch
        return [(self.X[b], self.y[b]) for b in perm.split(self.batch_size)]

    def loss(self, model, batch):
        X, y = batch
        return F.cross_entropy(model(X), y), {"one": 1.0}

    def evaluate(self, model):
        self.calls += 1
        with torch.no_grad():
            acc = float((model(self.X).argmax(1) == self.y).float().mean())
        return {"dev_weighted_f1": self.metrics[self.calls - 1] if self.metrics else acc, "dev_accuracy": acc}


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Dropout(0.3),
                               torch.nn.Linear(8, 3))


class Snapshots(Callback):
    def __init__(self):
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, model, row, epoch):
        self.weights.append({k: v.clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("metrics,patience,best,run", [
    ([0.1, 0.3, 0.2, 0.3, 0.25, 0.9], 3, 1, 5),   # a tie is no improvement: stale 1, 2, 3 after epoch 1
    ([0.1, 0.3, 0.2, 0.3, 0.25, 0.9], None, 5, 6),  # no early stopping: every epoch, the last is best
    ([0.5, 0.4, 0.6, 0.1, 0.2, 0.3], 1, 0, 2),
])
def test_selection_and_early_stopping(metrics, patience, best, run):
    m, snaps = model(), Snapshots()
    res = run_loop(m, Toy(metrics), LoopConfig(epochs=6, lr=0.05, patience=patience), callbacks=[snaps],
                   progress=False)
    assert len(res.rows) == run and res.best_epoch == best and res.best_metric == metrics[best]
    assert [r["epoch"] for r in res.rows] == list(range(run)) and all(r["train_one"] == 1.0 for r in res.rows)
    for k, v in m.state_dict().items():  # the model holds the best epoch's weights, not the last
        assert torch.equal(v, snaps.weights[best][k]), k
    if best != run - 1:
        assert any(not torch.equal(v, snaps.weights[-1][k]) for k, v in m.state_dict().items())


def test_keep_best_off_keeps_the_last_weights_and_calls_on_best():
    class T(Toy):
        bests: list[int] = []

        def on_best(self, model, epoch):
            self.bests.append(epoch)

    m, snaps, task = model(), Snapshots(), T([0.2, 0.5, 0.4])
    res = run_loop(m, task, LoopConfig(epochs=3, lr=0.05, keep_best=False, epoch_base=1), callbacks=[snaps],
                   progress=False)
    assert task.bests == [0, 1] and res.best_epoch == 2 and [r["epoch"] for r in res.rows] == [1, 2, 3]
    assert all(torch.equal(v, snaps.weights[-1][k]) for k, v in m.state_dict().items())


class Kill(Callback):
    def __init__(self, at_step: int):
        self.at = at_step

    def on_step_end(self, model, batch, step):
        if step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("minutes,kill_step", [(None, 7), (0.0, 7), (0.0, 2)])
def test_resume_equals_the_uninterrupted_run(tmp_path, minutes, kill_step):
    """Killed at global step ``kill_step`` (4 steps an epoch): with checkpoints only at epoch ends the run
    resumes at the last finished epoch; with ``checkpoint_minutes=0`` at the last step. Either way it ends with
    the uninterrupted run's history and weights (dropout masks included: the torch RNG is restored)."""
    cfg = LoopConfig(epochs=4, lr=0.05, schedule="cosine", warmup_steps=3, grad_clip=0.5, patience=3,
                     checkpoint_minutes=minutes)
    whole = model()
    ref = run_loop(whole, Toy(), cfg, checkpoint=tmp_path / "a.pt", settings={"lr": 0.05}, progress=False)
    torch.manual_seed(99)  # the resumed run must not depend on the process's RNG
    with pytest.raises(KeyboardInterrupt):
        run_loop(model(), Toy(), cfg, checkpoint=tmp_path / "b.pt", settings={"lr": 0.05},
                 callbacks=[Kill(kill_step)], progress=False)
    steps = []

    class Count(Callback):
        def on_step_end(self, model, batch, step):
            steps.append(step)

    resumed = model(seed=5)
    res = run_loop(resumed, Toy(), cfg, checkpoint=tmp_path / "b.pt", settings={"lr": 0.05}, callbacks=[Count()],
                   progress=False)
    first = kill_step + 1 if minutes is not None else (kill_step // 4) * 4
    assert steps[0] == first and steps[-1] == 15
    assert res.rows == ref.rows and res.best_epoch == ref.best_epoch
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]  # no temp files
    again = run_loop(model(seed=7), Toy(), cfg, checkpoint=tmp_path / "b.pt", settings={"lr": 0.05},
                     callbacks=[Count()], progress=False)
    assert again.rows == ref.rows and len(steps) == 16 - first  # finished: returns at once


def test_checkpoint_errors_say_what_to_do(tmp_path):
    cfg = LoopConfig(epochs=1, lr=0.05)
    ck = tmp_path / "c.pt"
    run_loop(model(), Toy(), cfg, checkpoint=ck, settings={"lr": 0.05, "seed": 0}, progress=False)
    with pytest.raises(IncompatibleRunError, match=r"other training settings.*'seed': \(0, 1\)"):
        run_loop(model(), Toy(), cfg, checkpoint=ck, settings={"lr": 0.05, "seed": 1}, progress=False)
    # a setting the checkpoint predates takes its default
    run_loop(model(), Toy(), cfg, checkpoint=ck, settings={"lr": 0.05, "seed": 0, "new": 2}, defaults={"new": 2},
             progress=False)
    with pytest.raises(IncompatibleRunError, match="another model"):
        run_loop(torch.nn.Linear(4, 3), Toy(), cfg, checkpoint=ck, settings={"lr": 0.05, "seed": 0}, progress=False)
    torch.save({"weights": np.float64(1.0)}, ck)  # needs unpickling: refused, not run
    with pytest.raises(IncompatibleRunError, match="cannot read .* delete it"):
        run_loop(model(), Toy(), cfg, checkpoint=ck, progress=False)
    torch.save({"model": {}}, ck)
    with pytest.raises(IncompatibleRunError, match="older merc"):
        run_loop(model(), Toy(), cfg, checkpoint=ck, progress=False)


def test_format1_dialogue_checkpoint_resumes_to_the_uninterrupted_history(tmp_path):
    """tests/data/train_state_v1/checkpoint.pt was written by the dialogue trainer before the shared loop (tiny
    MLP of test_trainer_resume, killed after epoch 1): it resumes and ends as a run never interrupted."""
    from test_trainer_resume import CONFIG, DEV, LABELS, TRAIN, Steps, make

    from merc.training.trainer import fit
    shutil.copytree(DATA / "train_state_v1", tmp_path / "state")
    full_model = make("mlp")
    full = fit(full_model, TRAIN, DEV, LABELS, CONFIG, progress=False)
    steps, resumed_model = Steps(), make("mlp", seed=3)
    resumed = fit(resumed_model, TRAIN, DEV, LABELS, CONFIG, progress=False, checkpoint_dir=tmp_path / "state",
                  callbacks=[steps])
    assert steps.epochs == [2, 3, 4]
    assert len(resumed.epochs) == len(full.epochs) and resumed.best_epoch == full.best_epoch
    for a, b in zip(full.epochs, resumed.epochs):  # the fixture's epochs 0-1 ran in another process (threads)
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    for k, v in full_model.state_dict().items():
        torch.testing.assert_close(v, resumed_model.state_dict()[k], msg=k)


def test_schedules():
    warm, total = 4, 20
    for kind in ("constant", "linear", "cosine"):
        f = [lr_lambda(kind, warm, total)(s) for s in range(total)]
        assert f[:warm] == [(s + 1) / warm for s in range(warm)] and f[warm] == 1.0
        assert all(0 <= x <= 1 for x in f)
    lin, cos = ([lr_lambda(k, warm, total)(s) for s in range(warm, total)] for k in ("linear", "cosine"))
    assert all(a > b for a, b in zip(lin, lin[1:])) and all(a > b for a, b in zip(cos, cos[1:]))
    assert lin[-1] == pytest.approx(1 / (total - warm)) and cos[-1] == pytest.approx(0, abs=0.01)
    assert lr_lambda("linear", 0, 10)(0) == 1.0  # no warm-up
    with pytest.raises(ValueError, match="schedule"):
        LoopConfig(epochs=1, lr=1.0, schedule="step")


def test_optimizer_uses_the_decay_groups():
    """Biases and LayerNorm weights are not decayed: with zero gradients only the matrices shrink."""
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}

    class Zero(Toy):
        def loss(self, model, batch):
            return 0.0 * model(batch[0]).sum(), {}

    run_loop(m, Zero([0.5]), LoopConfig(epochs=1, lr=0.1, weight_decay=0.5), progress=False)
    after = m.state_dict()
    for k in after:
        if k.endswith("bias") or k.startswith("1."):
            assert torch.equal(after[k], before[k]), k
        else:
            assert after[k].abs().sum() < before[k].abs().sum(), k


@dataclass
class Pair:
    x: torch.Tensor
    ids: list[str]
    extra: dict


def test_to_device_moves_every_tensor():
    b = Pair(torch.ones(2), ["a"], {"m": torch.zeros(1), "t": (torch.ones(1), 3)})
    out = to_device(b, torch.device("meta"))
    assert out.x.device.type == "meta" and out.extra["m"].device.type == "meta"
    assert out.extra["t"][0].device.type == "meta" and out.extra["t"][1] == 3 and out.ids == ["a"]
    assert b.x.device.type == "cpu"


def test_adapter_fit_equals_the_loop_it_replaced():
    """fit_adapter through the shared loop gives the weights and selection of the adapter's own loop before it
    (copied here as the reference) when nothing is decayed; with decay, biases are spared."""
    from test_adapter import blobs

    from merc.metrics import evaluate_predictions
    from merc.models.adapter import Adapter, AdapterConfig
    from merc.training.adapt import AdaptTrainConfig, _class_weights, fit_adapter, stratified_split
    X, y = blobs(20, 3, 6, sep=1.0)
    labels = ["a", "b", "c"]
    cfg = AdaptTrainConfig(hidden=8, bottleneck=4, epochs=12, patience=3, batch_size=16, lr=1e-2, weight_decay=0.0)

    # the loop fit_adapter had before merc.loop
    torch.manual_seed(cfg.seed)
    tr, ho = stratified_split(y, cfg.heldout, cfg.seed)
    ref = Adapter(AdapterConfig(d_in=6, n_classes=3, hidden=8, bottleneck=4, dropout=cfg.dropout), labels=labels)
    ref.set_input_stats(X[tr])
    w = _class_weights(y[tr], 3, cfg.class_weights)
    opt = torch.optim.AdamW(ref.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    Xt, yt, Xh = torch.from_numpy(X[tr]), torch.from_numpy(y[tr]), torch.from_numpy(X[ho])
    gen, best, stale, f1s = torch.Generator().manual_seed(cfg.seed), (-1.0, -1, None), 0, []
    for epoch in range(1, cfg.epochs + 1):
        ref.train()
        perm = torch.randperm(len(tr), generator=gen)
        for s in range(0, len(tr), cfg.batch_size):
            b = perm[s:s + cfg.batch_size]
            loss = F.cross_entropy(ref(Xt[b]), yt[b], weight=w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        ref.eval()
        with torch.no_grad():
            f1 = evaluate_predictions(y[ho], ref(Xh).argmax(1).numpy(), labels)["weighted_f1"]
        f1s.append(f1)
        if f1 > best[0]:
            best, stale = (f1, epoch, {k: v.clone() for k, v in ref.state_dict().items()}), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break

    res = fit_adapter(X, y, labels, cfg, progress=False)
    assert res.metrics["best_epoch"] == best[1] and [r["dev_weighted_f1"] for r in res.history] == f1s
    for k, v in best[2].items():
        assert torch.equal(v, res.adapter.state_dict()[k]), k
    decayed = fit_adapter(X, y, labels, AdaptTrainConfig(**{**cfg.__dict__, "weight_decay": 0.01}), progress=False)
    f1 = [r["dev_weighted_f1"] for r in decayed.history]  # with decay (biases spared) it trains and selects alike
    assert decayed.metrics["best_epoch"] == 1 + int(np.argmax(f1))
    assert decayed.metrics["heldout"]["weighted_f1"] == pytest.approx(max(f1))
