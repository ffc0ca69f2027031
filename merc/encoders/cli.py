"""``merc encoder``: list the stage-1 encoders of every modality; fine-tune a text encoder on a corpus."""
from __future__ import annotations

import argparse
import json

from merc.data import DATASETS, load_corpus
from merc.device import add_device_argument
from merc.encoders.finetune import RECIPES, FinetuneConfig
from merc.errors import ConfigError
from merc.objectives.class_weights import SCHEMES


def encoder_table(modality: str | None = None) -> list[dict]:
    """One row per registered encoder: name, modality, dim, installed, install hint, what it measures."""
    from merc.encoders.base import available_encoders
    rows = []
    for i in available_encoders(modality):
        try:
            ok = bool(i.installed())
        except Exception:  # a broken optional package must not break the listing
            ok = False
        rows.append({"name": i.name, "modality": i.modality, "dim": i.dim, "installed": ok,
                     "install": "" if ok else i.install_hint, "optional": i.optional, "measures": i.description})
    return rows


def list_command(args: argparse.Namespace) -> int:
    rows = encoder_table(args.modality)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("name", "modality", "dim", "installed", "measures")
    table = [(r["name"], r["modality"], "?" if r["dim"] is None else str(r["dim"]),
              "yes" if r["installed"] else "no", r["measures"]) for r in rows]
    widths = [max(len(h), *(len(t[k]) for t in table)) if table else len(h) for k, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)).rstrip())
    missing = [r for r in rows if not r["installed"]]
    if missing:
        print("\nto install:")
        for r in missing:
            print(f"  {r['modality']} {r['name']}: {r['install'] or '(see its module docstring)'}")
    print("(text: also a local sentence-transformers folder, e.g. one written by `merc encoder finetune`; "
          "wavlm/ecapa: set MERC_WAVLM_MODEL / MERC_ECAPA_MODEL to your weights)")
    return 0


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """FinetuneConfig from the flags: the dataclass defaults, then ``--recipe``, then every flag given."""
    values = dict(RECIPES[args.recipe]) if args.recipe else {}
    for name in FinetuneConfig.__dataclass_fields__:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if not values.get("teacher") and (args.distill_alpha is not None or args.distill_temperature is not None):
        raise ConfigError("--distill-alpha / --distill-temperature weigh a teacher's soft targets: give "
                          "--teacher FOLDER (a folder written by `merc encoder finetune`)")
    return FinetuneConfig(**values)


def finetune_command(args: argparse.Namespace) -> int:
    import torch

    from merc.encoders.finetune import finetune_text_encoder
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {"classes": args.iemocap_classes} if args.dataset == "iemocap" else {}
    corpus = load_corpus(args.dataset, args.data_dir, **options)
    config = finetune_config(args)
    if config.train_layers and getattr(args.device, "type", "cpu") != "cpu":
        raise ConfigError(f"--train-layers runs on the CPU only (its cached layer states are not moved to "
                          f"{args.device}); use --device cpu, or train all layers on the GPU")
    res = finetune_text_encoder(corpus, args.out, config, progress=not args.quiet)
    summary = {"out": str(res.out_dir), "best_epoch": res.best_epoch,
               "dev_weighted_f1": res.dev.get("weighted_f1"), "dev_accuracy": res.dev.get("accuracy"),
               "test_weighted_f1": (res.test or {}).get("weighted_f1"),
               "test_accuracy": (res.test or {}).get("accuracy"), "seconds": round(res.seconds, 1)}
    print(json.dumps(summary, indent=2))
    print(f"use it with: merc train ... --text-encoder {res.out_dir}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``merc encoder`` (actions ``list`` and ``finetune``)."""
    enc = subparsers.add_parser("encoder", help="stage-1 encoders: list, fine-tune", description=__doc__)
    sub = enc.add_subparsers(dest="encoder_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="registered encoders: modality, dimension, installed, what they measure",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--modality", choices=("text", "audio", "face"), default=None,
                   help="list only this modality's encoders (None: all)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=list_command)
    d = FinetuneConfig()
    p = sub.add_parser("finetune", help="fine-tune a sentence encoder as an utterance emotion classifier; "
                       "dev-selected epoch saved as a sentence-transformers folder")
    p.add_argument("--dataset", choices=DATASETS, required=True, help="corpus format")
    p.add_argument("--data-dir", required=True, help="corpus folder")
    p.add_argument("--iemocap-classes", type=int, choices=(4, 6), default=6, help="iemocap only: label set size")
    # defaults are None here: FinetuneConfig's default (or the --recipe value) applies unless a flag is given
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="preset: minilm-fast = " + ", ".join(f"{k}={v}" for k, v in RECIPES["minilm-fast"].items())
                   + " (explicit flags override it; omitted: no preset)")
    p.add_argument("--base", default=None, help=f"mpnet, minilm, or a sentence-transformers name/path [{d.base}]")
    p.add_argument("--template", default=None,
                   help=f"encoder input per utterance; fields {{speaker}} {{text}} [{d.template}]")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (dev-selected) [{d.epochs}]")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate of the encoder [{d.lr}]")
    p.add_argument("--head-lr", type=float, default=None, help=f"learning rate of the classifier [{d.head_lr}]")
    p.add_argument("--batch-size", type=int, default=None, help=f"utterances per batch [{d.batch_size}]")
    p.add_argument("--max-length", type=int, default=None,
                   help=f"tokens per input, context included [{d.max_length}]")
    p.add_argument("--class-weights", choices=SCHEMES, default=None,
                   help=f"loss weights per class (merc.objectives.class_weights) [{d.class_weights}]")
    p.add_argument("--cb-beta", type=float, default=None,
                   help=f"β of --class-weights effective: weight ∝ (1-β)/(1-β^n_class) [{d.cb_beta}]")
    p.add_argument("--context-past", type=int, default=None,
                   help=f"previous turns (with speakers) in each input, EmoBERTa-style [{d.context_past}]")
    p.add_argument("--context-future", type=int, default=None,
                   help=f"following turns in each input [{d.context_future}]")
    p.add_argument("--context-marker", default=None,
                   help="marker around the target utterance (default: the tokenizer's separator token)")
    p.add_argument("--pooling", choices=("mean", "target"), default=None,
                   help="with context: the embedding is the mean over the whole input, or over the target "
                   f"utterance's tokens only (they still attend to the context) [{d.pooling}]")
    p.add_argument("--train-layers", type=int, default=None,
                   help="fine-tune only the top K transformer layers from cached states of the frozen lower ones "
                   "(MPNet, BERT/MiniLM) [all layers, end to end]")
    p.add_argument("--teacher", default=None,
                   help="distil a tuned folder (from `merc encoder finetune`): its own classifier's logits "
                   "join the labels as soft targets (merc.encoders.distill) [none]")
    p.add_argument("--distill-alpha", type=float, default=None,
                   help=f"with --teacher: weight α of the distillation term, (1-α)·CE + α·T²·KL [{d.distill_alpha}]")
    p.add_argument("--distill-temperature", type=float, default=None,
                   help=f"with --teacher: softmax temperature T [{d.distill_temperature}]")
    p.add_argument("--seed", type=int, default=None, help=f"random seed [{d.seed}]")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training utterances (smoke runs)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="folder to create (resumes if it holds a checkpoint)")
    p.set_defaults(func=finetune_command)
    return enc
