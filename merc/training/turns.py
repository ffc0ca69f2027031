"""The emotion timeline of a recording on its time axis: one lane per speaker, each utterance a bar from its
start to its end in its speaker's lane, coloured by the predicted emotion (opacity = its probability), so turns,
pauses and overlaps are visible as they happened. Same paging, file names and modality markers as
:mod:`merc.training.timeline` (pages of ``per_page`` utterances; markers under the lanes: a dot where the
utterance had the modality, a grey ``x`` where not; artists' ``gid`` ``"turn:<speaker>"``, ``"present:<m>"``,
``"absent:<m>"``)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from merc.data.schema import Conversation  # noqa: E402
from merc.training.plots import emotion_colour as _colour  # noqa: E402
from merc.training.timeline import DPI, MODALITY_COLOURS, PER_PAGE, write_timelines  # noqa: E402


def has_times(conversation: Conversation) -> bool:
    """True when every utterance has a start and end time (a recording): then the timeline uses time."""
    return bool(conversation.utterances) and all(u.start is not None and u.end is not None
                                                 for u in conversation.utterances)


def turn_figure(conversation: Conversation, probs: np.ndarray, labels: Sequence[str], first: int, title: str,
                present: Mapping[str, np.ndarray] | None = None):
    """Utterances ``first .. first + len(probs) - 1`` (probs (n, n_classes)) on a time axis, one lane per speaker."""
    utts = conversation.utterances[first:first + len(probs)]
    speakers = list(dict.fromkeys(u.speaker for u in conversation.utterances))  # lanes: order of first appearance
    lane = {s: len(speakers) - 1 - k for k, s in enumerate(speakers)}  # first speaker on top
    t0, t1 = min(u.start for u in utts), max(u.end for u in utts)
    fig, ax = plt.subplots(figsize=(16.0, 1.6 + 0.55 * len(speakers) + 0.25 * len(present or {})))
    pred = probs.argmax(1)
    for s in speakers:
        idx = [i for i, u in enumerate(utts) if u.speaker == s]
        if not idx:
            continue
        bars = [(utts[i].start, utts[i].end - utts[i].start) for i in idx]
        colours = [(*matplotlib.colors.to_rgb(_colour(labels[pred[i]], int(pred[i]))), 0.35 + 0.65 * probs[i].max())
                   for i in idx]
        coll = ax.broken_barh(bars, (lane[s] - 0.38, 0.76), facecolors=colours, edgecolor="0.25", linewidth=0.4)
        coll.set_gid(f"turn:{s}")
    span = max(t1 - t0, 1e-3)
    if len(utts) <= 60:
        for i, u in enumerate(utts):
            if u.end - u.start > 0.025 * span:
                ax.text((u.start + u.end) / 2, lane[u.speaker], labels[pred[i]], ha="center", va="center",
                        fontsize=7, clip_on=True)
    for k, (m, has) in enumerate((present or {}).items()):
        has = np.asarray(has, bool)
        if has.shape != (len(utts),):
            raise ValueError(f"present[{m!r}] has shape {has.shape}, expected ({len(utts)},)")
        y = -0.8 - 0.35 * k
        mid = np.array([(u.start + u.end) / 2 for u in utts])
        ax.scatter(mid[has], np.full(int(has.sum()), y), s=12, marker="o", color=MODALITY_COLOURS.get(m, "k"),
                   gid=f"present:{m}")
        ax.scatter(mid[~has], np.full(int((~has).sum()), y), s=12, marker="x", color="0.6", gid=f"absent:{m}")
        ax.text(t0 - 0.01 * span, y, m, ha="right", va="center", fontsize=7)
    ax.set_yticks(list(lane.values()), list(lane.keys()))
    ax.set_ylim(-0.6 - 0.35 * len(present or {}), len(speakers) - 0.4)
    ax.set_xlim(t0 - 0.01 * span, t1 + 0.01 * span)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    shown = sorted(set(int(k) for k in pred), key=int)
    ax.legend(handles=[Patch(color=_colour(labels[k], k), label=labels[k]) for k in shown], fontsize=8,
              bbox_to_anchor=(1.01, 1), loc="upper left", title="predicted")
    return fig


def write_turn_timelines(conversation: Conversation, probs: np.ndarray, labels: Sequence[str], folder: str | Path,
                         stem: str, *, per_page: int = PER_PAGE,
                         present: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """Write the time-axis timeline of one recording's conversation; returns the page paths in order (the pages
    and their names as ``merc.training.timeline.write_timelines``)."""
    return write_timelines(conversation, probs, labels, folder, stem, per_page=per_page, present=present,
                           draw=_turn_png)


def _turn_png(conversation: Conversation, probs: np.ndarray, labels: Sequence[str], first: int, title: str,
              page_size: int, present: Mapping[str, np.ndarray]) -> bytes:
    fig = turn_figure(conversation, probs, labels, first, title, present)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
