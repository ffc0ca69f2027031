"""MELD text-only benchmark: mlp / gru / transformer / mamba over frozen MiniLM and MPNet sentence
embeddings, and over an emotion-tuned MPNet (``merc encoder finetune``), K seeds each, dev-selected,
test evaluated once per seed; plus the logistic-regression floor (C chosen on dev) and, for a tuned
encoder, its own utterance classifier. Writes benchmarks/results/meld_text/meld_text.md and .json.

Encoders are names or ``label=path`` (a fine-tuned folder):

    .venv/bin/python benchmarks/bench_meld_text.py --encoders mpnet-meld=../ft/mpnet-meld --seeds 5

Resumable: each (model, encoder) result is saved as it finishes under benchmarks/results/meld_text/parts/, and a
rerun skips finished ones. Runs go to $MERC_BENCH_RUNS (default /tmp/merc-bench-runs).

    .venv/bin/python benchmarks/bench_meld_text.py --seeds 5 --jobs 2

Part ``wd`` (issue 10): the rows that weight-decay groups change (merc.optim: no decay on biases,
norms, Mamba A_log / D), rerun over the tuned encoder and compared with the rows recorded before in
benchmarks/results/meld_text/parts/ — a before/after table in benchmarks/results/meld_text/meld_text_wd.md (and .json):

    .venv/bin/python benchmarks/bench_meld_text.py --part wd --encoders mpnet-meld=/path/to/tuned --seeds 5 --jobs 2 \
        --hp '<the same hyper-parameters as the recorded rows>'

Every part and results file records ``merc.io.provenance()`` (commit, dirty tree, command, machine, date).
``--data-dir`` / ``--dataset`` / ``--results-dir`` point it at another corpus (e.g. a tiny one, to try it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys  # noqa: E402
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from merc.io import dirty_outside_results, provenance, provenance_markdown

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_write_text, machine, pm, results_dir, welch, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = results_dir("meld_text")
PARTS = OUT / "parts"
DATA = ROOT.parent / "shared" / "data" / "meld"
MODELS = ["mlp", "gru", "transformer", "mamba"]
ENCODERS = ["minilm", "mpnet"]
ORDER = {"minilm": 0, "mpnet": 1}  # frozen first, then tuned encoders by label


def parse_encoders(spec: str) -> dict[str, str]:
    """``"minilm,mpnet-meld=/path"`` -> {label: encoder name or path}."""
    out = {}
    for item in filter(None, spec.split(",")):
        label, _, path = item.partition("=")
        out[label] = path or label
    return out


def runs_dir() -> Path:
    return Path(os.environ.get("MERC_BENCH_RUNS", "/tmp/merc-bench-runs"))


def per_seed(run_dir: Path, seeds: list[int]) -> list[dict] | None:
    """Dev and test weighted F1 of each seed, read from its run directory (None if one is gone)."""
    rows = []
    for k in seeds:
        f = run_dir / f"seed_{k}" / "metrics.json" if len(seeds) > 1 else run_dir / "metrics.json"
        if not f.is_file():
            return None
        m = json.loads(f.read_text())
        rows.append({"seed": k, "dev_weighted_f1": m["dev"]["weighted_f1"],
                     "test_weighted_f1": m["test"]["weighted_f1"]})
    return rows


def one(model: str, label: str, encoder: str, seeds: int, hp: dict, *, parts: Path | None = None,
        run_name: str | None = None, dataset: str = "meld", data_dir: Path | None = None) -> dict:
    """Train ``seeds`` seeds of ``model`` over ``encoder``; save the summary as ``parts/{model}_{label}.json``."""
    parts = parts or PARTS
    data_dir = data_dir or DATA
    run_name = run_name or f"{model}_{label}"
    import torch
    torch.set_num_threads(1)
    from merc.models.dialogue import DialogueConfig
    from merc.training.experiment import run_experiment
    from merc.training.trainer import TrainConfig
    runs = runs_dir()
    mc = DialogueConfig(kind=model, **{k: v for k, v in hp.items() if k in DialogueConfig.__dataclass_fields__})
    tc = TrainConfig(**{k: v for k, v in hp.items() if k in TrainConfig.__dataclass_fields__})
    t0 = time.time()
    s = run_experiment(dataset=dataset, data_dir=str(data_dir), out=runs / run_name, model_config=mc,
                       train_config=tc, text_encoder=encoder, seeds=seeds, progress=False, log=lambda *a: None)
    s["wall_seconds"] = time.time() - t0
    s["hyperparameters"] = effective_hp(hp)
    s["encoder_source"] = encoder
    s["date"] = time.strftime("%Y-%m-%d")
    s["per_seed"] = per_seed(runs / run_name, s["seeds"])
    s["provenance"] = provenance()
    write_json(parts / f"{model}_{label}.json", s)
    return s


def logreg_floor(encoder: str, dataset: str = "meld", data_dir: Path | None = None) -> dict:
    """Frozen embeddings, no context, logistic regression with C chosen on dev weighted F1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from merc.data import load_corpus
    from merc.training.experiment import corpus_features
    corpus = load_corpus(dataset, str(data_dir or DATA))
    feats, _, _ = corpus_features(corpus, ["train", "dev", "test"], ["text"], encoder, progress=False)
    xy = {}
    for s in feats:
        utts = corpus.utterances(s)
        xy[s] = ([feats[s]["text"][u.utterance_id] for u in utts], [u.emotion for u in utts])
    best = None
    for C in (0.1, 0.3, 1.0, 3.0, 10.0):
        clf = LogisticRegression(C=C, max_iter=2000).fit(*xy["train"])
        dev = f1_score(xy["dev"][1], clf.predict(xy["dev"][0]), average="weighted")
        if best is None or dev > best[0]:
            best = (dev, C, clf)
    dev, C, clf = best
    pred = clf.predict(xy["test"][0])
    tuned = Path(encoder) / "merc_encoder.json"
    own = json.loads(tuned.read_text()) if tuned.is_file() else None
    return {"own_classifier": own and {"dev_weighted_f1": own["dev"]["weighted_f1"], "best_epoch": own["best_epoch"],
                                       "test_weighted_f1": own["test"]["weighted_f1"],
                                       "test_accuracy": own["test"]["accuracy"], "seconds": own["seconds"]},
            "C": C, "dev_weighted_f1": dev, "test_weighted_f1": f1_score(xy["test"][1], pred, average="weighted"),
            "test_accuracy": accuracy_score(xy["test"][1], pred), "provenance": provenance()}


