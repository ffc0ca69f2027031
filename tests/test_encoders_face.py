"""Face encoders on clips made from real face photos: the FER network's published sanity values, shapes,
determinism, QC speaker tracks vs. the largest face, fingerprints, absent clips with reasons."""
from __future__ import annotations

import numpy as np
import pytest

from merc.data.schema import Utterance
from merc.encoders.base import get_encoder

pytestmark = pytest.mark.slow  # media fixtures / several trainings: not in make test-fast

synth = pytest.importorskip("merc.testing.synth")
pytest.importorskip("dlib")
pytest.importorskip("h5py")


def photo(name: str) -> np.ndarray:
    if name == "astronaut":
        from skimage import data
        return data.astronaut()[:260, 100:340]  # the face only (the full image has a false second detection)
    import matplotlib.cbook as cbook
    from PIL import Image
    return np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))


@pytest.fixture(scope="module")
def fer():
    pytest.importorskip("merc.encoders.fer_net")
    return get_encoder("fer", "face")


def test_fer_network_matches_the_published_sanity_values(fer):
    """docs/offline-models.md: skimage astronaut -> happy 0.998; matplotlib Grace Hopper -> neutral 0.96."""
    from merc.encoders.face import get_face_detector
    from merc.encoders.fer_net import FER_LABELS
    det = get_face_detector()
    probs = {}
    for name in ("astronaut", "hopper"):
        img = photo(name)
        box = det.detect(img)[0].box
        x = fer._embed_face(img, box)
        assert x.shape == (135,) and abs(x[:7].sum() - 1) < 1e-5
        probs[name] = dict(zip(FER_LABELS, x[:7]))
    assert probs["astronaut"]["happy"] > 0.99, probs
    assert max(probs["hopper"], key=probs["hopper"].get) == "neutral" and probs["hopper"]["neutral"] > 0.9, probs


@pytest.fixture(scope="module")
def clips(tmp_path_factory, espeak):
    root = tmp_path_factory.mktemp("faces")
    wav = synth.speak("Could you pass me the salt, please?", synth.VOICES[1], root / "s.wav")
    faces = synth.face_images(2)
    return {"a": synth.make_clip(wav, faces[0], root / "a.mp4"),
            "b": synth.make_clip(wav, faces[1], root / "b.mp4"),
            "noface": synth.make_clip(wav, synth.no_face_image(), root / "noface.mp4"),
            "audio_only": synth.make_audio_only_clip(wav, root / "audio_only.mp4"),
            "bad": synth.truncate_file(synth.make_clip(wav, faces[0], root / "bad.mp4"), 0.2),
            "missing": root / "nope.mp4"}


def utts(clips, *names):
    return [Utterance(n, "A", "t", audio=str(clips[n]), video=str(clips[n])) for n in names]


@pytest.mark.parametrize("name,dim", [("dlib", 128), ("fer", 135), ("blendshapes", 52)])
def test_shape_determinism_and_absent_clips(clips, name, dim):
    if name == "blendshapes":
        pytest.importorskip("mediapipe")
    enc = get_encoder(name, "face")
    assert enc.dim == dim and enc.modality == "face"
    us = utts(clips, "a", "b", "noface", "audio_only", "bad", "missing") + [Utterance("novideo", "A", "t")]
    r = enc.encode_batch(us)
    assert r.X.shape == (7, dim) and r.X.dtype == np.float32
    assert r.present.tolist() == [True, True] + [False] * 5, r.reasons
    reasons = dict(zip([u.utterance_id for u in us], r.reasons))
    assert "no face in 0/" in reasons["noface"]
    assert "no video stream" in reasons["audio_only"]
    assert "missing" in reasons["missing"] and "bad.mp4" in reasons["bad"]
    assert "no video file" in reasons["novideo"]
    again = enc.encode_batch(us[:2][::-1])
    np.testing.assert_allclose(again.X[::-1], r.X[:2], atol=1e-5)
    assert not np.allclose(r.X[0], r.X[1])  # two people
    if name == "dlib":  # two identities: beyond dlib's same-person distance
        assert np.linalg.norm(r.X[0] - r.X[1]) > 0.6


