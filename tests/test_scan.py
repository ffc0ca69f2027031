"""The parallel selective scan against the sequential reference (values, last state, gradients, stability)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from merc.models.scan import selective_scan, selective_scan_ref


def make_inputs(batch: int, d_inner: int, seq_len: int, d_state: int, *, dtype=torch.float64, seed: int = 0,
                delta_scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return {
        "u": rand(batch, d_inner, seq_len),
        "delta": rand(batch, d_inner, seq_len) * delta_scale,
        "A": -torch.rand(d_inner, d_state, generator=g, dtype=dtype) * d_state,  # negative, like -exp(A_log)
        "B": rand(batch, d_state, seq_len),
        "C": rand(batch, d_state, seq_len),
        "D": rand(d_inner),
        "z": rand(batch, d_inner, seq_len),
        "delta_bias": rand(d_inner) * 0.5,
    }


SHAPES = [(1, 1, 1, 1), (2, 3, 1, 4), (2, 4, 5, 3), (1, 8, 64, 16), (3, 5, 67, 8), (2, 6, 130, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_z,use_D,use_bias", [(False, False, False), (True, True, True), (True, False, True),
                                                   (False, True, False)])
@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_parallel_matches_reference(shape, use_z, use_D, use_bias, chunk_size):
    x = make_inputs(*shape)
    kw = dict(D=x["D"] if use_D else None, z=x["z"] if use_z else None,
              delta_bias=x["delta_bias"] if use_bias else None, delta_softplus=True)
    ref, ref_last = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True, **kw)
    out, last = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True,
                               chunk_size=chunk_size, **kw)
    assert out.shape == shape[:3] and last.shape == (shape[0], shape[1], shape[3])
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, ref_last, atol=1e-5, rtol=1e-5)


def test_without_softplus_positive_delta():
    x = make_inputs(2, 4, 33, 6)
    delta = x["delta"].abs()
    ref = selective_scan_ref(x["u"], delta, x["A"], x["B"], x["C"], x["D"])
    out = selective_scan(x["u"], delta, x["A"], x["B"], x["C"], x["D"])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_reference_is_the_recurrence():
    """Guard the reference itself: a hand-written loop over one channel and one state."""
    x = make_inputs(1, 1, 6, 1)
    u, delta, A, B, C = x["u"][0, 0], F.softplus(x["delta"][0, 0]), x["A"][0, 0], x["B"][0, 0], x["C"][0, 0]
    h, ys = 0.0, []
    for t in range(6):
        h = torch.exp(delta[t] * A) * h + delta[t] * B[t] * u[t]
        ys.append(C[t] * h)
    out = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], delta_softplus=True)
    torch.testing.assert_close(out[0, 0], torch.stack(ys))


@pytest.mark.parametrize("chunk_size,seq_len", [(64, 23), (5, 23), (4, 16), (1, 3), (8, 1)])
def test_gradients_match_reference(chunk_size, seq_len):
    x = make_inputs(2, 3, seq_len, 4)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    grads = []
    for fn in (selective_scan_ref, lambda *a, **k: selective_scan(*a, chunk_size=chunk_size, **k)):
        leaves = {k: x[k].clone().requires_grad_() for k in names}
        out, last = fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves["z"],
                       leaves["delta_bias"], True, True)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + (last ** 2).sum()
        loss.backward()
        grads.append([leaves[k].grad for k in names])
    for name, g_ref, g in zip(names, *grads):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-6, msg=f"gradient of {name}")


def test_float32_and_large_decays_are_stable():
    """delta * A down to about -1e4 per step: within-chunk exponents never overflow."""
    x = make_inputs(2, 4, 100, 8, dtype=torch.float32, delta_scale=30.0)
    args = (x["u"], x["delta"], x["A"] * 20, x["B"], x["C"], x["D"])
    ref = selective_scan_ref(*args, delta_softplus=True)
    out = selective_scan(*args, delta_softplus=True, chunk_size=64)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_half_precision_inputs_are_computed_in_float32():
    x = make_inputs(1, 4, 20, 4, dtype=torch.float32)
    args = [x[k] for k in ("u", "delta", "A", "B", "C")]
    out = selective_scan(args[0].bfloat16(), *args[1:], delta_softplus=True)
    ref = selective_scan_ref(*args, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


def test_shape_errors_say_what_was_expected():
    x = make_inputs(2, 4, 10, 3)
    with pytest.raises(ValueError, match=r"B has shape \(2, 10, 3\), expected \(2, 3, 10\)"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"].transpose(1, 2), x["C"])


# the adaptive chunk length: one chunk for small scans, several for large ones, and every boundary case


@pytest.mark.parametrize("saved", [True, False])
@pytest.mark.parametrize("seq_len", [1, 2, 31, 32, 33, 95, 96, 97, 300])
def test_adaptive_chunks_match_reference_in_values_and_gradients(seq_len, saved, monkeypatch):
    """Shrink the per-op element target so these tiny shapes take the multi-chunk path (3 chunks),
    then compare values, last state and every gradient with the reference; with the forward's decays and
    states kept for the backward (short scans) and recomputed there (long ones)."""
    import merc.models.scan as scan
    monkeypatch.setattr(scan, "_STEP_ELEMENTS", 2 * 3 * 4 * 3)  # batch x d_inner x d_state x 3 chunks
    if not saved:
        monkeypatch.setattr(scan, "_SAVE_STATES_ELEMENTS", 0)
    x = make_inputs(2, 3, seq_len, 4)
    T = scan._chunk_length(x["u"], 4, None)
    assert T == -(-seq_len // min(3, seq_len))                              # ceil(seq_len / n_chunks)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    results = []
    for fn in (selective_scan_ref, selective_scan):
        leaves = {k: x[k].clone().requires_grad_() for k in names}
        out, last = fn(*(leaves[k] for k in names), True, True)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + (last ** 2).sum()
        loss.backward()
        results.append((out.detach(), last.detach(), [leaves[k].grad for k in names]))
    (ref, ref_last, ref_grads), (out, last, grads) = results
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(last, ref_last, atol=1e-6, rtol=1e-6)
    for name, g_ref, g in zip(names, ref_grads, grads):
        torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-6, msg=f"gradient of {name}")


def test_chunk_length_adapts_to_the_shape():
    import merc.models.scan as scan
    small = torch.zeros(8, 512, 110)                                        # MELD-sized: 8 x 512 x 16 per position
    long = torch.zeros(1, 512, 4096)
    assert scan._chunk_length(small, 16, None) == 28                        # 4 chunks of 28 (one op: 2^18 elements)
    assert scan._chunk_length(long, 16, None) == 128                        # 32 chunks of 128
    assert scan._chunk_length(torch.zeros(1, 4, 10), 2, None) == 1          # tiny: one position per chunk
    assert scan._chunk_length(small, 16, 7) == 7 and scan._chunk_length(small, 16, 500) == 110  # given: capped


def test_many_chunks_with_large_decays_are_stable():
    """The chunk carry multiplies decays across chunks (log-depth); large decays only underflow to 0."""
    x = make_inputs(2, 4, 200, 8, dtype=torch.float32, delta_scale=30.0)
    args = (x["u"], x["delta"], x["A"] * 20, x["B"], x["C"], x["D"])
    ref = selective_scan_ref(*args, delta_softplus=True)
    out = selective_scan(*args, delta_softplus=True, chunk_size=3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


# the CUDA kernel's dispatch, with a fake kernel on the CPU


def _fake_kernel(calls):
    """Checks its arguments as mamba-ssm's selective_scan_fwd does, then computes the reference."""
    def kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        itype = u.dtype
        assert itype in (torch.float32, torch.float16, torch.bfloat16), itype
        assert A.dtype == torch.float32, "A must be float32"
        assert delta.dtype == itype and B.dtype == itype and C.dtype == itype, (delta.dtype, B.dtype, C.dtype)
        assert z is None or z.dtype == itype, z.dtype
        assert D is None or D.dtype == torch.float32, D.dtype
        assert delta_bias is None or delta_bias.dtype == torch.float32, delta_bias.dtype
        assert not torch.is_autocast_enabled("cuda")
        calls.append(itype)
        out = selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
        return (out[0].to(itype), out[1]) if return_last_state else out.to(itype)
    return kernel


