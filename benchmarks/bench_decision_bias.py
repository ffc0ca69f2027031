"""Dev-fitted decision offsets (issue 15, a lever measured and not kept): per member of a multi-seed run, add one
offset per class to the log-probabilities, chosen by coordinate ascent to maximise **dev** weighted F1, then
score test once with the offsets. Tells whether a dev-tuned decision rule carries over to test:

    .venv/bin/python benchmarks/bench_decision_bias.py \
        --run /tmp/merc-bench-runs/text_levers_mpnet-meld+ctx+ctxfull/cb --label mpnet-meld+ctx+ctxfull-cb

Writes benchmarks/results/decision_bias/decision_bias_<label>.md and .json (machine, command, commit, date).
Features come from the feature cache of the run's encoders (encoded once by the run that trained it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pct, results_dir  # noqa: E402
from bench_meld_text import DATA  # noqa: E402

GRID = np.linspace(-2.0, 2.0, 41)  # offsets tried per class (log-probability units)


def fit_offsets(logp: np.ndarray, y: np.ndarray, rounds: int = 3) -> tuple[np.ndarray, float]:
    """logp (n, n_classes), y (n,) -> offsets (n_classes,) maximising weighted F1 of argmax(logp + b), and that F1."""
    from sklearn.metrics import f1_score

    def score(b: np.ndarray) -> float:
        return float(f1_score(y, (logp + b).argmax(1), average="weighted"))

    b = np.zeros(logp.shape[1])
    best = score(b)
    for _ in range(rounds):  # coordinate ascent: one class at a time, the rest fixed
        for c in range(len(b)):
            for v in GRID:
                trial = b.copy()
                trial[c] = v
                s = score(trial)
                if s > best + 1e-12:
                    best, b = s, trial
    return b, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a multi-seed run directory (merc train --seeds K)")
    ap.add_argument("--label", required=True)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--results-dir", default=str(results_dir("decision_bias")))
    args = ap.parse_args()
    from _common import atomic_write_text, write_json
    from sklearn.metrics import f1_score

    from merc.data import load_corpus
    from merc.io import provenance, provenance_markdown
    from merc.metrics import mean_std
    from merc.training.batching import IGNORE
    from merc.training.ensemble import EnsembleRun
    from merc.training.experiment import corpus_features
    from merc.training.trainer import predict_dialogues

    run = EnsembleRun.from_pretrained(args.run)
    corpus = load_corpus("meld", args.data_dir)
    feats, _, _ = corpus_features(corpus, ["dev", "test"], run.config.modalities, run.config.encoders, progress=False)

    def logprobs(member, split: str) -> tuple[np.ndarray, np.ndarray]:
        dialogues = member.dialogues(corpus[split], feats[split])
        p = np.concatenate(predict_dialogues(member.model, dialogues))  # (n, n_classes)
        y = np.concatenate([d.labels for d in dialogues])
        keep = y != IGNORE
        return np.log(p[keep] + 1e-9), y[keep]

    rows = []
    for m in run.members:
        ld, yd = logprobs(m, "dev")
        lt, yt = logprobs(m, "test")
        b, dev_b = fit_offsets(ld, yd)
        rows.append({"member": m.path.name, "offsets": [round(float(v), 2) for v in b],
                     "dev": float(f1_score(yd, ld.argmax(1), average="weighted")), "dev_offsets": dev_b,
                     "test": float(f1_score(yt, lt.argmax(1), average="weighted")),
                     "test_offsets": float(f1_score(yt, (lt + b).argmax(1), average="weighted"))})
        print(rows[-1], flush=True)
    summary = {k: mean_std([r[k] for r in rows]) for k in ("dev", "dev_offsets", "test", "test_offsets")}
    prov = provenance()
    res = {"label": args.label, "run": args.run, "labels": run.labels, "members": rows, "summary": summary,
           "machine": machine(), "date": time.strftime("%Y-%m-%d"), "provenance": prov,
           "command": " ".join([".venv/bin/python", "benchmarks/bench_decision_bias.py", *sys.argv[1:]])}
    out = Path(args.results_dir)
    write_json(out / f"decision_bias_{args.label}.json", res)
    s = summary

    def pm(d: dict) -> str:
        return f"{pct(d['mean'])} ± {pct(d['std'])}"

    lines = [f"# Dev-fitted decision offsets over `{args.label}`", "", f"Command: `{res['command']}`", "",
             f"Machine: {res['machine']}; {res['date']}.", "", "Provenance:", "", provenance_markdown(prov), "",
             f"Run: `{args.run}` ({len(rows)} seeds). Per member, one offset per class (grid {GRID[0]:g} … "
             f"{GRID[-1]:g}, step {GRID[1] - GRID[0]:.1f}; 3 rounds of coordinate ascent) is added to the "
             "log-probabilities to maximise **dev** weighted F1; test is scored once with those offsets.", "",
             "| member | dev wF1 | dev wF1, offsets | test wF1 | test wF1, offsets | offsets (" + ", ".join(run.labels)
             + ") |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['member']} | {pct(r['dev'])} | {pct(r['dev_offsets'])} | {pct(r['test'])} | "
                     f"{pct(r['test_offsets'])} | {', '.join(f'{v:+.1f}' for v in r['offsets'])} |")
    lines += [f"| **mean ± std** | {pm(s['dev'])} | {pm(s['dev_offsets'])} | {pm(s['test'])} | "
              f"{pm(s['test_offsets'])} | |", "",
              f"Dev gains {100 * (s['dev_offsets']['mean'] - s['dev']['mean']):+.2f} points (fitted there); test "
              f"changes by {100 * (s['test_offsets']['mean'] - s['test']['mean']):+.2f}. The offsets differ from seed "
              "to seed: they fit dev's 1,109 utterances, not a shift that test shares."
              if s['test_offsets']['mean'] < s['test']['mean'] else
              f"Dev gains {100 * (s['dev_offsets']['mean'] - s['dev']['mean']):+.2f} points (fitted there); test "
              f"changes by {100 * (s['test_offsets']['mean'] - s['test']['mean']):+.2f}.", ""]
    atomic_write_text(out / f"decision_bias_{args.label}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
