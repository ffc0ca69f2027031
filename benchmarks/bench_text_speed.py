"""MELD text encoding: today's PyTorch path against faster backends, interleaved, with the accuracy check (#30).

    nice -n 5 .venv/bin/python benchmarks/bench_text_speed.py --encoder minilm --seeds 3 --jobs 2
    nice -n 5 .venv/bin/python benchmarks/bench_text_speed.py --encoder mpnet --splits dev --seeds 0

Speed: the utterances of each split are taken in the feature store's own chunks (512, in corpus order, each sorted
by length into batches of 64: what ``merc train`` does on a cold cache), and every chunk is encoded by every
variant in turn, the order rotating from chunk to chunk, so all variants see the same machine load. Variants:

- ``torch``: the PyTorch path (sentence-transformers, fp32), batches sorted by token counts;
- ``torch-chars``: the same, batches sorted by character counts (the order before #30);
- ``torch-int8``: the same model after ``torch.ao.quantization.quantize_dynamic`` of its Linear layers (int8
  weights per output channel); measured here only, not offered by merc;
- ``onnx``, ``onnx-int8``: ``--text-backend onnx`` / ``onnx-int8`` (merc.encoders.text_backend).

Each variant's rows are compared with today's (cosine per utterance). With ``--seeds K`` the rows of torch, onnx and
onnx-int8 are put into the feature store under their own names (``minilm``, ``minilm@onnx``, …) and the MELD
MiniLM + Mamba config of benchmarks/results/house/store_reproduction.md is trained on each with seeds 0..K-1
(``merc train``, one thread each, ``--jobs`` at once): dev-selected, test once. Writes
benchmarks/results/text_speed/<encoder>[_<splits>].{md,json}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, atomic_write_text, machine, results_dir, write_json  # noqa: E402

from merc.io import provenance, provenance_markdown  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "meld"  # shared/ beside the checkout, as in the other MELD benchmarks
VARIANTS = ("torch", "torch-int8", "onnx", "onnx-int8")
TRAINED = ("torch", "onnx", "onnx-int8")  # the variants merc offers, each with its own feature-store name
TRAIN = ["--dataset", "meld", "--model", "mamba", "--modalities", "text", "--d-model", "128", "--dropout", "0.5",
         "--epochs", "25", "--lr", "0.0003", "--patience", "5", "--quiet", "--threads", "1"]


def build(encoder: str, variant: str):
    """The encoder of ``variant``, loaded and warmed up (ONNX export included): (encoder, prepare seconds)."""
    import torch

    from merc.encoders import get_encoder
    t0 = time.perf_counter()
    if variant == "torch-int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        enc = get_encoder(encoder, "text")
        with warnings.catch_warnings():  # the API's deprecation notices (torchao is its successor)
            warnings.simplefilter("ignore")
            enc._model = quantize_dynamic(copy.deepcopy(enc.model), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                          dtype=torch.qint8)
        enc.name, enc.fingerprint = f"{enc.name}@torch-int8", f"{enc.fingerprint}-torch-int8"
    else:
        enc = get_encoder(encoder if variant in ("torch", "torch-chars") else f"{encoder}@{variant}", "text")
        if variant == "torch-chars":
            enc.sort_by = "chars"
    enc.encode(["warm up", "a second sentence to warm up with"], progress=False)
    return enc, time.perf_counter() - t0


def encode_interleaved(corpus, splits: list[str], encs: dict, chunk: int, limit: int | None = None) -> dict:
    """Every variant on every chunk, rotating the order: per split, rows and seconds of each variant."""
    from tqdm.auto import tqdm
    out = {}
    names = list(encs)
    ref = encs[names[0]]
    for split in splits:
        convs = corpus[split]
        inputs = ref.inputs(convs)[:limit]  # the strings (None: empty transcript), the same for every variant
        rows = {v: np.zeros((len(inputs), ref.dim), np.float32) for v in names}
        present = {v: np.zeros(len(inputs), bool) for v in names}
        seconds = dict.fromkeys(names, 0.0)
        loads = []
        starts = range(0, len(inputs), chunk)
        for k, s in enumerate(tqdm(starts, desc=f"{split} chunks", unit="chunk")):
            idx = list(range(s, min(s + chunk, len(inputs))))
            loads.append(os.getloadavg()[0])
            for v in names[k % len(names):] + names[:k % len(names)]:
                t0 = time.perf_counter()
                res = encs[v].encode_batch([inputs[i] for i in idx], progress=False)
                seconds[v] += time.perf_counter() - t0
                rows[v][idx], present[v][idx] = res.X, res.present
        out[split] = {"n": len(inputs), "rows": rows, "present": present, "seconds": seconds, "load": loads,
                      "ids": [u.utterance_id for c in convs for u in c][:limit]}
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> dict:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    c = (a * b).sum(1) / np.maximum(na * nb, 1e-12)
    return {"min": float(c.min()), "p1": float(np.percentile(c, 1)), "mean": float(c.mean()),
            "max_abs_diff": float(np.abs(a - b).max())}


def seed_store(corpus, encoded: dict, enc) -> None:
    """Put ``enc``'s rows (computed in the timed run) into the feature store, as if it had extracted them."""
    from merc.encoders import FeatureStore
    from merc.encoders.store import seed_rows, store_key
    store = FeatureStore()
    v = enc.bench_variant
    for split, e in encoded.items():
        rows = {u: (x, bool(p), None if p else "empty text")
                for u, x, p in zip(e["ids"], e["rows"][v], e["present"][v])}
        seed_rows(store, store_key(corpus, split), split, corpus.utterances(split), enc, rows)
        f = store.get(corpus, split, enc, progress=False)
        assert f.meta["extracted"] == 0, f.meta  # every row came from the timed run


