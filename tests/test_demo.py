"""`merc demo` on the bundled model: runs offline, labels the example conversations, writes timelines."""
from __future__ import annotations

import json

import pytest

from merc.cli import main
from merc.demo import demo_paths

pytestmark = pytest.mark.slow  # loads the bundled model and the MiniLM encoder (~30 s)


def test_demo_runs_and_writes_timelines(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    run_dir, conversations = demo_paths()
    ids = [json.loads(line)["conversation_id"] for line in conversations.open()]
    labels = json.loads((run_dir / "labels.json").read_text())
    for cid in ids:
        assert cid in out
        assert (tmp_path / f"{cid}_timeline.png").stat().st_size > 10_000
    rows = [line for line in out.splitlines() if "│" in line]
    assert len(rows) == sum(len(json.loads(line)["utterances"]) for line in conversations.open())
    assert all(line.split("│")[2].split()[0] in labels for line in rows)


def test_bundled_model_was_selected_on_dev():
    run_dir, _ = demo_paths()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = max(metrics["history"], key=lambda r: r["dev_weighted_f1"])
    assert best["epoch"] == metrics["best_epoch"]
    assert metrics["dev"]["weighted_f1"] == best["dev_weighted_f1"]
