"""The selective scan of Mamba-1, on CPU in plain PyTorch: a parallel (chunked) form and the sequential reference.

For every channel d and state index n the scan runs the discretised linear recurrence

    h_t = exp(delta_t * A)  * h_{t-1}  +  delta_t * B_t * u_t        # (batch, d_inner, d_state)
    y_t = <C_t, h_t>  +  D * u_t,          out_t = y_t * silu(z_t)

References:
- A. Gu, T. Dao. "Mamba: Linear-Time Sequence Modeling with Selective State Spaces". arXiv:2312.00752 (2023).
- state-spaces/mamba, ``mamba_ssm/ops/selective_scan_interface.py``: ``selective_scan_ref`` gives the
  semantics (argument names and order, delta_bias then softplus, D skip, z gating) that both functions
  here follow, and ``selective_scan_fn`` (CUDA) is used when importable and the inputs are on CUDA.
- G. E. Blelloch. "Prefix sums and their applications" (1990): the blocked reduce-then-scan used below.
- W. D. Hillis, G. L. Steele. "Data parallel algorithms". CACM 29(12) (1986): the log-depth scan over chunks.

``selective_scan`` is a chunked scan. The sequence is cut into ``n_chunks`` chunks of ``T`` positions, laid
out (T, batch, n_chunks, d_state, d_inner) so that one position of every chunk is one contiguous slice; the
decays a_t = exp(delta_t A) and inputs x_t = delta_t u_t B_t of all positions are built in two big ops, and
each pass over the positions is **one** ``addcmul`` per position over all chunks at once:
(1) reduce: every chunk from a zero state, keeping only its end state (skipped for a single chunk);
(2) carry: the state entering every chunk, from the chunk end states and total decays ``exp(A sum(delta))``,
    by a log-depth (Hillis-Steele) scan over the chunks: log2(n_chunks) steps;
(3) every chunk again from its true start state, in place of x; y = <C_t, h_t> is then one batched product.
The number of chunks adapts to the shape (``_chunk_length``): as many as keep each per-position op over about
2^18 elements, so MELD's 8 x 110 dialogues take 4 chunks of 28 positions (about 2 x 28 + 2 Python-level steps
forward) and one 4,096-utterance dialogue 32 chunks of 128, where the fixed T = 64 of the first version took
2 T + n_chunks steps of five to seven ops each whatever the length. Time and memory are linear in L (no L x L
or T x T matrices), and every exponential is of ``delta * A <= 0`` or of a sum of them, and every product of
decays is of numbers <= 1, so nothing can overflow (values only underflow to 0, the correct limit).

The backward pass is written out (``_SelectiveScan``), like the CUDA kernel's: the adjoint recurrence
``g_t = C_t gy_t + a_{t+1} g_{t+1}`` is a reverse-time scan with the same passes, and every gradient is read
off it with batched products over all positions:
    dL/dC_t = sum_d gy_t h_t     dL/dB_t = sum_d g_t delta_t u_t     dL/du_t = delta_t sum_n g_t B_t
    dL/ddelta_t = sum_n (g_t h_{t-1} a_t A + g_t B_t u_t)            dL/dA = sum_{b,t} g_t h_{t-1} a_t delta_t
with a_t = exp(delta_t A). The forward keeps its decays and states for the backward when each is at most 2^23
elements (32 MB in float32; MELD-sized batches); a longer scan keeps only its (batch, d_inner, L)-sized inputs
and the chunk start states, and the backward recomputes the rest (one pass), so long dialogues stay lean.
Measured against mambapy (pure-PyTorch Mamba, Blelloch scan): ``benchmarks/results/mamba_speed/scan_vs_mambapy.md``.
D, z, delta_bias and softplus stay outside, under ordinary autograd.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional CUDA fast path; the mamba-ssm wheel does not install or run on CPU
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except Exception:  # ImportError, or a broken CUDA build
    _cuda_selective_scan = None

# elements (batch x d_inner x d_state x chunks) per position op of the chunked scan: big enough that Python's
# per-op overhead is a few per cent on CPU, and that a GPU's kernel launches are not the bottleneck
_STEP_ELEMENTS = 1 << 18
_STEP_ELEMENTS_CUDA = 1 << 22
# the forward keeps its decays and states for the backward when each is at most this many elements (32 MB in
# float32: MELD-sized batches); longer scans recompute them in the backward, holding only their inputs
_SAVE_STATES_ELEMENTS = 1 << 23
_KERNEL_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # float64 runs the parallel scan

# helpers


def _prepare(u: Tensor, delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> tuple[Tensor, Tensor]:
    """Upcast half precision to float32 (float64 stays float64), add the bias, apply softplus."""
    dtype = torch.promote_types(u.dtype, torch.float32)
    u, delta = u.to(dtype), delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_in: torch.dtype) -> Tensor:
    out = y if D is None else y + u * D.to(y.dtype)[:, None]
    if z is not None:
        out = out * F.silu(z.to(y.dtype))
    return out.to(dtype_in)


def _on_cuda(t: Tensor) -> bool:
    return t.is_cuda


def _kernel_dtypes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                   delta_bias: Tensor | None) -> tuple:
    """The arguments cast as mamba-ssm's kernel checks them: u's dtype (float32, float16 or bfloat16) for u,
    delta, the time-varying B and C, and z; float32 for A, D and delta_bias. Under autocast the block's
    tensors arrive mixed (the projections in bfloat16, softplus and A in float32), which the kernel refuses."""
    itype, f32 = u.dtype, torch.float32
    cast = lambda t, dtype: None if t is None else t.to(dtype)  # noqa: E731
    return (u, cast(delta, itype), cast(A, f32), cast(B, itype), cast(C, itype), cast(D, f32), cast(z, itype),
            cast(delta_bias, f32))


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    batch, d_inner, seq_len = u.shape
    d_state = A.shape[1]
    expected = {"delta": (delta, (batch, d_inner, seq_len)), "A": (A, (d_inner, d_state)),
                "B": (B, (batch, d_state, seq_len)), "C": (C, (batch, d_state, seq_len))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"selective scan: {name} has shape {tuple(t.shape)}, expected {shape} "
                             f"given u of shape (batch, d_inner, seq_len) = {tuple(u.shape)} and A {tuple(A.shape)}")

# the scans


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential reference: one recurrence step per position (slow; what every fast path is tested against).

    u, delta, z: (batch, d_inner, seq_len); A: (d_inner, d_state); B, C: (batch, d_state, seq_len);
    D, delta_bias: (d_inner,). Returns out (batch, d_inner, seq_len) and, if asked, the last state
    (batch, d_inner, d_state). Half precision is computed in float32, like the original.
    """
    _check(u, delta, A, B, C)
    dtype_in = u.dtype
    u, delta = _prepare(u, delta, delta_bias, delta_softplus)
    A, B, C = A.to(u.dtype), B.to(u.dtype), C.to(u.dtype)
    batch, d_inner, seq_len = u.shape
    # unbind (not indexing in the loop) keeps the backward pass linear in seq_len
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A)).unbind(2)      # seq_len x (batch, d_inner, d_state)
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u).unbind(2)       # seq_len x (batch, d_inner, d_state)
    x = u.new_zeros(batch, d_inner, A.shape[1])                               # (batch, d_inner, d_state)
    ys = []
    for dA, dBu, c in zip(deltaA, deltaB_u, C.unbind(2)):
        x = dA * x + dBu
        ys.append(torch.einsum("bdn,bn->bd", x, c))
    y = torch.stack(ys, dim=2)                                                # (batch, d_inner, seq_len)
    out = _finish(y, u, D, z, dtype_in)
    return (out, x) if return_last_state else out


