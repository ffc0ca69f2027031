"""Time and memory of the dialogue context models against dialogue length, on CPU.

Models (the ``DialogueModel`` the trainer uses: text input 768-d, d_model 256, 2 layers, bidirectional,
7 classes, batch 1):
  mamba       BiMamba layers with the parallel (chunked) selective scan
  mamba_ref   the same model, weights and all, with the sequential reference scan
  transformer pre-norm TransformerEncoder, 4 heads, full self-attention

For every (model, length) a fresh subprocess builds the model and inputs, then measures
  forward        eval mode, torch.no_grad(): median wall time of ``reps`` calls
  forward+backward  train mode (dropout on), cross-entropy over all positions, .backward(): median time
  peak memory    ru_maxrss (the process's resident-set high-water mark, which sees torch's CPU
                 allocations; tracemalloc does not) minus the resident size just before the first
                 call, i.e. the extra memory the calls needed at their peak (activations, autograd
                 buffers, allocator slack). Forward-only and after forward+backward.
A config is skipped (and reported as such) when its forward+backward is estimated above --cap seconds
from the previous length (linear extrapolation, at least 4x for 4x the length).

Growth: least-squares slope of log(time) on log(length) over the longer lengths (>= 256), where
per-call overheads no longer dominate; slope 1 = linear, 2 = quadratic.

Usage:
  .venv/bin/python benchmarks/bench_mamba_speed.py [--lengths 16 64 256 1024 4096] [--threads 1]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("mamba", "mamba_ref", "transformer")
ROOT = Path(__file__).resolve().parents[1]

# helpers


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def timed(fn, reps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def child(model_name: str, seq_len: int, threads: int) -> dict:
    """Runs in a fresh process: one model at one length."""
    import torch
    import torch.nn.functional as F

    from merc.models.dialogue import DialogueConfig, DialogueModel
    from merc.models.mamba import Mamba

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kind = "transformer" if model_name == "transformer" else "mamba"
    model = DialogueModel(DialogueConfig(kind=kind, input_dims={"text": 768}, n_classes=7, d_model=256, n_layers=2))
    for m in model.modules():
        if isinstance(m, Mamba):
            m.config.reference_scan = model_name == "mamba_ref"
    feats = {"text": torch.randn(1, seq_len, 768)}
    speakers = torch.zeros(1, seq_len, dtype=torch.long)
    mask = torch.ones(1, seq_len, dtype=torch.bool)
    labels = torch.randint(0, 7, (1, seq_len))

    def forward():
        with torch.no_grad():
            model(feats, speakers, mask)

    def train_step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(feats, speakers, mask)[mask], labels[mask]).backward()

    reps, warmup = (3, 1) if seq_len < 1024 else (3, 0)
    base = rss_bytes()
    model.eval()
    fwd = timed(forward, reps, warmup)
    peak_fwd = peak_rss_bytes() - base
    model.train()
    train = timed(train_step, reps, warmup)
    peak_train = peak_rss_bytes() - base
    return {"model": model_name, "seq_len": seq_len, "reps": reps, "warmup": warmup,
            "forward_s": statistics.median(fwd), "forward_backward_s": statistics.median(train),
            "forward_times": fwd, "forward_backward_times": train,
            "peak_forward_mb": peak_fwd / 2**20, "peak_forward_backward_mb": peak_train / 2**20,
            "n_parameters": model.num_parameters()}


def slope(rows: list[dict], key: str, min_len: int = 256) -> float | None:
    pts = [(math.log(r["seq_len"]), math.log(r[key])) for r in rows if r["seq_len"] >= min_len and r.get(key)]
    if len(pts) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def notes(result: dict, args: argparse.Namespace) -> list[str]:
    """Facts read off the rows: threads, skipped configs, Mamba against the transformer at the longest length."""
    out = [f"- Every row ran with torch.set_num_threads({args.threads}), one fresh process per row; the first call "
           "is a warm-up (not timed) for lengths < 1024.",
           "- `mamba_ref` is the same model with `MambaConfig.reference_scan=True` (one Python step per position, "
           "autograd through the loop)."]
    skipped = [f"{r['model']} at {r['seq_len']} ({r['skipped']})" for r in result["rows"] if r.get("skipped")]
    out.append("- Skipped (estimated above the cap): " + ", ".join(skipped) if skipped else
               f"- Nothing was skipped (cap {args.cap:.0f} s per forward+backward).")
    done = {(r["model"], r["seq_len"]): r for r in result["rows"] if not r.get("skipped")}
    for L in sorted({L for _, L in done}, reverse=True):
        if ("mamba", L) in done and ("transformer", L) in done:
            m, t = done["mamba", L], done["transformer", L]
            out.append(f"- At length {L}: transformer / mamba time ratio {t['forward_s'] / m['forward_s']:.2f} "
                       f"(forward), {t['forward_backward_s'] / m['forward_backward_s']:.2f} (fwd+bwd); peak memory "
                       f"ratio {t['peak_forward_backward_mb'] / m['peak_forward_backward_mb']:.2f} (fwd+bwd).")
            break
    return out


def machine(threads: int) -> dict:
    import torch
    model_name = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model_name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        pass
    return {"cpu": model_name, "cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "load_average_at_start": os.getloadavg(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def write_markdown(path: Path, result: dict) -> None:
    from _common import atomic_write_text

    from merc.io import provenance_markdown
    m, rows = result["machine"], result["rows"]
    lines = ["# Dialogue context models: time and memory against dialogue length (CPU)", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} thread), "
             f"Python {m['python']}, {m['date']}; load average at start {m['load_average_at_start'][0]:.1f} "
             "(shared machine: other jobs were running, so absolute times are noisy).", "",
             "Provenance:", "", provenance_markdown(result["provenance"]), "",
             "Model: `DialogueModel` (768-d text input, d_model 256, 2 layers, bidirectional, batch 1). "
             "Time: median wall time of the reps. Memory: peak RSS increase over the resident size "
             "before the first call (ru_maxrss in a fresh process per row; includes allocator slack).", "",
             "| model | length | forward (s) | fwd+bwd (s) | peak fwd (MB) | peak fwd+bwd (MB) | reps |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['model']} | {r['seq_len']} | skipped: {r['skipped']} | | | | |")
        else:
            lines.append(f"| {r['model']} | {r['seq_len']} | {r['forward_s']:.4f} | {r['forward_backward_s']:.4f} | "
                         f"{r['peak_forward_mb']:.0f} | {r['peak_forward_backward_mb']:.0f} | {r['reps']} |")
    lines += ["", "Log-log slope of time against length over lengths >= 256 (1 = linear, 2 = quadratic):", "",
              "| model | forward | fwd+bwd |", "|---|---:|---:|"]
    for name, s in result["slopes"].items():
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {name} | {fmt(s['forward'])} | {fmt(s['forward_backward'])} |")
    lines += ["", *result.get("notes", [])]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cap", type=float, default=60.0, help="skip a config whose fwd+bwd is estimated above this (s)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mamba_speed" / "mamba_speed"))
    p.add_argument("--child", nargs=2, metavar=("MODEL", "LENGTH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.threads)))
        return

    from _common import write_json

    from merc.io import provenance
    result = {"command": " ".join([".venv/bin/python", "benchmarks/bench_mamba_speed.py", *sys.argv[1:]]),
              "machine": machine(args.threads), "provenance": provenance(), "rows": [], "slopes": {}}
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name in args.models:
        prev = None
        for seq_len in sorted(args.lengths):
            if prev is not None:
                estimate = prev["forward_backward_s"] * max(4.0, seq_len / prev["seq_len"])
                if estimate > args.cap:
                    row = {"model": name, "seq_len": seq_len, "skipped": f"est. {estimate:.0f} s > {args.cap:.0f} s"}
                    result["rows"].append(row)
                    print(row, flush=True)
                    continue
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", name,
                                  str(seq_len)], capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise RuntimeError(f"{name} at length {seq_len} failed:\n{out.stderr}")
            prev = json.loads(out.stdout.strip().splitlines()[-1])
            result["rows"].append(prev)
            print(f"{name:12s} L={seq_len:5d}  fwd {prev['forward_s']:8.4f} s  fwd+bwd "
                  f"{prev['forward_backward_s']:8.4f} s"
                  f"  peak {prev['peak_forward_mb']:7.0f} / {prev['peak_forward_backward_mb']:7.0f} MB", flush=True)
        rows = [r for r in result["rows"] if r["model"] == name and not r.get("skipped")]
        result["slopes"][name] = {"forward": slope(rows, "forward_s"),
                                  "forward_backward": slope(rows, "forward_backward_s")}
    result["notes"] = notes(result, args)
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    write_markdown(out.with_suffix(".md"), result)
    print(json.dumps(result["slopes"], indent=1))


if __name__ == "__main__":
    main()
