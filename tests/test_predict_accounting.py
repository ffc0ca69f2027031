"""`merc predict` accounts for every utterance: which media it could not use and why, on every run (cached or
not, ``--quiet`` or not), in the warnings, in ``--json`` (``absent`` beside ``modalities``) and in the table
(the ``used`` column); a recording that cannot be decoded, or a segment after its end, is an error.

A run with real media decoding but tiny stand-in encoders (RMS statistics of the decoded audio, the mean colour
of the decoded frames) and an untrained model: this checks the accounting, not the labels. Speech from espeak-ng.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from merc.cli import main
from merc.encoders import register_text_encoder
from merc.encoders.audio import AudioEncoder
from merc.encoders.base import EncodeSkip, MediaEncoder, media_segment, register_encoder
from merc.testing.fakes import HashedWords

LABELS = ["calm", "happy"]


class RmsAudio(AudioEncoder):
    """(4,) RMS, mean, std, seconds of the decoded audio (the real decoding path of every audio encoder)."""
    name, dim, fingerprint = "rms-acct", 4, "rms-acct-v1"

    def _embed(self, wav: np.ndarray) -> np.ndarray:
        if np.sqrt(np.mean(wav ** 2)) < 1e-4:
            raise EncodeSkip("audio is silent")
        return np.array([np.sqrt(np.mean(wav ** 2)), wav.mean(), wav.std(), len(wav) / 16000], np.float32)


class MeanColour(MediaEncoder):
    """(3,) mean RGB of the decoded frames; absent without a video file or stream."""
    name, modality, dim, fingerprint = "colour-acct", "face", 3, "colour-acct-v1"
    needs = ("video",)

    def content_key(self, u) -> str:
        from merc.encoders.base import media_key
        return media_key(u.video, *media_segment(u, u.video))

    def _encode_one(self, u) -> np.ndarray:
        from merc.media.decode import load_frames
        if not u.video:
            raise EncodeSkip(f"utterance {u.utterance_id} has no video file")
        frames = load_frames(u.video, fps=2, start=media_segment(u, u.video)[0], end=media_segment(u, u.video)[1])
        return np.mean([f.image.reshape(-1, 3).mean(0) for f in frames], axis=0) / 255


register_text_encoder("toy-acct", lambda **kw: HashedWords("toy-acct", 8), overwrite=True)
register_encoder("rms-acct", RmsAudio, modality="audio", dim=4, description="test double", overwrite=True)
register_encoder("colour-acct", MeanColour, modality="face", dim=3, description="test double", overwrite=True)


def make_run(path: Path, modalities=("text", "audio", "face")) -> Path:
    """An untrained run over the stand-in encoders (no training: the accounting does not depend on the weights)."""
    import torch

    from merc.models.dialogue import DialogueConfig
    from merc.training.adapters import build_run_model
    from merc.training.run import RunConfig, save_run
    from merc.training.trainer import TrainConfig
    dims = {"text": 8, "audio": 4, "face": 3}
    torch.manual_seed(0)
    mc = DialogueConfig(kind="gru", input_dims={m: dims[m] for m in modalities}, n_classes=len(LABELS), d_model=8,
                        n_layers=1)
    enc = {"text": ["toy-acct"], "audio": ["rms-acct"], "face": ["colour-acct"]}
    fps = {"text": ["toy-acct-v1"], "audio": ["rms-acct-v1"], "face": ["colour-acct-v1"]}
    config = RunConfig(model=mc, train=TrainConfig(), dataset="jsonl", data_dir=str(path), modalities=list(modalities),
                       text_encoder="toy-acct", encoders={m: enc[m] for m in modalities},
                       encoder_fingerprints={m: fps[m] for m in modalities})
    return save_run(path, build_run_model(mc), config, LABELS)


@pytest.fixture
def clips(tmp_path, espeak, monkeypatch):
    """A folder of clips: two good mp4s (speech + face), a silent one, an audio-only one, a corrupt one."""
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    from merc.testing.synth import face_images, make_audio_only_clip, make_clip, silence, speak, truncate_file
    d = tmp_path / "clips"
    face = face_images(1)[0]
    for i, text in enumerate(["I can't believe it.", "That is wonderful news."]):
        make_clip(speak(text, "en-us", d / f"s{i}.wav", cache_dir=tmp_path / "tts"), face, d / f"u{i}.mp4", fps=2)
    make_clip(silence(1.0, d / "quiet.wav", noise=0.0), face, d / "silent.mp4", fps=2)
    make_audio_only_clip(d / "s0.wav", d / "voice.mp4")
    truncate_file(make_clip(d / "s1.wav", face, d / "broken.mp4", fps=2), 0.3)
    return d


def write_jsonl(path: Path, media: dict[str, str | None]) -> Path:
    utts = [{"utterance_id": f"c_u{i}", "speaker": "AB"[i % 2], "text": f"line {i} said",
             **({"audio": m, "video": m} if m else {})} for i, m in enumerate(media.values())]
    path.write_text(json.dumps({"conversation_id": "c", "utterances": utts}) + "\n")
    return path


def _predict(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["predict", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_says_which_media_it_could_not_use_every_time(tmp_path, clips, capsys):
    run = make_run(tmp_path / "run")
    media = {"good": "clips/u0.mp4", "missing": "clips/gone.mp4", "corrupt": "clips/broken.mp4",
             "silent": "clips/silent.mp4", "voice": "clips/voice.mp4", "none": None}
    talk = write_jsonl(tmp_path / "talk.jsonl", media)
    want = {"c_u0": {}, "c_u1": {"audio": "missing file", "face": "missing file"},
            "c_u2": {"audio": "not decodable", "face": "not decodable"}, "c_u3": {"audio": "audio is silent"},
            "c_u4": {"face": "no video stream"},
            "c_u5": {"audio": "no audio or video file in the input", "face": "no video file in the input"}}
    for attempt in ("first", "cached rerun"):
        code, out, err = _predict(capsys, run, talk, "--json", "--quiet", "--no-plots")
        assert code == 0, err
        [rec] = [json.loads(x) for x in out.splitlines()]
        for u in rec["utterances"]:
            why = want[u["utterance_id"]]
            assert set(u["absent"]) == set(why), (attempt, u)
            assert u["modalities"] == [m for m in ("text", "audio", "face") if m not in why]
            for m, start in why.items():
                assert u["absent"][m].startswith(start), (attempt, u["absent"])
        warnings = [x for x in err.splitlines() if x.startswith("merc: warning: c: utterance ")]
        assert len(warnings) == 5, (attempt, err)  # one per utterance with an absent modality, --quiet or not
        missing = next(x for x in warnings if "c_u1" in x)
        assert str(clips / "gone.mp4") in missing and "no audio or face (missing file" in missing
        assert missing.endswith("labelled from text")
        assert "broken.mp4" in next(x for x in warnings if "c_u2" in x)
        assert "no face (no video stream in" in next(x for x in warnings if "c_u4" in x)
    # the table marks the modalities each row used
    code, out, err = _predict(capsys, run, talk, "--no-plots")
    assert code == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines()
            if line.count("│") >= 3 and "line" in line}
    assert rows == {"line 0 said": "TAF", "line 1 said": "T--", "line 2 said": "T--", "line 3 said": "T-F",
                    "line 4 said": "TA-", "line 5 said": "T--"}
    assert "used: T text, A audio, F face; - absent (see warnings)" in out


def test_text_only_input_to_a_multimodal_run_is_said_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    run = make_run(tmp_path / "run")
    (tmp_path / "t.txt").write_text("Ann: hello there\nBob: oh hi\nAnn: how are you\n")
    code, out, err = _predict(capsys, run, tmp_path / "t.txt", "--json", "--no-plots", "--quiet")
    assert code == 0
    lines = [x for x in err.splitlines() if "warning" in x]
    assert lines == ["merc: warning: the input names no audio or video file, so audio and face are absent for every "
                     "utterance; labelled from text alone (this run was trained with text, audio, face)"], err
    [rec] = [json.loads(x) for x in out.splitlines()]
    assert all(u["modalities"] == ["text"] and set(u["absent"]) == {"audio", "face"} for u in rec["utterances"])


def test_undecodable_recording_and_late_segment_are_errors(tmp_path, clips, capsys):
    run = make_run(tmp_path / "run")
    srt = tmp_path / "t.srt"
    srt.write_text("1\n00:00:00,100 --> 00:00:00,900\nAnn: hello\n\n2\n00:00:01,000 --> 00:00:01,500\nBob: hi\n")
    code, _, err = _predict(capsys, run, clips / "broken.mp4", "--transcript", srt, "--no-plots")
    assert code == 2 and "broken.mp4" in err and err.count("\n") == 1, err
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    code, _, err = _predict(capsys, run, notes, "--transcript", srt, "--no-plots")
    assert code == 2 and "not decodable" in err and str(notes) in err
    # a segment that starts after the end of the (about 1.3 s) recording names the segment
    srt.write_text("1\n00:00:00,100 --> 00:00:00,900\nAnn: hello\n\n2\n00:00:09,000 --> 00:00:10,000\nBob: late\n")
    code, _, err = _predict(capsys, run, clips / "u0.mp4", "--transcript", srt, "--no-plots")
    assert code == 2 and "segment 1 (u0_u1, 9-10 s) starts after the end of the recording" in err, err
