"""The Mamba stack's forward + backward against mambapy, before and after a change to the selective scan (CPU).

Three variants of a 2-layer unidirectional Mamba stack (d_state 16, expand 2, d_conv 4) at each
(batch, seq_len, d_model) shape, all in one process, timed interleaved (before, after, mambapy, before, …)
so that the load of a shared machine hits them alike:
  before   merc's ``MambaStack`` with the selective scan of ``--before-ref`` (default ``main``; its
           ``merc/models/scan.py`` read from git and loaded as a module), at that scan's default chunk size
  after    the same ``MambaStack`` (same weights) with the working tree's scan (adaptive chunks)
  mambapy  ``mambapy.mamba.Mamba`` (PyPI ``mambapy``, pure PyTorch, Blelloch ``pscan``), same sizes, its own init
Each call: a fresh input with requires_grad, ``model(x).square().mean().backward()``; forward alone is timed
under ``torch.no_grad()``. The figure is the median of ``--reps`` calls after one warm-up call. ``uptime``'s
load average is recorded before and after every shape (2 cores shared with other jobs: absolute times move
with the load, the ratios measured interleaved much less). ``before`` and ``after`` outputs and input
gradients are compared (largest absolute difference).

Usage:
  .venv/bin/python benchmarks/bench_scan.py [--shapes 8,110,256 4,1024,64 1,4096,256] [--reps 7] [--threads 1]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, atomic_write_text, machine, results_dir, write_json

SHAPES = ("8,110,256", "4,1024,64", "1,4096,256")
VARIANTS = ("before", "after", "mambapy")

# helpers


def load_before(ref: str):
    """``merc/models/scan.py`` at git ``ref`` as a module; returns (module, commit)."""
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    text = subprocess.run(["git", "show", f"{ref}:merc/models/scan.py"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    path = Path(tempfile.mkdtemp()) / "scan_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("scan_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, commit


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def variants(shape: tuple[int, int, int], before_scan):
    """{name: (model, scan patch or None)} for one shape."""
    import mambapy.mamba as mp
    import torch

    from merc.models.mamba import MambaConfig, MambaStack
    batch, seq_len, d_model = shape
    torch.manual_seed(0)
    ours = MambaStack(MambaConfig(d_model=d_model), n_layers=2)
    theirs = mp.Mamba(mp.MambaConfig(d_model=d_model, n_layers=2))
    return {"before": (ours, before_scan), "after": (ours, None), "mambapy": (theirs, None)}


def call(model, patch, x, backward: bool):
    """One forward (+ backward) of model on x, with merc's scan swapped for ``patch`` if given."""
    import torch

    import merc.models.mamba as mamba
    saved = mamba.selective_scan
    if patch is not None:
        mamba.selective_scan = patch
    try:
        if not backward:
            with torch.no_grad():
                return model(x)
        xg = x.clone().requires_grad_()
        out = model(xg)
        out.square().mean().backward()
        return out.detach(), xg.grad
    finally:
        mamba.selective_scan = saved


def run_shape(shape: tuple[int, int, int], before_scan, reps: int) -> dict:
    import torch
    models = variants(shape, before_scan)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    row = {"shape": list(shape), "load_before": load_average()}
    # equivalence of before and after (same weights, same input)
    (out_b, grad_b), (out_a, grad_a) = (call(*models[k], x, True) for k in ("before", "after"))
    row["max_abs_diff_output"] = float((out_b - out_a).abs().max())
    row["max_abs_diff_input_grad"] = float((grad_b - grad_a).abs().max())
    for mode, backward in (("forward_backward", True), ("forward", False)):
        times = {k: [] for k in VARIANTS}
        for k in VARIANTS:                                                    # warm-up
            call(*models[k], x, backward)
        for _ in range(reps):
            for k in VARIANTS:
                for p in models[k][0].parameters():
                    p.grad = None
                t0 = time.perf_counter()
                call(*models[k], x, backward)
                times[k].append(time.perf_counter() - t0)
        row[mode] = {k: {"median_s": statistics.median(v), "times_s": v} for k, v in times.items()}
    row["load_after"] = load_average()
    return row


