"""`merc train / evaluate / predict --modalities text,audio,face` end to end, through ``merc.cli.main``, on a
tiny MELD-layout corpus (espeak-ng speech, face photos; ``merc.testing.synth.build_corpus_fixture``) where one
clip is missing, one is corrupt (truncated) and one shows no face. Nothing may crash, every utterance is scored,
and the absences are counted by reason in metrics.json["extraction"] and printed by ``merc evaluate``.

Real encoders (minilm text, egemaps + resemblyzer audio, fer + dlib faces) and a tiny model (d_model 16, two
epochs): this checks the plumbing, not accuracy.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from merc.cli import main

pytestmark = pytest.mark.slow

FAULTS = {"missing": 1, "corrupt": 1, "no_face": 1}
ENCODERS = {"text": ["minilm"], "audio": ["egemaps", "resemblyzer"], "face": ["fer", "dlib"]}


def _missing_requirements() -> str | None:
    if shutil.which("espeak-ng") is None:
        return "espeak-ng is not installed (it voices the fixture)"
    from merc.encoders.base import available_encoders
    installed = {(i.modality, i.name) for i in available_encoders() if i.installed()}
    absent = [f"{m}:{n}" for m, names in ENCODERS.items() for n in names if (m, n) not in installed]
    return f"encoders not installed: {', '.join(absent)} (`merc encoder list`)" if absent else None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(fixture, run directory, train exit code, train stdout) — built and trained once for the module."""
    why = _missing_requirements()
    if why:
        pytest.skip(why)
    from merc.testing.synth import build_corpus_fixture
    root = tmp_path_factory.mktemp("mm_e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MERC_CACHE", str(root / "cache"))
        fx = build_corpus_fixture(root / "corpus", layout="meld", n_dialogues=5, utts_per_dialogue=4,
                                  faults=FAULTS, seed=0, fps=5)
        run = root / "run"
        code = main(["train", "--dataset", "meld", "--data-dir", str(fx.data_dir), "--media-dir", str(fx.media_dir),
                     "--modalities", "text,audio,face", "--text-encoder", "minilm", "--model", "mamba",
                     "--d-model", "16", "--layers", "1", "--epochs", "2", "--quiet", "--out", str(run)])
    return fx, run, code, root


@pytest.fixture
def env(trained, monkeypatch):
    fx, run, code, root = trained
    monkeypatch.setenv("MERC_CACHE", str(root / "cache"))
    assert code == 0
    return fx, run, root


def _expected_absent(fx, split: str) -> dict[str, int]:
    faults = [f for u, f in fx.faults.items() if fx.utterances[u].split == split]
    unreadable = sum(f in ("missing", "corrupt") for f in faults)
    return {"text": 0, "audio": unreadable, "face": unreadable + sum(f == "no_face" for f in faults)}


def _labelled(fx, split: str) -> int:
    return sum(u.split == split for u in fx.utterances.values())  # every fixture utterance has a label


def test_train_counts_absences_by_reason(env):
    fx, run, _ = env
    assert set(FAULTS) == set(fx.faults.values())
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["modalities"] == ["text", "audio", "face"] and config["encoders"] == ENCODERS
    assert set(config["model"]["input_dims"]) == {"text", "audio", "face"}
    for split in ("dev", "test"):
        assert metrics[split]["n"] == _labelled(fx, split)  # every utterance scored, absent modalities or not
    for split in ("train", "dev", "test"):
        ext = metrics["extraction"][split]
        want = _expected_absent(fx, split)
        assert {m: ext[m]["absent"] for m in ENCODERS} == want, (split, ext)
        assert metrics["absent"][split] == want
        for m in ("audio", "face"):
            assert sum(ext[m]["reasons"].values()) == want[m]
            assert ext[m]["present"] + ext[m]["absent"] == ext[m]["utterances"] == _labelled(fx, split)
    for uid, fault in fx.faults.items():
        ext = metrics["extraction"][fx.utterances[uid].split]
        face_reason = next(r for r, ids in ext["face"]["examples"].items() if uid in ids)
        if fault == "no_face":
            assert face_reason.startswith("fer: no face in N/N sampled frames")
            assert not any(uid in ids for ids in ext["audio"]["examples"].values())  # its audio is fine
        else:
            audio_reason = next(r for r, ids in ext["audio"]["examples"].items() if uid in ids)
            want = "missing file <file>" if fault == "missing" else "not decodable: <file>"
            assert audio_reason.startswith(f"egemaps: {want}") and face_reason.startswith(f"fer: {want}")