def encode_splits(corpus, folder: str, splits=("train", "dev", "test")) -> dict:
    """Encode ``splits`` of ``corpus`` with the text encoder in ``folder`` (filling the feature cache the dialogue
    benchmarks read); per split: utterances, seconds, whether the cache already had them."""
    from merc.encoders import FeatureStore, get_encoder
    enc = get_encoder(str(folder), "text")
    out = {}
    for split in splits:
        t0 = time.perf_counter()
        feats = FeatureStore().get(corpus, split, enc)
        out[split] = {"n": len(feats), "seconds": round(time.perf_counter() - t0, 1),
                      "cache_hit": bool(feats.meta.get("cache_hit"))}
    return out


HP_KEYS = ("d_model", "dropout", "epochs", "lr", "patience")


def effective_hp(hp: dict) -> dict:
    """The settings a run used: ``hp`` over the DialogueConfig/TrainConfig defaults, for the keys the table
    states (a part recorded with ``{}`` ran on the defaults)."""
    from merc.models.dialogue import DialogueConfig
    from merc.training.trainer import TrainConfig
    base = {**vars(TrainConfig()), **vars(DialogueConfig(kind="mamba"))}
    return {k: hp.get(k, base[k]) for k in HP_KEYS} | {k: v for k, v in hp.items() if k not in HP_KEYS}


def _machines(results: dict) -> str:
    """The CPUs the rows were computed on (recorded in their provenance since 2026-12)."""
    cpus = sorted({(s.get("provenance") or {}).get("machine", {}).get("cpu_model") for s in results.values()} - {None})
    unknown = sum(not (s.get("provenance") or {}).get("machine") for s in results.values())
    return ", ".join(cpus) + (f"; {unknown} parts before machines were recorded (AMD EPYC, 2 cores, per the "
                              "git history of this file)" if unknown else "")