def write_markdown(path: Path, result: dict) -> None:
    from merc.io import provenance_markdown
    lines = ["# The Mamba stack against mambapy: forward + backward, before and after the scan change (CPU)", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']}; torch threads {result['threads']}. **Shared, loaded machine**: other "
             "jobs ran on the same 2 cores throughout (load averages below, from `uptime`); the three variants "
             "were timed interleaved in one process, so their ratios are what to read, not the absolute times.", "",
             "Provenance:", "", provenance_markdown(result["provenance"]), "",
             f"Model: 2-layer unidirectional Mamba stack, d_state 16, expand 2, d_conv 4. `before`: merc's "
             f"`MambaStack` with the scan of `{result['before_ref']}` (commit `{result['before_commit']}`); "
             "`after`: the same stack and weights with this commit's scan; `mambapy`: `mambapy.mamba.Mamba` "
             f"{result['mambapy_version']} (Blelloch `pscan`). Time: median of {result['reps']} calls after a "
             "warm-up; forward + backward = `model(x).square().mean().backward()`.", "",
             "| shape (batch, length, d_model) | before (s) | after (s) | mambapy (s) | after vs before | "
             "after vs mambapy | load avg (1 min) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        t = {k: r["forward_backward"][k]["median_s"] for k in VARIANTS}
        lines.append(f"| {tuple(r['shape'])} | {t['before']:.4f} | {t['after']:.4f} | {t['mambapy']:.4f} | "
                     f"{t['before'] / t['after']:.2f}× | {t['mambapy'] / t['after']:.2f}× | "
                     f"{r['load_before'][0]:.1f} → {r['load_after'][0]:.1f} |")
    lines += ["", "Forward only (`torch.no_grad()`):", "",
              "| shape | before (s) | after (s) | mambapy (s) | after vs mambapy |", "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        t = {k: r["forward"][k]["median_s"] for k in VARIANTS}
        lines.append(f"| {tuple(r['shape'])} | {t['before']:.4f} | {t['after']:.4f} | {t['mambapy']:.4f} | "
                     f"{t['mambapy'] / t['after']:.2f}× |")
    lines += ["", "Before and after agree (same weights and input, float32): largest absolute difference "
              "of the output / of the input's gradient:", ""]
    lines += [f"- {tuple(r['shape'])}: {r['max_abs_diff_output']:.2e} / {r['max_abs_diff_input_grad']:.2e}"
              for r in result["rows"]]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), help="batch,seq_len,d_model triples")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--before-ref", default="main", help="git ref whose merc/models/scan.py is 'before'")
    p.add_argument("--out", default=str(results_dir("mamba_speed") / "scan_vs_mambapy"))
    args = p.parse_args(argv)

    from importlib.metadata import version

    import torch

    from merc.io import provenance
    torch.set_num_threads(args.threads)
    before, before_commit = load_before(args.before_ref)
    chunk = 64 if "chunk_size" in before.selective_scan.__code__.co_varnames else None
    before_scan = (lambda *a, **k: before.selective_scan(*a, **{**k, "chunk_size": chunk})) if chunk else \
        before.selective_scan
    result = {"command": " ".join([".venv/bin/python", "benchmarks/bench_scan.py", *sys.argv[1:]]),
              "machine": machine(), "threads": args.threads, "provenance": provenance(), "reps": args.reps,
              "before_ref": args.before_ref, "before_commit": before_commit,
              "mambapy_version": version("mambapy"), "rows": []}
    out = Path(args.out)
    for s in args.shapes:
        shape = tuple(int(v) for v in s.split(","))
        row = run_shape(shape, before_scan, args.reps)
        result["rows"].append(row)
        t = {k: row["forward_backward"][k]["median_s"] for k in VARIANTS}
        print(f"{shape}: before {t['before']:.4f} s, after {t['after']:.4f} s, mambapy {t['mambapy']:.4f} s "
              f"(load {row['load_before'][0]} -> {row['load_after'][0]})", flush=True)
        write_json(out.with_suffix(".json"), result)                         # partial results survive a kill
        write_markdown(out.with_suffix(".md"), result)


if __name__ == "__main__":
    main()
