"""Local against Ray (2 workers, this machine) for `merc extract` and `merc qc` on the generated multimodal corpus,
and a paper estimate of hours for MELD.Raw and a 500-hour corpus on N workers from the measured costs.

A subset of the corpus (the first --dialogues dialogues of each split: CSVs rewritten into a work folder, clips read
in place from --media-dir) is processed by the real commands, each from a fresh feature store / QC folder, one
after the other in the same run (local, then Ray), with the load average before and after each:

    merc extract ... --modalities text,audio,face (the default encoders)     --executor local | ray
    merc qc ... (the default checks)                       --workers 1 | --workers 2 | --executor ray

Wall time is the whole command (Ray: starting a local instance, two actors, each loading its own models). The
per-utterance cost for the estimate is the local run's encoding seconds (store metadata: model loading excluded)
per second of media, with the Ray run's measured speed-up over local as the efficiency of 2 workers; beyond 2,
scaling is assumed linear (not measured here: one machine), plus a fixed start-up per worker.

    .venv/bin/python benchmarks/bench_ray.py [--dialogues 3] [--media-dir ../data/mm_signal]
writes benchmarks/results/ray/ray_vs_local.md and ray_vs_local.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import atomic_write_text, results_dir, write_json  # noqa: E402

from merc.io import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CSVS = ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv")
MELD_RAW = {"utterances": 13708, "hours": 12.0}  # MELD.Raw: ~12 h of clips (issue #31)
WORKERS = (2, 8, 32, 128)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "merc"], capture_output=True,
                           text=True).stdout.strip()
    vers = {}
    for p in ("ray", "torch", "numpy"):
        try:
            vers[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            vers[p] = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_at_start": load(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
            "commit": commit + (" (uncommitted changes in merc/)" if dirty else ""), "versions": vers}


def subset(media_dir: Path, out: Path, dialogues: int) -> Path:
    """The first ``dialogues`` dialogues of each split's CSV, written to ``out`` (clips stay in ``media_dir``)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in CSVS:
        with open(media_dir / name, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        head, body = rows[0], rows[1:]
        col = head.index("Dialogue_ID")
        keep = []
        for r in body:
            if r[col] not in keep:
                keep.append(r[col])
        keep = set(keep[:dialogues])
        with open(out / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([head] + [r for r in body if r[col] in keep])
    return out


def run(argv: list[str], env: dict[str, str]) -> tuple[float, str, list[float], list[float]]:
    before = load()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "merc.cli", *argv], env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): merc {' '.join(argv)}\n{p.stderr[-3000:]}")
    return secs, p.stdout, before, load()


def store_seconds(cache: Path) -> dict[str, float]:
    """Encoding seconds per encoder (model loading excluded) from the store's index files."""
    out: dict[str, float] = {}
    for idx in cache.rglob("index.json"):
        meta = json.loads(idx.read_text())
        key = f"{meta['modality']}:{meta['encoder']}"
        out[key] = out.get(key, 0.0) + float(meta.get("seconds", 0.0))
    return out


def media_seconds(corpus) -> float:
    from merc.media.decode import probe
    total = 0.0
    for s in corpus.splits:
        for u in corpus.utterances(s):
            try:
                total += probe(u.video or u.audio).duration or 0.0
            except Exception:  # a defective clip of the corpus (missing, corrupt): no duration
                pass
    return total


def estimate(cost_per_media_second: float, efficiency: float, startup: float, hours: float, n: int) -> float:
    """Hours of wall time for ``hours`` of media on ``n`` workers."""
    return (hours * 3600 * cost_per_media_second / (n * efficiency) + startup) / 3600


