"""`merc experiment ablation`: MaTAV full / w/o Mamba / w/o MEC over K seeds -> ablation.md + ablation.json.
`merc experiment transfer`: the identity-based transfer table (``merc.training.transfer``) -> transfer.md + .json.

Each (variant, seed) is one ``merc train``-style run (``merc.training.experiment.run_experiment``: early
stopping on dev, test once) in ``OUT/<variant>/seed_<seed>/``, with the encoders, training and loss flags of
``merc train`` (one definition: :mod:`merc.training.flags`). The ablation takes any ``--modalities``; with text
alone MaTAV has no MEC pair, so "w/o MEC" equals "full" there. The transfer table's rows choose their own
modalities (text, +speaker, +face).
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, replace
from pathlib import Path

from merc.data import DATASETS
from merc.errors import ConfigError
from merc.models.dialogue import KINDS
from merc.models.matav import MatavConfig
from merc.training.flags import (
    add_dialogue_flags,
    add_encoder_flags,
    add_matav_flags,
    add_seed_flags,
    add_training_flags,
    dialogue_config_from_args,
    encoders_from_args,
    fusion_from_args,
    matav_config_from_args,
    modalities_from_args,
    names,
    text_encoder_from_args,
    train_config_from_args,
)

logger = logging.getLogger(__name__)


def cmd_ablation(args: argparse.Namespace) -> int:
    from merc.data import load_corpus
    from merc.training.ablation import VARIANTS, run_ablation
    from merc.training.experiment import run_experiment
    base, tc = matav_config_from_args(args), train_config_from_args(args)
    corpus = load_corpus(args.dataset, args.data_dir, media_dir=args.media_dir)
    out = Path(args.out)
    modalities = modalities_from_args(args)
    encoders = encoders_from_args(args, modalities)
    text_encoder = text_encoder_from_args(args)

    def train_one(variant: str, config: MatavConfig, seed: int) -> dict:
        config, t = fusion_from_args(args, config, replace(tc, seed=seed), modalities)
        summary = run_experiment(dataset=args.dataset, data_dir=args.data_dir, media_dir=args.media_dir,
                                 out=out / variant / f"seed_{seed}", model_config=config,
                                 train_config=t, modalities=modalities,
                                 encoders=encoders, text_encoder=text_encoder, seeds=1, progress=not args.quiet,
                                 corpus=corpus, log=logger.info)
        return {s: {k: v["mean"] for k, v in summary[s].items()} for s in ("dev", "test") if s in summary}

    variants = names(args.variants)
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
    systems = names(args.systems) or None
    unknown = sorted(set(systems or ()) - {k for k, _, _ in SYSTEMS})
    if unknown:
        raise ConfigError(f"--systems {args.systems!r}: unknown {unknown}; choose from {[k for k, _, _ in SYSTEMS]}")
    mc, tc = dialogue_config_from_args(args), train_config_from_args(args)
    encoders = resolve_encoders(["text", "audio", "face"], encoders_from_args(args))
    corpus = load_corpus(args.dataset, args.data_dir, media_dir=args.media_dir)
    out = Path(args.out)

    def train_one(row, seed: int) -> dict:
        m, t = fusion_from_args(args, mc, replace(tc, seed=seed), row.modalities, adapters=bool(row.adapters))
        summary = run_experiment(dataset=args.dataset, data_dir=args.data_dir, media_dir=args.media_dir,
                                 out=out / row.key / f"seed_{seed}", model_config=m,
                                 train_config=t, modalities=list(row.modalities),
                                 encoders={m: encoders[m] for m in row.modalities}, text_encoder=encoders["text"][0],
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
    add_encoder_flags(a)
    add_seed_flags(a, seeds=3, per="variant")
    a.add_argument("--variants", default="full,no_mamba,no_mec",
                   help="which of full, no_mamba, no_mec to train (with text alone no_mec equals full: no pair)")
    add_training_flags(a)
    add_matav_flags(a, switches=False)
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
    add_encoder_flags(t, modalities=False)
    add_dialogue_flags(t, kinds=KINDS)  # the adapters feed these; MaTAV has its own ablation
    add_seed_flags(t, seeds=3, per="row")
    add_training_flags(t)
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--out", required=True, help="folder for the runs, the per-cell results and the table "
                                                "(rerun with the same --out to resume)")
    t.set_defaults(func=cmd_transfer)
