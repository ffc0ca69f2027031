"""From a recording to an emotion timeline with no transcript: how well does `merc predict RUN talk.mp4` find the
speakers, the words and the labels? Writes benchmarks/results/recording/recording.md and .json.

    nice -n 5 .venv/bin/python benchmarks/bench_recording.py --corpus /work/data/mm_signal --run merc/assets/demo_run
    nice -n 5 .venv/bin/python benchmarks/bench_recording.py --tune        # dev split: clustering and face weight
    nice -n 5 .venv/bin/python benchmarks/bench_recording.py --asr old,packed   # dev split: Whisper settings

Recordings: whole dialogues of the generated multimodal corpus (``benchmarks/make_mm_corpus.py``: MELD
dialogues re-voiced by espeak-ng, one voice per speaker, emotional prosody on most utterances), their clips' speech
concatenated with pauses drawn uniformly from 0.2–1 s; every third recording has overlapping speech (at up to two
changes of speaker the next turn starts 0.3–0.8 s before the previous one ends). Dialogues are kept when they have
2–5 speakers, each with a voice of their own, and no defective clip. Gold: speakers, text and times of the clips.
The recordings are video (mp4, 5 fps): the picture shows the drawn face of the clip of the latest turn to have
started, so the faces always show who speaks (a best case for the face path); a re-made video where some turns open
on the listener gives a robustness column.
Reported recordings come from the corpus's test split; ``--tune`` chooses the clustering threshold on its dev
split (never on the reported recordings).

Measures, each without and with the faces (the same pipeline run re-clustered): speaker count right; diarization
error rate (pyannote.metrics, collar 0 and 0.25 s, overlap scored); word error rate (jiwer, over the whole
recording, lower case, punctuation removed); emotion agreement (per gold utterance, the run's label for the derived
utterance overlapping it most against the run's label for the gold utterance, same run); speed (pipeline seconds
per recording second, and `merc predict` end to end on a 30-minute recording built by concatenation, with its peak
memory).
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
from dataclasses import asdict
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
FACE_WEIGHTS = [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]
NEW_FACES = [0.1, 0.15, 0.2, 0.25]  # a short region's face this far from every cluster's: a new speaker
FACE_THRESHOLDS = [0.1, 0.15, 0.2, 0.25, 0.3]  # the tree cut at a distance, with faces mixed in
LISTENER = 0.3  # robustness row: this share of turns opens on the listener's face
FPS = 5  # video frames per second of the built recordings (the corpus clips' rate)


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


def build(corpus: Path, utts: list[dict], k: int, seed: int, *, video: bool = True) -> tuple[Path, list]:
    """Recording k of the list: (path of the .mp4, gold turns). With ``video``, the picture shows the face of the
    clip of the latest turn to have started (the speaker; in a pause the last speaker, in an overlap the one who
    started talking), 5 fps, as in the corpus's clips; otherwise the mp4 holds audio alone."""
    from merc.media.decode import load_audio
    from merc.testing.recordings import Clip, concat_turns
    from merc.testing.synth import make_audio_only_clip, make_clip, write_wav
    rng = random.Random(seed * 1000 + k)
    clips = [Clip(u["speaker"], u["text"], load_audio(corpus / u["clip"]), u["emotion"], u["uid"]) for u in utts]
    overlaps = {}
    if k % 3 == 2:
        changes = [i for i in range(1, len(clips)) if clips[i].speaker != clips[i - 1].speaker]
        for i in rng.sample(changes, min(2, len(changes))):
            overlaps[i] = rng.uniform(0.3, 0.8)
    wav, gold = concat_turns(clips, rng=rng, overlaps=overlaps)
    name = f"dia{utts[0]['dia']}_{utts[0]['split']}" + ("" if video else "_audio")
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = write_wav(wav, WORK / f"{name}.wav")
    if video:
        path = make_clip(tmp, shots(corpus, utts, gold, len(wav) / 16000), WORK / f"{name}.mp4", fps=FPS,
                         size=(224, 224))
    else:
        path = make_audio_only_clip(tmp, WORK / f"{name}.mp4")
    tmp.unlink()
    return path, gold


