"""Extraction throughput of the stage-1 audio and face encoders on synthetic clips.

Builds a MELD-layout corpus with merc.testing.synth (espeak-ng voices, real face photos shipped by
scikit-image/matplotlib, H.264 + AAC mp4 at 320x240, 10 fps; no faults), then times every audio and
face encoder over all its clips (decoding included, model loading excluded and reported apart; one
warm-up utterance first). Reported per encoder: utterances/s and the real-time factor, i.e. seconds of
audio processed per second of wall time ("12x" = twelve times faster than real time). The issue's
targets: the default audio encoders together >= 10x real time; faces at 1 fps >= 1x.

    .venv/bin/python benchmarks/bench_extract.py [--dialogues 12 --utts 6]
writes benchmarks/results/extract_speed/extract_speed.md and extract_speed.json.

The machine is shared (load average recorded): treat the figures as a lower bound of what a free
2-core machine does.

``--before REF`` (issue #30): every encoder is timed twice more in its own process, with the merc package of
commit REF (``git archive``) and with this checkout, interleaved encoder by encoder (before, after; then after,
before for the next one) on the same clips, and the rows of both are compared (largest absolute difference,
cosine); ``--encoders`` limits the encoders timed (e.g. the defaults: egemaps,resemblyzer,dlib,fer).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import atomic_write_text, write_json  # noqa: E402

from merc.io import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "extract_speed"
# one encoder timed in a process of its own (--before): PYTHONPATH chooses the merc package
TIME_ONE = r"""
import json, os, sys, time, numpy as np, torch
from merc.data import load_corpus
from merc.encoders.base import get_encoder
data_dir, media_dir, modality, name, threads, out = sys.argv[1:7]
torch.set_num_threads(int(threads))
corpus = load_corpus("meld", data_dir, media_dir)
utts = [u for s in corpus.splits for u in corpus.utterances(s)]
t0 = time.perf_counter()
enc = get_encoder(name, modality)
enc.encode_batch(utts[:1])
load_s = time.perf_counter() - t0
t0, c0 = time.perf_counter(), time.process_time()
res = enc.encode_batch(utts)
secs, cpu = time.perf_counter() - t0, time.process_time() - c0
np.savez(out, X=res.X, present=res.present)
print(json.dumps({"seconds": secs, "cpu_seconds": cpu, "load_seconds": load_s, "present": int(res.present.sum()),
                  "dim": enc.dim, "load_average_after": [round(x, 2) for x in os.getloadavg()]}))
