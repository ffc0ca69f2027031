"""Training a stage-2 emotion adapter (``merc adapt``): frozen stage-1 features of a balanced unimodal sample
→ :class:`~merc.models.adapter.Adapter`, early-stopped on a stratified held-out part.

``fit_adapter(X, y, labels, config)`` is the array-level fit (class-weighted cross-entropy through the shared
loop of :mod:`merc.loop`; the epoch with the best held-out weighted F1 is kept);
``train_adapter(modality, corpora, encoder, out)`` is the whole job: read and pool the corpora, draw the
balanced sample, encode it (text: through the resumable feature store), fit, and write the adapter folder::

    out/config.json        model config, modality, encoder {name, fingerprint, dim}, corpora, label mapping,
                           counts (pooled, sample, train, held-out, dropped by reason), training config,
                           provenance (merc version, git commit, date, machine, seconds)
    out/model.safetensors  weights (+ the input standardisation)
    out/labels.json        class names, index order
    out/metrics.json       held-out weighted F1 / accuracy / macro F1 / per-class F1 / confusion, best epoch,
                           per-epoch history, unusable items (count, by reason, examples)
    out/confusion_heldout.png, out/training_curve.png

Sampled items the encoder cannot use (a corrupt clip, no face found, too little speech: absent rows of an
encoder with ``encode_items``, see :mod:`merc.encoders.items`) are left out of training and counted by reason
(``metrics["unusable"]``, ``config.json`` counts); the sample is drawn before encoding, so a class can end up
with fewer than ``per_class`` items.

The held-out part is drawn from the training sample only (never from the evaluation corpus): it selects
the epoch; it is not a test score of transfer to conversations.
"""
from __future__ import annotations

import logging
import platform
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from merc.data.labels import MELD_LABELS
from merc.errors import ConfigError, OutputExistsError
from merc.io import write_json
from merc.loop import LoopConfig, run_loop
from merc.metrics import evaluate_predictions
from merc.models.adapter import Adapter, AdapterConfig
from merc.training.adapt_data import AdaptData, ItemEncoder, collect, encode_sample

log = logging.getLogger(__name__)


@dataclass
class AdaptTrainConfig:
    hidden: int = 512
    bottleneck: int = 128
    dropout: float = 0.2
    epochs: int = 60  # at most; early stopping usually ends sooner
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 8  # epochs without held-out weighted-F1 improvement
    heldout: float = 0.1  # stratified fraction of the sample kept out for early stopping
    class_weights: str = "balanced"  # "balanced" | "none": inverse-frequency weights on the loss
    seed: int = 0


@dataclass
class AdaptResult:
    adapter: Adapter
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None

# helpers


