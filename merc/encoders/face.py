"""Stage-1 face models: detection (dlib HOG / dlib CNN-MMOD / MTCNN), 128-d identity descriptors
(dlib ResNet, 5-point alignment) and IoU tracking of detections across sampled frames.

References: Dalal & Triggs, HOG (CVPR 2005); King, "Max-Margin Object Detection" (2015);
dlib ``face_recognition_model_v1`` (ResNet-29, 99.38% on LFW; same person when the euclidean
distance of two descriptors is below 0.6); Zhang et al., MTCNN (2016) via facenet-pytorch.

The dlib model files ship in the ``face-recognition-models`` package; its ``__init__`` imports the
removed ``pkg_resources``, so the files are located with ``importlib.util.find_spec`` instead.
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from merc.errors import ConfigError, MissingDependencyError
from merc.io import file_digest

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the original image

FACE_MATCH_DISTANCE = 0.6  # dlib's usual euclidean threshold for "same person"
HOG_WINDOW = 80  # px: the face size dlib's frontal HOG detector scans for without upsampling


@dataclass
class Detection:
    box: Box
    score: float  # detector confidence: HOG SVM margin, MMOD confidence or MTCNN probability


@dataclass
class FaceObs:
    box: Box
    score: float
    embedding: np.ndarray  # (128,) float32, dlib descriptor (unit-scale, compare with euclidean distance)


@dataclass
class FaceDetectorConfig:
    backend: str = "hog"  # "hog" (dlib HOG, default), "cnn" (dlib MMOD), "mtcnn" (facenet-pytorch)
    upsample: int = 1  # dlib pyramid upsampling (finds faces down to ~40 px at 1)
    min_score: float = 0.0  # drop detections scoring below this (HOG margin / MMOD conf / MTCNN prob)
    upscale_below: int = 320  # images whose longer side is smaller are upscaled before detection
    max_upscale: int = 8  # …by an integer factor up to this, so small faces become findable and embeddable
    # reduced-resolution detection (hog): the full scan's own image pyramid, entered at its first level whose 80-px
    # window is at least ``min_face`` px of the original image (so faces of min_face px or more are found at the
    # levels, and with the boxes, the full scan finds them at, to a pixel of rounding; see _pyramid_level), instead
    # of from its finest level: on 224-px frames (upscaled x2, upsample 1) 28 ms instead of 85 ms of CPU per frame.
    # A frame where that finds no face is scanned again the full way, so small faces alone in a frame are still
    # found; a face smaller than min_face beside a larger one is not. None: always the full way.
    min_face: int | None = None


# helpers


def _require_dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("face models need dlib: pip install dlib-bin face-recognition-models") from e
    return dlib


def models_dir() -> Path:
    """Folder of the dlib ``.dat`` files shipped by ``face-recognition-models`` (not imported: pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("face models need the 'face-recognition-models' package: pip install "
                                     "face-recognition-models")
    folder = Path(spec.origin).parent / "models"
    if not folder.is_dir():
        raise MissingDependencyError(f"face-recognition-models is installed but {folder} is missing")
    return folder


def model_file(name: str) -> str:
    path = models_dir() / name
    if not path.is_file():
        raise MissingDependencyError(f"dlib model file {path} is missing; reinstall face-recognition-models")
    return str(path)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img * 255.0 if img.dtype.kind == "f" and img.max() <= 1.0 else img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return image
    from PIL import Image
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.BICUBIC))


def upscale_factor(shape: Sequence[int], config: FaceDetectorConfig) -> int:
    """Integer factor bringing the image's longer side to at least ``upscale_below`` (capped)."""
    longer = max(shape[0], shape[1])
    if longer >= config.upscale_below or longer == 0:
        return 1
    return int(min(config.max_upscale, int(np.ceil(config.upscale_below / longer))))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0




# classes


