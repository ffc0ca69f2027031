"""Seed ensembles: a multi-seed run directory (``merc train --seeds K``: ``seed_<n>/`` members and
``summary.json``) used as one model whose class probabilities are the **mean of its members' softmax
probabilities** (``merc evaluate --ensemble``, ``merc predict --ensemble``).

Each member keeps its own inputs as trained: the raw encoder features are computed once (the members of a run
share their encoders; this is checked) and each member standardises them with its own train-split statistics
and builds its own dialogues (its speaker slots) before its model runs.

Reporting keeps the two kinds of figure apart: :func:`ensemble_scores` gives each member's scores, their
mean ± std (the *single-model* figure) and the ensemble's scores under separate keys — never one mixed number.

A single run (one ``model.safetensors``, no ``summary.json``) is not an ensemble: ``--ensemble`` on it is a
ConfigError saying so (rather than silently reporting a single model under the ensemble's name).

Reference: Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty Estimation using Deep
Ensembles" (NeurIPS 2017): averaging the probabilities of independently seeded models.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from merc.data.schema import Conversation
from merc.errors import ConfigError, IncompatibleRunError, MissingFileError
from merc.metrics import evaluate_predictions, mean_std
from merc.training.batching import IGNORE, Dialogue
from merc.training.run import RunConfig, TrainedRun
from merc.training.trainer import predict_dialogues

SHARED = ("modalities", "encoders", "encoder_fingerprints")  # must agree across members: features are shared
HEADLINE = ("weighted_f1", "accuracy", "macro_f1")


def member_dirs(run_dir: str | Path) -> list[Path]:
    """The ``seed_<n>/`` members of a multi-seed run, in the order of ``summary.json``'s seeds."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if not summary.is_file():
        if (run_dir / "model.safetensors").is_file():
            raise ConfigError(f"{run_dir} is a single run, not a multi-seed run: --ensemble averages the seeds of a "
                              f"`merc train --seeds K` run (K >= 2); drop --ensemble to use this model")
        raise MissingFileError(f"{run_dir} is not a merc run directory (no summary.json); create one with "
                               f"`merc train ... --seeds K --out {run_dir}`")
    seeds = json.loads(summary.read_text(encoding="utf-8")).get("seeds") or []
    dirs = [run_dir / f"seed_{s}" for s in seeds]
    missing = [d.name for d in dirs if not (d / "model.safetensors").is_file()]
    if missing or not dirs:
        raise MissingFileError(f"{run_dir}: members {missing or 'seed_<n>'} listed in summary.json are missing; "
                               f"finish the run with `merc train ... --resume --out {run_dir}`")
    return dirs


@dataclass
class EnsembleRun:
    """The members of a multi-seed run, used like a :class:`~merc.training.run.TrainedRun` by prediction
    (``labels``, ``config``, ``path``, ``features_for``, ``predict``)."""
    members: list[TrainedRun]
    path: Path

    @classmethod
    def from_pretrained(cls, run_dir: str | Path) -> "EnsembleRun":
        members = [TrainedRun.from_pretrained(d) for d in member_dirs(run_dir)]
        first = members[0]
        for m in members[1:]:
            if list(m.labels) != list(first.labels):
                raise IncompatibleRunError(f"{m.path}: labels {m.labels} differ from {first.path}'s {first.labels}")
            a, b = m.config.to_dict(), first.config.to_dict()
            diff = [k for k in SHARED if a[k] != b[k]]
            if diff:
                raise IncompatibleRunError(f"{m.path}: {diff[0]} {a[diff[0]]} differs from {first.path}'s "
                                           f"{b[diff[0]]}; the members of an ensemble must share their encoders")
        return cls(members, Path(run_dir))

    @property
    def labels(self) -> list[str]:
        return self.members[0].labels

    @property
    def config(self) -> RunConfig:
        return self.members[0].config  # encoders, modalities, dataset: shared (checked); speaker slots: see below

    def features_for(self, conversations: Sequence[Conversation], **kw) -> dict[str, dict[str, np.ndarray | None]]:
        """Raw features by the members' (shared) encoders, computed once."""
        return self.members[0].features_for(conversations, **kw)

    def member_probabilities(self, conversations: Sequence[Conversation], features) -> list[list[np.ndarray]]:
        """[member][conversation] (seq_len, n_classes): each member with its own standardisation."""
        return [m.predict(conversations, features=features) for m in self.members]

    def predict(self, conversations: Sequence[Conversation], *, features=None,
                progress: bool = False) -> list[np.ndarray]:
        """Per conversation, the mean of the members' probabilities (seq_len, n_classes)."""
        features = features or self.features_for(conversations, progress=progress)
        return average(self.member_probabilities(conversations, features))


