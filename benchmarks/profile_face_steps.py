"""Where the default face pair's CPU time goes, step by step (issue #30): dlib HOG detection (the full scan and
the reduced scan on the full scan's own pyramid, ``min_face``), upscaling, 5-point landmarks, chip extraction, the
descriptor network (dlib's own, and the same network in PyTorch one chip at a time and batched) and the FER network,
on frames of the generated corpus.

Every step runs on the same frames with the models loaded beforehand; CPU seconds of this process (one thread).
The totals compare the pipeline before #30's face work (full scan, dlib's network) with today's default (reduced
scan, the torch network on a batch).

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
    ap.add_argument("--min-face", type=int, default=64, help="the reduced scan's min_face")
    ap.add_argument("--out", default=str(results_dir("extract_speed") / "face_profile"))
    args = ap.parse_args(argv)
    import dlib
    import numpy as np
    import torch

    from merc.data import load_corpus
    from merc.encoders.face import (
        FaceDetectorConfig,
        _upscale,
        get_face_detector,
        get_face_embedder,
        model_file,
        upscale_factor,
    )
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
    reduced = get_face_detector(FaceDetectorConfig(min_face=args.min_face))
    emb = get_face_embedder()
    pred = emb.predictor
    dnet = dlib.face_recognition_model_v1(model_file("dlib_face_recognition_resnet_model_v1.dat"))
    tnet = emb.net if emb.backend == "torch" else None
    fer = FerEncoder()
    _ = fer.net
    tnet([np.zeros((150, 150, 3), np.uint8)] * 2) if tnet is not None else None  # warm-up
    det.detect(frames[0]), reduced.detect(frames[0])  # warm-up: the detectors load their model on first use
    f = upscale_factor(frames[0].shape, det.config)
    t_det, dets = cpu(lambda: [det.detect(im) for im in frames])
    t_red, _ = cpu(lambda: [reduced.detect(im) for im in frames])
    pairs = [(im, max(d, key=lambda x: (x.box[2] - x.box[0]) * (x.box[3] - x.box[1])).box)
             for im, d in zip(frames, dets) if d]
    t_up, ups = cpu(lambda: [_upscale(im, f) for im, _ in pairs])
    rects = [dlib.rectangle(*(int(round(v * f)) for v in box)) for _, box in pairs]
    t_lm, shapes = cpu(lambda: [pred(im, r) for im, r in zip(ups, rects)])
    t_chip, chips = cpu(lambda: [dlib.get_face_chip(im, s, 150, 0.25) for im, s in zip(ups, shapes)])
    t_dlib, _ = cpu(lambda: [dnet.compute_face_descriptor(c) for c in chips])
    n = len(pairs)
    steps = [("dlib HOG detection, full scan (frame upscaled to 448 px, upsample 1)", t_det, len(frames)),
             (f"dlib HOG detection, reduced scan (min_face {args.min_face}: the full scan's pyramid from a coarser "
              "level)", t_red, len(frames)),
             ("frame upscale for the descriptor", t_up, n), ("5-point landmarks", t_lm, n),
             ("aligned 150-px chip", t_chip, n), ("descriptor network, dlib (no BLAS)", t_dlib, n)]
    if tnet is not None:
        t_one, _ = cpu(lambda: [tnet([c]) for c in chips])
        t_batch, _ = cpu(lambda: tnet(chips))
        steps += [("descriptor network, PyTorch, one chip at a time", t_one, n),
                  (f"descriptor network, PyTorch, one batch of {n}", t_batch, n)]
    t_fer, _ = cpu(lambda: fer._embed_faces(pairs))
    steps.append(("FER network (crops batched)", t_fer, n))
    total = sum(s[1] for s in steps)
    rows = [{"step": name, "cpu_seconds": round(t, 3), "ms_per_item": round(1000 * t / max(k, 1), 1),
             "share": round(t / total, 3)} for name, t, k in steps]
    per = {name: 1000 * t / max(k, 1) for name, t, k in steps}
    common = per["frame upscale for the descriptor"] + per["5-point landmarks"] + per["aligned 150-px chip"] + per[
        "FER network (crops batched)"]
    faces_per_frame = n / max(len(frames), 1)
    before = per[steps[0][0]] + faces_per_frame * (common + per["descriptor network, dlib (no BLAS)"])
    after = per[steps[1][0]] + faces_per_frame * (common + (per[steps[7][0]] if tnet is not None else
                                                            per["descriptor network, dlib (no BLAS)"]))
    totals = {"before_ms_per_frame": round(before, 1), "after_ms_per_frame": round(after, 1)}
    cmd = ".venv/bin/python benchmarks/" + Path(__file__).name + " " + shlex.join(sys.argv[1:])
    res = {"provenance": provenance(), "command": cmd, "frames": len(frames), "faces": n,
           "frame_shape": list(frames[0].shape), "load_average": [round(x, 2) for x in os.getloadavg()],
           "steps": rows, "totals": totals}
    write_json(Path(args.out).with_suffix(".json"), res)
    lines = ["# Face features (fer + dlib): CPU per step (issue #30)", "",
             f"- {len(frames)} frames at 1 fps of `{args.corpus}` ({args.split}, first {args.limit} dialogues), "
             f"{frames[0].shape[1]}x{frames[0].shape[0]}, {n} with a face",
             provenance_markdown(res["provenance"]), f"- reproduce: `{cmd}`",
             f"- CPU seconds of this process, one thread, models loaded beforehand; load average at the end "
             f"{res['load_average']} (2 shared cores)", "",
             "| step | CPU s | ms per frame / face |", "|---|---:|---:|"]
    lines += [f"| {r['step']} | {r['cpu_seconds']} | {r['ms_per_item']} |" for r in rows]
    lines += ["", f"Per sampled frame ({faces_per_frame:.2f} faces per frame; decoding not included): before #30's "
              f"face work (full scan, dlib's network one face at a time) {totals['before_ms_per_frame']} ms; "
              f"today's default (reduced scan, the PyTorch network on a batch) {totals['after_ms_per_frame']} ms."]
    atomic_write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
