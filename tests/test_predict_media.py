"""Prediction on media without a model: a recording + transcript (SRT or JSON segments) becomes one conversation
of time segments (errors name file and line), and the timeline marks which modalities each utterance had.
The end-to-end runs with real encoders are in test_multimodal_e2e.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

from merc.data.schema import Conversation, Utterance
from merc.data.transcript import media_conversation, read_transcript
from merc.encoders.base import media_segment
from merc.errors import InputError, MissingFileError
from merc.training.predict import modality_presence, prediction_record, read_input
from merc.training.timeline import timeline_figure, write_timelines

SRT = ("\ufeff1\r\n00:00:01,200 --> 00:00:03,450\r\nAnn: I can't believe it.\r\nReally.\r\n\r\n"
       "2\r\n00:00:04.000 --> 00:00:05,5\r\nBob Smith: Fine: whatever.\r\n\r\n"
       "00:01:00,000 --> 00:01:02,000\r\nAnn: no index line")


@pytest.fixture
def media(tmp_path):
    video, audio = tmp_path / "talk.mp4", tmp_path / "talk.wav"
    video.write_bytes(b"not decoded here")
    audio.write_bytes(b"not decoded here")
    return video, audio


def test_srt_segments(tmp_path, media):
    (tmp_path / "t.srt").write_text(SRT, encoding="utf-8")
    segs = read_transcript(tmp_path / "t.srt")
    assert [(s["speaker"], s["text"]) for s in segs] == [("Ann", "I can't believe it. Really."),
                                                          ("Bob Smith", "Fine: whatever."), ("Ann", "no index line")]
    assert [(s["start"], s["end"]) for s in segs] == [(1.2, 3.45), (4.0, 5.5), (60.0, 62.0)]
    conv, raw = media_conversation(media[0], tmp_path / "t.srt")
    assert conv.conversation_id == "talk" and [u.utterance_id for u in conv] == ["talk_u0", "talk_u1", "talk_u2"]
    u = conv.utterances[1]
    assert u.video == u.audio == str(media[0].resolve()) and u.meta == {"segment": [4.0, 5.5]}
    assert media_segment(u, u.video) == media_segment(u, u.audio) == (4.0, 5.5)  # what the encoders cut
    assert raw["utterances"][1] == {"utterance_id": "talk_u1", "speaker": "Bob Smith", "text": "Fine: whatever.",
                                    "start": 4.0, "end": 5.5}
    # an audio-only recording has no video: faces are absent, audio is cut the same way
    conv, _ = media_conversation(media[1], tmp_path / "t.srt")
    u = conv.utterances[0]
    assert u.video is None and media_segment(u, u.audio) == (1.2, 3.45)


@pytest.mark.parametrize("text, line, match", [
    ("1\n00:00:01,000 -> 00:00:02,000\nAnn: hi\n", 2, "time line"),
    ("1\n00:00:01,000 --> 00:00:02,000\nno speaker here\n", 3, "Speaker: text"),
    ("1\n00:00:01,000 --> 00:00:02,000\nAnn: ok\n\nhello\n", 5, "subtitle number"),
    ("1\n00:00:01,000 --> 00:00:02,000\n\n", 2, "no text"),
    ("1\n00:00:03,000 --> 00:00:02,000\nAnn: backwards\n", 2, "start < end"),
])
def test_srt_errors_name_file_and_line(tmp_path, text, line, match):
    p = tmp_path / "bad.srt"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=match) as e:
        read_transcript(p)
    assert f"{p}:{line}:" in str(e.value)


def test_json_segments_and_their_errors(tmp_path, media):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"segments": [{"speaker": "Ann", "text": "Hi.", "start": 0, "end": 1.5},
                                          {"speaker": "Bob", "text": "Yo.", "start": 2, "end": 3,
                                           "utterance_id": "b1"}]}))
    conv, raw = media_conversation(media[0], p, conversation_id="c")
    assert [u.utterance_id for u in conv] == ["c_u0", "b1"] and conv.utterances[1].meta["segment"] == [2.0, 3.0]
    for segs, match in [([{"speaker": "A", "text": "x", "start": "0", "end": 1}], "segment 0: 'start' must be a "),
                        ([{"speaker": "A", "text": "x", "start": 0}], "'end' must be a number"),
                        ([{"speaker": "A", "text": "x", "start": 0, "end": 1, "mood": 1}], "unknown field"),
                        ([{"speaker": "A", "text": "x", "start": 2, "end": 1}], "segment 0: segment times"),
                        ([], "non-empty list")]:
        p.write_text(json.dumps(segs))
        with pytest.raises(InputError, match=match):
            read_transcript(p)
    p.write_text('[{"speaker": "A",\n "text": }]')
    with pytest.raises(InputError, match=rf"{p}:2: invalid JSON"):
        read_transcript(p)
    with pytest.raises(InputError, match="unknown transcript format"):
        read_transcript(media[1])
    with pytest.raises(MissingFileError):
        media_conversation(tmp_path / "nope.mp4", p)


def test_read_input_recording_without_transcript_is_derived(tmp_path, media):
    # no transcript: the recording pipeline derives one; an undecodable file is an error naming it
    with pytest.raises(InputError, match=f"not decodable: {media[0]}"):
        read_input(media[0])
    (tmp_path / "t.srt").write_text(SRT, encoding="utf-8")
    with pytest.raises(InputError, match=f"not decodable: {media[0]}"):  # checked before anything is labelled
        read_input(media[0], tmp_path / "t.srt")


def _conv(n: int) -> Conversation:
    return Conversation("c", "predict", [Utterance(f"u{i}", "AB"[i % 2], f"text {i}") for i in range(n)])


def test_presence_and_prediction_record():
    conv = _conv(3)
    feats = {"text": {f"u{i}": np.ones(2) for i in range(3)},
             "audio": {"u0": np.ones(2), "u1": None, "u2": np.array([np.nan, 1.0])},
             "face": {"u0": None, "u2": np.ones(2)}}  # u1 not even listed
    present = modality_presence(conv, feats)
    assert {m: v.tolist() for m, v in present.items()} == {"text": [True] * 3, "audio": [True, False, False],
                                                           "face": [False, False, True]}
    raw = {"conversation_id": "c", "utterances": [{"utterance_id": u.utterance_id} for u in conv]}
    probs = np.full((3, 2), 0.5)
    rec = prediction_record(raw, conv, probs, ["a", "b"], present)
    assert [u["modalities"] for u in rec["utterances"]] == [["text", "audio"], ["text"], ["text", "face"]]
    # a text-only run's output keeps its old shape
    text_only = prediction_record(raw, conv, probs, ["a", "b"], {"text": present["text"]})
    assert "modalities" not in text_only["utterances"][0]


def _offsets(fig, gid: str) -> np.ndarray:
    [artist] = fig.findobj(lambda a: a.get_gid() == gid)
    return np.asarray(artist.get_offsets())


def test_timeline_marks_each_modality_per_utterance(tmp_path):
    import matplotlib.pyplot as plt
    n = 6
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=n)
    present = {"text": np.ones(n, bool), "audio": np.array([1, 0, 1, 1, 0, 1], bool),
               "face": np.array([0, 0, 1, 1, 1, 0], bool)}
    fig = timeline_figure(_conv(n), probs, ["a", "b", "c"], 0, "t", n, present)
    rows = {}
    for m, has in present.items():
        on, off = _offsets(fig, f"present:{m}"), _offsets(fig, f"absent:{m}")
        assert on[:, 0].tolist() == np.flatnonzero(has).tolist()
        assert off[:, 0].tolist() == np.flatnonzero(~has).tolist()
        ys = set(on[:, 1].tolist()) | set(off[:, 1].tolist())
        assert len(ys) == 1 and ys.pop() < 0  # one row per modality, under the bars
        rows[m] = (on[:, 1].tolist() + off[:, 1].tolist())[0]
    assert len(set(rows.values())) == 3
    assert fig.axes[0].get_ylim()[0] <= min(rows.values())  # the rows are inside the axes
    plt.close(fig)
    # without presence (a text-only run) there are no marks
    fig = timeline_figure(_conv(n), probs, ["a", "b", "c"], 0, "t", n)
    assert not fig.findobj(lambda a: str(a.get_gid()).startswith(("present:", "absent:")))
    plt.close(fig)
    with pytest.raises(ValueError, match="present"):
        timeline_figure(_conv(n), probs, ["a", "b", "c"], 0, "t", n, {"audio": np.ones(n - 1, bool)})


def test_paged_timelines_slice_the_marks(tmp_path, monkeypatch):
    import merc.training.timeline as tl
    seen = []
    original = tl.timeline_figure

    def spy(conv, probs, labels, first, title, slots, present=None):
        seen.append((first, {m: v.tolist() for m, v in (present or {}).items()}))
        return original(conv, probs, labels, first, title, slots, present)
    monkeypatch.setattr(tl, "timeline_figure", spy)
    audio = np.arange(5) % 2 == 0
    paths = write_timelines(_conv(5), np.full((5, 2), 0.5), ["a", "b"], tmp_path, "c", per_page=2,
                            present={"text": np.ones(5, bool), "audio": audio})
    assert len(paths) == 3
    assert [(f, p["audio"]) for f, p in seen] == [(0, [True, False]), (2, [True, False]), (4, [True])]
