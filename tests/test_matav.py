"""MaTAV: shapes, both attention readings, padding and absent-modality invariance, the ablation switches,
queues and momentum copies inside a training step, run directories, and a tiny end-to-end fit."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from merc.models.factory import build_model, config_from_dict
from merc.models.mamba import Mamba, MambaStack
from merc.models.matav import MatavConfig, MatavModel
from merc.objectives import CrossEntropy, FeatureQueue, MatavObjective, MomentumEncoder, objective_for
from merc.training.batching import IGNORE, Dialogue

DIMS = {"text": 12, "audio": 6, "face": 5}


def tiny(**kw) -> MatavConfig:
    return MatavConfig(**{"input_dims": DIMS, "n_classes": 3, "d_model": 16, "d_align": 8, "n_cross_layers": 2,
                          "n_heads": 2, "d_mamba": 16, "n_mamba_layers": 1, "d_state": 4, "dropout": 0.1,
                          "queue_size": 16, **kw})


@dataclass
class Batch:  # DialogueBatch plus ``present`` (the multimodal batching adds that field)
    feats: dict
    speakers: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    present: dict | None = None


def padded(lengths, dims=DIMS, *, seed=0, absent=None):
    """Right-padded batch with garbage (large random values) at padded positions; ``absent[m]`` (batch, T)
    True where modality m is missing (its slot also gets garbage)."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths) + 2
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    present = {m: mask & ~(absent[m] if absent and m in absent else torch.zeros_like(mask)) for m in dims}
    feats = {m: torch.randn(len(lengths), T, d, generator=g) * torch.where(present[m], 1.0, 50.0)[..., None]
             for m, d in dims.items()}
    speakers = torch.randint(0, 4, (len(lengths), T), generator=g)
    labels = torch.where(mask, torch.randint(0, 3, mask.shape, generator=g), IGNORE)
    return Batch(feats, speakers, mask, labels, present)


def garbage_like(batch: Batch, keep: dict, seed: int) -> dict:
    """Copy of feats with new random values wherever ``keep[m]`` is False."""
    g = torch.Generator().manual_seed(seed)
    return {m: torch.where(keep[m][..., None], f, 100 * torch.randn(f.shape, generator=g))
            for m, f in batch.feats.items()}


def built(utterance_logits: bool = False, **kw) -> MatavModel:
    """A tiny model; with ``utterance_logits`` its per-utterance path gets random (trained-like) weights."""
    torch.manual_seed(0)
    model = MatavModel(tiny(utterance_logits=utterance_logits, **kw)).eval()
    if utterance_logits:
        with torch.no_grad():
            for p in model.utterance.parameters():
                p.normal_()
    return model


