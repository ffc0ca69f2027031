"""``merc qc``: check a corpus's media and labels, write flags, a report and a curated manifest.

    merc qc --dataset meld --data-dir MELD --media-dir MELD.Raw --out qc/
"""
from __future__ import annotations

import argparse
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from merc.data import DATASETS, MELD_DATASETS, load_corpus
from merc.data.schema import SPLITS, Corpus
from merc.device import add_device_argument
from merc.errors import ConfigError
from merc.qc.config import QCConfig
from merc.qc.pipeline import QCPipeline
from merc.qc.registry import BUILTIN_CHECKS, DEFAULT_CHECKS, resolve_factory
from merc.threads import add_threads_argument


class QCArgumentError(ConfigError):
    """A bad ``merc qc`` option; printed as one line."""


# helpers

def _csv_list(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise QCArgumentError(f"--{what} {value!r}: unknown {bad or 'empty list'}; choose from {','.join(allowed)}")
    return items


def limit_corpus(corpus: Corpus, splits: list[str] | None, limit: int | None) -> Corpus:
    """Keep only ``splits`` (in corpus order) and the first ``limit`` conversations of each."""
    out = {}
    for s, convs in corpus.splits.items():
        if splits is not None and s not in splits:
            continue
        out[s] = convs[:limit] if limit is not None else convs
    if not out:
        raise QCArgumentError(f"--split {','.join(splits or [])}: corpus {corpus.name!r} has splits "
                              f"{list(corpus.splits)}")
    return Corpus(name=corpus.name, splits=out, labels=corpus.labels, dropped=corpus.dropped,
                  repaired=corpus.repaired, root=corpus.root)


def _default_config(name: str) -> Any:
    """A check's default config object (built through the check itself; cheap, models load lazily)."""
    chk = resolve_factory(BUILTIN_CHECKS[name])()
    return getattr(chk, "config", None)


def _with(cfg: Any, **changes: Any) -> tuple[Any, list[str]]:
    """``dataclasses.replace`` with only the fields the config has; returns (config, applied names)."""
    if not is_dataclass(cfg):
        return cfg, []
    names = {f.name for f in fields(cfg)}
    applied = {k: v for k, v in changes.items() if k in names}
    return replace(cfg, **applied), sorted(applied)


def build_config(args: argparse.Namespace) -> QCConfig:
    checks = _csv_list(args.checks, DEFAULT_CHECKS, "checks")
    check_configs: dict[str, Any] = {}
    if args.asr and "alignment" in checks:
        cfg, applied = _with(_default_config("alignment"), asr=args.asr)
        if not applied:
            raise QCArgumentError(f"--asr {args.asr}: the alignment check's config has no ASR engine option")
        check_configs["alignment"] = cfg
    shift = getattr(args, "speaker_shift_max", None)
    if shift is not None:
        if shift < 0:
            raise QCArgumentError(f"--speaker-shift-max {shift}: give a number of nats >= 0 (0 turns it off)")
        if "alignment" not in checks:
            raise QCArgumentError("--speaker-shift-max sets the alignment check; add alignment to --checks")
        cfg, _ = _with(check_configs.get("alignment") or _default_config("alignment"), speaker_shift_max=shift)
        check_configs["alignment"] = cfg
    cascade = getattr(args, "asr_cascade", None)
    if cascade is not None:
        if "alignment" not in checks:
            raise QCArgumentError("--asr-cascade sets the alignment check; add alignment to --checks")
        cfg, _ = _with(check_configs.get("alignment") or _default_config("alignment"), cascade=cascade)
        check_configs["alignment"] = cfg
    if args.calibrate and "alignment" not in checks:
        raise QCArgumentError("--calibrate fits the alignment thresholds; add alignment to --checks")
    min_face = getattr(args, "min_face", None)
    if min_face is not None:
        if "faces" not in checks:
            raise QCArgumentError("--min-face sets the faces check; add faces to --checks")
        if 0 < min_face < 10 or min_face < 0:
            raise QCArgumentError(f"--min-face {min_face}: give a face size in pixels >= 10 (0: the full scan)")
        check_configs["faces"], _ = _with(_default_config("faces"), min_face=min_face or None)
    return QCConfig(checks=checks, check_configs=check_configs, workers=args.workers, fps=args.fps,
                    calibrate=["alignment"] if args.calibrate else [], calibrate_max=args.calibrate_max,
                    drop_not_measured=getattr(args, "drop_not_measured", False),
                    **({"corroborate": {}} if getattr(args, "no_corroborate", False) else {}))


# command

def qc_command(args: argparse.Namespace) -> int:
    splits = _csv_list(args.splits, SPLITS, "split") if args.splits else None
    if args.limit is not None and args.limit < 1:
        raise QCArgumentError(f"--limit must be >= 1, got {args.limit}")
    if args.workers < 1:
        raise QCArgumentError(f"--workers must be >= 1, got {args.workers}")
    if args.calibrate_max < 2:
        raise QCArgumentError(f"--calibrate-max must be >= 2, got {args.calibrate_max}")
    config = build_config(args)
    from merc.executors import executor_from_args
    with executor_from_args(args) as ex:  # measuring on its workers; judging and the report here, once
        options: dict[str, Any] = {"splits": splits} if args.dataset in MELD_DATASETS and splits else {}
        corpus = limit_corpus(load_corpus(args.dataset, args.data_dir, args.media_dir, **options), splits,
                              args.limit)
        out = Path(args.out).expanduser().resolve()
        if args.fresh:
            for name in config.checks:
                (out / "cache" / f"{name}.jsonl").unlink(missing_ok=True)
        result = QCPipeline(config, executor=ex).run(corpus, out, progress=not args.quiet, write=False)
    result.summary["options"] = {k: v for k, v in vars(args).items() if k != "func"}
    from merc.qc.report import write_outputs
    paths = write_outputs(result, out)
    print()
    print(result.table())
    print()
    for name, p in paths.items():
        print(f"{name:15s} {p}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``merc qc``."""
    p = subparsers.add_parser("qc", help="quality-check a corpus: media integrity, transcript alignment, "
                                         "speaker identity, faces; write flags, report and a curated manifest",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="corpus format")
    p.add_argument("--data-dir", required=True, help="the corpus folder (MELD csvs, IEMOCAP root, JSONL folder)")
    p.add_argument("--media-dir", default=None, help="MELD only: folder holding the clip folders")
    p.add_argument("--out", required=True, help="QC_DIR for flags.csv, summary.json, report.html, manifest, cache")
    p.add_argument("--workers", type=int, default=1, help="processes measuring in parallel (--executor local)")
    p.add_argument("--checks", default=",".join(DEFAULT_CHECKS), help="comma-separated, run in this order")
    from merc.qc.alignment import AlignmentConfig
    from merc.qc.faces import FaceCheckConfig
    p.add_argument("--fps", type=float, default=None,
                   help=f"frames per second sampled by the faces check [{FaceCheckConfig.fps}]")
    p.add_argument("--split", dest="splits", default=None, metavar="NAME",
                   help="only these splits, comma-separated (e.g. --split dev,test); all when omitted")
    p.add_argument("--splits", dest="splits", help=argparse.SUPPRESS)  # old spelling, kept as an alias
    p.add_argument("--limit", type=int, default=None, help="first N conversations per split (a quick look)")
    p.add_argument("--min-face", type=int, default=None, metavar="PX",
                   help="faces check: detect faces of at least PX pixels on the coarser levels of the detector's "
                        "image pyramid only (a third of the CPU, the same boxes to a pixel; a frame where none is "
                        f"found is scanned in full); 0: scan every level [{FaceCheckConfig.min_face}]")
    p.add_argument("--asr", choices=("auto", "pocketsphinx", "whisper", "faster-whisper"), default=None,
                   help="recogniser of the alignment check; auto: Whisper tiny.en when merc[asr] is installed, "
                        f"else pocketsphinx [{AlignmentConfig.asr}]")
    p.add_argument("--asr-cascade", action=argparse.BooleanOptionalAction, default=None,
                   help="Whisper: score each transcript first on a window fitted to the clip (about 10x cheaper); "
                        "only clips that do not clearly pass there get Whisper's 30-s window; --no-asr-cascade: "
                        "every clip gets the 30-s window "
                        f"[{'on' if AlignmentConfig.cascade else 'off'}]")
    p.add_argument("--calibrate", action="store_true",
                   help="fit the alignment rule and thresholds on this corpus (true vs deranged transcripts; "
                        "no labels needed) before judging; recorded in summary.json")
    p.add_argument("--speaker-shift-max", type=float, default=None, metavar="NATS",
                   help="Whisper alignment: lower the threshold for a speaker whose clips all score low by the gap "
                        f"of the speaker's median to the corpus median, at most NATS (0: off) "
                        f"[{AlignmentConfig.speaker_shift_max}]")
    p.add_argument("--calibrate-max", type=int, default=QCConfig.calibrate_max, metavar="N",
                   help="calibrate on at most N utterances")
    p.add_argument("--drop-not-measured", action="store_true",
                   help="also drop utterances a check could not measure (default: keep them, reported as "
                        "'not measured')")
    p.add_argument("--no-corroborate", action="store_true",
                   help="a weak speaker failure (a voice only slightly closer to another speaker) drops the "
                        "utterance even when the faces check found the labelled speaker's face alone on screen "
                        "(default: kept)")
    p.add_argument("--fresh", action="store_true", help="discard cached measurements of the chosen checks")
    from merc.executors import add_executor_flags
    add_executor_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(p)
    add_device_argument(p)
    p.set_defaults(func=qc_command)
    return p
