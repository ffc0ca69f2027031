"""Issue #32 diagnosis: is there dialogue context in a modality that a linear second level can use?

For each modality set on a generated corpus: the linear probe (logistic regression on the z-scored features and
presence indicators, C on dev), then a second logistic regression (C on dev) over each utterance's out-of-fold
probe logits and the probabilities of its neighbours (previous, next, the dialogue mean, the same speaker's
previous utterance). Out of fold: 5 groups of training dialogues, each scored by a probe fitted on the other
four (stacked generalisation, Wolpert 1992); dev and test are scored by the probe fitted on all of train.
Test is scored once per row, after the dev selection.

If the second level beats the probe, the modality's neighbours carry evidence about an utterance's label that a
dialogue model could use; the fusion table (``fusion_vs_probe.md``) says whether the dialogue models do.

    MERC_CACHE=... .venv/bin/python benchmarks/bench_stacking_probe.py --corpus ../data/mm_signal \\
        --modality-sets "audio;face;text;text,audio;text,audio,face"
    # -> benchmarks/results/fusion/stacking_probe.md / .json
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import atomic_write_text, write_json  # noqa: E402  (machine paths made portable)

from merc.io import provenance, provenance_markdown  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "fusion"
ENCODERS = {"text": ["mpnet"], "audio": ["egemaps", "resemblyzer"], "face": ["fer"]}
C_GRID = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]


def design(dialogues, mods):
    X, y, g, sp = [], [], [], []
    for i, d in enumerate(dialogues):
        parts = [np.nan_to_num(d.feats[m]) for m in mods]
        parts += [d.present.get(m, np.ones(len(d.labels), bool))[:, None].astype(float) for m in mods]
        X.append(np.concatenate(parts, 1))
        y.append(d.labels)
        g += [i] * len(d.labels)
        sp.append(d.speakers)
    return np.concatenate(X), np.concatenate(y), np.array(g), sp


def logits(clf, X, K):
    out = np.full((len(X), K), -30.0)
    out[:, clf.classes_] = clf.decision_function(X)
    return out


def context(L, groups, speakers, K):
    """Per utterance: own logits, then probabilities of previous, next, dialogue mean, same speaker's previous."""
    rows = []
    for i, sp in enumerate(speakers):
        lg = L[groups == i]
        p = np.exp(lg - lg.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        n = len(p)
        prev = np.vstack([np.zeros((1, K)), p[:-1]])
        nxt = np.vstack([p[1:], np.zeros((1, K))])
        same, last = np.zeros((n, K)), {}
        for t in range(n):
            if int(sp[t]) in last:
                same[t] = p[last[int(sp[t])]]
            last[int(sp[t])] = t
        rows.append(np.hstack([lg, prev, nxt, np.repeat(p.mean(0, keepdims=True), n, 0), same]))
    return np.vstack(rows)


def best_lr(Xtr, ytr, Xdv, ydv, f1):
    from sklearn.linear_model import LogisticRegression
    best = None
    for C in C_GRID:
        clf = LogisticRegression(C=C, max_iter=2000).fit(Xtr, ytr)
        f = f1(ydv, clf.predict(Xdv))
        if best is None or f > best[0]:
            best = (f, C, clf)
    return best


def run(corpus, root: str, mods: list[str]) -> dict:
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GroupKFold

    from merc.training.batching import build_dialogues
    from merc.training.features import corpus_features
    t0 = time.time()
    raw, _, _ = corpus_features(corpus, ["train", "dev", "test"], mods, {m: ENCODERS[m] for m in mods},
                                media_dir=root, progress=False)
    K = len(corpus.labels)
    D = {s: build_dialogues(corpus[s], raw[s], corpus.labels, max_speakers=16) for s in raw}
    (Xtr, ytr, gtr, str_), (Xdv, ydv, gdv, sdv), (Xte, yte, gte, ste) = (design(D[s], mods)
                                                                      for s in ("train", "dev", "test"))
    keep = [y >= 0 for y in (ytr, ydv, yte)]
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
    Xtr, Xdv, Xte = (Xtr - mu) / sd, (Xdv - mu) / sd, (Xte - mu) / sd
    f1 = lambda y, p: 100 * f1_score(y, p, average="weighted")  # noqa: E731
    fdv, C, probe = best_lr(Xtr[keep[0]], ytr[keep[0]], Xdv[keep[1]], ydv[keep[1]], f1)
    res = {"modalities": ",".join(mods), "probe": {"C": C, "dev": fdv, "test": f1(yte[keep[2]],
                                                                                   probe.predict(Xte[keep[2]]))}}
    from sklearn.linear_model import LogisticRegression
    oof = np.zeros((len(Xtr), K))
    for tr, va in GroupKFold(5).split(Xtr, ytr, gtr):
        t = tr[ytr[tr] >= 0]
        oof[va] = logits(LogisticRegression(C=C, max_iter=2000).fit(Xtr[t], ytr[t]), Xtr[va], K)
    Ztr, Zdv, Zte = (context(L, g, s, K) for L, g, s in ((oof, gtr, str_), (logits(probe, Xdv, K), gdv, sdv),
                                                          (logits(probe, Xte, K), gte, ste)))
    fdv2, C2, second = best_lr(Ztr[keep[0]], ytr[keep[0]], Zdv[keep[1]], ydv[keep[1]], f1)
    res["stacked"] = {"C": C2, "dev": fdv2, "test": f1(yte[keep[2]], second.predict(Zte[keep[2]]))}
    res["seconds"] = round(time.time() - t0, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="a generated corpus (make_mm_corpus.py generate)")
    ap.add_argument("--modality-sets", default="audio;face;text;text,audio;text,face;text,audio,face")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from merc.data import load_corpus
    corpus = load_corpus("meld", args.corpus, media_dir=args.corpus)
    prov = provenance()
    rows = []
    for mods in args.modality_sets.split(";"):
        r = run(corpus, args.corpus, mods.split(","))
        print(r, flush=True)
        rows.append(r)
    write_json(OUT / "stacking_probe.json", {"corpus": args.corpus, "encoders": ENCODERS, "rows": rows,
                                             "provenance": prov})
    lines = ["# Is there dialogue context a linear second level can use? (issue #32 diagnosis)", "",
             provenance_markdown(prov), "",
             f"Corpus `{args.corpus}`; encoders {ENCODERS}. See the script's docstring for the method. "
             "Weighted F1 %, C of each level chosen on dev, test scored once. The probe here is this script's own "
             "(all features z-scored together, absent values zero): it differs from `merc train --model linear` "
             "(fusion_vs_probe.md) by up to a few points; compare the columns of this table with each other.", "",
             "| modalities | probe dev | probe test | stacked dev | stacked test | Δ test |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        p, s = r["probe"], r["stacked"]
        lines.append(f"| {r['modalities']} | {p['dev']:.2f} | {p['test']:.2f} | {s['dev']:.2f} | {s['test']:.2f} | "
                     f"{s['test'] - p['test']:+.2f} |")
    atomic_write_text(OUT / "stacking_probe.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
