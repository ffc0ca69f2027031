"""What the benchmark scripts share: the machine line of a results file, mean ± std, Welch's t-test, the
epoch table of a fine-tune.

A script adds its own folder to ``sys.path`` (``python benchmarks/x.py`` already does) and imports from here;
the full provenance of a result (commit, dirty paths, versions, date) is :func:`merc.io.provenance`.
"""
from __future__ import annotations

import os
import platform

from merc.io import cpu_model


def machine() -> str:
    """``"<CPU model>, <n> cores, torch <v>, Python <v>"``: the machine line of a results file."""
    import torch
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def pm(d: dict) -> str:
    """``{"mean": m, "std": s}`` of a fraction as ``"63.16 ± 0.26"`` (percent)."""
    return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"


def welch(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) between two samples; None below 2 per side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals (``0.6322`` -> ``"63.22"``); None -> ``"—"``."""
    return "—" if x is None else f"{100 * x:.2f}"


def epoch_table(meta: dict) -> list[str]:
    """Markdown lines of a fine-tune's epochs (``meta`` as in ``merc_encoder.json``), the kept epoch marked."""
    lines = ["| epoch | train loss | dev weighted F1 (%) | dev accuracy (%) |", "|---:|---:|---:|---:|"]
    for h in meta["history"]:
        mark = " (kept)" if h["epoch"] == meta["best_epoch"] else ""
        lines.append(f"| {h['epoch']}{mark} | {h['train_loss']:.4f} | {pct(h['dev_weighted_f1'])} | "
                     f"{pct(h['dev_accuracy'])} |")
    return lines
