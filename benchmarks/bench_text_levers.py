"""Issue 15, dialogue-model levers on MELD text: for one cached text encoder, Mamba trained with

- ``ce``: cross-entropy (the baseline: today's defaults),
- ``focal``: focal loss (γ = 2),
- ``cb``: cross-entropy with class-balanced weights (effective number of samples, β = 0.999),
- ``supcon``: cross-entropy + 0.1 · supervised contrastive term over the utterance representations,

each over K seeds (train, early stopping on dev, the dev-selected checkpoint tested once); then the **seed
ensemble** of the lever with the best mean *dev* weighted F1 (mean of its seeds' probabilities), reported in
a table of its own; and ``merc train --search`` (default grid, dev only) with its table and the test figures
of the configuration it kept (K seeds). Reported per cell: test weighted F1, accuracy, macro F1 and per-class
F1 (fear and disgust first), dev weighted F1, training time.

    nice .venv/bin/python benchmarks/bench_text_levers.py --text-encoder mpnet --seeds 5 --jobs 2
    nice .venv/bin/python benchmarks/bench_text_levers.py --text-encoder mpnet-meld=../ft/mpnet-meld --seeds 5

``--text-encoder`` is a name (``mpnet``, ``minilm``) or ``label=path`` (a fine-tuned folder; ``label=path1,path2``
concatenates two encoders, as ``merc train --text-encoder path1,path2``); its features
must be cached (or are encoded once, then cached). Writes ``benchmarks/results/text_levers/text_levers_<label>.md`` and
``.json``; a cell not finished is shown as "not run". Resumable: each finished cell is saved as
``<results-dir>/text_levers_<label>/<cell>.json`` and skipped by a rerun; a killed cell keeps its finished
seeds (runs in ``$MERC_BENCH_RUNS``, default /tmp/merc-bench-runs). ``--report-only`` rewrites the report
from the saved cells. ``--data-dir`` / ``--dataset`` / ``--results-dir`` point it at another corpus.
"""
from __future__ import annotations

import argparse
import json
import os
import sys  # noqa: E402
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from merc.io import dirty_outside_results, provenance, provenance_markdown

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_write_text, machine, pm, portable, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "text_levers"
DATA = ROOT.parent / "shared" / "data" / "meld"
LEVERS: dict[str, dict[str, Any]] = {
    "ce": {},
    "focal": {"loss": "focal", "focal_gamma": 2.0},
    "cb": {"class_weights": "effective", "cb_beta": 0.999},
    "supcon": {"loss": "supcon", "supcon_weight": 0.1, "supcon_temperature": 0.1},
    "cb9999": {"class_weights": "effective", "cb_beta": 0.9999},  # not in the default cells
}
DESCRIBE = {"ce": "cross-entropy (baseline)", "focal": "focal loss, γ = 2",
            "cb": "class-balanced CE (effective number, β = 0.999)", "supcon": "CE + 0.1 · SupCon (τ = 0.1)",
            "cb9999": "class-balanced CE, β = 0.9999 (nearer inverse frequency)"}
RARE = ("fear", "disgust")
HEAD = ("weighted_f1", "accuracy", "macro_f1")


def parse_encoder(spec: str) -> tuple[str, str]:
    """``mpnet`` -> (mpnet, mpnet); ``mpnet-meld=/path`` -> (mpnet-meld, /path)."""
    label, _, path = spec.partition("=")
    return label, path or label


def runs_dir() -> Path:
    return Path(os.environ.get("MERC_BENCH_RUNS", "/tmp/merc-bench-runs"))


def seed_metrics(run_dir: Path, seeds: list[int]) -> list[dict]:
    out = []
    for k in seeds:
        f = run_dir / f"seed_{k}" / "metrics.json" if len(seeds) > 1 else run_dir / "metrics.json"
        m = json.loads(f.read_text())
        out.append({"seed": k, "dev": {h: m["dev"][h] for h in HEAD},
                    "test": {**{h: m["test"][h] for h in HEAD}, "per_class_f1": m["test"]["per_class_f1"]},
                    "train_seconds": m["train_seconds"], "best_epoch": m["best_epoch"]})
    return out


def _settings(hp: dict, lever: dict):
    from merc.models.dialogue import DialogueConfig
    from merc.training.trainer import TrainConfig
    both = {**hp, **lever}
    mc = DialogueConfig(kind="mamba", **{k: v for k, v in both.items() if k in DialogueConfig.__dataclass_fields__})
    tc = TrainConfig(**{k: v for k, v in both.items() if k in TrainConfig.__dataclass_fields__})
    return mc, tc


