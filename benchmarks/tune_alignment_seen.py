"""Choose the Whisper alignment default on the QC tests' own material (never on the unseen benchmark corpus).

Builds the synthetic MELD fixture the alignment defaults were tuned on (merc.testing.synth: generated sentences,
synth.VOICES, face_images), measures every clean clip with the alignment check and calibrates it (true vs
deranged transcripts), and prints the metric's distribution on true and mismatched pairs.

    nice -n 5 .venv/bin/python benchmarks/tune_alignment_seen.py --asr faster-whisper
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--asr", default="faster-whisper", help="alignment back end (default faster-whisper)")
    ap.add_argument("--dialogues", type=int, default=6, help="fixture dialogues (default 6)")
    ap.add_argument("--utts", type=int, default=6, help="utterances per dialogue (default 6)")
    ap.add_argument("--seed", type=int, default=31, help="fixture seed (default 31, as the pocketsphinx defaults)")
    ap.add_argument("--out", default=None, help="write the calibration and scores as JSON here")
    args = ap.parse_args(argv)
    from merc.data import load_corpus
    from merc.qc.alignment import AlignmentCheck, AlignmentConfig, calibrate_alignment
    from merc.qc.pipeline import build_items
    from merc.testing.synth import build_corpus_fixture

    with tempfile.TemporaryDirectory() as tmp:
        fx = build_corpus_fixture(Path(tmp), layout="meld", n_dialogues=args.dialogues, utts_per_dialogue=args.utts,
                                  n_speakers=6, seed=args.seed)
        items = build_items(load_corpus("meld", fx.data_dir, fx.media_dir))
        chk = AlignmentCheck(AlignmentConfig(asr=args.asr))
        t0 = time.perf_counter()
        true = {it.utterance_id: chk.measure(it) for it in items}
        mism: list[dict] = []

        def score(item, text):
            out = chk.score(item, text)
            if text != item.utterance.text:
                mism.append(out)
            return out
        cal = calibrate_alignment(items, score, true_scores=true)
        secs = time.perf_counter() - t0
    metric = cal.rule[0]
    t = np.array([m.get(metric) for m in true.values() if m.get(metric) is not None])
    f = np.array([m.get(metric) for m in mism if m.get(metric) is not None])
    report = {"asr": chk.config.asr, "n": len(items), "seconds": round(secs, 1), "calibration": cal.to_dict(),
              "true": {"min": float(t.min()), "p5": float(np.percentile(t, 5)), "median": float(np.median(t))},
              "mismatched": {"max": float(f.max()), "p95": float(np.percentile(f, 95)), "median": float(np.median(f))},
              "not_measured_true": sum("not_measured" in m for m in true.values())}
    print(json.dumps(report, indent=2))
    if args.out:
        from _common import write_json
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
