"""`merc demo`: the main job on a fresh clone with no data at hand.

Loads the small dialogue model shipped in ``merc/assets/demo_run`` (a Mamba head over MiniLM sentence
embeddings, trained on MELD by ``scripts/build_demo_head.sh``), labels a few short example conversations
and writes an emotion timeline per conversation.
"""
from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path


def demo_paths() -> tuple[Path, Path]:
    root = Path(str(resources.files("merc") / "assets"))
    return root / "demo_run", root / "demo_conversations.jsonl"


def cmd_demo(args: argparse.Namespace) -> int:
    from merc.training.predict import predict_file
    from merc.training.run import from_pretrained
    t0 = time.time()
    run_dir, conversations = demo_paths()
    inp = Path(args.input) if args.input else conversations
    run = from_pretrained(run_dir)
    m = run.model.config
    print(f"merc demo — {m.kind} dialogue model ({sum(p.numel() for p in run.model.parameters()):,} parameters) "
          f"over {run.config.text_encoder} sentence embeddings, trained on {run.config.dataset.upper()}")
    print(f"labels: {', '.join(run.labels)}\nconversations: {inp}\n")
    predict_file(run_dir, inp, out_dir=args.out, run=run, progress=not args.quiet)
    print(f"\ndone in {time.time() - t0:.1f} s; timelines in {Path(args.out).resolve()}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="label example conversations with the bundled model")
    p.add_argument("--input", help="your own conversations (.jsonl or .txt) instead of the examples")
    p.add_argument("--out", default="merc-demo", help="folder for the timeline plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
