"""merc.training.ablation: the documented variants, the mean ± std table, resumable cells; the CLI on a toy corpus."""
from __future__ import annotations

import json

import numpy as np
import pytest

from merc.models.matav import MatavConfig, MatavModel
from merc.training.ablation import VARIANTS, ablation_configs, run_ablation


def test_variants_build_the_documented_models():
    base = MatavConfig(input_dims={"text": 4, "audio": 3}, d_model=8, n_heads=2, d_mamba=8, n_cross_layers=1)
    cfgs = ablation_configs(base)
    assert set(cfgs) == {"full", "no_mamba", "no_mec"} == set(VARIANTS)
    assert cfgs["full"] == base
    assert not cfgs["no_mamba"].use_mamba and cfgs["no_mamba"].mec_weight == base.mec_weight
    assert cfgs["no_mec"].mec_weight == 0.0 and cfgs["no_mec"].use_mamba
    assert MatavModel(cfgs["no_mamba"]).context is None and MatavModel(cfgs["no_mec"]).queues is None


def test_table_mean_std_and_resume(tmp_path):
    calls = []

    def train_one(variant, config, seed):
        calls.append((variant, seed))
        base = {"full": 0.6, "no_mamba": 0.5, "no_mec": 0.55}[variant]
        return {"dev": {"weighted_f1": base + 0.01 * seed, "accuracy": 0.7, "macro_f1": 0.3},
                "test": {"weighted_f1": base + 0.02 * seed, "accuracy": 0.71, "macro_f1": 0.31}}

    base = MatavConfig(input_dims={"text": 4}, d_model=8, n_heads=2)
    result = run_ablation(train_one, base, [0, 1, 2], tmp_path)
    assert len(calls) == 9
    t = result["table"]
    assert t["full"]["test"]["weighted_f1"]["mean"] == pytest.approx(0.62)
    assert t["no_mamba"]["dev"]["weighted_f1"]["std"] == pytest.approx(np.std([0.5, 0.51, 0.52], ddof=1))
    assert t["no_mec"]["test"]["accuracy"]["n"] == 3
    md = (tmp_path / "ablation.md").read_text()
    assert "| w/o Mamba (--no-mamba) (n=3) | 51.00 ± 1.00 |" in md and "62.00 ± 2.00" in md
    assert json.loads((tmp_path / "ablation.json").read_text())["table"] == json.loads(json.dumps(t))
    cell = json.loads((tmp_path / "cells" / "no_mamba_seed1.json").read_text())
    assert cell["config"]["use_mamba"] is False
    (tmp_path / "cells" / "no_mec_seed2.json").unlink()                 # an interrupted ablation
    calls.clear()
    assert run_ablation(train_one, base, [0, 1, 2], tmp_path)["table"] == t
    assert calls == [("no_mec", 2)]


@pytest.mark.slow
def test_experiment_ablation_cli_on_a_toy_text_corpus(tmp_path, monkeypatch, capsys):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from toy_corpus import conversations  # the toy corpus and its registered "toy" encoder

    from merc.cli import main
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 30), ("dev", 10), ("test", 10)):
        convs = conversations(n, rng, split, lengths=(4, 9))
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(c) for c in convs) + "\n")
    out = tmp_path / "abl"
    assert main(["experiment", "ablation", "--dataset", "jsonl", "--data-dir", str(data), "--text-encoder", "toy",
                 "--seeds", "1", "--epochs", "2", "--d-model", "8", "--heads", "2", "--cross-layers", "1",
                 "--quiet", "--out", str(out)]) == 0
    result = json.loads((out / "ablation.json").read_text())
    assert set(result["table"]) == {"full", "no_mamba", "no_mec"} and result["seeds"] == [0]
    for v in ("full", "no_mamba", "no_mec"):
        for s in (0,):
            metrics = json.loads((out / v / f"seed_{s}" / "metrics.json").read_text())
            assert 0 <= metrics["test"]["weighted_f1"] <= 1
        assert result["table"][v]["test"]["weighted_f1"]["n"] == 1
    cfg = json.loads((out / "no_mamba" / "seed_0" / "config.json").read_text())
    assert cfg["model"]["kind"] == "matav" and cfg["model"]["use_mamba"] is False
    assert "MaTAV ablation" in capsys.readouterr().out


def test_matav_options_and_switches():
    import argparse

    from merc.training.flags import add_matav_flags, matav_config_from_args
    p = argparse.ArgumentParser()
    add_matav_flags(p)
    assert matav_config_from_args(p.parse_args([])) == MatavConfig()
    cfg = matav_config_from_args(p.parse_args(["--no-mamba", "--no-mec", "--attention", "dialogue", "--d-model", "64"]))
    assert (cfg.use_mamba, cfg.mec_weight, cfg.attention, cfg.d_model, cfg.d_mamba) == (False, 0.0, "dialogue", 64, 64)
