"""Media pipeline speed, before and after, in the same run (issue #30): `merc qc` with all four checks and the
default audio (egemaps + resemblyzer) and face (fer + dlib, 1 fps) feature extraction, in × real time.

"Before" is the merc package of another commit (``--before``, default the commit this branch started from),
unpacked with ``git archive`` into a temporary folder; "after" is this checkout. Each is run in its own process
(PYTHONPATH pointing at that code), on the same corpus subset, with a fresh QC folder and a fresh feature store;
the runs are interleaved (before, after, before, after, …) so that both see the same load on this shared
machine, and the load average is recorded beside every run. × real time = seconds of audio / wall seconds; the
CPU column divides by the CPU seconds the run's processes used (all threads and workers).

Outputs are compared: QC flags (status per utterance and check, and the largest score difference) and features
(present masks, largest absolute difference per encoder), so a speed-up that changes results shows here.

    .venv/bin/python benchmarks/bench_media.py --corpus ../data/mm_signal --split dev --limit 12 --rounds 2
writes benchmarks/results/extract_speed/media_speed.md and .json.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import atomic_write_text, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "extract_speed"
PY = sys.executable

EXTRACT = r"""
import json, sys, time, numpy as np
from merc.data import load_corpus
from merc.qc.cli import limit_corpus
from merc.encoders.store import FeatureStore, extract_modality
corpus, split, limit, out, modality, encoders, threads, min_face = sys.argv[1:9]
import torch
torch.set_num_threads(int(threads))
c = limit_corpus(load_corpus("meld", corpus, corpus), [split], int(limit))
store = FeatureStore(root=out + "/store")
opts = {}
if min_face != "default":
    from merc.encoders.face_expr import FaceFrameConfig
    opts = {e: {"config": FaceFrameConfig(min_face=int(min_face) or None)} for e in encoders.split(",")}
t0 = time.perf_counter()
f = extract_modality(c, split, modality, encoders.split(","), store=store, progress=False, encoder_options=opts)
secs = time.perf_counter() - t0
np.savez(out + f"/{modality}.npz", X=f.X, present=f.present, ids=np.array(f.ids))
print(json.dumps({"seconds": secs}))
"""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def unpack(ref: str, dest: Path) -> Path:
    """The merc package of ``ref`` in ``dest`` (git archive: the repository is not touched)."""
    dest.mkdir(parents=True, exist_ok=True)
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref, "merc"], capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as t:
        t.extractall(dest, filter="data")
    return dest


def which_merc(src: Path, env: dict[str, str]) -> str:
    """The merc package a run with this environment imports: ``src``'s, or a RuntimeError. ``python -c`` and
    ``python -m`` put the working folder first on sys.path, before PYTHONPATH: run from a checkout, every side
    would import that checkout's merc (which this benchmark did before this check)."""
    p = subprocess.run([PY, "-c", "import merc; print(merc.__file__)"], env=env, cwd=src, capture_output=True,
                       text=True, check=True)
    got = Path(p.stdout.strip()).resolve()
    if not got.is_relative_to(Path(src).resolve()):
        raise RuntimeError(f"a run meant for {src} imports {got}")
    return str(got)


def timed(cmd: list[str], src: Path, env_extra: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), **env_extra}
    which_merc(src, env)
    load0 = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=src, capture_output=True, text=True)  # cwd: see which_merc
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2), "stdout": p.stdout[-2000:]}


