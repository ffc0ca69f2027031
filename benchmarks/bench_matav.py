"""MaTAV next to the Mamba dialogue model (and, given an adapter, the identity-transfer model) on one corpus:
matav, matav --no-mec, matav --no-mamba, matav --attention dialogue, mamba; K seeds each, dev-selected
checkpoints, test scored once per seed. Writes benchmarks/results/matav/matav_<label>.md and .json.

    # MELD text (the one real modality here)
    .venv/bin/python benchmarks/bench_matav.py --label meld_text_minilm --data-dir ../shared/data/meld \
        --modalities text --text-encoder minilm --seeds 5
    # the generated multimodal corpus (benchmarks/make_mm_corpus.py)
    .venv/bin/python benchmarks/bench_matav.py --label mm_signal --data-dir ../data/mm_signal \
        --media-dir ../data/mm_signal --modalities text,audio,face --seeds 3

Resumable: every row is a multi-seed run directory under ``--work`` trained with ``resume=True`` (finished
seeds are kept), so a killed benchmark continues where it stopped. ``--rows`` picks rows; ``--report-only``
rewrites the table from what is finished.

With one modality there is no MEC pair (text–audio, audio–face, text–face): ``matav --no-mec`` is then the
same model trained the same way as ``matav`` (see merc/models/matav.py), so that row is not trained again;
the table says so instead of repeating the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from merc.data import load_corpus  # noqa: E402
from merc.io import provenance, provenance_markdown  # noqa: E402
from merc.models.dialogue import DialogueConfig  # noqa: E402
from merc.models.matav import MatavConfig  # noqa: E402
from merc.training.experiment import run_experiment  # noqa: E402
from merc.training.trainer import TrainConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_write_text, pm, write_json  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "matav"
ROWS = {  # name -> (title, model config)
    "mamba": ("Mamba dialogue model (`--model mamba`)", DialogueConfig(kind="mamba")),
    "transfer": ("identity transfer: Mamba over stage-2 adapted features (`--adapters`)", DialogueConfig(kind="mamba")),
    "matav": ("MaTAV (`--model matav`)", MatavConfig()),
    "matav-no-mec": ("MaTAV w/o MEC (`--no-mec`)", MatavConfig(mec_weight=0.0)),
    "matav-no-mamba": ("MaTAV w/o Mamba (`--no-mamba`)", MatavConfig(use_mamba=False)),
    "matav-attn-dialogue": ("MaTAV, attention across the dialogue (`--attention dialogue`)",
                            MatavConfig(attention="dialogue")),
}
METRICS = ("weighted_f1", "accuracy", "macro_f1")


def per_seed_metrics(run: Path, seeds: list[int]) -> list[dict]:
    out = []
    for s in seeds:
        f = run / f"seed_{s}" / "metrics.json" if len(seeds) > 1 else run / "metrics.json"
        if f.is_file():
            out.append(json.loads(f.read_text()))
    return out


def row_result(name: str, run: Path, seeds: list[int], labels: list[str]) -> dict | None:
    ms = per_seed_metrics(run, seeds)
    if len(ms) < len(seeds):
        return None
    res = {"row": name, "seeds": seeds, "run": str(run),
           "train_seconds": [round(m["train_seconds"], 1) for m in ms],
           "best_epoch": [m["best_epoch"] for m in ms]}
    for split in ("dev", "test"):
        res[split] = {k: {"mean": float(np.mean([m[split][k] for m in ms])),
                          "std": float(np.std([m[split][k] for m in ms], ddof=1)) if len(ms) > 1 else 0.0,
                          "values": [m[split][k] for m in ms]} for k in METRICS}
    pc = np.array([[m["test"]["per_class_f1"][lab] if isinstance(m["test"]["per_class_f1"], dict)
                    else m["test"]["per_class_f1"][i] for i, lab in enumerate(labels)] for m in ms])
    res["test_per_class_f1"] = {lab: float(pc[:, i].mean()) for i, lab in enumerate(labels)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="results go to benchmarks/results/matav/matav_<label>.md/.json")
    ap.add_argument("--dataset", default="meld")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--media-dir", default=None)
    ap.add_argument("--modalities", default="text")
    ap.add_argument("--text-encoder", default="mpnet")
    ap.add_argument("--audio-encoders", default="egemaps,resemblyzer")
    ap.add_argument("--face-encoders", default="fer")
    ap.add_argument("--adapters", default=None, metavar="MOD=DIR,...", help="stage-2 adapters for the transfer row")
    ap.add_argument("--rows", default="mamba,transfer,matav,matav-no-mec,matav-no-mamba,matav-attn-dialogue")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/merc-bench-runs/matav", help="run directories (resumable)")
    ap.add_argument("--report-only", action="store_true", help="write the table from finished rows, train nothing")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise SystemExit(f"--rows: unknown {bad}; choose from {', '.join(ROWS)}")
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    encoders = {"text": [args.text_encoder], "audio": args.audio_encoders.split(","),
                "face": args.face_encoders.split(",")}
    encoders = {m: e for m, e in encoders.items() if m in mods}
    adapters = dict(kv.split("=", 1) for kv in args.adapters.split(",")) if args.adapters else {}
    seeds = list(range(args.seeds))
    work = Path(args.work) / args.label
    corpus = load_corpus(args.dataset, args.data_dir, media_dir=args.media_dir)
    labels = list(corpus.labels)
    no_pair = not MatavConfig(input_dims={m: 1 for m in mods}).has_mec
    prov, t0 = provenance(), time.time()
    results: dict[str, dict | None] = {}
    notes: dict[str, str] = {}
    for name in rows:
        if name == "matav-no-mec" and no_pair:
            notes[name] = ("= MaTAV: with the single modality " + ",".join(mods) + " there is no MEC pair, so λ has "
                           "nothing to weigh; the same model, trained the same way (not trained again)")
            results[name] = None
            continue
        if name == "transfer" and not adapters:
            notes[name] = "not run: no `--adapters` given"
            results[name] = None
            continue
        run = work / name
        if not args.report_only and row_result(name, run, seeds, labels) is None:
            config = ROWS[name][1]
            run_experiment(dataset=args.dataset, data_dir=args.data_dir, media_dir=args.media_dir, out=run,
                           model_config=config, train_config=TrainConfig(epochs=args.epochs, seed=0),
                           modalities=mods, encoders=encoders, text_encoder=args.text_encoder, seeds=len(seeds),
                           progress=False, corpus=corpus, resume=True,
                           adapters=adapters if name == "transfer" else None)
        results[name] = row_result(name, run, seeds, labels)
        if results[name] is None:
            notes[name] = "not run"
        else:
            print(f"{name:22s} dev wF1 {pm(results[name]['dev']['weighted_f1'])}  "
                  f"test wF1 {pm(results[name]['test']['weighted_f1'])}", flush=True)
    write_json(OUT / f"matav_{args.label}.json", {"label": args.label, "provenance": prov, "args": vars(args),
                                                  "rows": results, "notes": notes})
    cmd = " ".join(["benchmarks/bench_matav.py"] + sys.argv[1:])
    lines = [f"# MaTAV ablation and baselines · {args.label}", "", provenance_markdown(prov), "",
             f"Command: `.venv/bin/python {cmd}` ({args.threads} torch thread(s) per run; wall time of this "
             f"invocation {(time.time() - t0) / 60:.1f} min, rows finished earlier are reused).", "",
             f"Corpus: {args.dataset} at `{args.data_dir}`; modalities {','.join(mods)}; encoders "
             + "; ".join(f"{m}: {'+'.join(e)}" for m, e in encoders.items())
             + f". {len(seeds)} seeds per row (0..{len(seeds) - 1}), at most {args.epochs} epochs, early stopping "
             "on dev weighted F1 (patience 5), the dev-best epoch scored on test once. MaTAV settings: the "
             "defaults of `merc/models/matav.py` (d_model 128, 6 cross-attention layers, d_align 256, MEC λ 0.3, "
             "queue 4096, momentum 0.995, τ 0.07). Percent, mean ± sample std over seeds.", "",
             "| row | dev wF1 | test wF1 | test acc | test macro F1 | s / seed |", "|---|---:|---:|---:|---:|---:|"]
    for name in rows:
        r = results.get(name)
        if r is None:
            lines.append(f"| {ROWS[name][0]} | {notes.get(name, 'not run')} | | | | |")
            continue
        lines.append(f"| {ROWS[name][0]} | {pm(r['dev']['weighted_f1'])} | {pm(r['test']['weighted_f1'])} | "
                     f"{pm(r['test']['accuracy'])} | {pm(r['test']['macro_f1'])} | "
                     f"{np.mean(r['train_seconds']):.0f} |")
    done = [n for n in rows if results.get(n)]
    if done:
        lines += ["", "Test F1 per class (mean over seeds):", "",
                  "| row | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for n in done:
            lines.append(f"| {n} | " + " | ".join(f"{100 * results[n]['test_per_class_f1'][lab]:.1f}"
                                                  for lab in labels) + " |")
    atomic_write_text(OUT / f"matav_{args.label}.md", "\n".join(lines) + "\n")
    print(f"wrote {OUT / f'matav_{args.label}.md'}")


if __name__ == "__main__":
    main()
