"""Decode a recording's audio as a stream of fixed-size blocks, so an hour-long file never sits in memory.

:func:`stream_audio` yields ``(start_seconds, block)`` with ``block`` (samples,) float32 mono at ``sr`` Hz,
every block ``block_seconds`` long except the last. Memory is one block plus PyAV's decoder state, whatever
the file's length. Errors are :class:`~merc.media.decode.MediaError` naming the file (missing, 0 bytes, not a
media container, no audio stream, damaged stream), raised before the first block where the header shows it.

Samples are placed by their timestamps through the same filter graph as :func:`merc.media.decode.load_audio`
(ffmpeg's ``aresample=async``: a gap in the timestamps is silence), and block times are the file's own (the
first block starts at the first sample's timestamp), so segment times computed on the stream cut the same
audio there, also in a recording concatenated from clips.
"""
from __future__ import annotations

import os
from typing import Iterator

import av
import numpy as np

from merc.media.decode import MediaError, _audio_graph, _open, _pull_all


def stream_audio(path: str | os.PathLike, *, sr: int = 16000,
                 block_seconds: float = 30.0) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(t0, block)``: consecutive blocks of the first audio stream, float32 mono in [-1, 1] at ``sr``."""
    block = max(1, int(round(block_seconds * sr)))
    with _open(path) as c:
        if not c.streams.audio:
            raise MediaError(f"no audio stream in {path}")
        stream = c.streams.audio[0]
        pending: list[np.ndarray] = []
        n_pending = 0
        emitted = 0  # samples yielded so far
        t0 = 0.0  # time of the first sample

        def take(final: bool) -> Iterator[tuple[float, np.ndarray]]:
            nonlocal pending, n_pending, emitted
            if not pending:
                return
            buf = np.concatenate(pending)
            k = 0
            while len(buf) - k >= block or (final and k < len(buf)):
                out = np.clip(buf[k:k + block], -1.0, 1.0)
                yield t0 + emitted / sr, out
                emitted += len(out)
                k += len(out)
            rest = buf[k:]
            pending, n_pending = ([rest] if len(rest) else []), len(rest)

        try:
            graph = _audio_graph(stream, sr)
            first = True
            for frame in c.decode(stream):
                graph.push(frame)
                for out in _pull_all(graph):
                    if first:
                        t0, first = (float(out.time) if out.time is not None else 0.0), False
                    x = out.to_ndarray().reshape(-1)
                    pending.append(x)
                    n_pending += len(x)
                if n_pending >= block:
                    yield from take(final=False)
            graph.push(None)  # flush
            for out in _pull_all(graph):
                if first:
                    t0, first = (float(out.time) if out.time is not None else 0.0), False
                pending.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError) as e:
            raise MediaError(f"audio not decodable in {path}: {e}") from e
        yield from take(final=True)
        if emitted == 0:
            raise MediaError(f"no audio samples decoded from {path}")
