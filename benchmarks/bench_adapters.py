"""Stage-2 text adapters on the ../shared text corpora (GoEmotions, CrowdFlower, ISEAR; never MELD), over
frozen stage-1 encoders: held-out scores on the adapter's own sample, and the adapter alone on MELD test
(cross-corpus transfer: MELD test encoded by the same encoder, predicted by the adapter's own classifier,
no MELD training at all). Writes benchmarks/results/adapters/adapters_text.md and .json.

    nice -n 5 .venv/bin/python benchmarks/bench_adapters.py --runs minilm:500,mpnet:100 --meld minilm

``--runs`` is ``encoder:per_class`` (the balanced sample's cap; the same seed draws the same sample); the encoder
is a registered name or ``label=/path/to/sentence-transformers/folder`` (e.g. the emotion-tuned MPNet:
``mpnet-meld=../ft/mpnet-meld:500``), named by its label in the table and in ``--meld``;
``--meld`` lists the encoders whose MELD test transfer is measured (MPNet encodes ≈ 20 utt/s on an idle
2-core machine, far less on a shared one). Each run's result is saved under
benchmarks/results/adapters/adapters_text/ as it finishes; a rerun skips finished ones (features come from the
feature cache). Adapter folders go to $MERC_BENCH_RUNS/adapters (default /tmp/merc-bench-runs/adapters).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_write_text, machine, pct, results_dir, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = results_dir("adapters")
PARTS = OUT / "adapters_text"
DATA = ROOT.parent / "shared" / "data"
CORPORA = [("goemotions", "goemotions"), ("crowdflower", "crowdflower_text_emotion"), ("isear", "isear")]


def runs_dir() -> Path:
    return Path(os.environ.get("MERC_BENCH_RUNS", "/tmp/merc-bench-runs")) / "adapters"


def one(encoder: str, per_class: int, seed: int, meld: bool, data_root: Path, path: str | None = None) -> dict:
    from merc.data import load_corpus
    from merc.data.labels import MELD_LABELS
    from merc.encoders import FeatureStore, get_encoder
    from merc.models.adapter import Adapter
    from merc.training.adapt import AdaptTrainConfig, evaluate_transfer, train_adapter
    from merc.training.adapt_data import CachedTextEncoder
    corpora = [(name, str(data_root / folder)) for name, folder in CORPORA]
    enc = CachedTextEncoder(get_encoder(path or encoder, "text"))
    out = runs_dir() / f"text-{encoder}-{per_class}-s{seed}"
    t0 = time.perf_counter()
    res = train_adapter("text", corpora, enc, out, per_class=per_class, config=AdaptTrainConfig(seed=seed),
                        overwrite=True)
    adapter = Adapter.from_pretrained(out)  # what the lead loads: check it applies to (n, dim) features
    probe = adapter.refine(np.zeros((3, enc.dim), np.float32))
    row = {"encoder": encoder, "encoder_path": path, "fingerprint": enc.fingerprint,
           "dim": enc.dim, "per_class": per_class, "seed": seed,
           "adapter_dir": str(out), "refine_shape_on_probe": list(probe.shape),
           "sample": json.loads((out / "config.json").read_text())["counts"],
           "sample_encoding": enc.last_meta, "heldout": res.metrics["heldout"], "best_epoch": res.metrics["best_epoch"],
           "n_train": res.metrics["n_train"], "n_heldout": res.metrics["n_heldout"],
           "train_seconds": res.metrics["train_seconds"]}
    if meld:
        corpus = load_corpus("meld", data_root / "meld", splits=("test",))
        feats = FeatureStore().get(corpus, "test", enc.text_encoder)
        gold = [u.emotion for u in corpus.utterances("test")]
        adapter.check_encoder(enc.fingerprint, path or encoder)
        row["meld_test"] = evaluate_transfer(adapter, feats.take([u.utterance_id for u in corpus.utterances("test")]),
                                             gold, MELD_LABELS)
        row["meld_test_encoding"] = {k: v for k, v in feats.meta.items() if k != "ids"}
        counts = Counter(gold)
        major = max(counts, key=counts.get)
        from merc.metrics import evaluate_predictions
        idx = {lab: i for i, lab in enumerate(MELD_LABELS)}
        row["meld_test_majority"] = {k: v for k, v in evaluate_predictions(
            [idx[g] for g in gold], [idx[major]] * len(gold), MELD_LABELS).items() if k != "confusion"}
        row["meld_test_majority"]["label"] = major
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return row


def neutral_counts(row: dict, labs: list[str]) -> str:
    """'predicted / true' neutral counts on MELD test from the confusion matrix (rows true, columns predicted)."""
    cm, k = row["meld_test"]["confusion"], labs.index("neutral")
    return f"{sum(r[k] for r in cm)} / {sum(cm[k])}"


def se(p: float, n: int) -> float:
    return (p * (1 - p) / max(n, 1)) ** 0.5


def report(rows: list[dict], command: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = ["# Stage-2 text adapters (unimodal corpora → MELD classes)", "",
             f"- machine: {machine()} (shared with other jobs: load average {os.getloadavg()[0]:.1f})",
             f"- report written by: `{command}`; each row's run: "
             + "; ".join(sorted({f"`{r.get('command', '?')}` ({r.get('date', '?')})"
                                 for r in rows})), f"- commit: {commit}; date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
             "- corpora: GoEmotions (single-class Ekman rows), CrowdFlower, ISEAR (../shared/data), mapped as in "
             "`merc/data/unimodal/text.py`; pooled, duplicate texts dropped, at most `per_class` per class "
             "(seeded); a stratified 10% of the sample is held out for early stopping. No MELD data is used "
             "for training or selection.", "",
             "## Held-out part of the adapter's own sample", "",
             "Rows with the same `per class` use the same sample (same seed), so they compare encoders on identical "
             "data. The caps were set by time on a shared 2-core machine (the sample's texts are longer than "
             "MELD's; MPNet encoded them at about 1 utterance/s here); the held-out parts are small, so read the "
             "accuracy with its binomial standard error.", "",
             "| encoder | per class | train / held-out | best epoch | weighted F1 | accuracy (± s.e.) | macro F1 | "
             "sample encoding (s, utt/s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        h, e = r["heldout"], r["sample_encoding"]
        fresh = e.get("n", 0) - e.get("chunks_reused", 0) * e.get("chunk_size", 0)  # encoded in the timed run
        speed = f"{e['seconds']:.0f} s, {fresh / e['seconds']:.1f} utt/s" if e.get("seconds") and fresh > 0 else "?"
        lines.append(f"| {r['encoder']} ({r['dim']}-d) | {r['per_class']} | {r['n_train']} / {r['n_heldout']} | "
                     f"{r['best_epoch']} | {pct(h['weighted_f1'])} | "
                     f"{pct(h['accuracy'])} ± {pct(se(h['accuracy'], h['n']))} | {pct(h['macro_f1'])} | {speed} |")
    heads = list(rows[0]["heldout"]["per_class_f1"])
    lines += ["", "Per-class held-out F1:", "", "| encoder | per class | " + " | ".join(heads) + " |",
              "|---|---|" + "---|" * len(heads)]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['per_class']} | "
                     + " | ".join(pct(v) for v in r["heldout"]["per_class_f1"].values()) + " |")
    lines += [f"- {r['encoder']} @ {r['per_class']}: {r['note']}" for r in rows if r.get("note")]
    comp = rows[-1]["sample"].get("sample_by_class_and_source")
    if comp:
        srcs = sorted({s for d in comp.values() for s in d})
        lines += ["", f"Where the sample's classes come from (per class {rows[-1]['per_class']}): a class drawn "
                  "mostly from one corpus can be learnt from that corpus' style rather than its emotion.", "",
                  "| class | " + " | ".join(srcs) + " |", "|---|" + "---|" * len(srcs)]
        lines += [f"| {lab} | " + " | ".join(str(d.get(s, 0)) for s in srcs) + " |" for lab, d in comp.items()]
    meld = [r for r in rows if "meld_test" in r]
    lines += ["", "## Cross-corpus transfer: the adapter alone on MELD test (no MELD training)", ""]
    if not meld:
        lines.append("Not measured in this run.")
    else:
        labs = list(meld[0]["meld_test"]["per_class_f1"])
        lines += ["| encoder | per class | n | weighted F1 | accuracy | macro F1 | " + " | ".join(labs) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(labs)]
        for r in meld:
            m = r["meld_test"]
            lines.append(f"| {r['encoder']} | {r['per_class']} | {m['n']} | {pct(m['weighted_f1'])} | "
                         f"{pct(m['accuracy'])} | {pct(m['macro_f1'])} | "
                         + " | ".join(pct(m["per_class_f1"][k]) for k in labs) + " |")
        mj = meld[0]["meld_test_majority"]
        lines += ["", f"Reference: always predicting the majority class ({mj['label']}) gives weighted F1 "
                  f"{pct(mj['weighted_f1'])}, accuracy {pct(mj['accuracy'])}. For scale, a logistic regression "
                  "trained on MELD train over frozen MiniLM / MPNet gives 56.3 / 57.2 weighted F1 "
                  "(docs/offline-models.md).", "",
                  "Transfer minus the majority-class weighted F1 (points): "
                  + ", ".join(f"{r['encoder']}@{r['per_class']} "
                              f"{100 * (r['meld_test']['weighted_f1'] - mj['weighted_f1']):+.2f}" for r in meld)
                  + ". The adapters are trained on balanced classes and predict neutral far less often than it "
                  "occurs in MELD test (predicted / true: "
                  + ", ".join(f"{r['encoder']}@{r['per_class']} {neutral_counts(r, labs)}" for r in meld)
                  + "); whether their 128-d bottleneck helps the dialogue model is the "
                  "separate (a)-(d) comparison."]
    atomic_write_text(OUT / "adapters_text.md", "\n".join(lines) + "\n")
    write_json(OUT / "adapters_text.json", {"machine": machine(), "command": command, "commit": commit,
                                           "date": time.strftime("%Y-%m-%d %H:%M %Z"), "runs": rows})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="minilm:500,mpnet:100", help="encoder:per_class, comma-separated")
    ap.add_argument("--meld", default="minilm", help="encoders whose MELD test transfer is measured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    PARTS.mkdir(parents=True, exist_ok=True)
    meld = set(filter(None, args.meld.split(",")))
    for spec in [] if args.report_only else args.runs.split(","):
        enc, cap = spec.rsplit(":", 1)
        enc, _, path = enc.partition("=")
        part = PARTS / f"{enc}_{cap}_s{args.seed}.json"
        if part.exists():
            done = json.loads(part.read_text())
            if ("meld_test" in done or enc not in meld) and Path(done["adapter_dir"]).is_dir():
                continue  # a result whose adapter folder is gone (a new machine) is redone: later runs load it
        row = one(enc, int(cap), args.seed, enc in meld, Path(args.data), path=path or None)
        row["command"] = "python " + " ".join(sys.argv)
        row["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
        write_json(part, row)
        print(f"{enc} per_class={cap}: held-out wF1 {pct(row['heldout']['weighted_f1'])}"
              + (f", MELD test wF1 {pct(row['meld_test']['weighted_f1'])}" if "meld_test" in row else ""), flush=True)
    rows = sorted((json.loads(p.read_text()) for p in PARTS.glob("*.json")),
                  key=lambda r: (r["encoder"] != "minilm", r["encoder"], r["per_class"]))
    if rows:
        report(rows, "python " + " ".join(sys.argv))
        print((OUT / "adapters_text.md").read_text())


if __name__ == "__main__":
    main()
