"""Emotion timelines of predicted conversations, readable at any length, under file names that are safe.

- A conversation of up to ``per_page`` utterances is one figure; a longer one is split into pages of
  ``per_page`` utterances (``<name>_timeline_p01.png``, ``_p02``, …), every page the same fixed size, instead
  of one image that grows by ~100 pixels per utterance (400 utterances used to give a 40,000-pixel-wide PNG).
- File names come from the conversation id through :func:`safe_stem` (no ``/``, no ``..``, no leading dot,
  bounded length) and :class:`NameAllocator` (two ids that map to one name get ``-2``, ``-3``, …); the final
  path is checked to lie inside the output folder.
- Which modalities each utterance had (``present``, for a multimodal run): one marker row per modality under the
  bars, a filled dot where the utterance had it and a grey ``x`` where it was absent (missing or corrupt clip,
  no face found); the artists carry ``gid`` ``"present:<modality>"`` / ``"absent:<modality>"``.
- Figures are written atomically (``merc.io.atomic_write_bytes``); an empty conversation is refused rather
  than drawn, so a timeline is never replaced by an empty plot.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from merc.data.schema import Conversation  # noqa: E402
from merc.io import atomic_write_bytes  # noqa: E402
from merc.training.plots import emotion_colour  # noqa: E402

PER_PAGE = 50  # utterances per timeline page
PAGE_SIZE = (16.0, 4.6)  # inches (1920 x 552 pixels at 120 dpi before tight bounding box)
DPI = 120
MARK_ROW = 0.09  # height of one modality marker row under the bars (probability units)
MODALITY_COLOURS = {"text": "#4c4c4c", "audio": "#1f77b4", "face": "#d62728"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(conversation_id: str, max_len: int = 80) -> str:
    """A file-name stem from a conversation id: runs of characters other than letters, digits, ``.``, ``_``
    and ``-`` become ``_``; dots are collapsed so no ``..`` remains and no name starts with a dot."""
    s = _UNSAFE.sub("_", conversation_id)
    s = re.sub(r"\.{2,}", "_", s).strip("._ ")
    return s[:max_len] or "conversation"


class NameAllocator:
    """Unique stems within one output folder: the second id mapping to ``x`` gets ``x-2``, and so on."""

    def __init__(self) -> None:
        self._used: dict[str, str] = {}  # stem -> conversation id

    def stem(self, conversation_id: str) -> str:
        base = safe_stem(conversation_id)
        stem, k = base, 1
        while stem in self._used and self._used[stem] != conversation_id:
            k += 1
            stem = f"{base}-{k}"
        self._used[stem] = conversation_id
        return stem


def _inside(folder: Path, path: Path) -> Path:
    folder, path = folder.resolve(), path.resolve()
    if folder != path.parent:
        raise RuntimeError(f"timeline path {path} escapes {folder}")  # a bug in safe_stem, not user input
    return path


def timeline_figure(conversation: Conversation, probs: np.ndarray, labels: Sequence[str], first: int, title: str,
                    slots: int, present: Mapping[str, np.ndarray] | None = None):
    """One page as a matplotlib figure: utterances ``first .. first + len(probs) - 1`` (probs (n, n_classes)) on
    ``slots`` bar positions (a page's capacity, so a short last page keeps the bar width of the others);
    ``present[m]`` ((n,) bool, this page's utterances) adds modality m's marker row."""
    n = len(probs)
    width = max(6.0, 0.9 * slots + 2) if slots <= 12 else PAGE_SIZE[0]
    fig, ax = plt.subplots(figsize=(width, PAGE_SIZE[1]))
    x = np.arange(n)
    bottom = np.zeros(n)
    for k, lab in enumerate(labels):
        ax.bar(x, probs[:, k], bottom=bottom, color=emotion_colour(lab, k), label=lab, width=0.8)
        bottom += probs[:, k]
    pred = probs.argmax(1)
    small = slots > 20
    for i in range(n):
        ax.text(i, 1.02, labels[pred[i]], ha="center", va="bottom", fontsize=7, rotation=90 if small else 30)
    utts = conversation.utterances[first:first + n]
    ticks = [f"{first + i}\n{u.speaker[:10]}" for i, u in enumerate(utts)]
    ax.set_xticks(x, ticks, fontsize=6 if small else 8, rotation=90 if small else 0)
    ax.set_xlim(-0.6, max(n, slots) - 0.4)  # equal bar width on every page
    present = dict(present or {})
    for k, (m, has) in enumerate(present.items()):
        has = np.asarray(has, bool)
        if has.shape != (n,):
            raise ValueError(f"present[{m!r}] has shape {has.shape}, expected ({n},)")
        y = -(k + 0.6) * MARK_ROW
        ax.scatter(x[has], np.full(int(has.sum()), y), s=14, marker="o", color=MODALITY_COLOURS.get(m, "k"),
                   gid=f"present:{m}", clip_on=False)
        ax.scatter(x[~has], np.full(int((~has).sum()), y), s=14, marker="x", color="0.6", gid=f"absent:{m}",
                   clip_on=False)
        ax.text(-0.7, y, m, ha="right", va="center", fontsize=7)
    ax.set_ylim(-len(present) * MARK_ROW - (0.02 if present else 0), 1.35 if small else 1.25)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("probability")
    ax.set_title(title, pad=18)
    ax.legend(ncol=1, fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


def _draw(conversation: Conversation, probs: np.ndarray, labels: Sequence[str], first: int, title: str,
          slots: int, present: Mapping[str, np.ndarray] | None = None) -> bytes:
    fig = timeline_figure(conversation, probs, labels, first, title, slots, present)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_timelines(conversation: Conversation, probs: np.ndarray, labels: Sequence[str], folder: str | Path,
                    stem: str, *, per_page: int = PER_PAGE,
                    present: Mapping[str, np.ndarray] | None = None, draw=None) -> list[Path]:
    """Write the timeline of one conversation (probs: (n_utterances, n_classes)) as one or more pages under
    ``folder``; returns the paths in page order. ``present[m]`` ((n_utterances,) bool) marks which utterances
    had modality m. ``draw(conversation, page_probs, labels, first, title, page_size, page_present) -> PNG
    bytes`` renders one page (default: utterances on the x axis; ``merc.training.turns``: a time axis)."""
    draw = draw or _draw
    n = len(conversation.utterances)
    if n == 0 or len(probs) != n:
        raise ValueError(f"conversation {conversation.conversation_id!r}: {n} utterances, {len(probs)} predictions")
    if per_page < 1:
        raise ValueError(f"per_page must be >= 1, got {per_page}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pages = max(1, -(-n // per_page))
    paths = []
    for p in range(pages):
        lo, hi = p * per_page, min(n, (p + 1) * per_page)
        name = f"{stem}_timeline.png" if pages == 1 else f"{stem}_timeline_p{p + 1:02d}.png"
        title = f"emotion timeline — {conversation.conversation_id}"
        if pages > 1:
            title += f" (page {p + 1}/{pages}: utterances {lo}–{hi - 1} of {n})"
        page_present = {m: np.asarray(v, bool)[lo:hi] for m, v in (present or {}).items()}
        png = draw(conversation, probs[lo:hi], labels, lo, title, per_page if pages > 1 else n, page_present)
        paths.append(atomic_write_bytes(_inside(folder, folder / name), png))
    return paths
