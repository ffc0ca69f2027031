"""``merc train --search`` (merc.training.search): the kept configuration is the dev-best, the test split is never
encoded during the search, the budget stops it with a note, finished configurations survive a kill, and the
dev-best is then trained as the normal run in --out."""
from __future__ import annotations

import argparse
import json

import pytest
from toy_corpus import TINY, write_corpus

import merc.training.features as features_mod
from merc.cli import main
from merc.errors import ConfigError
from merc.models.dialogue import DialogueConfig
from merc.training.search import DEFAULT_GRID, candidates, default_candidates, read_grid, run_search
from merc.training.trainer import TrainConfig


def _fake_train(scores: dict[str, float], calls: list[str]):
    """A train_fn returning the given dev weighted F1 per candidate name (no training)."""
    def train_fn(cand, mc, tc, out):
        calls.append(cand.name)
        ms = {"mean": scores[cand.name], "std": 0.0, "n": 1}
        return {"seeds": [tc.seed], "dev": {"weighted_f1": ms, "accuracy": ms, "macro_f1": ms}}
    return train_fn


GRID = [{"name": "base"}, {"name": "fast", "lr": 1e-3}, {"name": "wide", "d_model": 16, "dropout": 0.2}]


def test_keeps_the_dev_best_and_resumes_without_retraining(tmp_path):
    cands = candidates(GRID, DialogueConfig())
    assert cands[2].model == {"d_model": 16, "dropout": 0.2} and cands[1].train == {"lr": 1e-3}
    calls: list[str] = []
    scores = {"base": 0.50, "fast": 0.61, "wide": 0.58}
    record = run_search(cands, DialogueConfig(), TrainConfig(), tmp_path, _fake_train(scores, calls), resume=True)
    assert record["best"] == "fast" and record["best_overrides"] == {"lr": 1e-3}
    assert calls == ["base", "fast", "wide"]
    assert json.loads((tmp_path / "search.json").read_text())["best"] == "fast"
    md = (tmp_path / "search.md").read_text()
    assert "| fast | lr=0.001 | 61.00 |" in md and "**kept**" in md.split("| fast |")[1].splitlines()[0]
    # a kill after two configurations: only the missing one is trained again
    (tmp_path / "search" / "wide.json").unlink()
    calls.clear()
    again = run_search(cands, DialogueConfig(), TrainConfig(), tmp_path, _fake_train(scores, calls), resume=True)
    assert calls == ["wide"] and again["best"] == "fast"
    # other base settings: the finished results are not silently reused
    with pytest.raises(Exception, match="other settings"):
        run_search(cands, DialogueConfig(), TrainConfig(lr=1.0), tmp_path, _fake_train(scores, []), resume=True)


def test_budget_stops_early_with_a_note(tmp_path):
    cands = candidates(GRID, DialogueConfig())
    calls: list[str] = []
    record = run_search(cands, DialogueConfig(), TrainConfig(), tmp_path,
                        _fake_train({"base": 0.5, "fast": 0.9, "wide": 0.9}, calls), budget_minutes=0.0)
    assert calls == ["base"] and record["best"] == "base"  # the first always runs
    assert [r["status"] for r in record["rows"]] == ["done", "not run (budget)", "not run (budget)"]
    md = (tmp_path / "search.md").read_text()
    assert "not run (budget)" in md and "budget of 0 min reached after 1 of 3" in md


