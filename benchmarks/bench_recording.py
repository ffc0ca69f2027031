"""From a recording to an emotion timeline with no transcript: how well does `merc predict RUN talk.mp4` find the
speakers, the words and the labels? Writes benchmarks/results/recording/recording.md and .json.

    nice -n 5 .venv/bin/python benchmarks/bench_recording.py --corpus /work/data/mm_signal --run merc/assets/demo_run
    nice -n 5 .venv/bin/python benchmarks/bench_recording.py --tune        # dev split: the clustering threshold

Recordings: whole dialogues of the generated multimodal corpus (``benchmarks/make_mm_corpus.py``: MELD
dialogues re-voiced by espeak-ng, one voice per speaker, emotional prosody on most utterances), their clips' speech
concatenated with pauses drawn uniformly from 0.2–1 s; every third recording has overlapping speech (at up to two
changes of speaker the next turn starts 0.3–0.8 s before the previous one ends). Dialogues are kept when they have
2–5 speakers, each with a voice of their own, and no defective clip. Gold: speakers, text and times of the clips.
Reported recordings come from the corpus's test split; ``--tune`` chooses the clustering threshold on its dev
split (never on the reported recordings).

Measures: speaker count right; diarization error rate (pyannote.metrics, collar 0 and 0.25 s, overlap scored);
word error rate (jiwer, over the whole recording, lower case, punctuation removed); emotion agreement (per gold
utterance, the run's label for the derived utterance overlapping it most against the run's label for the gold
utterance, same run); speed (pipeline seconds per recording second, and `merc predict` end to end on a 30-minute
recording built by concatenation, with its peak memory).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from merc.io import provenance, provenance_markdown

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_write_text, results_dir, write_json  # noqa: E402  (machine paths made portable)

ROOT = Path(__file__).resolve().parents[1]
OUT = results_dir("recording")
WORK = Path(os.environ.get("MERC_BENCH_WORK", "/tmp/merc-bench-recording"))  # recordings and caches
THRESHOLDS = [0.15, 0.175, 0.2, 0.225, 0.25, 0.275, 0.3, 0.35]
SILHOUETTES = [0.0, 0.05, 0.1, 0.15, 0.2]
EMBED_FLOOR = 0.3  # --tune: regions from this long are embedded, so min_embed can be chosen at or above it
MIN_EMBEDS = [0.5, 0.8]
CLUSTER_MINS = [0.0, 1.0, 1.5]
REFINES = [0, 5]


# recordings

def dialogues(corpus: Path, split: str) -> list[list[dict]]:
    """Dialogues of ``split`` with 2–5 speakers, one distinct voice each, no defective clip; utterances in order."""
    by = defaultdict(list)
    for line in (corpus / "mmcorpus_utterances.jsonl").read_text().splitlines():
        u = json.loads(line)
        if u["split"] == split:
            by[u["dia"]].append(u)
    out = []
    for dia in sorted(by):
        utts = sorted(by[dia], key=lambda u: u["utt"])
        voice = {}
        ok = all(u["defect"] is None for u in utts)
        for u in utts:
            ok &= voice.setdefault(u["speaker"], u["voice"]) == u["voice"]
        ok &= len(set(voice.values())) == len(voice) and 2 <= len(voice) <= 5
        if ok:
            out.append(utts)
    return out


def build(corpus: Path, utts: list[dict], k: int, seed: int) -> tuple[Path, list]:
    """Recording k of the list: (path of the .mp4 audio, gold turns)."""
    from merc.media.decode import load_audio
    from merc.testing.recordings import Clip, concat_turns
    from merc.testing.synth import make_audio_only_clip, write_wav
    rng = random.Random(seed * 1000 + k)
    clips = [Clip(u["speaker"], u["text"], load_audio(corpus / u["clip"]), u["emotion"], u["uid"]) for u in utts]
    overlaps = {}
    if k % 3 == 2:
        changes = [i for i in range(1, len(clips)) if clips[i].speaker != clips[i - 1].speaker]
        for i in rng.sample(changes, min(2, len(changes))):
            overlaps[i] = rng.uniform(0.3, 0.8)
    wav, gold = concat_turns(clips, rng=rng, overlaps=overlaps)
    name = f"dia{utts[0]['dia']}_{utts[0]['split']}"
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = write_wav(wav, WORK / f"{name}.wav")
    path = make_audio_only_clip(tmp, WORK / f"{name}.mp4")
    tmp.unlink()
    return path, gold


# measures

def norm_words(text: str) -> str:
    text = text.lower().replace("’", "'").replace("‘", "'")
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


def der(gold, segments, collar: float) -> float:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate
    ref, hyp = Annotation(), Annotation()
    for k, g in enumerate(gold):
        ref[Segment(g.start, g.end), k] = g.speaker
    for k, s in enumerate(segments):
        hyp[Segment(s["start"], s["end"]), k] = s["speaker"]
    return float(DiarizationErrorRate(collar=collar, skip_overlap=False)(ref, hyp, uem=Segment(0, max(
        max(g.end for g in gold), max(s["end"] for s in segments)))))


def labels_of(run, path: Path, segments: list[dict]) -> list[str]:
    from merc.data.transcript import segments_conversation
    conv, _ = segments_conversation(path, segments, None)
    probs = run.predict([conv], features=run.features_for([conv]))[0]
    return [run.labels[int(i)] for i in probs.argmax(1)]


def agreement(gold, gold_labels, segments, derived_labels) -> tuple[int, int]:
    agree = 0
    for g, lab in zip(gold, gold_labels):
        ov = [max(0.0, min(g.end, s["end"]) - max(g.start, s["start"])) for s in segments]
        j = int(np.argmax(ov)) if ov else -1
        agree += j >= 0 and ov[j] > 0 and derived_labels[j] == lab
    return agree, len(gold)


def score(gold, segments) -> dict:
    import jiwer
    ref = " ".join(norm_words(g.text) for g in gold)
    hyp = " ".join(norm_words(s["text"]) for s in segments)
    return {"speakers_gold": len({g.speaker for g in gold}), "speakers_found": len({s["speaker"] for s in segments}),
            "der": der(gold, segments, 0.0), "der_collar": der(gold, segments, 0.25),
            "wer": float(jiwer.wer(ref, hyp)) if hyp else 1.0, "utterances_gold": len(gold),
            "utterances_found": len(segments)}


def rediarize(result, **kw) -> list[dict]:
    from dataclasses import replace

    from merc.recording.diarize import DiarizeConfig, diarize
    from merc.recording.segment import build_segments
    dia = diarize(result.voices, replace(DiarizeConfig(), **kw))
    segs = build_segments([v.region for v in result.voices], dia.labels, dia.changes, result.words)
    return [{"speaker": s.speaker, "text": s.text, "start": s.start, "end": s.end} for s in segs]


# runs

def run_split(corpus: Path, split: str, limit: int | None, seed: int, config=None) -> list[tuple]:
    from merc.recording.pipeline import RecordingPipeline
    pipe = RecordingPipeline(config)
    out = []
    dias = dialogues(corpus, split)[:limit]
    for k, utts in enumerate(dias):
        path, gold = build(corpus, utts, k, seed)
        t = time.perf_counter()
        result = pipe(path)
        secs = time.perf_counter() - t - result.seconds["load"]  # models load once per process
        print(f"[{k + 1}/{len(dias)}] {path.name}: {result.duration:.1f} s audio, {secs:.1f} s, "
              f"{result.num_speakers}/{len({g.speaker for g in gold})} speakers", file=sys.stderr, flush=True)
        out.append((path, gold, result, secs, k % 3 == 2))
    return out


def dev_runs(args) -> tuple[list[tuple], list[dict]]:
    """The dev recordings through the pipeline twice, Whisper batched (the default) and one window at a time,
    alternating which goes first per recording (the machine is shared: same-run, interleaved timings). Embeddings
    are kept for regions from ``EMBED_FLOOR`` s so the grid can re-cluster at any ``min_embed`` above it."""
    from dataclasses import replace

    from merc.recording.pipeline import RecordingConfig, RecordingPipeline
    pipes = {}
    for bs in (8, 1):
        cfg = RecordingConfig()
        cfg.asr = replace(cfg.asr, batch_size=bs)
        cfg.diarize = replace(cfg.diarize, min_embed=EMBED_FLOOR)
        pipes[bs] = RecordingPipeline(cfg)
    rows, asr = [], []
    dias = dialogues(args.corpus, "dev")[:args.limit]
    for k, utts in enumerate(dias):
        path, gold = build(args.corpus, utts, k, args.seed)
        res = {}
        for bs in ((8, 1) if k % 2 == 0 else (1, 8)):
            t = time.perf_counter()
            res[bs] = pipes[bs](path)
            res[bs].seconds["total"] = time.perf_counter() - t - res[bs].seconds["load"]
        ref = " ".join(norm_words(g.text) for g in gold)
        asr.append({"recording": path.name, "seconds_audio": res[8].duration, **{
            f"b{bs}_{key}": val for bs in (8, 1) for key, val in (
                ("asr_s", res[bs].seconds["asr"]), ("total_s", res[bs].seconds["total"]),
                ("embed_s", res[bs].seconds["embed"]),
                ("wer", wer_counts(ref, norm_words("".join(w.text for w in res[bs].words)))))}})
        print(f"[{k + 1}/{len(dias)}] {path.name}: {res[8].duration:.1f} s audio, asr batched "
              f"{res[8].seconds['asr']:.1f} s, one by one {res[1].seconds['asr']:.1f} s", file=sys.stderr, flush=True)
        rows.append((path, gold, res[8], res[8].seconds["total"], k % 3 == 2))
    return rows, asr


def wer_counts(ref: str, hyp: str) -> dict:
    import jiwer
    o = jiwer.process_words(ref, hyp)
    return {"s": o.substitutions, "d": o.deletions, "i": o.insertions, "n": len(ref.split()), "wer": o.wer}


def tune(args) -> None:
    import pickle
    cache = WORK / f"dev_rows_{args.seed}_{args.limit}.pkl"  # the pipeline's output per dev recording
    if cache.exists():
        rows, asr = pickle.loads(cache.read_bytes())
    else:
        rows, asr = dev_runs(args)
        cache.write_bytes(pickle.dumps((rows, asr)))
    load = round(os.getloadavg()[0], 1)
    table = []
    grid = [{"method": "threshold", "threshold": th} for th in THRESHOLDS] + \
        [{"method": "silhouette", "min_silhouette": m} for m in SILHOUETTES] + [{"method": "spectral"}] + \
        [{"method": "silhouette", "min_embed": me, "cluster_min": cm, "refine": rf}
         for me in MIN_EMBEDS for cm in CLUSTER_MINS for rf in REFINES]
    for kw in grid:
        kw = {"min_embed": 0.8, "cluster_min": 0.0, "refine": 0, **kw}
        sc = [score(gold, rediarize(res, **kw)) for _, gold, res, _, _ in rows]
        table.append({**kw, "count_right": float(np.mean([s["speakers_found"] == s["speakers_gold"] for s in sc])),
                      "der": float(np.mean([s["der"] for s in sc])), "wer": float(np.mean([s["wer"] for s in sc]))})
        print(table[-1], file=sys.stderr)
    best = min(table, key=lambda r: (round(r["der"], 4), -r["count_right"]))
    prov = {**provenance(), "load_average": load}
    audio = sum(a["seconds_audio"] for a in asr)

    def pooled(bs: int) -> float:
        w = [a[f"b{bs}_wer"] for a in asr]
        return sum(x["s"] + x["d"] + x["i"] for x in w) / sum(x["n"] for x in w)

    def cell(r: dict) -> str:
        p = r.get("threshold", r.get("min_silhouette", "—"))
        return (f"| {r['method']} | {p} | {r['min_embed']} | {r.get('cluster_min', 0.0)} | {r.get('refine', 0)} | "
                f"{100 * r['count_right']:.1f}% | {100 * r['der']:.1f}% | {r['wer']:.3f} |")
    lines = ["# Recording pipeline: settings chosen on the dev split", "", provenance_markdown(prov), "",
             f"{len(rows)} dev recordings ({audio / 60:.1f} min of audio) of {args.corpus}; never the test split. "
             f"Load average at the end: {load} on 2 cores (a shared machine).", "",
             "## Whisper: batched windows against one window at a time (same run, interleaved per recording)", "",
             "| Whisper decoding | ASR seconds | × real time (ASR) | pipeline × real time | pooled WER (words) | "
             "S / D / I |", "|---|---:|---:|---:|---:|---:|"]
    for bs, name in ((8, "batched, 8 windows per call (default)"), (1, "one window at a time")):
        secs = sum(a[f"b{bs}_asr_s"] for a in asr)
        tot = sum(a[f"b{bs}_total_s"] for a in asr)
        w = [a[f"b{bs}_wer"] for a in asr]
        lines.append(f"| {name} | {secs:.1f} | {audio / secs:.1f}× | {audio / tot:.1f}× | {pooled(bs):.3f} | "
                     f"{sum(x['s'] for x in w)} / {sum(x['d'] for x in w)} / {sum(x['i'] for x in w)} |")
    lines += ["", "## Speaker clustering", "",
              f"Best: **{best['method']}, min_embed {best['min_embed']}, cluster_min {best.get('cluster_min', 0.0)}, "
              f"refine {best.get('refine', 0)}** (lowest mean DER, collar 0; then most recordings with the right "
              "speaker count). The batched run's output per recording (regions, embeddings, words) is "
              f"cached in {cache.name} and re-clustered per row" + (f" (cache written at commit {args.cache_commit})"
                                                                 if args.cache_commit else "") + ". WER is over "
              "the utterances built (words outside speech regions dropped).", "",
              "| method | parameter | min_embed s | cluster_min s | refine | speaker count right | DER (collar 0) | "
              "WER |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [cell(r) for r in table]
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "tune.md", "\n".join(lines) + "\n")
    write_json(OUT / "tune.json", {"provenance": prov, "table": table, "best": best, "asr": asr})
    print("\n".join(lines))


def long_recording(rows, minutes: float) -> tuple[Path, float]:
    """Concatenate the test recordings (repeating them) to ``minutes`` minutes: an .mp4 (AAC) on disk."""
    from merc.media.decode import load_audio
    from merc.testing.synth import make_audio_only_clip, write_wav
    parts, total = [], 0.0
    while total < minutes * 60:
        for path, *_ in rows:
            x = load_audio(path)
            parts.append(x)
            total += len(x) / 16000
            if total >= minutes * 60:
                break
    tmp = write_wav(np.concatenate(parts), WORK / "long.wav")
    path = make_audio_only_clip(tmp, WORK / f"long_{int(minutes)}min.mp4")
    tmp.unlink()
    return path, total


def predict_cli(run: Path, path: Path, extra: list[str]) -> dict:
    """`merc predict RUN path --json` in a child process: wall seconds, peak RSS (MB), its JSON output."""
    cmd = [sys.executable, "-m", "merc.cli", "predict", str(run), str(path), "--json", "--quiet", "--out",
           str(WORK / "plots"), *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"command": " ".join(cmd[1:]), "seconds": secs, "peak_mb": peak, "output": json.loads(proc.stdout)}


def media_cost(args) -> None:
    """What audio and face features add on top of a text-only run: the default encoders of `merc train`
    (audio egemaps,resemblyzer; face fer,dlib) over the derived utterances of test recordings made video (a
    still face, 5 fps), timed from an empty feature store."""
    import tempfile
    os.environ["MERC_CACHE"] = tempfile.mkdtemp(prefix="merc-bench-media-")  # no cached features
    from merc.data.schema import Corpus
    from merc.recording.conversation import derive_conversation
    from merc.testing.synth import face_images, make_clip
    from merc.training.features import DEFAULT_ENCODERS, encoder_features
    rows = []
    face = face_images(1)[0]
    for k, utts in enumerate(dialogues(args.corpus, "test")[: args.limit or 3]):
        audio, _ = build(args.corpus, utts, k, args.seed)
        wav = WORK / f"{audio.stem}_v.wav"
        from merc.media.decode import load_audio
        from merc.testing.synth import write_wav
        write_wav(load_audio(audio), wav)
        video = make_clip(wav, face, WORK / f"{audio.stem}_video.mp4", fps=5)
        conv, _ = derive_conversation(video)
        corpus = Corpus("predict", {"predict": [conv]}, ["neutral"])
        secs = len(load_audio(audio)) / 16000
        row = {"recording": video.name, "seconds_audio": secs, "utterances": len(conv)}
        for m in ("audio", "face"):
            for name in DEFAULT_ENCODERS[m]:
                t = time.perf_counter()
                encoder_features(corpus, "predict", m, name, progress=False)
                row[f"{m}:{name}"] = time.perf_counter() - t
        rows.append(row)
        print(row, file=sys.stderr)
    prov = provenance()
    names = [k for k in rows[0] if ":" in k]
    total = sum(r["seconds_audio"] for r in rows)
    lines = ["# What audio and face features cost on top of a text-only run (recordings without a transcript)", "",
             provenance_markdown(prov), "",
             f"{len(rows)} test recordings ({total:.0f} s of audio) made video (one still face at 5 fps); each "
             "encoder timed over the derived utterances from an empty feature store (the first includes loading "
             "its model). × real time = audio seconds / encoder seconds.", "",
             "| encoder | seconds | × real time |", "|---|---:|---:|"]
    for n in names:
        sec = sum(r[n] for r in rows)
        lines.append(f"| {n} | {sec:.1f} | {total / sec:.1f}× |")
    atomic_write_text(OUT / "media_cost.md", "\n".join(lines) + "\n")
    write_json(OUT / "media_cost.json", {"provenance": prov, "rows": rows})
    print("\n".join(lines))


def long_only(args) -> None:
    """`merc predict` end to end on one recording of ``--long-only`` minutes (the test recordings concatenated):
    wall time and peak memory, written to long_<N>min.md / .json."""
    paths = [(build(args.corpus, utts, k, args.seed)[0],) for k, utts in enumerate(dialogues(args.corpus, "test"))]
    path, total = long_recording(paths, args.long_only)
    load0 = os.getloadavg()[0]
    r = predict_cli(args.run, path, [])
    out = r.pop("output")
    prov = {**provenance(), "load_average": round(os.getloadavg()[0], 1), "load_average_start": round(load0, 1)}
    row = {**r, "seconds_audio": total, "x_real_time": total / r["seconds"], "utterances": len(out["utterances"]),
           "speakers": len({u["speaker"] for u in out["utterances"]}), "derived": out.get("derived")}
    name = f"long_{int(args.long_only)}min"
    lines = [f"# A {total / 60:.1f}-minute recording through `merc predict` (text run, no transcript)", "",
             provenance_markdown(prov), "",
             f"The test recordings of `{args.corpus}` concatenated (repeating) to {total / 60:.1f} min, AAC in mp4. "
             f"Load average {prov['load_average_start']} at the start, {prov['load_average']} at the end, on 2 "
             "shared cores.", "",
             f"- command: `{row['command']}`",
             f"- wall time {row['seconds']:.0f} s = **{row['x_real_time']:.1f}× real time**; peak memory (max RSS of "
             f"the process) **{row['peak_mb']:.0f} MB**",
             f"- {row['utterances']} utterances, {row['speakers']} speakers found; pipeline steps (s): "
             f"{json.dumps((row.get('derived') or {}).get('seconds'))}"]
    atomic_write_text(OUT / f"{name}.md", "\n".join(lines) + "\n")
    write_json(OUT / f"{name}.json", {"provenance": prov, "long": row})
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/work/data/mm_signal"))
    ap.add_argument("--run", type=Path, default=ROOT / "merc" / "assets" / "demo_run", help="text run (labels)")
    ap.add_argument("--limit", type=int, default=None, help="at most N recordings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tune", action="store_true", help="choose the clustering threshold on the dev split")
    ap.add_argument("--render", action="store_true", help="rewrite recording.md from recording.json (no runs)")
    ap.add_argument("--media-cost", action="store_true", help="time the audio and face encoders on derived utterances")
    ap.add_argument("--cache-commit", default=None, help="--tune: the commit that wrote the cached dev outputs")
    ap.add_argument("--long-minutes", type=float, default=30.0, help="0 = skip the long recording")
    ap.add_argument("--long-only", type=float, default=None, metavar="MINUTES",
                    help="only `merc predict` on one recording this long (wall time, peak memory)")
    args = ap.parse_args()
    if args.long_only:
        return long_only(args)
    if args.tune:
        return tune(args)
    if args.media_cost:
        return media_cost(args)
    if args.render:
        data = json.loads((OUT / "recording.json").read_text())
        return atomic_write_text(OUT / "recording.md", report(data["recordings"], data["long"], data["provenance"],
                                                              args))
    from merc.training.run import from_pretrained
    run = from_pretrained(args.run)
    rows = run_split(args.corpus, "test", args.limit, args.seed)
    per = []
    for path, gold, res, secs, overlap in rows:
        segs = res.to_segments()
        sc = score(gold, segs)
        gl = labels_of(run, path, [{"speaker": g.speaker, "text": g.text, "start": g.start, "end": g.end}
                                   for g in gold])
        dl = labels_of(run, path, segs)
        agree, n = agreement(gold, gl, segs, dl)
        per.append({"recording": path.name, "seconds_audio": res.duration, "pipeline_seconds": secs,
                    "overlap": overlap, **sc, "agree": agree, "n": n, "steps": res.seconds})
    prov = {**provenance(), "load_average": round(os.getloadavg()[0], 1)}
    long = None
    if args.long_minutes > 0:
        path, total = long_recording(rows, args.long_minutes)
        r = predict_cli(args.run, path, [])
        out = r.pop("output")
        long = {**r, "seconds_audio": total, "x_real_time": total / r["seconds"], "utterances": len(out["utterances"]),
                "speakers": len({u["speaker"] for u in out["utterances"]}), "derived": out.get("derived")}
    write_json(OUT / "recording.json", {"provenance": prov, "recordings": per, "long": long})
    atomic_write_text(OUT / "recording.md", report(per, long, prov, args))
    print((OUT / "recording.md").read_text())


def report(per: list[dict], long: dict | None, prov: dict, args) -> str:
    n = len(per)
    count = np.mean([p["speakers_found"] == p["speakers_gold"] for p in per])
    audio = sum(p["seconds_audio"] for p in per)
    agree = sum(p["agree"] for p in per) / max(1, sum(p["n"] for p in per))
    ov = [p for p in per if p["overlap"]]
    lines = ["# Recording → emotion timeline without a transcript (`merc predict RUN talk.mp4`)", "",
             provenance_markdown(prov), "",
             f"{n} recordings ({audio / 60:.1f} min of audio) built from the test split of `{args.corpus}` "
             f"(dialogues with 2–5 voices; pauses 0.2–1 s; {len(ov)} with overlapping speech); labels from the run "
             f"`{Path(args.run).name}`. Pipeline defaults: Silero VAD, Whisper tiny.en (bundled, one 30-s "
             "window at a time), resemblyzer embeddings of regions from 0.5 s, those of 1 s or more clustered "
             "(average linkage, speaker count by silhouette), shorter ones to the nearest centroid, 5 refine "
             "rounds (chosen with `--tune` on the dev split: `tune.md`). Speeds are wall-clock on a machine "
             "shared with other jobs (load average at the "
             f"end: {prov.get('load_average', 'not recorded; 11-13 was seen during this run')} on 2 cores).", "",
             "| measure | result | target |", "|---|---:|---:|",
             f"| right number of speakers | {100 * count:.1f}% ({int(round(count * n))}/{n}) | ≥ 90% |",
             f"| DER, collar 0 (mean over recordings) | {100 * np.mean([p['der'] for p in per]):.1f}% | ≤ 10% |",
             f"| DER, collar 0.25 s | {100 * np.mean([p['der_collar'] for p in per]):.1f}% | |",
             f"| WER (mean over recordings) | {np.mean([p['wer'] for p in per]):.3f} | ≤ 0.25 |",
             f"| emotion agreement (derived vs gold transcript, same run) | {100 * agree:.1f}% | ≥ 80% |",
             f"| pipeline speed (audio s / wall s, short recordings) | "
             f"{audio / sum(p['pipeline_seconds'] for p in per):.1f}× | ≥ 5× |"]
    if ov:
        lines.append(f"| DER on the {len(ov)} recordings with overlap | "
                     f"{100 * np.mean([p['der'] for p in ov]):.1f}% | |")
    if long:
        lines += ["", f"## {long['seconds_audio'] / 60:.1f}-minute recording, `merc predict` end to end (text run)", "",
                  f"- command: `{long['command']}`",
                  f"- wall time {long['seconds']:.0f} s = **{long['x_real_time']:.1f}× real time**; "
                  f"peak memory (max RSS of the process) **{long['peak_mb']:.0f} MB**",
                  f"- {long['utterances']} utterances, {long['speakers']} speakers found; pipeline steps (s): "
                  f"{json.dumps((long.get('derived') or {}).get('seconds'))}"]
    lines += ["", "## Per recording", "",
              "| recording | audio s | overlap | speakers (found/gold) | utterances (found/gold) | DER | WER | "
              "agreement | x real time |", "|---|---:|:-:|---:|---:|---:|---:|---:|---:|"]
    for p in per:
        lines.append(f"| {p['recording']} | {p['seconds_audio']:.1f} | {'yes' if p['overlap'] else ''} | "
                     f"{p['speakers_found']}/{p['speakers_gold']} | {p['utterances_found']}/{p['utterances_gold']} | "
                     f"{100 * p['der']:.1f}% | {p['wer']:.3f} | {p['agree']}/{p['n']} | "
                     f"{p['seconds_audio'] / p['pipeline_seconds']:.1f}× |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
