"""Encode every MELD split with the offline text encoders into the feature cache, and time it.

    nice -n 5 .venv/bin/python benchmarks/encode_meld.py --data-dir ../shared/data/meld

Writes benchmarks/results/extract_speed/encode_meld.md: per encoder and split the utterances, seconds and
utterances/s, the mpnet reassembly + unzip time (measured into a throw-away folder, so it is
measured even when the default cache already holds the model), the cache folders, a sanity probe
(logistic regression on the frozen features, C chosen on dev, weighted F1 on test), and the machine.
Rerunning after an interruption resumes from the finished chunks; finished splits are read back.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import atomic_write_text  # noqa: E402

from merc.data import load_corpus  # noqa: E402
from merc.encoders import FeatureStore, cache_root, get_encoder, mpnet_model_dir  # noqa: E402
from merc.encoders.store import store_key  # noqa: E402
from merc.io import cpu_model, provenance, provenance_markdown  # noqa: E402


def machine() -> dict[str, str]:
    import sentence_transformers
    import torch
    cpu = cpu_model()
    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch": torch.__version__,
            "torch threads": str(torch.get_num_threads()), "sentence-transformers": sentence_transformers.__version__,
            "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def probe(feats: dict, labels: list[str], corpus) -> tuple[float, float, float]:
    """Logistic regression on frozen features: C chosen on dev weighted F1; returns (C, dev F1, test F1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    y = {s: np.array([labels.index(u.emotion) for u in corpus.utterances(s)]) for s in feats}
    best = None
    for C in (0.1, 1.0, 10.0):
        clf = LogisticRegression(C=C, max_iter=2000).fit(feats["train"].X, y["train"])
        dev = f1_score(y["dev"], clf.predict(feats["dev"].X), average="weighted")
        if best is None or dev > best[1]:
            best = (C, dev, f1_score(y["test"], clf.predict(feats["test"].X), average="weighted"))
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "meld"))
    ap.add_argument("--encoders", default="minilm,mpnet")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "extract_speed" / "encode_meld.md"))
    args = ap.parse_args(argv)
    command = "nice -n 5 .venv/bin/python benchmarks/encode_meld.py " + shlex.join(
        (argv if argv is not None else sys.argv[1:]))

    load_start = os.getloadavg()
    corpus = load_corpus("meld", args.data_dir)
    splits = [s for s in ("train", "dev", "test") if s in corpus.splits]
    rows, notes = [], []
    for name in args.encoders.split(","):
        if name == "mpnet":  # reassembly + unzip, measured in a throw-away root
            cache_root().mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
                t0 = time.perf_counter()
                mpnet_model_dir(root=Path(tmp), progress=False)
                notes.append(f"mpnet reassembly (5 parts → 404 MB zip, CRC check) + unzip: "
                             f"{time.perf_counter() - t0:.1f} s (measured in a temporary folder)")
        t0 = time.perf_counter()
        enc = get_encoder(name, "text", batch_size=args.batch_size)
        notes.append(f"{name}: load {time.perf_counter() - t0:.1f} s (imports + weights), dim {enc.dim}, "
                     f"fingerprint `{enc.fingerprint}`")
        feats = {}
        for split in splits:
            t0 = time.perf_counter()
            store = FeatureStore(chunk_size=args.chunk_size)
            f = store.get(corpus, split, enc)
            wall = time.perf_counter() - t0
            feats[split] = f
            status = (f"read from cache (encoded {f.meta['created']})" if f.meta["cache_hit"] else
                      f"resumed ({f.meta['reused']}/{len(f)} utterances reused)"
                      if f.meta["reused"] else "encoded")
            rows.append({"encoder": name, "split": split, "n": len(f), "seconds": f.meta["seconds"], "wall": wall,
                         "ups": len(f) / f.meta["seconds"] if f.meta["seconds"] else float("nan"), "status": status,
                         "path": store.folder(store_key(corpus, split), split, enc)})
            print(rows[-1], flush=True)
        if not args.no_probe and {"train", "dev", "test"} <= feats.keys():
            t0 = time.perf_counter()
            C, dev, test = probe(feats, list(corpus.labels), corpus)
            notes.append(f"{name} probe: logistic regression on frozen features, C={C} (chosen on dev from "
                         f"0.1/1/10), weighted F1 dev {100 * dev:.1f}, test {100 * test:.1f} "
                         f"({time.perf_counter() - t0:.0f} s)")
        del enc

    m = machine()
    m["load average (1/5/15 min) at start / end"] = (" / ".join(
        ", ".join(f"{x:.1f}" for x in la) for la in (load_start, os.getloadavg())) + " (shared machine)")
    lines = ["# Encoding MELD with the offline text encoders", "",
             f"Command (from the repo root): `{command}`", "",
             "| encoder | split | utterances | encode s | wall s | utt/s | status |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['split']} | {r['n']} | {r['seconds']:.1f} | {r['wall']:.1f} | "
                     f"{r['ups']:.1f} | {r['status']} |")
    for name in args.encoders.split(","):
        enc_rows = [r for r in rows if r["encoder"] == name]
        n, s = sum(r["n"] for r in enc_rows), sum(r["seconds"] for r in enc_rows)
        lines.append(f"| **{name}** | all | {n} | {s:.1f} | {sum(r['wall'] for r in enc_rows):.1f} | "
                     f"{n / s if s else float('nan'):.1f} | |")
    lines += ["", "*encode s*: time inside the encoder (what `meta.json` records); *wall s*: including cache I/O.",
              "Texts are sorted by length within each 512-utterance chunk, batch size "
              f"{args.batch_size}.", "", "## Notes", ""] + [f"- {x}" for x in notes]
    lines += ["", "## Cache folders", ""] + [f"- {r['encoder']}/{r['split']}: `{r['path']}`" for r in rows]
    lines += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in m.items()]
    lines += ["", "## Provenance", "", provenance_markdown(provenance()), ""]
    out = Path(args.out)
    atomic_write_text(out, "\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
