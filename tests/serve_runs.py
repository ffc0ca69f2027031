"""Tiny run directories for the `merc serve` tests: trained in seconds on the toy corpus with the hashed-words
text encoder (tests/toy_corpus.py), causal (`--causal`, the Mamba step mode) or bidirectional."""
from __future__ import annotations

from pathlib import Path

from toy_corpus import TINY, write_corpus

from merc.cli import main


def train_toy_run(root: Path, *, causal: bool, kind: str = "mamba") -> Path:
    corpus = write_corpus(root / "corpus", sizes=(("train", 24), ("dev", 6), ("test", 6)))
    run = root / ("causal" if causal else "bidirectional")
    # enough training that the bidirectional model uses what comes later (so a stream sees revised labels)
    args = ["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", kind, *TINY, "--epochs", "12",
            "--d-model", "16", "--out", str(run)]
    assert main(args + (["--causal"] if causal else [])) == 0
    return run


_RUNS: dict[tuple[str, bool], Path] = {}


def toy_run(tmp_path_factory, *, causal: bool, kind: str = "mamba") -> Path:
    """A toy run trained once per test process (the API, stream and page tests share it)."""
    key = (kind, causal)
    if key not in _RUNS:
        _RUNS[key] = train_toy_run(tmp_path_factory.mktemp(f"serve-{kind}-{'causal' if causal else 'bi'}"),
                                   causal=causal, kind=kind)
    return _RUNS[key]


def srt(utterances: list[tuple[str, str]], seconds: float = 1.0) -> str:
    """SRT subtitles 'Speaker: text', one per ``seconds``."""
    def t(s: float) -> str:
        return f"00:00:{int(s):02d},{int(round((s % 1) * 1000)):03d}"
    return "".join(f"{k + 1}\n{t(k * seconds)} --> {t((k + 1) * seconds - 0.1)}\n{sp}: {text}\n\n"
                   for k, (sp, text) in enumerate(utterances))