def lever_cell(lever: str, encoder: str, seeds: int, hp: dict, run_root: Path, dataset: str, data_dir: Path) -> dict:
    """K seeds of mamba with one lever (resumes finished seeds) -> the cell's record."""
    import torch
    torch.set_num_threads(1)
    from merc.training.experiment import run_experiment
    mc, tc = _settings(hp, LEVERS[lever])
    t0 = time.time()
    s = run_experiment(dataset=dataset, data_dir=str(data_dir), out=run_root / lever, model_config=mc,
                       train_config=tc, encoders={"text": encoder.split(",")}, seeds=seeds, progress=False, resume=True,
                       log=lambda *a: None)
    return {"cell": lever, "settings": LEVERS[lever], "hyperparameters": hp, "seeds": s["seeds"],
            "per_seed": seed_metrics(run_root / lever, s["seeds"]), "wall_seconds": time.time() - t0,
            "run_dir": str(run_root / lever), "provenance": provenance()}


def ensemble_cell(lever: str, run_dir: Path, dataset: str, data_dir: Path) -> dict:
    """The seed ensemble of ``run_dir`` (a K-seed run) on dev and test."""
    import torch
    torch.set_num_threads(1)
    from merc.data import load_corpus
    from merc.training.ensemble import EnsembleRun, ensemble_scores
    from merc.training.experiment import corpus_features
    run = EnsembleRun.from_pretrained(run_dir)
    corpus = load_corpus(dataset, str(data_dir))
    feats, _, _ = corpus_features(corpus, ["dev", "test"], run.config.modalities, run.config.encoders,
                                  progress=False)
    out = {s: ensemble_scores(run, corpus[s], feats[s]) for s in ("dev", "test")}
    return {"cell": "ensemble", "lever": lever, "dev": out["dev"]["ensemble"], "test": out["test"]["ensemble"],
            "single_model_test": out["test"]["single_model"], "run_dir": str(run_dir), "provenance": provenance()}


def search_cell(encoder: str, seeds: int, hp: dict, run_root: Path, dataset: str, data_dir: Path,
                budget: float | None) -> dict:
    """``merc train --search`` (default grid) with K seeds for the kept configuration; the loss and class weights
    of ``hp`` (e.g. ``{"class_weights": "effective"}``) are passed on: the grid's starting point."""
    import torch
    torch.set_num_threads(1)
    from merc.cli import main
    mc, tc = _settings(hp, {})
    argv = ["train", "--dataset", dataset, "--data-dir", str(data_dir), "--model", "mamba", "--text-encoder", encoder,
            "--seeds", str(seeds), "--d-model", str(mc.d_model), "--layers", str(mc.n_layers), "--dropout",
            str(mc.dropout), "--lr", str(tc.lr), "--epochs", str(tc.epochs), "--patience", str(tc.patience),
            "--batch-size", str(tc.batch_size), "--class-weights", tc.class_weights, "--loss", tc.loss,
            "--cb-beta", str(tc.cb_beta), "--search", "--resume", "--quiet", "--out", str(run_root / "search")]
    if budget is not None:
        argv += ["--search-budget-minutes", str(budget)]
    t0 = time.time()
    if main(argv) != 0:
        raise RuntimeError(f"merc {' '.join(argv)} failed")
    out = run_root / "search"
    record = json.loads((out / "search.json").read_text())
    kept = json.loads((out / "summary.json").read_text())["seeds"] if seeds > 1 else [tc.seed]
    return {"cell": "search", "command": "merc " + " ".join(argv), "search": record,
            "table": (out / "search.md").read_text(), "per_seed": seed_metrics(out, kept),
            "wall_seconds": time.time() - t0, "run_dir": str(out), "provenance": provenance()}


# the report

def _mean_std(values: list[float]) -> dict[str, float]:
    from merc.metrics import mean_std
    return mean_std(values)


def summarise(cell: dict) -> dict:
    """Mean ± std over the seeds of a lever or search cell: test headline, per class, dev weighted F1."""
    ps = cell["per_seed"]
    labels = list(ps[0]["test"]["per_class_f1"])
    return {"test": {h: _mean_std([p["test"][h] for p in ps]) for h in HEAD},
            "per_class": {lab: _mean_std([p["test"]["per_class_f1"][lab] for p in ps]) for lab in labels},
            "dev_weighted_f1": _mean_std([p["dev"]["weighted_f1"] for p in ps]),
            "train_seconds": sum(p["train_seconds"] for p in ps) / len(ps), "n": len(ps)}


def class_order(labels: list[str]) -> list[str]:
    return [c for c in RARE if c in labels] + [c for c in labels if c not in RARE]


def best_lever(cells: dict[str, dict]) -> str | None:
    """The lever with the best mean dev weighted F1 (never test)."""
    done = {k: summarise(cells[k])["dev_weighted_f1"]["mean"] for k in LEVERS if k in cells}
    return max(done, key=done.get) if done else None


