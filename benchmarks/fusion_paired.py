"""How sure is a cell of ``bench_fusion``? A paired bootstrap over test dialogues of one row against another.

    preds = test_predictions(work, setting, row, mods, root, encoders)   # y, dialogue, pred (seeds, n)
    delta, lo, hi = paired_delta(preds_a, preds_b)                        # mean-over-seeds wF1 a − b, 95% CI

The generated corpus' test split has 366 utterances in 40 dialogues: one utterance more or less right moves
weighted F1 by about 0.3 points, so a cell 0.5 below the probe may be two utterances. Both rows are scored on
the same resampled dialogues (a paired bootstrap; Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993,
ch. 16; Koehn, EMNLP 2004, for its use on test sets), whole dialogues at a time, since the utterances of one
dialogue are not independent. The statistic is the mean over each row's seeds of its test weighted F1, minus the
same for the other row (the probe is one deterministic fit). This measures the test set's sampling noise only:
the seed spread is in the table already.

Predictions come from the saved seed runs (``runs/<setting>/<row>/<mods>/seed_k``), through the run's own
standardisation, and are cached as ``preds/<setting>__<row>__<mods>.npz`` under the work folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

N_BOOT = 2000


def weighted_f1_from_confusion(conf: np.ndarray) -> np.ndarray:
    """conf (..., K, K) counts, rows = true class, columns = predicted -> (...,) weighted F1, as
    ``sklearn.metrics.f1_score(average="weighted", labels=range(K), zero_division=0)``."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)                      # (..., K)
    support, predicted = conf.sum(-1), conf.sum(-2)                 # (..., K)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
    total = support.sum(-1)
    return np.divide((f1 * support).sum(-1), total, out=np.zeros(total.shape), where=total > 0)


