"""The one training loop: dialogue models (:mod:`merc.training.trainer`), fine-tuned text encoders
(:mod:`merc.encoders.finetune`) and stage-2 adapters (:mod:`merc.training.adapt`) all train through
:func:`run_loop`. Each keeps its own loss and data, handed over as a :class:`Task`; the loop owns the rest,
as Hugging Face's ``Trainer`` separates the loop from the model's ``compute_loss`` (kept small, nanoGPT-size):

- AdamW over the decay/no-decay groups of :func:`merc.optim.param_groups` (the one rule);
- the learning-rate schedule: linear warm-up over ``warmup_steps``, then constant, linear or cosine decay;
- gradient clipping (``grad_clip``, the norm over ``model.parameters()``);
- the epoch/step loop with a progress bar, batches moved to ``device``;
- dev evaluation after every epoch, early stopping on ``metric`` (higher is better) with ``patience``, and
  the weights of the best epoch (kept in memory and restored at the end, or handed to ``task.on_best``);
- checkpoints: after every epoch (and every ``checkpoint_minutes`` inside one) the model, optimizer,
  schedule, RNG and task state are written atomically; a second call with the same settings continues
  from there and gives the history of a run never interrupted (a finished run returns at once). Loaded with
  ``torch.load(weights_only=True)``: a checkpoint cannot run code.

    task = MyTask(...)   # batches(epoch), loss(model, batch), evaluate(model), steps_per_epoch
    result = run_loop(model, task, LoopConfig(epochs=10, lr=3e-4, patience=3), checkpoint=out / "ckpt.pt")
"""
from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import json
import logging
import math
import pickle
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from merc.errors import ConfigError, IncompatibleRunError
from merc.io import atomic_write_bytes
from merc.optim import param_groups

log = logging.getLogger(__name__)
SCHEDULES = ("constant", "linear", "cosine")
FORMAT = 2  # checkpoint layout; 1 was the dialogue trainer's own (read by _upgrade)


@dataclass
class LoopConfig:
    epochs: int
    lr: float
    weight_decay: float = 0.01  # on the decayed group of param_groups (matrices); never biases, norms, A_log, D
    schedule: str = "constant"  # after the warm-up: "constant" | "linear" (to 0 at the end) | "cosine"
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping
    patience: int | None = None  # stop after this many epochs without a better dev metric; None: run every epoch
    metric: str = "dev_weighted_f1"  # the key of task.evaluate()'s scores that selects the epoch (higher is better)
    keep_best: bool = True  # keep the best epoch's weights (in memory and checkpoints) and load them at the end
    checkpoint_minutes: float | None = None  # also checkpoint inside an epoch this often (task batches must replay)
    epoch_base: int = 0  # the number of the first epoch in history rows and best_epoch (0 or 1)
    timings: bool = False  # rows get train_seconds, train_cpu_seconds, dev_seconds, dev_cpu_seconds
    desc: str = "epochs"
    step_bar: bool = False  # a progress bar per epoch over its batches too
    log_epochs: bool = False  # log each epoch's row at INFO (else DEBUG): for long epochs run without a terminal

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 1 or self.warmup_steps < 0:
            raise ConfigError(f"epochs must be >= 1 and warmup_steps >= 0, got {self.epochs} / {self.warmup_steps}")


class Task(Protocol):
    """What a caller hands the loop. Optional: ``state_dict()`` / ``load_state_dict(state)`` (the task's own
    RNG and records, saved in checkpoints: tensors and plain types) and ``on_best(model, epoch)``."""
    steps_per_epoch: int

    def batches(self, epoch: int) -> Iterable[Any]:
        """The batches of ``epoch`` (0-based). With ``checkpoint_minutes``, a function of ``epoch`` alone."""

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """A scalar loss and logs, averaged per epoch into the history as ``train_<name>``."""

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Dev scores of the current weights: ``config.metric`` among them."""


class Callback:
    """Hooks the loop calls; override what you need. ``on_step_end`` runs after each optimizer step (``step``
    counts from 0 over the whole run), ``on_epoch_end`` after each epoch's dev scoring and checkpoint (``row``
    is the history row, ``epoch`` counts from 0)."""

    def on_step_end(self, model: torch.nn.Module, batch: Any, step: int) -> None:
        pass

    def on_epoch_end(self, model: torch.nn.Module, row: dict[str, float], epoch: int) -> None:
        pass


@dataclass
class LoopResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # per epoch: epoch, train_loss, dev scores, logs
    best_epoch: int = -1
    best_metric: float = -1.0
    seconds: float = 0.0


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Factor of the base learning rate at optimizer step ``s`` (0-based) of ``total``."""
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / max(warmup, 1)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(total - warmup, 1)))
        if schedule == "linear":
            return max(0.0, (total - s) / max(1, total - warmup))
        return 1.0
    return factor


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor inside (dicts, lists, tuples, dataclasses) on ``device``; the rest as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        out = [to_device(v, device) for v in batch]
        return type(batch)(out) if not hasattr(batch, "_fields") else type(batch)(*out)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: to_device(getattr(batch, f.name), device)
                                             for f in dataclasses.fields(batch) if f.init})
    return batch


