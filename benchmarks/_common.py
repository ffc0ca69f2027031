"""What the benchmark scripts share: where a study's results go, writers that keep this machine's paths out of
them, the machine line of a results file, mean ± std, Welch's t-test, the epoch table of a fine-tune.

A script adds its own folder to ``sys.path`` (``python benchmarks/x.py`` already does) and imports from here;
the full provenance of a result (commit, dirty paths, versions, date) is :func:`merc.io.provenance`.

Results files never hold a machine's absolute paths (benchmarks/README.md): ``write_json`` and
``atomic_write_text`` here are merc.io's, with every absolute path in the content made :func:`portable` first.
"""
from __future__ import annotations

import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any

from merc import io as _io
from merc.io import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# standard system locations (e.g. espeak-ng's data) read the same on every machine of a distribution: kept
SYSTEM = ("/usr/", "/etc/", "/opt/", "/bin/", "/sbin/", "/lib/", "/proc/", "/dev/")
_ABS = re.compile(r"(?<![\w.$~/:<])/[\w.+@-]+(?:/[\w.+@=-]*)+")  # two parts at least: not </s>


def results_dir(study: str) -> Path:
    """``benchmarks/results/<study>/``: one folder per study (benchmarks/README.md is the index)."""
    return RESULTS / study


def _places(repo: str | Path | None = None) -> list[tuple[str, str]]:
    from merc.encoders.base import cache_root
    places = [(str(Path(repo or ROOT).resolve()), ""), (str(cache_root().expanduser().resolve()), "$MERC_CACHE"),
              (str(Path(tempfile.gettempdir()).resolve()), "$TMPDIR"), (str(Path.home().resolve()), "~")]
    return [(p.rstrip("/"), v) for p, v in places if p not in ("/", "")]


def portable_path(path: str, places: list[tuple[str, str]] | None = None) -> str:
    """This machine's absolute ``path`` as a reader elsewhere can use it: under the repository -> relative
    (``benchmarks/results/x``; the repository itself -> ``.``), under merc's cache -> ``$MERC_CACHE/…``, under
    the temp folder -> ``$TMPDIR/…``, under the home folder -> ``~/…``, a system location (/usr/…) as it is,
    anything else relative to the repository (``../data/mm_signal``: beside the checkout)."""
    if path.startswith(SYSTEM):
        return path
    for root, var in places or _places():
        if path == root or path.startswith(root + "/"):
            rest = path[len(root) + 1:]
            if var:
                return f"{var}/{rest}" if rest else var
            return rest or "."
    repo = (places or _places())[0][0]
    return os.path.relpath(path, repo)


def portable(obj: Any, places: list[tuple[str, str]] | None = None) -> Any:
    """``obj`` (JSON-like: dicts, lists, strings …) with every absolute path inside its strings made
    :func:`portable_path`; dict keys too."""
    places = places or _places()
    if isinstance(obj, str):
        return _ABS.sub(lambda m: portable_path(m.group(0), places), obj)
    if isinstance(obj, dict):
        return {portable(k, places) if isinstance(k, str) else k: portable(v, places) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v, places) for v in obj]
    if isinstance(obj, Path):
        return portable(str(obj), places)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """:func:`merc.io.write_json` with machine paths made portable."""
    return _io.write_json(path, portable(obj))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`merc.io.atomic_write_text` with machine paths made portable."""
    return _io.atomic_write_text(path, portable(text))


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
