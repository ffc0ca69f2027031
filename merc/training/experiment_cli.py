"""`merc experiment ablation`: MaTAV full / w/o Mamba / w/o MEC over K seeds -> ablation.md + ablation.json.
`merc experiment transfer`: the identity-based transfer table (``merc.training.transfer``) -> transfer.md + .json.

Each (variant, seed) is one ``merc train``-style run (``merc.training.experiment.run_experiment``: early
stopping on dev, test once) in ``OUT/<variant>/seed_<seed>/``. Today the features are those
``merc train`` supports (text); with text alone MaTAV has no MEC pair, so "w/o MEC" equals "full" there.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, replace
from pathlib import Path

from merc.data import DATASETS
from merc.errors import ConfigError
from merc.models.dialogue import KINDS, DialogueConfig
from merc.models.matav import ATTENTION, MatavConfig
from merc.objectives import SCHEMES
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
    from merc.training.ablation import VARIANTS, run_ablation
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

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ConfigError(f"--variants {args.variants!r}: choose from {', '.join(VARIANTS)}")
    result = run_ablation(train_one, base, [args.seed + k for k in range(args.seeds)], out, variants=variants,
                          title=f"MaTAV ablation · {args.dataset} · {args.modalities} · {args.text_encoder}")
    print((out / "ablation.md").read_text(), end="")
    print(f"table: {out / 'ablation.md'} and {out / 'ablation.json'} ({len(result['seeds'])} seeds)")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from merc.data import load_corpus
    from merc.training.adapters import parse_adapters
    from merc.training.experiment import run_experiment
    from merc.training.features import resolve_encoders
    from merc.training.transfer import SYSTEMS, run_transfer
    adapters = parse_adapters(args.adapters)
    if args.tune_adapters and not adapters:
        raise ConfigError("--tune-adapters needs --adapters (there is nothing to fine-tune)")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else None
    unknown = sorted(set(systems or ()) - {k for k, _, _ in SYSTEMS})
    if unknown:
        raise ConfigError(f"--systems {args.systems!r}: unknown {unknown}; choose from {[k for k, _, _ in SYSTEMS]}")
    mc = DialogueConfig(kind=args.model, d_model=args.d_model, n_layers=args.layers, dropout=args.dropout)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                     patience=args.patience, class_weights=args.class_weights)
    encoders = resolve_encoders(["text", "audio", "face"], {
        "text": [args.text_encoder], "audio": [e for e in args.audio_encoders.split(",") if e],
        "face": [e for e in args.face_encoders.split(",") if e]})
    corpus = load_corpus(args.dataset, args.data_dir, media_dir=args.media_dir)
    out = Path(args.out)

    def train_one(row, seed: int) -> dict:
        summary = run_experiment(dataset=args.dataset, data_dir=args.data_dir, media_dir=args.media_dir,
                                 out=out / row.key / f"seed_{seed}", model_config=mc,
                                 train_config=replace(tc, seed=seed), modalities=list(row.modalities),
                                 encoders={m: encoders[m] for m in row.modalities}, text_encoder=args.text_encoder,
                                 seeds=1, progress=not args.quiet, corpus=corpus, log=logger.info,
                                 adapters=row.adapters, tune_adapters=args.tune_adapters and bool(row.adapters))
        return {s: {k: v["mean"] for k, v in summary[s].items()} for s in ("dev", "test") if s in summary}

    settings = {"dataset": args.dataset, "data_dir": str(Path(args.data_dir).resolve()), "model": asdict(mc),
                "train": asdict(tc), "encoders": encoders}
    result = run_transfer(train_one, adapters, [args.seed + k for k in range(args.seeds)], out, settings=settings,
                          encoders=encoders, tune_adapters=args.tune_adapters, systems=systems,
                          title=f"Identity-based transfer · {args.dataset} · {args.model}")
    print((out / "transfer.md").read_text(), end="")
    print(f"table: {out / 'transfer.md'} and {out / 'transfer.json'} ({len(result['rows'])} rows, "
          f"{len(result['seeds'])} seeds)")
    return 0


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The optimisation options of `merc train` and of every experiment (one definition for all three)."""
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="maximum training epochs")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="dialogues per batch")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay,
                   help="AdamW weight decay (none on biases, norms, Mamba A_log and D: merc.training.optim)")
    p.add_argument("--patience", type=int, default=TrainConfig.patience,
                   help="stop after this many epochs without a better dev weighted F1")
    p.add_argument("--class-weights", choices=SCHEMES, default=TrainConfig.class_weights,
                   help="loss weights per class: inverse frequency (balanced), its square root (sqrt), or the "
                        "inverse effective number of samples (effective, Cui et al. 2019; β: --cb-beta where "
                        "offered, else TrainConfig.cb_beta)")


def add_parser(sub) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("experiment", help="experiments that train several models (ablation, transfer)",
                       formatter_class=fmt)
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
    a.add_argument("--variants", default="full,no_mamba,no_mec",
                   help="which of full, no_mamba, no_mec to train (with text alone no_mec equals full: no pair)")
    add_training_arguments(a)
    add_matav_arguments(a, switches=False)
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.add_argument("--out", required=True, help="folder for the runs and the table")
    a.set_defaults(func=cmd_ablation)

    t = esub.add_parser("transfer", help="identity-based transfer table: text, text+speaker, text+face, "
                        "text+speaker+face, with and without stage-2 adapters (mean ± std over seeds)",
                        formatter_class=fmt)
    t.add_argument("--dataset", choices=DATASETS, required=True, help="corpus format")
    t.add_argument("--data-dir", required=True, help="corpus folder")
    t.add_argument("--media-dir", help="folder of the corpus's audio/video (MELD raw clips)")
    t.add_argument("--adapters", default=None, metavar="MOD=DIR,...",
                   help="stage-2 adapter folders per modality (text=DIR,audio=DIR,face=DIR; any subset); rows "
                        "'with adapters' are trained for the systems that use a modality given here")
    t.add_argument("--tune-adapters", action="store_true",
                   help="fine-tune the adapters with the dialogue model (default: frozen)")
    t.add_argument("--systems", default=None,
                   help="comma-separated subset of text,text+speaker,text+face,text+speaker+face (None: all)")
    t.add_argument("--text-encoder", default="mpnet", help="mpnet, minilm, or a sentence-transformers name/path")
    t.add_argument("--audio-encoders", default=",".join(DEFAULT_ENCODERS["audio"]),
                   help="the speaker modality: comma-separated audio encoders, concatenated in this order")
    t.add_argument("--face-encoders", default=",".join(DEFAULT_ENCODERS["face"]),
                   help="comma-separated face encoders, concatenated in this order")
    t.add_argument("--model", choices=KINDS, default="mamba", help="dialogue model fusing the features")
    t.add_argument("--d-model", type=int, default=DialogueConfig.d_model, help="model width")
    t.add_argument("--layers", type=int, default=DialogueConfig.n_layers, help="dialogue-model layers")
    t.add_argument("--dropout", type=float, default=DialogueConfig.dropout, help="dropout probability")
    t.add_argument("--seed", type=int, default=0, help="first seed")
    t.add_argument("--seeds", type=int, default=3, help="seeds per row (seed, seed+1, …)")
    add_training_arguments(t)
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--out", required=True, help="folder for the runs, the per-cell results and the table "
                                                "(rerun with the same --out to resume)")
    t.set_defaults(func=cmd_transfer)
