"""``merc extract``: fill the feature store for every split of a corpus, exactly as ``merc train`` would, so a
later ``merc train`` (``evaluate``, ``adapt``, …) with the same corpus and encoders only reads.

    merc extract --dataset meld --data-dir MELD --media-dir MELD.Raw --modalities text,audio,face
    merc extract ... --executor ray --ray-address HEAD:6379

Both executors end in the one call ``merc train`` makes, :func:`merc.training.features.corpus_features`, on
the driver: it reads the store (:mod:`merc.encoders.store`), extracts whatever is still missing, and writes each
split's finished rows. With ``--executor local`` that call does all the work. With ``--executor ray`` the
missing utterances of every (split, modality, encoder) are cut into batches first and encoded by the cluster's
workers (:mod:`merc.executors`: an actor per worker CPU, each loading its encoders once); a worker writes its
batch into the store as a pending chunk the moment it finishes, so a run that dies part-way keeps every
finished batch, and the next run, on either executor, encodes only the rest. The store must therefore be on a
filesystem every worker sees at the same path (``MERC_CACHE``).

Rows are the same on both executors: each utterance's row is computed from that utterance alone (audio and
face encoders) or within a length-sorted batch (text, where the batch changes padding: equal within float
tolerance).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from merc.data.schema import Corpus
from merc.encoders.store import FeatureStore, store_key

log = logging.getLogger(__name__)
BATCHES_PER_WORKER = 4  # a split's missing utterances are cut into about this many batches per worker


def encoder_options(modality: str, qc_dir: str | None) -> dict[str, Any]:
    """The factory options ``merc train`` gives an encoder (:func:`merc.training.features.store_provider`)."""
    return {"speaker_tracks": qc_dir} if qc_dir and modality == "face" else {}


def build_encoder(name: str, modality: str, **options):
    from merc.encoders.base import get_encoder
    return get_encoder(name, modality, **options)


def encode_into_store(cache: dict, payload: dict[str, Any]) -> dict[str, Any]:
    """Worker side: encode one batch with the worker's encoder (built on first use, kept in ``cache``) and write
    it into the store as one pending chunk (atomic; a retried batch rewrites the same file)."""
    make: Callable[..., Any] = payload["make"]
    key = ("encoder", f"{make.__module__}.{make.__qualname__}", payload["encoder"], payload["modality"],
           tuple(sorted(payload["options"].items())))
    if key not in cache:
        cache[key] = make(payload["encoder"], payload["modality"], **payload["options"])
    enc = cache[key]
    t0 = time.perf_counter()
    res = enc.encode_batch(payload["inputs"], progress=False)
    seconds = time.perf_counter() - t0
    n = len(payload["ids"])
    X = np.ascontiguousarray(res.X, dtype=np.float32)  # (n, dim)
    if X.shape != (n, enc.dim) or not np.isfinite(X).all():
        raise RuntimeError(f"encoder {enc.name!r} returned {X.shape} (or non-finite values) for {n} utterances; "
                           f"expected ({n}, {enc.dim}) float32")
    store = FeatureStore(payload["root"])
    store._write_pending(store.folder(payload["corpus"], payload["split"], enc), payload["ids"], payload["keys"],
                         X, res.present, res.reasons, tag=payload["tag"])
    return {"n": n, "present": int(np.sum(res.present)), "seconds": seconds, "pid": os.getpid()}


def plan_batches(corpus: Corpus, splits: Sequence[str], encoders: Mapping[str, Sequence[str]], *,
                 store: FeatureStore, workers: int, qc_dir: str | None = None,
                 make: Callable[..., Any] = build_encoder) -> tuple[list[dict[str, Any]], int, int]:
    """The batches of utterances the store lacks, for every split and encoder: (payloads, missing, stored)."""
    run = uuid.uuid4().hex[:8]  # chunk names of this run: a retried batch overwrites its own file only
    payloads: list[dict[str, Any]] = []
    missing = stored = 0
    for split in splits:
        name = store_key(corpus, split)
        for m, names in encoders.items():
            for enc_name in names:
                options = encoder_options(m, qc_dir)
                enc = make(enc_name, m, **options)  # built lazily: no weights are loaded to plan
                plan = store.plan(name, split, corpus[split], enc)
                missing += len(plan.todo)
                stored += len(plan.ids) - len(plan.todo)
                if not plan.todo:
                    continue
                size = min(enc.chunk_size, max(1, math.ceil(len(plan.todo) / (BATCHES_PER_WORKER * workers))))
                for s in range(0, len(plan.todo), size):
                    idx = plan.todo[s:s + size]
                    payloads.append({"make": make, "encoder": enc_name, "modality": m, "options": options,
                                     "root": str(store.root), "corpus": name, "split": split,
                                     "ids": [plan.ids[i] for i in idx], "keys": [plan.keys[i] for i in idx],
                                     "inputs": [plan.inputs[i] for i in idx], "tag": f"{run}_{m}_{s:07d}"})
    return payloads, missing, stored


def fill_store(corpus: Corpus, splits: Sequence[str], encoders: Mapping[str, Sequence[str]], executor, *,
               qc_dir: str | None = None, store: FeatureStore | None = None, progress: bool = True,
               make: Callable[..., Any] = build_encoder) -> dict[str, Any]:
    """Encode on ``executor``'s workers every utterance the store lacks (module docstring); returns counts."""
    store = store or FeatureStore()
    payloads, missing, stored = plan_batches(corpus, splits, encoders, store=store, workers=executor.workers,
                                             qc_dir=qc_dir, make=make)
    t0 = time.perf_counter()
    seconds, encoded, pids = 0.0, 0, set()
    with tqdm(total=missing, unit="utt", desc=f"extract on {executor.name} ({executor.workers} workers)",
              disable=not progress or not missing) as bar:
        for _, out in executor.map_workers(encode_into_store, payloads):
            seconds += out["seconds"]
            encoded += out["n"]
            pids.add(out["pid"])
            bar.update(out["n"])
    return {"missing": missing, "stored": stored, "encoded": encoded, "batches": len(payloads),
            "encode_seconds": round(seconds, 3),
            "wall_seconds": round(time.perf_counter() - t0, 3), "worker_processes": len(pids),
            "worker_pids": sorted(pids)}