def to_markdown(r: dict) -> str:
    m = r["machine"]
    L = [f"# merc extract and merc qc: local against Ray ({r['ray_workers']} workers, one machine)", "",
         f"{m['date']} · {m['cpu']} · {m['cores']} cores · commit {m['commit']} · ray {m['versions']['ray']} · "
         f"torch {m['versions']['torch']}", "", f"Command: `{r['command']}`", "",
         f"Corpus: the generated multimodal corpus (`{r['media_dir']}`), **a subset**: the first {r['dialogues']} "
         f"dialogues of each split, {r['utterances']} utterances, {r['media_seconds']:.0f} s of media "
         "(the full corpus, 2,095 utterances, would take hours per run on this shared machine).", "",
         "The machine is shared with other jobs: the load average is recorded beside every run. Each run starts "
         "from an empty feature store / QC folder.", "",
         "| command | executor | wall s | s per utterance | speed-up vs local | load before → after |",
         "|---|---|---|---|---|---|"]
    for row in r["runs"]:
        L.append(f"| {row['command']} | {row['executor']} | {row['seconds']:.1f} | {row['per_utterance']:.2f} | "
                 f"{row['speedup']:.2f}× | {row['load_before'][0]} → {row['load_after'][0]} |")
    L += ["", "Same results: " + "; ".join(r["same"]) + ".", "",
          "## Overhead", "", r["overhead"], "",
          "## Paper estimate", "",
          f"From the local extraction: {r['cost']['extract_per_media_second']:.3f} s of encoding per second of "
          f"media (all default encoders, model loading excluded; per encoder: "
          + ", ".join(f"{k} {v:.3f}" for k, v in r['cost']['per_encoder_per_media_second'].items())
          + f"); QC {r['cost']['qc_per_media_second']:.3f} s per second of media (default checks, "
          f"local, 1 process). Efficiency of 2 Ray workers measured here: extract "
          f"{r['cost']['efficiency_extract']:.2f}, QC {r['cost']['efficiency_qc']:.2f} (speed-up / 2); "
          f"start-up {r['cost']['startup_seconds']:.0f} s. Beyond 2 workers scaling is *assumed* linear at that "
          "efficiency (a shared filesystem and the driver's per-batch bookkeeping are not measured here). The "
          "synthetic clips are 224×224 at 5 fps; real clips (MELD: 1280×720, 24 fps) decode more slowly. The costs "
          f"are wall seconds at a load average of {r['runs'][0]['load_before'][0]}–{r['runs'][0]['load_after'][0]} "
          "on 2 cores (each process had a fraction of a core): on dedicated cores they are several times lower "
          "(`benchmarks/results/extract_speed/extract_speed.md`: egemaps 41× real time per CPU-second, here "
          f"{1 / max(r['cost']['per_encoder_per_media_second'].get('audio:egemaps', 1e9), 1e-9):.0f}× per wall "
          "second), so read the hours as an upper bound for that reason and a lower bound for the decoding one.",
          "",
          "| corpus | media hours | task | " + " | ".join(f"{n} workers (h)" for n in WORKERS) + " |",
          "|---|---|---|" + "---|" * len(WORKERS)]
    for e in r["estimates"]:
        L.append(f"| {e['corpus']} | {e['hours']:.0f} | {e['task']} | "
                 + " | ".join(f"{e['by_workers'][str(n)]:.1f}" for n in WORKERS) + " |")
    if r.get("note"):
        L += ["", f"Note: {r['note']}"]
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media-dir", default=str(ROOT.parent / "data" / "mm_signal"),
                    help="the generated corpus (benchmarks/make_mm_corpus.py): CSVs and clip folders")
    ap.add_argument("--dialogues", type=int, default=3, help="dialogues per split (a subset: the full corpus is slow)")
    ap.add_argument("--modalities", default="text,audio,face")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--out", default=str(results_dir("ray") / "ray_vs_local"))
    ap.add_argument("--note", default="", help="a line on the conditions, kept in the results")
    args = ap.parse_args()

    from merc.data import load_corpus
    from merc.io import provenance
    info, prov = machine(), provenance()
    media_dir = Path(args.media_dir).resolve()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_ray-"))
    data_dir = subset(media_dir, work / "data", args.dialogues)
    corpus = load_corpus("meld", str(data_dir), media_dir=str(media_dir))
    n = sum(len(corpus.utterances(s)) for s in corpus.splits)
    media_s = media_seconds(corpus)
    print(f"{n} utterances, {media_s:.0f} s of media", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    common = ["--dataset", "meld", "--data-dir", str(data_dir), "--media-dir", str(media_dir), "--quiet"]
    runs, outputs, caches = [], {}, {}
    plan = [("extract", "local", ["extract", *common, "--modalities", args.modalities, "--json"]),
            ("extract", "ray", ["extract", *common, "--modalities", args.modalities, "--json", "--executor", "ray"]),
            ("qc", "local, 1 process", ["qc", *common]),
            ("qc", "local, 2 processes", ["qc", *common, "--workers", "2"]),
            ("qc", "ray", ["qc", *common, "--executor", "ray"])]
    for k, (cmd, ex, argv) in enumerate(plan):
        cache = work / f"cache{k}"
        argv = [*argv, "--out", str(work / f"qc{k}")] if cmd == "qc" else argv
        secs, out, before, after = run(argv, {**env, "MERC_CACHE": str(cache)})
        runs.append({"command": cmd, "executor": ex, "seconds": round(secs, 2), "per_utterance": secs / n,
                     "load_before": before, "load_after": after})
        outputs[k], caches[k] = out, cache
        print(runs[-1], flush=True)
    for row in runs:
        base = next(r for r in runs if r["command"] == row["command"])
        row["speedup"] = base["seconds"] / row["seconds"]

    same = []
    ext = [json.loads(outputs[k]) for k in (0, 1)]
    same.append("extract: identical absence report on both executors" if ext[0]["report"] == ext[1]["report"]
                else "extract: **absence reports differ**")
    from safetensors.numpy import load_file
    diffs = []
    for idx in sorted((caches[0] / "store").rglob("rows.safetensors")):
        other = caches[1] / "store" / idx.relative_to(caches[0] / "store")
        a, b = load_file(str(idx))["X"], load_file(str(other))["X"]
        diffs.append(float(abs(a - b).max()) if a.shape == b.shape else float("inf"))
    same.append(f"extract: largest absolute feature difference {max(diffs):.3g} over {len(diffs)} store folders")
    flags = [(work / f"qc{k}" / "flags.csv").read_text() for k in (2, 3, 4)]
    same.append("qc: flags.csv identical across the three runs" if len(set(flags)) == 1
                else "qc: **flags.csv differs between runs**")

    enc = store_seconds(caches[0] / "store")
    extract_cost = sum(enc.values()) / media_s
    qc_local = json.loads((work / "qc2" / "summary.json").read_text())
    measure = sum(t.get("measure_seconds", 0.0) for t in qc_local["timings"].values() if isinstance(t, dict))
    qc_cost = measure / media_s
    ray_ext, ray_qc = runs[1], runs[4]
    eff_ext, eff_qc = ray_ext["speedup"] / 2, ray_qc["speedup"] / 2
    startup = max(0.0, ray_ext["seconds"] - runs[0]["seconds"] / 2)  # what 2 perfect workers would not spend
    overhead = (f"Ray extract took {ray_ext['seconds']:.0f} s against {runs[0]['seconds']:.0f} s locally "
                f"(speed-up {ray_ext['speedup']:.2f}× with 2 workers; a perfect split would be 2×). Of the Ray "
                f"wall time, about {startup:.0f} s is not explained by halving the local time: starting the local "
                "Ray instance (5–10 s), each actor loading its own models (text, audio and face encoders load "
                "twice, once per worker), and the driver's final pass over the store. QC on Ray: "
                f"{ray_qc['seconds']:.0f} s against {runs[2]['seconds']:.0f} s (1 process) and "
                f"{runs[3]['seconds']:.0f} s (merc's own 2-process pool): {ray_qc['speedup']:.2f}× over 1 process. "
                "On 2 cores shared with other jobs, 2 workers cannot reach 2×; the figures say what the fixed "
                "costs are, which a cluster amortises over a long corpus.")
    estimates = []
    for corpus_name, hours in (("MELD.Raw (13,708 utterances)", MELD_RAW["hours"]), ("500-hour corpus", 500.0)):
        for task, cost, eff in (("extract", extract_cost, eff_ext), ("qc", qc_cost, eff_qc)):
            estimates.append({"corpus": corpus_name, "hours": hours, "task": task,
                              "by_workers": {str(w): round(estimate(cost, eff, startup, hours, w), 2)
                                             for w in WORKERS}})
    cmd = ".venv/bin/python benchmarks/" + Path(__file__).name + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = {"machine": info, "provenance": prov, "command": cmd.strip(), "media_dir": str(media_dir),
              "dialogues": args.dialogues,
              "utterances": n, "media_seconds": round(media_s, 1), "ray_workers": 2, "runs": runs, "same": same,
              "overhead": overhead, "estimates": estimates,
              "cost": {"extract_per_media_second": extract_cost,
                       "per_encoder_per_media_second": {k: v / media_s for k, v in sorted(enc.items())},
                       "qc_per_media_second": qc_cost, "qc_measure_seconds_local": measure,
                       "efficiency_extract": eff_ext, "efficiency_qc": eff_qc, "startup_seconds": startup},
              "load_average_at_end": load(), "note": args.note}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    atomic_write_text(out.with_suffix(".md"), to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
