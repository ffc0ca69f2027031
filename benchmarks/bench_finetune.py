"""Emotion-tuned stage-1 text encoder: fine-tune a sentence encoder on MELD train (dev-selected epoch),
then encode MELD with it once (filling the feature cache the dialogue benchmark reads). Writes
benchmarks/results/finetune/finetune_<label>.md and .json: per-epoch loss and dev scores, the encoder's own
test score, wall times of fine-tuning and of encoding.

Resumable: the fine-tuning checkpoints itself (see merc.encoders.finetune); a finished folder is reused.

    .venv/bin/python benchmarks/bench_finetune.py --base mpnet --out ../ft/mpnet-meld --label mpnet-meld
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import epoch_table, results_dir  # noqa: E402
from bench_meld_text import DATA, encode_splits, machine  # noqa: E402

OUT = results_dir("finetune")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="mpnet")
    ap.add_argument("--out", required=True, help="folder for the tuned encoder (kept outside the repository)")
    ap.add_argument("--label", default="mpnet-meld")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from merc.data import load_corpus
    from merc.encoders.finetune import META_FILE, FinetuneConfig, finetune_text_encoder
    corpus = load_corpus("meld", str(DATA))
    out = Path(args.out)
    config = FinetuneConfig(base=args.base, epochs=args.epochs)
    if not (out / META_FILE).is_file():
        finetune_text_encoder(corpus, out, config)
    meta = json.loads((out / META_FILE).read_text())
    encode = encode_splits(corpus, str(out))
    from _common import atomic_write_text, write_json

    from merc.io import provenance, provenance_markdown
    prov = provenance()
    res = {"label": args.label, "machine": machine(), "provenance": prov, "finetune": meta, "encode": encode}
    write_json(OUT / f"finetune_{args.label}.json", res)
    c = meta["config"]
    lines = [f"# Emotion-tuned text encoder `{args.label}`: {meta['base']} fine-tuned on MELD utterance labels", "",
             f"Command: `.venv/bin/python benchmarks/bench_finetune.py --base {args.base} --out <folder> --label "
             f"{args.label} "
             f"--epochs {args.epochs} --threads {args.threads}` (equivalently `merc encoder finetune --dataset meld "
             f"--data-dir ../shared/data/meld --base {args.base} --epochs {args.epochs} --threads {args.threads} "
             "--out <folder>`)", "",
             f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}; {args.threads} threads.", "",
             "Provenance:", "", provenance_markdown(prov), "",
             f"Setup: input `{meta['template']}` per utterance (no neighbouring utterances), max {c['max_length']} "
             "tokens, "
             f"sentence embedding → dropout {c['dropout']} → linear; AdamW lr {c['lr']} (head {c['head_lr']}), weight "
             "decay "
             f"{c['weight_decay']}, batch {c['batch_size']}, {int(100 * c['warmup'])}% linear warm-up then linear "
             "decay, "
             f"class weights {c['class_weights']}, seed {c['seed']}; {meta['n_train']} training utterances. "
             "The kept epoch is the one with the best **dev** weighted F1; test scored once with it.", "",
             *epoch_table(meta)]
    t = meta["test"]
    lines += ["", "Its own classifier on test (utterance only, no dialogue context): weighted F1 "
                  f"{100 * t['weighted_f1']:.2f}, "
              f"accuracy {100 * t['accuracy']:.2f}, macro F1 {100 * t['macro_f1']:.2f}.", "",
              f"Fine-tuning wall time: {meta['seconds']:.0f} s ({meta['seconds'] / 60:.1f} min) including the "
              "per-epoch dev passes and the test pass.", "",
              "Encoding MELD with the tuned encoder (feature cache): " + ", ".join(
                  f"{s} {e['n']} utt " + ("cached" if e["cache_hit"] else f"{e['seconds']:.0f} s")
                  for s, e in encode.items()) + "."]
    atomic_write_text(OUT / f"finetune_{args.label}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
