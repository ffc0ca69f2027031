"""Corpora as plain data: readers for MELD, IEMOCAP and the generic JSONL format, and label sets.

``load_corpus(dataset, data_dir, media_dir=None, **options)`` is the one entry point the rest of merc uses.
"""
from __future__ import annotations

from pathlib import Path

from merc.data.schema import SPLITS, Conversation, Corpus, CorpusError, Utterance

DATASETS = ("meld", "iemocap", "jsonl")

__all__ = ["DATASETS", "SPLITS", "Conversation", "Corpus", "CorpusError", "Utterance", "load_corpus"]


class DatasetChoiceError(ValueError):
    """A wrong dataset name or option; merc's CLI prints it as one line."""
    user_error = True


def load_corpus(dataset: str, data_dir: str | Path, media_dir: str | Path | None = None, **options) -> Corpus:
    """Read a corpus by name.

    - ``meld``: ``read_meld(data_dir, media_dir, **options)`` (options: ``splits``);
    - ``iemocap``: ``read_iemocap(data_dir, **options)`` (options: ``classes``, ``dev_fraction``, ``seed``);
      media paths come from the IEMOCAP tree itself, so ``media_dir`` must be None;
    - ``jsonl``: ``read_jsonl(data_dir)``; media paths come from the files.
    """
    if dataset == "meld":
        from merc.data.meld import read_meld
        return read_meld(data_dir, media_dir, **options)
    if dataset not in DATASETS:
        raise DatasetChoiceError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    if media_dir is not None:
        raise DatasetChoiceError(f"--media-dir applies to meld only; {dataset} media paths come from "
                                 f"{'the IEMOCAP tree' if dataset == 'iemocap' else 'the JSONL files'}")
    if dataset == "iemocap":
        from merc.data.iemocap import read_iemocap
        return read_iemocap(data_dir, **options)
    from merc.data.jsonl import read_jsonl
    if options:
        raise DatasetChoiceError(f"jsonl takes no options, got {sorted(options)}")
    return read_jsonl(data_dir)
