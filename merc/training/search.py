"""``merc train --search``: a small dev-selected search over the dialogue model's hyper-parameters.

Each configuration of a grid (a handful of overrides of the command line's settings) is trained with the same
seed(s) on **train**, early-stopped and scored on **dev only**: the search works on a copy of the corpus that
has no test split, so no test utterance is encoded or scored. The results are printed as a table and saved in
``--out`` as ``search.json`` and ``search.md``; the caller (``merc train``) then trains the dev-best
configuration as the normal run in ``--out`` (with ``--seeds K``), so evaluate / predict / from_pretrained
work unchanged.

Grid: :data:`DEFAULT_GRID`, one change at a time around the command line's settings (learning rate, dropout,
width, depth, class weighting, loss) and the other fusion than the command line's (``--fusion``
plain <-> residual, ``merc.training.defaults``). Nothing in it depends on a corpus's labels or speakers. ``--search-grid
FILE.json`` replaces it: a JSON list of objects whose keys are fields of the model config
(:class:`~merc.models.dialogue.DialogueConfig`: ``d_model``, ``n_layers``, ``dropout``, …) or of
:class:`~merc.training.trainer.TrainConfig` (``lr``, ``class_weights``, ``loss``, ``focal_gamma``, …), plus an
optional ``"name"``; ``{}`` is the command line's settings as given.

Budget: ``--search-budget-minutes M`` stops starting new configurations once the configurations trained so far
(this session and earlier ones) took M minutes; the first always runs, the rest are listed as not run.

Resumable: each finished configuration writes ``search/<name>.json`` atomically (its runs are in
``search/<name>/``); a rerun with ``--resume`` reads those instead of training again, and resumes the
unfinished configuration's finished seeds.

Reference: the random/grid-search protocol of scikit-learn's ``GridSearchCV`` with a fixed validation split
(``PredefinedSplit``), scored by weighted F1; Bergstra & Bengio (JMLR 2012) on small searches.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from merc.data.schema import Corpus
from merc.errors import ConfigError, IncompatibleRunError, MissingFileError
from merc.io import atomic_write_text, write_json
from merc.training.defaults import RESIDUAL_MIN_STEPS
from merc.training.trainer import TrainConfig

log = logging.getLogger(__name__)

# one change at a time around the command line's settings; nothing corpus-specific
DEFAULT_GRID: list[dict[str, Any]] = [
    {},
    {"lr": 1e-3},
    {"dropout": 0.3},
    {"d_model": 256},
    {"n_layers": 1},
    {"class_weights": "sqrt"},
    {"loss": "focal", "focal_gamma": 2.0},
    {"loss": "supcon", "supcon_weight": 0.1},
]
FUSION_PLAIN = {"name": "fusion-plain", "utterance_logits": False, "probe_init": False, "min_steps": 0}
FUSION_RESIDUAL = {"name": "fusion-residual", "utterance_logits": True, "probe_init": True,
                   "min_steps": RESIDUAL_MIN_STEPS}
FIXED = {"kind", "input_dims", "n_classes", "seed"}  # set by the data or by --seed, never searched
SEARCH_DIR = "search"


@dataclass
class Candidate:
    """One configuration of the grid: its name and its overrides of the model and training settings."""
    name: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def overrides(self) -> dict[str, Any]:
        return {**self.model, **self.train}

    def apply(self, model_config, train_config: TrainConfig):
        return replace(model_config, **self.model), replace(train_config, **self.train)


def _slug(overrides: dict[str, Any]) -> str:
    text = "+".join(f"{k}-{v}" for k, v in overrides.items()) or "defaults"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def candidates(grid: Sequence[dict[str, Any]], model_config, *, source: str = "the default grid") -> list[Candidate]:
    """Split each grid entry into model and training overrides; ConfigError for an unknown or fixed key."""
    model_keys = {f.name for f in fields(model_config)} - FIXED
    train_keys = {f.name for f in fields(TrainConfig)} - FIXED
    out, names = [], set()
    for i, entry in enumerate(grid):
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: entry {i} is {entry!r}; expected an object of settings, "
                              f"e.g. {{\"lr\": 0.001}}")
        entry = dict(entry)
        name = str(entry.pop("name", "")) or _slug(entry)
        bad = sorted(k for k in entry if k not in model_keys | train_keys)
        if bad:
            raise ConfigError(f"{source}: entry {i} ({name}) sets {bad}, which are not settings of the "
                              f"{type(model_config).__name__} or TrainConfig; known: {sorted(model_keys | train_keys)}")
        if name in names:
            raise ConfigError(f"{source}: two entries are named {name!r}; give them distinct \"name\"s")
        names.add(name)
        out.append(Candidate(name, {k: v for k, v in entry.items() if k in model_keys},
                             {k: v for k, v in entry.items() if k in train_keys and k not in model_keys}))
    if not out:
        raise ConfigError(f"{source}: the grid is empty; give at least one configuration ({{}} = the defaults)")
    return out


def default_candidates(model_config) -> list[Candidate]:
    """:data:`DEFAULT_GRID` for this model kind: entries naming settings the model does not have are left out."""
    keys = {f.name for f in fields(model_config)} | {f.name for f in fields(TrainConfig)}
    grid = [g for g in DEFAULT_GRID if set(g) <= keys and not (getattr(model_config, "kind", "") == "matav"
                                                                and g.get("loss") == "supcon")]
    if "utterance_logits" in keys:  # the other fusion (merc.training.defaults) than the command line's
        grid.append(FUSION_PLAIN if model_config.utterance_logits else FUSION_RESIDUAL)
    return candidates(grid, model_config)


def read_grid(path: str | Path, model_config) -> list[Candidate]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"--search-grid {path}: no such file")
    try:
        grid = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"--search-grid {path}: not valid JSON ({e})") from None
    if not isinstance(grid, list):
        raise ConfigError(f"--search-grid {path}: expected a JSON list of objects, e.g. [{{}}, {{\"lr\": 0.001}}]")
    return candidates(grid, model_config, source=str(path))


def without_test(corpus: Corpus) -> Corpus:
    """The corpus with its train and dev splits only: what a search may see."""
    return Corpus(corpus.name, {s: corpus.splits[s] for s in ("train", "dev") if s in corpus.splits},
                  list(corpus.labels), root=corpus.root)


# one trained configuration: (candidate, its model config, its train config, out dir) -> run_experiment summary
TrainFn = Callable[[Candidate, Any, TrainConfig, Path], dict[str, Any]]


def _finished(result_file: Path, cand: Candidate, base_json: str) -> dict[str, Any]:
    """The row a finished configuration wrote (IncompatibleRunError when it was searched with other settings)."""
    row = json.loads(result_file.read_text(encoding="utf-8"))
    if json.dumps(row.get("base"), sort_keys=True, default=str) != base_json or \
            row.get("overrides") != json.loads(json.dumps(cand.overrides, default=str)):
        raise IncompatibleRunError(f"{result_file} was searched with other settings; rerun with the same "
                                   f"options and grid, or --overwrite to search afresh")
    log.info("search: %s finished earlier, kept", cand.name)
    return row


def _done_row(cand: Candidate, tc: TrainConfig, summary: dict[str, Any], seconds: float,
              base: dict[str, Any]) -> dict[str, Any]:
    if "test" in summary:  # cannot happen with without_test(); a guard against a train_fn that saw test
        raise RuntimeError("a search configuration was scored on test; the search must see train and dev only")
    dev = summary["dev"]
    return {"name": cand.name, "overrides": cand.overrides, "status": "done", "seconds": seconds,
            "seeds": summary.get("seeds", [tc.seed]), "base": base,
            **{f"dev_{k}": dev[k] for k in ("weighted_f1", "accuracy", "macro_f1")}}


def _search_task(train_fn: TrainFn, job: tuple) -> tuple[dict[str, Any], float]:
    """One configuration as an executor task: its summary and the seconds it took."""
    t0 = time.time()
    summary = train_fn(*job)
    return summary, time.time() - t0


def _run_spread(cands: Sequence[Candidate], model_config, train_config: TrainConfig, folder: Path,
                train_fn: TrainFn, executor, budget_minutes: float | None, resume: bool, base: dict[str, Any]
                ) -> tuple[list[dict[str, Any]], float, str]:
    """The configurations as tasks of ``executor`` (several at a time). The budget stops *submitting*: once the
    finished configurations took ``budget_minutes``, the ones not yet started are listed as not run."""
    base_json = json.dumps(base, sort_keys=True, default=str)
    rows: dict[int, dict[str, Any]] = {}
    for i, cand in enumerate(cands):
        if resume and (folder / f"{cand.name}.json").is_file():
            rows[i] = _finished(folder / f"{cand.name}.json", cand, base_json)
    spent = sum(r["seconds"] for r in rows.values())
    started: list[int] = []

    def jobs():
        for i, cand in enumerate(cands):
            if i in rows:
                continue
            if budget_minutes is not None and rows and spent >= 60 * budget_minutes:
                return
            started.append(i)
            mc, tc = cand.apply(model_config, train_config)
            yield cand, mc, tc, folder / cand.name

    for k, (summary, seconds) in executor.map_tasks(_search_task, jobs(), shared=train_fn):
        i = started[k]
        cand = cands[i]
        rows[i] = row = _done_row(cand, cand.apply(model_config, train_config)[1], summary, seconds, base)
        write_json(folder / f"{cand.name}.json", row)
        spent += seconds
        log.info("search: %s dev weighted F1 %.4f (%.0f s)", cand.name, summary["dev"]["weighted_f1"]["mean"],
                 seconds)
    skipped = [i for i in range(len(cands)) if i not in rows]
    note = ""
    if skipped:
        note = (f"budget of {budget_minutes:g} min reached after {len(rows)} of {len(cands)} configurations "
                f"({spent / 60:.1f} min of training); the rest were not run")
        log.warning("search: %s", note)
        rows.update({i: {"name": cands[i].name, "overrides": cands[i].overrides, "status": "not run (budget)"}
                     for i in skipped})
    return [rows[i] for i in range(len(cands))], spent, note


def run_search(cands: Sequence[Candidate], model_config, train_config: TrainConfig, out: str | Path,
               train_fn: TrainFn, *, budget_minutes: float | None = None, resume: bool = False,
               executor: Any = None) -> dict[str, Any]:
    """Train every candidate (``train_fn`` on train+dev only), keep the dev-best; writes ``search.json`` and
    ``search.md`` in ``out`` and returns the same record (``rows``, ``best``, ``note``). ``executor``
    (:mod:`merc.executors`, not local): the configurations run as its tasks, several at a time, each writing
    its own ``search/<name>/`` and ``search/<name>.json`` as here (``train_fn`` must be picklable)."""
    out = Path(out)
    folder = out / SEARCH_DIR
    base = {"model": asdict(model_config), "train": asdict(train_config)}
    base_json = json.dumps(base, sort_keys=True, default=str)
    rows: list[dict[str, Any]] = []
    spent, note = 0.0, ""
    if executor is not None and executor.name != "local":
        rows, spent, note = _run_spread(cands, model_config, train_config, folder, train_fn, executor,
                                        budget_minutes, resume, base)
        cands = []  # all done
    for i, cand in enumerate(cands):
        result_file = folder / f"{cand.name}.json"
        if result_file.is_file() and resume:
            row = _finished(result_file, cand, base_json)
            rows.append(row)
            spent += row["seconds"]
            continue
        if budget_minutes is not None and rows and spent >= 60 * budget_minutes:
            note = (f"budget of {budget_minutes:g} min reached after {len(rows)} of {len(cands)} configurations "
                    f"({spent / 60:.1f} min); the rest were not run")
            log.warning("search: %s", note)
            rows += [{"name": c.name, "overrides": c.overrides, "status": "not run (budget)"} for c in cands[i:]]
            break
        mc, tc = cand.apply(model_config, train_config)
        t0 = time.time()
        summary = train_fn(cand, mc, tc, folder / cand.name)
        seconds = time.time() - t0
        row = _done_row(cand, tc, summary, seconds, base)
        write_json(result_file, row)  # atomic: a kill leaves this configuration either finished or absent
        rows.append(row)
        spent += seconds
        log.info("search: %s dev weighted F1 %.4f (%.0f s)", cand.name, summary["dev"]["weighted_f1"]["mean"],
                 seconds)
    best = rows[best_of(rows)]
    record = {"rows": [{k: v for k, v in r.items() if k != "base"} for r in rows], "best": best["name"],
              "best_overrides": best["overrides"], "note": note, "base": base,
              "selection": "mean dev weighted F1 over the search seeds (test never seen)",
              "minutes": spent / 60}
    write_json(out / "search.json", record)
    atomic_write_text(out / "search.md", table(record))
    return record


def table(record: dict[str, Any]) -> str:
    """The search as a markdown table: one row per configuration, the kept one marked."""
    def pct(ms: dict[str, float]) -> str:
        return f"{100 * ms['mean']:.2f}" + (f" ± {100 * ms['std']:.2f}" if ms.get("n", 1) > 1 else "")

    lines = ["| configuration | changed settings | dev weighted F1 | dev accuracy | dev macro F1 | minutes | |",
             "|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        changed = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(command line)"
        if r["status"] != "done":
            lines.append(f"| {r['name']} | {changed} | {r['status']} | | | | |")
            continue
        kept = "**kept**" if r["name"] == record["best"] else ""
        lines.append(f"| {r['name']} | {changed} | {pct(r['dev_weighted_f1'])} | {pct(r['dev_accuracy'])} | "
                     f"{pct(r['dev_macro_f1'])} | {r['seconds'] / 60:.1f} | {kept} |")
    text = "\n".join(lines) + "\n"
    text += f"\nSelected by {record['selection']}: **{record['best']}**.\n"
    if record.get("note"):
        text += f"\nNote: {record['note']}.\n"
    return text


def best_of(rows: Sequence[dict[str, Any]]) -> int:
    """Index of the dev-best finished row (first on ties)."""
    scores = [r["dev_weighted_f1"]["mean"] if r["status"] == "done" else -np.inf for r in rows]
    return int(np.argmax(scores))