def test_kernel_dispatch_casts_autocast_mixed_dtypes(monkeypatch):
    """Under bf16 autocast a Mamba block hands the scan bf16 u, B, C, z and float32 delta, A, D, delta_bias:
    the kernel refuses that mix (the dtype error), so the dispatch casts to what it checks."""
    import merc.models.scan as scan
    calls: list = []
    fake = _fake_kernel(calls)
    monkeypatch.setattr(scan, "_cuda_selective_scan", fake)
    monkeypatch.setattr(scan, "_on_cuda", lambda t: True)
    x = make_inputs(2, 4, 9, 3, dtype=torch.float32)
    bf = torch.bfloat16
    mixed = (x["u"].to(bf), x["delta"], x["A"], x["B"].to(bf), x["C"].to(bf), x["D"], x["z"].to(bf),
             x["delta_bias"])
    with pytest.raises(AssertionError):                                     # as given, the kernel's checks fail
        fake(*mixed, True, False)
    out = selective_scan(*mixed, delta_softplus=True)
    assert calls == [bf] and out.dtype == bf
    ref = selective_scan_ref(*(t.float() for t in mixed), delta_softplus=True)
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    out32 = selective_scan(*(t.float() for t in mixed), delta_softplus=True)  # float32 throughout: unchanged
    assert calls == [bf, torch.float32] and out32.dtype == torch.float32
    selective_scan(*(t.double() for t in mixed), delta_softplus=True)       # float64: the parallel scan instead
    assert len(calls) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI is CPU-only)")
@pytest.mark.parametrize("seq_len", [1, 37, 300])
def test_parallel_scan_on_cuda_matches_reference(seq_len, monkeypatch):
    import merc.models.scan as scan
    monkeypatch.setattr(scan, "_cuda_selective_scan", None)                 # the device-agnostic scan itself
    x = {k: v.cuda() for k, v in make_inputs(2, 8, seq_len, 4).items()}
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    torch.testing.assert_close(selective_scan(*args, chunk_size=16), selective_scan_ref(*args), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI is CPU-only)")
def test_mamba_block_under_bf16_autocast_on_cuda():
    from merc.models.mamba import Mamba, MambaConfig
    torch.manual_seed(0)
    block = Mamba(MambaConfig(d_model=16)).cuda()
    x = torch.randn(2, 20, 16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = block(x)
    out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), block(x).float(), atol=0.05, rtol=0.05)
