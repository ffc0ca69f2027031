"""Help and messages: every --help default shown once and true; the qc example agrees with the README;
"an audio"; the adapter hint names the run's encoder list; MELD with audio but no --media-dir fails up
front; `merc predict CORPUS_DIR` does not suggest training into the corpus folder."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from merc.cli import build_parser, main
from merc.errors import ConfigError, an

README = Path(__file__).resolve().parents[1] / "README.md"


def _parsers(parser: argparse.ArgumentParser, path: str = "merc"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, p in action.choices.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield from _parsers(p, f"{path} {name}")


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    fmt = parser._get_formatter()
    return fmt._expand_help(action) if action.help else ""


def test_every_default_is_shown_once():
    twice = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS):
                continue
            text = _help_of(parser, action)
            if len(re.findall(r"\bdefault\b", text, re.IGNORECASE)) > 1:
                twice.append(f"{path} {'/'.join(action.option_strings)}: {text}")
    assert not twice, "\n".join(twice)


def test_qc_help_defaults_are_the_real_ones():
    from merc.qc.alignment import AlignmentConfig
    from merc.qc.config import QCConfig
    from merc.qc.faces import FaceCheckConfig
    [qc] = [p for path, p in _parsers(build_parser()) if path == "merc qc"]
    helps = {a.dest: _help_of(qc, a) for a in qc._actions}
    assert helps["fps"].endswith(f"(default: {FaceCheckConfig.fps})")
    assert helps["speaker_shift_max"].endswith(f"(default: {AlignmentConfig.speaker_shift_max})")
    assert helps["asr"].endswith(f"(default: {AlignmentConfig.asr})")
    assert helps["calibrate_max"].endswith(f"(default: {QCConfig.calibrate_max})")
    [train] = [p for path, p in _parsers(build_parser()) if path == "merc train"]
    assert {a.dest: _help_of(train, a) for a in train._actions}["tune_adapters"].endswith("(default: frozen)")


def test_qc_help_example_is_the_readme_command():
    from merc.qc import cli
    example = next(line.strip() for line in cli.__doc__.splitlines() if line.strip().startswith("merc qc "))
    readme = [line.split("#")[0].strip() for line in README.read_text().splitlines()]
    assert example in readme, example


def test_an_audio():
    assert an("audio") == "an audio" and an("face") == "a face" and an("image") == "an image"
    from merc.training.features import resolve_encoders
    with pytest.raises(ConfigError, match="'fer' is a face encoder, not an audio encoder"):
        resolve_encoders(["audio"], {"audio": ["fer"]})


def test_adapter_hint_names_the_runs_encoder_list():
    from merc.training.adapters import check_adapter_encoders
    adapter = SimpleNamespace(encoder={"name": "egemaps", "fingerprint": "eg-1"}, config=SimpleNamespace(d_in=88))
    with pytest.raises(ConfigError) as e:
        check_adapter_encoders({"audio": adapter}, {"audio": ["egemaps", "resemblyzer"]},
                               {"audio": ["eg-1", "rz-1"]}, {"audio": 344})
    msg = str(e.value)
    assert "`merc adapt --modality audio --encoder egemaps,resemblyzer ...`" in msg
    assert "this run's audio features are 'egemaps+resemblyzer'" in msg and "--audio-encoders egemaps " in msg


def test_media_modality_without_media_fails_up_front(tmp_path, capsys):
    from test_meld import ROWS, write_meld
    meld = tmp_path / "meld"
    for split in ("train", "dev", "test"):
        write_meld(meld, ROWS, split)
    capsys.readouterr()
    code = main(["train", "--dataset", "meld", "--data-dir", str(meld), "--modalities", "text,audio",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "no train utterance of meld" in err and "--media-dir" in err and "an audio or video file" in err


def test_predict_on_a_corpus_folder_does_not_suggest_training_into_it(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text("{}\n")
    (tmp_path / "t.txt").write_text("Ann: hi\n")
    capsys.readouterr()
    assert main(["predict", str(corpus), str(tmp_path / "t.txt")]) == 2
    err = capsys.readouterr().err
    assert "looks like a corpus folder (train.jsonl)" in err and f"--out {corpus}" not in err, err
    assert "merc predict RUN_DIR INPUT" in err