def _confusions(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """y, groups (n,), pred (seeds, n) -> (seeds, dialogues, K, K) confusion counts per dialogue."""
    _, g = np.unique(groups, return_inverse=True)
    out = np.zeros((pred.shape[0], g.max() + 1, k, k))
    for s in range(pred.shape[0]):
        np.add.at(out[s], (g, y, pred[s]), 1)
    return out


def paired_delta(a: dict, b: dict, *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """a, b: predictions of two rows on the same test utterances (``y``, ``groups``, ``pred`` (seeds, n), ``k``)
    -> (delta, lo, hi) in weighted-F1 points: mean over a's seeds − mean over b's seeds, and the 2.5th and 97.5th
    percentiles of that difference over ``n_boot`` resamples of whole dialogues."""
    if not (np.array_equal(a["y"], b["y"]) and np.array_equal(a["groups"], b["groups"])):
        raise ValueError("the two rows were not scored on the same test utterances in the same order")
    k = int(max(a["k"], b["k"]))
    ca, cb = (_confusions(p["y"], p["pred"], p["groups"], k) for p in (a, b))  # (seeds, D, K, K)
    n_dia = ca.shape[1]

    def stat(w: np.ndarray) -> float:                                           # w (D,) dialogue multiplicities
        fa = weighted_f1_from_confusion(np.tensordot(w, ca, axes=([0], [1])))   # (seeds_a,)
        fb = weighted_f1_from_confusion(np.tensordot(w, cb, axes=([0], [1])))   # (seeds_b,)
        return 100 * (fa.mean() - fb.mean())

    rng = np.random.default_rng(seed)
    boots = np.array([stat(np.bincount(rng.integers(0, n_dia, n_dia), minlength=n_dia)) for _ in range(n_boot)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return stat(np.ones(n_dia)), float(lo), float(hi)


def _run_dirs(work: Path, setting: str, row: str, mods: str) -> list[Path]:
    """The seed folders behind a cell, following ``same_as`` (a cell that reused another row's runs)."""
    cell = json.loads((work / f"{setting}__{row}__{mods.replace(',', '+')}.json").read_text())
    if cell.get("same_as"):
        return _run_dirs(work, setting, cell["same_as"], mods)
    base = work / "runs" / setting / row / mods
    seeds = sorted(base.glob("seed_*"), key=lambda p: int(p.name.split("_")[1]))
    return [p for p in seeds if (p / "model.safetensors").is_file()][: len(cell["seeds"])]


def _load_run(run_dir: Path):
    from merc.models.factory import config_from_dict
    from merc.training.adapters import build_run_model
    from merc.training.run import RunConfig, migrate_config
    from merc.training.weights import load_into
    d = migrate_config(json.loads((run_dir / "config.json").read_text()), source=run_dir / "config.json")
    if d["model"].get("input_dropout", 0) is None:  # an interim setting (None = the model's dropout, as today)
        d["model"].pop("input_dropout")
    config_from_dict(d["model"])  # fails on any other unknown setting, naming it
    rc = RunConfig.from_dict(d, source=run_dir / "config.json")
    model = build_run_model(rc.model, rc.adapters, tune=rc.tune_adapters)
    load_into(model, run_dir)
    return model.eval(), rc


def test_predictions(work: Path, setting: str, row: str, mods: str, corpus, raw_test: dict) -> dict:
    """Test-split predictions of every seed of a cell (cached under ``work/preds``)."""
    from merc.training.batching import IGNORE, build_dialogues
    from merc.training.normalize import FeatureNormalizer
    from merc.training.trainer import predict_dialogues
    cache = work / "preds" / f"{setting}__{row}__{mods.replace(',', '+')}.npz"
    dirs = _run_dirs(work, setting, row, mods)
    if cache.is_file():
        got = dict(np.load(cache))
        if got["pred"].shape[0] == len(dirs):
            return {**got, "k": int(got["k"])}
    preds, y, groups = [], None, None
    for run_dir in dirs:
        model, rc = _load_run(run_dir)
        dias = build_dialogues(corpus["test"], FeatureNormalizer.from_dict(rc.normalization).transform(raw_test),
                               corpus.labels, max_speakers=rc.model.max_speakers, dims=rc.model.input_dims)
        lab = np.concatenate([d.labels for d in dias])
        keep = lab != IGNORE
        probs = np.concatenate(predict_dialogues(model, dias))
        preds.append(probs.argmax(-1)[keep])
        recorded = json.loads((run_dir / "metrics.json").read_text())["test"]["weighted_f1"]
        conf = _confusions(lab[keep], preds[-1][None], np.zeros(keep.sum(), int), len(corpus.labels))[0, 0]
        if abs(weighted_f1_from_confusion(conf) - recorded) > 1e-6:  # the saved run must reproduce its own score
            raise RuntimeError(f"{run_dir}: test weighted F1 {weighted_f1_from_confusion(conf):.6f} from the saved "
                               f"model, {recorded:.6f} in its metrics.json")
        y = lab[keep]
        groups = np.concatenate([[i] * len(d.labels) for i, d in enumerate(dias)])[keep]
    out = {"y": y, "groups": groups, "pred": np.stack(preds), "k": len(corpus.labels)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(cache)
    return out


PAIRED_ROWS = ("mamba", "matav")  # today's defaults


def intervals(results: list[dict], settings: list[str], modality_sets: list[str], work: Path, roots: dict,
              encoders: dict) -> list[dict]:
    """For each finished cell of today's rows: Δ test weighted F1 against the probe on the same features and, on
    control, against the same row on text alone, with a 95% interval over resampled test dialogues."""
    from merc.data import load_corpus
    from merc.training.features import corpus_features
    have = {(r["setting"], r["row"], r["modalities"]) for r in results}
    out = []
    for setting in [s for s in ("signal", "control") if s in settings]:
        corpus = load_corpus("meld", roots[setting], media_dir=roots[setting])
        text_raw = None  # text alone, loaded once per setting when a cell is held against it
        for mods in modality_sets:
            cells = [r for r in PAIRED_ROWS if (setting, r, mods) in have]
            if not cells:
                continue
            modalities = mods.split(",")
            raw = corpus_features(corpus, ["test"], modalities, {m: encoders[m] for m in modalities},
                                  media_dir=roots[setting], progress=False)[0]["test"]
            for row in cells:
                preds = test_predictions(work, setting, row, mods, corpus, raw)
                against = [("linear", mods)] + ([(row, "text")] if setting == "control" and mods != "text" else [])
                for base_row, base_mods in against:
                    if (setting, base_row, base_mods) not in have:
                        continue
                    if base_mods != mods and text_raw is None:
                        text_raw = corpus_features(corpus, ["test"], ["text"], {"text": encoders["text"]},
                                                   media_dir=roots[setting], progress=False)[0]["test"]
                    base_raw = raw if base_mods == mods else text_raw
                    base = test_predictions(work, setting, base_row, base_mods, corpus, base_raw)
                    delta, lo, hi = paired_delta(preds, base)
                    out.append({"setting": setting, "row": row, "modalities": mods,
                                "against": f"{base_row}/{base_mods}",
                                "delta": round(delta, 2), "ci95": [round(lo, 2), round(hi, 2)],
                                "seeds": int(preds["pred"].shape[0]), "against_seeds": int(base["pred"].shape[0])})
                    print(f"{setting} {mods} {row} vs {base_row}/{base_mods}: {delta:+.2f} [{lo:+.2f}, {hi:+.2f}]",
                          flush=True)
    return out


def paired_markdown(paired: list[dict]) -> str:
    if not paired:
        return ""
    lines = ["", "## How sure: paired bootstrap over test dialogues", "",
             "Δ = mean test weighted F1 over the row's seeds − the same for the row it is held against, on the same "
             "test utterances; 95% interval from 2,000 resamples of the 40 test dialogues (`fusion_paired.py`). It "
             "measures the test set's sampling noise (one utterance is about 0.3 points), not the seed spread. An "
             "interval that holds 0 is a cell the test set cannot tell apart from its reference.", "",
             "| setting | modalities | row | against | Δ | 95% interval | seeds |", "|---|---|---|---|---:|---|---:|"]
    for p in paired:
        lines.append(f"| {p['setting']} | {p['modalities']} | {p['row']} | {p['against']} | {p['delta']:+.2f} | "
                     f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['seeds']} vs {p['against_seeds']} |")
    return "\n".join(lines) + "\n"
