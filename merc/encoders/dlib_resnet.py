"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) re-run in PyTorch.

The ``dlib-bin`` wheel is built without BLAS: its CPU convolutions take about 90 ms per 150-px face chip on
these cores, half of the default face pair's time (``benchmarks/results/extract_speed/face_profile.md``). The
same network, with the same weights read from the same ``.dat`` file (each affine layer folded into the
convolution before it), runs in PyTorch 5-10x faster and takes a batch of chips (every face of a clip, or of a QC
batch) in one pass: about 18 ms for one chip, 8-9 ms per chip in batches of 4 or more, on one thread. The
descriptors equal dlib's to float rounding (``tests/test_dlib_resnet.py`` compares them on real faces); chips are
still cut by dlib (``dlib.get_face_chips``: 5-point alignment, 150 px, padding 0.25), so only the network moves.

The network (King, dlib ``dnn_face_recognition_ex.cpp``; a ResNet-29 on 150x150 RGB chips):
con 7x7/2 (32) -> affine -> relu -> max_pool 3x3/2 -> 3x res(32) -> res_down(64) + 3x res(64)
-> res_down(128) + 2x res(128) -> res_down(256) + 2x res(256) -> res_down(256) -> global average -> fc 128.
A residual block is con 3x3 -> affine -> relu -> con 3x3 -> affine, added to its input (a ``_down`` block: the
first con has stride 2 and no padding, and the input is 2x2-average-pooled), then relu. When the two branches
differ in size, dlib's ``add_prev`` zero-pads the smaller at the bottom/right (and in channels) before adding.

The ``.dat`` file is a dlib serialization: layers from the input up, each led by a length-prefixed version
string (``con_4``, ``affine_``, ``max_pool_2``, ``avg_pool_2``, ``fc_2``); parameter tensors are 4-byte
little-endian floats after a header of dlib's variable-length integers. Only those records are read; the
architecture above is checked against them (layer counts, shapes, strides, paddings).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merc.errors import MissingDependencyError

CHIP = 150  # px: dlib's aligned face chip
# (channels, blocks, first block downsamples) per level, from the input up
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


@dataclass
class ConvParams:
    weight: np.ndarray  # (out, in, kh, kw) float32
    bias: np.ndarray  # (out,)
    stride: int
    padding: int


@dataclass
class AffineParams:
    gamma: np.ndarray  # (channels,)
    beta: np.ndarray


@dataclass
class DlibNetParams:
    mean: tuple[float, float, float]  # per-channel input average (R, G, B), subtracted before /256
    convs: list[ConvParams]
    affines: list[AffineParams]
    pool: tuple[int, int, int]  # the max pool's (size, stride, padding)
    fc: np.ndarray  # (128, 256): output = fc @ pooled


# helpers


