"""``merc adapt``: train a stage-2 emotion adapter on unimodal corpora over a frozen stage-1 encoder.

    merc adapt --modality text --encoder mpnet \\
        --corpus goemotions=../shared/data/goemotions crowdflower=../shared/data/crowdflower_text_emotion \\
                 isear=../shared/data/isear --per-class 2000 --out adapters/text-mpnet
    merc adapt --modality audio --encoder egemaps,resemblyzer \\
        --corpus cremad=DIR ravdess=DIR savee=DIR tess=DIR --per-class 1000 --out adapters/audio
    merc adapt --modality face --encoder fer \\
        --corpus fer2013=DIR/fer2013.csv rafdb=DIR ckplus=DIR jaffe=DIR --per-class 1000 --out adapters/face-fer

Encoders: text — merc's text encoders (mpnet, minilm, a sentence-transformers folder); audio and face — the
registry's (`merc encoder list`: audio egemaps, resemblyzer, compare, wavlm/ecapa with your weights; face fer,
dlib). A comma list is concatenated in order, as `merc train --audio-encoders` / `--face-encoders` does.

The rule for stage 3: `merc train --adapters audio=DIR` accepts an adapter only when the run's encoders of
that modality are the adapter's, in the same order (an adapter over `egemaps,resemblyzer` needs
`--audio-encoders egemaps,resemblyzer`; over `fer` needs `--face-encoders fer`; text: `--text-encoder`).

Audio items are whole clips; face items are still images (FER2013's pixel rows, RAF-DB aligned crops taken
whole; other images: the largest detected face, see --face-crop). Items an encoder cannot use (corrupt file, no
face found, too little speech) are left out of training, counted by reason in metrics.json / config.json,
and printed below.
"""
from __future__ import annotations

import argparse
import json

from merc.errors import ConfigError


def _encoder(modality: str, name: str, *, progress: bool, face_crop: str = "auto"):
    if modality == "text":
        if "," in name:
            raise ConfigError(f"--encoder {name!r}: a text adapter takes one text encoder")
        from merc.training.adapt_data import CachedTextEncoder
        return CachedTextEncoder(name, progress=progress)
    from merc.encoders.items import item_encoder
    return item_encoder(modality, name, crop=face_crop, progress=progress)


def adapt_command(args: argparse.Namespace) -> int:
    import torch

    from merc.training.adapt import AdaptTrainConfig, train_adapter
    from merc.training.adapt_data import parse_corpus_specs
    if args.threads:
        torch.set_num_threads(args.threads)
    corpora = parse_corpus_specs(args.corpus)
    if args.per_class is not None and args.per_class < 1:
        raise ConfigError(f"--per-class must be >= 1, got {args.per_class}")
    config = AdaptTrainConfig(hidden=args.hidden, bottleneck=args.bottleneck, dropout=args.dropout,
                              epochs=args.epochs, lr=args.lr, heldout=args.heldout, seed=args.seed,
                              class_weights=args.class_weights)
    encoder = _encoder(args.modality, args.encoder, progress=not args.quiet, face_crop=args.face_crop)
    res = train_adapter(args.modality, corpora, encoder, args.out, per_class=args.per_class, config=config,
                        overwrite=args.overwrite, progress=not args.quiet)
    h = res.metrics["heldout"]
    print(json.dumps({"out": str(res.out_dir), "n_train": res.metrics["n_train"], "n_heldout": res.metrics["n_heldout"],
                      "best_epoch": res.metrics["best_epoch"], "heldout_weighted_f1": round(h["weighted_f1"], 4),
                      "heldout_accuracy": round(h["accuracy"], 4),
                      "unusable": {k: res.metrics["unusable"][k] for k in ("n", "reasons")},
                      "per_class_f1": {k: round(v, 4) for k, v in h["per_class_f1"].items()}}, indent=2))
    return 0


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every flag's default."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("adapt", help="train a stage-2 emotion adapter on unimodal corpora",
                              description=__doc__, formatter_class=_Formatter)
    p.add_argument("--modality", required=True, choices=["text", "audio", "face"], help="modality of the corpora")
    p.add_argument("--encoder", required=True,
                   help="stage-1 encoder (text: mpnet, minilm or a folder; audio: egemaps, resemblyzer, compare, …; "
                        "face: fer, dlib); audio/face: a comma list is concatenated in order, and `merc train "
                        "--adapters` then needs the same list as --audio-encoders / --face-encoders")
    p.add_argument("--corpus", required=True, nargs="+", metavar="NAME=DIR",
                   help="text: goemotions, crowdflower, isear, jsonl; audio: cremad, ravdess, savee, tess, jsonl; "
                        "face: fer2013, rafdb, ckplus, jaffe, jsonl")
    p.add_argument("--face-crop", choices=["auto", "detect", "whole"], default="auto",
                   help="face images: auto = FER2013 pixels and RAF-DB aligned crops whole, the largest detected face "
                        "elsewhere; detect = always detect; whole = the whole image is the face")
    p.add_argument("--per-class", type=int, default=None, help="at most N items per class, pooled over corpora")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample, the held-out split and training")
    p.add_argument("--out", required=True, help="adapter folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an adapter already in --out")
    p.add_argument("--hidden", type=int, default=512, help="width of the adapter's hidden layer")
    p.add_argument("--bottleneck", type=int, default=128, help="width of the refined feature (stage-3 input)")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout probability")
    p.add_argument("--epochs", type=int, default=60, help="at most (early stopping on the held-out part)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (AdamW)")
    p.add_argument("--heldout", type=float, default=0.1, help="stratified held-out fraction for early stopping")
    p.add_argument("--class-weights", choices=["balanced", "none"], default="balanced",
                   help="loss weights per class (inverse frequency)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=adapt_command)
    return p