def prefill(corpus: Corpus, splits: Sequence[str], encoders: Mapping[str, Sequence[str]], executor, *,
            qc_dir: str | None = None, progress: bool = True, make: Callable[..., Any] = build_encoder
            ) -> dict[str, Any]:
    """:func:`fill_store` on an executor other than local, for the modalities the feature store provides (a
    provider of its own, e.g. precomputed features, is left to the driver); {} on the local executor."""
    from merc.training.features import FEATURE_PROVIDERS
    if executor is None or executor.name == "local":
        return {}
    stored = {m: list(names) for m, names in encoders.items()
              if getattr(FEATURE_PROVIDERS.get(m), "takes_encoders", False)}
    if qc_dir and "face" in stored:
        from merc.encoders.face_expr import load_speaker_tracks
        load_speaker_tracks(qc_dir)  # a clear error before the workers start
    return fill_store(corpus, splits, stored, executor, qc_dir=qc_dir, progress=progress, make=make) if stored else {}


def extract(corpus: Corpus, modalities: Sequence[str], encoders: Mapping[str, Sequence[str]], executor, *,
            dataset: str = "", data_dir: str = "", media_dir: str | None = None, qc_dir: str | None = None,
            progress: bool = True, make: Callable[..., Any] = build_encoder) -> dict[str, Any]:
    """Fill the store for every split of ``corpus`` (``executor``: :mod:`merc.executors`) and return
    ``{"splits", "report", "fingerprints", "workers", "seconds"}``; ``report[split][modality]`` is
    :func:`merc.training.features.presence_report` (absent utterances counted by reason)."""
    from merc.training.absence import check_media_named
    from merc.training.features import corpus_features, resolve_encoders
    encoders = resolve_encoders(list(modalities), encoders)
    splits = [s for s in ("train", "dev", "test") if corpus.splits.get(s)]
    check_media_named(corpus, modalities, dataset=dataset or corpus.name, data_dir=data_dir, media_dir=media_dir)
    t0 = time.perf_counter()
    workers = prefill(corpus, splits, encoders, executor, qc_dir=qc_dir, progress=progress, make=make)
    # the call merc train makes: reads the store, extracts anything still missing, writes the finished splits
    _, report, fingerprints = corpus_features(corpus, splits, list(encoders), encoders, media_dir=media_dir,
                                              progress=progress, qc_dir=qc_dir)
    return {"splits": splits, "encoders": encoders, "report": report, "fingerprints": fingerprints,
            "executor": executor.name, "workers": workers, "seconds": round(time.perf_counter() - t0, 3)}


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for split in result["splits"]:
        for m, rep in result["report"][split].items():
            line = f"{split:>5} {m:<5} {rep['present']:>6} of {rep['utterances']:>6} present"
            if rep["absent"]:
                line += f"; {rep['absent']} absent: " + ", ".join(f"{r} ({n})" for r, n in rep["reasons"].items())
            lines.append(line)
    w = result["workers"]
    if w:
        lines.append(f"ray: {w['missing']} utterance-encodings in {w['batches']} batches on "
                     f"{w['worker_processes']} worker process(es), {w['stored']} already stored")
    return lines


