"""One training experiment end to end: corpus -> features per modality (``corpus_features``; absent
modalities counted with their reasons) -> standardisation fitted on train -> K seeds of fit on train with
early stopping on dev -> the dev-selected checkpoint evaluated on test once -> run directories, plots.

Metrics are over every utterance of a split: an utterance lacking a modality keeps its place (presence
masks, ``merc.training.batching``). The extraction report is logged and saved under ``"extraction"`` in each
run's metrics.json.
"""
from __future__ import annotations

import copy
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from merc.data import load_corpus
from merc.data.schema import Corpus
from merc.errors import ConfigError, InputError
from merc.io import provenance, write_json
from merc.metrics import mean_std
from merc.models.dialogue import DialogueConfig
from merc.models.linear import LinearConfig
from merc.training.adapters import adapter_records, build_run_model, check_adapter_encoders, load_adapters
from merc.training.batching import absence_counts, build_dialogues, check_modality_dropout
from merc.training.features import FEATURE_PROVIDERS, corpus_features, feature_dims, resolve_encoders
from merc.training.normalize import DEFAULT_STANDARDIZED, FeatureNormalizer
from merc.training.plots import plot_confusion, plot_training_curve
from merc.training.probe import fit_probe, init_from_probe
from merc.training.resume import completed_seed
from merc.training.run import RunConfig, save_run
from merc.training.stacking import out_of_fold_logits
from merc.training.trainer import TrainConfig, TrainHistory, fit, score_dialogues

logger = logging.getLogger(__name__)
TRAIN_STATE = ".train_state"  # inside a seed's run directory while it trains

# FEATURE_PROVIDERS (modality -> provider) is the hook the encoder feature store plugs into
__all__ = ["FEATURE_PROVIDERS", "corpus_features", "run_experiment", "train_one_seed"]


def train_one_seed(run_dir: Path, corpus: Corpus, features, model_config: DialogueConfig, train_config: TrainConfig,
                   run_config: RunConfig, *, progress: bool = True, extraction: dict[str, Any] | None = None,
                   eval_splits: Sequence[str] = ("dev", "test")) -> dict[str, Any]:
    labels = corpus.labels
    data = {s: build_dialogues(corpus[s], features[s], labels, max_speakers=model_config.max_speakers,
                               dims=model_config.input_dims)
            for s in features}
    torch.manual_seed(train_config.seed)
    np.random.seed(train_config.seed)
    model = build_run_model(model_config, run_config.adapters, tune=run_config.tune_adapters, from_folders=True)
    # the full training state after every epoch: a seed killed part-way continues at its last finished epoch
    # when the run is started again with --resume (and gives the history of an uninterrupted run)
    state_dir = Path(run_dir) / TRAIN_STATE
    if isinstance(model_config, LinearConfig):  # the probe: fitted by L-BFGS per C, C chosen on dev
        history = fit_probe(model, data["train"], data["dev"], labels, train_config, progress=progress)
        probe = history  # metrics record the dev-selected C
    else:
        probe = (init_from_probe(model, data["train"], data["dev"], labels, train_config, progress=progress)
                 if train_config.probe_init else TrainHistory())
        start = copy.deepcopy(model.state_dict()) if probe.epochs else None
        if getattr(model_config, "stacked", False) and probe.epochs:  # the context learns from out-of-fold logits
            data["train"] = out_of_fold_logits(data["train"], data["dev"], labels, train_config,
                                               C=probe.epochs[probe.best_epoch]["C"],
                                               input_dims={m: lin.in_features
                                                           for m, lin in model.utterance.linear.items()})
        history = fit(model, data["train"], data["dev"], labels, train_config, progress=progress,
                      modality_dropout=run_config.modality_dropout or None, checkpoint_dir=state_dir)
        if probe.epochs and probe.best_dev_weighted_f1 > history.best_dev_weighted_f1:
            model.load_state_dict(start)  # dev prefers the probe the model started from: keep it (epoch -1)
            history.best_epoch, history.best_dev_weighted_f1 = -1, probe.best_dev_weighted_f1
    metrics: dict[str, Any] = {"best_epoch": history.best_epoch, "train_seconds": history.seconds,
                               **({"probe": probe.epochs[probe.best_epoch]} if probe.epochs else {}),
                               "n_parameters": sum(p.numel() for p in model.parameters()),
                               "history": history.epochs,
                               "absent": {s: absence_counts(d) for s, d in data.items()}}
    if extraction is not None:
        metrics["extraction"] = extraction
    for split in eval_splits:  # the dev-selected checkpoint, evaluated once per split
        if split in data and data[split]:
            metrics[split] = score_dialogues(model, data[split], labels)
    save_run(run_dir, model, run_config, labels, metrics)
    shutil.rmtree(state_dir, ignore_errors=True)  # the seed is finished: its run files replace the state
    plot_training_curve(history.epochs, run_dir / "training_curve.png",
                        title=f"{model_config.kind} · {_encoder_label(run_config)} · seed {train_config.seed}")
    for split in eval_splits:
        if split in metrics:
            m = metrics[split]
            plot_confusion(m["confusion"], labels, run_dir / f"confusion_{split}.png",
                           title=f"{split}: weighted F1 {m['weighted_f1']:.3f}, accuracy {m['accuracy']:.3f}")
    return metrics


