"""Pictures a person would rather look at than read: training curves, confusion matrices, and the emotion colours
the timelines of :mod:`merc.training.timeline` share."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from merc.io import atomic_write_bytes  # noqa: E402

# a fixed colour per common emotion name; others cycle through tab10
EMOTION_COLOURS = {"neutral": "#9e9e9e", "neu": "#9e9e9e", "joy": "#f4b400", "hap": "#f4b400", "exc": "#ff7f0e",
                   "surprise": "#17becf", "anger": "#d62728", "ang": "#d62728", "fru": "#8c564b",
                   "sadness": "#1f77b4", "sad": "#1f77b4", "fear": "#9467bd", "disgust": "#2ca02c"}


def emotion_colour(label: str, i: int):
    """The fixed colour of a common emotion name, else the ``i``-th of tab10."""
    return EMOTION_COLOURS.get(label, plt.cm.tab10(i % 10))


def _save(fig, path: str | Path) -> Path:
    """Render ``fig`` in memory (format from the suffix) and write it atomically."""
    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_training_curve(epochs: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    by_c = "C" in epochs[0]  # the linear probe: one row per regularisation strength C, not per epoch
    e = [r["C"] if by_c else r["epoch"] for r in epochs]
    xlabel = "C (inverse L2 strength)" if by_c else "epoch"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.plot(e, [r["train_loss"] for r in epochs], label="train loss")
    a1.plot(e, [r["dev_loss"] for r in epochs], label="dev loss")
    a1.set_xlabel(xlabel)
    a1.legend()
    a1.set_title("loss")
    a2.plot(e, [r["dev_weighted_f1"] for r in epochs], label="dev weighted F1", color="C2")
    best = int(np.argmax([r["dev_weighted_f1"] for r in epochs]))
    a2.axvline(e[best], ls="--", color="k", lw=0.8, label=f"selected ({'C' if by_c else 'epoch'} {e[best]:g})")
    a2.set_xlabel(xlabel)
    if by_c:
        a1.set_xscale("log")
        a2.set_xscale("log")
    a2.legend()
    a2.set_title("dev weighted F1")
    fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, *,
                   title: str = "") -> Path:
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title(title or "confusion matrix (counts; colour = row-normalised)")
    return _save(fig, path)
