"""merc.objectives: the queue, the momentum encoder, the MEC loss against a hand computation, and
contrastive training on aligned pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from merc.objectives import IGNORE_INDEX, CrossEntropy, FeatureQueue, MomentumEncoder, contrastive_term, mec_loss
from merc.training.batching import IGNORE


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_queue_uneven_batches_wrap_around():
    q = FeatureQueue(size=5, dim=3)
    assert len(q) == 0 and q.get().shape == (0, 3)
    seen = []
    for n, seed in ((2, 0), (1, 1), (3, 2), (4, 3), (0, 4), (2, 5)):   # 12 rows through a queue of 5
        x = unit(n, 3, seed)
        q.enqueue(x)
        seen.extend(x)
        expect = torch.stack(seen[-5:])                                 # the last 5, oldest first
        torch.testing.assert_close(q.get(), expect)
        assert len(q) == min(len(seen), 5)
    assert int(q.ptr) == 12 % 5
    big = unit(8, 3, 9)                                                 # a batch larger than the queue
    q.enqueue(big)
    torch.testing.assert_close(q.get(), big[-5:])


def test_queue_normalises_and_drops_masked_rows():
    q = FeatureQueue(size=6, dim=2)
    x = torch.tensor([[3.0, 4.0], [1e3, 1e3], [0.0, 2.0], [-7.0, 7.0]])
    valid = torch.tensor([True, False, True, False])
    q.enqueue(x, valid)
    torch.testing.assert_close(q.get(), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    q.enqueue(x, torch.zeros(4, dtype=torch.bool))
    assert len(q) == 2
    state = q.state_dict()                                              # buffers travel with the model
    assert set(state) == {"feats", "ptr", "count"}
    q2 = FeatureQueue(size=6, dim=2)
    q2.load_state_dict(state)
    torch.testing.assert_close(q2.get(), q.get())


def test_momentum_update_is_an_ema_without_gradient():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    mom = MomentumEncoder({"a": online})
    assert all(not p.requires_grad for p in mom.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in mom.copies["a"].parameters()]
    new = [p.detach().clone() for p in online.parameters()]
    mom.update(0.9)
    for o, n, p in zip(old, new, mom.copies["a"].parameters()):
        np.testing.assert_allclose(p.numpy(), 0.9 * o.numpy() + 0.1 * n.numpy(), rtol=1e-6, atol=1e-7)
    # no gradient reaches the copy, and it runs without dropout even when its owner trains
    mom.train()
    x = torch.randn(5, 4, requires_grad=True)
    (online(x).sum() + mom("a", x).sum()).backward()
    assert all(p.grad is None for p in mom.parameters())
    assert online[0].weight.grad is not None
    torch.testing.assert_close(mom("a", x), mom("a", x))
    mom.update(0.0)                                                     # m = 0 copies the online weights
    for p, p_m in zip(online.parameters(), mom.copies["a"].parameters()):
        torch.testing.assert_close(p, p_m)
    with pytest.raises(ValueError, match="momentum"):
        mom.update(1.5)


def _hand_term(q, k, qv, kv, queue, tau, in_batch):
    """-mean_i log exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_queue exp(q_i·n/τ) [+ Σ_{j≠i, kv_j} exp(q_i·k_j/τ)])."""
    losses = []
    for i in range(len(q)):
        if not (qv[i] and kv[i]):
            continue
        pos = np.exp(q[i] @ k[i] / tau)
        neg = sum(np.exp(q[i] @ n / tau) for n in queue)
        if in_batch:
            neg += sum(np.exp(q[i] @ k[j] / tau) for j in range(len(k)) if j != i and kv[j])
        losses.append(-np.log(pos / (pos + neg)))
    return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("in_batch", [True, False])
def test_mec_equals_hand_computation(symmetric, in_batch):
    N, d, tau = 4, 3, 0.5
    mods = ("text", "audio", "face")
    z = {m: unit(N, d, i) for i, m in enumerate(mods)}
    z_m = {m: unit(N, d, 10 + i) for i, m in enumerate(mods)}
    valid = {"text": torch.tensor([True, True, True, False]), "audio": torch.tensor([True, False, True, True]),
             "face": torch.tensor([False, False, False, False])}        # no face anywhere: its terms are 0
    queues = {"text": unit(2, d, 20), "audio": unit(3, d, 21), "face": unit(1, d, 22)}
    loss, logs = mec_loss(z, z_m, valid, queues, tau, symmetric=symmetric, in_batch_negatives=in_batch)
    npy = {k: {m: t.numpy().astype(np.float64) for m, t in v.items()} for k, v in (("z", z), ("z_m", z_m))}
    vn = {m: v.numpy() for m, v in valid.items()}
    hand = 0.0
    for x, y in (("text", "audio"), ("audio", "face"), ("text", "face")):
        dirs = [(x, y), (y, x)] if symmetric else [(x, y)]
        for a, b in dirs:
            queue = queues[b].numpy().astype(np.float64)
            t = _hand_term(npy["z"][a], npy["z_m"][b], vn[a], vn[b], queue, tau, in_batch)
            assert logs[f"s({a},{b}')"] == pytest.approx(t, rel=1e-5, abs=1e-6)
            hand += t / len(dirs)
    assert hand > 0 and float(loss.detach()) == pytest.approx(hand, rel=1e-5)
    assert logs["s(text,face')"] == 0.0 and logs["s(audio,face')"] == 0.0


def test_mec_gradient_reaches_queries_only():
    z = {m: unit(3, 4, i).requires_grad_() for i, m in enumerate(("text", "audio"))}
    z_m = {m: unit(3, 4, 5 + i).requires_grad_() for i, m in enumerate(("text", "audio"))}
    valid = {m: torch.ones(3, dtype=torch.bool) for m in z}
    loss, _ = mec_loss(z, {m: t.detach() for m, t in z_m.items()}, valid, {m: unit(2, 4, 9) for m in z}, 0.1)
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in z.values())   # symmetric: both heads learn
    assert all(t.grad is None for t in z_m.values())
    # text alone: no pair, MEC exactly 0
    zero, logs = mec_loss({"text": z["text"]}, {"text": z_m["text"]}, {"text": valid["text"]},
                          {"text": unit(2, 4, 9)}, 0.1)
    assert float(zero.detach()) == 0.0 and logs == {}


def test_contrastive_training_on_aligned_pairs_lowers_mec():
    """MoCo loop (momentum encoders, queues) on two views of shared latents: the MEC on fresh batches drops."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    d_lat, d_t, d_a, d_out = 6, 10, 8, 8
    mix_t, mix_a = torch.randn(d_lat, d_t, generator=g), torch.randn(d_lat, d_a, generator=g)

    def batch(n):
        u = torch.randn(n, d_lat, generator=g)
        return {"text": u @ mix_t + 0.1 * torch.randn(n, d_t, generator=g),
                "audio": u @ mix_a + 0.1 * torch.randn(n, d_a, generator=g)}

    enc = nn.ModuleDict({"text": nn.Sequential(nn.Linear(d_t, 32), nn.ReLU(), nn.Linear(32, d_out)),
                         "audio": nn.Sequential(nn.Linear(d_a, 32), nn.ReLU(), nn.Linear(32, d_out))})
    mom = MomentumEncoder(dict(enc.items()))
    queues = {m: FeatureQueue(64, d_out) for m in enc}
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    valid = {m: torch.ones(32, dtype=torch.bool) for m in enc}

    def mec(x, update: bool):
        z = {m: F.normalize(enc[m](x[m]), dim=-1) for m in enc}
        z_m = {m: F.normalize(mom(m, x[m]), dim=-1) for m in enc}
        loss, _ = mec_loss(z, z_m, valid, {m: q.get() for m, q in queues.items()}, 0.1)
        if update:
            for m, q in queues.items():
                q.enqueue(z_m[m])
        return loss

    held_out = batch(32)
    with torch.no_grad():
        before = float(mec(held_out, update=False))
    for _ in range(200):
        mom.update(0.99)
        loss = mec(batch(32), update=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(mec(held_out, update=False))
    assert after < 0.5 * before, (before, after)


def test_cross_entropy_objective_matches_torch():
    assert IGNORE_INDEX == IGNORE

    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, feats, speakers, mask, present=None):
            return self.logits

    logits = torch.randn(2, 3, 4)
    labels = torch.tensor([[0, 3, IGNORE], [2, IGNORE, IGNORE]])
    batch = type("B", (), {"feats": {}, "speakers": None, "mask": None, "labels": labels})()
    w = torch.tensor([1.0, 2.0, 0.5, 1.0])
    loss, logs = CrossEntropy(weight=w, label_smoothing=0.1)(Fixed(logits), batch)
    keep = labels.flatten() != IGNORE
    expect = F.cross_entropy(logits.flatten(0, 1)[keep], labels.flatten()[keep], weight=w, label_smoothing=0.1)
    torch.testing.assert_close(loss, expect)
    assert logs == {"ce": pytest.approx(float(expect))}


def test_contrastive_term_without_rows_is_zero_and_differentiable():
    q = unit(3, 2, 0).requires_grad_()
    none = torch.zeros(3, dtype=torch.bool)
    t = contrastive_term(q, unit(3, 2, 1), none, torch.ones(3, dtype=torch.bool), unit(2, 2, 2), 0.1)
    assert float(t.detach()) == 0.0
    t.backward()
    assert torch.equal(q.grad, torch.zeros_like(q))
