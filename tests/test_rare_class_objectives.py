"""Rare-class objectives (merc.objectives): focal loss, effective-number class weights, SupCon over the
dialogue model's hidden states — each against a hand computation — and how the trainer picks them."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from merc.errors import ConfigError
from merc.models.dialogue import DialogueConfig, DialogueModel
from merc.objectives import (
    IGNORE_INDEX,
    CrossEntropy,
    FocalLoss,
    SupConObjective,
    class_weights,
    focal_loss,
    objective_for,
    supcon_loss,
)
from merc.training.batching import Dialogue, collate
from merc.training.trainer import TrainConfig, class_weight_vector, fit, train_objective


def _logits_labels(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, 4, generator=g)                         # (batch, max_len, n_classes)
    labels = torch.randint(0, 4, (3, 5), generator=g)
    labels[0, 3:] = IGNORE_INDEX                                        # padding
    labels[2, 1] = IGNORE_INDEX                                         # an unlabelled utterance
    return logits, labels


@pytest.mark.parametrize("weighted", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy(weighted):
    logits, labels = _logits_labels()
    w = torch.tensor([0.5, 1.0, 2.0, 0.5]) if weighted else None
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), weight=w, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0, weight=w), ce, rtol=1e-6, atol=1e-7)
    assert float(focal_loss(logits, labels, gamma=2.0, weight=w)) < float(ce)  # (1-p)^γ < 1 shrinks every term


def test_focal_matches_hand_computation():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])      # (1, 3, 2); the last is padding
    labels = torch.tensor([[0, 0, IGNORE_INDEX]])
    alpha = torch.tensor([3.0, 1.0])
    expect = []
    for z, y in (([2.0, 0.0], 0), ([0.0, 1.0], 0)):
        p = math.exp(z[y]) / sum(math.exp(v) for v in z)
        expect.append(-(1 - p) ** 2 * math.log(p))
    hand = (3.0 * expect[0] + 3.0 * expect[1]) / (3.0 + 3.0)
    assert float(focal_loss(logits, labels, gamma=2.0, weight=alpha)) == pytest.approx(hand, rel=1e-6)
    assert float(focal_loss(logits, torch.full_like(labels, IGNORE_INDEX))) == 0.0  # nothing labelled


def test_effective_number_weights_match_hand_computation():
    counts, beta = np.array([1000, 100, 10, 0]), 0.99
    raw = [(1 - beta) / (1 - beta ** n) for n in (1000, 100, 10, 1)]    # an absent class counts as 1
    hand = np.array(raw) / np.mean(raw)
    np.testing.assert_allclose(class_weights(counts, "effective", beta=beta), hand, rtol=1e-12)
    np.testing.assert_allclose(class_weights(counts, "effective", beta=0.0), np.ones(4))  # β = 0: no re-weighting
    # the older schemes are unchanged: inverse frequency (clamped at 1), its square root, mean 1
    inv = counts.sum() / (4 * np.maximum(counts, 1.0))
    np.testing.assert_allclose(class_weights(counts, "balanced"), inv / inv.mean())
    np.testing.assert_allclose(class_weights(counts, "sqrt"), np.sqrt(inv) / np.sqrt(inv).mean())
    assert class_weights(counts, "none") is None
    with pytest.raises(ConfigError, match="beta"):
        class_weights(counts, "effective", beta=1.0)
    with pytest.raises(ConfigError, match="effective"):
        class_weights(counts, "inverse")


def _supcon_by_hand(z: list[list[float]], y: list[int], tau: float) -> float:
    """Khosla et al. eq. 2 (L_out) with loops over plain floats."""
    z = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in z]
    dot = [[sum(a * b for a, b in zip(zi, zj)) / tau for zj in z] for zi in z]
    terms = []
    for i in range(len(z)):
        pos = [p for p in range(len(z)) if p != i and y[p] == y[i]]
        if not pos:
            continue
        denom = sum(math.exp(dot[i][a]) for a in range(len(z)) if a != i)
        terms.append(-sum(math.log(math.exp(dot[i][p]) / denom) for p in pos) / len(pos))
    return sum(terms) / len(terms)


def test_supcon_matches_hand_computation_and_ignores_masked_positions():
    z = [[1.0, 0.2], [0.8, 0.5], [-0.3, 1.0], [0.1, -1.0], [2.0, 2.0]]
    y = [0, 0, 1, 1, 2]                                                 # class 2 has no positive: not an anchor
    hand = _supcon_by_hand(z, y, tau=0.5)
    # as a padded (batch=2, max_len=4) batch: the ignored positions hold NaN and must not reach anything
    hidden = torch.full((2, 4, 2), float("nan"))
    labels = torch.full((2, 4), IGNORE_INDEX)
    for k, (b, t) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
        hidden[b, t], labels[b, t] = torch.tensor(z[k]), y[k]
    hidden.requires_grad_(True)
    loss = supcon_loss(hidden, labels, temperature=0.5)
    assert float(loss.detach()) == pytest.approx(hand, rel=1e-5)
    loss.backward()
    grad = hidden.grad
    assert torch.isfinite(grad).all()
    assert (grad[labels == IGNORE_INDEX] == 0).all()
    assert float(supcon_loss(hidden.detach()[:1, 2:3], labels[:1, 2:3])) == 0.0  # no pair: 0


def test_supcon_decreases_when_same_class_points_are_pulled_together():
    g = torch.Generator().manual_seed(1)
    centres = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    noise = torch.randn(8, 8, generator=g)
    losses = [float(supcon_loss(centres[y] + s * noise, y)) for s in (2.0, 1.0, 0.5, 0.1)]
    assert all(a > b for a, b in zip(losses, losses[1:])), losses


def _tiny_model(kind: str = "mamba") -> DialogueModel:
    torch.manual_seed(0)
    return DialogueModel(DialogueConfig(kind=kind, input_dims={"text": 6}, n_classes=3, d_model=8, n_layers=1,
                                        dropout=0.0))


def _dialogues(n: int, seed: int) -> list[Dialogue]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = int(rng.integers(2, 6))
        y = rng.integers(0, 3, t)
        x = rng.normal(size=(t, 6)).astype(np.float32)
        x[np.arange(t), y] += 2.0                                       # a learnable cue
        out.append(Dialogue(f"d{seed}_{i}", [f"d{seed}_{i}_{k}" for k in range(t)], {"text": x},
                            np.arange(t) % 2, y.astype(np.int64)))
    return out


@pytest.mark.parametrize("kind", ["mamba", "gru", "transformer", "mlp"])
def test_return_hidden_keeps_logits_and_supcon_objective_runs(kind):
    model = _tiny_model(kind).eval()
    batch = collate(_dialogues(3, 0))
    logits = model(batch.feats, batch.speakers, batch.mask)
    logits2, hidden = model(batch.feats, batch.speakers, batch.mask, return_hidden=True)
    torch.testing.assert_close(logits, logits2)
    assert hidden.shape == (*batch.mask.shape, 8)
    loss, logs = SupConObjective(CrossEntropy(), weight=0.5, temperature=0.1)(model, batch)
    ce = float(CrossEntropy()(model, batch)[0].detach())
    assert float(loss.detach()) == pytest.approx(logs["cls"] + 0.5 * logs["supcon"], rel=1e-5)
    assert logs["cls"] == pytest.approx(ce, rel=1e-5)


def test_objective_for_and_train_config_choose_the_loss():
    model = _tiny_model()
    assert isinstance(objective_for(model), CrossEntropy)
    assert isinstance(objective_for(model, loss="focal", focal_gamma=1.0), FocalLoss)
    assert isinstance(objective_for(model, loss="supcon"), SupConObjective)
    with pytest.raises(ConfigError, match="loss must be"):
        objective_for(model, loss="dice")
    from merc.models.matav import MatavConfig, MatavModel
    matav = MatavModel(MatavConfig(input_dims={"text": 6}, n_classes=3, d_model=8, d_mamba=8, queue_size=8))
    with pytest.raises(ConfigError, match="supcon"):
        objective_for(matav, loss="supcon")
    train = _dialogues(6, 1)
    obj = train_objective(model, train, 3, TrainConfig(loss="focal", focal_gamma=0.5, class_weights="effective",
                                                       cb_beta=0.9))
    assert isinstance(obj, FocalLoss) and obj.gamma == 0.5
    torch.testing.assert_close(obj.weight, class_weight_vector(train, 3, "effective", beta=0.9))
    # defaults reproduce the plain cross-entropy of old runs; an old train config (no loss fields) loads to them
    assert TrainConfig(**{"epochs": 3, "class_weights": "none"}).loss == "ce"
    assert isinstance(train_objective(model, train, 3, TrainConfig()), CrossEntropy)


@pytest.mark.parametrize("loss", ["focal", "supcon"])
def test_fit_trains_with_each_loss_and_logs_its_terms(loss, tmp_path):
    model = _tiny_model("gru")
    cfg = TrainConfig(epochs=3, batch_size=4, lr=3e-3, loss=loss, class_weights="effective", patience=3)
    history = fit(model, _dialogues(16, 2), _dialogues(6, 3), ["a", "b", "c"], cfg, progress=False,
                  checkpoint_dir=tmp_path)
    first, last = history.epochs[0], history.epochs[-1]
    assert last["train_loss"] < first["train_loss"]
    assert ("train_supcon" in last) == (loss == "supcon") and ("train_focal" in last) == (loss == "focal")
    again = fit(_tiny_model("gru"), _dialogues(16, 2), _dialogues(6, 3), ["a", "b", "c"], cfg, progress=False,
                checkpoint_dir=tmp_path)                                # finished checkpoint: same history
    assert again.epochs == history.epochs


def test_a_seed_recorded_before_the_loss_settings_still_resumes(tmp_path):
    from dataclasses import asdict

    from merc.errors import IncompatibleRunError
    from merc.training.resume import completed_seed
    old_train = {k: v for k, v in asdict(TrainConfig()).items()
                 if k not in ("loss", "focal_gamma", "cb_beta", "supcon_weight", "supcon_temperature")}
    (tmp_path / "config.json").write_text(json.dumps({"model": {"kind": "mamba"}, "train": old_train}))
    (tmp_path / "model.safetensors").write_bytes(b"weights")  # no checksums.json: not verified (old runs)
    (tmp_path / "labels.json").write_text("[]")
    (tmp_path / "metrics.json").write_text('{"dev": {}}')
    assert completed_seed(tmp_path, {"model": {"kind": "mamba"}, "train": asdict(TrainConfig())}) == {"dev": {}}
    with pytest.raises(IncompatibleRunError, match="train"):
        completed_seed(tmp_path, {"model": {"kind": "mamba"}, "train": asdict(TrainConfig(loss="focal"))})


def test_a_seed_recorded_before_a_model_setting_existed_still_resumes(tmp_path):
    from dataclasses import asdict

    from merc.errors import IncompatibleRunError
    from merc.models.dialogue import DialogueConfig
    from merc.training.resume import completed_seed
    old_model = {k: v for k, v in asdict(DialogueConfig()).items() if k != "stacked"}  # before stacked fusion
    train = asdict(TrainConfig())
    (tmp_path / "config.json").write_text(json.dumps({"model": old_model, "train": train}))
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "labels.json").write_text("[]")
    (tmp_path / "metrics.json").write_text('{"dev": {}}')
    assert completed_seed(tmp_path, {"model": asdict(DialogueConfig()), "train": train}) == {"dev": {}}
    with pytest.raises(IncompatibleRunError, match="model"):  # a setting that differs still refuses
        completed_seed(tmp_path, {"model": asdict(DialogueConfig(utterance_logits=True)), "train": train})
