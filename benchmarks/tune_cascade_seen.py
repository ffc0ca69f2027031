"""Choose the alignment check's ASR cascade margin on seen material only (issue #30; never on the unseen QC corpora).

Builds the synthetic MELD fixtures of the QC tests (merc.testing.synth: generated sentences, synth.VOICES, face
images; the seed-31 fixture the Whisper threshold was tuned on, and a larger seed-7 one), and for every clip scores
its own transcript and another utterance's (a derangement, as label-free calibration does) with Whisper tiny.en
twice: on the 30-s window the check uses today and on a window fitted to the clip (``encode_fitted``). Reports how
far the fitted score can sit *above* the 30-s one (the margin the cascade needs so that it never passes a pair the
30-s window fails), the share of true pairs the cascade would leave to the 30-s window at each margin, and the
encoder's CPU seconds for both windows.

    nice -n 5 .venv/bin/python benchmarks/tune_cascade_seen.py
writes benchmarks/results/qc/cascade_seen.md and .json.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import atomic_write_text, results_dir, write_json  # noqa: E402

FIXTURES = ((31, 6), (7, 20))  # (seed, dialogues), 6 utterances each, 6 speakers
MARGINS = (0.0, 0.3, 0.5, 0.8, 1.0, 1.3)


def measure(root: Path, seed: int, dialogues: int, pad: float) -> list[dict]:
    from merc.data import load_corpus
    from merc.qc.alignment import AlignmentCheck, AlignmentConfig, AudioAnalysis, derangement
    from merc.qc.pipeline import build_items
    from merc.testing.synth import build_corpus_fixture
    fx = build_corpus_fixture(root / f"seed{seed}", layout="meld", n_dialogues=dialogues, utts_per_dialogue=6,
                              n_speakers=6, seed=seed)
    items = build_items(load_corpus("meld", fx.data_dir, fx.media_dir))
    chk = AlignmentCheck(AlignmentConfig(asr="faster-whisper"))
    scorer = chk._scorer()
    partner = derangement([it.utterance.text for it in items], 0)
    rows = []
    for i, it in enumerate(items):
        wav = chk._audio(it)
        row = {"fixture": f"seed{seed}", "uid": it.utterance_id, "seconds": round(len(wav) / 16000, 3)}
        for window, encode in (("full", scorer.encode), ("fit", lambda w: scorer.encode_fitted(w, pad))):
            t0 = time.process_time()
            enc = encode(wav)
            row[f"cpu_{window}"] = time.process_time() - t0
            a = AudioAnalysis(pcm=b"", hypothesis="", encoded=enc)
            row[f"true_{window}"] = chk._whisper_scores(a, it.utterance.text).get("whisper_lp")
            row[f"mis_{window}"] = chk._whisper_scores(a, items[partner[i]].utterance.text).get("whisper_lp")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pad", type=float, default=1.0, help="fit_pad_seconds (default 1.0)")
    ap.add_argument("--threshold", type=float, default=-3.3, help="the whisper_lp threshold (default -3.3)")
    ap.add_argument("--out", default=str(results_dir("qc") / "cascade_seen"))
    args = ap.parse_args(argv)
    import os

    from merc.io import provenance, provenance_markdown
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for seed, n in FIXTURES for r in measure(Path(tmp), seed, n, args.pad)]
    pairs = [(r[f"{k}_full"], r[f"{k}_fit"], k) for r in rows for k in ("true", "mis")
             if r[f"{k}_full"] is not None and r[f"{k}_fit"] is not None]
    full = np.array([p[0] for p in pairs])
    fit = np.array([p[1] for p in pairs])
    true = np.array([p[2] == "true" for p in pairs])
    gap = fit - full
    table = []
    for m in MARGINS:
        line = args.threshold + m
        table.append({"margin": m, "line": round(line, 3),
                      "true_left_to_30s": round(float((fit[true] < line).mean()), 4),
                      "mismatched_left_to_30s": round(float((fit[~true] < line).mean()), 4),
                      "passed_but_30s_fails": int(((fit >= line) & (full < args.threshold)).sum())})
    cpu_full = sum(r["cpu_full"] for r in rows)
    cpu_fit = sum(r["cpu_fit"] for r in rows)
    media = sum(r["seconds"] for r in rows)
    res = {"provenance": provenance(), "command": "nice -n 5 .venv/bin/python benchmarks/tune_cascade_seen.py "
           + shlex.join(sys.argv[1:]), "fixtures": [{"seed": s, "dialogues": n} for s, n in FIXTURES],
           "pad_seconds": args.pad, "threshold": args.threshold, "clips": len(rows), "pairs": len(pairs),
           "media_seconds": round(media, 1), "load_average": [round(x, 2) for x in load0],
           "load_average_end": [round(x, 2) for x in os.getloadavg()],
           "fit_minus_full": {"max": round(float(gap.max()), 3), "p99": round(float(np.percentile(gap, 99)), 3),
                              "median": round(float(np.median(gap)), 3), "min": round(float(gap.min()), 3)},
           "encoder_cpu_seconds": {"full": round(cpu_full, 2), "fit": round(cpu_fit, 2),
                                   "per_media_second_full": round(cpu_full / media, 4),
                                   "per_media_second_fit": round(cpu_fit / media, 4)},
           "margins": table, "rows": rows}
    write_json(Path(args.out).with_suffix(".json"), res)
    g, c = res["fit_minus_full"], res["encoder_cpu_seconds"]
    lines = ["# ASR cascade margin, chosen on seen material (issue #30)", "",
             f"- fixtures: `merc.testing.synth.build_corpus_fixture` seeds {', '.join(str(s) for s, _ in FIXTURES)} "
             f"(the QC tests' generated sentences and voices): {len(rows)} clips, {media:.0f} s; {len(pairs)} pairs "
             "(each clip with its own transcript and with another utterance's)",
             provenance_markdown(res["provenance"]), f"- reproduce: `{res['command']}`",
             f"- load average at start {res['load_average']}, at end {res['load_average_end']} (2 shared cores)", "",
             f"Fitted window = the clip + {args.pad:g} s, rounded up to whole seconds. Fitted minus 30-s score "
             f"(nats per token): max {g['max']}, 99th percentile {g['p99']}, median {g['median']}, min {g['min']}.",
             "",
             f"Encoder CPU seconds (one thread): 30-s window {c['full']} ({c['per_media_second_full']} per media "
             f"second), fitted {c['fit']} ({c['per_media_second_fit']}): "
             f"{c['full'] / max(c['fit'], 1e-9):.1f}× cheaper.", "",
             f"At the default threshold {args.threshold}: a clip passes on the fitted window when its fitted score "
             "is >= threshold + margin; the rest get the 30-s window.", "",
             "| margin | pass line | true pairs left to the 30-s window | mismatched pairs left to it | "
             "pairs passed that the 30-s window fails |", "|---:|---:|---:|---:|---:|"]
    for t in table:
        lines.append(f"| {t['margin']} | {t['line']} | {t['true_left_to_30s']:.3f} | "
                     f"{t['mismatched_left_to_30s']:.3f} | {t['passed_but_30s_fails']} |")
    atomic_write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
