"""Command-line flags -> configs, defined once for ``merc train`` and every ``merc experiment``.

Each group is a pair: ``add_<group>_flags(parser)`` declares the flags (defaults read from the config
dataclass, so ``--help`` and the code cannot disagree) and ``<group>_from_args(args)`` turns the parsed
namespace into the config. A command takes the groups it needs; a new group (e.g. fusion settings) is one
more pair here, added to the parsers that take it.

- encoders: ``--modalities``, ``--text-encoder``, ``--audio-encoders``, ``--face-encoders`` (comma lists, each
  concatenated in order), ``--text-backend`` (``onnx`` / ``onnx-int8`` suffix every text encoder: ``minilm@onnx``)
  -> ``encoders_from_args`` / ``modalities_from_args``;
- seeds: ``--seed``, ``--seeds``;
- training and loss: ``--epochs`` ... ``--class-weights``, ``--loss``, ``--focal-gamma``, ``--cb-beta``,
  ``--supcon-weight``, ``--supcon-temperature`` -> :class:`~merc.training.trainer.TrainConfig`;
- dialogue model: ``--model``, ``--d-model``, ``--layers``, ``--dropout`` (and ``--causal`` where offered)
  -> :class:`~merc.models.dialogue.DialogueConfig`;
- MaTAV: ``--cross-layers`` ... ``--no-mamba``, ``--no-mec`` -> :class:`~merc.models.matav.MatavConfig`;
  ``model_config_from_args`` picks the family from ``--model``.

``--device`` and ``--threads`` are shared by more commands than these (qc, encoder finetune): each is defined
once, in :mod:`merc.device` and :mod:`merc.threads`, and applied by ``merc.cli.main`` for the whole command.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from merc.encoders.text_backend import BACKENDS, with_backend
from merc.errors import ConfigError
from merc.models.dialogue import DialogueConfig
from merc.models.factory import MODEL_KINDS, ModelConfig
from merc.models.linear import LinearConfig
from merc.models.matav import ATTENTION, MatavConfig
from merc.objectives import LOSSES, SCHEMES
from merc.training.defaults import FUSION_MODES, RESIDUAL_MIN_STEPS, fusion_defaults
from merc.training.features import DEFAULT_ENCODERS, MODALITIES
from merc.training.trainer import PROBE_SELECT, TrainConfig

# helpers


def names(csv: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (None or "" -> [])."""
    return [x.strip() for x in (csv or "").split(",") if x.strip()]


# encoders


def add_encoder_flags(p: argparse.ArgumentParser, *, modalities: bool = True) -> None:
    """``--text-encoder``, ``--audio-encoders``, ``--face-encoders`` (and ``--modalities`` unless the command
    chooses its own, as the transfer table does)."""
    if modalities:
        p.add_argument("--modalities", default="text", help="comma-separated subset of text,audio,face")
    p.add_argument("--text-encoder", default="mpnet",
                   help="mpnet, minilm, or a sentence-transformers name/path; several, comma-separated, are "
                        "concatenated in this order (e.g. two fine-tuned folders)")
    p.add_argument("--text-backend", choices=BACKENDS, default="torch",
                   help="how the text encoders run: torch (PyTorch), onnx (ONNX Runtime, same features up to "
                        "float rounding, about 2x faster on CPU) or onnx-int8 (int8 weights: faster still, slightly "
                        "different features); written into the encoder name (minilm@onnx), so its features are "
                        "cached apart and prediction uses the same backend. Needs merc[onnx] for onnx*")
    p.add_argument("--audio-encoders", default=",".join(DEFAULT_ENCODERS["audio"]),
                   help="comma-separated audio (speaker) encoders, concatenated in this order (`merc encoder list`)")
    p.add_argument("--face-encoders", default=",".join(DEFAULT_ENCODERS["face"]),
                   help="comma-separated face encoders, concatenated in this order (`merc encoder list`)")


def modalities_from_args(args: argparse.Namespace) -> list[str]:
    return names(args.modalities)


