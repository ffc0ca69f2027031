"""``merc qc``: the command with fake checks (fast), then end to end on a synthetic MELD corpus."""
from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from test_qc_pipeline import FakeIntegrity, FakeScore, make_corpus

from merc.cli import main
from merc.data import load_corpus
from merc.qc import registry as qc_registry


def write_jsonl_corpus(root: Path) -> Path:
    from merc.data.jsonl import write_corpus_jsonl
    corpus = make_corpus(root)
    return write_corpus_jsonl(corpus, root / "data")


@pytest.fixture
def fake_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(qc_registry.BUILTIN_CHECKS, "integrity", FakeIntegrity)
    monkeypatch.setitem(qc_registry.BUILTIN_CHECKS, "alignment", FakeScore)


def test_qc_command_with_fake_checks(tmp_path: Path, fake_checks, capsys) -> None:
    data = write_jsonl_corpus(tmp_path / "corpus")
    out = tmp_path / "qc"
    rc = main(["qc", "--dataset", "jsonl", "--data-dir", str(data), "--out", str(out), "--quiet",
               "--checks", "integrity,alignment", "--splits", "train", "--limit", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "integrity" in printed and "alignment" in printed and str(out / "report.html") in printed
    s = json.loads((out / "summary.json").read_text())
    assert list(s["splits"]) == ["train"] and s["utterances"] == 8  # 2 conversations x 4
    assert s["options"]["limit"] == 2 and s["options"]["checks"] == "integrity,alignment"
    with open(out / "flags.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and {r["check"] for r in rows} == {"integrity", "alignment"}
    missing = [r for r in rows if r["utterance_id"] == "train_c1_u2"]
    assert [r["reason"] for r in missing] == ["media missing", "not measured: media missing"]
    curated = load_corpus("jsonl", out / "curated")
    kept = [u.utterance_id for u in curated.utterances("train")]
    assert kept and "train_c1_u2" not in kept and len(kept) == s["kept"]
    assert {json.loads(x)["conversation_id"] for x in (out / "manifest.jsonl").read_text().splitlines()} \
        <= {"train_c0", "train_c1"}
    # a rerun reuses the cache: the fake score check is not called again
    FakeScore.calls = 0
    assert main(["qc", "--dataset", "jsonl", "--data-dir", str(data), "--out", str(out), "--quiet",
                 "--checks", "integrity,alignment", "--splits", "train", "--limit", "2"]) == 0
    assert FakeScore.calls == 0
    assert main(["qc", "--dataset", "jsonl", "--data-dir", str(data), "--out", str(out), "--quiet", "--fresh",
                 "--checks", "integrity,alignment", "--splits", "train", "--limit", "2"]) == 0
    assert FakeScore.calls == 7  # all but the missing clip


@pytest.mark.parametrize("argv, message", [
    (["--checks", "integrity,ocr"], "unknown ['ocr']"),
    (["--splits", "train,valid"], "unknown ['valid']"),
    (["--checks", "integrity", "--calibrate"], "add alignment to --checks"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--speaker-shift-max", "-1"], "give a number of nats >= 0"),
    (["--checks", "integrity", "--speaker-shift-max", "0.5"], "add alignment to --checks"),
])
def test_qc_command_user_errors(tmp_path: Path, fake_checks, capsys, argv: list[str], message: str) -> None:
    data = write_jsonl_corpus(tmp_path / "corpus")
    rc = main(["qc", "--dataset", "jsonl", "--data-dir", str(data), "--out", str(tmp_path / "qc"), *argv])
    assert rc == 2
    assert message in capsys.readouterr().err


# end to end on a synthetic MELD corpus, every fault injected once

E2E_FAULTS = {"swapped_speaker": 1, "wrong_transcript": 1, "corrupt": 1, "missing": 1, "silent": 1,
              "too_long": 1, "no_face": 1}
EXPECTED = {  # fault -> (check that must flag it, words its reason must contain)
    "corrupt": ("integrity", ""), "missing": ("integrity", "missing"), "silent": ("integrity", "silen"),
    "too_long": ("integrity", "long"), "wrong_transcript": ("alignment", ""),
    "swapped_speaker": ("speaker", "better than"), "no_face": ("faces", "no face"),
}


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.mark.slow
@pytest.mark.skipif(not _have("merc.qc.integrity", "merc.qc.alignment", "merc.qc.speaker", "merc.qc.faces",
                              "merc.testing.synth"), reason="the QC checks or the fixture builder are not there yet")
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng synthesizes the fixture's speech")
def test_qc_end_to_end_meld_fixture(tmp_path: Path, capsys) -> None:
    from merc.testing.synth import build_corpus_fixture
    fx = build_corpus_fixture(tmp_path / "fx", layout="meld", n_dialogues=4, utts_per_dialogue=5, n_speakers=3,
                              faults=E2E_FAULTS, seed=3, too_long_seconds=32.0)
    assert sorted(fx.faults.values()) == sorted(E2E_FAULTS)
    out = tmp_path / "qc"
    rc = main(["qc", "--dataset", "meld", "--data-dir", str(fx.data_dir), "--media-dir", str(fx.media_dir),
               "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    with open(out / "flags.csv", newline="") as f:
        flags = {(r["utterance_id"], r["check"]): r for r in csv.DictReader(f)}
    assert len(flags) == 4 * len(fx.utterances)
    problems = []
    for uid, fault in fx.faults.items():
        check, words = EXPECTED[fault]
        r = flags[(uid, check)]
        if r["passed"] != "False" or words not in r["reason"].lower():
            problems.append(f"{fault} {uid}: {check} passed={r['passed']} reason={r['reason']!r}")
    for uid in fx.clean:
        for check in ("integrity", "alignment", "speaker", "faces"):
            r = flags[(uid, check)]
            if r["passed"] != "True":
                problems.append(f"clean {uid}: {check} failed: {r['reason']!r}")
    assert not problems, "\n".join(problems)
    s = json.loads((out / "summary.json").read_text())
    assert s["dropped"] == len(fx.faults) and s["kept"] == len(fx.clean)
    kept = load_corpus("jsonl", out / "curated")
    assert sorted(u.utterance_id for sp in kept.splits for u in kept.utterances(sp)) == sorted(fx.clean)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    assert (out / "speaker_tracks.json").exists()


def test_speaker_shift_flag_reaches_the_alignment_config() -> None:
    from merc.cli import build_parser
    from merc.qc.cli import build_config
    parse = build_parser().parse_args
    base = ["qc", "--dataset", "jsonl", "--data-dir", "d", "--out", "o"]
    assert "alignment" not in build_config(parse(base)).check_configs  # the default: the check's own (1.0)
    cfg = build_config(parse([*base, "--speaker-shift-max", "0", "--asr", "pocketsphinx"])).check_configs["alignment"]
    assert cfg.speaker_shift_max == 0 and cfg.asr == "pocketsphinx"


def test_min_face_flag_reaches_the_faces_config() -> None:
    from merc.cli import build_parser
    from merc.qc.cache import measure_key
    from merc.qc.cli import QCArgumentError, build_config
    from merc.qc.faces import FaceCheck, FaceCheckConfig
    parse = build_parser().parse_args
    base = ["qc", "--dataset", "jsonl", "--data-dir", "d", "--out", "o"]
    assert "faces" not in build_config(parse(base)).check_configs  # the check's own default (64)
    assert build_config(parse([*base, "--min-face", "80"])).check_configs["faces"].min_face == 80
    assert build_config(parse([*base, "--min-face", "0"])).check_configs["faces"].min_face is None  # the full scan
    with pytest.raises(QCArgumentError, match="--min-face 5"):
        build_config(parse([*base, "--min-face", "5"]))
    with pytest.raises(QCArgumentError, match="add faces to --checks"):
        build_config(parse([*base, "--min-face", "80", "--checks", "integrity"]))
    # full-scan measurements cached before the option existed stay valid (the key of the old default); the reduced
    # scan is measured again, and its key differs from the older resized-frame scan's under the same min_face
    old_default, old_resized_80 = "37828a921744", "094dac1eebea"  # keys before this change (FaceCheck() / min_face 80)
    assert measure_key(FaceCheck(FaceCheckConfig(min_face=None))) == old_default
    keys = {measure_key(FaceCheck()), measure_key(FaceCheck(FaceCheckConfig(min_face=80))), old_default, old_resized_80}
    assert len(keys) == 4