def _base_hp_lines(cells: dict[str, dict]) -> list[str]:
    """A line naming the base hyper-parameters (``--hp``) the cells ran with, when any differ from the defaults:
    each lever's own settings apply on top of them (e.g. "focal" over class-balanced weights)."""
    hps = {json.dumps(c.get("hyperparameters") or {}, sort_keys=True) for c in cells.values() if "hyperparameters" in c}
    hps.discard("{}")
    if not hps:
        return []
    return [f"**Base hyper-parameters** (`--hp`, every lever's settings on top): {', '.join(sorted(hps))}. So a "
            "row named after a loss also has these settings.", ""]


def report(cells: dict[str, dict], label: str, encoder: str, seeds: int, jobs: int, results_dir: Path,
           machine_line: str, dataset: str = "meld") -> str:
    """Write ``text_levers_<label>.md`` / ``.json`` from the finished cells; missing cells say "not run"."""
    sums = {k: summarise(cells[k]) for k in (*LEVERS, "search") if k in cells}
    labels = class_order(list(next(iter(sums.values()))["per_class"])) if sums else list(RARE)
    base = sums.get("ce")
    prov = provenance()
    corpus = "MELD" if dataset == "meld" else dataset
    lines = [f"# {corpus} text: dialogue-model levers for rare classes, seed ensembles and `merc train --search` "
             f"({label})", "",
             f"Text encoder: `{encoder}` (frozen, cached features); dialogue model: mamba (DialogueConfig / "
             f"TrainConfig defaults unless a lever changes them). Protocol: train on train, early stopping and "
             f"checkpoint selection on **dev** weighted F1, the selected checkpoint tested once; mean ± sample std "
             f"over {seeds} seeds. Which lever is kept is decided on dev (mean dev weighted F1 above the "
             f"baseline's), never on test.", "",
             *_base_hp_lines(cells),
             f"Machine: {machine_line}; each run single-threaded, up to {jobs} cell(s) in parallel.", "",
             "## Single models", "",
             "| lever | test weighted F1 (%) | test accuracy (%) | test macro F1 (%) | "
             + " | ".join(f"{c} F1 (%)" for c in RARE) + " | dev weighted F1 (%) | Δ test wF1 vs CE | kept (dev)? "
             "| train s / seed |",
             "|---|---:|---:|---:|" + "---:|" * len(RARE) + "---:|---:|---|---:|"]
    for k in LEVERS:
        s = sums.get(k)
        if s is None:
            lines.append(f"| {k}: {DESCRIBE[k]} | not run |" + " |" * (6 + len(RARE)))
            continue
        rare = " | ".join(pm(s["per_class"][c]) if c in s["per_class"] else "–" for c in RARE)
        if k == "ce" or base is None:
            delta, kept = "", "baseline" if k == "ce" else "no baseline yet"
        else:
            a, b = s["test"]["weighted_f1"], base["test"]["weighted_f1"]
            se = (a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"]) ** 0.5
            delta = f"{100 * (a['mean'] - b['mean']):+.2f} ± {100 * se:.2f}"
            kept = ("yes" if s["dev_weighted_f1"]["mean"] > base["dev_weighted_f1"]["mean"]
                    else "no: does not help on dev")
        lines.append(f"| {k}: {DESCRIBE[k]} | {pm(s['test']['weighted_f1'])} | {pm(s['test']['accuracy'])} | "
                     f"{pm(s['test']['macro_f1'])} | {rare} | {pm(s['dev_weighted_f1'])} | {delta} | {kept} | "
                     f"{s['train_seconds']:.0f} |")
    lines += ["", "Δ: difference of the test means, ± the standard error of that difference over the seeds.", "",
              "Per-class test F1 (%), mean over the seeds:", "",
              "| lever | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for k in (*LEVERS, "search"):
        s = sums.get(k)
        name = "search (kept configuration)" if k == "search" else k
        lines.append(f"| {name} | " + (" | ".join(f"{100 * s['per_class'][c]['mean']:.2f}" for c in labels)
                                        if s else "not run" + " |" * (len(labels) - 1)) + " |")
    ens = cells.get("ensemble")
    lines += ["", "## Seed ensemble (reported apart from the single models)", ""]
    if ens is None:
        lines.append("not run")
    else:
        sm = ens["single_model_test"]
        lines += [f"The {seeds} seeds of the lever with the best mean dev weighted F1 (**{ens['lever']}**), their "
                  "softmax probabilities averaged (`merc evaluate --ensemble`).", "",
                  "| ensemble of | test weighted F1 (%) | test accuracy (%) | test macro F1 (%) | "
                  + " | ".join(f"{c} F1 (%)" for c in RARE) + " | dev weighted F1 (%) |",
                  "|---|---:|---:|---:|" + "---:|" * len(RARE) + "---:|",
                  f"| {ens['lever']} × {ens['test']['n_members']} | "
                  + " | ".join(f"{100 * ens['test'][h]:.2f}" for h in HEAD) + " | "
                  + " | ".join(f"{100 * ens['test']['per_class_f1'][c]:.2f}" if c in ens["test"]["per_class_f1"]
                               else "–" for c in RARE)
                  + f" | {100 * ens['dev']['weighted_f1']:.2f} |", "",
                  f"For reference, the same members as single models: test weighted F1 {pm(sm['weighted_f1'])}."]
    srch = cells.get("search")
    lines += ["", "## `merc train --search` (default grid, dev only)", ""]
    if srch is None:
        lines.append("not run")
    else:
        s = sums["search"]
        lines += [f"Command: `{srch['command']}`", "", srch["table"].strip(), "",
                  f"Kept configuration **{srch['search']['best']}** ({srch['search']['best_overrides'] or 'defaults'})"
                  f", trained as the run with {s['n']} seeds: test weighted F1 {pm(s['test']['weighted_f1'])}, "
                  f"accuracy {pm(s['test']['accuracy'])}, macro F1 {pm(s['test']['macro_f1'])}; search time "
                  f"{srch['search']['minutes']:.0f} min, whole cell {srch['wall_seconds'] / 60:.0f} min."]
    lines += ["", "## Provenance", "", "This file was written by:", "", provenance_markdown(prov), "",
              "Cells computed at: " + "; ".join(
                  f"{k} `{(c.get('provenance') or {}).get('git_commit')}`"
                  + (" (dirty tree)" if dirty_outside_results(c.get("provenance") or {}) else "")
                  for k, c in cells.items()) if cells else "no cells", ""]
    text = portable("\n".join(lines) + "\n")  # as written (no machine paths), for the caller to print
    atomic_write_text(results_dir / f"text_levers_{label}.md", text)
    write_json(results_dir / f"text_levers_{label}.json",
               {"encoder": encoder, "label": label, "seeds": seeds, "cells": cells, "summaries": sums,
                "best_lever_by_dev": best_lever(cells), "machine": machine_line, "provenance": prov})
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text-encoder", default="mpnet", help="encoder name or label=path (default mpnet)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2, help="cells trained in parallel (one thread each)")
    ap.add_argument("--hp", type=json.loads, default={}, help="base hyper-parameters (JSON), e.g. '{\"lr\": 3e-4}'")
    ap.add_argument("--cells", default="ce,focal,cb,supcon,ensemble,search", help="which cells to run")
    ap.add_argument("--search-budget-minutes", type=float, default=None)
    ap.add_argument("--report-only", action="store_true", help="only rewrite the report from finished cells")
    ap.add_argument("--dataset", default="meld")
    ap.add_argument("--data-dir", type=Path, default=DATA)
    ap.add_argument("--results-dir", type=Path, default=OUT)
    args = ap.parse_args()
    label, encoder = parse_encoder(args.text_encoder)
    work = args.results_dir / f"text_levers_{label}"
    work.mkdir(parents=True, exist_ok=True)
    run_root = runs_dir() / f"text_levers_{label}"
    wanted = [c.strip() for c in args.cells.split(",") if c.strip()]

    def load() -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in sorted(work.glob("*.json"))}

    cells = load()
    todo = [] if args.report_only else [c for c in wanted if c not in cells and c != "ensemble"]
    with ProcessPoolExecutor(args.jobs) as pool:
        futs = {}
        for c in todo:
            if c in LEVERS:
                futs[c] = pool.submit(lever_cell, c, encoder, args.seeds, args.hp, run_root, args.dataset,
                                      args.data_dir)
            elif c == "search":
                futs[c] = pool.submit(search_cell, encoder, args.seeds, args.hp, run_root, args.dataset,
                                      args.data_dir, args.search_budget_minutes)
        for c, fut in futs.items():
            cell = fut.result()
            write_json(work / f"{c}.json", cell)
            print(f"{c:>8}: test wF1 {pm(summarise(cell)['test']['weighted_f1'])} "
                  f"({cell['wall_seconds'] / 60:.0f} min)", flush=True)
    cells = load()
    best = best_lever(cells)
    if "ensemble" in wanted and not args.report_only and best and args.seeds > 1 and (
            cells.get("ensemble", {}).get("lever") != best or "ensemble" not in cells):
        write_json(work / "ensemble.json", ensemble_cell(best, run_root / best, args.dataset, args.data_dir))
        cells = load()
    print(report(cells, label, args.text_encoder, args.seeds, args.jobs, args.results_dir, machine(), args.dataset))


if __name__ == "__main__":
    main()
