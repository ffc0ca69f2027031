"""Dialogue training: an objective (cross-entropy by default; CE + MEC for MaTAV) over batches of dialogues,
early stopping on **dev** weighted F1, resumable checkpoints — run by the shared loop of
:mod:`merc.loop` (AdamW with decay groups, warm-up + cosine schedule, clipping, checkpoints).

The test split is never seen here: the caller evaluates the dev-selected checkpoint on test once.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from merc.device import current_device
from merc.errors import ConfigError, InputError
from merc.loop import Callback, LoopConfig, run_loop, to_device
from merc.metrics import evaluate_predictions
from merc.objectives import Objective, class_weights, model_logits, objective_for
from merc.training.batching import IGNORE, Dialogue, DialogueBatch, iterate_batches

logger = logging.getLogger(__name__)
__all__ = ["CHECKPOINT", "Callback", "DialogueTask", "TrainConfig", "TrainHistory", "class_weight_vector", "fit",
           "PROBE_SELECT", "predict_dialogues", "schedule_length", "score_dialogues", "train_objective"]


PROBE_SELECT = ("loss", "weighted_f1")  # criteria for the dev selection of an initialising probe's C


@dataclass
class TrainConfig:
    epochs: int = 25
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_epochs: int = 1
    grad_clip: float = 1.0
    patience: int = 5  # epochs without dev weighted-F1 improvement before stopping
    class_weights: str = "none"  # "none" | "balanced" | "sqrt" | "effective" (merc.objectives.class_weights)
    label_smoothing: float = 0.0
    seed: int = 0
    # rare-class objectives (merc.objectives); the defaults are plain cross-entropy, as before they existed
    loss: str = "ce"  # "ce" | "focal" | "supcon" (CE + supcon_weight · SupCon over the hidden states)
    focal_gamma: float = 2.0  # focal loss γ (loss="focal")
    cb_beta: float = 0.999  # β of the effective-number class weights (class_weights="effective")
    supcon_weight: float = 0.1  # λ of the SupCon term (loss="supcon")
    supcon_temperature: float = 0.1  # τ of the SupCon term
    # fusion (issue #32): start a model with a per-utterance path (utterance_logits) from the dev-selected linear
    # probe of its inputs, its context head at zero (merc.training.probe.init_from_probe); the probe itself stays
    # a candidate of the dev selection
    probe_init: bool = False
    # how that probe's C is chosen on dev: "loss" (log loss: a calibrated start whose logits the context head
    # adds to) or "weighted_f1" (the probe row's own criterion; on 2,000 label-free dims it picked C=10, a probe
    # with dev log loss 4.7 that training could not leave: benchmarks/results/fusion/)
    probe_select: str = "loss"
    min_steps: int = 0  # at least this many optimizer steps: small corpora get more epochs (and patience)

    def __post_init__(self):
        if self.probe_select not in PROBE_SELECT:
            raise ConfigError(f"unknown probe_select {self.probe_select!r}; choose one of {PROBE_SELECT}")


@dataclass
class TrainHistory:
    epochs: list[dict[str, float]] = field(default_factory=list)  # per epoch: train_loss, dev_loss, dev_weighted_f1, …
    best_epoch: int = -1
    best_dev_weighted_f1: float = -1.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_weight_vector(dialogues: Sequence[Dialogue], n_classes: int, scheme: str, *,
                        beta: float = 0.999) -> torch.Tensor | None:
    """(n_classes,) loss weights of mean 1 from the training label counts (``merc.objectives.class_weights``)."""
    if scheme == "none":
        return None
    y = np.concatenate([d.labels for d in dialogues])
    w = class_weights(np.bincount(y[y != IGNORE], minlength=n_classes), scheme, beta=beta)
    return torch.tensor(w, dtype=torch.float32)


def train_objective(model: torch.nn.Module, train: Sequence[Dialogue], n_classes: int,
                    config: TrainConfig) -> Objective:
    """The objective ``config`` describes: its loss, class weights (from ``train``), smoothing, focal γ, SupCon λ, τ."""
    weight = class_weight_vector(train, n_classes, config.class_weights, beta=config.cb_beta)
    return objective_for(model, weight=weight, label_smoothing=config.label_smoothing, loss=config.loss,
                         focal_gamma=config.focal_gamma, supcon_weight=config.supcon_weight,
                         supcon_temperature=config.supcon_temperature)


@torch.no_grad()
def predict_dialogues(model: torch.nn.Module, dialogues: Sequence[Dialogue], *,
                      batch_size: int = 32, device: str | torch.device | None = None) -> list[np.ndarray]:
    """Class probabilities per dialogue: a list of (seq_len, n_classes) arrays in input order. device: where
    the batches go; None: where the model is."""
    model.eval()
    device = next(model.parameters()).device if device is None else torch.device(device)
    out: list[np.ndarray] = []
    for batch in iterate_batches(dialogues, batch_size):
        if device.type != "cpu":
            batch = to_device(batch, device)
        probs = model_logits(model, batch).softmax(-1).cpu()  # (batch, max_len, n_classes)
        for b, ids in enumerate(batch.utterance_ids):
            out.append(probs[b, :len(ids)].numpy())
    return out


def score_dialogues(model: torch.nn.Module, dialogues: Sequence[Dialogue], labels: Sequence[str], *,
                    device: str | torch.device | None = None) -> dict[str, Any]:
    probs = predict_dialogues(model, dialogues, device=device)
    y = np.concatenate([d.labels for d in dialogues])
    p = np.concatenate(probs)
    keep = y != IGNORE
    metrics = evaluate_predictions(y[keep], p[keep].argmax(-1), labels)
    metrics["loss"] = float(-np.log(np.clip(p[keep][np.arange(keep.sum()), y[keep]], 1e-12, None)).mean())
    return metrics


def schedule_length(config: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, patience): ``config``'s, stretched by the same factor when ``epochs`` epochs of ``steps_per_epoch``
    steps give fewer than ``config.min_steps`` optimizer steps (a small corpus: 150 dialogues in batches of 16 are
    10 steps an epoch, where MELD's 1,038 are 65)."""
    if config.min_steps <= config.epochs * steps_per_epoch:
        return config.epochs, config.patience
    epochs = math.ceil(config.min_steps / max(steps_per_epoch, 1))
    return epochs, math.ceil(config.patience * epochs / config.epochs)


