"""Training loop: AdamW, an objective (cross-entropy by default; CE + MEC for MaTAV), step callbacks,
early stopping on **dev** weighted F1, and resumable checkpoints.

The test split is never seen here: the caller evaluates the dev-selected checkpoint on test once.
"""
from __future__ import annotations

import copy
import io
import logging
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from merc.errors import IncompatibleRunError, InputError
from merc.io import atomic_write_bytes
from merc.metrics import evaluate_predictions
from merc.objectives import Objective, class_weights, model_logits, objective_for
from merc.training.batching import IGNORE, Dialogue, DialogueBatch, iterate_batches
from merc.training.optim import param_groups

logger = logging.getLogger(__name__)


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
    min_steps: int = 0  # at least this many optimizer steps: small corpora get more epochs (and patience)


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
                      batch_size: int = 32) -> list[np.ndarray]:
    """Class probabilities per dialogue: a list of (seq_len, n_classes) arrays in input order."""
    model.eval()
    out: list[np.ndarray] = []
    for batch in iterate_batches(dialogues, batch_size):
        probs = model_logits(model, batch).softmax(-1)  # (batch, max_len, n_classes)
        for b, ids in enumerate(batch.utterance_ids):
            out.append(probs[b, :len(ids)].numpy())
    return out


def score_dialogues(model: torch.nn.Module, dialogues: Sequence[Dialogue], labels: Sequence[str]) -> dict[str, Any]:
    probs = predict_dialogues(model, dialogues)
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


class Callback:
    """Hooks the trainer calls; override what you need. ``on_step_end`` runs after each optimizer step
    (``step`` counts steps from 0 over the whole run), ``on_epoch_end`` after each epoch's dev scoring and
    checkpoint (``row`` is the history row). MaTAV's momentum and queue updates are done by its objective
    (``merc.objectives.mec``), not here."""

    def on_step_end(self, model: torch.nn.Module, batch: DialogueBatch, step: int) -> None:
        pass

    def on_epoch_end(self, model: torch.nn.Module, row: dict[str, float], epoch: int) -> None:
        pass


CHECKPOINT = "checkpoint.pt"


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())  # a kill mid-write leaves the previous checkpoint intact


def _load_checkpoint(path: Path, config: TrainConfig) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say which and what to do
        raise IncompatibleRunError(f"cannot read the training checkpoint {path} ({e}); "
                                   f"delete it to start afresh") from e
    saved = {**asdict(TrainConfig()), **state.get("train_config", {})}  # settings added later: their defaults
    diff = {k: (saved.get(k), v) for k, v in asdict(config).items() if saved.get(k) != v}
    if diff:
        raise IncompatibleRunError(f"the checkpoint {path} was made with other training settings "
                                   f"(setting: (checkpoint, now) {diff}); use the same settings to resume, "
                                   f"or another checkpoint directory to start afresh")
    return state


def fit(model: torch.nn.Module, train: Sequence[Dialogue], dev: Sequence[Dialogue], labels: Sequence[str],
        config: TrainConfig, *, objective: Objective | None = None, callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | Path | None = None, progress: bool = True,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        modality_dropout: dict[str, float] | None = None) -> TrainHistory:
    """Train ``model`` in place; on return it holds the weights of the epoch with the best dev weighted F1.

    objective: ``objective(model, batch) -> (loss, logs)``; default :func:`train_objective`, i.e. the loss of
    ``config.loss`` (cross-entropy by default) with ``config.class_weights`` and ``config.label_smoothing``
    (wrapped in CE + λ·MEC for MaTAV).
    Each history row gets ``train_loss`` and the epoch mean of every log as ``train_<name>``.
    checkpoint_dir: after every epoch the full training state (model, optimizer, scheduler, RNG states,
    history, best weights, epoch) is written there atomically; calling ``fit`` again with the same
    directory and settings continues where the last run stopped (a finished run returns at once), and
    gives the same history as a run that was never interrupted.
    """
    if not dev:
        raise InputError("early stopping needs a dev split with labelled utterances; none was given")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if objective is None:
        objective = train_objective(model, train, len(labels), config)
    opt = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)  # no decay: biases, norms, A_log, D
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    epochs, patience = schedule_length(config, steps_per_epoch)
    total, warm = epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay
        opt, lambda s: (s + 1) / max(warm, 1) if s < warm
        else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(total - warm, 1))))
    history, best_state, t0, stale, start, done, elapsed = TrainHistory(), None, time.time(), 0, 0, False, 0.0
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        state = _load_checkpoint(ckpt, config)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise IncompatibleRunError(f"the checkpoint {ckpt} holds another model's weights ({e}); use another "
                                       f"checkpoint directory for this model") from e
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = state["numpy_rng"]
        history = TrainHistory(**state["history"])
        best_state, stale, start, done, elapsed = (state["best_state"], state["stale"], state["epoch"],
                                                   state["done"], state["seconds"])
        logger.info("resuming from %s at epoch %d of %d", ckpt, start, epochs)
    bar = tqdm(range(start, epochs), desc="epochs", disable=not progress or done, leave=False,
               initial=start, total=epochs)
    for epoch in ([] if done else bar):
        model.train()
        losses, logs = [], defaultdict(list)
        for i, batch in enumerate(iterate_batches(train, config.batch_size, shuffle=True, rng=rng,
                                                      modality_dropout=modality_dropout)):
            loss, step_logs = objective(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            for k, v in step_logs.items():
                logs[k].append(v)
            for cb in callbacks:
                cb.on_step_end(model, batch, epoch * steps_per_epoch + i)
        dev_metrics = score_dialogues(model, dev, labels)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "dev_loss": dev_metrics["loss"],
               "dev_weighted_f1": dev_metrics["weighted_f1"], "dev_accuracy": dev_metrics["accuracy"],
               **{f"train_{k}": float(np.mean(v)) for k, v in logs.items()}}
        history.epochs.append(row)
        if row["dev_weighted_f1"] > history.best_dev_weighted_f1:
            history.best_dev_weighted_f1, history.best_epoch = row["dev_weighted_f1"], epoch
            best_state, stale = copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        done = stale >= patience or epoch + 1 == epochs
        history.seconds = elapsed + time.time() - t0
        if ckpt is not None:
            _save_checkpoint(ckpt, {
                "format": 1, "train_config": asdict(config), "epoch": epoch + 1, "done": done,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state,
                "history": history.to_dict(), "best_state": best_state, "stale": stale, "seconds": history.seconds})
        if on_epoch:
            on_epoch(row)
        for cb in callbacks:
            cb.on_epoch_end(model, row, epoch)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", dev_wf1=f"{row['dev_weighted_f1']:.3f}",
                        best=f"{history.best_dev_weighted_f1:.3f}")
        if done:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = elapsed + time.time() - t0
    return history
