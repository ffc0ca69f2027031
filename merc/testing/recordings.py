"""Multi-party recordings with known speakers, words and times, for the recording pipeline's tests and benchmark.

:func:`concat_turns` lays clips one after another with pauses drawn from ``pause`` seconds; a turn with
``overlap > 0`` starts that many seconds before the previous one ends (overlapping speech, mixed by addition).
Gold times are each clip's speech extent (its samples above ``-40 dB`` of its peak, the leading and trailing
silence of TTS output cut off), so a reference segment covers speech only. :func:`espeak_turns` synthesizes the
clips with espeak-ng, one voice per speaker (:data:`merc.testing.synth.VOICES`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SR = 16000


@dataclass
class GoldTurn:
    speaker: str
    text: str
    start: float  # seconds of speech in the recording
    end: float
    emotion: str | None = None
    utterance_id: str | None = None


@dataclass
class Clip:
    speaker: str
    text: str
    wav: np.ndarray  # (samples,) float32 at 16 kHz
    emotion: str | None = None
    utterance_id: str | None = None


# helpers

def speech_extent(wav: np.ndarray, db: float = -40.0, frame: int = 160) -> tuple[int, int]:
    """(first, last + 1) sample of the 10 ms frames whose peak is within ``db`` of the clip's peak."""
    n = len(wav) // frame
    if n == 0:
        return 0, len(wav)
    peaks = np.abs(wav[: n * frame]).reshape(n, frame).max(1)
    on = np.flatnonzero(peaks >= peaks.max() * 10 ** (db / 20))
    return int(on[0] * frame), int(min(len(wav), (on[-1] + 1) * frame))


def concat_turns(clips: Sequence[Clip], *, rng: random.Random, pause: tuple[float, float] = (0.2, 1.0),
                 overlaps: dict[int, float] | None = None, lead: float = 0.5, noise: float = 3e-4,
                 ) -> tuple[np.ndarray, list[GoldTurn]]:
    """Concatenate ``clips`` (trimmed to speech) into one recording; ``overlaps[i]`` seconds of clip i overlap the
    end of clip i - 1. Returns (wav (samples,), gold turns in order)."""
    overlaps = overlaps or {}
    pieces: list[tuple[int, np.ndarray]] = []
    turns: list[GoldTurn] = []
    t = int(lead * SR)
    for i, c in enumerate(clips):
        a, b = speech_extent(c.wav)
        x = np.asarray(c.wav[a:b], np.float32)
        if i > 0:
            ov = overlaps.get(i, 0.0)
            t = t - int(ov * SR) if ov > 0 else t + int(rng.uniform(*pause) * SR)
        pieces.append((t, x))
        turns.append(GoldTurn(c.speaker, c.text, round(t / SR, 3), round((t + len(x)) / SR, 3), c.emotion,
                              c.utterance_id))
        t += len(x)
    total = max(s + len(x) for s, x in pieces) + int(lead * SR)
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    wav = (nrng.standard_normal(total) * noise).astype(np.float32)
    for s, x in pieces:
        wav[s:s + len(x)] += x
    return np.clip(wav, -1, 1), turns


def espeak_turns(turns: Sequence[tuple[str, str]], voices: dict[str, str], *, cache_dir: str | Path | None = None,
                 tmp: str | Path) -> list[Clip]:
    """Synthesize ``[(speaker, text)]`` with espeak-ng, ``voices[speaker]`` the voice of each speaker."""
    from merc.media.decode import load_audio
    from merc.testing.synth import speak
    out = []
    for k, (spk, text) in enumerate(turns):
        path = speak(text, voices[spk], Path(tmp) / f"turn{k}.wav", cache_dir=cache_dir)
        out.append(Clip(spk, text, load_audio(path)))
    return out