def _layout(t: Tensor, T: int) -> Tensor:
    """(batch, c, n_chunks * T) -> (T, batch, n_chunks, c), contiguous: one slice per position in the chunk."""
    batch, c, length = t.shape
    return t.reshape(batch, c, length // T, T).permute(3, 0, 2, 1).contiguous()


def _unlayout(t: Tensor) -> Tensor:
    """(T, batch, n_chunks, c) -> (batch, c, n_chunks * T)."""
    T, batch, n_chunks, c = t.shape
    return t.permute(1, 3, 2, 0).reshape(batch, c, n_chunks * T)


def _carry(decay: Tensor, ends: Tensor) -> Tensor:
    """Inclusive scan over chunks, s_c = decay_c * s_{c-1} + ends_c from s_{-1} = 0, in log2(n_chunks) steps
    (Hillis-Steele). decay, ends: (batch, n_chunks, d_inner, d_state); every decay is <= 1, so the products
    only ever shrink."""
    decay, s = decay.clone(), ends.clone()
    k, n_chunks = 1, s.shape[1]
    while k < n_chunks:
        s[:, k:] += decay[:, k:] * s[:, :-k]       # the product is a new tensor: read before the update
        decay[:, k:] = decay[:, k:] * decay[:, :-k]  # (not *=, which would read entries it has already updated)
        k *= 2
    return s


class _Scan:
    """The inputs cut into chunks of T positions, laid out (T, batch, n_chunks, ...), and the decay
    a_t = exp(delta_t A) every pass reads. State-sized tensors are (T, batch, n_chunks, d_state, d_inner):
    d_inner innermost, so that the broadcasting products run over long contiguous rows."""

    def __init__(self, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, T: int, a: Tensor | None = None):
        self.T, self.n_chunks = T, u.shape[-1] // T
        self.u, self.delta = _layout(u, T), _layout(delta, T)                # (T, batch, n_chunks, d_inner)
        self.B, self.C = _layout(B, T), _layout(C, T)                        # (T, batch, n_chunks, d_state)
        self.du = self.delta * self.u                                        # (T, batch, n_chunks, d_inner)
        self.A = A.t().contiguous()                                         # (d_state, d_inner)
        if a is None:
            a = (self.delta[..., None, :] * self.A).exp_()                   # (T, batch, n_chunks, d_state, d_inner)
        self.a = a

    def inputs(self) -> Tensor:
        return self.B[..., None] * self.du[..., None, :]                     # (T, batch, n_chunks, d_state, d_inner)

    def chunk_decay(self) -> Tensor:
        """prod_t a_t over each chunk, as exp(A sum_t delta_t): (batch, n_chunks, d_state, d_inner)."""
        return (self.delta.sum(0)[..., None, :] * self.A).exp_()

    def states(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """x (the inputs) becomes the states h_t, in place; returns it and the state entering every chunk
        (None for a single chunk: zero)."""
        T, a = self.T, self.a
        starts = None
        if self.n_chunks > 1:                                                # the chunk end states from zero ...
            end, spare = x[0].clone(), torch.empty_like(x[0])
            for t in range(1, T):
                torch.addcmul(x[t], a[t], end, out=spare)
                end, spare = spare, end
            s = _carry(self.chunk_decay(), end)                              # ... carried across the chunks
            starts = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], dim=1)
            x[0].addcmul_(a[0], starts)
        for t in range(1, T):                                                # one op per position
            x[t].addcmul_(a[t], x[t - 1])
        return x, starts

    def adjoint(self, g: Tensor) -> Tensor:
        """g (gy_t C_t, plus the last state's gradient) becomes the adjoint dL/dh_t = g_t + a_{t+1} dL/dh_{t+1},
        in place, the same two passes backwards in time."""
        T, a = self.T, self.a
        if self.n_chunks > 1:
            flow, spare = g[T - 1].clone(), torch.empty_like(g[0])          # each chunk from zero at its end ...
            for t in reversed(range(T - 1)):
                torch.addcmul(g[t], a[t + 1], flow, out=spare)
                flow, spare = spare, flow
            # ... what leaves chunk c backwards is a_{first} * flow_c; carried from the last chunk to the first
            s = _carry(self.chunk_decay().flip(1), (a[0] * flow).flip(1)).flip(1)
            g[T - 1, :, :-1] += s[:, 1:]
        for t in reversed(range(T - 1)):
            g[t].addcmul_(a[t + 1], g[t + 1])
        return g