def _class_weights(y: np.ndarray, n: int, scheme: str) -> torch.Tensor | None:
    if scheme == "none":
        return None
    if scheme != "balanced":
        raise ConfigError(f"class_weights must be 'balanced' or 'none', not {scheme!r}")
    counts = np.bincount(y, minlength=n).astype(float)
    w = counts.sum() / (n * np.maximum(counts, 1.0))
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out): ``fraction`` of every class held out (at least one item of classes with ≥ 2)."""
    if not 0 < fraction < 1:
        raise ConfigError(f"heldout fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    tr, ho = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(idx))) if len(idx) > 1 else 0
        k = max(k, 1) if len(idx) > 1 else 0
        ho.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(ho))


def provenance(seconds: float | None = None) -> dict[str, Any]:
    """merc version, git commit (+ dirty flag), date, machine."""
    import merc
    root = Path(merc.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    out = {"merc_version": getattr(merc, "__version__", None), "git_commit": commit, "git_dirty": dirty,
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": platform.python_version(),
           "torch": torch.__version__, "threads": torch.get_num_threads()}
    if seconds is not None:
        out["seconds"] = round(seconds, 1)
    return out

# fit


@dataclass
class AdapterTask:
    """Adapter training for :func:`merc.loop.run_loop`: shuffled batches of features (the order drawn
    from a seeded generator), class-weighted cross-entropy, scores on the held-out part."""
    Xt: torch.Tensor  # (n_train, d_in)
    yt: torch.Tensor  # (n_train,)
    Xh: torch.Tensor  # (n_heldout, d_in)
    yh: torch.Tensor  # (n_heldout,)
    labels: Sequence[str]
    batch_size: int
    weights: torch.Tensor | None
    gen: torch.Generator

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.yt) // self.batch_size)

    def batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(self.yt), generator=self.gen)
        return [(self.Xt[b], self.yt[b]) for b in perm.split(self.batch_size)]

    def loss(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        X, y = batch
        w = None if self.weights is None else self.weights.to(X.device)
        return F.cross_entropy(model(X), y, weight=w), {}

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            logits = model(self.Xh.to(next(model.parameters()).device)).cpu()
            ho_loss = float(F.cross_entropy(logits, self.yh, weight=self.weights))
        scores = evaluate_predictions(self.yh.numpy(), logits.argmax(1).numpy(), self.labels)
        return {"dev_loss": ho_loss, "dev_weighted_f1": scores["weighted_f1"], "dev_accuracy": scores["accuracy"]}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])


def fit_adapter(X: np.ndarray, y: np.ndarray, labels: Sequence[str], config: AdaptTrainConfig, *,
                progress: bool = True, device: str | torch.device = "cpu") -> AdaptResult:
    """Fit an adapter on features ``X`` (n, d_in) with class indices ``y`` (n,) into ``labels``.

    A stratified ``config.heldout`` part selects the epoch (best held-out weighted F1, early stopping after
    ``config.patience`` epochs without a better one); the returned adapter holds that epoch's weights, and
    ``metrics["heldout"]`` its held-out scores. The loop is :func:`merc.loop.run_loop` (AdamW over the
    decay groups of :func:`merc.optim.param_groups`: biases are not decayed; constant learning rate),
    on ``device``; the adapter returned is on the CPU.
    """
    X, y = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X has shape {X.shape} for {len(y)} labels")
    if not np.isfinite(X).all():
        raise ValueError("X has non-finite values")
    torch.manual_seed(config.seed)
    tr, ho = stratified_split(y, config.heldout, config.seed)
    model = Adapter(AdapterConfig(d_in=X.shape[1], n_classes=len(labels), hidden=config.hidden,
                                  bottleneck=config.bottleneck, dropout=config.dropout), labels=labels)
    model.set_input_stats(X[tr])
    task = AdapterTask(torch.from_numpy(X[tr]), torch.from_numpy(y[tr]), torch.from_numpy(X[ho]),
                       torch.from_numpy(y[ho]), labels, config.batch_size,
                       _class_weights(y[tr], len(labels), config.class_weights),
                       torch.Generator().manual_seed(config.seed))
    loop = LoopConfig(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay, patience=config.patience,
                      epoch_base=1, desc="adapter")
    res = run_loop(model, task, loop, device=device, progress=progress)
    model.to("cpu").eval()
    pred = model.predict_proba(X[ho]).argmax(1)
    metrics = {"heldout": evaluate_predictions(y[ho], pred, labels), "best_epoch": res.best_epoch,
               "epochs_run": len(res.rows), "train_seconds": round(res.seconds, 2),
               "n_train": int(len(tr)), "n_heldout": int(len(ho)),
               "train_counts": {labels[c]: int(n) for c, n in sorted(Counter(y[tr].tolist()).items())},
               "heldout_counts": {labels[c]: int(n) for c, n in sorted(Counter(y[ho].tolist()).items())},
               "n_parameters": sum(p.numel() for p in model.parameters()), "history": res.rows}
    return AdaptResult(model, metrics, res.rows)

# the whole job


def train_adapter(modality: str, corpora: Sequence[tuple[str, str | Path]], encoder: ItemEncoder, out: str | Path, *,
                  per_class: int | None = None, config: AdaptTrainConfig | None = None, overwrite: bool = False,
                  progress: bool = True, data: AdaptData | None = None) -> AdaptResult:
    """Read ``corpora`` → balanced sample (``per_class``, seeded) → ``encoder`` → fit → adapter folder ``out``."""
    from merc.data.unimodal import READERS, label_mapping
    from merc.training.plots import plot_confusion, plot_training_curve
    config = config or AdaptTrainConfig()
    out = Path(out)
    if (out / "model.safetensors").exists() and not overwrite:
        raise OutputExistsError(f"{out} already holds an adapter; pass --overwrite to replace it "
                                "or choose another --out")
    t0 = time.perf_counter()
    data = data or collect(modality, corpora, per_class=per_class, seed=config.seed)
    t_enc = time.perf_counter()
    X, sample, unusable = encode_sample(encoder, data.sample)  # (n_usable, d_in): unusable items left out
    encode_seconds = time.perf_counter() - t_enc
    labels = [lab for lab in MELD_LABELS if any(it.label == lab for it in sample)]
    if len(labels) < 2:
        raise ConfigError(f"the sample has {len(labels)} usable class(es) {labels}; an adapter needs at least two"
                          + (f" ({unusable['n']} items unusable: {unusable['reasons']})" if unusable["n"] else ""))
    y = np.array([labels.index(it.label) for it in sample], dtype=np.int64)
    res = fit_adapter(X, y, labels, config, progress=progress)
    res.metrics["unusable"] = unusable
    # raw label -> MELD class per corpus; the tables with their reasons are in the reader modules' docstrings
    mapping = {name: {"reader": READERS.get(name, (None, "merc.data.unimodal.jsonl:"))[1].split(":")[0],
                      "labels": label_mapping(name)} for name, _ in corpora}
    res.adapter.modality = modality
    res.adapter.encoder = {"name": encoder.name, "fingerprint": encoder.fingerprint, "dim": int(encoder.dim)}
    res.adapter.extra = {
        "corpora": [{"name": n, "path": str(Path(p).resolve())} for n, p in corpora],
        "mapping": {"target_labels": list(MELD_LABELS), "corpora": mapping},
        "counts": {**data.provenance(), "unusable": unusable, "train": res.metrics["train_counts"],
                   "heldout": res.metrics["heldout_counts"]},
        "train": asdict(config),
        "provenance": provenance(time.perf_counter() - t0) | {"encode_seconds": round(encode_seconds, 1)},
    }
    if hasattr(encoder, "settings"):  # audio / face items: the encoders concatenated, the face crop rule
        res.adapter.extra["encoding"] = encoder.settings()
    res.adapter.save_pretrained(out)
    write_json(out / "metrics.json", res.metrics)
    plot_confusion(res.metrics["heldout"]["confusion"], labels, out / "confusion_heldout.png",
                   title=f"{modality} adapter over {encoder.name}: held-out part of the sample")
    plot_training_curve(res.history, out / "training_curve.png", title=f"{modality} adapter · {encoder.name}")
    res.out_dir = out
    log.info("adapter written to %s: held-out weighted F1 %.4f", out, res.metrics["heldout"]["weighted_f1"])
    return res


def evaluate_transfer(adapter: Adapter, X: np.ndarray, gold: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """The adapter's own classifier on another corpus' features (cross-corpus transfer, no training on it).

    ``gold`` are label names in ``labels`` (e.g. MELD's seven); a class the adapter never learnt is never
    predicted and scores F1 0."""
    pred = adapter.predict(X)
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise ValueError(f"gold labels {unknown} are not in {list(labels)}")
    idx = {lab: i for i, lab in enumerate(labels)}
    return evaluate_predictions([idx[g] for g in gold], [idx.get(p, -1) for p in pred], labels)