def test_grids_are_checked_and_the_default_grid_is_generic(tmp_path):
    names = [c.name for c in default_candidates(DialogueConfig())]
    assert len(names) == len(DEFAULT_GRID) + 1 == len(set(names)) and names[0] == "defaults"
    # the other fusion than the command line's is always among them (merc.training.defaults)
    residual = default_candidates(DialogueConfig())[-1]
    assert residual.name == "fusion-residual" and residual.model == {"utterance_logits": True}
    assert residual.train == {"probe_init": True, "min_steps": 600}
    plain = default_candidates(DialogueConfig(utterance_logits=True))[-1]
    assert plain.name == "fusion-plain" and plain.train == {"probe_init": False, "min_steps": 0}
    assert all(set(g) <= {"lr", "dropout", "d_model", "n_layers", "class_weights", "loss", "focal_gamma",
                          "supcon_weight"} for g in DEFAULT_GRID)  # training knobs only: no labels, no speakers
    bad = tmp_path / "grid.json"
    bad.write_text(json.dumps([{}, {"learning_rate": 0.1}]))
    with pytest.raises(ConfigError, match=r"grid.json: entry 1 .*learning_rate"):
        read_grid(bad, DialogueConfig())
    bad.write_text(json.dumps([{"seed": 3}]))
    with pytest.raises(ConfigError, match="seed"):
        read_grid(bad, DialogueConfig())
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_grid(bad, DialogueConfig())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("search") / "corpus")


def test_search_never_encodes_the_test_split(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    real = features_mod.encoder_features
    seen: list[str] = []

    def guarded(corpus_, split, *a, **k):
        if split == "test":
            raise AssertionError("the search read the test split")
        seen.append(split)
        return real(corpus_, split, *a, **k)

    monkeypatch.setattr(features_mod, "encoder_features", guarded)
    from merc.data import load_corpus
    from merc.training.search_cli import search_settings
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{"name": "slow", "lr": 1e-5}, {"name": "quick", "lr": 3e-3}]))
    args = argparse.Namespace(out=str(tmp_path / "out"), search_grid=str(grid), search_budget_minutes=None,
                              search_seeds=1)
    common = dict(dataset="jsonl", data_dir=str(corpus), media_dir=None, modalities=["text"],
                  encoders={"text": ["toy-levers"]}, modality_dropout={}, text_encoder="toy-levers", progress=False,
                  qc_dir=None, adapters={}, tune_adapters=False, corpus=load_corpus("jsonl", str(corpus)))
    mc = DialogueConfig(kind="gru", d_model=8, n_layers=1, dropout=0.0)
    tc = TrainConfig(epochs=3, batch_size=8)
    mc2, tc2 = search_settings(args, mc, tc, common)
    assert set(seen) == {"train", "dev"}
    record = json.loads((tmp_path / "out" / "search.json").read_text())
    rows = {r["name"]: r["dev_weighted_f1"]["mean"] for r in record["rows"]}
    assert record["best"] == max(rows, key=rows.get)
    assert tc2.lr == {"slow": 1e-5, "quick": 3e-3}[record["best"]] and mc2 == mc
    for name in rows:  # each configuration's own runs: dev scores only
        metrics = json.loads((tmp_path / "out" / "search" / name / "metrics.json").read_text())
        assert "dev" in metrics and "test" not in metrics


def test_cli_search_then_trains_the_dev_best_as_the_run(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{"name": "slow", "lr": 1e-5}, {"name": "quick", "lr": 3e-3, "loss": "supcon"}]))
    out = tmp_path / "run"
    argv = ["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", "gru", *TINY, "--search",
            "--search-grid", str(grid), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| configuration |" in printed and "**kept**" in printed
    record = json.loads((out / "search.json").read_text())
    config = json.loads((out / "config.json").read_text())
    best = {"slow": (1e-5, "ce"), "quick": (3e-3, "supcon")}[record["best"]]
    assert (config["train"]["lr"], config["train"]["loss"]) == best
    assert "test" in json.loads((out / "metrics.json").read_text())  # the kept run is tested once, as usual
    assert main(["evaluate", str(out), "--split", "dev", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] > 0
    assert main(argv) == 2  # an existing search needs --resume (or --overwrite)
    assert "--resume" in capsys.readouterr().err
    stamps = {p: p.stat().st_mtime_ns for p in (out / "model.safetensors", *(out / "search").glob("*.json"))}
    assert main(argv + ["--resume"]) == 0  # everything finished: nothing retrained, same choice
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((out / "search.json").read_text())["best"] == record["best"]