class _SelectiveScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) without D / z, seq_len a multiple of T; also returns the last state."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, T: int) -> tuple[Tensor, Tensor]:
        with torch.autocast(u.device.type, enabled=False):
            sc = _Scan(u, delta, A, B, C, T)
            h, starts = sc.states(sc.inputs())                               # (T, batch, n_chunks, d_state, d_inner)
            y = (sc.C[..., None, :] @ h)[..., 0, :]                          # (T, batch, n_chunks, d_inner)
            last = h[-1, :, -1].transpose(1, 2).contiguous()                 # (batch, d_inner, d_state)
        keep = h.numel() <= _SAVE_STATES_ELEMENTS
        ctx.save_for_backward(u, delta, A, B, C, starts, sc.a if keep else None, h if keep else None)
        ctx.T = T
        return _unlayout(y), last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor, grad_last: Tensor | None):
        u, delta, A, B, C, starts, a, h = ctx.saved_tensors
        with torch.autocast(u.device.type, enabled=False):
            sc = _Scan(u, delta, A, B, C, ctx.T, a)
            if h is None:
                h, _ = sc.states(sc.inputs())                                # recomputed: a long scan saves none
            gy = _layout(grad_y.contiguous(), ctx.T)                        # (T, batch, n_chunks, d_inner)
            g = sc.C[..., None] * gy[..., None, :]                           # (T, batch, n_chunks, d_state, d_inner)
            if grad_last is not None:
                g[-1, :, -1] += grad_last.transpose(1, 2)
            g = sc.adjoint(g)
            # dL/dC_t = sum_d gy_t h_t, dL/dB_t = sum_d g_t delta_t u_t, sum_n g_t B_t: batched matrix-vector
            g_C = (h @ gy[..., None])[..., 0]                                # (T, batch, n_chunks, d_state)
            g_B = (g @ sc.du[..., None])[..., 0]                             # (T, batch, n_chunks, d_state)
            g_B_sum = (sc.B[..., None, :] @ g)[..., 0, :]                    # (T, batch, n_chunks, d_inner)
            # dL/d(delta_t A) = g_t a_t h_{t-1}, in place of g
            q = g.mul_(sc.a)
            q[1:] *= h[:-1]
            if starts is None:
                q[0].zero_()
            else:
                q[0] *= starts
            grad_A = (q * sc.delta[..., None, :]).sum((0, 1, 2)).t()        # (d_inner, d_state)
            g_delta = q.mul_(sc.A).sum(-2) + g_B_sum * sc.u                  # (T, batch, n_chunks, d_inner)
            g_u = g_B_sum * sc.delta
        return _unlayout(g_u), _unlayout(g_delta), grad_A, _unlayout(g_B), _unlayout(g_C), None


