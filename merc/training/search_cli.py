"""The ``--search`` options of ``merc train`` (:mod:`merc.training.search`) and the glue that runs the search
before the normal run: ``--search``, ``--search-grid FILE.json``, ``--search-budget-minutes M``,
``--search-seeds N``."""
from __future__ import annotations

import argparse
import logging
from functools import partial
from pathlib import Path
from typing import Any

from merc.training.trainer import TrainConfig

log = logging.getLogger(__name__)


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hyper-parameter search (--search)")
    g.add_argument("--search", action="store_true",
                   help="first train a handful of configurations (the default grid: one change at a time to lr, "
                        "dropout, d_model, layers, class weights, loss, and the other --fusion) on train, score "
                        "them on dev only, print the table (OUT/search.md, search.json), "
                        "then train the dev-best as the run in --out")
    g.add_argument("--search-grid", default=None, metavar="FILE.json",
                   help="a JSON list of configurations replacing the default grid, e.g. "
                        '[{}, {"lr": 0.001}, {"d_model": 256, "dropout": 0.3}]; keys: model or training settings')
    g.add_argument("--search-budget-minutes", type=float, default=None, metavar="M",
                   help="start no new configuration once the search has taken M minutes (None: no bound)")
    g.add_argument("--search-seeds", type=int, default=1, metavar="N",
                   help="seeds per configuration (--seed, --seed+1, …), the same for every configuration")


def _train_candidate(fixed: dict[str, Any], cand, mc, tc, out: Path) -> dict[str, Any]:
    """One configuration of the search: ``run_experiment`` on train and dev (here or as an executor task)."""
    from merc.training.experiment import run_experiment
    return run_experiment(**fixed, out=out, model_config=mc, train_config=tc)


def search_settings(args: argparse.Namespace, model_config, train_config: TrainConfig,
                    run_kwargs: dict[str, Any], *, executor: Any = None):
    """Run the search in ``args.out`` and return the dev-best (model config, train config). ``run_kwargs`` are
    the keyword arguments of :func:`merc.training.experiment.run_experiment` shared with the final run
    (must include ``corpus``); the search sees ``without_test(corpus)`` only."""
    from merc.training.search import default_candidates, read_grid, run_search, table, without_test
    cands = (read_grid(args.search_grid, model_config) if args.search_grid else default_candidates(model_config))
    searched = without_test(run_kwargs["corpus"])
    fixed = {**run_kwargs, "corpus": searched, "progress": False, "seeds": args.search_seeds, "resume": True}
    if executor is not None and executor.name != "local":  # features once, here; the tasks only train
        from merc.training.extract import prefill
        from merc.training.features import corpus_features, resolve_encoders
        encoders = resolve_encoders(list(run_kwargs["modalities"]), {"text": [run_kwargs["text_encoder"]],
                                                                      **(run_kwargs.get("encoders") or {})})
        splits = [s for s in ("train", "dev") if searched.splits.get(s)]
        progress, qc_dir = run_kwargs.get("progress", True), run_kwargs.get("qc_dir")
        prefill(searched, splits, encoders, executor, qc_dir=qc_dir, progress=progress)
        fixed["precomputed"] = corpus_features(searched, splits, list(run_kwargs["modalities"]), encoders,
                                               media_dir=run_kwargs.get("media_dir"), progress=progress,
                                               qc_dir=qc_dir)
    train_fn = partial(_train_candidate, fixed)
    record = run_search(cands, model_config, train_config, args.out, train_fn,
                        budget_minutes=args.search_budget_minutes, resume=True, executor=executor)
    print(table(record))
    best = next(c for c in cands if c.name == record["best"])
    log.info("search: training the dev-best configuration %s as the run in %s", best.name, args.out)
    return best.apply(model_config, train_config)
