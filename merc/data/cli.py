"""``merc data stats``: what a corpus holds, per split, and what the reader dropped or repaired."""
from __future__ import annotations

import argparse
import json
from typing import Any

from merc.data import DATASETS, MELD_DATASETS, SPLITS, load_corpus
from merc.errors import ConfigError


class SplitChoiceError(ConfigError):
    """A ``--split`` name the corpus does not have; merc's CLI prints it as one line."""


# helpers

def _table(rows: list[list[str]], right: int = 1) -> str:
    """Columns padded to width; columns from index ``right`` on are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i >= right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     .rstrip() for r in rows)


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable tables for ``Corpus.stats()``."""
    splits = stats["splits"]
    names = list(splits)
    out = [f"dataset: {stats['dataset']}    labels ({len(stats['labels'])}): {', '.join(stats['labels'])}", ""]
    rows = [["split", "conversations", "utterances", "speakers", "unlabelled"]]
    rows += [[s, *(str(splits[s][k]) for k in rows[0][1:])] for s in names]
    out += [_table(rows), ""]

    rows = [["label", *names]]
    for lab in stats["labels"]:
        cells = []
        for s in names:
            n, total = splits[s]["labels"][lab], splits[s]["utterances"] - splits[s]["unlabelled"]
            cells.append(f"{n} ({100 * n / total:.1f}%)" if total else "0")
        rows.append([lab, *cells])
    out += ["label distribution", _table(rows), ""]

    out.append("dropped")
    drops = [(s, reason, n) for s in names for reason, n in sorted(splits[s]["dropped"].items())]
    out += [_table([[f"  {s}", reason, str(n)] for s, reason, n in drops], right=2)] if drops else ["  none"]
    out.append("repaired")
    rep = sorted(stats["repaired"].items())
    out += [_table([[f"  {k}", str(v)] for k, v in rep])] if rep else ["  none"]
    return "\n".join(out)


def parse_splits(values: list[str] | None) -> list[str] | None:
    """``--split`` values (repeatable, each comma-separated) -> split names, duplicates dropped; None if absent."""
    if values is None:
        return None
    names = list(dict.fromkeys(n.strip() for v in values for n in v.split(",") if n.strip()))
    if not names:
        raise SplitChoiceError(f"--split {','.join(values)!r}: no split named; give e.g. --split {SPLITS[-1]}")
    return names


def check_splits(names: list[str], available: list[str], dataset: str) -> None:
    """Raise SplitChoiceError unless every name is one of ``available``."""
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SplitChoiceError(f"--split: unknown split(s) {unknown}; {dataset} has {available}")


def select_splits(stats: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """``Corpus.stats()`` restricted to the splits ``names`` (kept in corpus order); all of them for None."""
    if names is None:
        return stats
    check_splits(names, list(stats["splits"]), stats["dataset"])
    return {**stats, "splits": {s: v for s, v in stats["splits"].items() if s in names}}


def stats_command(args: argparse.Namespace) -> int:
    splits = parse_splits(args.split)
    options: dict[str, Any] = {}
    if args.dataset == "iemocap":
        options["classes"] = args.iemocap_classes
    if args.dataset in MELD_DATASETS and splits is not None:  # MELD: read only the files asked for
        check_splits(splits, list(SPLITS), args.dataset)
        options["splits"] = [s for s in SPLITS if s in splits]
    corpus = load_corpus(args.dataset, args.data_dir, args.media_dir, **options)
    stats = select_splits(corpus.stats(), splits)
    if args.media_dir or args.media:
        from merc.media.inventory import format_media, media_counts
        stats["media"] = media_counts(corpus, list(stats["splits"]), progress=not (args.json or args.quiet))
    text = format_stats(stats) + ("\n\n" + "\n".join(format_media(stats["media"])) if "media" in stats else "")
    print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else text)
    return 0


# parser

def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``merc data`` (sub-command ``stats``)."""
    data = subparsers.add_parser("data", help="inspect corpora", description="Inspect corpora.")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("stats", help="conversations, utterances, speakers, labels, drops and repairs per split")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="corpus format")
    p.add_argument("--data-dir", required=True, help="corpus folder (MELD CSVs, IEMOCAP root, or JSONL folder)")
    p.add_argument("--media-dir", default=None, help="meld / meld_dyadic only: folder with the raw clip folders; "
                   "the media of every utterance are then counted per split (present, missing, undecodable, "
                   "without an audio or video stream)")
    p.add_argument("--media", action="store_true", help="count the media as with --media-dir (jsonl and iemocap "
                   "name their media themselves)")
    p.add_argument("--split", action="append", default=None, metavar="NAME",
                   help="only these splits (repeatable or comma-separated, e.g. --split dev,test); all when omitted")
    p.add_argument("--iemocap-classes", type=int, choices=(4, 6), default=6, help="iemocap only: label set size")
    p.add_argument("--json", action="store_true", help="print Corpus.stats() as JSON")
    p.set_defaults(func=stats_command)
    return data