def shots(corpus: Path, utts: list[dict], gold: list, seconds: float, listener: float = 0.0,
          rng: random.Random | None = None) -> list[np.ndarray]:
    """One picture per video frame: the first frame of the clip of the latest turn to have started by then. With
    ``listener`` > 0, that share of turns shows the previous speaker (the listener) for its first half."""
    from merc.media.decode import load_frames
    faces = [load_frames(corpus / u["clip"], fps=1.0, max_frames=1)[0].image for u in utts]
    starts = [g.start for g in gold]
    away = {i for i in range(1, len(gold)) if rng is not None and rng.random() < listener}
    out = []
    for f in range(max(1, int(round(seconds * FPS)))):
        t = f / FPS
        i = max(0, int(np.searchsorted(starts, t, side="right")) - 1)
        if i in away and t < (gold[i].start + gold[i].end) / 2:
            i -= 1
        out.append(faces[i])
    return out


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


def dev_runs(args) -> list[tuple]:
    """The dev recordings (video) through the pipeline once, with faces found in every embedded region. Embeddings
    are kept for regions from ``EMBED_FLOOR`` s so the grid can re-cluster at any ``min_embed`` above it."""
    from dataclasses import replace

    from merc.recording.pipeline import RecordingConfig, RecordingPipeline
    cfg = RecordingConfig()
    cfg.diarize = replace(cfg.diarize, min_embed=EMBED_FLOOR, face_weight=0.5)  # > 0: the face step runs
    pipe = RecordingPipeline(cfg)
    rows = []
    dias = dialogues(args.corpus, "dev")[:args.limit]
    for k, utts in enumerate(dias):
        path, gold = build(args.corpus, utts, k, args.seed)
        t = time.perf_counter()
        res = pipe(path)
        secs = time.perf_counter() - t - res.seconds["load"]
        print(f"[{k + 1}/{len(dias)}] {path.name}: {res.duration:.1f} s audio, {secs:.1f} s, faces in "
              f"{res.faces.with_face}/{res.faces.regions} regions", file=sys.stderr, flush=True)
        rows.append((path, gold, res, secs, k % 3 == 2))
    return rows


def refresh_faces(path: Path, res) -> None:
    """Find the faces of ``res``'s embedded regions again in ``path`` with the current :class:`FaceConfig`."""
    from merc.recording.faces import region_faces
    need = [v for v in res.voices if v.embedding is not None]
    t = time.perf_counter()
    found, res.faces = region_faces(path, [v.region for v in need], res_config().faces)
    res.seconds["faces"] = time.perf_counter() - t
    for v, f in zip(need, found):
        v.face = f