def _train_seed_task(shared: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One seed of :func:`run_experiment` (here, or as an executor task writing its own seed folder)."""
    rc = job["run_config"]
    return train_one_seed(Path(job["run_dir"]), shared["corpus"], shared["features"], shared["model_config"],
                          rc.train, rc, progress=shared["progress"], extraction=shared["extraction"])


def _log_seed(log: Callable[[str], None], seed: int, m: dict[str, Any]) -> None:
    line = f"seed {seed}: best epoch {m['best_epoch']}, dev wF1 {m['dev']['weighted_f1']:.4f}"
    if "test" in m:
        line += f", test wF1 {m['test']['weighted_f1']:.4f}, acc {m['test']['accuracy']:.4f}"
    log(line + f" ({m['train_seconds']:.0f} s)")


def _encoder_label(rc: RunConfig) -> str:
    return " + ".join(",".join(rc.encoders.get(m, [m])) for m in rc.modalities)


def run_experiment(*, dataset: str, data_dir: str, out: str | Path, model_config: DialogueConfig,
                   train_config: TrainConfig, modalities: Sequence[str] = ("text",), text_encoder: str = "mpnet",
                   encoders: dict[str, list[str]] | None = None, modality_dropout: dict[str, float] | None = None,
                   standardize: Sequence[str] = DEFAULT_STANDARDIZED, seeds: int = 1, media_dir: str | None = None,
                   progress: bool = True, corpus: Corpus | None = None, qc_dir: str | None = None,
                   log: Callable[[str], None] | None = None,
                   resume: bool = False, adapters: Mapping[str, str | Path] | None = None,
                   tune_adapters: bool = False, executor: Any = None, precomputed: tuple | None = None
                   ) -> dict[str, Any]:
    """``encoders[m]`` lists modality m's encoders (defaults per modality; ``text_encoder`` when text has
    none); ``modality_dropout[m]`` its training-time dropout probability; ``standardize`` the modalities
    z-scored with train-split statistics; ``qc_dir`` a ``merc qc`` folder whose speaker tracks the face
    encoders use (recorded in the run); ``adapters[m]`` a stage-2 adapter folder whose 128-d bottleneck replaces
    modality m's raw stage-1 feature (frozen unless ``tune_adapters``; ``merc.training.adapters``).
    ``executor`` (:mod:`merc.executors`): where the missing features are extracted (``merc.training.extract``)
    and the seeds train, each as one task writing its own seed folder (None: here, one after another).
    ``precomputed``: the ``corpus_features`` result for this corpus and these encoders, computed by the caller
    (a search on Ray extracts once, before its configurations)."""
    out = Path(out)
    log = log or logger.info
    t0 = time.time()
    encoders = resolve_encoders(list(modalities), {"text": [text_encoder], **(encoders or {})})
    modality_dropout = check_modality_dropout(modality_dropout, list(modalities))
    adapters = dict(adapters or {})
    loaded = load_adapters(adapters, list(modalities))  # before extraction: a bad folder fails at once
    if tune_adapters and not loaded:
        raise ConfigError("--tune-adapters needs --adapters (there is nothing to fine-tune)")
    if loaded and not isinstance(model_config, DialogueConfig):
        raise ConfigError(f"--adapters feed the dialogue models (mamba, gru, transformer, mlp), not "
                          f"--model {getattr(model_config, 'kind', '?')}")
    corpus = corpus or load_corpus(dataset, data_dir, media_dir=media_dir)
    for s in ("train", "dev"):
        if not corpus.splits.get(s):
            raise InputError(f"{dataset} corpus at {data_dir} has no {s!r} split; training needs train and dev")
    splits = [s for s in ("train", "dev", "test") if corpus.splits.get(s)]
    from merc.training.absence import check_media_named
    check_media_named(corpus, modalities, dataset=dataset, data_dir=data_dir, media_dir=media_dir)
    if precomputed is None and executor is not None:  # on Ray: the store's missing rows by the workers first
        from merc.training.extract import prefill
        prefill(corpus, splits, encoders, executor, qc_dir=qc_dir, progress=progress)
    raw, extraction, fingerprints = precomputed or corpus_features(corpus, splits, modalities, encoders,
                                                                   media_dir=media_dir, progress=progress,
                                                                   qc_dir=qc_dir)
    from merc.training.absence import absent_line, untrained_labels
    for split, per_m in extraction.items():
        for m, rep in per_m.items():
            if rep["absent"]:
                log(absent_line(rep, m, split) + "; the model uses their other modalities")
    unseen = untrained_labels(corpus)
    if unseen:
        logger.warning("%s has no training utterance labelled %s: the model cannot learn %s",
                       dataset, ", ".join(map(repr, unseen)), "it" if len(unseen) == 1 else "them")
    check_adapter_encoders(loaded, encoders, fingerprints, feature_dims(raw["train"]), adapters)
    # an adapted modality stays raw: the adapter standardises its input with its own corpus' statistics
    normalizer = FeatureNormalizer.fit(raw["train"], [m for m in standardize if m in modalities and m not in loaded])
    features = {s: normalizer.transform(raw[s]) for s in splits}
    model_config = replace(model_config, n_classes=len(corpus.labels),
                           input_dims={m: feature_dims(features["train"])[m] for m in modalities})
    encode_seconds = time.time() - t0
    corpus_fingerprint, prov = corpus.fingerprint(), provenance()
    seed_list = [train_config.seed + k for k in range(seeds)]
    results: dict[int, dict[str, Any]] = {}
    jobs: list[dict[str, Any]] = []  # seeds still to train
    for seed in seed_list:
        run_dir = out if seeds == 1 else out / f"seed_{seed}"
        rc = RunConfig(model=model_config, train=replace(train_config, seed=seed), dataset=dataset,
                       data_dir=str(data_dir), modalities=list(modalities),
                       text_encoder=encoders.get("text", [text_encoder])[0], encoders=encoders,
                       encoder_fingerprints=fingerprints, normalization=normalizer.to_dict(),
                       modality_dropout=modality_dropout, media_dir=str(media_dir or ""), qc_dir=str(qc_dir or ""),
                       corpus_fingerprint=corpus_fingerprint, provenance=prov,
                       adapters=adapter_records(loaded, adapters), tune_adapters=bool(tune_adapters))
        m = completed_seed(run_dir, rc.to_dict()) if resume else None  # --resume: keep finished seeds
        if m:
            results[seed] = m
            _log_seed(log, seed, m)
        else:
            jobs.append({"seed": seed, "run_dir": run_dir, "run_config": rc})
    remote = executor is not None and executor.name != "local"
    shared = {"corpus": corpus, "features": features, "model_config": model_config, "extraction": extraction,
              "progress": progress and not remote}  # no progress bars from workers
    for i, m in (executor.map_tasks(_train_seed_task, jobs, shared=shared) if remote
                 else ((i, _train_seed_task(shared, j)) for i, j in enumerate(jobs))):
        results[jobs[i]["seed"]] = m
        _log_seed(log, jobs[i]["seed"], m)
    per_seed = [results[seed] for seed in seed_list]
    summary: dict[str, Any] = {
        "dataset": dataset, "model": model_config.kind, "modalities": list(modalities), "encoders": encoders,
        "text_encoder": encoders.get("text", [""])[0], "seeds": seed_list, "extraction": extraction,
        "encode_seconds": encode_seconds, "train_seconds": [m["train_seconds"] for m in per_seed],
        "corpus_fingerprint": corpus_fingerprint, "provenance": prov,
        "adapters": {m: str(Path(f).resolve()) for m, f in adapters.items()}, "tune_adapters": bool(tune_adapters)}
    for split in ("dev", "test"):
        if split in per_seed[0]:
            summary[split] = {k: mean_std([m[split][k] for m in per_seed])
                              for k in ("weighted_f1", "accuracy", "macro_f1")}
    if seeds > 1:
        best = int(np.argmax([m["dev"]["weighted_f1"] for m in per_seed]))
        summary["dev_selected_seed_dir"] = f"seed_{seed_list[best]}"
        write_json(out / "summary.json", summary)
    return summary