def cmd_extract(args: argparse.Namespace) -> int:
    import json

    from merc.data import load_corpus
    from merc.executors import executor_from_args
    from merc.training.flags import encoders_from_args, modalities_from_args
    modalities = modalities_from_args(args)
    encoders = encoders_from_args(args, modalities)
    data_dir = os.path.abspath(args.data_dir)
    qc_dir = os.path.abspath(args.qc_dir) if args.qc_dir else None
    with executor_from_args(args) as ex:  # first: a bad address or a missing package fails before reading
        corpus = load_corpus(args.dataset, data_dir, media_dir=args.media_dir)
        result = extract(corpus, modalities, encoders, ex, dataset=args.dataset, data_dir=data_dir,
                         media_dir=args.media_dir, qc_dir=qc_dir, progress=not args.quiet)
    if args.json:
        print(json.dumps(result, default=str))
        return 0
    from merc.encoders.store import store_root
    print("\n".join(summary_lines(result)))
    print(f"feature store: {store_root()} ({result['seconds']:.1f} s); `merc train` with the same corpus and "
          "encoders now reads these features")
    return 0


def add_parser(sub) -> None:
    from merc.data import DATASETS
    from merc.device import add_device_argument
    from merc.executors import add_executor_flags
    from merc.threads import add_threads_argument
    from merc.training.flags import add_encoder_flags
    p = sub.add_parser("extract", help="fill the feature store for every split (as `merc train` would), locally "
                       "or on a Ray cluster; counts absent utterances by reason",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, required=True, help="corpus format")
    p.add_argument("--data-dir", required=True, help="corpus folder")
    p.add_argument("--media-dir", default=None, help="folder of the corpus's audio/video (MELD raw clips, IEMOCAP "
                   "wav/avi); jsonl media paths are relative to --data-dir")
    p.add_argument("--qc-dir", default=None, help="folder written by `merc qc` for this corpus: face encoders use "
                   "its speaker_tracks.json, as `merc train --qc-dir` does (None: the largest face)")
    add_encoder_flags(p)
    add_executor_flags(p)
    p.add_argument("--json", action="store_true", help="print the extraction report as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(p)
    add_device_argument(p)
    p.set_defaults(func=cmd_extract)


__all__ = ["extract", "prefill", "fill_store", "plan_batches", "encode_into_store"]
