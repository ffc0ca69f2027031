"""Where the default face pair's CPU time goes, step by step (issue #30): dlib HOG detection, upscaling, 5-point
landmarks, chip extraction and the ResNet descriptor (dlib), and the FER network, on frames of the generated corpus.

Every step runs on the same frames with the models loaded beforehand; CPU seconds of this process (one thread).
The question it answers: which of the steps could be made cheaper without changing the features (only steps that
are a small share are cheap to change exactly; the two large ones are single model passes over fixed inputs).

    nice -n 5 .venv/bin/python benchmarks/profile_face_steps.py --corpus ../data/mm_signal --limit 3
writes benchmarks/results/extract_speed/face_profile.md and .json.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import atomic_write_text, results_dir, write_json  # noqa: E402


def cpu(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "data" / "mm_signal"))
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=3, help="first N dialogues")
    ap.add_argument("--frames", type=int, default=40, help="at most this many frames (1 fps)")
    ap.add_argument("--out", default=str(results_dir("extract_speed") / "face_profile"))
    args = ap.parse_args(argv)
    import dlib
    import torch

    from merc.data import load_corpus
    from merc.encoders.face import FaceDetectorConfig, _upscale, get_face_detector, get_face_embedder, upscale_factor
    from merc.encoders.face_expr import FerEncoder
    from merc.io import provenance, provenance_markdown
    from merc.media.clip import open_clip
    from merc.qc.cli import limit_corpus
    torch.set_num_threads(1)
    corpus = limit_corpus(load_corpus("meld", args.corpus, args.corpus), [args.split], args.limit)
    frames = []
    for u in corpus.utterances(args.split):
        try:
            frames += [f.image for f in open_clip(u.video).frames(1.0, None, None, 30)]
        except Exception:  # noqa: BLE001 - a faulty clip of the corpus: left out
            continue
    frames = frames[: args.frames]
    det = get_face_detector(FaceDetectorConfig())
    pred, net = get_face_embedder().models
    fer = FerEncoder()
    _ = fer.net
    f = upscale_factor(frames[0].shape, det.config)
    t_det, dets = cpu(lambda: [det.detect(im) for im in frames])
    pairs = [(im, max(d, key=lambda x: (x.box[2] - x.box[0]) * (x.box[3] - x.box[1])).box)
             for im, d in zip(frames, dets) if d]
    t_up, ups = cpu(lambda: [_upscale(im, f) for im, _ in pairs])
    rects = [dlib.rectangle(*(int(round(v * f)) for v in box)) for _, box in pairs]
    t_lm, shapes = cpu(lambda: [pred(im, r) for im, r in zip(ups, rects)])
    t_chip, _ = cpu(lambda: [dlib.get_face_chip(im, s, 150, 0.25) for im, s in zip(ups, shapes)])
    t_desc, _ = cpu(lambda: [net.compute_face_descriptor(im, s, 0, 0.25) for im, s in zip(ups, shapes)])
    t_fer, _ = cpu(lambda: fer._embed_faces(pairs))
    n = len(pairs)
    steps = [("dlib HOG detection (frame upscaled to 448 px, upsample 1)", t_det, len(frames)),
             ("frame upscale for the descriptor", t_up, n), ("5-point landmarks", t_lm, n),
             ("aligned 150-px chip", t_chip, n), ("dlib ResNet descriptor (chip + network)", t_desc, n),
             ("FER network (crops batched)", t_fer, n)]
    total = sum(s[1] for s in steps)
    rows = [{"step": name, "cpu_seconds": round(t, 3), "ms_per_item": round(1000 * t / max(k, 1), 1),
             "share": round(t / total, 3)} for name, t, k in steps]
    cmd = ".venv/bin/python benchmarks/" + Path(__file__).name + " " + shlex.join(sys.argv[1:])
    res = {"provenance": provenance(), "command": cmd, "frames": len(frames), "faces": n,
           "frame_shape": list(frames[0].shape), "load_average": [round(x, 2) for x in os.getloadavg()],
           "steps": rows}
    write_json(Path(args.out).with_suffix(".json"), res)
    lines = ["# Face features (fer + dlib): CPU per step (issue #30)", "",
             f"- {len(frames)} frames at 1 fps of `{args.corpus}` ({args.split}, first {args.limit} dialogues), "
             f"{frames[0].shape[1]}x{frames[0].shape[0]}, {n} with a face",
             provenance_markdown(res["provenance"]), f"- reproduce: `{cmd}`",
             f"- CPU seconds of this process, one thread, models loaded beforehand; load average at the end "
             f"{res['load_average']} (2 shared cores)", "",
             "| step | CPU s | ms per frame / face | share |", "|---|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['cpu_seconds']} | {r['ms_per_item']} | {r['share']:.1%} |" for r in rows]
    atomic_write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
