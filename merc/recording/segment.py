"""Utterances from speech regions, their speakers and Whisper's words.

1. Each word goes to the region that holds its midpoint (else the nearest region within ``snap`` seconds;
   farther words are dropped: Whisper heard them where the VAD heard no speech).
2. A region with changes of speaker inside (:mod:`merc.recording.diarize`) is cut at the gap between words
   nearest each change, so no word is split between two speakers.
3. Pieces without words are dropped (a cough, a laugh, noise the VAD let through).
4. Consecutive pieces of one speaker separated by less than ``merge_pause`` seconds are joined while the
   result stays within ``max_seconds``; a piece longer than ``max_seconds`` is cut at its widest word gap.
5. Speakers are renamed ``S1``, ``S2``, … in order of first appearance.

Times are rounded to milliseconds, the precision of an SRT file, so a saved transcript reads back the same.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from merc.recording.asr import Word
from merc.recording.vad import Region


@dataclass
class SegmentConfig:
    merge_pause: float = 0.4  # seconds: shorter pauses inside one speaker's talk do not end the utterance
    max_seconds: float = 20.0  # an utterance is at most this long
    snap: float = 0.5  # seconds: a word this close to a region belongs to it


@dataclass
class Segment:
    start: float
    end: float
    speaker: str
    text: str
    words: list[Word] = field(default_factory=list, repr=False)


# helpers

def _text(words: list[Word]) -> str:
    return re.sub(r"\s+", " ", "".join(w.text for w in words)).strip()


def assign_words(regions: list[Region], words: list[Word], snap: float) -> list[list[Word]]:
    """Per region, the words whose midpoint falls in it (or nearest within ``snap`` s); regions sorted by time."""
    out: list[list[Word]] = [[] for _ in regions]
    if not regions:
        return out
    starts = [r.start for r in regions]
    import bisect
    for w in words:
        mid = (w.start + w.end) / 2
        i = bisect.bisect_right(starts, mid) - 1
        cands = [j for j in (i, i + 1) if 0 <= j < len(regions)]
        dist = [0.0 if regions[j].start <= mid <= regions[j].end else
                min(abs(mid - regions[j].start), abs(mid - regions[j].end)) for j in cands]
        j, d = min(zip(cands, dist), key=lambda t: t[1])
        if d <= snap:
            out[j].append(w)
    return out


def split_at_changes(region: Region, words: list[Word], label: int,
                     changes: list[tuple[float, int]]) -> list[tuple[float, float, int, list[Word]]]:
    """Cut a region's words at the word gap nearest each change time: [(start, end, label, words)]."""
    if not changes or len(words) < 2:
        return [(region.start, region.end, label, words)]
    gaps = [(words[k].end + words[k + 1].start) / 2 for k in range(len(words) - 1)]  # between word k and k+1
    cuts: list[tuple[int, int]] = []  # (index of the first word after the cut, label from there)
    for t, lab in changes:
        k = min(range(len(gaps)), key=lambda g: abs(gaps[g] - t)) + 1
        if (not cuts or k > cuts[-1][0]) and k < len(words):
            cuts.append((k, lab))
    pieces, a, cur = [], 0, label
    for k, lab in cuts + [(len(words), None)]:
        if k > a:
            ws = words[a:k]
            start = region.start if a == 0 else ws[0].start
            end = region.end if k == len(words) else ws[-1].end
            pieces.append((start, end, cur, ws))
        a, cur = k, lab
    return pieces


def _split_long(start: float, end: float, lab: int, words: list[Word],
                max_seconds: float) -> list[tuple[float, float, int, list[Word]]]:
    if end - start <= max_seconds or len(words) < 2:
        return [(start, end, lab, words)]
    k = max(range(len(words) - 1), key=lambda g: words[g + 1].start - words[g].end) + 1
    left = _split_long(start, words[k - 1].end, lab, words[:k], max_seconds)
    return left + _split_long(words[k].start, end, lab, words[k:], max_seconds)


# API

def build_segments(regions: list[Region], labels: list[int], changes: list[list[tuple[float, int]]],
                   words: list[Word], config: SegmentConfig | None = None) -> list[Segment]:
    """Utterance segments in time order, speakers ``S1``… by first appearance."""
    cfg = config or SegmentConfig()
    per_region = assign_words(regions, sorted(words, key=lambda w: w.start), cfg.snap)
    pieces: list[tuple[float, float, int, list[Word]]] = []
    for r, lab, ch, ws in zip(regions, labels, changes, per_region):
        pieces += [p for p in split_at_changes(r, ws, lab, ch) if p[3]]
    merged: list[tuple[float, float, int, list[Word]]] = []
    for p in pieces:
        if merged:
            s, e, lab, ws = merged[-1]
            if lab == p[2] and p[0] - e < cfg.merge_pause and p[1] - s <= cfg.max_seconds:
                merged[-1] = (s, p[1], lab, ws + p[3])
                continue
        merged.append(p)
    final = [q for p in merged for q in _split_long(*p, cfg.max_seconds)]
    names: dict[int, str] = {}
    out = []
    for s, e, lab, ws in final:
        text = _text(ws)
        if not text:
            continue
        names.setdefault(lab, f"S{len(names) + 1}")
        out.append(Segment(round(float(s), 3), round(float(max(e, s + 0.001)), 3), names[lab], text, ws))
    return out
