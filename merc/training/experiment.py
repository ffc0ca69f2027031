"""One training experiment end to end: corpus -> cached features -> K seeds of fit on train with
early stopping on dev -> the dev-selected checkpoint evaluated on test once -> run directories, plots.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from merc.data import load_corpus
from merc.data.schema import Corpus
from merc.models.dialogue import DialogueConfig, DialogueModel
from merc.training.batching import build_dialogues
from merc.training.metrics import mean_std
from merc.training.plots import plot_confusion, plot_training_curve
from merc.training.resume import completed_seed
from merc.training.run import RunConfig, save_run, write_json
from merc.training.trainer import TrainConfig, fit, score_dialogues

SUPPORTED_MODALITIES = ("text",)


def corpus_features(corpus: Corpus, splits: Sequence[str], modalities: Sequence[str], text_encoder: str,
                    *, progress: bool = True) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]], str]:
    """``features[split][modality][utterance_id]`` from the feature cache, and the encoder fingerprint."""
    unsupported = [m for m in modalities if m not in SUPPORTED_MODALITIES]
    if unsupported:
        raise ValueError(f"modalities {unsupported} are not trainable yet: `merc train` currently uses text "
                         f"features only (supported: {list(SUPPORTED_MODALITIES)})")
    from merc.encoders import get_text_encoder
    from merc.encoders.cache import encode_split
    enc = get_text_encoder(text_encoder)
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for split in splits:
        feats = encode_split(corpus, split, enc, progress=progress)
        out[split] = {"text": dict(zip(feats.ids, feats.X))}
    return out, enc.fingerprint


def train_one_seed(run_dir: Path, corpus: Corpus, features, model_config: DialogueConfig, train_config: TrainConfig,
                   run_config: RunConfig, *, progress: bool = True, eval_splits: Sequence[str] = ("dev", "test")) -> dict[str, Any]:
    labels = corpus.labels
    data = {s: build_dialogues(corpus[s], features[s], labels, max_speakers=model_config.max_speakers)
            for s in features}
    torch.manual_seed(train_config.seed)
    np.random.seed(train_config.seed)
    model = DialogueModel(model_config)
    history = fit(model, data["train"], data["dev"], labels, train_config, progress=progress)
    metrics: dict[str, Any] = {"best_epoch": history.best_epoch, "train_seconds": history.seconds,
                               "n_parameters": sum(p.numel() for p in model.parameters()),
                               "history": history.epochs}
    for split in eval_splits:  # the dev-selected checkpoint, evaluated once per split
        if split in data and data[split]:
            metrics[split] = score_dialogues(model, data[split], labels)
    save_run(run_dir, model, run_config, labels, metrics)
    plot_training_curve(history.epochs, run_dir / "training_curve.png",
                        title=f"{model_config.kind} · {run_config.text_encoder} · seed {train_config.seed}")
    for split in eval_splits:
        if split in metrics:
            m = metrics[split]
            plot_confusion(m["confusion"], labels, run_dir / f"confusion_{split}.png",
                           title=f"{split}: weighted F1 {m['weighted_f1']:.3f}, accuracy {m['accuracy']:.3f}")
    return metrics


def run_experiment(*, dataset: str, data_dir: str, out: str | Path, model_config: DialogueConfig,
                   train_config: TrainConfig, modalities: Sequence[str] = ("text",), text_encoder: str = "mpnet",
                   seeds: int = 1, media_dir: str | None = None, progress: bool = True,
                   corpus: Corpus | None = None, log=print, resume: bool = False) -> dict[str, Any]:
    out = Path(out)
    t0 = time.time()
    corpus = corpus or load_corpus(dataset, data_dir, media_dir=media_dir)
    for s in ("train", "dev"):
        if not corpus.splits.get(s):
            raise ValueError(f"{dataset} corpus at {data_dir} has no {s!r} split; training needs train and dev")
    splits = [s for s in ("train", "dev", "test") if corpus.splits.get(s)]
    features, fingerprint = corpus_features(corpus, splits, modalities, text_encoder, progress=progress)
    model_config = replace(model_config, n_classes=len(corpus.labels),
                           input_dims={m: len(next(iter(features["train"][m].values()))) for m in modalities})
    encode_seconds = time.time() - t0
    per_seed: list[dict[str, Any]] = []
    seed_list = [train_config.seed + k for k in range(seeds)]
    for seed in seed_list:
        run_dir = out if seeds == 1 else out / f"seed_{seed}"
        rc = RunConfig(model=model_config, train=replace(train_config, seed=seed), dataset=dataset,
                       data_dir=str(data_dir), modalities=list(modalities), text_encoder=text_encoder,
                       text_encoder_fingerprint=fingerprint)
        m = completed_seed(run_dir, rc.to_dict()) if resume else None  # --resume: keep finished seeds
        m = m or train_one_seed(run_dir, corpus, features, model_config, rc.train, rc, progress=progress)
        per_seed.append(m)
        line = f"seed {seed}: best epoch {m['best_epoch']}, dev wF1 {m['dev']['weighted_f1']:.4f}"
        if "test" in m:
            line += f", test wF1 {m['test']['weighted_f1']:.4f}, acc {m['test']['accuracy']:.4f}"
        log(line + f" ({m['train_seconds']:.0f} s)")
    summary: dict[str, Any] = {
        "dataset": dataset, "model": model_config.kind, "text_encoder": text_encoder, "seeds": seed_list,
        "encode_seconds": encode_seconds, "train_seconds": [m["train_seconds"] for m in per_seed]}
    for split in ("dev", "test"):
        if split in per_seed[0]:
            summary[split] = {k: mean_std([m[split][k] for m in per_seed]) for k in ("weighted_f1", "accuracy", "macro_f1")}
    if seeds > 1:
        best = int(np.argmax([m["dev"]["weighted_f1"] for m in per_seed]))
        summary["dev_selected_seed_dir"] = f"seed_{seed_list[best]}"
        write_json(out / "summary.json", summary)
    return summary
