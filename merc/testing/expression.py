"""Facial expressions on a still photo: a landmark-driven piecewise-affine warp (scikit-image).

dlib's 68-point shape predictor (``face-recognition-models``) finds the landmarks of a real face photo;
each emotion moves a few of them (mouth corners up for joy, down for sadness, brows down and together
for anger, brows up with eyes and mouth opened for surprise and fear, upper lip raised for disgust), in
units of the distance between the eye centres, and :class:`skimage.transform.PiecewiseAffineTransform`
maps the photo onto the moved landmarks. An opened mouth is painted dark inside the inner-lip polygon
(a warp can only stretch the closed lips). The movements follow the prototypical action units of
Ekman & Friesen's FACS (AU12 lip-corner puller for joy, AU15 + AU1 for sadness, AU4 + AU23 for anger,
AU1 + AU2 + AU5 + AU26 for surprise, AU1 + AU4 + AU20 + AU26 for fear, AU9/AU10 for disgust); they are a
cue for the benchmark corpus (merc.testing.mmcorpus), not a model of real faces.

References: scikit-image ``PiecewiseAffineTransform`` (the "Piecewise Affine Transformation" gallery
example); dlib ``shape_predictor`` with the iBUG 300-W 68-point scheme.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from merc.encoders.base import require
from merc.errors import MissingDependencyError

EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")

# iBUG 68-point indices
_R_BROW, _L_BROW = list(range(17, 22)), list(range(22, 27))
_BROWS = _R_BROW + _L_BROW
_INNER_BROWS = [20, 21, 22, 23]
_UPPER_LIDS, _LOWER_LIDS = [37, 38, 43, 44], [40, 41, 46, 47]
_CORNERS = [48, 54]
_UPPER_LIP = [49, 50, 51, 52, 53, 61, 62, 63]
_LOWER_LIP = [55, 56, 57, 58, 59, 65, 66, 67]
_CHIN = [6, 7, 8, 9, 10]
_INNER_MOUTH = list(range(60, 68))

# emotion -> list of (landmark indices, dx, dy) in units of the inter-ocular distance; dx > 0 moves a point
# away from the face's vertical midline (outward), dy > 0 moves it down.
MOVES: dict[str, list[tuple[list[int], float, float]]] = {
    "neutral": [],
    "joy": [(_CORNERS, 0.12, -0.20), ([49, 53, 59, 55], 0.05, -0.09), ([56, 57, 58, 65, 66, 67], 0.0, 0.04),
            (_LOWER_LIDS, 0.0, -0.04)],
    "sadness": [(_CORNERS, -0.03, 0.16), ([59, 55], 0.0, 0.07), ([21, 22], -0.02, -0.16), ([20, 23], 0.0, -0.09),
                ([17, 26], 0.0, 0.06), (_UPPER_LIDS, 0.0, 0.04)],
    "anger": [(_BROWS, 0.0, 0.10), ([21, 22], -0.08, 0.12), ([20, 23], -0.04, 0.06), (_UPPER_LIDS, 0.0, 0.04),
              ([50, 51, 52, 61, 62, 63], 0.0, 0.03), ([56, 57, 58, 65, 66, 67], 0.0, -0.04), (_CORNERS, -0.05, 0.02)],
    "surprise": [(_BROWS, 0.0, -0.22), (_UPPER_LIDS, 0.0, -0.07), (_LOWER_LIDS, 0.0, 0.03),
                 ([50, 51, 52, 61, 62, 63], 0.0, -0.04), (_LOWER_LIP, 0.0, 0.34), (_CORNERS, -0.04, 0.12),
                 (_CHIN, 0.0, 0.26)],
    "fear": [(_BROWS, 0.0, -0.14), ([21, 22], -0.06, -0.08), (_UPPER_LIDS, 0.0, -0.07), (_LOWER_LIDS, 0.0, 0.02),
             (_CORNERS, 0.14, 0.06), (_LOWER_LIP, 0.0, 0.16), (_CHIN, 0.0, 0.12)],
    "disgust": [([49, 50, 51, 52, 53, 61, 62, 63], 0.0, -0.11), ([31, 32, 33, 34, 35], 0.0, -0.05),
                (_BROWS, 0.0, 0.06), ([21, 22], -0.04, 0.04), (_CORNERS, 0.0, 0.07), (_LOWER_LIDS, 0.0, -0.04)],
}
OPEN_MOUTH = {"surprise", "fear", "joy"}


@lru_cache(maxsize=1)
def dlib_landmarker():
    """(dlib HOG face detector, 68-point shape predictor); raises MissingDependencyError when absent."""
    dlib = require("dlib", "pip install dlib-bin", what="drawing facial expressions")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("facial expressions need dlib's 68-point landmark model: "
                                     "pip install face-recognition-models")
    path = Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


def landmarks(img: np.ndarray) -> np.ndarray | None:
    """(68, 2) float (x, y) landmarks of the largest face dlib's HOG detector finds in RGB ``img``, or None."""
    detector, predictor = dlib_landmarker()
    dets = detector(img, 1)
    if len(dets) == 0:
        return None
    det = max(dets, key=lambda d: d.width() * d.height())
    shape = predictor(img, det)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def expression_points(points: np.ndarray, emotion: str, strength: float = 1.0) -> np.ndarray:
    """Landmarks (68, 2) moved for ``emotion`` (see MOVES), scaled by ``strength``."""
    if emotion not in MOVES:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {list(MOVES)}")
    right_eye, left_eye = points[36:42].mean(0), points[42:48].mean(0)
    unit = float(np.linalg.norm(left_eye - right_eye))
    mid_x = float(points[27:31, 0].mean())
    out = points.copy()
    for idx, dx, dy in MOVES[emotion]:
        for i in idx:
            side = np.sign(points[i, 0] - mid_x) if abs(points[i, 0] - mid_x) > 1e-6 else 0.0
            out[i, 0] += strength * dx * unit * side
            out[i, 1] += strength * dy * unit
    return out


def express(img: np.ndarray, emotion: str, strength: float = 1.0, points: np.ndarray | None = None) -> np.ndarray:
    """``img`` (H, W, 3) uint8 RGB with its face warped to show ``emotion``; neutral returns a copy.

    Raises ValueError when no face is found (pass ``points`` to skip detection).
    """
    if emotion == "neutral" or strength == 0:
        return img.copy()
    from skimage.draw import polygon
    from skimage.transform import PiecewiseAffineTransform, warp

    if points is None:
        points = landmarks(img)
        if points is None:
            raise ValueError("no face found by dlib's HOG detector; cannot draw an expression")
    moved = expression_points(points, emotion, strength)
    h, w = img.shape[:2]
    border = np.array([[x, y] for x in (0, w / 2, w - 1) for y in (0, h / 2, h - 1) if (x, y) != (w / 2, h / 2)])
    src, dst = np.vstack([points, border]), np.vstack([moved, border])
    # warp() takes the inverse map: output coordinates -> input coordinates
    if hasattr(PiecewiseAffineTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = PiecewiseAffineTransform.from_estimate(dst, src)
    else:
        tform = PiecewiseAffineTransform()
        tform.estimate(dst, src)
    out = warp(img, tform, output_shape=(h, w), order=1, mode="edge", preserve_range=True)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if emotion in OPEN_MOUTH:
        inner = moved[_INNER_MOUTH]
        gap = inner[[5, 6, 7], 1].mean() - inner[[1, 2, 3], 1].mean()  # lower minus upper inner lip
        if gap > 1.5:
            rr, cc = polygon(inner[:, 1], inner[:, 0], shape=(h, w))
            out[rr, cc] = (45, 20, 25)
    return out
