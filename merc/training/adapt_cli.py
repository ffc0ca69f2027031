"""``merc adapt``: train a stage-2 emotion adapter on unimodal corpora over a frozen stage-1 encoder.

    merc adapt --modality text --encoder mpnet \\
        --corpus goemotions=../shared/data/goemotions crowdflower=../shared/data/crowdflower_text_emotion \\
                 isear=../shared/data/isear --per-class 2000 --out adapters/text-mpnet

Text encoders are merc's (``mpnet``, ``minilm``, a sentence-transformers folder). Audio and face encoders
come from the encoder registry of the multimodal plumbing once it lands (``merc.encoders.get_item_encoder``);
until then ``--modality audio|face`` stops with a clear message.
"""
from __future__ import annotations

import argparse
import json

from merc.errors import ConfigError, MissingDependencyError


def _encoder(modality: str, name: str, *, progress: bool):
    if modality == "text":
        from merc.training.adapt_data import CachedTextEncoder
        return CachedTextEncoder(name, progress=progress)
    try:
        from merc.encoders import get_item_encoder  # provided by the multimodal plumbing (branch enc)
    except ImportError:
        raise MissingDependencyError(f"{modality} stage-1 encoders are not available in this merc yet; "
                                     "use the Python API train_adapter(..., encoder=callable_encoder(...))") from None
    return get_item_encoder(modality, name)


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
    encoder = _encoder(args.modality, args.encoder, progress=not args.quiet)
    res = train_adapter(args.modality, corpora, encoder, args.out, per_class=args.per_class, config=config,
                        overwrite=args.overwrite, progress=not args.quiet)
    h = res.metrics["heldout"]
    print(json.dumps({"out": str(res.out_dir), "n_train": res.metrics["n_train"], "n_heldout": res.metrics["n_heldout"],
                      "best_epoch": res.metrics["best_epoch"], "heldout_weighted_f1": round(h["weighted_f1"], 4),
                      "heldout_accuracy": round(h["accuracy"], 4),
                      "per_class_f1": {k: round(v, 4) for k, v in h["per_class_f1"].items()}}, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("adapt", help="train a stage-2 emotion adapter on unimodal corpora",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modality", required=True, choices=["text", "audio", "face"])
    p.add_argument("--encoder", required=True, help="stage-1 encoder name (text: mpnet, minilm or a folder)")
    p.add_argument("--corpus", required=True, nargs="+", metavar="NAME=DIR",
                   help="text: goemotions, crowdflower, isear, jsonl; audio: cremad, ravdess, savee, tess, jsonl; "
                        "face: fer2013, rafdb, ckplus, jaffe, jsonl")
    p.add_argument("--per-class", type=int, default=None, help="at most N items per class, pooled over corpora")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample, the held-out split and training")
    p.add_argument("--out", required=True, help="adapter folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an adapter already in --out")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--bottleneck", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=60, help="at most (early stopping on the held-out part)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--heldout", type=float, default=0.1, help="stratified held-out fraction for early stopping")
    p.add_argument("--class-weights", choices=["balanced", "none"], default="balanced")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=adapt_command)
    return p