def probe_all(corpus, encoder: str, variants: list[str]) -> dict:
    """encode_meld.py's probe (logistic regression, C from 0.1/1/10 on dev weighted F1, test once) per variant."""
    from encode_meld import probe

    from merc.encoders import FeatureStore, get_encoder
    out = {}
    for v in variants:
        enc = get_encoder(encoder if v == "torch" else f"{encoder}@{v}", "text")
        feats = {s: FeatureStore().get(corpus, s, enc, progress=False) for s in ("train", "dev", "test")}
        if not all(f.meta.get("cache_hit") for f in feats.values()):
            raise RuntimeError(f"{enc.name}: the store did not hold every split: run the encoding first")
        t0 = time.perf_counter()
        C, dev, test = probe(feats, list(corpus.labels), corpus)
        out[enc.name] = {"C": C, "dev_weighted_f1": dev, "test_weighted_f1": test,
                         "seconds": time.perf_counter() - t0}
        print(enc.name, out[enc.name], flush=True)
    return out


def train_one(name: str, seed: int, runs: Path, data_dir: str) -> dict:
    """One ``merc train`` (kept when its metrics.json is there already: a rerun resumes)."""
    out = runs / f"{name.replace('@', '_')}_s{seed}"
    if (out / "metrics.json").is_file():
        m = json.loads((out / "metrics.json").read_text())
        return {"encoder": name, "seed": seed, "dev_weighted_f1": m["dev"]["weighted_f1"],
                "test_weighted_f1": m["test"]["weighted_f1"], "wall_seconds": None}
    cmd = ["nice", "-n", "5", str(Path(sys.executable).parent / "merc"), "train", *TRAIN, "--data-dir", data_dir,
           "--text-encoder", name, "--seed", str(seed), "--out", str(out), "--overwrite"]
    t0 = time.time()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    m = json.loads((out / "metrics.json").read_text())
    return {"encoder": name, "seed": seed, "dev_weighted_f1": m["dev"]["weighted_f1"],
            "test_weighted_f1": m["test"]["weighted_f1"], "wall_seconds": time.time() - t0}


def mean_std(xs: list[float]) -> str:
    return f"{100 * np.mean(xs):.2f} ± {100 * np.std(xs, ddof=1) if len(xs) > 1 else 0:.2f}"


