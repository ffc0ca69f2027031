"""The Mamba block: causality, padding, step mode, bidirectional wrapper, gradients."""
from __future__ import annotations

import pytest
import torch

from merc.models.mamba import BiMamba, Mamba, MambaConfig, MambaLayer, MambaStack, flip_padded


def tiny(**kw) -> MambaConfig:
    return MambaConfig(**{"d_model": 8, "d_state": 4, "d_conv": 4, "expand": 2, **kw})


def seeded(module_cls, *args, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return module_cls(*args, **kw).eval()


def test_config_and_init():
    m = seeded(Mamba, tiny(d_model=40))
    c = m.config
    assert (c.d_inner, c.rank) == (80, 3)
    assert m.in_proj.weight.shape == (160, 40) and m.x_proj.weight.shape == (3 + 8, 80)
    torch.testing.assert_close(-torch.exp(m.A_log[5]), -torch.arange(1.0, 5.0))  # S4D-real
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6 and torch.all(m.D == 1)


@pytest.mark.parametrize("batch,seq_len", [(1, 1), (2, 7), (3, 20)])
@pytest.mark.parametrize("reference_scan", [False, True])
def test_shapes_and_reference_scan_agree(batch, seq_len, reference_scan):
    x = torch.randn(batch, seq_len, 8)
    out = seeded(Mamba, tiny(reference_scan=reference_scan))(x)
    assert out.shape == (batch, seq_len, 8)
    torch.testing.assert_close(out, seeded(Mamba, tiny(chunk_size=3))(x), atol=1e-5, rtol=1e-5)


def test_causal():
    m = seeded(Mamba, tiny())
    x = torch.randn(2, 15, 8)
    y = m(x)
    x2 = x.clone()
    x2[:, 9:] = torch.randn(2, 6, 8) * 5
    y2 = m(x2)
    torch.testing.assert_close(y[:, :9], y2[:, :9])
    assert (y[:, 9:] - y2[:, 9:]).abs().max() > 1e-3  # the future part did change


def padded_batch(lengths: list[int], d: int = 8, *, left: bool = False, seed: int = 1):
    torch.manual_seed(seed)
    T = max(lengths) + 3
    seqs = [torch.randn(n, d) for n in lengths]
    x = torch.randn(len(lengths), T, d) * 10  # garbage at padded positions
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for b, (s, n) in enumerate(zip(seqs, lengths)):
        sl = slice(T - n, T) if left else slice(0, n)
        x[b, sl], mask[b, sl] = s, True
    return seqs, x, mask


@pytest.mark.parametrize("module", ["mamba", "bimamba", "layer", "bistack"])
@pytest.mark.parametrize("left", [False, True])
def test_padding_invariance(module, left):
    m = {"mamba": lambda: seeded(Mamba, tiny()), "bimamba": lambda: seeded(BiMamba, tiny()),
         "layer": lambda: seeded(MambaLayer, tiny(), norm="layer"),
         "bistack": lambda: seeded(MambaStack, tiny(), n_layers=2, bidirectional=True)}[module]()
    lengths = [5, 1, 9, 13]
    seqs, x, mask = padded_batch(lengths, left=left)
    out = m(x, mask)
    assert torch.isfinite(out).all()
    for b, s in enumerate(seqs):
        alone = m(s[None])[0]                                 # unpadded, no mask
        torch.testing.assert_close(out[b][mask[b]], alone, atol=1e-5, rtol=1e-5)


def test_flip_padded():
    x = torch.arange(12.0).view(2, 6, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 0, 1, 1]], dtype=torch.bool)
    f = flip_padded(x, mask)
    assert f[0, :, 0].tolist() == [2, 1, 0, 3, 4, 5]
    assert f[1, :, 0].tolist() == [6, 11, 10, 9, 8, 7]
    torch.testing.assert_close(flip_padded(f, mask), x)
    torch.testing.assert_close(flip_padded(x, None), x.flip(1))


def test_bimamba_sees_both_directions():
    m = seeded(BiMamba, tiny())
    x = torch.randn(1, 10, 8)
    x2 = x.clone()
    x2[:, 7:] += 3
    assert (m(x)[:, :7] - m(x2)[:, :7]).abs().max() > 1e-3     # future changes reach the past
    assert (m(x)[:, :3] - m(x2)[:, :3]).abs().max() > 1e-4


@pytest.mark.parametrize("seq_len", [1, 6, 17])
def test_step_mode_equals_forward(seq_len):
    m = seeded(Mamba, tiny())
    x = torch.randn(3, seq_len, 8)
    full = m(x)
    state = m.allocate_state(3)
    steps = []
    for t in range(seq_len):
        y, state = m.step(x[:, t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_stack_step_mode_equals_forward_and_bidirectional_refuses():
    stack = seeded(MambaStack, tiny(), n_layers=3)
    x = torch.randn(2, 9, 8)
    states = stack.allocate_state(2)
    steps = []
    for t in range(9):
        y, states = stack.step(x[:, t], states)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), stack(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="no step mode"):
        seeded(MambaStack, tiny(), bidirectional=True).allocate_state(2)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_flow(bidirectional):
    torch.manual_seed(0)
    stack = MambaStack(tiny(), n_layers=2, bidirectional=bidirectional, dropout=0.1).train()
    _, x, mask = padded_batch([4, 11, 7])
    x.requires_grad_()
    out = stack(x, mask)
    (out[mask] ** 2).mean().backward()
    for name, p in stack.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.all(x.grad[~mask] == 0)  # padded inputs get no gradient: they do not influence anything
    assert x.grad[mask].abs().sum() > 0