class FaceDetector:
    """Face boxes + confidences in an RGB image; small images are upscaled first (boxes map back)."""

    def __init__(self, config: FaceDetectorConfig | None = None):
        self.config = config or FaceDetectorConfig()
        if self.config.min_face is not None and self.config.min_face < 10:
            raise ConfigError(f"min_face must be at least 10 px (or None), got {self.config.min_face}")
        if self.config.backend not in ("hog", "cnn", "mtcnn"):
            raise ConfigError(f"unknown face detector backend {self.config.backend!r}; use 'hog', 'cnn' or 'mtcnn'")
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                b = self.config.backend
                if b == "hog":
                    self._model = _require_dlib().get_frontal_face_detector()
                elif b == "cnn":
                    dlib = _require_dlib()
                    self._model = dlib.cnn_face_detection_model_v1(model_file("mmod_human_face_detector.dat"))
                else:
                    try:
                        from facenet_pytorch import MTCNN
                    except ImportError as e:
                        raise MissingDependencyError("the 'mtcnn' backend needs facenet-pytorch (and torchvision): "
                                          "pip install --no-deps facenet-pytorch") from e
                    self._model = MTCNN(keep_all=True, device="cpu")
        return self._model

    def _detect_raw(self, img: np.ndarray) -> list[Detection]:
        b, up = self.config.backend, self.config.upsample
        if b == "hog":
            rects, scores, _ = self.model.run(img, up, 0.0)
            return [Detection((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]
        if b == "cnn":
            return [Detection((m.rect.left(), m.rect.top(), m.rect.right(), m.rect.bottom()), float(m.confidence))
                    for m in self.model(img, up)]
        boxes, probs = self.model.detect(img)
        if boxes is None:
            return []
        return [Detection(tuple(float(v) for v in bx), float(p)) for bx, p in zip(boxes, probs)]

    def _pyramid_level(self, img: np.ndarray) -> tuple[list[Detection], int, int]:
        """HOG from level ``k`` of the full scan's pyramid on: (detections in the coordinates of the upscaled image,
        the upscale factor, k); k == 0 (min_face too small to skip a level) means no detections and a full scan.

        The full scan (``run(image, upsample)``) doubles the image ``upsample`` times (dlib's ``pyramid_up``:
        bilinear, sized by ``pyramid_down(2).rect_up``) and scans every level of its ``pyramid_down(6)`` pyramid.
        Here the same level images are built the same way and the detector runs on level k without upsampling,
        so its own pyramid is the full scan's from level k on; boxes map back level by level (dlib's rect_up /
        rect_down, rounded per step where the full scan rounds once: a pixel at most)."""
        dlib = _require_dlib()
        c = self.config
        f = upscale_factor(img.shape, c)
        scale = f * 2.0 ** c.upsample  # of pyramid level 0 relative to the original image
        k = 0
        while HOG_WINDOW / (scale * (5 / 6) ** (k + 1)) <= c.min_face:
            k += 1
        if k == 0:
            return [], f, 0
        im = _upscale(img, f)
        p2, p6 = dlib.pyramid_down(2), dlib.pyramid_down(6)
        for _ in range(c.upsample):
            r = p2.rect_up(dlib.rectangle(0, 0, im.shape[1] - 1, im.shape[0] - 1))
            im = dlib.resize_image(im, r.bottom() + 1, r.right() + 1)
        for _ in range(k):
            im = p6(im)
        rects, scores, _ = self.model.run(im, 0, 0.0)
        out = []
        for r, sc in zip(rects, scores):
            r = self._full_scan_rect(r, k, p6)
            r = p2.rect_down(r, c.upsample) if c.upsample else r
            out.append(Detection((r.left(), r.top(), r.right(), r.bottom()), float(sc)))
        return out, f, k

    def _full_scan_rect(self, r, k: int, p6):
        """The box the full scan gives for detection ``r`` of the scan from pyramid level ``k``.

        The detector maps a window found on its level j to its level 0 (our level k) and rounds; the full scan maps
        the same window from level k + j straight to level 0 and rounds once. So the window on level k + j is
        recovered first: the integer rect of the detector's window size (``detection_window_width`` less one HOG
        cell, plus one) that maps onto ``r`` from level j, nearest the unrounded mapping; then it is mapped up
        k + j levels as the full scan does. Boxes come out as the full scan's (a pixel off at most for windows
        crossing the image border)."""
        import math
        dlib = _require_dlib()
        w, h = self.model.detection_window_width - 7, self.model.detection_window_height - 7  # 8-px HOG cells
        d = dlib.drectangle(r.left(), r.top(), r.right(), r.bottom())
        j0 = max(0, round(math.log(max(r.width(), 1) / w) / math.log(6 / 5)))
        best = None
        for j in (j0, j0 - 1, j0 + 1):
            if j < 0:
                continue
            dj = p6.rect_down(d, j)
            for left in range(math.floor(dj.left()) - 1, math.ceil(dj.left()) + 2):
                for top in range(math.floor(dj.top()) - 1, math.ceil(dj.top()) + 2):
                    p = dlib.rectangle(left, top, left + w - 1, top + h - 1)
                    if p6.rect_up(p, j) == r:
                        miss = abs(left - dj.left()) + abs(top - dj.top())
                        if best is None or miss < best[0]:
                            best = (miss, j, p)
        return p6.rect_up(best[2], k + best[1]) if best else p6.rect_up(r, k)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in the coordinates of ``image``, clipped to it, best score first."""
        img = _as_rgb(image)
        raw: list[Detection] = []
        if self.config.min_face and self.config.backend == "hog":
            raw, f, _ = self._pyramid_level(img)
        if not raw:  # no reduced scan, or it found nothing: the full scan
            f = upscale_factor(img.shape, self.config)
            raw = self._detect_raw(_upscale(img, f))
        h, w = img.shape[:2]
        out = []
        for d in raw:
            x0, y0, x1, y1 = (v / f for v in d.box)
            box = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
            if box[2] > box[0] and box[3] > box[1] and d.score >= self.config.min_score:
                out.append(Detection(box, d.score))
        return sorted(out, key=lambda d: -d.score)


class FaceEmbedder:
    """dlib 5-point alignment + ResNet descriptor: (image, box) -> (128,) identity embedding.

    A model, not a stage-1 :class:`~merc.encoders.base.Encoder`: the ``dlib`` face encoder
    (:class:`merc.encoders.face_expr.DlibFaceEncoder`) and the QC face check use it.

    ``backend``: "torch" (default) runs dlib's network, with dlib's weights, in PyTorch on a batch of chips
    (:mod:`merc.encoders.dlib_resnet`: the same descriptors to float rounding, ~8x less CPU than the ``dlib-bin``
    wheel, which has no BLAS); "dlib" runs it in dlib (the reference). Landmarks and the aligned 150-px chips come
    from dlib either way. With ``num_jitters`` > 0 (random jitter, dlib's own) the dlib backend is used."""

    dim = 128
    name = "dlib-resnet-v1"
    BACKENDS = ("torch", "dlib")

    def __init__(self, *, num_jitters: int = 0, padding: float = 0.25, backend: str = "torch"):
        if backend not in self.BACKENDS:
            raise ConfigError(f"unknown face descriptor backend {backend!r}; use one of {', '.join(self.BACKENDS)}")
        self.num_jitters = num_jitters
        self.padding = padding
        self.backend = "dlib" if num_jitters else backend
        self._predictor = None
        self._net = None
        self._lock = threading.Lock()
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """The backend is not part of it: both give the same descriptors (to 1e-6; tests/test_dlib_resnet.py)."""
        if self._fingerprint is None:
            files = [model_file("shape_predictor_5_face_landmarks.dat"),
                     model_file("dlib_face_recognition_resnet_model_v1.dat")]
            self._fingerprint = f"dlib-resnet-v1-{file_digest(*files)}" + (
                f"-j{self.num_jitters}" if self.num_jitters else "")
        return self._fingerprint

    @property
    def predictor(self):
        with self._lock:
            if self._predictor is None:
                self._predictor = _require_dlib().shape_predictor(model_file("shape_predictor_5_face_landmarks.dat"))
        return self._predictor

    @property
    def net(self):
        """dlib's ``face_recognition_model_v1``, or :class:`~merc.encoders.dlib_resnet.TorchDlibResNet`."""
        with self._lock:
            if self._net is None:
                path = model_file("dlib_face_recognition_resnet_model_v1.dat")
                if self.backend == "dlib":
                    self._net = _require_dlib().face_recognition_model_v1(path)
                else:
                    from merc.encoders.dlib_resnet import TorchDlibResNet
                    _require_dlib()
                    self._net = TorchDlibResNet(path)
        return self._net

    @property
    def models(self):
        """(the 5-point shape predictor, the descriptor network)."""
        return self.predictor, self.net

    def embed(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """Descriptors of the faces at ``boxes`` (pixel coordinates of ``image``) -> (n, 128) float32."""
        return self.embed_many([(image, boxes)])[0]

    def embed_many(self, items: Sequence[tuple[np.ndarray, Sequence[Box]]]) -> list[np.ndarray]:
        """:meth:`embed` of every (image, boxes), the network run once over all their faces -> [(n_i, 128)]."""
        if self.num_jitters:  # dlib's random jitter works on the image and its shapes
            return [self._embed_jittered(img, boxes) for img, boxes in items]
        chips = self.chips(items)
        desc = self.describe([c for cs in chips for c in cs])  # (sum n_i, 128)
        ends = np.cumsum([len(cs) for cs in chips]).tolist()
        return [desc[e - len(cs):e] for cs, e in zip(chips, ends)]

    def chips(self, items: Sequence[tuple[np.ndarray, Sequence[Box]]]) -> list[list[np.ndarray]]:
        """The aligned 150-px chip of every face (dlib: 5-point landmarks, ``get_face_chips``) -> [[(150, 150, 3)]]."""
        dlib = _require_dlib()
        out = []
        for image, boxes in items:
            if not len(boxes):
                out.append([])
                continue
            img = _as_rgb(image)
            shapes = dlib.full_object_detections()
            for x0, y0, x1, y1 in boxes:
                shapes.append(self.predictor(img, dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)),
                                                                 int(round(y1)))))
            out.append(list(dlib.get_face_chips(img, shapes, size=150, padding=self.padding)))
        return out

    def describe(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Chips (from :meth:`chips`) -> (n, 128) float32 descriptors, in one batch."""
        if not len(chips):
            return np.zeros((0, self.dim), np.float32)
        if self.backend == "dlib":
            return np.asarray([np.asarray(d) for d in self.net.compute_face_descriptor(list(chips))], np.float32)
        return self.net(list(chips))

    def _embed_jittered(self, image: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        dlib = _require_dlib()
        if not len(boxes):
            return np.zeros((0, self.dim), np.float32)
        img = _as_rgb(image)
        shapes = dlib.full_object_detections()
        for x0, y0, x1, y1 in boxes:
            shapes.append(self.predictor(img, dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)),
                                                             int(round(y1)))))
        desc = self.net.compute_face_descriptor(img, shapes, self.num_jitters, self.padding)
        return np.asarray([np.asarray(d) for d in desc], dtype=np.float32)

    def __repr__(self) -> str:
        return f"FaceEmbedder(name={self.name!r}, dim={self.dim}, backend={self.backend!r})"


_DETECTORS: dict[tuple, FaceDetector] = {}
_ENCODER: FaceEmbedder | None = None
_LOCK = threading.Lock()


def get_face_detector(config: FaceDetectorConfig | None = None) -> FaceDetector:
    """One detector per distinct config per process (models load lazily)."""
    config = config or FaceDetectorConfig()
    key = tuple(sorted(vars(config).items()))
    with _LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = FaceDetector(config)
        return _DETECTORS[key]


def get_face_embedder() -> FaceEmbedder:
    """The process-wide face encoder."""
    global _ENCODER
    with _LOCK:
        if _ENCODER is None:
            _ENCODER = FaceEmbedder()
        return _ENCODER


def detect_and_embed(image: np.ndarray, *, detector: FaceDetector | None = None,
                     encoder: FaceEmbedder | None = None) -> list[FaceObs]:
    """Every face in ``image``: box (original coordinates), detector score, 128-d descriptor.

    When the detector upscales a small image, descriptors are computed on the upscaled image too
    (dlib's ResNet works on 150 px aligned chips; a 25 px face gives a poor descriptor otherwise).
    """
    return detect_and_embed_many([image], detector=detector, encoder=encoder)[0]


def detect_and_embed_many(images: Sequence[np.ndarray], *, detector: FaceDetector | None = None,
                          encoder: FaceEmbedder | None = None) -> list[list[FaceObs]]:
    """:func:`detect_and_embed` of every image, the descriptors of all their faces computed in one batch."""
    encoder = encoder or get_face_embedder()
    dets, chips = detect_and_chip(images, detector=detector, encoder=encoder)
    return observe(dets, chips, encoder.describe([c for cs in chips for c in cs]))


def detect_and_chip(images: Sequence[np.ndarray], *, detector: FaceDetector | None = None,
                    encoder: FaceEmbedder | None = None) -> tuple[list[list[Detection]], list[list[np.ndarray]]]:
    """The detections of every image and the aligned chip of each (cut from the upscaled image when the detector
    upscales): the cheap half of :func:`detect_and_embed_many`, so that chips of many clips share one batch."""
    detector = detector or get_face_detector()
    encoder = encoder or get_face_embedder()
    imgs = [_as_rgb(im) for im in images]
    dets = [detector.detect(img) for img in imgs]
    factors = [upscale_factor(img.shape, detector.config) for img in imgs]
    chips = encoder.chips([(_upscale(img, f) if d else img, [tuple(v * f for v in x.box) for x in d])
                           for img, d, f in zip(imgs, dets, factors)])
    return dets, chips


def observe(dets: Sequence[Sequence[Detection]], chips: Sequence[Sequence[np.ndarray]],
            desc: np.ndarray) -> list[list[FaceObs]]:
    """Detections + the descriptors of their chips (``desc``: (sum of faces, 128), in order) -> FaceObs per image."""
    out, at = [], 0
    for d, cs in zip(dets, chips):
        out.append([FaceObs(x.box, x.score, desc[at + j]) for j, x in enumerate(d)])
        at += len(cs)
    return out


@dataclass
class Track:
    """One face followed across sampled frames."""
    frames: list[int] = field(default_factory=list)  # indices into the sampled frames
    boxes: list[Box] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)

    @property
    def embedding(self) -> np.ndarray:
        """Mean descriptor over the track's detections (128,)."""
        return np.mean(np.stack(self.embeddings), axis=0).astype(np.float32)

    @property
    def mean_area(self) -> float:
        return float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in self.boxes]))