def _chunk_length(u: Tensor, d_state: int, chunk_size: int | None) -> int:
    """Positions per chunk T. Given: that (at most the length). Adaptive: one chunk when the whole scan is small,
    otherwise as many chunks as keep every per-position op over at least ``_STEP_ELEMENTS`` elements
    (a few per cent of Python overhead per op), so the 1 + 3 passes take about seq_len / n_chunks steps each."""
    batch, d_inner, seq_len = u.shape
    if chunk_size is not None:
        return max(1, min(chunk_size, seq_len))
    target = _STEP_ELEMENTS_CUDA if u.is_cuda else _STEP_ELEMENTS
    n_chunks = min(seq_len, max(1, math.ceil(target / (batch * d_inner * d_state))))
    return math.ceil(seq_len / n_chunks)


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False, *, chunk_size: int | None = None
                   ) -> Tensor | tuple[Tensor, Tensor]:
    """Parallel (chunked) selective scan; same arguments and results as ``selective_scan_ref``.

    chunk_size: positions per chunk; None (default) adapts it to the shape (``_chunk_length``). On CUDA with
    ``mamba_ssm`` importable, dispatches to its fused kernel.
    """
    if _cuda_selective_scan is not None and _on_cuda(u) and u.dtype in _KERNEL_INPUT_DTYPES:
        args = _kernel_dtypes(u, delta, A, B, C, D, z, delta_bias)
        with torch.autocast("cuda", enabled=False):
            return _cuda_selective_scan(*args, delta_softplus, return_last_state)
    _check(u, delta, A, B, C)
    dtype_in = u.dtype
    u, delta = _prepare(u, delta, delta_bias, delta_softplus)
    A, B, C = A.to(u.dtype), B.to(u.dtype), C.to(u.dtype)
    seq_len = u.shape[-1]
    T = _chunk_length(u, A.shape[1], chunk_size)
    pad = -seq_len % T
    # padded tail positions have delta = 0: decay 1 and no input, so the last state passes through them
    padded = [F.pad(t, (0, pad)) for t in (u, delta, B, C)] if pad else [u, delta, B, C]
    y, last = _SelectiveScan.apply(padded[0], padded[1], A, padded[2], padded[3], T)
    out = _finish(y[..., :seq_len], u, D, z, dtype_in)
    return (out, last) if return_last_state else out
