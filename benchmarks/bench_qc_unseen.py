"""QC precision and recall on a corpus it was not tuned on (issue #11).

Builds :func:`merc.testing.qc_faults.build_unseen_corpus` (real MELD *train* sentences, espeak-ng voices and
LFW faces that the QC tests never use, MELD raw layout, 10% faults spread over every kind), runs
``merc qc`` on it with default thresholds and then with ``--calibrate`` (cached measurements), and scores:

* per check, against the faults it is responsible for (see ``bench_qc.RESPONSIBLE``): a check *flags* an
  utterance when it fails it after measuring it ("not measured" is counted apart, never as a detection);
* overall: utterances **dropped** (absent from ``manifest.jsonl``) against "has any fault".

Each run is one *label* (``--label after``): the code under ``--src`` (default: this checkout) is run as
``python -m merc.cli qc`` with that folder as working directory, so the code before a change can be
measured on the same corpus (``git archive <commit> merc | tar -x -C DIR`` then ``--src DIR``). A label's
measurement caches of checks other than alignment may be seeded from another label's (``--reuse-from``),
which is exact when those checks did not change. ``--report`` writes benchmarks/results/qc/qc_unseen.md/.json
from every label measured so far.

    nice -n 5 .venv/bin/python benchmarks/bench_qc_unseen.py --label before --src /tmp/before --workers 1
    nice -n 5 .venv/bin/python benchmarks/bench_qc_unseen.py --label after --reuse-from before --report
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_qc import CHECKS, RESPONSIBLE, machine, score, versions  # noqa: E402

RESULTS = HERE / "results" / "qc"
ROOT = HERE.parent
MELD = Path(os.environ.get("MERC_DATA", ROOT.parent / "shared" / "data")) / "meld" / "train_sent_emo.csv"


def build(work: Path, args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT))
    from merc.testing.qc_faults import build_unseen_corpus
    truth = work / "truth.json"
    if truth.exists():
        return json.loads(truth.read_text())
    t0 = time.perf_counter()
    fx = build_unseen_corpus(work / "corpus", meld_csv=args.meld, n_utterances=args.utterances,
                             fault_rate=args.fault_rate, seed=args.seed, cache_dir=work / "tts")
    info = {"data_dir": str(fx.data_dir), "faults": fx.faults, "uids": list(fx.utterances),
            "voices": fx.speakers, "build_seconds": round(time.perf_counter() - t0, 1),
            "utterances": len(fx.utterances), "seed": args.seed, "meld_csv": str(args.meld),
            "dialogues": len({u.conversation_id for u in fx.utterances.values()})}
    from merc.io import write_json  # a work file, read back for its paths: kept absolute (not a results file)
    write_json(truth, info)
    return info


def run_qc(src: Path, data_dir: str, out: Path, workers: int, extra: list[str]) -> tuple[list[str], float]:
    argv = ["qc", "--dataset", "meld", "--data-dir", data_dir, "--media-dir", data_dir, "--out", str(out),
            "--workers", str(workers), "--quiet", *extra]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-m", "merc.cli", *argv], cwd=src, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return argv, time.perf_counter() - t0


def evaluate(out: Path, truth: dict) -> dict:
    with open(out / "flags.csv", newline="", encoding="utf-8") as f:
        flags = {(r["utterance_id"], r["check"]): r for r in csv.DictReader(f)}
    kept = set()
    for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        kept.update(u["utterance_id"] for u in json.loads(line)["utterances"])
    seen = {u for u, _ in flags}
    uids = [u for u in truth["uids"] if u in seen]  # --limit: the utterances QC was run on
    for u in uids:  # checks not run (--checks subset): never flag
        for c in CHECKS:
            flags.setdefault((u, c), {"passed": "True", "reason": "check not run"})
    dropped = set(uids) - kept
    sc = score(flags, {u: k for u, k in truth["faults"].items() if u in seen}, uids, dropped)
    summary = json.loads((out / "summary.json").read_text())
    return {"scores": sc, "utterances": len(uids), "kept": len(kept), "dropped": len(dropped),
            "checks": [c for c in CHECKS if c in summary["timings"]], "timings": summary["timings"],
            "audio_seconds": summary["audio_seconds"], "calibration": summary.get("calibration", {}).get("alignment"),
            "alignment_thresholds": summary["thresholds"].get("alignment")}


def measure_label(args: argparse.Namespace, work: Path, truth: dict) -> dict:
    out = work / f"qc_{args.label}"
    (out / "cache").mkdir(parents=True, exist_ok=True)  # cached measurements are reused only when still valid
    if args.reuse_from:
        for c in CHECKS:
            src = work / f"qc_{args.reuse_from}" / "cache" / f"{c}.jsonl"
            if (c != "alignment" or args.reuse_alignment) and src.exists():
                shutil.copyfile(src, out / "cache" / f"{c}.jsonl")
    src = Path(args.src).resolve()
    res: dict = {"label": args.label, "src": str(src), "workers": args.workers,
                 "command": "nice -n 5 python benchmarks/bench_qc_unseen.py " + shlex.join(sys.argv[1:]),
                 "machine": machine(), "versions": versions()}
    argv, wall = run_qc(src, truth["data_dir"], out, args.workers, args.qc_args)
    res["default"] = {"qc_command": "merc " + shlex.join(argv), "wall_seconds": round(wall, 1), **evaluate(out, truth)}
    if args.no_calibrate:
        res["calibrated"] = None
    else:
        argv, wall = run_qc(src, truth["data_dir"], out, args.workers, [*args.qc_args, "--calibrate"])
        res["calibrated"] = {"qc_command": "merc " + shlex.join(argv), "wall_seconds": round(wall, 1),
                             **evaluate(out, truth)}
    from _common import write_json
    write_json(work / f"result_{args.label}.json", res)
    return res


def _f(x) -> str:
    return "—" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def markdown(truth: dict, labels: dict[str, dict]) -> str:
    faults = {}
    for k in truth["faults"].values():
        faults[k] = faults.get(k, 0) + 1
    first = next(iter(labels.values()))
    lines = ["# QC on an unseen fault-injection corpus (issue #11)", "",
             f"Corpus: `merc.testing.qc_faults.build_unseen_corpus` — {truth['utterances']} utterances in "
             f"{truth['dialogues']} MELD *train* dialogues (3–30 words per utterance, the six main characters), "
             f"espeak-ng voices {', '.join(truth['voices'].values())} (none used by the QC tests), LFW faces "
             f"from index 50 (8x upscaled), `rocket()` as the face-less scene; {len(truth['faults'])} faults "
             f"({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}); seed {truth['seed']}.  ",
             f"Machine: {first['machine']['cpu']}, {first['machine']['cores']} cores shared with other jobs "
             f"(load average at start {first['machine']['load_average_at_start']}), {first['machine']['date']}.  ",
             "Software: " + ", ".join(f"{k} {v}" for k, v in first["versions"].items() if v) + ".", "",
             "Overall = utterances dropped (not in `manifest.jsonl`) vs utterances with any fault. Per check: a "
             "flag is a failure after measuring; FP counts every flagged utterance without a fault the check is "
             "responsible for (including utterances with other faults); \"not measured\" is never a flag.", ""]
    lines += ["## Summary", "", "| code | thresholds | overall precision | overall recall | dropped | "
              "alignment P | alignment R | alignment not measured | QC wall s | utt/s |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in labels.items():
        for mode in ("default", "calibrated"):
            m = r[mode]
            if m is None:
                continue
            d, a = m["scores"]["dropped"], m["scores"]["per_check"]["alignment"]
            cmd = r.get("command", "")  # --reuse-from: measurements copied from another label, so no speed figure
            reused = ("all measurements reused" if "--reuse-alignment" in cmd else "other checks' measurements reused"
                      ) if "--reuse-from" in cmd and mode == "default" else ""
            speed = (f"{m['wall_seconds']:.0f} ({reused}) | —" if reused
                     else f"{m['wall_seconds']:.0f} | {m['utterances'] / m['wall_seconds']:.2f}")
            lines.append(f"| {label} | {mode} | {_f(d['precision'])} | {_f(d['recall'])} | {m['dropped']} | "
                         f"{_f(a['precision'])} | {_f(a['recall'])} | {a['not_measured']} | {speed} |")
    for label, r in labels.items():
        lines += ["", f"## {label}", "", f"Code: `{r['src']}` (commit {r['versions'].get('merc_commit')}, "
                  f"{r['versions'].get('merc_worktree')}); command `{r['command']}`.", ""]
        for mode in ("default", "calibrated"):
            m = r[mode]
            if m is None:
                continue
            sc = m["scores"]
            lines += [f"### {mode}: `{m['qc_command']}`", "",
                      "| check | responsible for | TP | FP | FP clean | FN | precision | recall | not measured |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
            for c in CHECKS:
                p = sc["per_check"][c]
                lines.append(f"| {c} | {', '.join(sorted(RESPONSIBLE[c]))} | {p['tp']} | {p['fp']} | {p['fp_clean']} "
                             f"| {p['fn']} | {_f(p['precision'])} | {_f(p['recall'])} | {p['not_measured']} |")
            d = sc["dropped"]
            lines += ["", f"Overall: precision {_f(d['precision'])}, recall {_f(d['recall'])} (TP {d['tp']}, "
                      f"FP {d['fp']}, FN {d['fn']}); kept {m['kept']}.", "",
                      "| fault | " + " | ".join(CHECKS) + " |", "|---|" + "---|" * len(CHECKS)]
            for kind, row in sc["matrix"].items():
                lines.append(f"| {kind} | " + " | ".join(row[c] for c in CHECKS) + " |")
            tm = m["timings"]
            lines += ["", f"Utterances scored: {m['utterances']}; checks run: {', '.join(m['checks'])}. "
                      "Throughput (measured this run; cached measurements cost nothing): " + ", ".join(
                f"{c} {tm[c]['measured']} measured in {tm[c]['wall_seconds']:.0f} s"
                + (f" (RTF {tm[c]['rtf']:.3f})" if tm[c].get("rtf") is not None else "") for c in m["checks"])
                + f"; audio {m['audio_seconds']:.0f} s.", ""]
            cal = m.get("calibration")
            if cal:
                lines += [f"Calibration chose {cal.get('rule_thresholds')} (balanced accuracy "
                          f"{_f(cal.get('rule_balanced_accuracy'))}); AUC "
                          + ", ".join(f"{k} {v:.2f}" for k, v in (cal.get("auc") or {}).items()) + ".", ""]
            fa = sc["false_alarms"].get("alignment", [])
            if fa:
                lines += [f"Alignment false alarms ({len(fa)}):", ""] + [f"- {x[:300]}" for x in fa[:15]] + [""]
            miss = [f"{c}: {x[:200]}" for c in CHECKS for x in sc["misses"].get(c, [])]
            if miss:
                lines += [f"Missed ({len(miss)}):", ""] + [f"- {x}" for x in miss[:15]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/merc_bench_qc_unseen", help="corpus, QC outputs and per-label results")
    ap.add_argument("--meld", type=Path, default=MELD, help="MELD train_sent_emo.csv (default: %(default)s)")
    ap.add_argument("--utterances", type=int, default=320, help="corpus size (default 320)")
    ap.add_argument("--fault-rate", type=float, default=0.10, help="fraction faulted (default 0.10)")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    ap.add_argument("--label", default=None, help="name of this run (e.g. before, after); none = only --report")
    ap.add_argument("--src", default=str(ROOT), help="folder holding the merc package to run (default: this checkout)")
    ap.add_argument("--reuse-from", default=None, help="seed non-alignment caches from this label's run")
    ap.add_argument("--reuse-alignment", action="store_true", help="with --reuse-from: seed the alignment cache "
                    "too (exact only when the change is in judging, not in measuring)")
    ap.add_argument("--workers", type=int, default=1, help="merc qc --workers (default 1)")
    ap.add_argument("--qc-args", nargs="*", default=[], help="extra merc qc arguments (e.g. --asr pocketsphinx)")
    ap.add_argument("--no-calibrate", action="store_true", help="skip the --calibrate rerun")
    ap.add_argument("--report", action="store_true", help="write results/qc/qc_unseen.md/.json from all labels")
    ap.add_argument("--name", default="qc_unseen", help="results file stem under benchmarks/results (default "
                    "qc_unseen; e.g. qc_unseen_seed1 for a second corpus)")
    ap.add_argument("--labels", default="before,after", help="labels in the report, in order (default before,after)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    truth = build(work, args)
    print(f"corpus: {truth['utterances']} utterances, {len(truth['faults'])} faults", flush=True)
    if args.label:
        measure_label(args, work, truth)
    if args.report:
        sys.path.insert(0, str(ROOT))
        from _common import atomic_write_text, write_json
        labels = {lab: json.loads((work / f"result_{lab}.json").read_text()) for lab in args.labels.split(",")
                  if (work / f"result_{lab}.json").exists()}
        RESULTS.mkdir(exist_ok=True)
        write_json(RESULTS / f"{args.name}.json", {"corpus": {k: v for k, v in truth.items() if k != "uids"},
                                                 "runs": labels})
        md = markdown(truth, labels)
        atomic_write_text(RESULTS / f"{args.name}.md", md)
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