def report(res: dict, out: Path) -> None:
    enc, variants = res["encoder"], res["variants"]
    ref = variants[0]
    n = sum(s["n"] for s in res["splits"].values())
    sec = {v: sum(s["seconds"][v] for s in res["splits"].values()) for v in variants}
    loads = [x for s in res["splits"].values() for x in s["load"]]
    sizes = ", ".join(f"{k} {s['n']}" for k, s in res["splits"].items())
    sizes += f": the first {res['limit']} of each split" if res.get("limit") else ""
    lines = [f"# MELD text encoding speed and accuracy: {enc}, {', '.join(res['splits'])}", "",
             f"Command (from the repo root): `{res['command']}`", "",
             f"{n} utterances ({sizes}), the feature store's "
             f"{res['chunk']}-utterance chunks in corpus order, each sorted by length into batches of 64; every chunk "
             "encoded by every variant in turn (order rotating), so all variants share the machine's load. "
             "Load average (1 min) "
             f"sampled at each chunk: mean {np.mean(loads):.1f}, min {min(loads):.1f}, max {max(loads):.1f} "
             "(2 cores shared with other jobs: absolute figures are far below a quiet machine, the ratios are the "
             "point).", "",
             f"| variant | encode s | utt/s | speed-up | cosine to {ref}: min / 1st pct / mean | max abs diff | "
             "prepare s |", "|---|---:|---:|---:|---|---:|---:|"]
    for v in variants:
        c = res["cosine"][v]
        lines.append(f"| {v} | {sec[v]:.1f} | {n / sec[v]:.1f} | {sec[ref] / sec[v]:.2f}× | "
                     f"{c['min']:.4f} / {c['p1']:.4f} / {c['mean']:.4f} | {c['max_abs_diff']:.2g} | "
                     f"{res['prepare_seconds'][v]:.1f} |")
    lines += ["", "*prepare s*: loading, the ONNX export and quantisation on first use (cached afterwards in "
              "`$MERC_CACHE/models/onnx/`), and a two-sentence warm-up; not in *encode s*.", ""]
    if res.get("train"):
        by = {}
        for r in res["train"]:
            by.setdefault(r["encoder"], []).append(r)
        base = [r["test_weighted_f1"] for r in by.get(enc, [])]  # none yet while the first trainings run
        lines += ["## Accuracy: MELD weighted F1 of a dialogue model trained on each variant's features", "",
                  f"`merc train {' '.join(TRAIN)} --data-dir ../shared/data/meld --text-encoder NAME --seed K` "
                  "(the frozen MiniLM + Mamba config of benchmarks/results/house/store_reproduction.md), seeds "
                  f"{', '.join(sorted({str(r['seed']) for r in res['train']}))}; the epoch chosen on dev, test scored "
                  "once. "
                  "Criterion (#30): mean test weighted F1 within ±0.3 of today's.", "",
                  "| text encoder | dev weighted F1 (%) | test weighted F1 (%) | test Δ to torch "
                  "| per seed (dev / test) | within ±0.3 |", "|---|---:|---:|---:|---|---|"]
        for name, rows in by.items():
            dev, test = [r["dev_weighted_f1"] for r in rows], [r["test_weighted_f1"] for r in rows]
            d = 100 * (np.mean(test) - np.mean(base)) if base else float("nan")
            seeds = "; ".join(f"{r['seed']}: {100 * r['dev_weighted_f1']:.2f} / {100 * r['test_weighted_f1']:.2f}"
                              for r in rows)
            lines.append(f"| {name} | {mean_std(dev)} | {mean_std(test)} | {d:+.2f} | {seeds} | "
                         f"{'—' if name == enc or not base else ('yes' if abs(d) <= 0.3 else 'no')} |")
        lines.append("")
    if res.get("probe"):
        base = res["probe"].get(enc)
        lines += ["## Accuracy: logistic regression on each variant's frozen features", "",
                  "The probe of benchmarks/encode_meld.py: C chosen from 0.1 / 1 / 10 on dev weighted F1, test scored "
                  "once, deterministic (lbfgs). Criterion (#30): test weighted F1 within ±0.3 of today's.", "",
                  "| text encoder | C | dev weighted F1 (%) | test weighted F1 (%) | test Δ to torch | within ±0.3 |",
                  "|---|---:|---:|---:|---:|---|"]
        for name, r in res["probe"].items():
            d = 100 * (r["test_weighted_f1"] - base["test_weighted_f1"]) if base else float("nan")
            lines.append(f"| {name} | {r['C']} | {100 * r['dev_weighted_f1']:.2f} | "
                         f"{100 * r['test_weighted_f1']:.2f} | {d:+.2f} | "
                         f"{'—' if name == enc else ('yes' if abs(d) <= 0.3 else 'no')} |")
        lines.append("")
    lines += ["## Machine", "", f"- {res['machine']}", "", "## Provenance", "",
              provenance_markdown(res["provenance"]), ""]
    if res.get("probe_provenance"):
        lines += [f"Probe by `{res['probe_command']}`:", "", provenance_markdown(res["probe_provenance"]), ""]
    if res.get("train_provenance"):  # trainings finished by a later --train-only run
        lines += [f"Trainings completed by `{res['train_command']}`:", "",
                  provenance_markdown(res["train_provenance"]), ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--splits", default="train,dev,test")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--limit", type=int, default=None, help="only the first N utterances of each split (speed "
                    "and cosine only: needs --seeds 0)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the accuracy check (0: speed and cosine only)")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once")
    ap.add_argument("--runs", default="/tmp/merc-bench-runs/text_speed")
    ap.add_argument("--probe", action="store_true", help="skip encoding: a logistic regression (C chosen on dev, "
                    "test once) on each variant's features in the store a previous run filled, added to its files")
    ap.add_argument("--train-only", action="store_true", help="skip encoding: train on the feature store a "
                    "previous run filled (its .json is read and completed; finished trainings are kept)")
    args = ap.parse_args(argv)
    command = "nice -n 5 .venv/bin/python benchmarks/bench_text_speed.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])
    from merc.data import load_corpus
    splits = args.splits.split(",")
    if args.limit is not None and args.seeds:
        ap.error("--limit encodes part of each split: the trainings need all of it (use --seeds 0)")
    variants = args.variants.split(",")
    if variants[0] not in ("torch", "torch-chars"):
        ap.error("--variants must start with torch or torch-chars (the reference)")
    stem = args.encoder if splits == ["train", "dev", "test"] else f"{args.encoder}_{'_'.join(splits)}"
    stem += f"_first{args.limit}" if args.limit is not None else ""
    out = results_dir("text_speed") / stem
    corpus = load_corpus("meld", args.data_dir)
    if args.probe:
        res = json.loads(out.with_suffix(".json").read_text())
        res["probe_command"], res["probe_provenance"] = command, provenance()
        res["probe"] = probe_all(corpus, args.encoder, [v for v in res["variants"] if v in TRAINED])
        write_json(out.with_suffix(".json"), res)
        report(res, out)
        return
    if args.train_only:
        res = json.loads(out.with_suffix(".json").read_text())
        res["train_command"], res["train_provenance"] = command, provenance()
        from merc.encoders import get_encoder
        names = [get_encoder(args.encoder if v == "torch" else f"{args.encoder}@{v}", "text").name
                 for v in res["variants"] if v in TRAINED]
        train_all(res, names, args, out)
        return
    encs, prepare = {}, {}
    for v in variants:
        encs[v], prepare[v] = build(args.encoder, v)
        encs[v].bench_variant = v
    encoded = encode_interleaved(corpus, splits, encs, args.chunk, args.limit)
    res = {"encoder": args.encoder, "variants": variants, "command": command, "machine": machine(), "chunk": args.chunk,
           "limit": args.limit,
           "prepare_seconds": prepare,
           "cosine": {v: cosines(np.concatenate([e["rows"][variants[0]] for e in encoded.values()]),
                                 np.concatenate([e["rows"][v] for e in encoded.values()])) for v in variants},
           "splits": {s: {k: e[k] for k in ("n", "seconds", "load")} for s, e in encoded.items()},
           "provenance": provenance()}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), res)
    report(res, out)
    print(f"wrote {out.with_suffix('.md')} (speed)", flush=True)
    if args.seeds > 0:
        trained = [v for v in variants if v in TRAINED]
        for v in trained:
            seed_store(corpus, encoded, encs[v])
        names = [encs[v].name for v in trained]
        del encoded, encs
        train_all(res, names, args, out)


def train_all(res: dict, names: list[str], args, out: Path) -> None:
    """Seeds 0..K-1 of every name, ``--jobs`` at once; the results files rewritten as each training ends."""
    from concurrent.futures import as_completed
    runs = Path(args.runs)
    done = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futs = [pool.submit(train_one, n, k, runs, args.data_dir) for k in range(args.seeds) for n in names]
        for f in as_completed(futs):
            done.append(f.result())
            res["train"] = sorted(done, key=lambda r: (names.index(r["encoder"]), r["seed"]))
            write_json(out.with_suffix(".json"), res)
            report(res, out)
    print(f"wrote {out.with_suffix('.md')} (with the accuracy check)")


if __name__ == "__main__":
    main()
