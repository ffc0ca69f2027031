"""Inputs users have: WebVTT transcripts, JSON segments without a speaker, non-verbal turns (empty text with
audio or video), ``--threads`` on the commands that compute, and the documented labels.json format."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from media_doubles import make_run

from merc.cli import build_parser, main
from merc.data import load_corpus
from merc.data.schema import CorpusError
from merc.data.transcript import UNKNOWN_SPEAKER, read_transcript
from merc.errors import ConfigError, InputError

README = Path(__file__).resolve().parents[1] / "README.md"
VTT = """WEBVTT
Kind: captions

NOTE a comment block, ignored

1
00:00:01.200 --> 00:00:03.450 align:start
<v Ann>I can't believe it.
Really.</v>

00:04.000 --> 00:05.500
Bob Smith: Fine: whatever.

intro
00:01:00.000 --> 00:01:02.000
no speaker named here
"""


def test_webvtt_transcript(tmp_path, caplog):
    pytest.importorskip("webvtt")
    p = tmp_path / "talk.vtt"
    p.write_text(VTT, encoding="utf-8")
    segs = read_transcript(p)
    assert [(s["speaker"], s["text"]) for s in segs] == [
        ("Ann", "I can't believe it. Really."), ("Bob Smith", "Fine: whatever."),
        (UNKNOWN_SPEAKER, "no speaker named here")]
    assert [(s["start"], s["end"]) for s in segs] == [(1.2, 3.45), (4.0, 5.5), (60.0, 62.0)]
    assert "1 of 3 segments name no speaker" in caplog.text
    p.write_text("1\n00:00:01,000 --> 00:00:02,000\nAnn: an SRT named .vtt\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{p}: not a WebVTT file"):
        read_transcript(p)
    p.write_text("WEBVTT\n\n00:00:03.000 --> 00:00:02.000\nAnn: backwards\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{p}: cue 1 at 00:00:03.000: segment times"):
        read_transcript(p)


def test_json_segments_without_speaker_are_one_unknown_speaker(tmp_path, caplog):
    p = tmp_path / "t.json"
    p.write_text(json.dumps([{"text": "hello", "start": 0, "end": 1}, {"speaker": "Ann", "text": "hi", "start": 1,
                                                                        "end": 2}, {"text": "bye", "start": 2,
                                                                                    "end": 3}]))
    segs = read_transcript(p)
    assert [s["speaker"] for s in segs] == [UNKNOWN_SPEAKER, "Ann", UNKNOWN_SPEAKER]
    assert "2 of 3 segments name no speaker; they are one speaker, 'unknown'" in caplog.text
    p.write_text(json.dumps([{"speaker": " ", "text": "x", "start": 0, "end": 1}]))
    with pytest.raises(InputError, match="leave 'speaker' out when it is unknown"):
        read_transcript(p)


def _write(folder: Path, utts: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text(json.dumps({"conversation_id": "c", "utterances": utts}) + "\n")
    return folder


def test_non_verbal_turn_needs_its_media(tmp_path):
    base = {"utterance_id": "u0", "speaker": "A", "text": "", "emotion": "joy"}
    corpus = load_corpus("jsonl", _write(tmp_path / "ok", [{**base, "audio": "laugh.wav"}]))
    assert corpus.utterances("train")[0].text == ""
    with pytest.raises(CorpusError, match="empty text '' and no audio or video"):
        load_corpus("jsonl", _write(tmp_path / "bad", [base]))


def test_non_verbal_turn_is_labelled_from_its_media(tmp_path, clips, capsys):
    run = make_run(tmp_path / "run")
    utts = [{"utterance_id": "c_u0", "speaker": "A", "text": "what a day", "audio": "clips/u0.mp4",
             "video": "clips/u0.mp4"},
            {"utterance_id": "c_u1", "speaker": "B", "text": "", "audio": "clips/u1.mp4", "video": "clips/u1.mp4"}]
    (tmp_path / "talk.jsonl").write_text(json.dumps({"conversation_id": "c", "utterances": utts}) + "\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "talk.jsonl"), "--json", "--no-plots", "--quiet"]) == 0
    out = capsys.readouterr()
    rec = json.loads(out.out)["utterances"]
    assert rec[1]["modalities"] == ["audio", "face"] and rec[1]["absent"] == {"text": "empty text"}
    assert rec[1]["predicted"] in rec[1]["probabilities"]
    assert "utterance c_u1 has no text (empty text); labelled from audio, face" in out.err


def test_non_verbal_turn_in_training(tmp_path, clips, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        lines = []
        for c in range(3):
            utts = [{"utterance_id": f"{split}{c}_u{i}", "speaker": "AB"[i % 2],
                     "text": "" if (c, i) == (0, 1) else f"said {i}", "emotion": ["calm", "happy"][(c + i) % 2],
                     "audio": f"../clips/u{i % 2}.mp4"} for i in range(3)]
            lines.append(json.dumps({"conversation_id": f"{split}{c}", "utterances": utts}))
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(data), "--modalities", "text,audio",
                 "--text-encoder", "toy-acct", "--audio-encoders", "rms-acct", "--model", "gru", "--d-model", "8",
                 "--layers", "1", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "1 of 9 train utterances had no text (1 × toy-acct: empty text (train0_u1))" in err, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dev"]["n"] == 9  # the non-verbal dev turn is scored too


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "qc"])
def test_threads_flag_on_every_command_that_computes(command):
    [p] = [a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == command]
    assert "--threads" in p[1]._option_string_actions


def test_threads_are_applied(tmp_path, monkeypatch, capsys):
    import torch
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    run = make_run(tmp_path / "run", modalities=("text",))
    (tmp_path / "t.txt").write_text("Ann: hello\nBob: hi\n")
    before = torch.get_num_threads()
    try:
        assert main(["predict", str(run), str(tmp_path / "t.txt"), "--no-plots", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2 and __import__("os").environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "t.txt"), "--no-plots", "--threads", "-1"]) == 2
    assert "--threads must be >= 0" in capsys.readouterr().err
    from merc.threads import apply_threads
    with pytest.raises(ConfigError):
        apply_threads(-3)


def test_labels_json_format_is_documented_and_true(tmp_path):
    """The README's labels.json example, written into a corpus, is the label set in its order."""
    text = README.read_text()
    block = re.search(r"`labels\.json` \(optional[\s\S]*?```json\n(.+?)\n```", text, re.S)
    assert block, "README documents labels.json with a ```json example"
    labels = json.loads(block.group(1))
    folder = _write(tmp_path / "c", [{"utterance_id": "u0", "speaker": "A", "text": "hi", "emotion": labels[-1]}])
    (folder / "labels.json").write_text(block.group(1))
    assert load_corpus("jsonl", folder).labels == labels
