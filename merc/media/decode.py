"""Decode audio (mono float32 at a chosen rate) and video frames (RGB at N fps) with PyAV.

PyAV bundles its own FFmpeg libraries, so no system ``ffmpeg`` is needed. Every failure is raised as
:class:`MediaError` whose message names the file and says what was wrong (missing, not decodable,
no audio stream, …), so callers such as the QC checks can report it verbatim.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from merc.errors import ConfigError, CorruptMedia, MissingMedia, NoAudioStream


class MediaError(CorruptMedia):
    """A media file is missing, unreadable, or lacks what was asked for. The message names the file. Encoders
    treat it as an unusable input (:class:`merc.errors.UnusableInput`): the utterance is absent, with this reason."""


class MediaMissingError(MediaError, MissingMedia):
    """The media file does not exist or is empty."""


class NoAudioStreamError(MediaError, NoAudioStream):
    """The file has no audio stream, or the segment no audio samples."""


@dataclass
class MediaInfo:
    path: str
    duration: float  # seconds (container duration, else the longest stream's)
    has_audio: bool
    has_video: bool
    width: int | None
    height: int | None
    fps: float | None
    audio_rate: int | None


@dataclass
class Frame:
    t: float  # seconds from the start of the file
    image: np.ndarray  # (H, W, 3) uint8 RGB


# helpers

def _open(path: str | os.PathLike) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise MediaMissingError(f"missing file {p}")
    if p.stat().st_size == 0:
        raise MediaMissingError(f"empty file {p} (0 bytes)")
    try:
        return av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"not decodable: {p}: {getattr(e, 'strerror', None) or e}") from e


def _stream_duration(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _seek(container, stream, start: float | None) -> None:
    if start and start > 0:
        # seek to the keyframe at or before `start`; frames before `start` are dropped by the caller
        container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)


# API

def probe(path: str | os.PathLike) -> MediaInfo:
    """Read the container header: duration, which streams exist, frame size/rate, audio rate.

    Raises MediaError when the file is missing, empty, not a media container, or has no stream.
    Does not decode the whole file (a file truncated after a valid header passes here; decoding it
    with :func:`load_audio` reveals the damage).
    """
    with _open(path) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        v = c.streams.video[0] if c.streams.video else None
        if a is None and v is None:
            raise MediaError(f"no audio or video stream in {path}")
        durations = [d for d in (_stream_duration(a) if a else None, _stream_duration(v) if v else None) if d]
        if c.duration is not None:
            duration = c.duration / av.time_base
        elif durations:
            duration = max(durations)
        else:
            raise MediaError(f"unknown duration for {path} (no container or stream duration)")
        fps = None
        if v is not None:
            rate = v.average_rate or v.base_rate or v.guessed_rate
            fps = float(rate) if rate else None
        return MediaInfo(path=str(path), duration=float(duration), has_audio=a is not None,
                         has_video=v is not None,
                         width=v.codec_context.width if v is not None else None,
                         height=v.codec_context.height if v is not None else None,
                         fps=fps, audio_rate=a.codec_context.sample_rate if a is not None else None)


def _audio_graph(stream, sr: int):
    """abuffer -> aresample (timestamp-driven) -> mono float32 at ``sr`` -> sink.

    ``aresample=async=1`` is ffmpeg's own answer to timestamp gaps and overlaps (what ``ffmpeg -af
    aresample=async=1`` does): a gap is filled with silence and an overlap trimmed when they exceed
    ``min_hard_comp`` seconds (10 ms here), smaller drift is absorbed by stretching at most 1 sample/s. So a
    recording made by concatenating clips, or a stream with dropped packets, keeps every sample at its time.
    """
    graph = av.filter.Graph()
    src = graph.add_abuffer(template=stream)
    resample = graph.add("aresample", f"async=1:min_hard_comp={HARD_COMP}")
    fmt = graph.add("aformat", f"sample_fmts=flt:channel_layouts=mono:sample_rates={sr}")
    sink = graph.add("abuffersink")
    src.link_to(resample)
    resample.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    return graph


def _pull_all(graph) -> list:
    out = []
    while True:
        try:
            out.append(graph.pull())
        except (av.BlockingIOError, av.EOFError):
            return out


HARD_COMP = 0.01  # seconds: timestamp gaps/overlaps above this are filled with silence / trimmed


def load_audio(path: str | os.PathLike, *, sr: int = 16000, start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """Decode the first audio stream to float32 mono in [-1, 1] at ``sr`` Hz, every sample at its timestamp.

    Samples are placed by the frames' timestamps (ffmpeg's ``aresample=async``, :func:`_audio_graph`), not
    joined end to end: a gap in the timestamps (concatenated clips, dropped packets) is silence of the gap's
    length, so ``start``/``end`` (seconds, e.g. an IEMOCAP turn inside a dialogue recording, a transcript
    segment) cut what ffmpeg plays at those times.
    Raises MediaError when the file is missing, has no audio stream, or fails to decode.
    """
    return load_audio_timed(path, sr=sr, start=start, end=end)[0]


def load_audio_timed(path: str | os.PathLike, *, sr: int = 16000, start: float | None = None,
                     end: float | None = None) -> tuple[np.ndarray, float]:
    """:func:`load_audio` and the time (seconds) of the first decoded sample, before any cut: a whole-file
    decode then says which cuts it already holds (:mod:`merc.media.clip`)."""
    if start is not None and end is not None and end <= start:
        raise MediaError(f"empty segment [{start}, {end}] requested from {path}")
    with _open(path) as c:
        if not c.streams.audio:
            raise NoAudioStreamError(f"no audio stream in {path}")
        stream = c.streams.audio[0]
        chunks: list[np.ndarray] = []
        t0: float | None = None  # time of the first output sample
        try:
            graph = _audio_graph(stream, sr)
            _seek(c, stream, start)
            for frame in c.decode(stream):
                past_end = end is not None and frame.time is not None and frame.time > end
                graph.push(frame)  # even the first frame past `end`: it closes a gap before it with silence
                for out in _pull_all(graph):
                    if t0 is None:
                        t0 = float(out.time) if out.time is not None else 0.0
                    chunks.append(out.to_ndarray().reshape(-1))
                if past_end:
                    break
            graph.push(None)  # flush
            for out in _pull_all(graph):
                if t0 is None:
                    t0 = float(out.time) if out.time is not None else 0.0
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as e:
            raise MediaError(f"audio not decodable in {path}: {e}") from e
    if not chunks:
        raise NoAudioStreamError(f"no audio samples decoded from {path}")
    wav = np.concatenate(chunks).astype(np.float32, copy=False)
    t0 = t0 or 0.0
    total = len(wav)
    lo = max(0, int(round(((start or 0.0) - t0) * sr))) if start is not None else 0
    hi = int(round((end - t0) * sr)) if end is not None else len(wav)
    wav = wav[lo:hi]
    if wav.size == 0:
        duration = t0 + total / sr
        raise MediaError(f"segment [{start}, {end}] of {path} holds no audio samples (its audio ends at "
                         f"{duration:.2f} s)")
    return np.clip(wav, -1.0, 1.0), t0


def load_frames(path: str | os.PathLike, *, fps: float = 1.0, start: float | None = None,
                end: float | None = None, max_frames: int | None = None) -> list[Frame]:
    """Decode one RGB frame per ``1/fps`` seconds (the first frame at or after each sampling time).

    Sampling times are ``start + k/fps`` (``start`` defaults to the first frame's time).
    Raises MediaError when the file is missing, has no video stream, or fails to decode.
    """
    if fps <= 0:
        raise ConfigError(f"fps must be > 0, got {fps}")
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(f"no video stream in {path}")
        stream = c.streams.video[0]
        out: list[Frame] = []
        next_t: float | None = start
        try:
            _seek(c, stream, start)
            for frame in c.decode(stream):
                t = float(frame.time) if frame.time is not None else 0.0
                if next_t is None:
                    next_t = t
                if end is not None and t >= end:
                    break
                if t + 1e-6 < next_t:
                    continue
                out.append(Frame(t=t, image=frame.to_ndarray(format="rgb24")))
                if max_frames is not None and len(out) >= max_frames:
                    break
                while next_t <= t + 1e-6:  # a long frame may cover several sampling times
                    next_t += 1.0 / fps
        except (av.FFmpegError, ValueError) as e:
            raise MediaError(f"video not decodable in {path}: {e}") from e
    if not out:
        raise MediaError(f"no video frames decoded from {path}"
                         + (f" in [{start}, {end}]" if start is not None or end is not None else ""))
    return out
