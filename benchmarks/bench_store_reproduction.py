"""Issue 26: do the features, and the figures that depend on them, survive the one feature store?

Compares a run (and its feature cache) made with the code before the change (7bae888: text in the split-keyed
cache ``$MERC_CACHE/features``) with the same command after it (text in ``$MERC_CACHE/store``, like every
modality): the text rows bit for bit, per split, and the runs' test weighted F1. Also reads the timing lines of
two ``make test-fast`` logs. Writes benchmarks/results/house/store_reproduction.md and .json.

    git worktree add ../before 7bae888
    (cd ../before && MERC_CACHE=/tmp/before/cache merc train <ARGS> --out /tmp/before/run)
    MERC_CACHE=/tmp/after/cache merc train <ARGS> --out /tmp/after/run
    .venv/bin/python benchmarks/bench_store_reproduction.py --cell "MELD, frozen MiniLM + Mamba, seed 0" \\
        --before-cache /tmp/before/cache --after-cache /tmp/after/cache \\
        --before-run /tmp/before/run --after-run /tmp/after/run --train-args "<ARGS>"

Each ``--cell`` adds (or replaces) one cell in the JSON; the Markdown is rewritten from all cells.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_write_text, machine, results_dir, write_json  # noqa: E402

from merc.io import provenance, provenance_markdown  # noqa: E402

OUT = results_dir("house")


def text_rows(before: Path, after: Path, encoder: str) -> dict:
    """Per split: the old cache's rows vs the store's, for the text encoder ``encoder``."""
    from safetensors.numpy import load_file
    out = {}
    for old in sorted(before.glob(f"features/*/*/{encoder}-*")):
        split = old.parent.name
        new = next((p for p in after.glob(f"store/*/{split}/text/{encoder}-*") if (p / "index.json").is_file()), None)
        if new is None or not (old / "meta.json").is_file():
            out[split] = {"status": "not in both caches"}
            continue
        mo, mn = json.loads((old / "meta.json").read_text()), json.loads((new / "index.json").read_text())
        Xo, Xn = load_file(str(old / "features.safetensors"))["X"], load_file(str(new / "rows.safetensors"))["X"]
        same_ids = mo["ids"] == mn["ids"]
        out[split] = {"n": len(mo["ids"]), "same_ids": same_ids, "fingerprint_before": mo["fingerprint"],
                      "fingerprint_after": mn["fingerprint"],
                      "bit_identical": bool(same_ids and np.array_equal(Xo, Xn)),
                      "max_abs_diff": float(np.abs(Xo - Xn).max()) if same_ids else None,
                      "encode_seconds_before": mo.get("seconds"), "encode_seconds_after": mn.get("seconds")}
    return out


def run_scores(run: Path | None) -> dict | None:
    if run is None or not (run / "metrics.json").is_file():
        return None
    m = json.loads((run / "metrics.json").read_text())
    return {k: m[s]["weighted_f1"] for k, s in (("dev_weighted_f1", "dev"), ("test_weighted_f1", "test"))}


def test_log(path: Path | None) -> dict | None:
    """``N passed … in S s`` and ``real XmY s`` of a timed pytest log."""
    if path is None or not path.is_file():
        return None
    text = path.read_text(errors="replace")
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*? in [\d.]+s.*?)\s*=*$", text, flags=re.M)
    real = re.findall(r"^real\s+(\d+)m([\d.]+)s", text, flags=re.M)
    return {"summary": summary[-1] if summary else None,
            "wall_seconds": round(int(real[-1][0]) * 60 + float(real[-1][1]), 1) if real else None}


def fmt(s: dict | None) -> str:
    if s is None:
        return "not finished"
    return f"dev {100 * s['dev_weighted_f1']:.2f}, test {100 * s['test_weighted_f1']:.2f}"


def report(data: dict) -> str:
    lines = ["# Issue 26: features and figures before / after the one feature store", "",
             provenance_markdown(data["provenance"]), "",
             "Before: commit 7bae888 (text features in the split-keyed cache `$MERC_CACHE/features`). After: text "
             "through the content-keyed feature store like every modality. Same command, separate `$MERC_CACHE` "
             "for each side, so the after side encoded everything anew.", ""]
    for name, cell in data["cells"].items():
        lines += [f"## {name}", "", f"- command: `merc train {cell['train_args']}`", ""]
        lines += ["| split | utterances | text rows bit-identical | max abs diff | fingerprint (before = after) "
                  "| encode s before / after |", "|---|---:|---|---:|---|---:|"]
        for split, r in cell["text_rows"].items():
            if "n" not in r:
                lines.append(f"| {split} | | {r['status']} | | | |")
                continue
            fp = r["fingerprint_before"] if r["fingerprint_before"] == r["fingerprint_after"] else \
                f"{r['fingerprint_before']} ≠ {r['fingerprint_after']}"
            lines.append(f"| {split} | {r['n']} | {'yes' if r['bit_identical'] else '**no**'} | "
                         f"{r['max_abs_diff']:.3g} | `{fp}` | {r['encode_seconds_before']} / "
                         f"{r['encode_seconds_after']} |")
        b, a = cell["before"], cell["after"]
        same = b is not None and a is not None and b["test_weighted_f1"] == a["test_weighted_f1"]
        lines += ["", f"- weighted F1 (%), before: {fmt(b)}", f"- weighted F1 (%), after: {fmt(a)}"
                  + (" (identical)" if same else ""), ""]
    t = data.get("tests") or {}
    if t:
        lines += ["## `make test-fast` (ruff + the tests not marked slow, two xdist workers)", "",
                  "| tree | result | wall s |", "|---|---|---:|"]
        for k, v in t.items():
            if v:
                lines.append(f"| {k} | {v['summary']} | {v['wall_seconds']} |")
        lines += ["", "Both runs at the same time on the same shared machine (load average 12–15 on 2 cores), "
                  "so under the same conditions; the branch adds tests (store, old runs, honest failures).", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", required=True, help="name of the figure compared")
    p.add_argument("--train-args", required=True, help="the merc train arguments both sides ran (without --out)")
    p.add_argument("--before-cache", type=Path, required=True)
    p.add_argument("--after-cache", type=Path, required=True)
    p.add_argument("--before-run", type=Path)
    p.add_argument("--after-run", type=Path)
    p.add_argument("--text-encoder", default="minilm")
    p.add_argument("--tests-before", type=Path, help="timed log of make test-fast before")
    p.add_argument("--tests-after", type=Path, help="timed log of make test-fast after")
    args = p.parse_args()
    path = OUT / "store_reproduction.json"
    data = json.loads(path.read_text()) if path.is_file() else {"cells": {}}
    data["cells"][args.cell] = {"train_args": args.train_args,
                                "text_rows": text_rows(args.before_cache, args.after_cache, args.text_encoder),
                                "before": run_scores(args.before_run), "after": run_scores(args.after_run)}
    if args.tests_before or args.tests_after:
        data["tests"] = {"before (main without this branch)": test_log(args.tests_before),
                         "after (this branch on the same main)": test_log(args.tests_after)}
    data["provenance"] = {**provenance(), "machine_summary": machine()}
    write_json(path, data)
    atomic_write_text(OUT / "store_reproduction.md", report(data))
    print(report(data))


if __name__ == "__main__":
    main()