"""
ENCODERS = [("audio", "egemaps"), ("audio", "resemblyzer"), ("audio", "compare"), ("face", "dlib"), ("face", "fer"),
            ("face", "blendshapes")]
DEFAULT_AUDIO = ("egemaps", "resemblyzer")
PACKAGES = ["numpy", "torch", "av", "opensmile", "resemblyzer", "dlib-bin", "fer", "h5py", "mediapipe"]


def machine() -> dict:
    root = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "merc"], capture_output=True,
                           text=True).stdout.strip()
    vers = {}
    for p in PACKAGES:
        try:
            vers[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            vers[p] = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
            "commit": commit + (" (uncommitted changes in merc/)" if dirty else ""), "versions": vers}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dialogues", type=int, default=12)
    ap.add_argument("--utts", type=int, default=6, help="utterances per dialogue")
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (fer and resemblyzer run on 1, set inside)")
    ap.add_argument("--work", default=None, help="folder for the corpus (default: a temporary one)")
    ap.add_argument("--out", default=str(RESULTS / "extract_speed"))
    ap.add_argument("--note", default="", help="a line on the conditions (e.g. other jobs paused), kept in the results")
    ap.add_argument("--encoders", default=None, help="comma-separated encoder names (default: all of them)")
    ap.add_argument("--before", default=None, metavar="REF",
                    help="time every encoder with the merc of commit REF and with this checkout, interleaved")
    args = ap.parse_args()
    if args.before:
        return compare_main(args)

    import torch

    from merc.data import load_corpus
    from merc.encoders.base import get_encoder
    from merc.media.decode import probe
    from merc.testing import synth
    torch.set_num_threads(args.threads)
    info = machine()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_extract-"))
    t0 = time.perf_counter()
    fx = synth.build_corpus_fixture(work, layout="meld", n_dialogues=args.dialogues, utts_per_dialogue=args.utts,
                                    n_speakers=args.speakers, seed=0)
    build_s = time.perf_counter() - t0
    corpus = load_corpus("meld", fx.data_dir, fx.media_dir)
    utts = [u for s in corpus.splits for u in corpus.utterances(s)]
    audio_s = sum(probe(u.video).duration for u in utts)
    print(f"{len(utts)} clips, {audio_s:.1f} s of audio (built in {build_s:.0f} s)", flush=True)

    rows = []
    for modality, name in ENCODERS:
        t0 = time.perf_counter()
        enc = get_encoder(name, modality)
        enc.encode_batch(utts[:1])  # loads the model, warms caches
        load_s = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        res = enc.encode_batch(utts)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        row = {"encoder": name, "modality": modality, "dim": enc.dim, "n": len(utts),
               "present": int(res.present.sum()), "seconds": round(secs, 2), "cpu_seconds": round(cpu, 2),
               "load_seconds": round(load_s, 2), "utt_per_s": round(len(utts) / secs, 2),
               "x_real_time": round(audio_s / secs, 2), "x_real_time_cpu": round(audio_s / cpu, 2),
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}
        rows.append(row)
        print(row, flush=True)

    def together(names):
        secs = sum(r["seconds"] for r in rows if r["encoder"] in names)
        cpu = sum(r["cpu_seconds"] for r in rows if r["encoder"] in names)
        return {"encoders": list(names), "seconds": round(secs, 2), "utt_per_s": round(len(utts) / secs, 2),
                "x_real_time": round(audio_s / secs, 2), "x_real_time_cpu": round(audio_s / cpu, 2)}

    groups = [together(DEFAULT_AUDIO), together(("egemaps", "resemblyzer", "compare")), together(("dlib", "fer"))]
    cmd = ".venv/bin/python benchmarks/" + Path(__file__).name + " " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    out = {"machine": info, "command": cmd.strip(), "clips": len(utts), "audio_seconds": round(audio_s, 1),
           "mean_clip_seconds": round(audio_s / len(utts), 2), "torch_threads": args.threads,
           "encoders": rows, "groups": groups, "note": args.note}
    write_json(Path(args.out).with_suffix(".json"), out)

    lines = ["# Stage-1 extraction throughput (synthetic clips)", "",
             f"- machine: {info['cpu']}, {info['cores']} cores (shared; load average at start "
             f"{info['load_average_at_start']}), Python {info['python']}",
             f"- date: {info['date']}; commit {info['commit']}", f"- command: `{out['command']}`",
             *([f"- conditions: {args.note}"] if args.note else []),
             f"- data: {len(utts)} clips from `merc.testing.synth` (espeak-ng speech, face photos, "
             "320x240 H.264 + AAC mp4), "
             f"{audio_s:.1f} s of audio, {out['mean_clip_seconds']} s per clip on average; faces sampled at 1 fps",
             f"- torch threads {args.threads} (fer, resemblyzer: 1, set inside the encoders); decoding included, "
             "model loading excluded (shown apart, with one warm-up utterance)", "",
             "- wall-clock figures suffer from the other jobs on the machine (see the load averages); the "
             "'CPU' columns divide by the CPU time this process used instead (all its threads), which is "
             "roughly what one free core would need", "",
             "| encoder | modality | dim | utterances/s (wall) | × real time (wall) | × real time (CPU) | present | "
             "load + warm-up s | load avg after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['modality']} | {r['dim']} | {r['utt_per_s']} | {r['x_real_time']} | "
                     f"{r['x_real_time_cpu']} | {r['present']}/{r['n']} | {r['load_seconds']} | "
                     f"{r['load_average_after'][0]} |")
    lines += ["", "| together | utterances/s (wall) | × real time (wall) | × real time (CPU) |", "|---|---|---|---|"]
    for g in groups:
        lines.append(f"| {' + '.join(g['encoders'])} | {g['utt_per_s']} | {g['x_real_time']} | "
                     f"{g['x_real_time_cpu']} |")
    a, f = groups[0], groups[2]
    lines += ["", "Targets (issue 12), judged on wall-clock time as measured here: default audio encoders together "
              f"≥ 10× real time — {'met' if a['x_real_time'] >= 10 else 'NOT met'} ({a['x_real_time']}× wall, "
              f"{a['x_real_time_cpu']}× CPU); faces at 1 fps ≥ 1× — "
              f"{'met' if f['x_real_time'] >= 1 else 'NOT met'} ({f['x_real_time']}× wall, "
              f"{f['x_real_time_cpu']}× CPU, "
              "dlib + fer together).",
              "", "WavLM and ECAPA are not measured: their weights are not available offline here."]
    atomic_write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def compare_main(args) -> int:
    """``--before REF``: each encoder in its own process, REF's merc and this checkout's, interleaved."""
    import json
    import tarfile
    from io import BytesIO

    import numpy as np

    from merc.data import load_corpus
    from merc.io import provenance, provenance_markdown
    from merc.media.decode import probe
    from merc.testing import synth
    root = Path(__file__).resolve().parents[1]
    from bench_media import which_merc
    work = (Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_extract-"))).resolve()
    before_src = work / "before_src"
    data = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", args.before, "merc"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as t:
        t.extractall(before_src, filter="data")
    before = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", args.before], capture_output=True,
                            text=True, check=True).stdout.strip()
    fx = synth.build_corpus_fixture(work / "corpus", layout="meld", n_dialogues=args.dialogues,
                                    utts_per_dialogue=args.utts, n_speakers=args.speakers, seed=0)
    corpus = load_corpus("meld", fx.data_dir, fx.media_dir)
    utts = [u for s in corpus.splits for u in corpus.utterances(s)]
    audio_s = sum(probe(u.video).duration for u in utts)
    names = args.encoders.split(",") if args.encoders else [n for _, n in ENCODERS]
    modality = dict((n, m) for m, n in ENCODERS)
    rows = []
    for j, name in enumerate(names):
        sides = ("before", "after") if j % 2 == 0 else ("after", "before")
        for side in sides:
            src = before_src if side == "before" else root
            env = {**os.environ, "PYTHONPATH": str(src), "MERC_CACHE": str(work / f"cache_{side}")}
            which_merc(src, env)  # and run in src: python -c puts the working folder first on sys.path
            load0 = os.getloadavg()[0]
            out = work / f"{name}_{side}.npz"
            p = subprocess.run([sys.executable, "-c", TIME_ONE, str(fx.data_dir), str(fx.media_dir),
                                modality[name], name, str(args.threads), str(out)], env=env, cwd=src,
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"{name} ({side}) failed:\n{p.stderr[-3000:]}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r.update(encoder=name, modality=modality[name], side=side, load_before=round(load0, 2),
                     x_real_time=round(audio_s / r["seconds"], 2), x_real_time_cpu=round(audio_s / r["cpu_seconds"], 2))
            rows.append(r)
            print(r, flush=True)
        a, b = np.load(work / f"{name}_before.npz"), np.load(work / f"{name}_after.npz")
        both = a["present"] & b["present"]
        u, v = a["X"][both].astype(np.float64), b["X"][both].astype(np.float64)
        cos = (u * v).sum(1) / np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1), 1e-12)
        rows[-1]["compare"] = {"same_present": bool((a["present"] == b["present"]).all()), "present": int(both.sum()),
                               "max_abs_diff": float(np.abs(u - v).max()) if u.size else 0.0,
                               "cosine_min": float(cos.min()) if cos.size else 1.0}

    def group(ns, side):
        rs = [r for r in rows if r["encoder"] in ns and r["side"] == side]
        if len(rs) != len(ns):
            return None
        secs, cpu = sum(r["seconds"] for r in rs), sum(r["cpu_seconds"] for r in rs)
        return {"encoders": list(ns), "side": side, "x_real_time": round(audio_s / secs, 2),
                "x_real_time_cpu": round(audio_s / cpu, 2), "cpu_per_media_s": round(cpu / audio_s, 3)}

    groups = [g for ns in (DEFAULT_AUDIO, ("dlib", "fer"), (*DEFAULT_AUDIO, "dlib", "fer")) for side in
              ("before", "after") if (g := group(ns, side))]
    cmd = ".venv/bin/python benchmarks/" + Path(__file__).name + " " + shlex.join(sys.argv[1:])
    res = {"provenance": provenance(), "command": cmd, "before": before, "clips": len(utts),
           "audio_seconds": round(audio_s, 1), "threads": args.threads, "note": args.note, "rows": rows,
           "groups": groups}
    write_json(Path(args.out).with_suffix(".json"), res)
    lines = ["# Stage-1 extraction throughput, before and after (synthetic clips; issue #30)", "",
             f"- data: {len(utts)} clips from `merc.testing.synth` (espeak-ng speech, face photos, 320x240 H.264 + "
             f"AAC mp4), {audio_s:.1f} s of audio; faces sampled at 1 fps",
             f"- before: commit {before} (git archive of `merc/`); after: this checkout",
             provenance_markdown(res["provenance"]), f"- reproduce: `{cmd}`",
             *([f"- conditions: {args.note}"] if args.note else []),
             f"- each encoder timed in its own process (torch threads {args.threads}; fer and resemblyzer set 1 "
             "inside), decoding included, model loading and one warm-up utterance excluded; before and after "
             "interleaved encoder by encoder; each encoder alone (dlib and fer each detect the faces themselves: "
             "`merc extract` detects once per clip for both)", "",
             "| encoder | code | × real time (wall) | × real time (CPU) | CPU-s per media s | present "
             "| load at start |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['side']} | {r['x_real_time']} | {r['x_real_time_cpu']} | "
                     f"{r['cpu_seconds'] / audio_s:.3f} | {r['present']}/{len(utts)} | {r['load_before']} |")
    lines += ["", "| together | code | × real time (wall) | × real time (CPU) | CPU-s per media s |",
              "|---|---|---|---|---|"]
    lines += [f"| {' + '.join(g['encoders'])} | {g['side']} | {g['x_real_time']} | {g['x_real_time_cpu']} | "
              f"{g['cpu_per_media_s']} |" for g in groups]
    lines += ["", "Rows against 'before' (utterances present in both):", ""]
    for r in rows:
        if "compare" in r:
            c = r["compare"]
            lines.append(f"- {r['encoder']}: same present rows {c['same_present']} ({c['present']}); largest "
                         f"absolute difference {c['max_abs_diff']:.3g}; cosine min {c['cosine_min']:.6f}")
    atomic_write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
