"""benchmarks/bench_text_levers.py: the report from a tiny fake result set (never run on MELD in tests)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_text_levers.py"
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_text_levers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _seed(seed: int, dev: float, test: float, fear: float) -> dict:
    per_class = {lab: 0.5 for lab in LABELS} | {"fear": fear, "disgust": 0.1}
    return {"seed": seed, "dev": {"weighted_f1": dev, "accuracy": dev, "macro_f1": dev / 2},
            "test": {"weighted_f1": test, "accuracy": test + 0.02, "macro_f1": test / 2, "per_class_f1": per_class},
            "train_seconds": 60.0, "best_epoch": 3}


def _cell(name: str, rows: list[dict]) -> dict:
    return {"cell": name, "per_seed": rows, "wall_seconds": 120.0,
            "provenance": {"git_commit": "abc", "git_dirty": False}}


def test_report_marks_missing_cells_and_keeps_the_ensemble_apart(bench, tmp_path):
    cells = {
        "ce": _cell("ce", [_seed(0, 0.60, 0.62, 0.10), _seed(1, 0.62, 0.64, 0.12)]),
        # focal: better on test, worse on dev -> not kept (decided on dev)
        "focal": _cell("focal", [_seed(0, 0.58, 0.66, 0.30), _seed(1, 0.59, 0.66, 0.20)]),
        "ensemble": {"cell": "ensemble", "lever": "ce",
                     "dev": {"weighted_f1": 0.63, "accuracy": 0.6, "macro_f1": 0.3, "per_class_f1": {}, "n": 9},
                     "test": {"weighted_f1": 0.655, "accuracy": 0.67, "macro_f1": 0.33, "n": 9, "n_members": 2,
                              "per_class_f1": {lab: 0.4 for lab in LABELS}},
                     "single_model_test": {"weighted_f1": {"mean": 0.63, "std": 0.01414, "n": 2}}},
    }
    assert bench.best_lever(cells) == "ce"
    text = bench.report(cells, "fake", "mpnet", 2, 1, tmp_path, "test machine")
    md = (tmp_path / "text_levers_fake.md").read_text()
    assert md == text
    rows: dict[str, str] = {}  # the first table (single models); the per-class table repeats the lever names
    for line in md.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split("|")[1].strip().split(":")[0], line)
    assert "63.00 ± 1.41" in rows["ce"] and "baseline" in rows["ce"]                  # test wF1 mean ± std
    assert "11.00 ± 1.41" in rows["ce"]                                                # fear F1
    assert "+3.00 ± 1.00" in rows["focal"] and "no: does not help on dev" in rows["focal"]
    assert "not run" in rows["cb"] and "not run" in rows["supcon"]
    ensemble_part = md.split("## Seed ensemble")[1].split("## `merc train --search`")[0]
    assert "| ce × 2 | 65.50 | 67.00 | 33.00 |" in ensemble_part
    assert "as single models: test weighted F1 63.00 ± 1.41" in ensemble_part
    assert md.split("## `merc train --search`")[1].split("## Provenance")[0].strip().endswith("not run")
    data = json.loads((tmp_path / "text_levers_fake.json").read_text())
    assert data["best_lever_by_dev"] == "ce" and set(data["cells"]) == {"ce", "focal", "ensemble"}
    assert data["summaries"]["focal"]["per_class"]["fear"]["mean"] == pytest.approx(0.25)


def test_report_with_no_cells_says_not_run_everywhere(bench, tmp_path):
    md = bench.report({}, "empty", "mpnet", 5, 2, tmp_path, "m")
    assert md.count("not run") >= len(bench.LEVERS) + 2
