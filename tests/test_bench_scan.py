"""benchmarks/bench_scan.py: its report from tiny fake timings (a benchmark is never a timed unit test)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_report_reads_the_medians_and_ratios(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_scan

    def timing(before, after, theirs):
        return {k: {"median_s": v, "times_s": [v]} for k, v in zip(bench_scan.VARIANTS, (before, after, theirs))}
    row = {"shape": [8, 110, 256], "load_before": [3.0, 2, 1], "load_after": [4.5, 2, 1],
           "forward_backward": timing(2.0, 0.5, 1.5), "forward": timing(0.8, 0.2, 0.6),
           "max_abs_diff_output": 1e-7, "max_abs_diff_input_grad": 2e-8}
    result = {"command": "bench_scan.py", "machine": "cpu", "threads": 1, "provenance": {"git_commit": "abc"},
              "before_ref": "main", "before_commit": "def", "mambapy_version": "1.2.0", "reps": 1, "rows": [row]}
    out = tmp_path / "r.md"
    bench_scan.write_markdown(out, result)
    text = out.read_text()
    assert "| (8, 110, 256) | 2.0000 | 0.5000 | 1.5000 | 4.00× | 3.00× | 3.0 → 4.5 |" in text
    assert "| (8, 110, 256) | 0.8000 | 0.2000 | 0.6000 | 3.00× |" in text
    assert "Shared, loaded machine" in text and "1.00e-07 / 2.00e-08" in text