def encoders_from_args(args: argparse.Namespace, modalities: Sequence[str] = MODALITIES
                       ) -> dict[str, list[str]]:
    """Encoder names per modality, for the ``modalities`` given (every one by default). Raises ConfigError when a
    modality's flag names no encoder."""
    backend = getattr(args, "text_backend", "torch") or "torch"
    given = {"text": [with_backend(n, backend) if backend != "torch" else n for n in names(args.text_encoder)],
             "audio": names(args.audio_encoders),
             "face": names(args.face_encoders)}
    flag = {"text": "--text-encoder", "audio": "--audio-encoders", "face": "--face-encoders"}
    empty = [flag[m] for m in given if not given[m] and (m in modalities or m == "text")]
    if empty:
        raise ConfigError(f"{' and '.join(empty)} name(s) no encoder; give one or more, comma-separated")
    return {m: e for m, e in given.items() if m in modalities}


def text_encoder_from_args(args: argparse.Namespace) -> str:
    """The first ``--text-encoder`` (what a run records as its text encoder)."""
    return encoders_from_args(args, ("text",))["text"][0]


# seeds


def add_seed_flags(p: argparse.ArgumentParser, *, seeds: int = 1, per: str | None = None) -> None:
    """``--seed`` (the first) and ``--seeds`` (how many: seed, seed+1, …); ``per`` names what each set of seeds
    trains (an experiment's variant or row)."""
    p.add_argument("--seed", type=int, default=0, help="random seed of the first run")
    p.add_argument("--seeds", type=int, default=seeds,
                   help=f"seeds per {per} (seed, seed+1, …); the table reports mean ± std" if per else
                   "run K seeds (seed, seed+1, …) and report mean ± std")


# training and loss


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """The optimisation and loss options (every field of TrainConfig but the seed, which ``--seed`` sets)."""
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="maximum training epochs")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="dialogues per batch")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay,
                   help="AdamW weight decay (none on biases, norms, Mamba A_log and D: merc.optim)")
    p.add_argument("--patience", type=int, default=TrainConfig.patience,
                   help="stop after this many epochs without a better dev weighted F1")
    p.add_argument("--class-weights", choices=SCHEMES, default=TrainConfig.class_weights,
                   help="loss weights per class: inverse frequency (balanced), its square root (sqrt), or the "
                        "inverse effective number of samples (effective, Cui et al. 2019; β: --cb-beta)")
    g = p.add_argument_group("loss (rare classes)")
    g.add_argument("--loss", choices=LOSSES, default=TrainConfig.loss,
                   help="ce: cross-entropy; focal: focal loss (--focal-gamma); supcon: cross-entropy + "
                        "--supcon-weight × supervised contrastive term over the dialogue model's utterance "
                        "representations (mamba, gru, transformer, mlp)")
    g.add_argument("--focal-gamma", type=float, default=TrainConfig.focal_gamma,
                   help="γ of the focal loss (0 = cross-entropy)")
    g.add_argument("--cb-beta", type=float, default=TrainConfig.cb_beta,
                   help="β of --class-weights effective: weight ∝ (1-β)/(1-β^n_class)")
    g.add_argument("--supcon-weight", type=float, default=TrainConfig.supcon_weight, help="λ of the SupCon term")
    g.add_argument("--supcon-temperature", type=float, default=TrainConfig.supcon_temperature,
                   help="τ of the SupCon term")
    g = p.add_argument_group("fusion (merc.training.defaults)")
    g.add_argument("--fusion", choices=FUSION_MODES, default="auto",
                   help="plain: modalities summed, through the context model to the classifier; residual: plus a "
                        "per-utterance linear classifier per modality, started from the linear probe (C on dev, "
                        "--probe-select; LP-FT), and at least --min-steps optimizer steps; stacked: that path frozen "
                        "at the probe, the context model trained on out-of-fold probe logits and reading their "
                        "probabilities; auto: residual when a dialogue model's run uses audio or faces (without "
                        "--adapters), plain for text alone and for MaTAV fusing two or more modalities (MaTAV on one "
                        "non-text modality: residual)")
    g.add_argument("--min-steps", type=_steps, default="auto",
                   help=f"at least this many optimizer steps; a small corpus gets more epochs and patience "
                        f"(auto: {RESIDUAL_MIN_STEPS} with residual or stacked fusion, 0 with plain)")
    g.add_argument("--probe-select", choices=PROBE_SELECT, default=TrainConfig.probe_select,
                   help="how the probe that starts residual or stacked fusion has its C chosen on dev: loss (dev "
                        "log loss, a calibrated start) or weighted_f1 (the criterion of --model linear and of "
                        "runs before it existed)")