def tune(args) -> None:
    import pickle
    cache = WORK / f"dev_rows_{args.seed}_{args.limit}.pkl"  # the pipeline's output per dev recording
    if cache.exists():
        rows = pickle.loads(cache.read_bytes())
    else:
        rows = dev_runs(args)
        cache.write_bytes(pickle.dumps(rows))
    for path, _, res, _, _ in rows:  # faces found again with the current FaceConfig (and the step timed)
        refresh_faces(path, res)
    load = round(os.getloadavg()[0], 1)
    table = []
    base = {"method": "silhouette", "min_embed": 0.5, "cluster_min": 1.0, "refine": 5}  # the voices-only choice
    grid = [{"method": "threshold", "threshold": th} for th in THRESHOLDS] + \
        [{"method": "silhouette", "min_silhouette": m} for m in SILHOUETTES] + [{"method": "spectral"}] + \
        [{"method": "silhouette", "min_embed": me, "cluster_min": cm, "refine": rf}
         for me in MIN_EMBEDS for cm in CLUSTER_MINS for rf in REFINES] + \
        [{**base, "cluster_min": cm, "refine": rf, "face_weight": fw}
         for fw in FACE_WEIGHTS[1:] for cm in CLUSTER_MINS for rf in REFINES] + \
        [{**base, "face_weight": fw, "voice_changes_with_face": False} for fw in FACE_WEIGHTS[1:]] + \
        [{**base, "face_weight": fw, "new_face": nf} for fw in FACE_WEIGHTS[3:5] for nf in NEW_FACES] + \
        [{**base, "method": "threshold", "threshold": th, "cluster_min": cm, "face_weight": fw}
         for fw in FACE_WEIGHTS[3:] for cm in CLUSTER_MINS[:2] for th in FACE_THRESHOLDS]
    for kw in grid:
        kw = {"min_embed": 0.8, "cluster_min": 0.0, "refine": 0, "face_weight": 0.0, "voice_changes_with_face": True,
              "new_face": None, **kw}
        sc = [score(gold, rediarize(res, **kw)) for _, gold, res, _, _ in rows]
        table.append({**kw, "count_right": float(np.mean([s["speakers_found"] == s["speakers_gold"] for s in sc])),
                      "der": float(np.mean([s["der"] for s in sc])), "wer": float(np.mean([s["wer"] for s in sc]))})
        print(table[-1], file=sys.stderr)
    def rank(r: dict) -> tuple:
        return round(r["der"], 4), -r["count_right"]
    best = min(table, key=rank)
    voices = min([r for r in table if r["face_weight"] == 0], key=rank)
    same = ("method", "threshold", "min_silhouette", "min_embed", "cluster_min", "refine")  # face keys may vary
    chosen = min([r for r in table if all(r.get(k) == voices.get(k) for k in same)], key=rank)
    prov = {**provenance(), "load_average": load}
    audio = sum(res.duration for _, _, res, _, _ in rows)
    face_s = sum(res.seconds.get("faces", 0.0) for _, _, res, _, _ in rows)
    stats = [res.faces for _, _, res, _, _ in rows]

    def cell(r: dict) -> str:
        p = r.get("threshold", r.get("min_silhouette", "—"))
        return (f"| {r['method']} | {p} | {r['min_embed']} | {r.get('cluster_min', 0.0)} | {r.get('refine', 0)} | "
                f"{r['face_weight']} | {'yes' if r['voice_changes_with_face'] else 'no'} | {r['new_face'] or '—'} | "
                f"{100 * r['count_right']:.1f}% | {100 * r['der']:.1f}% | {r['wer']:.3f} |")

    def name(r: dict) -> str:
        return (f"{r['method']}, min_embed {r['min_embed']}, cluster_min {r['cluster_min']}, refine {r['refine']}, "
                f"face_weight {r['face_weight']}, voice_changes_with_face {r['voice_changes_with_face']}, "
                f"new_face {r['new_face']}")
    lines = ["# Recording pipeline: speaker clustering chosen on the dev split", "", provenance_markdown(prov), "",
             f"{len(rows)} dev recordings ({audio / 60:.1f} min of audio; video: the speaker's face on screen, 5 fps) "
             f"of {args.corpus}; never the test split. Load average at the end: {load} on 2 cores (a shared "
             "machine).", "",
             f"- Best with voices alone (face_weight 0): {name(voices)} (lowest mean DER, collar 0; then most "
             "recordings with the right speaker count).",
             f"- **Chosen: {name(chosen)}**: the best of the rows that differ from the voices-alone choice only in "
             "face_weight, so audio inputs (no faces) cluster exactly as before.",
             f"- Lowest DER of the whole grid: {name(best)} ({100 * best['der']:.1f}%; not taken: it changes how "
             "audio inputs are clustered too; compare its neighbouring rows before trusting a tree cut).",
             f"- Faces: found in {sum(st.with_face for st in stats)} of {sum(st.regions for st in stats)} embedded "
             f"regions ({sum(st.sampled for st in stats)} frames sampled, {sum(st.counted for st in stats)} with one "
             f"dominant face); the face step took {face_s:.1f} s for {audio:.0f} s of video "
             f"({face_s / audio:.3f} s per media second).", "",
             "The pipeline's output per recording (regions, embeddings, faces, words) is cached in "
             f"{cache.name} and re-clustered per row" + (f" (cache written at commit {args.cache_commit})"
                                                         if args.cache_commit else "") + ". WER is over "
             "the utterances built (words outside speech regions dropped). `parameter` is the threshold or the "
             "minimum silhouette of the method (— when it does not apply).", "",
             "| method | parameter | min_embed s | cluster_min s | refine | face_weight | voice changes in a region "
             "with a face | new_face | speaker count right | DER (collar 0) | WER |",
             "|---|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|"]
    lines += [cell(r) for r in table]
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "tune.md", "\n".join(lines) + "\n")
    write_json(OUT / "tune.json", {"provenance": prov, "table": table, "best": best, "best_voices": voices,
                                   "chosen": chosen,
                                   "face_seconds": face_s, "seconds_audio": audio})
    print("\n".join(lines))


