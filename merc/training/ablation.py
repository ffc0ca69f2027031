"""MaTAV ablations (Li et al., Table "ablation"): full / w/o Mamba / w/o MEC over K seeds, as a table.

``run_ablation(train_one, base, seeds, out)`` calls ``train_one(variant, config, seed) -> metrics`` for every
(variant, seed) — ``metrics[split][name]`` floats, e.g. ``{"dev": {"weighted_f1": 0.61, …}, "test": {…}}`` —
and writes ``ablation.json`` and ``ablation.md`` (mean ± sample std over seeds). Each finished cell is kept
in ``cells/<variant>_seed<seed>.json``, so an interrupted ablation resumes with the cells still missing.

Variants: ``full`` (the base config), ``no_mamba`` (``use_mamba=False``: per-utterance classifier after
fusion, the paper's "w/o Mamba") and ``no_mec`` (``mec_weight=0``: cross-entropy only, no momentum copies
or queues, the paper's "w/o MEC").
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from merc.io import atomic_write_text, write_json
from merc.metrics import mean_std
from merc.models.matav import MatavConfig

logger = logging.getLogger(__name__)

VARIANTS: dict[str, dict[str, Any]] = {"full": {}, "no_mamba": {"use_mamba": False}, "no_mec": {"mec_weight": 0.0}}
TITLES = {"full": "MaTAV", "no_mamba": "w/o Mamba (--no-mamba)", "no_mec": "w/o MEC (--no-mec)"}
METRICS = ("weighted_f1", "accuracy", "macro_f1")

TrainOne = Callable[[str, MatavConfig, int], dict[str, dict[str, float]]]


def ablation_configs(base: MatavConfig, variants: Sequence[str] = tuple(VARIANTS)) -> dict[str, MatavConfig]:
    return {v: replace(base, **VARIANTS[v]) for v in variants}


def summarise(cells: dict[str, list[dict[str, dict[str, float]]]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """variant -> split -> metric -> {mean, std, n} over the seeds' cells."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for variant, runs in cells.items():
        splits = [s for s in runs[0] if isinstance(runs[0][s], dict)]
        out[variant] = {s: {k: mean_std([r[s][k] for r in runs]) for k in runs[0][s] if k in METRICS}
                        for s in splits}
    return out


def markdown_table(table: dict[str, Any], *, title: str = "MaTAV ablation") -> str:
    variants = list(table)
    splits = [s for s in ("dev", "test") if s in table[variants[0]]] or list(table[variants[0]])
    head = ["variant"] + [f"{s} {k.replace('_', ' ')}" for s in splits for k in METRICS if k in table[variants[0]][s]]
    lines = [f"# {title}", "", "Percent, mean ± sample standard deviation over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        cells = [f"{100 * table[v][s][k]['mean']:.2f} ± {100 * table[v][s][k]['std']:.2f}"
                 for s in splits for k in METRICS if k in table[v][s]]
        n = table[v][splits[0]][next(iter(table[v][splits[0]]))]["n"]
        lines.append(f"| {TITLES.get(v, v)} (n={n}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_ablation(train_one: TrainOne, base: MatavConfig, seeds: Sequence[int], out: str | Path, *,
                 variants: Sequence[str] = tuple(VARIANTS), title: str = "MaTAV ablation") -> dict[str, Any]:
    """Train every variant with every seed (skipping cells already in ``out/cells``); write the table."""
    out = Path(out)
    configs = ablation_configs(base, variants)
    cells: dict[str, list[dict[str, dict[str, float]]]] = {v: [] for v in variants}
    for v, cfg in configs.items():
        for seed in seeds:
            path = out / "cells" / f"{v}_seed{seed}.json"
            if path.exists():
                cell = json.loads(path.read_text())
                logger.info("%s seed %d: done before (%s)", v, seed, path)
            else:
                cell = {"variant": v, "seed": seed, "config": asdict(cfg), **train_one(v, cfg, seed)}
                write_json(path, cell)
                logger.info("%s seed %d: weighted F1 %s", v, seed,
                            {s: cell[s].get("weighted_f1") for s in ("dev", "test") if s in cell})
            cells[v].append({k: c for k, c in cell.items() if k not in ("variant", "seed", "config")})
    table = summarise(cells)
    result = {"title": title, "seeds": list(seeds), "variants": {v: VARIANTS[v] for v in variants}, "table": table}
    write_json(out / "ablation.json", result)
    atomic_write_text(out / "ablation.md", markdown_table(table, title=title))
    return result