def json_default(o: Any) -> Any:
    """numpy scalars and arrays (sklearn's scores) as Python values for the JSON part of a checkpoint."""
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())  # a kill mid-write leaves the previous checkpoint intact


def _upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint (the dialogue trainer's before this loop: per epoch, numpy batch-order RNG) as
    format 2."""
    h = state["history"]
    loop = {"rows": h["epochs"], "best_epoch": h["best_epoch"], "best_metric": h["best_dev_weighted_f1"],
            "stale": state["stale"], "seconds": state["seconds"], "epoch": state["epoch"], "step": 0,
            "done": state["done"], "losses": [], "logs": {}}
    return {"format": FORMAT, "settings": state.get("train_config", {}), "model": state["model"],
            "optimizer": state["optimizer"], "scheduler": state["scheduler"], "torch_rng": state["torch_rng"],
            "task": {"numpy_rng": state["numpy_rng"]}, "best_state": state["best_state"], "loop": json.dumps(loop)}


def settings_diff(saved: dict[str, Any], settings: dict[str, Any], defaults: dict[str, Any] | None = None
                  ) -> dict[str, tuple[Any, Any]]:
    """``{setting: (saved, now)}`` of every setting that differs; a setting ``saved`` predates (added to the config
    since) counts as its value in ``defaults``, so checkpoints of older versions with today's defaults resume."""
    saved = {**(defaults or {}), **saved}
    want = json.loads(json.dumps(settings, default=json_default))
    return {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}


def load_checkpoint(path: Path, settings: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint at ``path``, checked against ``settings`` (recorded settings it predates take ``defaults``).
    IncompatibleRunError, naming the file and what to do, when it is unreadable, foreign or made otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file (or an older pickled one): say which
        why = ("it holds objects that only unpickling could read, which a checkpoint must not need"
               if isinstance(e, pickle.UnpicklingError) else f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
        raise IncompatibleRunError(f"cannot read the training checkpoint {path} ({why}); "
                                   "delete it to start afresh") from e
    if not isinstance(state, dict) or state.get("format") not in (1, FORMAT):
        raise IncompatibleRunError(f"the training checkpoint {path} was written by an older merc (or is damaged) "
                                   "and cannot be resumed; delete it to restart the training")
    if state["format"] == 1:
        state = _upgrade(state)
    diff = settings_diff(state.get("settings", {}), settings, defaults)
    if diff:
        raise IncompatibleRunError(f"the checkpoint {path} was made with other training settings "
                                   f"(setting: (checkpoint, now) {diff}); use the same settings to resume, "
                                   f"or delete it (or use another checkpoint directory) to start afresh")
    state["loop"] = json.loads(state["loop"])
    return state


def _restore(state: dict[str, Any], path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler, task: Task) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise IncompatibleRunError(f"the checkpoint {path} holds another model's weights ({str(e)[:300]}); use "
                                   f"another checkpoint directory for this model") from e
    try:
        opt.load_state_dict(state["optimizer"])
    except ValueError as e:
        raise IncompatibleRunError(f"the checkpoint {path} holds another optimizer's state ({e}); delete it to "
                                   "start afresh") from e
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if hasattr(task, "load_state_dict"):
        task.load_state_dict(state["task"])


def run_loop(model: torch.nn.Module, task: Task, config: LoopConfig, *, groups: Sequence[dict] | None = None,
             checkpoint: str | Path | None = None, settings: dict[str, Any] | None = None,
             defaults: dict[str, Any] | None = None, callbacks: Sequence[Callback] = (),
             device: str | torch.device = "cpu", progress: bool = True) -> LoopResult:
    """Train ``model`` in place on ``task`` (module docstring); returns the per-epoch history and the best epoch.

    groups: AdamW parameter groups; default ``param_groups(model, config.weight_decay)``.
    checkpoint: file of the training state (``settings``, JSON-able, must match to resume; settings a checkpoint
    predates take their ``defaults``). The caller seeds torch before building the model and the task.
    """
    device = torch.device(device)
    model.to(device)
    opt = torch.optim.AdamW(list(groups) if groups is not None else param_groups(model, config.weight_decay),
                            lr=config.lr)
    spe = task.steps_per_epoch
    total = config.epochs * spe
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config.schedule, config.warmup_steps, total))
    st: dict[str, Any] = {"rows": [], "best_epoch": -1, "best_metric": -1.0, "stale": 0, "seconds": 0.0,
                          "epoch": 0, "step": 0, "done": False, "losses": [], "logs": {}}
    best_state = None
    ckpt = Path(checkpoint) if checkpoint is not None else None
    settings = settings or {}
    if ckpt is not None and ckpt.exists():
        saved = load_checkpoint(ckpt, settings, defaults)
        _restore(saved, ckpt, model, opt, sched, task)
        st, best_state = saved["loop"], saved["best_state"]
        log.info("resuming from %s at epoch %d (step %d) of %d", ckpt, st["epoch"], st["step"], config.epochs)

    def save() -> None:
        if ckpt is None:
            return
        save_checkpoint(ckpt, {
            "format": FORMAT, "settings": json.loads(json.dumps(settings, default=json_default)),
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(), "task": task.state_dict() if hasattr(task, "state_dict") else {},
            "best_state": best_state, "loop": json.dumps(st, default=json_default)})

    t0, elapsed, last_ck = time.perf_counter(), st["seconds"], time.perf_counter()
    bar = tqdm(total=config.epochs, initial=st["epoch"], desc=config.desc, unit="epoch", leave=False,
               disable=not progress or st["done"])
    while not st["done"] and st["epoch"] < config.epochs:
        epoch = st["epoch"]
        model.train()
        losses, logs = st["losses"], defaultdict(list, st["logs"])
        cpu0, wall0 = time.process_time(), time.perf_counter()  # this epoch's cost (of this process, if resumed)
        steps = tqdm(total=spe, initial=st["step"], desc=f"{config.desc} {epoch + 1}/{config.epochs}", unit="batch",
                     leave=False, disable=not progress or not config.step_bar)
        for i, batch in enumerate(itertools.islice(task.batches(epoch), st["step"], None), start=st["step"]):
            if device.type != "cpu":
                batch = to_device(batch, device)
            loss, step_logs = task.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            for k, v in step_logs.items():
                logs[k].append(v)
            if not steps.disable:
                steps.update(1)
                steps.set_postfix(loss=f"{np.mean(losses):.3f}")
            if config.checkpoint_minutes is not None and time.perf_counter() - last_ck > 60 * config.checkpoint_minutes:
                st.update(step=i + 1, losses=losses, logs=dict(logs), seconds=elapsed + time.perf_counter() - t0)
                save()
                last_ck = time.perf_counter()
            for cb in callbacks:
                cb.on_step_end(model, batch, epoch * spe + i)
        steps.close()
        cpu1, wall1 = time.process_time(), time.perf_counter()
        scores = task.evaluate(model)
        if config.metric not in scores:
            raise KeyError(f"task.evaluate() gave {sorted(scores)}, without the selection metric {config.metric!r}")
        row: dict[str, Any] = {"epoch": epoch + config.epoch_base, "train_loss": float(np.mean(losses))}
        if config.timings:
            row.update(train_seconds=round(wall1 - wall0, 1), train_cpu_seconds=round(cpu1 - cpu0, 1),
                       dev_seconds=round(time.perf_counter() - wall1, 1),
                       dev_cpu_seconds=round(time.process_time() - cpu1, 1))
        row.update(scores)
        row.update({f"train_{k}": float(np.mean(v)) for k, v in logs.items()})
        st["rows"].append(row)
        log.log(logging.INFO if config.log_epochs else logging.DEBUG, "epoch %d: train loss %.4f  %s %.4f",
                row["epoch"], row["train_loss"], config.metric, row[config.metric])
        if row[config.metric] > st["best_metric"]:
            st.update(best_metric=row[config.metric], best_epoch=row["epoch"], stale=0)
            if config.keep_best:
                best_state = copy.deepcopy(model.state_dict())
            if hasattr(task, "on_best"):
                task.on_best(model, epoch)
        else:
            st["stale"] += 1
        done = (config.patience is not None and st["stale"] >= config.patience) or epoch + 1 == config.epochs
        st.update(epoch=epoch + 1, step=0, losses=[], logs={}, done=done, seconds=elapsed + time.perf_counter() - t0)
        save()
        last_ck = time.perf_counter()
        for cb in callbacks:
            cb.on_epoch_end(model, row, epoch)
        bar.update(1)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", dev=f"{row[config.metric]:.3f}",
                        best=f"{st['best_metric']:.3f}")
    bar.close()
    if config.keep_best and best_state is not None:
        model.load_state_dict(best_state)
    return LoopResult(st["rows"], st["best_epoch"], st["best_metric"], elapsed + time.perf_counter() - t0)
