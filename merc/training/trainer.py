"""Training loop: AdamW, optional class weights, early stopping on **dev** weighted F1.

The test split is never seen here: the caller evaluates the dev-selected checkpoint on test once.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from merc.errors import ConfigError, InputError
from merc.metrics import evaluate_predictions
from merc.training.batching import IGNORE, Dialogue, iterate_batches
from merc.training.optim import param_groups


@dataclass
class TrainConfig:
    epochs: int = 25
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_epochs: int = 1
    grad_clip: float = 1.0
    patience: int = 5  # epochs without dev weighted-F1 improvement before stopping
    class_weights: str = "none"  # "none" | "balanced" | "sqrt" (inverse-frequency, square-rooted)
    label_smoothing: float = 0.0
    seed: int = 0


@dataclass
class TrainHistory:
    epochs: list[dict[str, float]] = field(default_factory=list)  # per epoch: train_loss, dev_loss, dev_weighted_f1, …
    best_epoch: int = -1
    best_dev_weighted_f1: float = -1.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_weight_vector(dialogues: Sequence[Dialogue], n_classes: int, scheme: str) -> torch.Tensor | None:
    if scheme == "none":
        return None
    y = np.concatenate([d.labels for d in dialogues])
    counts = np.bincount(y[y != IGNORE], minlength=n_classes).astype(float)
    w = counts.sum() / (n_classes * np.maximum(counts, 1.0))
    if scheme == "sqrt":
        w = np.sqrt(w)
    elif scheme != "balanced":
        raise ConfigError(f"class_weights must be none, balanced or sqrt, not {scheme!r}")
    return torch.tensor(w / w.mean(), dtype=torch.float32)


@torch.no_grad()
def predict_dialogues(model: torch.nn.Module, dialogues: Sequence[Dialogue], *,
                      batch_size: int = 32) -> list[np.ndarray]:
    """Class probabilities per dialogue: a list of (seq_len, n_classes) arrays in input order."""
    model.eval()
    out: list[np.ndarray] = []
    for batch in iterate_batches(dialogues, batch_size):
        probs = model(batch.feats, batch.speakers, batch.mask).softmax(-1)  # (batch, max_len, n_classes)
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


def _loss(model, batch, weight, smoothing) -> torch.Tensor:
    logits = model(batch.feats, batch.speakers, batch.mask)  # (batch, max_len, n_classes)
    return F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), weight=weight,
                           ignore_index=IGNORE, label_smoothing=smoothing)


def fit(model: torch.nn.Module, train: Sequence[Dialogue], dev: Sequence[Dialogue], labels: Sequence[str],
        config: TrainConfig, *, progress: bool = True,
        on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainHistory:
    """Train ``model`` in place; on return it holds the weights of the epoch with the best dev weighted F1."""
    if not dev:
        raise InputError("early stopping needs a dev split with labelled utterances; none was given")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    weight = class_weight_vector(train, len(labels), config.class_weights)
    opt = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)  # no decay: biases, norms, A_log, D
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total, warm = config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay
        opt, lambda s: (s + 1) / max(warm, 1) if s < warm
        else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(total - warm, 1))))
    history, best_state, t0, stale = TrainHistory(), None, time.time(), 0
    bar = tqdm(range(config.epochs), desc="epochs", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        losses = []
        for batch in iterate_batches(train, config.batch_size, shuffle=True, rng=rng):
            loss = _loss(model, batch, weight, config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        dev_metrics = score_dialogues(model, dev, labels)
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "dev_loss": dev_metrics["loss"],
               "dev_weighted_f1": dev_metrics["weighted_f1"], "dev_accuracy": dev_metrics["accuracy"]}
        history.epochs.append(row)
        if on_epoch:
            on_epoch(row)
        if row["dev_weighted_f1"] > history.best_dev_weighted_f1:
            history.best_dev_weighted_f1, history.best_epoch = row["dev_weighted_f1"], epoch
            best_state, stale = copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", dev_wf1=f"{row['dev_weighted_f1']:.3f}",
                        best=f"{history.best_dev_weighted_f1:.3f}")
        if stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.time() - t0
    return history
