"""Where the media pipeline's CPU time goes: each step of `merc qc` and of the default audio and face extraction
timed alone (CPU seconds of this process, one thread) on the same clips, as seconds per second of media.

Steps: decoding (audio at 16 kHz, frames at 1 fps), Silero VAD (integrity), Whisper tiny.en (encoder on its 30-s
window, one clip and batched; forced scoring; greedy transcription), resemblyzer, openSMILE eGeMAPS, HOG face
detection (full: upscaled + upsample 1; reduced: ``min_face=80``), the dlib ResNet descriptor and the FER network.
It answers what is left to speed up once every clip is decoded once (issue #30).

    .venv/bin/python benchmarks/profile_media.py --corpus ../data/mm_signal --split dev --limit 4
writes benchmarks/results/extract_speed/media_profile.md and .json.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import atomic_write_text, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "extract_speed"


def cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT.parent / "data" / "mm_signal"))
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=4, help="first N dialogues")
    ap.add_argument("--out", default=str(RESULTS / "media_profile"))
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from merc.data import load_corpus
    from merc.encoders.base import get_encoder
    from merc.encoders.face import FaceDetectorConfig, _upscale, get_face_detector, get_face_embedder, upscale_factor
    from merc.encoders.speaker import get_speaker_embedder
    from merc.io import provenance, provenance_markdown
    from merc.media.decode import load_audio, load_frames
    from merc.qc.cli import limit_corpus
    from merc.qc.integrity import IntegrityCheck
    from merc.qc.whisper_asr import WhisperScorer

    corpus = limit_corpus(load_corpus("meld", args.corpus, args.corpus), [args.split], args.limit)
    utts = []
    for u in corpus.utterances(args.split):
        try:
            load_audio(u.video), load_frames(u.video, fps=1.0, max_frames=30)
            utts.append(u)
        except Exception:  # noqa: BLE001 - the corpus has faulty clips on purpose; profile the good ones
            pass
    paths = [u.video for u in utts]
    wavs = [load_audio(p) for p in paths]
    frames = [f.image for p in paths for f in load_frames(p, fps=1.0, max_frames=30)]
    media_s = sum(len(w) for w in wavs) / 16000
    print(f"{len(utts)} clips, {media_s:.1f} s, {len(frames)} frames at 1 fps", flush=True)

    integ, scorer, spk = IntegrityCheck(), WhisperScorer(), get_speaker_embedder()
    smile = get_encoder("egemaps", "audio")
    full, reduced = get_face_detector(FaceDetectorConfig()), get_face_detector(FaceDetectorConfig(min_face=80))
    emb, fer = get_face_embedder(), get_encoder("fer", "face")
    # warm-ups (model loading is not profiled)
    integ.speech_fraction(wavs[0]), scorer.encode(wavs[0]), spk.embed(wavs[0]), smile._embed(wavs[0])
    full.detect(frames[0]), reduced.detect(frames[0])
    boxes = [(img, d[0].box) for img in frames if (d := full.detect(img))]
    emb.embed(boxes[0][0], [boxes[0][1]]), fer._embed_faces(boxes[:1])
    encs = [scorer.encode(w) for w in wavs]

    def descriptors():
        for img, box in boxes:
            f = upscale_factor(img.shape, full.config)
            emb.embed(_upscale(img, f), [tuple(v * f for v in box)])

    steps = [
        ("decode", "audio, 16 kHz", lambda: [load_audio(p) for p in paths]),
        ("decode", "frames, 1 fps", lambda: [load_frames(p, fps=1.0, max_frames=30) for p in paths]),
        ("qc integrity", "Silero VAD", lambda: [integ.speech_fraction(w) for w in wavs]),
        ("qc alignment", "Whisper encoder, one clip at a time (30-s window)", lambda: [scorer.encode(w) for w in wavs]),
        ("qc alignment", "Whisper encoder, batches of 8", lambda: [scorer.encode_many(wavs[i:i + 8])
                                                                   for i in range(0, len(wavs), 8)]),
        ("qc alignment", "Whisper forced scoring of the transcript",
         lambda: [scorer.mean_logprob(e, [u.text]) for e, u in zip(encs, utts)]),
        ("qc alignment", "Whisper greedy transcription (clips scoring < -1.5 only)",
         lambda: [scorer.transcribe(e) for e in encs]),
        ("qc speaker / audio", "resemblyzer", lambda: [spk.embed(w) for w in wavs]),
        ("audio", "egemaps", lambda: [smile._embed(w) for w in wavs]),
        ("qc faces / face", "HOG detection, full (upscale + upsample 1)", lambda: [full.detect(f) for f in frames]),
        ("qc faces / face", "HOG detection, reduced (min_face 80)", lambda: [reduced.detect(f) for f in frames]),
        ("qc faces / face", "dlib ResNet descriptor (one face per frame)", descriptors),
        ("face", "FER network (one face per frame, batched per clip)", lambda: fer._embed_faces(boxes)),
    ]
    rows = []
    for stage, step, fn in steps:
        secs = cpu(fn)
        rows.append({"stage": stage, "step": step, "cpu_seconds": round(secs, 3),
                     "cpu_per_media_second": round(secs / media_s, 4), "x_real_time": round(media_s / secs, 1)})
        print(rows[-1], flush=True)
    cmd = ".venv/bin/python benchmarks/" + Path(__file__).name + " " + shlex.join(sys.argv[1:])
    prov = provenance()
    res = {"provenance": prov, "command": cmd, "clips": len(utts), "media_seconds": round(media_s, 1),
           "frames": len(frames), "load_average": [round(x, 2) for x in os.getloadavg()], "steps": rows}
    write_json(Path(args.out).with_suffix(".json"), res)
    lines = ["# Where the media pipeline's CPU time goes (issue #30)", "",
             f"- {len(utts)} clips of `{args.corpus}` ({args.split}, first {args.limit} dialogues; faulty clips "
             f"left out), {media_s:.1f} s of media, {len(frames)} frames at 1 fps; 224x224 video, 16 kHz audio",
             provenance_markdown(prov), f"- reproduce: `{cmd}`",
             f"- CPU seconds of this process, torch on 1 thread, models loaded beforehand; load average at the end "
             f"{res['load_average']} (CPU time suffers less from the other jobs than wall time does)", "",
             "| stage | step | CPU s | CPU s per media s | × real time (1 core) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['step']} | {r['cpu_seconds']} | {r['cpu_per_media_second']} | "
                     f"{r['x_real_time']} |")
    atomic_write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