def report(results: dict, floors: dict, args) -> None:
    hps = {json.dumps(effective_hp(s.get("hyperparameters", {})), sort_keys=True) for s in results.values()}
    n_seeds = sorted({len(s["seeds"]) for s in results.values()})
    dated = sorted({s["date"] for s in results.values() if "date" in s})
    undated = sum("date" not in s for s in results.values())
    dates = "; ".join(filter(None, [", ".join(dated), undated and (f"{undated} parts undated (written before dates "
                                                                   "were recorded: "
                                "`git log benchmarks/results/meld_text/parts/` dates them)")]))
    lines = ["# MELD, text only: dialogue models over frozen and emotion-tuned sentence embeddings", "",
             "Command: `.venv/bin/python benchmarks/bench_meld_text.py --seeds 5 --jobs 2 --hp '<hyper-parameters "
             "below>' "
             "--encoders minilm,mpnet,mpnet-meld=<folder written by benchmarks/bench_finetune.py>` "
             "(then `--report-only` to rewrite this file from the saved parts)", "",
             f"Rows computed on: {_machines(results)}; each run single-threaded. Report written on {machine()}. "
             f"Run dates: {dates}.", "",
             f"Protocol: train on MELD train ({DATA.name} from ../shared/data), early stopping and checkpoint "
             "selection on "
             "**dev** weighted F1, the selected checkpoint evaluated on test once; mean ± sample std over "
             f"{max(n_seeds)} seeds (0..{max(n_seeds) - 1}). Speaker identity: per-dialogue speaker-index embedding. "
             "Hyper-parameters (chosen on dev weighted F1 by a small manual search of 4 configurations with mamba "
             "and gru, then fixed for every model; other settings are the DialogueConfig/TrainConfig defaults): "
             f"`{' / '.join(sorted(hps))}`.", "",
             "| encoder | model | test weighted F1 (%) | test accuracy (%) | test macro F1 (%) | dev weighted F1 (%) "
             "| train s / seed |",
             "|---|---|---:|---:|---:|---:|---:|"]
    labels = sorted({e for _, e in results} | set(floors), key=lambda e: (ORDER.get(e, 9), e))
    for enc in labels:
        f = floors.get(enc)
        own = (f or {}).get("own_classifier")
        if own:
            lines.append(f"| {enc} | its own fine-tuning classifier (no dialogue model, epoch {own['best_epoch']} "
                         "on dev) | "
                         f"{100 * own['test_weighted_f1']:.2f} | {100 * own['test_accuracy']:.2f} | | "
                         f"{100 * own['dev_weighted_f1']:.2f} | {own['seconds']:.0f} (fine-tuning) |")
        if f:
            lines.append(f"| {enc} | logistic regression (no dialogue model, C={f['C']} on dev) | "
                         f"{100 * f['test_weighted_f1']:.2f} | "
                         f"{100 * f['test_accuracy']:.2f} | | {100 * f['dev_weighted_f1']:.2f} | |")
        for model in MODELS:
            s = results.get((model, enc))
            if s:
                secs = sum(s["train_seconds"]) / len(s["train_seconds"])
                lines.append(f"| {enc} | {model} | {pm(s['test']['weighted_f1'])} | {pm(s['test']['accuracy'])} | "
                             f"{pm(s['test']['macro_f1'])} | {pm(s['dev']['weighted_f1'])} | {secs:.0f} |")
    lines += ["", "Mamba against the best baseline per encoder (test weighted F1 means; ± is the standard error of the "
              "difference of two means over the seeds):", ""]
    for enc in labels:
        m = results.get(("mamba", enc))
        base = [(results[(b, enc)], b) for b in MODELS if b != "mamba" and (b, enc) in results]
        if not m or not base:
            continue
        b, name = max(base, key=lambda t: t[0]["test"]["weighted_f1"]["mean"])
        mt, bt = m["test"]["weighted_f1"], b["test"]["weighted_f1"]
        se = (mt["std"] ** 2 / mt["n"] + bt["std"] ** 2 / bt["n"]) ** 0.5
        diff = mt["mean"] - bt["mean"]
        verdict = "ahead of every baseline" if diff > 0 else "behind a baseline"
        test = ""
        if m.get("per_seed") and b.get("per_seed"):  # Welch's t-test over the seeds' test scores
            from scipy.stats import ttest_ind
            p = ttest_ind([r["test_weighted_f1"] for r in m["per_seed"]],
                          [r["test_weighted_f1"] for r in b["per_seed"]],
                          equal_var=False).pvalue
            test = f"; Welch's t-test over seeds p = {p:.2f}"
        lines.append(f"- {enc}: mamba {100 * mt['mean']:.2f} vs {name} {100 * bt['mean']:.2f}: "
                     f"{100 * diff:+.2f} ± {100 * se:.2f} points ({verdict}"
                     + (", but within two standard errors: not a clear difference" if abs(diff) < 2 * se else "")
                     + f"{test}).")
    prov = provenance()
    lines += ["", "## Provenance", "", "This file was written by:", "", provenance_markdown(prov), "",
              "The rows were computed at: " + part_commits([*results.values(), *floors.values()]), ""]
    atomic_write_text(OUT / "meld_text.md", "\n".join(lines) + "\n")
    write_json(OUT / "meld_text.json", {"results": {f"{m}_{e}": s for (m, e), s in results.items()},
                                        "logreg": floors, "machine": machine(), "provenance": prov})