def read_flags(path: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    with open(path, newline="") as f:
        return {(r["utterance_id"], r["check"]): (r["status"], r["score"], r["reason"]) for r in csv.DictReader(f)}


def compare_flags(a: Path, b: Path) -> dict:
    fa, fb = read_flags(a), read_flags(b)
    keys = sorted(set(fa) | set(fb))
    same_status = [k for k in keys if k in fa and k in fb and fa[k][0] == fb[k][0]]
    diffs, changed = [], []
    for k in keys:
        if k not in fa or k not in fb:
            changed.append({"utterance_id": k[0], "check": k[1], "before": fa.get(k), "after": fb.get(k)})
            continue
        if fa[k][0] != fb[k][0]:
            changed.append({"utterance_id": k[0], "check": k[1], "before": fa[k][:2], "after": fb[k][:2]})
        if fa[k][1] and fb[k][1]:
            diffs.append((abs(float(fa[k][1]) - float(fb[k][1])), k[1]))
    by_check: dict[str, float] = {}
    for d, c in diffs:
        by_check[c] = max(by_check.get(c, 0.0), d)
    return {"flags": len(keys), "same_status": len(same_status), "changed": changed[:20],
            "n_changed": len(changed), "max_score_diff": {c: round(v, 6) for c, v in sorted(by_check.items())}}


# column blocks of the concatenated features ("fer,dlib": fer's 7 probabilities and 128 features, then dlib's 128)
BLOCKS = {"face": [("fer probabilities", 0, 7), ("fer features", 7, 135), ("dlib descriptor", 135, 263)],
          "audio": [("egemaps", 0, 88), ("resemblyzer", 88, 344)]}


def compare_features(a: Path, b: Path, part: str = "") -> dict:
    za, zb = np.load(a), np.load(b)
    same_ids = bool((za["ids"] == zb["ids"]).all())
    both = za["present"] & zb["present"]
    xa, xb = za["X"][both].astype(np.float64), zb["X"][both].astype(np.float64)
    diff = np.abs(xa - xb)
    blocks = {}
    for name, lo, hi in BLOCKS.get(part, []) if xa.shape[1] >= max(h for *_, h in BLOCKS.get(part, [("", 0, 0)])) \
            else []:
        u, v = xa[:, lo:hi], xb[:, lo:hi]
        cos = (u * v).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
        blocks[name] = {"max_abs_diff": float(np.abs(u - v).max()) if u.size else 0.0,
                        "cosine_min": float(cos.min()) if cos.size else 1.0,
                        "cosine_mean": float(cos.mean()) if cos.size else 1.0}
    return {"same_ids": same_ids, "same_present": bool((za["present"] == zb["present"]).all()),
            "present": int(both.sum()), "n": int(len(za["ids"])),
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0, "blocks": blocks}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "data" / "mm_signal"), help="a MELD-layout corpus")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=12, help="first N dialogues of the split")
    ap.add_argument("--before", default=None, help="git ref of the 'before' code (default: merge-base with main)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved before/after rounds")
    ap.add_argument("--workers", type=int, default=2, help="merc qc --workers")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the extraction process")
    ap.add_argument("--parts", default="qc,audio,face")
    ap.add_argument("--min-face", type=int, default=None,
                    help="also run 'fast': this code with `--min-face N` / FaceFrameConfig(min_face=N) (0: the full "
                         "scan); not given: no 'fast' run")
    ap.add_argument("--qc-variant", action="append", default=[], metavar="NAME=ARGS",
                    help="also run `merc qc` with these extra arguments under NAME (this code), e.g. "
                         "'cascade=--asr-cascade'; repeatable")
    ap.add_argument("--no-after", action="store_true",
                    help="leave out 'after' (this code with its defaults): only before and the variants")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(RESULTS / "media_speed"))
    ap.add_argument("--note", default="")
    ap.add_argument("--rerender", action="store_true",
                    help="only rewrite the report from --out's JSON (and the QC timings under --work)")
    args = ap.parse_args()
    if args.rerender:
        res = __import__("json").loads(Path(args.out).with_suffix(".json").read_text())
        if args.work:
            res["qc_checks"] = qc_check_timings(Path(args.work), res["audio_seconds"])
        write_json(Path(args.out).with_suffix(".json"), res)
        atomic_write_text(Path(args.out).with_suffix(".md"), report(res))
        return 0

    from merc.data import load_corpus
    from merc.io import provenance
    from merc.media.decode import probe
    from merc.qc.cli import limit_corpus

    before = args.before or git("merge-base", "HEAD", "main")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_media-")).resolve()
    args.corpus = str(Path(args.corpus).resolve())  # the runs start in their code's folder
    srcs = {"before": unpack(before, work / "before_src"), "after": ROOT}
    corpus = limit_corpus(load_corpus("meld", args.corpus, args.corpus), [args.split], args.limit)
    utts = corpus.utterances(args.split)
    audio_s = 0.0
    for u in utts:
        try:
            audio_s += probe(u.video).duration
        except Exception:  # noqa: BLE001 - a missing clip counts nothing
            pass
    print(f"{len(utts)} utterances, {audio_s:.1f} s of media; before = {before}", flush=True)
    parts = args.parts.split(",")
    runs: list[dict] = []
    srcs["fast"] = ROOT
    fast = args.min_face is not None
    qc_extra = {"fast": ["--min-face", str(args.min_face)]} if fast else {}
    for v in args.qc_variant:
        name, _, extra = v.partition("=")
        qc_extra[name] = shlex.split(extra)
        srcs[name] = ROOT
    for r in range(args.rounds):
        for part in parts:
            sides = ["before"] + ([] if args.no_after else ["after"]) + (
                ["fast"] if fast and part != "audio" else [])
            if part == "qc":
                sides += [v for v in qc_extra if v != "fast"]
            for side in sides if r % 2 == 0 else sides[::-1]:
                out = work / f"r{r}_{part}_{side}"
                out.mkdir(parents=True, exist_ok=True)
                env = {"MERC_CACHE": str(out / "cache")}
                if part == "qc":
                    cmd = [PY, "-m", "merc.cli", "qc", "--dataset", "meld", "--data-dir", args.corpus, "--media-dir",
                           args.corpus, "--out", str(out / "qc"), "--workers", str(args.workers), "--split",
                           args.split, "--limit", str(args.limit), "--quiet"]
                    cmd += qc_extra.get(side, [])
                else:
                    encs = "egemaps,resemblyzer" if part == "audio" else "fer,dlib"
                    cmd = [PY, "-c", EXTRACT, args.corpus, args.split, str(args.limit), str(out), part, encs,
                           str(args.threads), str(args.min_face) if side == "fast" else "default"]
                res = timed(cmd, srcs[side], env)
                res.update(round=r, part=part, side=side, x_real_time=round(audio_s / res["wall_seconds"], 2),
                           x_real_time_cpu=round(audio_s / max(res["cpu_seconds"], 1e-9), 2), out=str(out))
                runs.append(res)
                print({k: v for k, v in res.items() if k != "stdout"}, flush=True)

    compare = {}
    for part in parts:
        for side in ("after", *qc_extra):
            b, a = Path(work / f"r0_{part}_before"), Path(work / f"r0_{part}_{side}")
            if not a.exists():
                continue
            if part == "qc":
                compare[f"{part}/{side}"] = compare_flags(b / "qc" / "flags.csv", a / "qc" / "flags.csv")
            else:
                compare[f"{part}/{side}"] = compare_features(b / f"{part}.npz", a / f"{part}.npz", part)
    summary = {}
    for part in parts:
        for side in ("before", "after", *qc_extra):
            rs = [x for x in runs if x["part"] == part and x["side"] == side]
            if rs:
                summary[f"{part}/{side}"] = {"x_real_time": [x["x_real_time"] for x in rs],
                                             "x_real_time_cpu": [x["x_real_time_cpu"] for x in rs],
                                             "cpu_per_media_s": [round(x["cpu_seconds"] / audio_s, 3) for x in rs],
                                             "cpu_seconds": [x["cpu_seconds"] for x in rs],
                                             "wall_seconds": [x["wall_seconds"] for x in rs],
                                             "load": [x["load_before"] for x in rs]}
    cmd = ".venv/bin/python benchmarks/" + Path(__file__).name + " " + shlex.join(sys.argv[1:])
    res = {"provenance": provenance(), "command": cmd, "before": before, "after": git("rev-parse", "--short", "HEAD"),
           "corpus": args.corpus, "split": args.split, "limit": args.limit, "utterances": len(utts),
           "audio_seconds": round(audio_s, 1), "workers": args.workers, "threads": args.threads, "note": args.note,
           "min_face": args.min_face, "qc_variants": {k: shlex.join(v) for k, v in qc_extra.items()},
           "runs": [{k: v for k, v in x.items() if k not in ("stdout", "out")} for x in runs], "summary": summary,
           "compare": compare}
    res["qc_checks"] = qc_check_timings(work, audio_s)
    write_json(Path(args.out).with_suffix(".json"), res)
    atomic_write_text(Path(args.out).with_suffix(".md"), report(res))
    print(report(res))
    return 0


