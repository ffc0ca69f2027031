"""Tiny run directories for the `merc serve` tests: trained in seconds on the toy corpus with the hashed-words
text encoder (tests/toy_corpus.py), causal (`--causal`, the Mamba step mode) or bidirectional."""
from __future__ import annotations

from pathlib import Path

from toy_corpus import TINY, write_corpus

from merc.cli import main


def train_toy_run(root: Path, *, causal: bool, kind: str = "mamba") -> Path:
    corpus = write_corpus(root / "corpus", sizes=(("train", 24), ("dev", 6), ("test", 6)))
    run = root / ("causal" if causal else "bidirectional")
    args = ["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", kind, *TINY, "--epochs", "2",
            "--out", str(run)]
    assert main(args + (["--causal"] if causal else [])) == 0
    return run