@dataclass
class TrackerConfig:
    min_iou: float = 0.2  # boxes overlapping at least this much are the same face…
    link_distance: float = 0.5  # …or descriptors this close (euclidean), for faces that moved between samples
    max_gap: int = 2  # a track survives this many sampled frames without a detection


def track_faces(per_frame: Sequence[Sequence[FaceObs]], config: TrackerConfig | None = None) -> list[Track]:
    """Link detections across frames into tracks (Hungarian assignment on IoU, descriptor fallback).

    The affinity of a live track and a new detection is the IoU of the track's last box and the
    detection when it is at least ``min_iou``; otherwise, when their descriptors are within
    ``link_distance``, a smaller affinity that still allows the link (a face that moved far between
    two 1-fps samples). Unassigned detections start new tracks. Tracks come out longest first.
    """
    from scipy.optimize import linear_sum_assignment

    config = config or TrackerConfig()
    tracks: list[Track] = []
    last_seen: list[int] = []
    for fi, obs in enumerate(per_frame):
        live = [ti for ti, seen in enumerate(last_seen) if fi - seen <= config.max_gap + 1]
        assigned: set[int] = set()
        if live and obs:
            aff = np.zeros((len(live), len(obs)))
            for a, ti in enumerate(live):
                t = tracks[ti]
                for b, o in enumerate(obs):
                    ov = iou(t.boxes[-1], o.box)
                    if ov >= config.min_iou:
                        aff[a, b] = 1.0 + ov
                    else:
                        d = float(np.linalg.norm(t.embeddings[-1] - o.embedding))
                        if d <= config.link_distance:
                            aff[a, b] = 1.0 - d  # in (0, 1]: weaker than any overlap link
            rows, cols = linear_sum_assignment(-aff)
            for a, b in zip(rows, cols):
                if aff[a, b] > 0:
                    ti = live[a]
                    t, o = tracks[ti], obs[b]
                    t.frames.append(fi)
                    t.boxes.append(o.box)
                    t.scores.append(o.score)
                    t.embeddings.append(o.embedding)
                    last_seen[ti] = fi
                    assigned.add(b)
        for b, o in enumerate(obs):
            if b not in assigned:
                tracks.append(Track([fi], [o.box], [o.score], [o.embedding]))
                last_seen.append(fi)
    return sorted(tracks, key=lambda t: (-len(t.frames), t.frames[0]))