CHECKPOINT = "checkpoint.pt"


class _OnEpoch(Callback):
    def __init__(self, fn: Callable[[dict[str, float]], None]):
        self.fn = fn

    def on_epoch_end(self, model: torch.nn.Module, row: dict[str, float], epoch: int) -> None:
        self.fn(row)


@dataclass
class DialogueTask:
    """Dialogue classification for :func:`merc.loop.run_loop`: shuffled batches of ``train`` (order and
    modality dropout drawn from ``rng``), ``objective``'s loss, dev weighted F1 / accuracy / loss."""
    train: Sequence[Dialogue]
    dev: Sequence[Dialogue]
    labels: Sequence[str]
    objective: Objective
    batch_size: int
    rng: np.random.Generator
    modality_dropout: dict[str, float] | None = None
    device: str | torch.device = "cpu"

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    def batches(self, epoch: int) -> Iterator[DialogueBatch]:
        return iterate_batches(self.train, self.batch_size, shuffle=True, rng=self.rng,
                               modality_dropout=self.modality_dropout)

    def loss(self, model: torch.nn.Module, batch: DialogueBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(model, batch)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        m = score_dialogues(model, self.dev, self.labels, device=self.device)
        return {"dev_loss": m["loss"], "dev_weighted_f1": m["weighted_f1"], "dev_accuracy": m["accuracy"]}

    def state_dict(self) -> dict[str, Any]:
        return {"numpy_rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["numpy_rng"]


def fit(model: torch.nn.Module, train: Sequence[Dialogue], dev: Sequence[Dialogue], labels: Sequence[str],
        config: TrainConfig, *, objective: Objective | None = None, callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | Path | None = None, progress: bool = True,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        modality_dropout: dict[str, float] | None = None, device: str | torch.device | None = None) -> TrainHistory:
    """Train ``model`` in place; on return it holds the weights of the epoch with the best dev weighted F1.

    objective: ``objective(model, batch) -> (loss, logs)``; default :func:`train_objective`, i.e. the loss of
    ``config.loss`` (cross-entropy by default) with ``config.class_weights`` and ``config.label_smoothing``
    (wrapped in CE + λ·MEC for MaTAV).
    Each history row gets ``train_loss`` and the epoch mean of every log as ``train_<name>``.
    checkpoint_dir: after every epoch the full training state (model, optimizer, scheduler, RNG states,
    history, best weights, epoch) is written there atomically; calling ``fit`` again with the same
    directory and settings continues where the last run stopped (a finished run returns at once), and
    gives the same history as a run that was never interrupted.
    The loop itself (AdamW over :func:`merc.optim.param_groups`, warm-up + cosine schedule, clipping,
    early stopping, checkpoints) is :func:`merc.loop.run_loop`; this function is its dialogue task.
    device: where the model and batches go; None: the command's ``--device`` (:func:`merc.device.current_device`),
    the CPU unless a command chose otherwise.
    """
    if not dev:
        raise InputError("early stopping needs a dev split with labelled utterances; none was given")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = current_device() if device is None else torch.device(device)
    model.to(device)  # before the objective: MaTAV's momentum encoder copies the model where it is
    if objective is None:
        objective = train_objective(model, train, len(labels), config)
    task = DialogueTask(train, dev, labels, objective, config.batch_size, rng, modality_dropout, device)
    epochs, patience = schedule_length(config, task.steps_per_epoch)
    loop = LoopConfig(epochs=epochs, lr=config.lr, weight_decay=config.weight_decay, schedule="cosine",
                      warmup_steps=config.warmup_epochs * task.steps_per_epoch, grad_clip=config.grad_clip,
                      patience=patience, metric="dev_weighted_f1")
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    res = run_loop(model, task, loop, checkpoint=ckpt, settings=asdict(config), defaults=asdict(TrainConfig()),
                   callbacks=[*([_OnEpoch(on_epoch)] if on_epoch else []), *callbacks], device=device,
                   progress=progress)
    return TrainHistory(res.rows, res.best_epoch, res.best_metric, res.seconds)
