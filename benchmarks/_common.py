"""What the benchmark scripts share: the machine line of a results file, mean ± std, Welch's t-test.

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