@pytest.mark.parametrize("attention", ["modality", "dialogue"])
@pytest.mark.parametrize("use_mamba", [True, False])
@pytest.mark.parametrize("utterance_logits", [False, True])
def test_shapes_and_padding_invariance(attention, use_mamba, utterance_logits):
    model = built(utterance_logits, attention=attention, use_mamba=use_mamba)
    lengths = [6, 1, 3]
    b = padded(lengths)
    logits = model(b.feats, b.speakers, b.mask)
    assert logits.shape == (3, 8, 3) and torch.isfinite(logits[b.mask]).all()
    other = model(garbage_like(b, {m: b.mask for m in DIMS}, 1), b.speakers, b.mask)  # new garbage in padding
    torch.testing.assert_close(logits[b.mask], other[b.mask])
    for i, n in enumerate(lengths):                                     # each dialogue alone, unpadded
        alone = model({m: f[i:i + 1, :n] for m, f in b.feats.items()}, b.speakers[i:i + 1, :n],
                      torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(logits[i, :n], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["modality", "dialogue"])
@pytest.mark.parametrize("utterance_logits", [False, True])
def test_absent_modality_values_do_not_matter(attention, utterance_logits):
    model = built(utterance_logits, attention=attention)
    lengths = [5, 4]
    absent = {"audio": torch.zeros(2, 7, dtype=torch.bool), "face": torch.zeros(2, 7, dtype=torch.bool)}
    absent["audio"][0, 1] = absent["face"][0, 1] = True                 # utterance with text only
    absent["face"][1, :] = True                                         # a dialogue without faces
    absent["audio"][1, 2] = True
    b = padded(lengths, absent=absent)
    logits = model(b.feats, b.speakers, b.mask, present=b.present)
    other = model(garbage_like(b, b.present, 7), b.speakers, b.mask, present=b.present)
    torch.testing.assert_close(logits[b.mask], other[b.mask])
    assert torch.isfinite(logits[b.mask]).all()
    # presence is used: treating the garbage as present changes the outputs
    assert not torch.allclose(logits[b.mask], model(b.feats, b.speakers, b.mask)[b.mask])
    # the objective on the same batch: finite, and the MEC terms ignore the absent slots too
    l1, logs1 = MatavObjective()(model, b)
    l2, logs2 = MatavObjective()(model, Batch(garbage_like(b, b.present, 8), b.speakers, b.mask, b.labels, b.present))
    assert logs1 == pytest.approx(logs2) and np.isfinite(l1.item())


def test_no_mamba_switch_builds_a_per_utterance_model():
    model = MatavModel(tiny(use_mamba=False)).eval()
    assert model.context is None
    assert not any(isinstance(m, (Mamba, MambaStack)) for m in model.modules())
    assert any(isinstance(m, MambaStack) for m in MatavModel(tiny()).modules())
    b = padded([5])                                                     # no context: an utterance alone gives the same
    logits = model(b.feats, b.speakers, b.mask)
    one = model({m: f[:, 2:3] for m, f in b.feats.items()}, b.speakers[:, 2:3], torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(logits[0, 2], one[0, 0], atol=1e-5, rtol=1e-5)


def test_no_mec_switch_and_text_only_have_no_momentum_or_queues():
    for cfg in (tiny(mec_weight=0.0), tiny(input_dims={"text": 12})):
        model = MatavModel(cfg)
        assert not cfg.has_mec and model.momentum is None and model.queues is None
        assert not any(isinstance(m, (FeatureQueue, MomentumEncoder)) for m in model.modules())
        b = padded([4, 2], cfg.input_dims)
        loss, logs = objective_for(model)(model.train(), b)
        assert set(logs) == {"ce"}
        torch.manual_seed(0)
        model.eval()
        assert float(objective_for(model)(model, b)[0].detach()) == pytest.approx(
            float(CrossEntropy().loss(model(b.feats, b.speakers, b.mask), b.labels).detach()))
    full = MatavModel(tiny())
    assert full.config.has_mec and set(full.queues) == {"text", "audio", "face"}
    only_ta = MatavModel(tiny(input_dims={"text": 12, "audio": 6}))
    assert only_ta.config.mec_pairs == [("text", "audio")] and set(only_ta.queues) == {"text", "audio"}


def test_training_step_queues_valid_utterances_only_and_momentum_is_ema():
    torch.manual_seed(0)
    cfg = tiny(queue_size=64, momentum=0.9)
    model = MatavModel(cfg).train()
    absent = {"face": torch.zeros(2, 7, dtype=torch.bool)}
    absent["face"][0, :3] = True
    b = padded([5, 4], absent=absent)
    objective = objective_for(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss, logs = objective(model, b)
    assert {"ce", "mec", "s(text,audio')", "s(face,text')"} <= set(logs)
    assert loss.item() == pytest.approx(logs["ce"] + 0.3 * logs["mec"], rel=1e-5)
    n_real = int(b.mask.sum())
    assert len(model.queues["text"]) == len(model.queues["audio"]) == n_real == 9
    assert len(model.queues["face"]) == n_real - 3
    # the queued vectors are exactly the momentum keys of the valid utterances, in order
    with torch.no_grad():
        h, valid, x = model.unimodal(b.feats, b.mask, b.present)
        keys = torch.nn.functional.normalize(model.momentum("face", x["face"]), dim=-1)[valid["face"]]
    torch.testing.assert_close(model.queues["face"].get(), keys)
    # gradient step: none reaches the momentum copies; the next step pulls them towards the online weights
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in model.momentum.parameters())
    assert model.heads["face"].weight.grad.abs().sum() > 0
    old = model.momentum.copies["audio"][1].weight.clone()
    opt.step()
    online = model.heads["audio"].weight.detach().clone()
    assert not torch.allclose(old, online)
    objective(model, b)
    torch.testing.assert_close(model.momentum.copies["audio"][1].weight, 0.9 * old + 0.1 * online)
    assert len(model.queues["text"]) == 18
    # eval mode: scoring a batch changes neither queues nor momentum copies
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objective(model, b)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_config_checks_and_factory():
    with pytest.raises(ValueError, match="subset"):
        MatavConfig(input_dims={"text": 4, "smell": 3})
    with pytest.raises(ValueError, match="attention"):
        tiny(attention="everything")
    cfg = tiny(attention="dialogue")
    assert config_from_dict(json.loads(json.dumps(cfg.__dict__))) == cfg
    assert isinstance(build_model(cfg), MatavModel)
    from merc.models.dialogue import DialogueConfig, DialogueModel
    assert isinstance(build_model(config_from_dict({"kind": "gru", "input_dims": {"text": 4}})), DialogueModel)
    with pytest.raises(ValueError, match="does not know"):
        config_from_dict({"kind": "matav", "n_layers": 3})
    assert DialogueConfig().kind == "mamba"


def _dialogues(n, rng, *, absent_rate=0.0):
    """Labels depend on the audio vector only (its sign pattern); text and face are noise."""
    protos = rng.normal(size=(3, DIMS["audio"])) * 2
    out = []
    for c in range(n):
        T = int(rng.integers(3, 7))
        y = rng.integers(0, 3, T)
        feats = {"text": rng.normal(size=(T, DIMS["text"])), "face": rng.normal(size=(T, DIMS["face"])),
                 "audio": protos[y] + rng.normal(size=(T, DIMS["audio"]))}
        out.append(Dialogue(f"d{c}", [f"d{c}_{i}" for i in range(T)],
                            {m: f.astype(np.float32) for m, f in feats.items()},
                            np.arange(T) % 2, y.astype(np.int64)))
    return out, protos


@pytest.mark.slow
def test_tiny_fit_learns_and_round_trips_through_a_run_directory(tmp_path):
    from merc.training.run import RunConfig, TrainedRun, save_run
    from merc.training.trainer import TrainConfig, fit, predict_dialogues, score_dialogues
    rng = np.random.default_rng(0)
    data, protos = _dialogues(80, rng)
    train, dev = data[:60], data[60:]
    torch.manual_seed(0)
    model = MatavModel(tiny(dropout=0.0, queue_size=32))
    tc = TrainConfig(epochs=5, batch_size=8, lr=3e-3, patience=5, warmup_epochs=0)
    history = fit(model, train, dev, ["a", "b", "c"], tc, progress=False)
    assert "train_mec" in history.epochs[0] and "train_ce" in history.epochs[0]
    acc = score_dialogues(model, dev, ["a", "b", "c"])["accuracy"]
    assert acc > 0.7, f"dev accuracy {acc:.2f} (chance 0.33)"
    run = save_run(tmp_path / "run", model, RunConfig(model=model.config, train=tc), ["a", "b", "c"])
    loaded = TrainedRun.from_pretrained(run)
    assert isinstance(loaded.model, MatavModel) and loaded.config.model == model.config
    for p, q in zip(predict_dialogues(model, dev), predict_dialogues(loaded.model, dev)):
        np.testing.assert_allclose(p, q, atol=1e-6)


def test_text_only_no_mec_is_the_same_model_as_matav():
    """The benchmarks train `--no-mec` on text alone once only: with no MEC pair, λ changes nothing — the same
    parameters from the same seed, hence the same training."""
    models = []
    for lam in (0.3, 0.0):
        torch.manual_seed(0)
        models.append(MatavModel(tiny(input_dims={"text": 12}, mec_weight=lam)))
    a, b = (m.state_dict() for m in models)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