def average(per_member: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """[member][dialogue] (seq_len, n_classes) -> [dialogue] mean over members."""
    return [np.mean(np.stack(ps), axis=0) for ps in zip(*per_member, strict=True)]


def score_probabilities(probs: Sequence[np.ndarray], dialogues: Sequence[Dialogue],
                        labels: Sequence[str]) -> dict[str, Any]:
    """Scores of per-dialogue probabilities (seq_len, n_classes) against the dialogues' labelled utterances."""
    y = np.concatenate([d.labels for d in dialogues])
    p = np.concatenate(list(probs))
    keep = y != IGNORE
    m = evaluate_predictions(y[keep], p[keep].argmax(-1), labels)
    return {k: m[k] for k in (*HEADLINE, "per_class_f1", "n")}


def ensemble_scores(run: EnsembleRun, conversations: Sequence[Conversation], features) -> dict[str, Any]:
    """``{"members": [{member, scores}], "single_model": mean ± std over members, "ensemble": scores}`` on the
    labelled utterances of ``conversations``; ``features`` raw (as from ``features_for`` or the feature store)."""
    per_member, dialogues = [], None
    for m in run.members:
        dialogues = m.dialogues(conversations, features)
        per_member.append(predict_dialogues(m.model, dialogues))
    members = [{"member": m.path.name, **score_probabilities(p, dialogues, run.labels)}
               for m, p in zip(run.members, per_member, strict=True)]
    single = {k: mean_std([s[k] for s in members]) for k in HEADLINE}
    single["per_class_f1"] = {lab: mean_std([s["per_class_f1"][lab] for s in members]) for lab in run.labels}
    ensemble = {**score_probabilities(average(per_member), dialogues, run.labels), "n_members": len(members)}
    return {"run_dir": str(run.path), "n": ensemble["n"], "members": members, "single_model": single,
            "ensemble": ensemble}


def markdown(result: dict[str, Any], *, title: str = "Seed ensemble") -> str:
    """Two tables: single models (each member, then mean ± std), and the ensemble — never one mixed table."""
    labels = list(result["ensemble"]["per_class_f1"])
    head = "| | weighted F1 | accuracy | macro F1 | " + " | ".join(labels) + " |"
    rule = "|---" * (4 + len(labels)) + "|"

    def pct(x: float) -> str:
        return f"{100 * x:.2f}"

    lines = [f"# {title}", "", f"Run: `{result['run_dir']}`, {result['n']} labelled utterances"
             + (f", split {result['split']}" if "split" in result else "") + ".", "",
             f"## Single models ({len(result['members'])} seeds; per-class F1)", "", head, rule]
    for s in result["members"]:
        lines.append(f"| {s['member']} | " + " | ".join(pct(s[k]) for k in HEADLINE) + " | "
                     + " | ".join(pct(s["per_class_f1"][lab]) for lab in labels) + " |")
    sm = result["single_model"]
    lines.append("| **mean ± std** | " + " | ".join(f"{pct(sm[k]['mean'])} ± {pct(sm[k]['std'])}" for k in HEADLINE)
                 + " | " + " | ".join(pct(sm["per_class_f1"][lab]["mean"]) for lab in labels) + " |")
    e = result["ensemble"]
    lines += ["", f"## Ensemble (mean of the {e['n_members']} members' probabilities)", "", head, rule,
              "| ensemble | " + " | ".join(pct(e[k]) for k in HEADLINE) + " | "
              + " | ".join(pct(e["per_class_f1"][lab]) for lab in labels) + " |", ""]
    return "\n".join(lines)
