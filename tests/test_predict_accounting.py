"""`merc predict` accounts for every utterance: which media it could not use and why, on every run (cached or
not, ``--quiet`` or not), in the warnings, in ``--json`` (``absent`` beside ``modalities``) and in the table
(the ``used`` column); a recording that cannot be decoded, or a segment after its end, is an error.

A run with real media decoding but tiny stand-in encoders (RMS statistics of the decoded audio, the mean colour
of the decoded frames) and an untrained model: this checks the accounting, not the labels. Speech from espeak-ng.
"""
from __future__ import annotations

import json
from pathlib import Path

from media_doubles import make_run

from merc.cli import main


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


def test_text_only_input_to_a_multimodal_run_is_said_once(tmp_path, clips, capsys):
    run = make_run(tmp_path / "run")
    (tmp_path / "t.txt").write_text("Ann: hello there\nBob: oh hi\nAnn: how are you\n")
    code, out, err = _predict(capsys, run, tmp_path / "t.txt", "--json", "--no-plots", "--quiet")
    assert code == 0
    lines = [x for x in err.splitlines() if "warning" in x]
    assert lines == ["merc: warning: the input has no audio or video, so audio and face are absent for every "
                     "utterance; labelled from text alone (this run was trained with text, audio, face)"], err
    [rec] = [json.loads(x) for x in out.splitlines()]
    assert all(u["modalities"] == ["text"] and set(u["absent"]) == {"audio", "face"} for u in rec["utterances"])
    # an audio-only recording given to a run with faces: said once too, not per segment
    srt = tmp_path / "t.srt"
    srt.write_text("1\n00:00:00,100 --> 00:00:00,900\nAnn: hello\n\n2\n00:00:01,000 --> 00:00:01,500\nBob: hi\n")
    code, out, err = _predict(capsys, run, clips / "voice.mp4", "--transcript", srt, "--json", "--no-plots")
    assert code == 0, err
    lines = [x for x in err.splitlines() if "warning" in x]
    assert lines == ["merc: warning: the input has no video, so face is absent for every utterance; labelled from "
                     "text, audio alone (this run was trained with text, audio, face)"], err
    assert [u["modalities"] for u in json.loads(out)["utterances"]] == [["text", "audio"]] * 2


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