def test_qc_speaker_tracks_choose_the_face(clips, tmp_path):
    """With QC's speaker_tracks.json the track's boxes are embedded; an utterance QC found no track for is
    absent; a changed track changes the content key."""
    from merc.io import write_json
    enc_largest = get_encoder("dlib", "face")
    [u] = utts(clips, "a")
    ref = enc_largest.encode_batch([u]).X[0]
    from merc.media.decode import load_frames
    frames = load_frames(u.video, fps=1.0)
    boxes = [enc_largest.detector.detect(f.image)[0].box for f in frames]
    tracks = {"a": {"track_index": 0, "status": "matched", "times": [f.t for f in frames],
                    "boxes": [list(b) for b in boxes]}}
    path = write_json(tmp_path / "qc" / "speaker_tracks.json", tracks)
    enc = get_encoder("dlib", "face", speaker_tracks=tmp_path / "qc")
    assert enc.fingerprint != enc_largest.fingerprint
    r = enc.encode_batch(utts(clips, "a", "b"))
    np.testing.assert_allclose(r.X[0], ref, atol=1e-4)
    assert not r.present[1] and "no face track of the labelled speaker" in r.reasons[1]
    key = enc.content_key(u)
    tracks["a"]["boxes"][0] = [0, 0, 10, 10]
    write_json(path, tracks)
    assert get_encoder("dlib", "face", speaker_tracks=path).content_key(u) != key


def test_fingerprint_changes_with_settings():
    from merc.encoders.face_expr import FaceFrameConfig, FerEncoder
    a = FerEncoder()
    assert a.fingerprint == FerEncoder().fingerprint
    assert a.fingerprint != FerEncoder(FaceFrameConfig(fps=2.0)).fingerprint
    assert a.fingerprint != FerEncoder(margin=0.1).fingerprint
    # the reduced scan (default) and the full scan give slightly different boxes: never the same store folder
    full = FerEncoder(FaceFrameConfig(min_face=None)).fingerprint
    assert a.fingerprint != full and "-lvl64" in a.fingerprint and "-lvl" not in full


@pytest.fixture(scope="module")
def blendshapes():
    pytest.importorskip("mediapipe")
    return get_encoder("blendshapes", "face")


def test_blendshapes_read_the_smile_and_name_their_actions(blendshapes):
    """The astronaut smiles (FER: happy 0.998); Grace Hopper does not (FER: neutral 0.96)."""
    from merc.encoders.face import get_face_detector
    det = get_face_detector()
    x = {}
    for name in ("astronaut", "hopper"):
        img = photo(name)
        x[name] = blendshapes._embed_face(img, det.detect(img)[0].box)
        assert x[name].shape == (52,) and x[name].dtype == np.float32
        assert (x[name] >= 0).all() and (x[name] <= 1).all()
    names = blendshapes.names
    assert len(set(names)) == 52 and "mouthSmileLeft" in names and "jawOpen" in names
    smile = [names.index("mouthSmileLeft"), names.index("mouthSmileRight")]
    assert x["astronaut"][smile].min() > 0.5, x["astronaut"][smile]
    assert x["hopper"][smile].max() < 0.3 and x["astronaut"][smile].min() > x["hopper"][smile].max() + 0.3
    # a box on a faceless region: MediaPipe sees no face there -> the frame is left out (None)
    empty = np.full((240, 240, 3), 128, np.uint8)
    assert blendshapes._embed_face(empty, (60.0, 60.0, 180.0, 180.0)) is None
    from merc.errors import NoFace
    with pytest.raises(NoFace, match="no usable face"):
        blendshapes.encode_image(empty, box=(60.0, 60.0, 180.0, 180.0), name="grey.png")
    assert blendshapes.fingerprint.startswith("blendshapes-mp") and "-m0.5-" in blendshapes.fingerprint
    assert blendshapes.fingerprint != get_encoder("blendshapes", "face", margin=0.3).fingerprint


@pytest.mark.parametrize("name", ["dlib", "fer"])
def test_chunk_batched_equals_one_utterance_at_a_time(clips, name):
    """encode_batch gathers every utterance's crops / chips and runs the network once; the per-utterance path
    (_encode_one, the reference) gives the same rows and the same absent utterances."""
    from merc.errors import UnusableInput
    enc = get_encoder(name, "face")
    us = utts(clips, "a", "noface", "b", "missing", "a")
    r = enc.encode_batch(us)
    for i, u in enumerate(us):
        try:
            ref = enc._encode_one(u)
        except UnusableInput as e:
            assert not r.present[i] and r.reasons[i] == str(e)
            continue
        assert r.present[i]
        np.testing.assert_allclose(r.X[i], ref, atol=1e-5)
    assert r.present.tolist() == [True, False, True, False, True]