def fusion_from_args(args: argparse.Namespace, model_config: ModelConfig, train_config: TrainConfig,
                     modalities: Sequence[str], *, adapters: bool = False) -> tuple[ModelConfig, TrainConfig]:
    """``--fusion`` / ``--min-steps`` applied to a run over ``modalities`` (``merc.training.defaults``)."""
    steps = getattr(args, "min_steps", "auto")
    return fusion_defaults(model_config, train_config, modalities, mode=getattr(args, "fusion", "auto"),
                           adapters=adapters, min_steps=None if steps == "auto" else steps)


def _steps(value: str) -> int | str:
    """``--min-steps``: ``auto`` or a count >= 0."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number of steps, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number of steps >= 0, got {n}")
    return n


def train_config_from_args(args: argparse.Namespace, **overrides) -> TrainConfig:
    """The TrainConfig of ``add_training_flags`` (and ``--seed`` when the parser has it)."""
    return TrainConfig(**{"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                          "weight_decay": args.weight_decay, "patience": args.patience,
                          "class_weights": args.class_weights, "seed": getattr(args, "seed", TrainConfig.seed),
                          "loss": args.loss, "focal_gamma": args.focal_gamma, "cb_beta": args.cb_beta,
                          "supcon_weight": args.supcon_weight, "supcon_temperature": args.supcon_temperature,
                          "probe_select": getattr(args, "probe_select", TrainConfig.probe_select), **overrides})


# dialogue model


def add_dialogue_flags(p: argparse.ArgumentParser, *, kinds: Sequence[str] = MODEL_KINDS) -> None:
    """``--model`` (one of ``kinds``) and the width, depth and dropout every model kind shares."""
    p.add_argument("--model", choices=tuple(kinds), default="mamba",
                   help="dialogue model; `linear`: the per-utterance logistic-regression probe (C chosen on dev), "
                        "the floor a fusion model should beat on the same features")
    p.add_argument("--d-model", type=int, default=DialogueConfig.d_model, help="model width")
    p.add_argument("--layers", type=int, default=DialogueConfig.n_layers, help="dialogue-model layers")
    p.add_argument("--dropout", type=float, default=DialogueConfig.dropout, help="dropout probability")


def dialogue_config_from_args(args: argparse.Namespace) -> DialogueConfig:
    return DialogueConfig(kind=args.model, d_model=args.d_model, n_layers=args.layers, dropout=args.dropout,
                          bidirectional=not getattr(args, "causal", False))


# MaTAV


def add_matav_flags(p: argparse.ArgumentParser, *, switches: bool = True, width: bool = True) -> None:
    """MaTAV's model options (``merc train --model matav``, ``merc experiment ablation``); ``switches`` adds the
    ablation flags --no-mamba and --no-mec; ``width`` adds --d-model and --dropout (a parser with
    ``add_dialogue_flags`` has them already)."""
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


def matav_config_from_args(args: argparse.Namespace, **overrides) -> MatavConfig:
    """The MatavConfig of ``add_matav_flags`` (input_dims / n_classes are set later from the data, as
    ``run_experiment`` does)."""
    mec = 0.0 if getattr(args, "no_mec", False) else args.mec_weight
    return MatavConfig(**{"d_model": args.d_model, "d_mamba": args.d_model, "n_cross_layers": args.cross_layers,
                          "n_heads": args.heads, "attention": args.attention, "dropout": args.dropout,
                          "mec_weight": mec, "queue_size": args.queue_size, "momentum": args.momentum,
                          "temperature": args.temperature, "use_mamba": not getattr(args, "no_mamba", False),
                          **overrides})


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    """``--model matav`` -> MatavConfig (``--layers`` Mamba layers, ``--causal``); any other kind ->
    DialogueConfig, where the MaTAV ablation switches are an error."""
    if args.model == "matav":
        return matav_config_from_args(args, n_mamba_layers=args.layers,
                                      bidirectional=not getattr(args, "causal", False))
    if getattr(args, "no_mamba", False) or getattr(args, "no_mec", False):
        raise ConfigError("--no-mamba and --no-mec are MaTAV ablations: use them with --model matav")
    if args.model == "linear":  # the probe: its C is chosen on dev, the width/depth/dropout flags do not apply
        return LinearConfig()
    return dialogue_config_from_args(args)
