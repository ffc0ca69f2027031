"""The alignment check alone on the unseen corpus of bench_qc_unseen.py: every wrong-transcript utterance plus
the first ``--clean`` clean ones (corpus order), measured and judged with the merc found on PYTHONPATH
(so the code before a change can be run on the same items: ``PYTHONPATH=/tmp/before``).

A cheaper stand-in for the full benchmark when the machine is too loaded for 320 utterances x 4 checks:
it measures the alignment check's false alarms on clean clips and its recall on wrong transcripts.

    nice -n 5 env PYTHONPATH=. .venv/bin/python benchmarks/bench_qc_unseen_alignment.py --label after
writes <work>/alignment_<label>.json; --report merges every label into results/qc/qc_unseen_alignment.md/.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "qc"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/merc_bench_qc_unseen", help="bench_qc_unseen.py's work folder")
    ap.add_argument("--label", default=None, help="name of this run (before, after)")
    ap.add_argument("--clean", type=int, default=26, help="first N clean utterances (default 26)")
    ap.add_argument("--asr", default=None, help="AlignmentConfig.asr (default: the code's default)")
    ap.add_argument("--report", action="store_true", help="merge alignment_*.json into results/")
    args = ap.parse_args(argv)
    work = Path(args.work)
    truth = json.loads((work / "truth.json").read_text())
    if args.label:
        import merc
        from merc.data import load_corpus
        from merc.qc.alignment import AlignmentCheck, AlignmentConfig
        from merc.qc.pipeline import build_items
        corpus = load_corpus("meld", truth["data_dir"], truth["data_dir"])
        items = {it.utterance_id: it for it in build_items(corpus)}
        clean = [u for u in truth["uids"] if u not in truth["faults"]][: args.clean]
        wrong = [u for u, k in truth["faults"].items() if k == "wrong_transcript"]
        chosen = [items[u] for u in clean + wrong]
        check = AlignmentCheck(AlignmentConfig(asr=args.asr) if args.asr else None)
        t0 = time.perf_counter()
        meas = {}
        for i, it in enumerate(chosen):
            meas[it.utterance_id] = check.measure(it)
            print(f"{i + 1}/{len(chosen)} {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        secs = time.perf_counter() - t0
        flags = {f.utterance_id: f for f in check.judge(chosen, meas)}

        def state(f) -> str:
            if f.passed:
                return "passed"
            return "not measured" if (not getattr(f, "measured", True) or f.reason.startswith("not measured")) \
                else "failed"
        rows = {u: {"fault": truth["faults"].get(u, "clean"), "state": state(f), "reason": f.reason[:300]}
                for u, f in flags.items()}
        fp = sum(r["state"] == "failed" for u, r in rows.items() if u in clean)
        tp = sum(r["state"] == "failed" for u, r in rows.items() if u in wrong)
        rule = list(check.config.rule)
        out = {"label": args.label, "merc": str(Path(merc.__file__).parent), "asr": check.config.asr,
               "rule": rule, "thresholds": {m: check.config.thresholds[m] for m in rule},
               "clean": len(clean), "wrong": len(wrong), "clean_failed": fp, "wrong_failed": tp,
               "clean_not_measured": sum(rows[u]["state"] == "not measured" for u in clean),
               "wrong_not_measured": sum(rows[u]["state"] == "not measured" for u in wrong),
               "seconds_per_utterance": round(secs / len(chosen), 2), "rows": rows, "measurements": meas}
        from _common import write_json
        write_json(work / f"alignment_{args.label}.json", out)
        print(json.dumps({k: v for k, v in out.items() if k not in ("rows", "measurements")}, indent=1))
    if args.report:
        from _common import atomic_write_text, write_json
        runs = [json.loads(p.read_text()) for p in sorted(work.glob("alignment_*.json"))]
        for r in runs:
            r.pop("measurements", None)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_qc import machine, versions
        mach, ver = machine(), versions()
        lines = ["# Alignment check alone on the unseen corpus (subset)", "",
                 f"Report written {mach['date']} on {mach['cpu']}, {mach['cores']} cores shared with other jobs "
                 f"(load average {mach['load_average_at_start']}); merc commit {ver.get('merc_commit')}; "
                 "each run: `nice -n 5 env PYTHONPATH=<merc> python benchmarks/bench_qc_unseen_alignment.py "
                 "--label <run> [--clean N] [--asr A]` (before = `git archive ebae1db merc`, the code before this "
                 "branch). s / utterance is wall time under that load.", "",
                 "Items: every wrong-transcript utterance of the bench_qc_unseen corpus and the first clean ones "
                 "(corpus order). Failed = judged a mismatch; not measured is kept.", "",
                 "| run | recogniser | rule | clean failed (false alarms) | clean not measured | wrong failed (caught) "
                 "| wrong not measured | s / utterance |", "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in runs:
            lines.append(f"| {r['label']} | {r['asr']} | {r['rule']} {r['thresholds']} | "
                         f"{r['clean_failed']}/{r['clean']} | {r['clean_not_measured']} | "
                         f"{r['wrong_failed']}/{r['wrong']} | {r['wrong_not_measured']} | "
                         f"{r['seconds_per_utterance']} |")
        for r in runs:
            lines += ["", f"## {r['label']}", ""] + [f"- {u} ({x['fault']}): {x['state']}: {x['reason']}"
                                                    for u, x in r["rows"].items() if x["state"] != "passed"
                                                    or x["fault"] != "clean"]
        RESULTS.mkdir(exist_ok=True)
        write_json(RESULTS / "qc_unseen_alignment.json", runs)
        atomic_write_text(RESULTS / "qc_unseen_alignment.md", "\n".join(lines) + "\n")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
