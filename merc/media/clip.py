"""Decode each clip once for every consumer: :class:`MediaClip` memoises a file's header, its audio and its
sampled frames; :class:`ClipCache` hands the same ``MediaClip`` to every check and encoder that asks for a
path while it is active; :class:`Prefetcher` decodes the next clips on a background thread while the models
work on the current one.

Every QC check and media encoder reads media through :func:`open_clip` (not :func:`merc.media.decode.load_audio`
directly). Outside an active cache that is a fresh ``MediaClip`` (decoded for that caller alone, as before);
inside ``with ClipCache(): ...`` the same path gives the same object, so the QC checks of one utterance, or the
audio (face) encoders of one chunk, decode its audio (frames) once::

    with ClipCache() as cache:
        Prefetcher(cache, paths, audio=True).start()   # optional: decode ahead on one thread
        wav = open_clip(path).audio(sr=16000)           # decoded here, or already by the prefetcher
        again = open_clip(path).audio(sr=16000)         # the same array, no second decode

What is shared is exact: a request is served from an earlier decode only when it would give the same samples
(the whole stream at the same rate; a cut whose end lies past the end of the audio, which ``load_audio``
decodes in full too). Any other cut (a turn inside an IEMOCAP dialogue recording) is decoded as asked and
memoised under its own key. Failures are memoised too: a corrupt file raises the same ``MediaError`` to every
consumer without being decoded again. ``MediaClip.decodes`` counts the decoder passes (tests count them).
"""
from __future__ import annotations

import contextvars
import os
import threading
from collections import Counter, OrderedDict
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from merc.media import decode

_ACTIVE: contextvars.ContextVar["ClipCache | None"] = contextvars.ContextVar("merc_clip_cache", default=None)
DECODES: Counter = Counter()  # process-wide decoder passes by kind ("probe", "audio", "frames"): tests read it


class MediaClip:
    """One media file's decoded streams, each decoded at most once per setting (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.decodes: Counter = Counter()
        self._memo: dict[tuple, Any] = {}
        self._lock = threading.RLock()

    def _get(self, key: tuple, fn: Callable[[], Any]) -> Any:
        with self._lock:  # one decode per key, also when the prefetcher and a consumer ask at once
            if key not in self._memo:
                try:
                    self._memo[key] = (True, fn())
                except decode.MediaError as e:  # memoised: every consumer gets the same error, no second decode
                    self._memo[key] = (False, e)
            ok, value = self._memo[key]
        if not ok:
            raise value
        return value

    def _count(self, kind: str) -> None:
        self.decodes[kind] += 1
        DECODES[kind] += 1

    def memo(self, key: tuple, fn: Callable[[], Any]) -> Any:
        """Any per-clip result (e.g. face detections of the sampled frames), computed once per ``key``."""
        return self._get(("memo", *key), fn)

    def info(self) -> decode.MediaInfo:
        def run():
            self._count("probe")
            return decode.probe(self.path)
        return self._get(("probe",), run)

    def audio(self, sr: int = 16000, start: float | None = None, end: float | None = None) -> np.ndarray:
        """:func:`merc.media.decode.load_audio` of this file (the same samples), decoded once. Read-only array."""
        if start is None:
            full, t0 = self._full_audio(sr)
            # a cut ending after the last sample (with 0.1 s to spare): load_audio decodes every frame then too,
            # and its cut keeps every sample
            if end is None or end >= t0 + len(full) / sr + 0.1:
                return full
        key = ("audio", sr, start, end)

        def run():
            self._count("audio")
            wav = decode.load_audio(self.path, sr=sr, start=start, end=end)
            wav.setflags(write=False)
            return wav
        return self._get(key, run)

    def _full_audio(self, sr: int) -> tuple[np.ndarray, float]:
        def run():
            self._count("audio")
            wav, t0 = decode.load_audio_timed(self.path, sr=sr)
            wav.setflags(write=False)
            return wav, t0
        return self._get(("audio", sr, None, None), run)

    def frames(self, fps: float = 1.0, start: float | None = None, end: float | None = None,
               max_frames: int | None = None) -> list[decode.Frame]:
        """:func:`merc.media.decode.load_frames` of this file, decoded once per setting."""
        def run():
            self._count("frames")
            out = decode.load_frames(self.path, fps=fps, start=start, end=end, max_frames=max_frames)
            for f in out:
                f.image.setflags(write=False)
            return out
        return self._get(("frames", float(fps), start, end, max_frames), run)


class ClipCache:
    """Same path -> same :class:`MediaClip` while active (``with ClipCache(): ...``); keeps the ``max_clips``
    most recently used clips (their decoded audio and frames) in memory."""

    def __init__(self, max_clips: int = 64):
        self.max_clips = max_clips
        self._clips: OrderedDict[str, MediaClip] = OrderedDict()
        self._lock = threading.Lock()
        self._token: contextvars.Token | None = None

    def clip(self, path: str | os.PathLike) -> MediaClip:
        key = str(path)
        with self._lock:
            c = self._clips.get(key)
            if c is None:
                c = self._clips[key] = MediaClip(key)
            self._clips.move_to_end(key)
            while len(self._clips) > self.max_clips:
                self._clips.popitem(last=False)
            return c

    def drop(self, paths: Iterable[str | os.PathLike]) -> None:
        """Forget these clips (their memory goes back)."""
        with self._lock:
            for p in paths:
                self._clips.pop(str(p), None)

    def __enter__(self) -> "ClipCache":
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None


def active_cache() -> ClipCache | None:
    return _ACTIVE.get()


def open_clip(path: str | os.PathLike) -> MediaClip:
    """The active cache's clip of ``path``, else a fresh one (decoded for this caller alone)."""
    cache = _ACTIVE.get()
    return cache.clip(path) if cache is not None else MediaClip(path)


class Prefetcher:
    """Decode clips ahead on one daemon thread, in the order the consumers will ask for them.

    ``jobs``: ``(path, fn)`` pairs; the thread calls ``fn(cache.clip(path))`` (e.g. ``lambda c: c.audio(16000)``)
    and stays at most ``ahead`` clips in front of the consumer, who calls :meth:`advance` after each item.
    Errors are left in the clip's memo for the consumer to meet; anything else the thread drops (the consumer
    decodes again and sees it). One thread only: PyAV decodes outside the GIL, so it overlaps the models
    without taking the place of a worker process (``--threads`` / ``--workers`` set those).
    """

    def __init__(self, cache: ClipCache, jobs: Sequence[tuple[str, Callable[[MediaClip], Any]]], *, ahead: int = 4):
        self.cache = cache
        self.jobs = list(jobs)
        self.ahead = max(1, ahead)
        self._done = 0  # items the consumer finished
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="merc-prefetch", daemon=True)

    def start(self) -> "Prefetcher":
        self._thread.start()
        return self

    def _run(self) -> None:
        for i, (path, fn) in enumerate(self.jobs):
            with self._cond:
                while not self._stop and i >= self._done + self.ahead:
                    self._cond.wait()
                if self._stop:
                    return
            if not path:
                continue
            try:
                fn(self.cache.clip(path))
            except Exception:  # noqa: BLE001 - the consumer decodes again and meets the error itself
                pass

    def advance(self, n: int = 1) -> None:
        with self._cond:
            self._done += n
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> "Prefetcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
