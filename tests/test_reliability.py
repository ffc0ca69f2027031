"""Issue 11: predict and run directories never give a wrong answer silently.

One input path (predict reads through the validating JSONL/txt readers), no NaN (weights checksummed,
predictions checked finite, JSON strict), nothing overwritten without asking (train --out, timeline names),
predictions keep the input, clean exits (Ctrl-C, closed pipe), long conversations (pages, batching,
speaker slots), CLI consistency. A tiny toy run (test_training's toy encoder) keeps these fast.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from toy_corpus import conversations  # also registers the "toy" text encoder

from merc.cli import build_parser, main
from merc.errors import IncompatibleRunError, InputError, OutputExistsError
from merc.training.predict import predict_file, read_input
from merc.training.run import TrainedRun, from_pretrained

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def strict_json(line: str):
    """json.loads that refuses NaN / Infinity (which Python's json would accept)."""
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(line, parse_constant=bad)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A toy corpus and a toy mlp run trained on it (module-wide; the feature cache in a temp folder)."""
    root = tmp_path_factory.mktemp("rel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MERC_CACHE", str(root / "cache"))
        corpus = root / "corpus"
        corpus.mkdir()
        rng = np.random.default_rng(0)
        for split, n in (("train", 40), ("dev", 10), ("test", 10)):
            (corpus / f"{split}.jsonl").write_text(
                "\n".join(json.dumps(c) for c in conversations(n, rng, split, lengths=(4, 9))) + "\n")
        run = root / "run"
        assert main(["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", "mlp",
                     "--text-encoder", "toy", "--epochs", "2", "--d-model", "16", "--quiet", "--out", str(run)]) == 0
        yield {"root": root, "corpus": corpus, "run": run}


@pytest.fixture
def cache(env, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(env["root"] / "cache"))
    return env


def write_jsonl(path: Path, convs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in convs), encoding="utf-8")
    return path


def conv(cid: str, n: int = 3, speakers=("A", "B"), **fields) -> dict:
    return {"conversation_id": cid, "utterances": [
        {"speaker": speakers[i % len(speakers)], "text": f"I feel {['great', 'fine', 'furious'][i % 3]}.", **fields}
        for i in range(n)]}


# ---------------------------------------------------------------- one input path

def test_predict_input_rejects_duplicates_null_and_empty_text(tmp_path):
    cases = {
        "dup_conv": ([conv("c1"), conv("c1")], r":2: duplicate conversation_id 'c1'"),
        "dup_utt": ([{"conversation_id": "c", "utterances": [
            {"utterance_id": "u", "speaker": "A", "text": "hi"}, {"utterance_id": "u", "speaker": "B", "text": "yo"}]}],
            r":1: duplicate utterance_id 'u'"),
        "null_text": ([conv("c1"), {"conversation_id": "c2", "utterances": [{"speaker": "A", "text": None}]}],
                      r":2: utterance 'c2_u0' field 'text' is None"),
        "empty_text": ([{"conversation_id": "c2", "utterances": [{"speaker": "A", "text": "  "}]}],
                       r":1: utterance 'c2_u0' .*empty text"),
    }
    for name, (convs, pattern) in cases.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", convs)
        with pytest.raises(InputError, match=rf"{name}\.jsonl{pattern}"):
            read_input(path)
    txt = tmp_path / "empty.txt"
    txt.write_text("A: hello\nB:\n")
    with pytest.raises(InputError, match=r"empty\.txt:2: speaker 'B' has empty text"):
        read_input(txt)


def test_non_utf8_input_names_file_line_byte_and_encoding(tmp_path):
    data = (json.dumps(conv("c1")) + "\n" + '{"conversation_id": "c2", "utterances": [{"speaker": "A", "text": "caf'
            ).encode() + b"\xe9 cr\xe8me\"}]}\n"
    for suffix in (".jsonl", ".txt"):
        path = tmp_path / f"latin{suffix}"
        path.write_bytes(data if suffix == ".jsonl" else b"A: hello\nB: caf\xe9\n")
        offset = path.read_bytes().index(b"\xe9")
        with pytest.raises(InputError) as e:
            read_input(path)
        msg = str(e.value)
        assert f"{path.name}:2: byte {offset} " in msg, msg
        assert "cp1252" in msg and "iconv -f cp1252 -t UTF-8" in msg


def test_predict_reader_keeps_media_fields(tmp_path):
    path = write_jsonl(tmp_path / "media.jsonl", [{"conversation_id": "m", "utterances": [
        {"speaker": "A", "text": "hi", "audio": "clips/a.wav", "video": "clips/a.mp4", "start": 1.5, "end": 2,
         "meta": {"k": 1}}]}])
    data = read_input(path)
    u = data.conversations[0].utterances[0]
    assert u.audio == str(tmp_path.resolve() / "clips" / "a.wav") and u.video.endswith("a.mp4")
    assert (u.start, u.end, u.meta) == (1.5, 2.0, {"k": 1})
    assert data.raw[0]["utterances"][0]["audio"] == "clips/a.wav"  # echoed as given


def test_inferred_label_set_warns_and_points_at_typos(tmp_path, caplog, capsys):
    convs = [{"conversation_id": f"c{i}", "utterances": [
        {"utterance_id": f"c{i}_u0", "speaker": "A", "text": "x", "emotion": lab}]}
        for i, lab in enumerate(["anger"] * 5 + ["joy"] * 5 + ["angr"])]
    write_jsonl(tmp_path / "train.jsonl", convs)
    with caplog.at_level(logging.WARNING):
        assert main(["data", "stats", "--dataset", "jsonl", "--data-dir", str(tmp_path)]) == 0
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "no labels.json" in warning and "3 classes" in warning
    assert "'angr' (1) looks like 'anger' (5)" in warning and "labels.json" in warning
    assert "angr" in capsys.readouterr().out  # the new class is reported in the stats
    (tmp_path / "labels.json").write_text('["anger", "joy", "angr"]')
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        main(["data", "stats", "--dataset", "jsonl", "--data-dir", str(tmp_path)])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---------------------------------------------------------------- no NaN, ever

def _damage(run: Path, how: str) -> None:
    w = run / "model.safetensors"
    data = bytearray(w.read_bytes())
    header = int.from_bytes(data[:8], "little")
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "scrambled":
        mid = 8 + header + (len(data) - 8 - header) // 2
        data[mid:mid + 64] = bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8))
    elif how == "bad_header":
        data[8:40] = b"#" * 32
    elif how == "nan":  # 0xFF bytes: float32 NaN in the middle of the tensors
        mid = 8 + header + (len(data) - 8 - header) // 2
        data[mid:mid + 64] = b"\xff" * 64
    w.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "scrambled", "bad_header"])
def test_damaged_weights_one_clear_error(cache, tmp_path, capsys, how):
    run = tmp_path / "run"
    shutil.copytree(cache["run"], run)
    assert (run / "checksums.json").is_file()
    _damage(run, how)
    inp = write_jsonl(tmp_path / "in.jsonl", [conv("c1")])
    for argv in (["predict", str(run), str(inp), "--no-plots", "--quiet"], ["evaluate", str(run), "--quiet"]):
        capsys.readouterr()
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "model.safetensors" in err and "damaged" in err


def test_old_run_without_checksum_is_checked_for_finite_weights(cache, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cache["run"], run)
    (run / "checksums.json").unlink()
    from_pretrained(run)  # an intact old run still loads
    _damage(run, "nan")
    with pytest.raises(IncompatibleRunError, match=r"model\.safetensors: tensor\(s\) .* NaN"):
        from_pretrained(run)


def test_bundled_demo_run_verifies():
    from merc.demo import demo_paths
    from merc.training.weights import verify_checksum
    assert verify_checksum(demo_paths()[0])


def test_non_finite_probabilities_are_an_error_never_printed(cache, tmp_path, monkeypatch, capsys):
    def nan_predict(self, conversations, **kw):
        return [np.full((len(c), len(self.labels)), np.nan, dtype=np.float32) for c in conversations]
    monkeypatch.setattr(TrainedRun, "predict", nan_predict)
    inp = write_jsonl(tmp_path / "in.jsonl", [conv("c1")])
    assert main(["predict", str(cache["run"]), str(inp), "--json", "--no-plots", "--quiet",
                 "--output", str(tmp_path / "o.jsonl")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "non-finite probabilities" in err and "'c1'" in err
    assert (tmp_path / "o.jsonl").read_text() == ""


# ---------------------------------------------------------------- predictions keep the input

def test_json_output_keeps_fields_adds_gold_predicted_probabilities(cache, tmp_path, capsys):
    convs = [conv("g1", emotion="happy", meta={"src": "x"}), conv("plain")]
    convs[0]["utterances"][0]["audio"] = "clips/a.wav"
    inp = write_jsonl(tmp_path / "in.jsonl", convs)
    out_file = tmp_path / "pred.jsonl"
    assert main(["predict", str(cache["run"]), str(inp), "--json", "--no-plots", "--quiet",
                 "--output", str(out_file)]) == 0
    printed = [strict_json(x) for x in capsys.readouterr().out.splitlines()]
    written = [strict_json(x) for x in out_file.read_text().splitlines()]
    assert printed == written and [c["conversation_id"] for c in written] == ["g1", "plain"]
    labels = json.loads((cache["run"] / "labels.json").read_text())
    for got, given in zip(written, convs, strict=True):
        for u, g in zip(got["utterances"], given["utterances"], strict=True):
            assert {k: u[k] for k in g} == g  # every input field, unchanged (emotion included)
            assert u["predicted"] in labels and list(u["probabilities"]) == labels
            assert sum(u["probabilities"].values()) == pytest.approx(1, abs=1e-3)
            assert ("gold" in u) == ("emotion" in g) and u.get("gold") == g.get("emotion")
    assert written[0]["utterances"][0]["audio"] == "clips/a.wav"
    # the table shows gold next to predicted when the input has it
    assert main(["predict", str(cache["run"]), str(inp), "--no-plots", "--quiet"]) == 0
    table = capsys.readouterr().out
    g1, plain = table.split("── plain")
    assert "gold" in g1 and "predicted" in g1 and "gold" not in plain
    rows = [r for r in g1.splitlines() if "│" in r and "speaker" not in r]
    assert len(rows) == 3 and all(r.split("│")[2].strip() == "happy" for r in rows)
    assert all(r.split("│")[3].strip().lstrip("✗").split()[0] in labels for r in rows)


# ---------------------------------------------------------------- nothing overwritten without asking

def test_timeline_names_are_safe_and_unique(cache, tmp_path):
    out = tmp_path / "deep" / "out"
    ids = ["../../x/y", "a/b", "a_b", ".hidden", "/etc/passwd", "..", "ok"]
    inp = write_jsonl(tmp_path / "in.jsonl", [conv(i) for i in ids])
    predict_file(cache["run"], inp, out_dir=out, stream=io.StringIO())
    pngs = sorted(p for p in tmp_path.rglob("*.png"))
    assert len(pngs) == len(ids), pngs  # one each, no collision overwrote another
    assert all(p.parent == out and not p.name.startswith(".") for p in pngs), pngs
    assert not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()


@pytest.mark.slow
def test_train_refuses_existing_out_then_overwrite_and_resume(cache, tmp_path, capsys):
    args = ["train", "--dataset", "jsonl", "--data-dir", str(cache["corpus"]), "--model", "mlp", "--text-encoder",
            "toy", "--epochs", "1", "--d-model", "8", "--quiet"]
    run = tmp_path / "multi"
    assert main([*args, "--seeds", "2", "--out", str(run)]) == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("model.safetensors")}
    capsys.readouterr()
    assert main([*args, "--seeds", "2", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "--resume" in err
    assert before == {p: p.stat().st_mtime_ns for p in run.rglob("model.safetensors")}
    # an interrupted multi-seed run: seed_1 never finished
    (run / "seed_1" / "metrics.json").unlink()
    (run / "summary.json").unlink()
    assert main([*args, "--seeds", "2", "--out", str(run), "--resume"]) == 0
    assert (run / "seed_0" / "model.safetensors").stat().st_mtime_ns == before[run / "seed_0" / "model.safetensors"]
    assert (run / "seed_1" / "metrics.json").is_file()
    assert json.loads((run / "summary.json").read_text())["seeds"] == [0, 1]
    capsys.readouterr()
    assert main([*args, "--seeds", "2", "--lr", "0.1", "--out", str(run), "--resume"]) == 2  # other settings
    assert "other settings" in capsys.readouterr().err
    assert main([*args, "--out", str(run), "--overwrite"]) == 0
    assert not (run / "seed_0").exists() and (run / "model.safetensors").is_file()
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    assert main([*args, "--out", str(other), "--overwrite"]) == 2
    assert (other / "thesis.tex").read_text() == "precious"


def test_evaluate_defaults_to_the_recorded_data(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(cache["corpus"].parent)
    run = tmp_path / "rel_run"
    assert main(["train", "--dataset", "jsonl", "--data-dir", "corpus", "--model", "mlp", "--text-encoder", "toy",
                 "--epochs", "1", "--d-model", "8", "--quiet", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(cache["corpus"].resolve())
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--quiet"]) == 0
    n = sum(len(json.loads(x)["utterances"]) for x in (cache["corpus"] / "test.jsonl").open())
    assert json.loads(capsys.readouterr().out)["n"] == n


# ---------------------------------------------------------------- long conversations, resumable predict

@pytest.mark.slow
def test_long_conversation_gives_pages_of_normal_size(cache, tmp_path):
    from PIL import Image
    inp = write_jsonl(tmp_path / "long.jsonl", [conv("long", n=400)])
    predict_file(cache["run"], inp, out_dir=tmp_path / "out", stream=io.StringIO())
    pages = sorted((tmp_path / "out").glob("long_timeline_p*.png"))
    assert len(pages) == 8 and not (tmp_path / "out" / "long_timeline.png").exists()
    sizes = [Image.open(p).size for p in pages]
    assert all(w <= 2400 and h <= 900 for w, h in sizes), sizes
    assert max(w for w, _ in sizes) - min(w for w, _ in sizes) < 0.1 * sizes[0][0], sizes  # same width


def test_predict_runs_in_bounded_batches_and_matches_one_batch(cache, tmp_path, monkeypatch):
    run = from_pretrained(cache["run"])
    convs = [conv(f"c{i}", n=4 + i % 5) for i in range(12)]
    inp = write_jsonl(tmp_path / "in.jsonl", convs)
    full = predict_file(None, inp, run=run, plots=False, stream=io.StringIO(), batch_utterances=10_000)
    sizes = []
    original = TrainedRun.predict

    def spy(self, conversations, **kw):
        sizes.append(sum(len(c) for c in conversations))
        return original(self, conversations, **kw)
    monkeypatch.setattr(TrainedRun, "predict", spy)
    small = predict_file(None, inp, run=run, plots=False, stream=io.StringIO(), batch_utterances=10)
    assert len(sizes) > 3 and max(sizes) <= 10
    def flat(results):
        return [v for c in results for u in c["utterances"] for v in u["probabilities"].values()]
    assert flat(small) == pytest.approx(flat(full), abs=2e-4)


def test_more_speakers_than_slots_is_stated(cache, tmp_path, caplog):
    run = from_pretrained(cache["run"])
    slots = run.config.model.max_speakers
    crowd = conv("crowd", n=slots + 4, speakers=[f"S{i}" for i in range(slots + 4)])
    inp = write_jsonl(tmp_path / "crowd.jsonl", [crowd])
    with caplog.at_level(logging.WARNING):
        predict_file(None, inp, run=run, plots=False, stream=io.StringIO())
    assert f"{slots + 4} speakers but the model has {slots} speaker slots" in caplog.text


def test_ctrl_c_keeps_output_valid_and_rerun_resumes(cache, tmp_path, monkeypatch, capsys):
    convs = [conv(f"c{i}", n=5) for i in range(6)]
    inp = write_jsonl(tmp_path / "in.jsonl", convs)
    out = tmp_path / "pred.jsonl"
    argv = ["predict", str(cache["run"]), str(inp), "--no-plots", "--quiet", "--output", str(out),
            "--batch-utterances", "5", "--json"]
    calls = []
    original = TrainedRun.predict

    def interrupted(self, conversations, **kw):
        calls.append(len(conversations))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, conversations, **kw)
    monkeypatch.setattr(TrainedRun, "predict", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err == "merc predict: interrupted\n"
    first = out.read_text()
    assert [strict_json(x)["conversation_id"] for x in first.splitlines()] == ["c0", "c1"]
    monkeypatch.setattr(TrainedRun, "predict", original)
    with open(out, "a") as f:
        f.write('{"conversation_id": "c2", "utter')  # a line cut by a crash
    assert main(argv) == 0
    text = out.read_text()
    assert text.startswith(first)
    assert [strict_json(x)["conversation_id"] for x in text.splitlines()] == [f"c{i}" for i in range(6)]
    # the same --output for another input is refused, not mixed
    other = write_jsonl(tmp_path / "other.jsonl", [conv("zz")])
    capsys.readouterr()
    assert main(["predict", str(cache["run"]), str(other), "--no-plots", "--quiet", "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["predict", str(cache["run"]), str(other), "--no-plots", "--quiet", "--output", str(out),
                 "--overwrite"]) == 0
    assert [strict_json(x)["conversation_id"] for x in out.read_text().splitlines()] == ["zz"]


def test_predict_shows_progress(cache, tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", [conv("c1")])
    assert main(["predict", str(cache["run"]), str(inp), "--no-plots"]) == 0
    assert "predict" in capsys.readouterr().err
    assert main(["predict", str(cache["run"]), str(inp), "--no-plots", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- clean exits

def test_version(capsys):
    from merc import __version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"merc {__version__}"


def test_ctrl_c_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    import merc.data.cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(merc.data.cli, "stats_command", interrupted)
    assert main(["data", "stats", "--dataset", "jsonl", "--data-dir", str(tmp_path)]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err == "merc data: interrupted\n"


@pytest.mark.slow
def test_closed_pipe_exits_quietly(cache, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [conv(f"c{i}", n=4) for i in range(300)])
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import toy_corpus; from merc.cli import main; "
            f"sys.exit(main(['predict', {str(cache['run'])!r}, {str(inp)!r}, '--json', '--no-plots', '--quiet', "
            "'--batch-utterances', '8']))")
    env = {**os.environ, "MERC_CACHE": str(cache["root"] / "cache")}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert strict_json(first)["conversation_id"] == "c0"
    assert err == "" and proc.returncode == 141, (proc.returncode, err)


# ---------------------------------------------------------------- CLI consistency

def _subparsers(parser, name="merc"):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for n, p in a.choices.items():
                if any(isinstance(b, argparse._SubParsersAction) for b in p._actions):
                    yield from _subparsers(p, f"{name} {n}")
                else:
                    yield f"{name} {n}", p


def test_every_flag_has_help_with_its_default():
    for name, p in _subparsers(build_parser()):
        assert issubclass(p.formatter_class, argparse.ArgumentDefaultsHelpFormatter), name
        for a in p._actions:
            if a.option_strings and a.dest != "help" and a.help != argparse.SUPPRESS:
                assert a.help, f"{name} {a.option_strings[0]} has no help"
        fmt = p.formatter_class(name)
        for a in p._actions:
            if a.option_strings and a.dest != "help" and a.help != argparse.SUPPRESS:
                shown = fmt._get_help_string(a)
                # its default (appended, or said by the help itself: once), "(required)", or (None defaults)
                # what leaving it out means
                assert re.search(r"\bdefault\b|\(required\)$|None:|omitted|not given", shown), (name, a.dest, shown)
                assert "(default: None)" not in shown or "None:" not in a.help, (name, a.dest, shown)


def test_one_split_spelling_and_quiet_everywhere():
    parser = build_parser()
    for name, p in _subparsers(parser):
        visible = [s for a in p._actions if a.help != argparse.SUPPRESS for s in a.option_strings]
        assert not [s for s in visible if "split" in s and s != "--split"], name
    args = parser.parse_args(["qc", "--dataset", "jsonl", "--data-dir", "d", "--out", "o", "--splits", "dev"])
    assert args.splits == "dev"  # the old spelling still works
    qc = ["qc", "--dataset", "jsonl", "--data-dir", "d", "--out", "o"]
    assert parser.parse_args([*qc, "--split", "dev"]).splits == "dev"
    for argv in (["train", "--dataset", "jsonl", "--data-dir", "d", "--out", "o"], ["evaluate", "r"],
                 ["predict", "r", "i.txt"], ["qc", "--dataset", "jsonl", "--data-dir", "d", "--out", "o"], ["demo"],
                 ["encoder", "finetune", "--dataset", "jsonl", "--data-dir", "d", "--out", "o"]):
        assert parser.parse_args([*argv, "--quiet"]).quiet is True, argv


def test_resume_of_a_missing_output_is_not_an_error(cache, tmp_path):
    """--output to a new file starts it; an empty existing file is simply reused."""
    inp = write_jsonl(tmp_path / "in.jsonl", [conv("c1")])
    (tmp_path / "empty.jsonl").write_text("")
    for name in ("new.jsonl", "empty.jsonl"):
        predict_file(cache["run"], inp, plots=False, stream=io.StringIO(), output=tmp_path / name)
        assert [strict_json(x)["conversation_id"] for x in (tmp_path / name).read_text().splitlines()] == ["c1"]
    with pytest.raises(OutputExistsError):
        (tmp_path / "junk.jsonl").write_text("not json\n")
        predict_file(cache["run"], inp, plots=False, stream=io.StringIO(), output=tmp_path / "junk.jsonl")


def test_training_options_agree_between_train_and_experiments():
    """`merc train` and `merc experiment ablation|transfer` declare the optimisation flags with the same choices
    and defaults (the experiments once lacked `--class-weights effective`, and `merc train` `--weight-decay`)."""
    parsers = dict(_subparsers(build_parser()))
    train = parsers["merc train"]

    def spec(p, flag):
        a = next(a for a in p._actions if flag in a.option_strings)
        return (tuple(a.choices) if a.choices else None, a.default, a.type)

    for name in ("merc experiment ablation", "merc experiment transfer"):
        for flag in ("--class-weights", "--weight-decay", "--lr", "--epochs", "--patience", "--batch-size"):
            assert spec(parsers[name], flag) == spec(train, flag), (name, flag)