def qc_check_timings(work: Path, audio_s: float) -> dict:
    """Per QC run and check: measuring seconds (summed over the workers) from its summary.json, and × real time
    per measuring second."""
    out = {}
    for summ in sorted(work.glob("r*_qc_*/qc/summary.json")):
        t = __import__("json").loads(summ.read_text())["timings"]
        run = summ.parent.parent.name
        out[run] = {c: {"measure_seconds": v["measure_seconds"],
                        "x_real_time": round(audio_s / max(v["measure_seconds"], 1e-9), 2)}
                    for c, v in t.items() if isinstance(v, dict) and "measure_seconds" in v}
    return out


def report(res: dict) -> str:
    from merc.io import provenance_markdown
    p = res["provenance"]
    names = {"qc": "`merc qc`, all four checks (--workers {w})".format(w=res["workers"]),
             "audio": "audio features: egemaps + resemblyzer", "face": "face features: fer + dlib, 1 fps"}
    lines = ["# Media pipeline: before and after (issue #30)", "",
             f"- corpus: `{res['corpus']}`, split {res['split']}, first {res['limit']} dialogues: "
             f"{res['utterances']} utterances, {res['audio_seconds']} s of media",
             f"- before: commit {res['before']} (git archive of `merc/`); after: this checkout ({res['after']})",
             provenance_markdown(p), f"- reproduce: `{res['command']}`",
             *([f"- conditions: {res['note']}"] if res["note"] else []),
             "- each run is its own process with a fresh QC folder / feature store; runs interleaved; × real time = "
             "media seconds / wall seconds (CPU: / CPU seconds of all the run's processes); load = 1-min load "
             "average when the run started (2 cores, shared)", "",
             "- 'after': this code with its defaults"
             + (f"; 'fast': this code with `--min-face {res.get('min_face')}` / "
                f"`FaceFrameConfig(min_face={res.get('min_face') or None})`" if res.get("min_face") is not None
                else ""),
             *[f"- '{k}': this code, `merc qc ... {v}`" for k, v in res.get("qc_variants", {}).items() if k != "fast"],
             ""
             "| stage | code | × real time (wall) | × real time (CPU) | CPU-s per media s | wall s | load at start |",
             "|---|---|---|---|---|---|---|"]
    for k, v in res["summary"].items():
        part, side = k.split("/")
        lines.append(f"| {names.get(part, part)} | {side} | {', '.join(map(str, v['x_real_time']))} | "
                     f"{', '.join(map(str, v['x_real_time_cpu']))} | "
                     f"{', '.join(map(str, v.get('cpu_per_media_s', [])))} | "
                     f"{', '.join(map(str, v['wall_seconds']))} | "
                     f"{', '.join(map(str, v['load']))} |")
    pair = [s for s in ("before", "after", "fast") if f"audio/{s}" in res["summary"] or f"face/{s}" in res["summary"]]
    if any(k.startswith("audio/") for k in res["summary"]):
        lines += ["", "Default audio + face extraction (egemaps + resemblyzer, then fer + dlib; the two runs added; "
                  "'fast' uses 'after''s audio run):", "",
                  "| code | × real time (wall) | × real time (CPU) | CPU-s per media s |", "|---|---|---|---|"]
        for s in pair:
            a = res["summary"].get(f"audio/{s}") or res["summary"].get("audio/after")
            f = res["summary"].get(f"face/{s}")
            if not a or not f or "cpu_seconds" not in a:
                continue
            wall, cpu = a["wall_seconds"][0] + f["wall_seconds"][0], a["cpu_seconds"][0] + f["cpu_seconds"][0]
            m = res["audio_seconds"]
            lines.append(f"| {s} | {m / wall:.2f} | {m / cpu:.2f} | {cpu / m:.3f} |")
    if res.get("qc_checks"):
        checks = sorted({c for v in res["qc_checks"].values() for c in v})
        lines += ["", "QC per check: media seconds / seconds spent measuring (wall time inside the workers, summed "
                  "over them: on a loaded machine well above CPU time; model loading is counted in each check's "
                  "first item, decoding in the first check that decodes a clip), from each run's `summary.json`:",
                  "", "| run | " + " | ".join(checks) + " |", "|---|" + "---|" * len(checks)]
        for run, v in res["qc_checks"].items():
            lines.append(f"| {run} | " + " | ".join(f"{v[c]['x_real_time']} ({v[c]['measure_seconds']:.0f} s)"
                                                     if c in v else "" for c in checks) + " |")
    lines += ["", "## Outputs against 'before'", ""]
    for key, c in res["compare"].items():
        part, side = key.split("/")
        if part == "qc":
            lines.append(f"- QC flags, {side}: {c['same_status']}/{c['flags']} (utterance, check) pairs with the same "
                         f"status; {c['n_changed']} changed; largest score difference per check {c['max_score_diff']}")
            for ch in c["changed"]:
                lines.append(f"  - {ch['utterance_id']} {ch['check']}: {ch['before']} -> {ch['after']}")
        else:
            lines.append(f"- {names[part]}, {side}: same utterances {c['same_ids']}, same present rows "
                         f"{c['same_present']} ({c['present']}/{c['n']}); largest absolute feature difference "
                         f"{c['max_abs_diff']:.3g}, mean {c['mean_abs_diff']:.3g}")
            for b, v in c.get("blocks", {}).items():
                lines.append(f"  - {b}: largest absolute difference {v['max_abs_diff']:.3g}; cosine to 'before' "
                             f"min {v['cosine_min']:.6f}, mean {v['cosine_mean']:.6f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