class _Reader:
    """dlib's serialization primitives over a bytes buffer."""

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def int(self) -> int:
        ctrl = self.buf[self.pos]
        size, neg = ctrl & 0x0F, ctrl & 0x80
        v = int.from_bytes(self.buf[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -v if neg else v

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent)) if exponent < 32000 else float("nan")

    def string(self) -> str:
        n = self.int()
        s = self.buf[self.pos:self.pos + n].decode("ascii")
        self.pos += n
        return s

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise ValueError(f"unexpected tensor version at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        n = int(np.prod(shape))
        out = np.frombuffer(self.buf, "<f4", n, self.pos).astype(np.float32)
        self.pos += 4 * n
        return out.reshape(shape)

    def alias_shape(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise ValueError(f"unexpected alias_tensor version at byte {self.pos}")
        return tuple(self.int() for _ in range(4))


def _records(buf: bytes, name: str) -> list[int]:
    """Byte offsets just past every length-prefixed version string ``name`` (in file order)."""
    pat = re.escape(bytes([1, len(name)]) + name.encode())
    return [m.end() for m in re.finditer(pat, buf)]


def read_params(path: str | Path) -> DlibNetParams:
    """The network's parameters from dlib's ``.dat`` file (ValueError when it is not the expected network)."""
    buf = Path(path).read_bytes()
    inp = _records(buf, "input_rgb_image_sized")
    if len(inp) != 1:
        raise ValueError(f"{path}: not a dlib network with an rgb input layer")
    r = _Reader(buf, inp[0])
    mean = (r.float(), r.float(), r.float())
    if (r.int(), r.int()) != (CHIP, CHIP):
        raise ValueError(f"{path}: the input is not {CHIP}x{CHIP}")
    convs = []
    for at in _records(buf, "con_4"):
        r = _Reader(buf, at)
        params = r.tensor().ravel()
        n_out, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
        wshape, _ = r.alias_shape(), r.alias_shape()
        nw = int(np.prod(wshape))
        if wshape[0] != n_out or (kh, kw) != wshape[2:] or sy != sx or py != px or params.size != nw + n_out:
            raise ValueError(f"{path}: unexpected convolution record at byte {at}")
        convs.append(ConvParams(params[:nw].reshape(wshape), params[nw:].copy(), sy, py))
    affines = []
    for at in _records(buf, "affine_"):
        r = _Reader(buf, at)
        params = r.tensor().ravel()
        gshape, _ = r.alias_shape(), r.alias_shape()
        if r.int() != 0:  # CONV_MODE: one gamma/beta per channel
            raise ValueError(f"{path}: affine layer at byte {at} is not per channel")
        k = int(np.prod(gshape))
        affines.append(AffineParams(params[:k].copy(), params[k:2 * k].copy()))
    pools = _records(buf, "max_pool_2")
    r = _Reader(buf, pools[0])
    ph, pw, psy, psx, ppy, ppx = (r.int() for _ in range(6))
    fcs = _records(buf, "fc_2")
    r = _Reader(buf, fcs[0])
    n_out, n_in = r.int(), r.int()
    w = r.tensor().ravel()
    if w.size != n_out * n_in:
        raise ValueError(f"{path}: the fc layer has a bias or an unexpected size")
    fc = w.reshape(n_in, n_out).T.copy()  # dlib: output = input (1, n_in) x W (n_in, n_out)
    n_blocks = sum(b for _, b, _ in LEVELS)
    if len(convs) != 1 + 2 * n_blocks or len(affines) != len(convs) or len(pools) != 1 or (ph, pw) != (3, 3) \
            or psy != psx or ppy != ppx or len(fcs) != 1:
        raise ValueError(f"{path}: not the dlib face-recognition ResNet ({len(convs)} convolutions)")
    return DlibNetParams(mean, convs, affines, (ph, psy, ppy), fc)


# classes


def build_net(params: DlibNetParams):
    """The PyTorch module of ``params``: (n, 3, 150, 150) float chips (already normalised) -> (n, 128)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def conv(p: ConvParams, a: AffineParams) -> nn.Conv2d:
        """A convolution followed by its per-channel affine (gamma * x + beta), folded into one convolution."""
        c = nn.Conv2d(p.weight.shape[1], p.weight.shape[0], p.weight.shape[2:], stride=p.stride, padding=p.padding)
        c.weight.data = torch.from_numpy(p.weight * a.gamma[:, None, None, None])
        c.bias.data = torch.from_numpy(p.bias * a.gamma + a.beta)
        return c

    def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """dlib's add_prev: the larger shape, the smaller tensor zero-padded at the end of each dimension."""
        if a.shape == b.shape:
            return a + b
        shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

        def pad(t):
            return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))
        return pad(a) + pad(b)

    class Block(nn.Module):
        def __init__(self, c1: ConvParams, a1: AffineParams, c2: ConvParams, a2: AffineParams, down: bool):
            super().__init__()
            self.c1, self.c2, self.down = conv(c1, a1), conv(c2, a2), down

        def forward(self, x):  # (n, c, h, w) -> (n, c', h', w')
            y = self.c2(F.relu(self.c1(x)))
            return F.relu(add_padded(y, F.avg_pool2d(x, 2, 2) if self.down else x))

    class DlibResNet(nn.Module):
        def __init__(self):
            super().__init__()
            cs, as_ = params.convs, params.affines
            self.stem = conv(cs[0], as_[0])
            self.pool = params.pool
            blocks, i = [], 1
            for _, n, down in LEVELS:
                for b in range(n):
                    d = down and b == 0
                    if (cs[i].stride == 2) != d:
                        raise ValueError("the dlib network's strides do not match its architecture")
                    blocks.append(Block(cs[i], as_[i], cs[i + 1], as_[i + 1], d))
                    i += 2
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(params.fc.shape[1], params.fc.shape[0], bias=False)
            self.fc.weight.data = torch.from_numpy(params.fc)

        def forward(self, x):  # (n, 3, 150, 150) -> (n, 128)
            k, s, p = self.pool
            x = F.max_pool2d(F.relu(self.stem(x)), k, s, p)  # (n, 32, 35, 35)
            x = self.blocks(x)  # (n, 256, 2, 2)
            return self.fc(x.mean(dim=(2, 3)))

    return DlibResNet().eval()


class TorchDlibResNet:
    """dlib's face descriptor network in PyTorch: 150-px RGB chips (uint8) -> (n, 128) float32 descriptors."""

    def __init__(self, path: str | Path, *, batch: int = 32):
        self.path, self.batch = str(path), batch
        self._net = None
        self._mean = None
        self._lock = threading.Lock()

    @property
    def net(self):
        with self._lock:
            if self._net is None:
                try:
                    import torch  # noqa: F401
                except ImportError as e:  # pragma: no cover - torch is a core dependency
                    raise MissingDependencyError("the torch face descriptor needs torch") from e
                params = read_params(self.path)
                self._mean = np.asarray(params.mean, np.float32)
                self._net = build_net(params)
        return self._net

    def __call__(self, chips: list[np.ndarray]) -> np.ndarray:
        """(150, 150, 3) uint8 RGB chips -> (n, 128) float32."""
        if not chips:
            return np.zeros((0, 128), np.float32)
        import torch

        net = self.net
        x = (np.stack(chips).astype(np.float32) - self._mean) / 256.0  # (n, 150, 150, 3)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (n, 3, 150, 150)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch):
                out.append(net(x[i:i + self.batch]).numpy())
        return np.concatenate(out).astype(np.float32)
