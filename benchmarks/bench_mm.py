"""Multimodal benchmark on the generated corpora (``merc.testing.mmcorpus``;
benchmarks/results/multimodal/mm_corpus.md):
does the pipeline use each modality when that modality carries information?

For each setting (``signal``: prosody and face expression follow the label for a fraction of utterances;
``control``: they are drawn independently of the label) and each cell (a model and a modality set), train
K seeds (dev-selected, test once) and report test weighted F1 / accuracy / macro F1 as mean ± std.
Cells are resumable: each finished cell is a JSON file under ``--work``; rerunning skips it.

    .venv/bin/python benchmarks/bench_mm.py --signal ../data/mm_signal --control ../data/mm_control \
        --table modalities --seeds 3          # -> benchmarks/results/multimodal/mm_modalities.md / .json

MaTAV and its ablations on the same corpus: benchmarks/bench_matav.py (--label mm_signal).

What it cannot say: real-world multimodal accuracy (that needs MELD.Raw or IEMOCAP media, which we cannot
ship or download here). Speech is espeak-ng, faces are still photos warped by the generator.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from _common import atomic_write_text, write_json  # noqa: E402

from merc.data import load_corpus  # noqa: E402
from merc.io import provenance, provenance_markdown  # noqa: E402
from merc.models.dialogue import DialogueConfig  # noqa: E402
from merc.training.experiment import run_experiment  # noqa: E402
from merc.training.trainer import TrainConfig  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "multimodal"
ENCODERS = {"text": ["mpnet"], "audio": ["egemaps", "resemblyzer"], "face": ["fer"]}
MODALITY_SETS = ["text", "audio", "face", "text,audio", "text,face", "text,audio,face"]


def cells(table: str) -> list[tuple[str, str, str]]:
    """(cell name, model, modalities)."""
    if table == "modalities":
        return [(f"mamba:{m}", "mamba", m) for m in MODALITY_SETS]
    raise SystemExit(f"unknown table {table!r}")


def model_config(model: str):
    if model != "mamba":
        raise SystemExit(f"unknown model {model!r} (MaTAV: benchmarks/bench_matav.py)")
    return DialogueConfig(kind="mamba")


def run_cell(corpus, setting: str, root: str, name: str, model: str, modalities: str, seeds: int, work: Path,
             epochs: int) -> dict:
    stem = f"{setting}__{name.replace(':', '__').replace(',', '+')}.json"
    part = work / stem
    for done in [part] + sorted(work.parent.glob(f"*/{stem}")):  # the same cell finished by another table
        if done.is_file():
            return json.loads(done.read_text())
    t0 = time.time()
    mods = modalities.split(",")
    summary = run_experiment(dataset="meld", data_dir=root, media_dir=root, out=work / "runs" / setting / name,
                             model_config=model_config(model), train_config=TrainConfig(epochs=epochs),
                             modalities=mods, encoders={m: ENCODERS[m] for m in mods}, text_encoder="mpnet",
                             seeds=seeds, progress=False, corpus=corpus)
    res = {"setting": setting, "cell": name, "model": model, "modalities": modalities, "seeds": summary["seeds"],
           "dev": summary["dev"], "test": summary["test"], "extraction": summary.get("extraction"),
           "train_seconds": summary["train_seconds"], "seconds": round(time.time() - t0, 1),
           "date": time.strftime("%Y-%m-%d %H:%M")}
    write_json(part, res)
    return res


def fmt(ms: dict) -> str:
    return f"{100 * ms['mean']:.2f} ± {100 * ms['std']:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signal", required=True, help="generated corpus where audio/face follow the label")
    ap.add_argument("--control", required=True, help="generated corpus where audio/face ignore the label")
    ap.add_argument("--table", choices=("modalities",), default="modalities")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--settings", default="signal,control", help="which corpora to run (signal, control)")
    ap.add_argument("--report-only", action="store_true",
                    help="write the table from the cells finished so far (unfinished cells marked), train nothing")
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--work", default="/tmp/merc_bench_mm", help="run directories and per-cell results")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    work = Path(args.work) / args.table
    prov = provenance()
    results = []
    settings = [s for s in ("signal", "control") if s in args.settings.split(",")]
    for setting, root in [(s, {"signal": args.signal, "control": args.control}[s]) for s in settings]:
        corpus = None if args.report_only else load_corpus("meld", root, media_dir=root)
        for name, model, mods in cells(args.table):
            if args.report_only:
                stem = f"{setting}__{name.replace(':', '__').replace(',', '+')}.json"
                found = [p for p in [work / stem] + sorted(work.parent.glob(f"*/{stem}")) if p.is_file()]
                if not found:
                    continue
                r = json.loads(found[0].read_text())
            else:
                r = run_cell(corpus, setting, root, name, model, mods, args.seeds, work, args.epochs)
            results.append(r)
            print(f"{setting:8s} {name:32s} test wF1 {fmt(r['test']['weighted_f1'])}", flush=True)
    roots = {"signal": args.signal, "control": args.control}
    gen = {s: json.loads((Path(roots[s]) / "generation.json").read_text())
           if (Path(roots[s]) / "generation.json").is_file() else {} for s in settings}
    by = {(r["setting"], r["cell"]): r for r in results}
    cols = [s for s in ("signal", "control") if s in settings]
    lines = [f"# Generated multimodal corpus: {args.table} table", "",
             provenance_markdown(prov), "",
             f"Command: `.venv/bin/python benchmarks/bench_mm.py --signal {args.signal} --control {args.control} "
             f"--table {args.table} --seeds {args.seeds} --epochs {args.epochs} --settings {','.join(settings)}`", "",
             "Data: real MELD dialogues (text, speakers, labels) re-voiced with espeak-ng, one voice and one face "
             "photo per speaker (benchmarks/results/multimodal/mm_corpus.md). *signal*: for a fraction of "
             "utterances prosody and face expression follow the label; *control*: both drawn independently of the "
             "label. Encoders: "
             f"text {'+'.join(ENCODERS['text'])} (frozen), audio {'+'.join(ENCODERS['audio'])}, face "
             f"{'+'.join(ENCODERS['face'])} (1 fps). Each cell: "
             f"{args.seeds} seeds, early stopping on dev weighted F1, test scored once; mean ± std (%).", "",
             "This answers one question — does the pipeline use a modality when it carries information? — and "
             "says nothing about real-world multimodal accuracy (no MELD.Raw / IEMOCAP media here).", "",
             "| cell | " + " | ".join(f"{c}: test wF1 | {c}: test acc | {c}: macro F1 | {c}: dev wF1" for c in cols)
             + " |", "|---|" + "---:|" * (4 * len(cols))]
    for name, _, _ in cells(args.table):
        row = [name]
        for c in cols:
            r = by.get((c, name))
            row += ([fmt(r["test"]["weighted_f1"]), fmt(r["test"]["accuracy"]), fmt(r["test"]["macro_f1"]),
                     fmt(r["dev"]["weighted_f1"])] if r else ["not run"] * 4)
        lines.append("| " + " | ".join(row) + " |")
    for setting in cols:  # the cell with the most modalities reports every modality's extraction
        found = [r for r in results if r["setting"] == setting and r.get("extraction")]
        if not found:
            continue
        ext = max(found, key=lambda r: len(r["modalities"].split(",")))["extraction"]
        lines += ["", f"Utterances lacking a modality ({setting} corpus; they keep their place and are scored):"]
        for split, per in ext.items():
            parts = []
            for m, r in per.items():
                why = ", ".join(f"{k}: {v}" for k, v in r["reasons"].items())
                parts.append(f"{m} {r['absent']} of {r['utterances']}" + (f" ({why})" if r["absent"] else ""))
            lines.append(f"- {split}: " + "; ".join(parts))
    lines += ["", f"Per-seed dev scores and timings: `{args.table}` cells in mm_{args.table}.json."]
    stem = OUT / f"mm_{args.table}"
    write_json(stem.with_suffix(".json"), {"provenance": prov, "generation": gen, "results": results,
                                           "mean_train_seconds": float(np.mean([np.mean(r["train_seconds"])
                                                                                for r in results] or [0]))})
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
