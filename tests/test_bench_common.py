"""benchmarks/_common.py: results files keep no machine paths; every results file sits in a study folder."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLACES = [("/srv/merc", ""), ("/srv/cache/merc", "$MERC_CACHE"), ("/tmp", "$TMPDIR"), ("/home/ana", "~")]


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _common
    return _common


def test_portable_rewrites_machine_paths_only(common):
    text = ("`/srv/merc/.venv/bin/python benchmarks/x.py --data-dir /srv/data/meld --text-encoder /srv/ft/a "
            "--out /tmp/runs/x` cache /srv/cache/merc/features/meld, home /home/ana/w, repo /srv/merc, "
            "espeak /usr/lib/espeak-ng-data; marker </s>, dev/test, 1/2, https://github.com/a/b")
    assert common.portable(text, PLACES) == (
        "`.venv/bin/python benchmarks/x.py --data-dir ../data/meld --text-encoder ../ft/a "
        "--out $TMPDIR/runs/x` cache $MERC_CACHE/features/meld, home ~/w, repo ., "
        "espeak /usr/lib/espeak-ng-data; marker </s>, dev/test, 1/2, https://github.com/a/b")
    obj = {"cmd": ["--out", "/tmp/a/b"], "/srv/merc/k": 1, "n": 2.5}
    assert common.portable(obj, PLACES) == {"cmd": ["--out", "$TMPDIR/a/b"], "k": 1, "n": 2.5}


def test_writers_make_paths_portable(common, tmp_path):
    path = common.write_json(tmp_path / "r.json", {"run": str(common.ROOT / "runs" / "x")})
    assert json.loads(path.read_text()) == {"run": "runs/x"}
    md = common.atomic_write_text(tmp_path / "r.md", f"data: {common.ROOT}/benchmarks/results\n")
    assert md.read_text() == "data: benchmarks/results\n"


def test_results_live_in_study_folders_without_machine_paths():
    results = ROOT / "benchmarks" / "results"
    assert not [p.name for p in results.iterdir() if p.is_file()], "results files belong in a study folder"
    machine = re.compile(r"(?<![\w.$~/:<])/(work|root|home|tmp|Users)/")
    bad = [str(p.relative_to(results)) for p in results.rglob("*") if p.is_file() and p.suffix in (".md", ".json")
           and machine.search(p.read_text(encoding="utf-8"))]
    assert not bad, f"absolute machine paths in {bad[:5]}"