def part_commits(parts: list[dict]) -> str:
    """Which commits (and dirty trees) the saved parts were computed at."""
    seen: dict[str, int] = {}
    for s in parts:
        p = s.get("provenance")
        key = ("not recorded (computed before provenance was kept; `git log benchmarks/results/` dates them)"
               if not p else f"`{p.get('git_commit')}`" + (" **(dirty tree)**" if dirty_outside_results(p) else ""))
        seen[key] = seen.get(key, 0) + 1
    return "; ".join(f"{k} ({n} part{'s' * (n != 1)})" for k, n in seen.items()) or "no parts"


# part "wd": weight-decay groups, before vs after

WD_MODELS = ["mamba", "transformer"]


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def wd_report(before: dict, after: dict, out: Path, args) -> str:
    """Markdown + JSON: for each (model, encoder) the recorded row (AdamW decaying every parameter) and the
    rerun with weight-decay groups, and their difference."""
    prov = provenance()
    lines = ["# MELD text: weight-decay groups, before and after", "",
             f"Before: the rows recorded in `{_rel(args.before_dir)}/` (for the MELD rows: AdamW with weight decay on "
             "**every** parameter, as trained before merc.optim existed). After: the same models, encoder, "
             "hyper-parameters and seeds, with the parameter groups of "
             "`merc.optim.param_groups` (decay on weights with dim >= 2 incl. the speaker embedding; none on "
             "biases, LayerNorm/RMSNorm weights, Mamba `A_log` and `D`). Train / dev-selected / test once; mean ± "
             "sample std over seeds.", "",
             f"Command: `{' '.join(prov['command'])}`", "",
             "| encoder | model | run | seeds | test weighted F1 (%) | test accuracy (%) | test macro F1 (%) | "
             "dev weighted F1 (%) | computed at |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    diffs, table = [], {}
    for (model, enc) in sorted(after, key=lambda k: (k[1], MODELS.index(k[0]) if k[0] in MODELS else 9)):
        rows = [("before", before.get((model, enc))), ("after (wd groups)", after[(model, enc)])]
        for name, s in rows:
            if s is None:
                lines.append(f"| {enc} | {model} | {name} | | no recorded row | | | | |")
                continue
            lines.append(f"| {enc} | {model} | {name} | {len(s['seeds'])} | {pm(s['test']['weighted_f1'])} | "
                         f"{pm(s['test']['accuracy'])} | {pm(s['test']['macro_f1'])} | {pm(s['dev']['weighted_f1'])} | "
                         f"{part_commits([s])} |")
        b, a = before.get((model, enc)), after[(model, enc)]
        table[f"{model}_{enc}"] = {"before": b, "after": a}
        if b is not None:
            bt, at = b["test"]["weighted_f1"], a["test"]["weighted_f1"]
            se = (bt["std"] ** 2 / bt["n"] + at["std"] ** 2 / at["n"]) ** 0.5
            p = welch([r["test_weighted_f1"] for r in b.get("per_seed") or []],
                       [r["test_weighted_f1"] for r in a.get("per_seed") or []])
            diffs.append(f"- {enc} / {model}: after − before = {100 * (at['mean'] - bt['mean']):+.2f} ± "
                         f"{100 * se:.2f} points test weighted F1"
                         + (f" (Welch's t-test over seeds p = {p:.2f})" if p is not None else "")
                         + ("; within two standard errors: no clear difference" if abs(at["mean"] - bt["mean"]) < 2 * se
                            else ""))
    lines += ["", "Differences (± is the standard error of the difference of the two means):", "",
              *(diffs or ["- none"])]
    lines += ["", "## Provenance", "", provenance_markdown(prov), ""]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out.with_suffix(".md"), text)
    write_json(out.with_suffix(".json"), {"rows": table, "provenance": prov, "hyperparameters": args.hp})
    return text


