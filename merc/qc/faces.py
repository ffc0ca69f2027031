"""QC check "faces": is the labelled speaker's face in the clip, and which face track is it?

measure: sample frames at ``fps`` (default 1 per second), detect faces (dlib HOG by default), embed
each detection (dlib 128-d descriptor) and link detections across frames into tracks (IoU, with a
descriptor fallback); per track: frames, times, boxes, mean descriptor and mean box area.

judge: each speaker's face gallery is built from *confident* utterances (exactly one track, seen in
at least ``min_coverage`` of the sampled frames, and not excluded, e.g. because the speaker-identity
check failed them); its reference is a robust centroid (iterated trimmed mean), leaving out the
utterance being judged. Per utterance, the labelled speaker's track is the one nearest the reference,
accepted when its euclidean distance is below ``max_distance`` (dlib's usual 0.6). It fails when

- no face is detected ("no face in 0/5 sampled frames"),
- faces are present but none is the labelled speaker's (the reason names whose gallery it matches),
- two co-occurring tracks are within ``ambiguity_margin`` of the reference (cannot tell them apart).

Speakers without a gallery pass with an explicit reason. After ``judge``, ``self.speaker_tracks``
maps utterance id -> the chosen track (index, status, frame times, boxes, distance) so that later
stages embed the right face.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from merc.errors import ConfigError
from merc.qc.base import Flag, QCItem
from merc.qc.speaker import leave_one_out_centroids, media_segment, robust_centroid


@dataclass
class FaceCheckConfig:
    fps: float = 1.0  # sampled frames per second
    max_frames: int = 30  # at most this many sampled frames per clip
    detector: str = "hog"  # "hog" | "cnn" | "mtcnn" (see merc.encoders.face.FaceDetector)
    upsample: int = 1
    # reduced-resolution detection (merc.encoders.face.FaceDetectorConfig.min_face): faces of at least this many px
    # get the full scan's boxes (to a pixel) at a third of its cost; None: the full scan on every frame
    min_face: int | None = 64
    min_score: float = 0.0  # detector score below which a detection is ignored
    min_iou: float = 0.2  # tracking: box overlap linking two detections
    link_distance: float = 0.5  # tracking: descriptor distance linking two detections that moved
    max_gap: int = 2  # tracking: sampled frames a track may miss
    max_distance: float = 0.6  # same person when a track is this close to the speaker's reference
    ambiguity_margin: float = 0.05  # two co-occurring tracks closer than this to each other's distance: ambiguous
    min_coverage: float = 0.5  # a gallery utterance's single track is seen in at least this fraction of frames
    min_gallery: int = 2  # gallery utterances needed (not counting the judged one)
    trim: float = 0.5  # robust centroid: keep the half of the gallery nearest the centre (tiny, dirty galleries)
    iters: int = 3
    exclude_from_gallery: list[str] = field(default_factory=list)  # utterance ids never used in galleries


# helpers


def _round_box(b: Iterable[float]) -> list[float]:
    return [round(float(v), 1) for v in b]


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


# classes


class FaceCheck:
    """Labelled speaker's face vs. the faces in the clip (see the module docstring)."""

    name = "faces"
    # config fields that change what ``measure`` returns (see merc.qc.cache)
    _MEASURE_FIELDS = ("fps", "max_frames", "detector", "upsample", "min_score", "min_iou", "link_distance", "max_gap")

    @property
    def measure_fields(self) -> tuple[str, ...]:
        """min_face counts only when set: full-scan measurements cached before it existed stay valid."""
        return self._MEASURE_FIELDS + (("min_face",) if self.config.min_face else ())

    @property
    def measure_version(self) -> str | None:
        """The reduced scan became the full scan's own pyramid (was: a resized frame): measurements made with
        ``min_face`` before that are not reused (see merc.qc.cache.measure_key)."""
        return "pyramid" if self.config.min_face else None

    def __init__(self, config: FaceCheckConfig | None = None):
        self.config = config or FaceCheckConfig()
        if self.config.min_gallery < 1:
            raise ConfigError(f"FaceCheckConfig.min_gallery must be >= 1, got {self.config.min_gallery}")
        self.speaker_tracks: dict[str, dict[str, Any]] = {}
        self.galleries: dict[str, list[str]] = {}  # speaker -> gallery utterance ids (after judge)
        self._models = None

    def artifacts(self) -> dict[str, Any]:
        """After ``judge``: ``speaker_tracks`` (utterance id -> the labelled speaker's face track; written to
        ``speaker_tracks.json``) and ``galleries`` (speaker -> gallery utterance ids, sized in the report)."""
        return {"speaker_tracks": self.speaker_tracks, "galleries": self.galleries}

    def _get_models(self):
        if self._models is None:
            from merc.encoders.face import FaceDetectorConfig, TrackerConfig, get_face_detector, get_face_embedder
            c = self.config
            det = get_face_detector(FaceDetectorConfig(backend=c.detector, upsample=c.upsample, min_score=c.min_score,
                                                       min_face=c.min_face))
            self._models = (det, get_face_embedder(),
                            TrackerConfig(min_iou=c.min_iou, link_distance=c.link_distance, max_gap=c.max_gap))
        return self._models

    # phase 1
    def _video(self, item: QCItem) -> str | None:
        u = item.utterance
        path = (item.extra or {}).get("video") or u.video
        if not path and item.media and str(item.media).lower().endswith((".mp4", ".avi", ".mkv", ".mov", ".webm")):
            path = item.media
        return path

    def decode_jobs(self, item: QCItem) -> list:
        """What to decode ahead for ``measure`` (:class:`merc.media.clip.Prefetcher`)."""
        path = self._video(item)
        if not path:
            return []
        start, end = media_segment(item, path)
        c = self.config
        return [(path, lambda clip: clip.frames(c.fps, start, end, c.max_frames))]

    def _frames(self, item: QCItem) -> list | dict[str, Any]:
        """The clip's sampled frames, or the measurement to record instead (skipped / error)."""
        from merc.media.clip import open_clip
        from merc.media.decode import MediaError
        path = self._video(item)
        if not path:
            return {"skipped": f"utterance {item.utterance.utterance_id} has no video"}
        start, end = media_segment(item, path)
        try:
            return open_clip(path).frames(self.config.fps, start, end, self.config.max_frames)
        except MediaError as e:
            return {"error": str(e)}
        except Exception as e:
            return {"error": f"{type(e).__name__} decoding frames of {path}: {e}"}

    def prepare(self, items: list[QCItem]) -> None:
        """Detect and cut the face chips of every item's frames, then run the descriptor network once over all the
        batch's faces (8-9 ms per face in a batch, 18 ms alone); ``measure`` uses the result. An item that fails
        here is left to ``measure``, which records its error."""
        from merc.encoders.face import detect_and_chip, observe
        detector, encoder, _ = self._get_models()
        self._prepared = {}
        done = []
        for it in items:
            frames = self._frames(it)
            if isinstance(frames, dict):
                continue
            try:
                dets, chips = detect_and_chip([f.image for f in frames], detector=detector, encoder=encoder)
            except (RuntimeError, ValueError):
                continue
            done.append((it.utterance_id, frames, dets, chips))
        desc = encoder.describe([c for _, _, _, chips in done for cs in chips for c in cs])
        at = 0
        for uid, frames, dets, chips in done:
            n = sum(len(cs) for cs in chips)
            self._prepared[uid] = (frames, observe(dets, chips, desc[at:at + n]))
            at += n

    def measure(self, item: QCItem) -> dict[str, Any]:
        from merc.encoders.face import detect_and_embed_many, track_faces

        ready = getattr(self, "_prepared", {}).pop(item.utterance_id, None)
        detector, encoder, tracker = self._get_models()
        if ready is not None:
            frames, per_frame = ready
        else:
            frames = self._frames(item)
            if isinstance(frames, dict):
                return frames
            try:
                per_frame = detect_and_embed_many([f.image for f in frames], detector=detector, encoder=encoder)
            except (RuntimeError, ValueError) as e:  # dlib raises RuntimeError on odd images
                return {"error": f"face detection failed on {self._video(item)}: {e}"}
        tracks = track_faces(per_frame, tracker)
        h, w = frames[0].image.shape[:2]
        return {
            "n_frames": len(frames),
            "frame_size": [w, h],
            "times": [round(f.t, 3) for f in frames],
            "n_detections": sum(len(p) for p in per_frame),
            "tracks": [{"frames": t.frames, "boxes": [_round_box(b) for b in t.boxes],
                        "scores": [round(float(s), 3) for s in t.scores],
                        "embedding": [round(float(v), 5) for v in t.embedding],
                        "mean_area": round(t.mean_area, 1), "area_frac": round(t.mean_area / (w * h), 4),
                        "coverage": round(len(t.frames) / len(frames), 3)} for t in tracks],
        }

    # phase 2
    def _confident(self, m: dict[str, Any]) -> bool:
        tr = m.get("tracks") or []
        return "error" not in m and len(tr) == 1 and tr[0]["coverage"] >= self.config.min_coverage

    def judge(self, items: list[QCItem], measurements: dict[str, dict[str, Any]], *,
              exclude_from_gallery: Iterable[str] | None = None) -> list[Flag]:
        """Flags per utterance; sets ``self.speaker_tracks`` and ``self.galleries``.

        ``exclude_from_gallery`` (or ``config.exclude_from_gallery``): utterance ids not trusted as
        gallery members, e.g. those the speaker-identity check failed.
        """
        cfg = self.config
        excluded = set(cfg.exclude_from_gallery) | set(exclude_from_gallery or ())
        gallery: dict[str, list[str]] = defaultdict(list)
        desc: dict[str, np.ndarray] = {}
        for it in items:
            m = measurements.get(it.utterance_id) or {}
            if self._confident(m) and it.utterance_id not in excluded:
                gallery[it.utterance.speaker].append(it.utterance_id)
                desc[it.utterance_id] = np.asarray(m["tracks"][0]["embedding"], np.float64)
        self.galleries = dict(gallery)
        refs: dict[str, np.ndarray] = {}  # speaker -> reference descriptor (whole gallery)
        loo: dict[str, np.ndarray] = {}  # gallery member -> reference without it
        for s, g in gallery.items():
            x = np.stack([desc[u] for u in g])
            if len(g) >= cfg.min_gallery:
                refs[s] = robust_centroid(x, trim=cfg.trim, iters=cfg.iters)
            if len(g) - 1 >= max(1, cfg.min_gallery):
                loo.update(zip(g, leave_one_out_centroids(x, trim=cfg.trim, iters=cfg.iters)))
        self.speaker_tracks = {}
        return [self._judge_one(it, measurements.get(it.utterance_id), gallery, refs, loo) for it in items]

    def _judge_one(self, it: QCItem, m: dict[str, Any] | None, gallery: dict[str, list[str]],
                   refs: dict[str, np.ndarray], loo: dict[str, np.ndarray]) -> Flag:
        cfg, uid, name = self.config, it.utterance_id, it.utterance.speaker
        thr = cfg.max_distance
        if m is None:
            return Flag(uid, self.name, False, None, thr, "no measurement")
        if "skipped" in m:
            return Flag(uid, self.name, True, None, thr, f"not checked: {m['skipped']}")
        if "error" in m:
            return Flag(uid, self.name, False, None, thr, f"frames not analysed: {m['error']}")
        tracks, n = m.get("tracks") or [], m.get("n_frames", 0)
        if not tracks:
            return Flag(uid, self.name, False, None, thr, f"no face in 0/{n} sampled frames")
        g = gallery.get(name, [])
        n_members = len(g) - (uid in g)  # the judged utterance is left out of its own reference
        if n_members < cfg.min_gallery:
            if len(tracks) == 1:
                self._record(uid, 0, tracks[0], m, None, "unverified")
            return Flag(uid, self.name, True, None, thr,
                        f"not verified: speaker {name!r} has no face gallery ({n_members} other confident "
                        f"single-face utterance(s) < min_gallery {cfg.min_gallery}); {len(tracks)} face track(s)")
        ref = loo[uid] if uid in g else refs[name]
        dists = [_dist(t["embedding"], ref) for t in tracks]
        order = np.argsort(dists, kind="stable")
        i1 = int(order[0])
        d1 = dists[i1]
        seen = f"{len(tracks[i1]['frames'])}/{n} frames"
        if d1 > thr:
            others = {s: _dist(tracks[i1]["embedding"], r) for s, r in refs.items() if s != name}
            match = min(others, key=others.get) if others else None
            who = (f"; the face matches {match!r} (distance {others[match]:.2f})"
                   if match is not None and others[match] <= thr else "")
            return Flag(uid, self.name, False, d1, thr,
                        f"labelled speaker {name!r} not among {len(tracks)} face track(s): nearest at distance "
                        f"{d1:.2f} > {thr}{who}")
        for i2 in (int(j) for j in order[1:]):
            d2 = dists[i2]
            if d2 <= thr and d2 - d1 < cfg.ambiguity_margin and set(tracks[i1]["frames"]) & set(tracks[i2]["frames"]):
                return Flag(uid, self.name, False, d1, thr,
                            f"ambiguous: two faces match {name!r} (distances {d1:.2f} and {d2:.2f}, margin "
                            f"< {cfg.ambiguity_margin}); cannot tell which is the speaker")
        self._record(uid, i1, tracks[i1], m, d1, "matched")
        return Flag(uid, self.name, True, d1, thr,
                    f"speaker {name!r} is face track {i1} of {len(tracks)} (distance {d1:.2f}, {seen})",
                    can_vouch=len(tracks) == 1)  # with others on screen, it does not say who speaks

    def _record(self, uid: str, index: int, track: dict[str, Any], m: dict[str, Any], distance: float | None,
                status: str) -> None:
        times = m.get("times") or []
        self.speaker_tracks[uid] = {
            "track_index": index, "status": status,
            "distance": None if distance is None else round(distance, 4),
            "frames": list(track["frames"]),
            "times": [times[f] for f in track["frames"]] if times else [],
            "boxes": [list(b) for b in track["boxes"]],
        }
