"""Context-aware encoder fine-tuning on MELD (issue 15): fine-tune a recipe (dialogue context in the input,
EmoBERTa-style; optionally only the top k layers from cached frozen states), record its cost — minutes
building the frozen-layer cache and minutes training, separately — the encoder's own dev/test scores,
encoding speed, then encode MELD train/dev/test once so the dialogue benchmark can use the folder:

    .venv/bin/python benchmarks/bench_ctx_finetune.py --recipe minilm-fast --out ../ft/minilm-ctx --label minilm-ctx
    .venv/bin/python benchmarks/bench_ctx_finetune.py --base mpnet --context-past 2 --context-future 1 \
        --train-layers 4 --max-length 128 --out ../ft/mpnet-ctx --label mpnet-ctx
    .venv/bin/python benchmarks/bench_meld_text.py --encoders mpnet-ctx=../ft/mpnet-ctx --seeds 5

(``merc train ... --text-encoder ../ft/mpnet-ctx`` uses it directly.) Writes
benchmarks/results/ctx_finetune/ctx_finetune_<label>.md (distill/ with --teacher) and .json with machine, command,
commit and date.

Resumable: fine-tuning checkpoints itself and the frozen-layer cache is kept per chunk; a finished folder is
reused and only the report rewritten. ``--subset N`` keeps the first N conversations of every split (a cost
sample: the report says so and says the full-corpus times are extrapolated, linearly in utterances).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import epoch_table, pct, results_dir  # noqa: E402
from bench_meld_text import DATA, encode_splits, machine  # noqa: E402

FLAGS = ("base", "context_past", "context_future", "train_layers", "max_length", "epochs", "batch_size", "lr",
         "head_lr", "class_weights", "cb_beta", "seed", "pooling", "teacher", "distill_alpha", "distill_temperature")


def report(res: dict[str, Any]) -> str:
    """The markdown report of one benchmark result (``res`` as written to the .json)."""
    meta, c = res["finetune"], res["finetune"]["config"]
    beta = f" (β = {c['cb_beta']})" if c["class_weights"] == "effective" else ""
    lc = meta.get("layer_cache")
    ctx = meta.get("context")
    n_full = res.get("full_train_utterances")
    sub = res.get("subset")
    lines = [f"# Context-aware fine-tuned text encoder `{res['label']}` on {res['corpus']}", "",
             f"Command: `{res['command']}`", "",
             f"Machine: {res['machine']}; {res['date']}; {res['threads']} thread(s).", "",
             "Provenance:", "", res["provenance_md"], ""]
    if sub:
        lines += [f"**Cost sample**: only the first {sub} conversations of each split were used "
                  f"({meta['n_train']} training utterances). The scores below are **not** MELD figures; the "
                  "full-corpus times are **extrapolated** linearly in utterances, not measured.", ""]
    lines += [f"Setup: base `{meta['base']}`, input `{meta['template']}` per turn, " +
              (f"context {ctx['past']} past / {ctx['future']} future turns around the target, marker "
               f"`{ctx['sep']}`, embedding = mean over the {'target' if ctx.get('pool') == 'target' else 'whole input'}"
               "'s tokens, " if ctx else "no dialogue context, ") +
              f"max {c['max_length']} tokens; " +
              (f"top {c['train_layers']} layers trained from cached states of the {lc['frozen_layers']} frozen "
               f"lower layers ({c.get('layer_cache_dtype', 'float16')} on disk, {lc['train_tokens']} training "
               "tokens); " if lc else "all layers trained end to end; ") +
              f"AdamW lr {c['lr']} (head {c['head_lr']}), batch {c['batch_size']}, {c['epochs']} epochs, "
              f"class weights {c['class_weights']}{beta}, seed {c['seed']}. "
              "Kept epoch: best **dev** weighted F1; test once.", ""]
    if c.get("teacher"):
        tp = res.get("teacher_pass") or {}
        lines += [f"Distilled from the teacher `{c['teacher']}` (its own classifier's logits, "
                  f"`{meta.get('teacher_fingerprint')}`): "
                  f"loss (1 − α)·CE + α·T²·KL with α = {c['distill_alpha']}, T = {c['distill_temperature']}. Teacher "
                  f"pass over the {tp.get('n', '?')} train utterances: "
                  + ("reused from the feature cache" if tp.get("cache_hit") else f"{tp.get('seconds', 0):.0f} s")
                  + " (not in the cost table below).", ""]
    lines += epoch_table(meta)
    t, d = meta.get("test") or {}, meta.get("dev") or {}
    lines += ["", "| its own classifier | weighted F1 (%) | accuracy (%) | macro F1 (%) |", "|---|---:|---:|---:|",
              f"| dev (kept epoch) | {pct(d.get('weighted_f1'))} | {pct(d.get('accuracy'))} | "
              f"{pct(d.get('macro_f1'))} |",
              f"| test | {pct(t.get('weighted_f1'))} | {pct(t.get('accuracy'))} | {pct(t.get('macro_f1'))} |", ""]
    per = t.get("per_class_f1") or {}
    if per:  # in the corpus label order
        lines += ["Its own classifier's test F1 per class (%):", "",
                  "| " + " | ".join(per) + " |", "|" + "---:|" * len(per),
                  "| " + " | ".join(pct(v) for v in per.values()) + " |", ""]
    if meta.get("test_rescored"):
        r = meta["test_rescored"]
        lines += [f"The test row was rescored after fine-tuning ({r['why']}); the score first recorded was "
                  f"{pct(r['old_weighted_f1'])} weighted F1.", ""]
    # cost: wall seconds, and CPU seconds of the process (with 1 thread: the time on a core of its own)
    hist = meta["history"]
    rows = [("frozen-layer cache build (train + dev)", (lc or {}).get("build_seconds") or 0.0,
             (lc or {}).get("build_cpu_seconds"), "build"),
            ("training passes (all epochs)", sum(h.get("train_seconds", 0.0) for h in hist),
             sum(h.get("train_cpu_seconds", 0.0) for h in hist), "train"),
            ("dev passes (one per epoch)", sum(h.get("dev_seconds", 0.0) for h in hist),
             sum(h.get("dev_cpu_seconds", 0.0) for h in hist), "dev")]
    n_dev = res.get("dev_utterances") or 1
    scale = {"build": (n_full + res.get("full_dev_utterances", 0)) / (meta["n_train"] + n_dev),
             "train": n_full / meta["n_train"], "dev": res.get("full_dev_utterances", 0) / n_dev} if sub else {}
    head = "| cost | wall s | wall min | CPU min |" + (" wall min, full corpus (extrapolated) | CPU min, full "
                                                      "corpus (extrapolated) |" if sub else "")
    lines += [head, "|---|---:|---:|---:|" + ("---:|---:|" if sub else "")]

    def cells(wall: float, cpu: float | None, k: float | None) -> str:
        out = f" {wall:.0f} | {wall / 60:.1f} | {'—' if cpu is None else f'{cpu / 60:.1f}'} |"
        if k is not None:
            out += f" {wall * k / 60:.1f} | {'—' if cpu is None else f'{cpu * k / 60:.1f}'} |"
        return out

    for name, wall, cpu, kind in rows:
        lines.append(f"| {name} |" + cells(wall, cpu, scale.get(kind)))
    tot_wall = sum(r[1] for r in rows)
    tot_cpu = None if any(r[2] is None for r in rows) else sum(r[2] for r in rows)
    total = f"| total |{cells(tot_wall, tot_cpu, None)}"
    if sub:
        ext_w = sum(r[1] * scale[r[3]] for r in rows)
        ext_c = None if tot_cpu is None else sum(r[2] * scale[r[3]] for r in rows)
        total += f" {ext_w / 60:.1f} | {'—' if ext_c is None else f'{ext_c / 60:.1f}'} |"
    lines += [total, "", f"Fine-tuning wall time as recorded by merc (training + dev passes, no cache build, "
              f"no test pass): {meta['seconds']:.0f} s."]
    enc = res.get("encode") or {}
    if enc:
        lines += ["", "Encoding with the tuned folder (feature cache, the same context rendering as `merc predict`): "
                  + ", ".join(f"{s} {e['n']} utt " + ("cached" if e["cache_hit"] else
                                                      f"{e['seconds']:.0f} s = {e['n'] / max(e['seconds'], 1e-9):.1f} "
                                                      "utt/s") for s, e in enc.items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=None, help="a preset of merc.encoders.finetune.RECIPES (flags override it)")
    ap.add_argument("--base", default=None)
    ap.add_argument("--context-past", type=int, default=None)
    ap.add_argument("--context-future", type=int, default=None)
    ap.add_argument("--train-layers", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--head-lr", type=float, default=None)
    ap.add_argument("--class-weights", default=None)
    ap.add_argument("--cb-beta", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--pooling", choices=("mean", "target"), default=None)
    ap.add_argument("--teacher", default=None, help="distil this tuned folder (merc.encoders.distill)")
    ap.add_argument("--distill-alpha", type=float, default=None)
    ap.add_argument("--distill-temperature", type=float, default=None)
    ap.add_argument("--out", required=True, help="folder for the tuned encoder (kept outside the repository)")
    ap.add_argument("--label", required=True)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--subset", type=int, default=None, help="first N conversations per split (cost sample)")
    ap.add_argument("--no-encode", action="store_true", help="skip encoding the corpus with the tuned folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results-dir", default=None,
                    help="default benchmarks/results/ctx_finetune, or benchmarks/results/distill with --teacher")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from _common import atomic_write_text, write_json

    from merc.data import load_corpus
    from merc.data.schema import Corpus
    from merc.encoders.finetune import META_FILE, RECIPES, FinetuneConfig, finetune_text_encoder
    from merc.io import provenance, provenance_markdown

    corpus = load_corpus("meld", args.data_dir)
    def labelled(c: Corpus, split: str) -> int:
        return sum(u.emotion is not None for u in c.utterances(split))

    n_full, n_full_dev = labelled(corpus, "train"), labelled(corpus, "dev")
    if args.subset:
        corpus = Corpus(corpus.name, {s: cs[:args.subset] for s, cs in corpus.splits.items()}, corpus.labels,
                        root=corpus.root)
    values = dict(RECIPES[args.recipe]) if args.recipe else {}
    values.update({k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None})
    config = FinetuneConfig(**values)
    out = Path(args.out)
    teacher_pass = None
    if config.teacher:  # the teacher's pass, timed on its own (the fine-tune then reads it from the cache)
        from merc.encoders.distill import teacher_features
        f = teacher_features(config.teacher, corpus, "train")
        teacher_pass = {"n": len(f.ids), "seconds": f.meta.get("seconds"), "cache_hit": f.meta.get("cache_hit", True)}
    if not (out / META_FILE).is_file():
        finetune_text_encoder(corpus, out, config)
    meta = json.loads((out / META_FILE).read_text())
    encode = {} if args.no_encode else encode_splits(corpus, str(out))
    prov = provenance()
    res = {"label": args.label, "corpus": "MELD" + (f" (first {args.subset} conversations per split)"
                                                   if args.subset else ""),
           "machine": machine(), "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
           "command": " ".join([".venv/bin/python", "benchmarks/bench_ctx_finetune.py", *sys.argv[1:]]),
           "provenance": prov, "provenance_md": provenance_markdown(prov), "subset": args.subset,
           "full_train_utterances": n_full, "full_dev_utterances": n_full_dev,
           "dev_utterances": labelled(corpus, "dev"), "finetune": meta, "encode": encode,
           "teacher_pass": teacher_pass}
    results = Path(args.results_dir or results_dir("distill" if config.teacher else "ctx_finetune"))
    write_json(results / f"ctx_finetune_{args.label}.json", res)
    text = report(res)
    atomic_write_text(results / f"ctx_finetune_{args.label}.md", text)
    print(text)


if __name__ == "__main__":
    main()