OLD_ASR = {"cpu_threads": 2, "beam_size": 1, "batch_size": 1, "pack_gap": None, "timestamps": True}  # session 4
ASR_VARIANTS = {  # overrides of OLD_ASR
    "old": {}, "threads1": {"cpu_threads": 1}, "beam5": {"beam_size": 5}, "no_timestamps": {"timestamps": False},
    "packed": {"pack_gap": 0.3}, "packed_no_timestamps": {"pack_gap": 0.3, "timestamps": False},
    "packed_batched8": {"pack_gap": 0.3, "batch_size": 8},
    "packed_no_timestamps_threads1": {"pack_gap": 0.3, "timestamps": False, "cpu_threads": 1},
}


def wer_counts(ref: str, hyp: str) -> dict:
    import jiwer
    o = jiwer.process_words(ref, hyp)
    return {"s": o.substitutions, "d": o.deletions, "i": o.insertions, "n": len(ref.split())}


def speech_regions(wav: np.ndarray, vad) -> list:
    """Speech regions of a 16-kHz waveform: ``vad`` over blocks of 937 frames, merged by a RegionTracker."""
    from merc.recording.vad import FRAME, RegionTracker, VadConfig
    tracker = RegionTracker(VadConfig())
    regions = []
    block = 937 * FRAME
    for i in range(0, len(wav), block):
        regions += tracker.feed(vad(wav[i:i + block]))
    return regions + tracker.finish(len(wav) / 16000)


