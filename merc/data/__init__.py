"""Corpora as plain data: readers for MELD (and its dyadic variant), IEMOCAP and the generic JSONL format,
and label sets.

``load_corpus(dataset, data_dir, media_dir=None, **options)`` is the one entry point the rest of merc uses.
"""
from __future__ import annotations

from pathlib import Path

from merc.data.schema import SPLITS, Conversation, Corpus, CorpusError, Utterance
from merc.errors import ConfigError

DATASETS = ("meld", "meld_dyadic", "iemocap", "jsonl")
MELD_DATASETS = ("meld", "meld_dyadic")  # media paths from ``media_dir``; option ``splits``

__all__ = ["DATASETS", "MELD_DATASETS", "SPLITS", "Conversation", "Corpus", "CorpusError", "Utterance", "load_corpus"]


class DatasetChoiceError(ConfigError):
    """A wrong dataset name or option; merc's CLI prints it as one line."""


def load_corpus(dataset: str, data_dir: str | Path, media_dir: str | Path | None = None, **options) -> Corpus:
    """Read a corpus by name.

    - ``meld``: ``read_meld(data_dir, media_dir, **options)`` (options: ``splits``);
    - ``meld_dyadic``: ``read_meld_dyadic(data_dir, media_dir, **options)`` (options: ``splits``): the
      ``{split}_sent_emo_dya.csv`` files; media paths name the original clips (Old_Dialogue_ID/Old_Utterance_ID);
    - ``iemocap``: ``read_iemocap(data_dir, **options)`` (options: ``classes``, ``dev_fraction``, ``seed``);
      media paths come from the IEMOCAP tree itself, so ``media_dir`` must be None;
    - ``jsonl``: ``read_jsonl(data_dir)``; media paths come from the files.
    """
    if dataset == "meld":
        from merc.data.meld import read_meld
        return read_meld(data_dir, media_dir, **options)
    if dataset == "meld_dyadic":
        from merc.data.meld import read_meld_dyadic
        return read_meld_dyadic(data_dir, media_dir, **options)
    if dataset not in DATASETS:
        raise DatasetChoiceError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
    if media_dir is not None:
        source = "the IEMOCAP tree" if dataset == "iemocap" else "the JSONL files"
        raise DatasetChoiceError(f"--media-dir applies to {' and '.join(MELD_DATASETS)} only; "
                                 f"{dataset} media paths come from {source}")
    if dataset == "iemocap":
        from merc.data.iemocap import read_iemocap
        return read_iemocap(data_dir, **options)
    from merc.data.jsonl import read_jsonl
    if options:
        raise DatasetChoiceError(f"jsonl takes no options, got {sorted(options)}")
    return read_jsonl(data_dir)