def main_wd(args) -> None:
    encoders = parse_encoders(args.encoders)
    models = args.models.split(",") if args.models != ",".join(MODELS) else WD_MODELS
    parts = args.results_dir / "meld_text_wd"
    parts.mkdir(parents=True, exist_ok=True)
    before_dir = args.before_dir or PARTS
    todo = [] if args.report_only else [(m, e) for e in encoders for m in models
                                        if not (parts / f"{m}_{e}.json").exists()]
    with ProcessPoolExecutor(args.jobs) as pool:
        futs = {pool.submit(one, m, e, encoders[e], args.seeds, args.hp, parts=parts, run_name=f"wd_{m}_{e}",
                            dataset=args.dataset, data_dir=args.data_dir): (m, e) for m, e in todo}
        for fut in futs:
            m, e = futs[fut]
            s = fut.result()
            print(f"{m:>12} {e:>10}: test wF1 {pm(s['test']['weighted_f1'])}  ({s['wall_seconds']:.0f} s)", flush=True)
    after = {(m, e): json.loads((parts / f"{m}_{e}.json").read_text()) for e in encoders for m in models
             if (parts / f"{m}_{e}.json").exists()}
    before = {(m, e): json.loads((before_dir / f"{m}_{e}.json").read_text()) for (m, e) in after
              if (before_dir / f"{m}_{e}.json").exists()}
    print(wd_report(before, after, args.results_dir / "meld_text_wd", args))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--encoders", default=",".join(ENCODERS))
    ap.add_argument("--hp", type=json.loads, default={})
    ap.add_argument("--report-only", action="store_true", help="only rewrite the report from finished parts")
    ap.add_argument("--part", choices=("main", "wd"), default="main",
                    help="main: the full table (meld_text.md); wd: mamba and transformer rerun with weight-decay "
                         "groups against the recorded rows (meld_text_wd.md)")
    ap.add_argument("--dataset", default="meld", help="corpus reader (default meld)")
    ap.add_argument("--data-dir", type=Path, default=DATA, help=f"corpus folder (default {DATA})")
    ap.add_argument("--results-dir", type=Path, default=OUT, help=f"where results go (default {OUT})")
    ap.add_argument("--before-dir", type=Path, default=None,
                    help="part wd: the recorded parts to compare with (default <results-dir>/meld_text)")
    args = ap.parse_args()
    if args.part == "wd":
        if args.before_dir is None:
            args.before_dir = args.results_dir / "parts"
        return main_wd(args)
    if args.results_dir != OUT or args.data_dir != DATA or args.dataset != "meld":
        ap.error("--results-dir, --data-dir and --dataset are for --part wd; the main table is MELD's")
    PARTS.mkdir(parents=True, exist_ok=True)
    encoders = parse_encoders(args.encoders)
    todo = [] if args.report_only else [(m, e) for e in encoders for m in args.models.split(",")
                                        if not (PARTS / f"{m}_{e}.json").exists()]
    with ProcessPoolExecutor(args.jobs) as pool:
        floor_futs = {e: pool.submit(logreg_floor, src) for e, src in encoders.items()
                      if not args.report_only and not (PARTS / f"logreg_{e}.json").exists()}
        futs = {pool.submit(one, m, e, encoders[e], args.seeds, args.hp): (m, e) for m, e in todo}
        for fut in futs:
            m, e = futs[fut]
            s = fut.result()
            print(f"{m:>12} {e:>10}: test wF1 {pm(s['test']['weighted_f1'])}  ({s['wall_seconds']:.0f} s)", flush=True)
        for e, fut in floor_futs.items():
            write_json(PARTS / f"logreg_{e}.json", fut.result())
    results = {tuple(p.stem.split("_", 1)): json.loads(p.read_text()) for p in PARTS.glob("*.json")
               if not p.stem.startswith("logreg") and p.stem.split("_", 1)[0] in MODELS}
    for (m, e), s in results.items():  # parts written before per-seed values were kept: from their runs if still there
        if s.get("per_seed") is None and (rows := per_seed(runs_dir() / f"{m}_{e}", s["seeds"])):
            s["per_seed"] = rows
            write_json(PARTS / f"{m}_{e}.json", s)
    floors = {p.stem.split("_", 1)[1]: json.loads(p.read_text()) for p in PARTS.glob("logreg_*.json")}
    report(results, floors, args)
    print((OUT / "meld_text.md").read_text())


if __name__ == "__main__":
    main()