def asr_compare(args) -> None:
    """Whisper settings on the dev recordings: the speech regions found once per recording, then every variant
    transcribes them (VAD windows as the pipeline makes them), in a rotating order per recording (a shared machine:
    same-run, interleaved timings). Pooled WER over the words Whisper gave."""
    from dataclasses import replace

    from merc.media.decode import load_audio
    from merc.recording.asr import AsrConfig, Transcriber, windows
    from merc.recording.vad import SileroVad
    names = args.asr.split(",")
    unknown = [n for n in names if n not in ASR_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown --asr variant(s) {unknown}; known: {', '.join(ASR_VARIANTS)}")
    cfgs = {n: replace(AsrConfig(), **{**OLD_ASR, **ASR_VARIANTS[n]}) for n in names}
    models = {n: Transcriber(c) for n, c in cfgs.items()}
    vad = SileroVad()
    load0 = os.getloadavg()[0]
    rows, kept = [], []
    dias = dialogues(args.corpus, "dev")[:args.limit]
    for k, utts in enumerate(dias):
        path, gold = build(args.corpus, utts, k, args.seed, video=False)
        wav = load_audio(path)
        regions = speech_regions(wav, vad)
        ref = " ".join(norm_words(g.text) for g in gold)
        kept.append((wav, ref))
        row = {"recording": path.name, "seconds_audio": len(wav) / 16000}
        for n in names[k % len(names):] + names[:k % len(names)]:
            c = cfgs[n]
            groups = windows(regions, c.window, c.pack_gap, c.span)
            t = time.perf_counter()
            words = models[n].transcribe([(0.0, wav, g) for g in groups])
            row[n] = {"seconds": time.perf_counter() - t, "windows": len(groups),
                      **wer_counts(ref, norm_words("".join(w.text for w in words)))}
        rows.append(row)
        print(f"[{k + 1}/{len(dias)}] {path.name}: " + ", ".join(f"{n} {row[n]['seconds']:.1f} s" for n in names),
              file=sys.stderr, flush=True)
    long = asr_long(args, names, cfgs, models, vad, kept) if args.asr_long > 0 else None
    prov = {**provenance(), "load_average": round(os.getloadavg()[0], 1), "load_average_start": round(load0, 1)}
    audio = sum(r["seconds_audio"] for r in rows)
    lines = ["# Whisper settings for the recording pipeline, on the dev split", "", provenance_markdown(prov), "",
             f"{len(rows)} dev recordings ({audio / 60:.1f} min of audio) of `{args.corpus}`; never the test split. "
             "Speech regions found once (Silero VAD); each variant transcribes them as the pipeline does (windows "
             "of 30 s, a region that comes back empty or looping transcribed again alone), in a rotating order per "
             "recording. Whisper tiny.en, int8. Load average "
             f"{prov['load_average_start']} at the start, {prov['load_average']} at the end, on 2 shared cores: "
             "compare times within this table only.", "",
             f"Variants change these settings of session 4 (`old`): `{json.dumps(OLD_ASR)}`. `packed`: the regions "
             "of a window joined by 0.3 s of silence instead of their pauses (up to 30 s of speech per window, "
             "spanning at most 60 s); `no_timestamps`: Whisper writes no timestamp tokens (word times still come "
             "from its alignment); `batched8`: 8 windows per call (faster-whisper's BatchedInferencePipeline).", "",
             "| variant | settings | Whisper windows | ASR seconds | × real time (ASR) | pooled WER | S / D / I |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for n in names:
        sec = sum(r[n]["seconds"] for r in rows)
        err = sum(r[n]["s"] + r[n]["d"] + r[n]["i"] for r in rows) / sum(r[n]["n"] for r in rows)
        lines.append(f"| {n} | `{json.dumps(ASR_VARIANTS[n])}` | {sum(r[n]['windows'] for r in rows)} | {sec:.1f} | "
                     f"{audio / sec:.1f}× | {err:.3f} | {sum(r[n]['s'] for r in rows)} / "
                     f"{sum(r[n]['d'] for r in rows)} / {sum(r[n]['i'] for r in rows)} |")
    if long:
        lines += ["", f"## The dev recordings concatenated: {long['seconds_audio'] / 60:.1f} min", "",
                  "Most dev recordings fit one 30-s window whatever the setting, so speed is measured again on one "
                  "long recording: the dev recordings one after another (1 s apart, repeated to the length), cut in "
                  f"stretches of {LONG_STRETCH:.0f} s of the recording; every variant transcribes each stretch "
                  "(its own windows), in a rotating order per stretch.", "",
                  "| variant | Whisper windows | ASR seconds | × real time (ASR) | pooled WER |",
                  "|---|---:|---:|---:|---:|"]
        for n in names:
            r = long[n]
            lines.append(f"| {n} | {r['windows']} | {r['seconds']:.1f} | {long['seconds_audio'] / r['seconds']:.1f}× | "
                         f"{(r['s'] + r['d'] + r['i']) / r['n']:.3f} |")
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "asr.md", "\n".join(lines) + "\n")
    write_json(OUT / "asr.json", {"provenance": prov, "old": OLD_ASR, "variants": ASR_VARIANTS, "rows": rows,
                                  "long": long})
    print("\n".join(lines))


LONG_STRETCH = 120.0  # --asr-long: seconds of the recording per interleaved stretch


def asr_long(args, names, cfgs, models, vad, kept) -> dict:
    """--asr-long: the dev recordings concatenated to ``args.asr_long`` minutes; each variant times its windows
    stretch by stretch, rotating the order (see asr_compare)."""
    from merc.recording.asr import windows
    gap = np.zeros(16000, np.float32)
    parts, refs, total = [], [], 0.0
    while total < args.asr_long * 60:
        for wav, ref in kept:
            parts += [wav, gap]
            refs.append(ref)
            total += len(wav) / 16000 + 1.0
            if total >= args.asr_long * 60:
                break
    wav = np.concatenate(parts)
    regions = speech_regions(wav, vad)
    out = {"seconds_audio": len(wav) / 16000, **{n: {"seconds": 0.0, "windows": 0, "words": []} for n in names}}
    stretches: list[list] = []
    for r in regions:
        if stretches and r.start - stretches[-1][0].start < LONG_STRETCH:
            stretches[-1].append(r)
        else:
            stretches.append([r])
    for k, regs in enumerate(stretches):
        for n in names[k % len(names):] + names[:k % len(names)]:
            c = cfgs[n]
            groups = windows(regs, c.window, c.pack_gap, c.span)
            t = time.perf_counter()
            out[n]["words"] += models[n].transcribe([(0.0, wav, g) for g in groups])
            out[n]["seconds"] += time.perf_counter() - t
            out[n]["windows"] += len(groups)
        print(f"long: stretch {k + 1}/{len(stretches)}: " + ", ".join(f"{n} {out[n]['seconds']:.0f} s" for n in names),
              file=sys.stderr, flush=True)
    ref = " ".join(refs)
    for n in names:
        words = out[n].pop("words")
        out[n].update(wer_counts(ref, norm_words("".join(w.text for w in sorted(words, key=lambda w: w.start)))))
    return out


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # the child's CPU seconds
    return {"command": " ".join(cmd[1:]), "seconds": secs, "cpu_seconds": cpu, "peak_mb": after.ru_maxrss / 1024,
            "output": json.loads(proc.stdout)}


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
    ap.add_argument("--asr", default=None, metavar="V1,V2,…",
                    help=f"compare Whisper settings on the dev split ({', '.join(ASR_VARIANTS)})")
    ap.add_argument("--asr-long", type=float, default=0.0, metavar="MINUTES",
                    help="--asr: also time the variants on the dev recordings concatenated to this length")
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
    if args.asr:
        return asr_compare(args)
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
    for k, (path, gold, res, secs, overlap) in enumerate(rows):
        gl = labels_of(run, path, [{"speaker": g.speaker, "text": g.text, "start": g.start, "end": g.end}
                                   for g in gold])
        segs = {"faces": res.to_segments(), "voices": rediarize(res, face_weight=0.0),
                "listener": listener_segments(args, res, path, gold, k)}
        if rediarize(res) != segs["faces"]:
            raise SystemExit(f"{path.name}: re-clustering the pipeline's output does not give its transcript")
        row = {"recording": path.name, "seconds_audio": res.duration, "pipeline_seconds": secs, "overlap": overlap,
               "steps": res.seconds, "face_stats": asdict(res.faces) if res.faces else None}
        for name, sg in segs.items():
            agree, n = agreement(gold, gl, sg, labels_of(run, path, sg))
            row[name] = {**score(gold, sg), "agree": agree, "n": n}
        per.append(row)
        print(f"[{k + 1}/{len(rows)}] {path.name}: DER voices {row['voices']['der']:.3f} faces "
              f"{row['faces']['der']:.3f} listener {row['listener']['der']:.3f}", file=sys.stderr, flush=True)
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


def listener_segments(args, res, path: Path, gold, k: int) -> list[dict]:
    """The transcript when ``LISTENER`` of the turns open on the listener: the same recording's video re-made so,
    faces found again in the same regions, and re-clustered (speech, words and voices unchanged)."""
    from dataclasses import replace

    from merc.media.decode import load_audio
    from merc.recording.faces import region_faces
    from merc.testing.synth import make_clip, write_wav
    utts = next(u for u in dialogues(args.corpus, "test") if f"dia{u[0]['dia']}_test.mp4" == path.name)
    wav = load_audio(path)
    tmp = write_wav(wav, WORK / f"{path.stem}_listener.wav")
    frames = shots(args.corpus, utts, gold, len(wav) / 16000, LISTENER, random.Random(args.seed * 1000 + k + 7))
    alt = make_clip(tmp, frames, WORK / f"{path.stem}_listener.mp4", fps=FPS, size=(224, 224))
    tmp.unlink()
    need = [v for v in res.voices if v.embedding is not None]
    found, _ = region_faces(alt, [v.region for v in need], res_config().faces)
    swap = {id(v): f for v, f in zip(need, found)}
    voices = [replace(v, face=swap.get(id(v))) for v in res.voices]
    return rediarize(replace(res, voices=voices))


def res_config():
    from merc.recording.pipeline import RecordingConfig
    return RecordingConfig()


def report(per: list[dict], long: dict | None, prov: dict, args) -> str:
    n = len(per)
    audio = sum(p["seconds_audio"] for p in per)
    ov = [p for p in per if p["overlap"]]
    cols = (("voices", "voices only (`--no-faces`)"), ("faces", "voices + faces (default for video)"),
            ("listener", f"voices + faces, {100 * LISTENER:.0f}% of turns open on the listener"))

    def mean(key: str, name: str, rows=per) -> float:
        return float(np.mean([p[name][key] for p in rows]))

    def row(label: str, fn, target: str = "") -> str:
        return f"| {label} | " + " | ".join(fn(c) for c, _ in cols) + f" | {target} |"

    def count(c: str) -> str:
        k = sum(p[c]["speakers_found"] == p[c]["speakers_gold"] for p in per)
        return f"{100 * k / n:.1f}% ({k}/{n})"
    face_s = sum(p["steps"].get("faces", 0.0) for p in per)
    stats = [p["face_stats"] for p in per if p["face_stats"]]
    w = default_face_weight()
    lines = ["# Recording → emotion timeline without a transcript (`merc predict RUN talk.mp4`)", "",
             provenance_markdown(prov), "",
             f"{n} recordings ({audio / 60:.1f} min) built from the test split of `{args.corpus}` (dialogues with 2–5 "
             f"voices; pauses 0.2–1 s; {len(ov)} with overlapping speech), as video: the picture shows the face of "
             "the latest turn to have started (the corpus clip's drawn face, 5 fps, 224 px). Labels from the run "
             f"`{Path(args.run).name}`. Pipeline defaults: Silero VAD, Whisper tiny.en (bundled), resemblyzer "
             "embeddings of regions from 0.5 s, those of 1 s or more clustered (average linkage, speaker count by "
             "silhouette), shorter ones to the nearest centroid, 5 refine rounds; with video, dlib face descriptors "
             f"of up to {res_config().faces.max_frames} frame(s) per region mixed into the distances with face_weight "
             f"{w} (chosen with `--tune` on "
             "the dev split: `tune.md`). Each column is the same pipeline run re-clustered: without the faces, with "
             f"them, and with the faces found again in a re-made video where {100 * LISTENER:.0f}% of the turns "
             "show the previous speaker (the listener) for their first half — the faces here are a best case, "
             "since the shot always shows who speaks. Speeds are wall-clock on a machine shared with other jobs "
             f"(load average at the end: {prov.get('load_average', 'not recorded')} on 2 cores).", "",
             "| measure | " + " | ".join(c for _, c in cols) + " | target |", "|---|" + "---:|" * len(cols) + "---:|",
             row("right number of speakers", count, "≥ 90%"),
             row("DER, collar 0 (mean over recordings)", lambda c: f"{100 * mean('der', c):.1f}%", "≤ 10%"),
             row("DER, collar 0.25 s", lambda c: f"{100 * mean('der_collar', c):.1f}%"),
             row("WER (mean over recordings)", lambda c: f"{mean('wer', c):.3f}", "≤ 0.25"),
             row("emotion agreement (derived vs gold transcript, same run)",
                 lambda c: f"{100 * sum(p[c]['agree'] for p in per) / max(1, sum(p[c]['n'] for p in per)):.1f}%",
                 "≥ 80%")]
    if ov:
        lines.append(row(f"DER on the {len(ov)} recordings with overlap",
                         lambda c: f"{100 * mean('der', c, ov):.1f}%"))
    lines += ["", f"- pipeline speed, faces included (audio s / wall s, short recordings): "
              f"**{audio / sum(p['pipeline_seconds'] for p in per):.1f}×** real time (target ≥ 5×)",
              f"- the face step: {face_s:.1f} s for {audio:.0f} s of video = **{face_s / audio:.3f} s per media "
              f"second** ({audio / max(face_s, 1e-9):.0f}× real time); faces found in "
              f"{sum(s['with_face'] for s in stats)} of {sum(s['regions'] for s in stats)} embedded regions "
              f"({sum(s['sampled'] for s in stats)} frames sampled)",
              "- steps over all recordings (s): " + json.dumps({k: round(sum(p["steps"].get(k, 0.0) for p in per), 1)
                                                              for k in per[0]["steps"]})]
    if long:
        lines += ["", f"## {long['seconds_audio'] / 60:.1f}-minute recording, `merc predict` end to end (text run, "
                  "audio-only mp4)", "",
                  f"- command: `{long['command']}`",
                  f"- wall time {long['seconds']:.0f} s = **{long['x_real_time']:.1f}× real time**; "
                  f"peak memory (max RSS of the process) **{long['peak_mb']:.0f} MB**",
                  f"- CPU time of the process {long.get('cpu_seconds', float('nan')):.0f} s (user + system), "
                  f"{long['seconds_audio'] / max(long.get('cpu_seconds', 0.0), 1e-9):.1f} audio seconds per CPU "
                  "second: the wall time on 2 cores free of other jobs would lie between CPU / 2 and CPU "
                  "(not measured; the machine is shared)",
                  f"- {long['utterances']} utterances, {long['speakers']} speakers found; pipeline steps (s): "
                  f"{json.dumps((long.get('derived') or {}).get('seconds'))}"]
    lines += ["", "## Per recording", "",
              "| recording | audio s | overlap | speakers found/gold (voices, faces) | utterances found/gold | "
              "DER voices | DER faces | DER listener | WER | agreement (voices, faces) | × real time |",
              "|---|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in per:
        v, f, li = p["voices"], p["faces"], p["listener"]
        lines.append(f"| {p['recording']} | {p['seconds_audio']:.1f} | {'yes' if p['overlap'] else ''} | "
                     f"{v['speakers_found']}, {f['speakers_found']}/{f['speakers_gold']} | "
                     f"{f['utterances_found']}/{f['utterances_gold']} | {100 * v['der']:.1f}% | "
                     f"{100 * f['der']:.1f}% | "
                     f"{100 * li['der']:.1f}% | {f['wer']:.3f} | {v['agree']}, {f['agree']}/{f['n']} | "
                     f"{p['seconds_audio'] / p['pipeline_seconds']:.1f}× |")
    return "\n".join(lines) + "\n"


def default_face_weight() -> float:
    from merc.recording.diarize import DiarizeConfig
    return DiarizeConfig().face_weight


if __name__ == "__main__":
    main()
