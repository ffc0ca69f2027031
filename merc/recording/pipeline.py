"""From a recording to a transcript with speakers and times, in one streaming pass: the pipeline object.

    pipeline = RecordingPipeline(RecordingConfig(asr=AsrConfig(model=None)))
    result = pipeline("talk.mp4", hook=print)      # RecordingTranscript
    result.segments[0]                             # Segment(start=0.31, end=2.05, speaker='S1', text='Hi.')
    result.save("talk.srt")                        # what `merc predict RUN talk.mp4 --transcript talk.srt` reads

Steps (each its own module, swappable through the config): the audio is decoded in blocks
(:func:`merc.media.stream.stream_audio`), scored by the VAD and turned into speech regions as it comes
(:mod:`~merc.recording.vad`); every full window of regions (every ``batch_size`` windows when batched) is
transcribed with word times (:mod:`~merc.recording.asr`) and each region embedded
(:mod:`~merc.recording.diarize`) while the audio is still in memory; then its audio is dropped. Memory is
bounded by a block plus ``batch_size`` windows (≈ 1 min of audio by default) plus what is kept per region
(its words and a 256-d embedding, partial windows for long regions), whatever the recording's length. At the
end the embeddings are clustered and the utterances built (:mod:`~merc.recording.segment`).

``hook(step, completed, total)`` is called as the work goes on (``"transcribe"`` in seconds of audio,
then ``"faces"`` in seconds of video for a video, then ``"diarize"``), after pyannote.audio's pipeline hooks.

With a video (and ``faces.use``), the face on screen in each embedded region is found after the audio pass, in one
streaming pass over the video (:mod:`~merc.recording.faces`), and weighs in the clustering
(``diarize.face_weight``).

Errors (one line naming the file, :class:`~merc.errors.MercError`): missing, 0-byte or corrupt file, no audio
stream, no speech found, a missing ``--asr-model`` folder (checked before any decoding).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from merc.errors import InputError
from merc.recording.asr import AsrConfig, Transcriber, Word, check_model_dir, windows
from merc.recording.diarize import DiarizeConfig, RegionVoice, VoiceEmbedder, diarize
from merc.recording.faces import FaceConfig, FaceStats, region_faces
from merc.recording.faces import available as faces_available
from merc.recording.segment import Segment, SegmentConfig, build_segments
from merc.recording.vad import FRAME, SAMPLE_RATE, Region, RegionTracker, SileroVad, VadConfig

log = logging.getLogger(__name__)

Hook = Callable[[str, float, float], None]


@dataclass
class RecordingConfig:
    vad: VadConfig = field(default_factory=VadConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    diarize: DiarizeConfig = field(default_factory=DiarizeConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    faces: FaceConfig = field(default_factory=FaceConfig)
    block_frames: int = 937  # VAD frames per decoded block (937 x 512 samples = 29.98 s)


@dataclass
class RecordingTranscript:
    """The derived transcript of one recording."""
    path: str
    duration: float  # seconds of audio decoded
    segments: list[Segment]
    regions: list[Region]  # speech regions found by the VAD
    num_speakers: int
    seconds: dict[str, float]  # wall-clock time per step
    words: list[Word] = field(default_factory=list, repr=False)  # every word Whisper gave, in time order
    voices: list[RegionVoice] = field(default_factory=list, repr=False)  # per region: embeddings (re-diarize)
    faces: FaceStats | None = None  # the face step's counts; None when it did not run (audio, or faces off)

    def to_segments(self) -> list[dict]:
        """``[{"speaker", "text", "start", "end"}]``: the JSON transcript format ``--transcript`` reads."""
        return [{"speaker": s.speaker, "text": s.text, "start": s.start, "end": s.end} for s in self.segments]

    def save(self, path: str | Path) -> Path:
        """Write the transcript as ``.srt`` or ``.json`` (atomically), in the formats ``--transcript`` reads."""
        from merc.data.transcript import write_transcript
        return write_transcript(self.to_segments(), path)

    def summary(self) -> dict:
        out = {"path": self.path, "duration": round(self.duration, 3), "utterances": len(self.segments),
               "speakers": self.num_speakers, "speech_regions": len(self.regions),
               "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}
        if self.faces is not None:
            out["faces"] = asdict(self.faces)
        return out


# helpers

class _Audio:
    """The decoded blocks still needed, as one timeline: append blocks, cut [a, b), drop what is before t."""

    def __init__(self):
        self.blocks: list[tuple[float, np.ndarray]] = []

    def append(self, t0: float, x: np.ndarray) -> None:
        self.blocks.append((t0, x))

    def cut(self, a: float, b: float) -> tuple[float, np.ndarray]:
        """(t0, samples) covering [a, b) from what is held (t0 = time of the first returned sample)."""
        parts, t_first = [], None
        for t0, x in self.blocks:
            t1 = t0 + len(x) / SAMPLE_RATE
            if t1 <= a or t0 >= b:
                continue
            i = max(0, int(round((a - t0) * SAMPLE_RATE)))
            j = min(len(x), int(round((b - t0) * SAMPLE_RATE)))
            if t_first is None:
                t_first = t0 + i / SAMPLE_RATE
            parts.append(x[i:j])
        if not parts:
            return a, np.zeros(0, np.float32)
        return t_first, np.concatenate(parts)

    def drop_before(self, t: float) -> None:
        self.blocks = [(t0, x) for t0, x in self.blocks if t0 + len(x) / SAMPLE_RATE > t]


# classes

class RecordingPipeline:
    """Recording -> :class:`RecordingTranscript` (VAD, Whisper words, speaker clustering, utterances).
    Models load on the first call and are reused."""

    def __init__(self, config: RecordingConfig | None = None):
        self.config = config or RecordingConfig()
        self.config.diarize.validate()
        check_model_dir(self.config.asr.model)
        self._vad: SileroVad | None = None
        self._asr: Transcriber | None = None
        self._embed: VoiceEmbedder | None = None

    def _load(self) -> None:
        """Whisper and the speaker network load when the first speech arrives (a silent file fails fast)."""
        if self._asr is None:
            self._asr = Transcriber(self.config.asr)
            self._embed = VoiceEmbedder(self.config.diarize)
            _ = self._embed.encoder.model  # load the speaker network now, not inside the first region's timing

    def __call__(self, path: str | Path, hook: Hook | None = None) -> RecordingTranscript:
        from merc.media.decode import MediaError, probe
        from merc.media.stream import stream_audio
        cfg = self.config
        hook = hook or (lambda step, done, total: None)
        path = Path(path)
        info = probe(path)  # missing / empty / not media: MediaError naming the file
        if not info.has_audio:
            raise MediaError(f"no audio stream in {path}: nothing to transcribe (a video without sound)")
        self._vad = self._vad or SileroVad()
        seconds = {"load": 0.0, "decode+vad": 0.0, "asr": 0.0, "embed": 0.0, "diarize": 0.0}
        tracker = RegionTracker(cfg.vad)
        audio = _Audio()
        regions: list[Region] = []
        pending: list[Region] = []
        words: list[Word] = []
        voices: list[RegionVoice] = []
        duration = 0.0

        ready: list[list[Region]] = []  # closed windows waiting for a full Whisper batch

        def process(batch: list[list[Region]]) -> None:
            if not batch:
                return
            t = time.perf_counter()
            self._load()
            seconds["load"] += time.perf_counter() - t
            t = time.perf_counter()
            words.extend(self._asr.transcribe([(*audio.cut(g[0].start, g[-1].end), g) for g in batch]))
            t1 = time.perf_counter()
            for g in batch:
                for r in g:
                    _, x = audio.cut(r.start, r.end)
                    voices.append(self._embed(r, x))
            seconds["asr"] += t1 - t
            seconds["embed"] += time.perf_counter() - t1

        t = time.perf_counter()
        for t0, block in stream_audio(path, sr=SAMPLE_RATE, block_seconds=cfg.block_frames * FRAME / SAMPLE_RATE):
            audio.append(t0, block)
            duration = t0 + len(block) / SAMPLE_RATE
            closed = tracker.feed(self._vad(block))
            regions += closed
            pending += closed
            seconds["decode+vad"] += time.perf_counter() - t
            frontier = tracker.start * FRAME / SAMPLE_RATE if tracker.start is not None else duration
            groups = windows(pending, cfg.asr.window, cfg.asr.pack_gap, cfg.asr.span)
            reach = cfg.asr.window if cfg.asr.pack_gap is None else cfg.asr.span
            if groups and frontier - groups[-1][0].start <= reach:  # the last window may still grow
                groups, pending = groups[:-1], groups[-1]
            else:
                pending = []
            ready += groups
            if len(ready) >= max(1, cfg.asr.batch_size):
                process(ready)
                ready = []
            keep_from = ready[0][0].start if ready else pending[0].start if pending else frontier
            audio.drop_before(keep_from - 1.0)
            hook("transcribe", min(duration, info.duration or duration), max(info.duration or 0.0, duration))
            t = time.perf_counter()
        last = tracker.finish(duration)
        regions += last
        pending += last
        process(ready + windows(pending, cfg.asr.window, cfg.asr.pack_gap, cfg.asr.span))
        audio.drop_before(float("inf"))
        hook("transcribe", duration, duration)
        if not regions or not words:
            raise InputError(f"no speech found in {path}: the voice activity detector found "
                             f"{len(regions)} speech region(s) and the recogniser no words in {duration:.1f} s")
        voices.sort(key=lambda v: v.region.start)
        face_stats = None
        if cfg.faces.use and cfg.diarize.face_weight > 0 and info.has_video and not faces_available():
            log.info("%s: faces not used for the speakers: the face models are not installed (merc[faces])", path)
        elif cfg.faces.use and cfg.diarize.face_weight > 0 and info.has_video:  # who is on screen in each region
            t = time.perf_counter()
            need = [v for v in voices if v.embedding is not None]
            found, face_stats = region_faces(path, [v.region for v in need], cfg.faces, hook)
            for v, f in zip(need, found):
                v.face = f
            seconds["faces"] = time.perf_counter() - t
        t = time.perf_counter()
        dia = diarize(voices, cfg.diarize)
        segments = build_segments([v.region for v in voices], dia.labels, dia.changes, words, cfg.segment)
        seconds["diarize"] = time.perf_counter() - t
        hook("diarize", 1, 1)
        if not segments:
            raise InputError(f"no speech found in {path}: no words fell inside the speech regions")
        n_speakers = len({s.speaker for s in segments})
        log.info("%s: %d utterances, %d speakers, %.1f s of audio", path, len(segments), n_speakers, duration)
        return RecordingTranscript(str(path), duration, segments, regions, n_speakers, seconds, words, voices,
                                   face_stats)


def config_json(config: RecordingConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)
