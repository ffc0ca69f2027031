"""Who is on screen while someone speaks: a face descriptor per speech region of a video, for the speaker clustering.

Frames are sampled inside each speech region (``fps`` per second of the region, at least its middle frame, at
most ``max_frames``) and read in one streaming pass over the video (decoded in order, only the sampled frames
converted to RGB; memory is one frame). In each sampled frame merc's face models find the faces (dlib HOG,
:mod:`merc.encoders.face`) and describe them (dlib ResNet, 128-d); a frame counts when it shows one face, or one
face at least ``dominance`` times the area of the next (the person in the shot). The region's face is the unit
mean of its counted descriptors, or None when no sampled frame counted (no face, a crowd, an audio file).

:func:`merc.recording.diarize.diarize` mixes the face distance into the voice distance of two regions that both
have a face (``DiarizeConfig.face_weight``). This assumes the shot shows the speaker; in a recording where the
camera often shows the listener the faces mislead, which is why the weight is chosen on data (the dev split of the
generated recordings, where the shot always shows the speaker: ``benchmarks/bench_recording.py --tune``).

A video that fails to decode part-way keeps the faces found before the failure (logged); the voices decide the rest.

Reference: King, dlib ``face_recognition_model_v1`` (same person below euclidean distance 0.6); Nagrani et al.
2020, "Disentangled Speech Embeddings using Cross-Modal Self-Supervision" (faces and voices of one speaker).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from merc.recording.vad import Region

log = logging.getLogger(__name__)


@dataclass
class FaceConfig:
    use: bool = True  # video inputs: faces join the speaker clustering (`merc predict --no-faces` turns it off)
    fps: float = 1.0  # sampled frames per second of speech region
    max_frames: int = 1  # at most this many per region (at least 1: its middle). A dlib descriptor took 0.4 s per
    #                      frame on the loaded 2-core machine: 3 frames cost 0.24-0.33 s per media second on dev
    #                      videos against 0.17 for 1, with the same faces found (one still face per turn there)
    min_face: int | None = 80  # px: faces this large are looked for at reduced resolution first (merc.encoders.face);
    #                            the person in the shot is large, a face alone in a frame is still found when smaller
    dominance: float = 2.0  # a frame with several faces counts when the largest is this many times the next's area


@dataclass
class FaceStats:
    regions: int = 0  # regions asked about
    sampled: int = 0  # frames sampled
    counted: int = 0  # frames that gave a descriptor (one dominant face)
    with_face: int = 0  # regions that got a face
    error: str | None = None  # a decoding failure part-way


# helpers

def sample_times(region: Region, fps: float, max_frames: int) -> list[float]:
    """Times (s) of the frames sampled in ``region``: n evenly spaced centres, n = its seconds x fps in
    [1, max_frames]."""
    d = region.end - region.start
    n = int(np.clip(int(d * fps), 1, max(1, max_frames)))
    return [region.start + (j + 0.5) * d / n for j in range(n)]


def _pick(obs, dominance: float) -> np.ndarray | None:
    if not obs:
        return None
    areas = [(o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) for o in obs]
    order = np.argsort(areas)[::-1]
    if len(obs) > 1 and areas[order[0]] < dominance * areas[order[1]]:
        return None  # two people of similar size in the shot: which one speaks is not known
    return np.asarray(obs[order[0]].embedding, np.float32)


def available() -> bool:
    """Whether the face models can run here (dlib and face-recognition-models, the ``faces`` extra)."""
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("dlib", "face_recognition_models"))


# API

def region_faces(path: str | Path, regions: list[Region], config: FaceConfig | None = None,
                 hook: Callable[[str, float, float], None] | None = None) -> tuple[list[np.ndarray | None], FaceStats]:
    """One unit face descriptor (128,) or None per region of ``path``'s video (see the module docstring)."""
    import av

    from merc.encoders.face import FaceDetectorConfig, detect_and_embed, get_face_detector, get_face_embedder
    from merc.media.decode import MediaError, _open
    cfg = config or FaceConfig()
    stats = FaceStats(regions=len(regions))
    targets = sorted((t, i) for i, r in enumerate(regions) for t in sample_times(r, cfg.fps, cfg.max_frames))
    found: list[list[np.ndarray]] = [[] for _ in regions]
    if not targets:
        return [None] * len(regions), stats
    detector = get_face_detector(FaceDetectorConfig(min_face=cfg.min_face))
    embedder = get_face_embedder()
    k = 0
    try:
        with _open(path) as c:
            if not c.streams.video:
                return [None] * len(regions), stats
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            end = targets[-1][0]
            for frame in c.decode(stream):
                t = float(frame.time) if frame.time is not None else 0.0
                if t + 1e-6 < targets[k][0]:
                    continue
                face = _pick(detect_and_embed(frame.to_ndarray(format="rgb24"), detector=detector,
                                              encoder=embedder), cfg.dominance)
                stats.sampled += 1
                stats.counted += face is not None
                while k < len(targets) and targets[k][0] <= t + 1e-6:  # the first frame at or after each time
                    if face is not None:
                        found[targets[k][1]].append(face)
                    k += 1
                if hook:
                    hook("faces", min(t, end), end)
                if k >= len(targets):
                    break
    except (av.FFmpegError, MediaError, ValueError, RuntimeError) as e:  # keep what was found so far
        stats.error = f"video of {path} not decodable after {k} of {len(targets)} sampled frames: {e}"
        log.warning("%s", stats.error)
    out: list[np.ndarray | None] = []
    for f in found:
        if f:
            m = np.mean(f, axis=0)
            out.append((m / max(float(np.linalg.norm(m)), 1e-8)).astype(np.float32))
        else:
            out.append(None)
    stats.with_face = sum(o is not None for o in out)
    return out, stats
