"""dlib's face-descriptor ResNet re-run in PyTorch (merc.encoders.dlib_resnet) gives dlib's descriptors: the fast
path against the reference (dlib's own network) on real faces, batched against one face at a time, and the
parser's checks of the model file."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dlib")

from merc.encoders.dlib_resnet import LEVELS, read_params  # noqa: E402
from merc.encoders.face import FaceEmbedder, get_face_detector, model_file  # noqa: E402
from merc.errors import ConfigError  # noqa: E402


def faces() -> list[tuple[np.ndarray, list]]:
    """Real photos (skimage's astronaut, matplotlib's Grace Hopper, the synth corpus's faces) and their faces."""
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    from merc.testing import synth
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    images = [data.astronaut(), hopper, *synth.face_images(3)]
    det = get_face_detector()
    out = []
    for img in images:
        boxes = [d.box for d in det.detect(img)]
        assert boxes, "a test photo without a detected face"
        out.append((img, boxes))
    return out


@pytest.fixture(scope="module")
def photos():
    return faces()


def test_model_file_is_read_as_the_expected_network():
    p = read_params(model_file("dlib_face_recognition_resnet_model_v1.dat"))
    assert len(p.convs) == 1 + 2 * sum(n for _, n, _ in LEVELS) == 29
    assert p.convs[0].weight.shape == (32, 3, 7, 7) and p.convs[0].stride == 2
    assert p.convs[-1].weight.shape == (256, 256, 3, 3)
    assert [a.gamma.shape for a in p.affines[:2]] == [(32,), (32,)]
    assert p.fc.shape == (128, 256) and p.pool == (3, 2, 0)
    np.testing.assert_allclose(p.mean, (122.782, 117.001, 104.298), atol=1e-3)  # dlib's input_rgb_image defaults


def test_other_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a dlib network"):
        read_params(model_file("shape_predictor_5_face_landmarks.dat"))
    bad = tmp_path / "cut.dat"
    bad.write_bytes(open(model_file("dlib_face_recognition_resnet_model_v1.dat"), "rb").read()[:2_000_000])
    with pytest.raises(ValueError):
        read_params(bad)
    with pytest.raises(ConfigError, match="unknown face descriptor backend"):
        FaceEmbedder(backend="onnx")


def test_torch_descriptors_equal_dlibs(photos):
    torch_emb, dlib_emb = FaceEmbedder(backend="torch"), FaceEmbedder(backend="dlib")
    fast = np.concatenate(torch_emb.embed_many(photos))  # all faces in one batch
    ref = np.concatenate([dlib_emb.embed(img, boxes) for img, boxes in photos])
    assert fast.shape == ref.shape == (sum(len(b) for _, b in photos), 128)
    print(f"\ntorch vs dlib descriptors: max abs diff {np.abs(fast - ref).max():.2e} over {len(ref)} faces")
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    # different people stay different: the comparison is not between near-constant vectors
    assert np.linalg.norm(ref[0] - ref[1]) > 0.3


def test_batched_equals_one_face_at_a_time(photos):
    emb = FaceEmbedder(backend="torch")
    many = emb.embed_many(photos + [(photos[0][0], [])])
    assert many[-1].shape == (0, 128)
    for (img, boxes), m in zip(photos, many):
        np.testing.assert_allclose(m, emb.embed(img, boxes), atol=1e-5)
    assert emb.embed_many([]) == []


def test_jitter_uses_dlib_and_fingerprint_ignores_the_backend():
    assert FaceEmbedder(num_jitters=2).backend == "dlib"
    assert FaceEmbedder(backend="torch").fingerprint == FaceEmbedder(backend="dlib").fingerprint