def test_evaluate_scores_every_utterance_and_prints_reasons(env, capsys):
    fx, run, _ = env
    for split in ("dev", "test"):
        capsys.readouterr()
        assert main(["evaluate", str(run), "--split", split, "--quiet"]) == 0
        out = capsys.readouterr().out
        n = int(re.match(rf"{split} \((\d+) utterances\)", out).group(1))
        assert n == _labelled(fx, split)
        want = _expected_absent(fx, split)
        for m in ("audio", "face"):
            line = next((x for x in out.splitlines() if f"had no {m}" in x), None)
            assert (line is None) == (want[m] == 0), out
            if line:
                assert line.strip().startswith(f"{want[m]} of {n} {split} utterances had no {m} (")
                assert line.endswith("they are scored from the other modalities")
        faults = {u: fx.faults[u] for u in fx.faults if fx.utterances[u].split == split}
        for uid, fault in faults.items():  # each reason with its real file and utterance id
            if fault == "missing":
                assert re.search(rf"1 × egemaps: missing file \S+ \({uid}\)", out), out
            if fault == "no_face":
                assert re.search(rf"1 × fer: no face in \d+/\d+ sampled frames of \S+ \({uid}\)", out), out
    assert main(["evaluate", str(run), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == _labelled(fx, "test")


def test_predict_jsonl_naming_media_files(env, capsys):
    """A JSONL whose utterances name the clips (relative to the JSONL's folder), faults included."""
    fx, run, root = env
    folder = root / "to_predict"
    folder.mkdir(exist_ok=True)
    utts = []
    for uid, u in fx.utterances.items():
        if u.split != "test":
            continue
        rel = os.path.relpath(u.media, folder)  # ../corpus/MELD/...; the missing clip stays missing
        utts.append({"utterance_id": uid, "speaker": u.label_speaker, "text": u.label_text, "video": rel,
                     "audio": rel})
    (folder / "talk.jsonl").write_text(json.dumps({"conversation_id": "talk", "utterances": utts}) + "\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(folder / "talk.jsonl"), "--json", "--quiet",
                 "--out", str(root / "pred")]) == 0
    [rec] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [u["utterance_id"] for u in rec["utterances"]] == [u["utterance_id"] for u in utts]
    assert all(u["video"] == v["video"] for u, v in zip(rec["utterances"], utts))  # input echoed as given
    for u in rec["utterances"]:
        assert abs(sum(u["probabilities"].values()) - 1) < 1e-3
        fault = fx.faults.get(u["utterance_id"])
        want = ["text"] if fault in ("missing", "corrupt") else ["text", "audio"] if fault == "no_face" else \
            ["text", "audio", "face"]
        assert u["modalities"] == want, (u["utterance_id"], fault)
    assert (root / "pred" / "talk_timeline.png").exists()


def _recording(folder: Path) -> tuple[Path, list[tuple[float, float]]]:
    """One mp4 (a face, two espeak sentences with a pause between); returns it and the two speech spans."""
    import numpy as np

    from merc.media.decode import load_audio
    from merc.testing.synth import face_images, make_clip, speak, write_wav
    a = load_audio(speak("I cannot believe you did that to me.", "en-us", folder / "a.wav", cache_dir=folder))
    b = load_audio(speak("Well, that is wonderful news for all of us.", "en-gb", folder / "b.wav", cache_dir=folder))
    gap = np.zeros(8000, np.float32)  # 0.5 s at 16 kHz
    wav = write_wav(np.concatenate([gap, a, gap, b, gap]), folder / "talk.wav")
    video = make_clip(wav, face_images(1)[0], folder / "talk.mp4", fps=5)
    s1 = 0.5, 0.5 + len(a) / 16000
    s2 = s1[1] + 0.5, s1[1] + 0.5 + len(b) / 16000
    return video, [s1, s2]


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def test_predict_video_with_srt_and_json_transcripts(env, capsys):
    """``merc predict RUN talk.mp4 --transcript talk.srt`` (and JSON segments): each segment is an utterance cut
    from the recording; a segment that starts past the end of the recording is an error naming it (#27)."""
    fx, run, root = env
    folder = root / "recording"
    folder.mkdir(exist_ok=True)
    video, (s1, s2) = _recording(folder)
    late = (s2[1] + 30.0, s2[1] + 32.0)  # after the end of the recording
    s1, s2, late = ((round(a, 3), round(b, 3)) for a, b in (s1, s2, late))  # SRT holds milliseconds
    segs = [("Ann", "I cannot believe you did that to me.", s1), ("Bob", "Well, that is wonderful news", s2)]

    def write(segs):
        srt, js = folder / "talk.srt", folder / "talk.json"
        srt.write_text("".join(f"{k + 1}\r\n{_srt_time(a)} --> {_srt_time(b)}\r\n{who}: {text}\r\n\r\n"
                               for k, (who, text, (a, b)) in enumerate(segs)), encoding="utf-8")
        js.write_text(json.dumps([{"speaker": w, "text": t, "start": a, "end": b} for w, t, (a, b) in segs]))
        return srt, js

    for transcript in write([*segs, ("Ann", "Hello?", late)]):
        capsys.readouterr()
        assert main(["predict", str(run), str(video), "--transcript", str(transcript), "--quiet"]) == 2
        assert "segment 2 (talk_u2, " in capsys.readouterr().err
    srt, js = write(segs)
    results = {}
    for transcript in (srt, js):
        capsys.readouterr()
        assert main(["predict", str(run), str(video), "--transcript", str(transcript), "--json", "--quiet",
                     "--out", str(root / f"pred_{transcript.suffix[1:]}")]) == 0
        [rec] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert rec["conversation_id"] == "talk" and rec["media"] == str(video)
        utts = rec["utterances"]
        assert [(u["speaker"], u["text"]) for u in utts] == [(w, t) for w, t, _ in segs]
        assert [u["start"] for u in utts] == pytest.approx([a for *_, (a, _) in segs], abs=1e-3)
        assert [u["modalities"] for u in utts] == [["text", "audio", "face"]] * 2
        assert (root / f"pred_{transcript.suffix[1:]}" / "talk_timeline.png").exists()
        results[transcript.suffix] = [u["probabilities"] for u in utts]
    # the same segments give the same features and predictions, whichever transcript format named them
    for p, q in zip(results[".srt"], results[".json"], strict=True):
        assert p == pytest.approx(q, abs=1e-3)
    # without its transcript the recording's transcript is derived (tests/test_recording_cli.py); a missing
    # --asr-model folder is refused before any work, naming the folder
    assert main(["predict", str(run), str(video), "--quiet", "--asr-model", str(folder / "nope")]) == 2
    assert "no such --asr-model folder" in capsys.readouterr().err
