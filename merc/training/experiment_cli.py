"""`merc experiment ablation`: MaTAV full / w/o Mamba / w/o MEC over K seeds -> ablation.md + ablation.json.

Each (variant, seed) is one ``merc train``-style run (``merc.training.experiment.run_experiment``: early
stopping on dev, test once) in ``OUT/<variant>/seed_<seed>/``. Today the features are those
``merc train`` supports (text); with text alone MaTAV has no MEC pair, so "w/o MEC" equals "full" there.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from merc.data import DATASETS
from merc.models.matav import ATTENTION, MatavConfig
from merc.training.features import DEFAULT_ENCODERS
from merc.training.trainer import TrainConfig

logger = logging.getLogger(__name__)


def add_matav_arguments(p: argparse.ArgumentParser, *, switches: bool = True, width: bool = True) -> None:
    """MaTAV's model options (for ``merc train --model matav`` and ``merc experiment ablation``);
    ``switches`` adds the ablation flags --no-mamba and --no-mec; ``width`` adds --d-model and --dropout
    (``merc train`` has its own, shared by every model)."""
    g = p.add_argument_group("MaTAV (--model matav)")
    if width:
        g.add_argument("--d-model", type=int, default=MatavConfig.d_model, help="model width")
    g.add_argument("--cross-layers", type=int, default=MatavConfig.n_cross_layers, help="cross-attention layers")
    g.add_argument("--heads", type=int, default=MatavConfig.n_heads, help="attention heads")
    g.add_argument("--attention", choices=ATTENTION, default=MatavConfig.attention,
                   help="modality: each utterance's modality vectors attend to each other (default); "
                        "dialogue: across the utterances of the dialogue too")
    if width:
        g.add_argument("--dropout", type=float, default=MatavConfig.dropout, help="dropout probability")
    g.add_argument("--mec-weight", type=float, default=MatavConfig.mec_weight, help="λ of the MEC loss")
    g.add_argument("--queue-size", type=int, default=MatavConfig.queue_size, help="MEC queue length per modality")
    g.add_argument("--momentum", type=float, default=MatavConfig.momentum, help="EMA momentum of the key encoders")
    g.add_argument("--temperature", type=float, default=MatavConfig.temperature, help="InfoNCE temperature")
    if switches:
        g.add_argument("--no-mamba", action="store_true", help="ablation: per-utterance classifier after fusion")
        g.add_argument("--no-mec", action="store_true", help="ablation: no MEC loss (λ = 0)")


def matav_config(args: argparse.Namespace, **overrides) -> MatavConfig:
    """The MatavConfig the options of ``add_matav_arguments`` describe (input_dims / n_classes are set later
    from the data, as ``run_experiment`` does)."""
    mec = 0.0 if getattr(args, "no_mec", False) else args.mec_weight
    return MatavConfig(**{"d_model": args.d_model, "d_mamba": args.d_model, "n_cross_layers": args.cross_layers,
                          "n_heads": args.heads, "attention": args.attention, "dropout": args.dropout,
                          "mec_weight": mec, "queue_size": args.queue_size, "momentum": args.momentum,
                          "temperature": args.temperature, "use_mamba": not getattr(args, "no_mamba", False),
                          **overrides})


def cmd_ablation(args: argparse.Namespace) -> int:
    from merc.data import load_corpus
    from merc.training.ablation import run_ablation
    from merc.training.experiment import run_experiment
    base = matav_config(args)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                     patience=args.patience, class_weights=args.class_weights)
    corpus = load_corpus(args.dataset, args.data_dir, media_dir=args.media_dir)
    out = Path(args.out)
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    encoders = {"text": [args.text_encoder], "audio": [e for e in args.audio_encoders.split(",") if e],
                "face": [e for e in args.face_encoders.split(",") if e]}

    def train_one(variant: str, config: MatavConfig, seed: int) -> dict:
        summary = run_experiment(dataset=args.dataset, data_dir=args.data_dir, media_dir=args.media_dir,
                                 out=out / variant / f"seed_{seed}", model_config=config,
                                 train_config=replace(tc, seed=seed), modalities=modalities,
                                 encoders={m: e for m, e in encoders.items() if m in modalities},
                                 text_encoder=args.text_encoder, seeds=1, progress=not args.quiet, corpus=corpus,
                                 log=logger.info)
        return {s: {k: v["mean"] for k, v in summary[s].items()} for s in ("dev", "test") if s in summary}

    result = run_ablation(train_one, base, [args.seed + k for k in range(args.seeds)], out,
                          title=f"MaTAV ablation · {args.dataset} · {args.modalities} · {args.text_encoder}")
    print((out / "ablation.md").read_text(), end="")
    print(f"table: {out / 'ablation.md'} and {out / 'ablation.json'} ({len(result['seeds'])} seeds)")
    return 0


def add_parser(sub) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("experiment", help="experiments that train several models (ablation)", formatter_class=fmt)
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    esub.required = True
    a = esub.add_parser("ablation", help="MaTAV full / w/o Mamba / w/o MEC over seeds (mean ± std table)",
                        formatter_class=fmt)
    a.add_argument("--dataset", choices=DATASETS, required=True, help="corpus format")
    a.add_argument("--data-dir", required=True, help="corpus folder")
    a.add_argument("--media-dir", help="folder of the corpus's audio/video (MELD raw clips)")
    a.add_argument("--modalities", default="text", help="comma-separated subset of text,audio,face")
    a.add_argument("--text-encoder", default="mpnet", help="mpnet, minilm, or a sentence-transformers name/path")
    a.add_argument("--audio-encoders", default=",".join(DEFAULT_ENCODERS["audio"]),
                   help="comma-separated audio encoders, concatenated in this order")
    a.add_argument("--face-encoders", default=",".join(DEFAULT_ENCODERS["face"]),
                   help="comma-separated face encoders, concatenated in this order")
    a.add_argument("--seed", type=int, default=0, help="first seed")
    a.add_argument("--seeds", type=int, default=3, help="seeds per variant (seed, seed+1, …)")
    a.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="maximum training epochs")
    a.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="dialogues per batch")
    a.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (AdamW)")
    a.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay,
                   help="AdamW weight decay (not on biases, norms, A_log, D)")
    a.add_argument("--patience", type=int, default=TrainConfig.patience,
                   help="stop after this many epochs without a better dev weighted F1")
    a.add_argument("--class-weights", choices=("none", "balanced", "sqrt"), default=TrainConfig.class_weights,
                   help="loss weights per class")
    add_matav_arguments(a, switches=False)
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.add_argument("--out", required=True, help="folder for the runs and the table")
    a.set_defaults(func=cmd_ablation)
