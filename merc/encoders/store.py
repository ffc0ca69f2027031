"""The feature store: stage-1 features of every modality, extracted once, resumably, and reused.

Keyed by (corpus, split, modality, encoder fingerprint) — one folder each — and inside it per
utterance by *content*: ``encoder.content_key(x)`` of each of the encoder's ``inputs``: the hash of the
string a text encoder renders (template and dialogue context applied), or the media digest + segment
(audio, faces; digest = size, mtime and sha256 of the first and last MB, see
:func:`merc.encoders.base.media_digest`) plus, for faces, the QC speaker track. So

- a changed clip (or transcript, or track) is re-extracted, every unchanged utterance is reused;
- an utterance the encoder could not use (missing/corrupt clip, no audio stream, no face, empty text) is
  stored as *absent* with its reason: reruns do not retry it forever, but a missing file that appears (or a
  corrupt one that is replaced) has a new key and is retried.

Layout under ``root`` (default ``<cache_root()>/store``)::

    <corpus>/<split>/<modality>/<encoder>-<hash of fingerprint>/
        pending/chunk_00003.npz   while extracting: one atomic file per finished chunk
        rows.safetensors          when complete: "X" (n, dim) float32, "present" (n,) uint8
        index.json                written last: ids, content keys, reasons, encoder, fingerprint, summary

Inputs are extracted in corpus order, ``encoder.chunk_size`` at a time (text: 512, each chunk sorted by length
into batches), and each utterance keeps the row computed for it. An interrupted run keeps its finished chunks;
the next run extracts only what is still missing. Every file is written through
:func:`merc.io.atomic_write_bytes` (temporary file, fsync, rename).

The one call the training plumbing needs is :func:`extract_split` (one encoder) or
:func:`extract_modality` (several encoders of a modality, concatenated); both return
:class:`merc.encoders.features.Features`.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
from tqdm.auto import tqdm

from merc.data.schema import Corpus
from merc.encoders.base import Encoder, cache_root
from merc.encoders.features import Features, concat
from merc.errors import an
from merc.io import atomic_write_bytes, write_json

log = logging.getLogger(__name__)
ROWS_FILE = "rows.safetensors"
INDEX_FILE = "index.json"
PENDING = "pending"
JOINT_CHUNK = 32  # inputs per chunk when several encoders extract together (their decoded clips stay in memory)

# helpers


def store_root(root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else cache_root() / "store"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-48:] or "encoder"


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# chunks: the resumable unit of the store's pending extraction and of merc.encoders.layer_cache


def chunk_path(folder: Path, k: int, suffix: str = ".npz") -> Path:
    """The ``k``-th chunk file of ``folder``: ``chunk_00003.npz``."""
    return folder / f"chunk_{k:05d}{suffix}"


def write_chunk(path: Path, data: bytes) -> None:
    """A finished chunk, written atomically (:func:`merc.io.atomic_write_bytes`): a kill leaves it whole or absent."""
    atomic_write_bytes(path, data)


T = TypeVar("T")


def read_chunk(path: Path, load: Callable[[Path], T]) -> T | None:
    """``load(path)`` of a finished chunk; None when it is absent. A chunk ``load`` cannot read or rejects (torn
    by a crash, another shape or dtype: it raises) is logged and deleted, and None returned, so its inputs are
    computed again."""
    if not path.is_file():
        return None
    try:
        return load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable chunk is recomputed, never trusted
        log.warning("corrupt or stale chunk %s (%s): computing its inputs again", path, e)
        path.unlink(missing_ok=True)
        return None


# classes


def store_key(corpus: Corpus, split: str) -> str:
    """The store folder name of ``corpus``/``split``: the reader's corpus name plus a short hash of its
    utterance ids and media paths, so two corpora read with the same reader from different places (say a
    generated corpus and its control) get their own folders instead of overwriting each other's index."""
    h = hashlib.sha256()
    for u in corpus.utterances(split):
        h.update(f"{u.utterance_id}\0{u.audio or ''}\0{u.video or ''}\n".encode())
    return f"{corpus.name}-{h.hexdigest()[:10]}"


Row = tuple[np.ndarray, bool, "str | None"]  # (x (dim,), present, reason)


@dataclass
class FeatureStore:
    """Folder of stage-1 features (see the module docstring)."""
    root: Path | None = None
    chunk_size: int | None = None  # inputs per pending chunk; None: the encoder's own ``chunk_size``
    retry_absent: bool = False  # re-try stored absent rows whose key is unchanged

    def __post_init__(self) -> None:
        self.root = store_root(self.root)
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")

    def folder(self, corpus_name: str, split: str, encoder: Encoder) -> Path:
        fp = hashlib.sha256(f"{encoder.fingerprint}\0{encoder.dim}".encode()).hexdigest()[:12]
        return self.root / _safe(corpus_name) / _safe(split) / encoder.modality / f"{_safe(encoder.name)}-{fp}"

    # reading

    def _load_final(self, folder: Path, dim: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray] | None:
        idx_p, rows_p = folder / INDEX_FILE, folder / ROWS_FILE
        if not idx_p.is_file():
            return None
        try:
            from safetensors.numpy import load_file
            index = json.loads(idx_p.read_text())
            t = load_file(str(rows_p))
            X, present = t["X"], t["present"].astype(bool)
            n = len(index["keys"])
            if X.shape != (n, dim) or X.dtype != np.float32 or present.shape != (n,) or not np.isfinite(X).all():
                raise ValueError(f"rows {X.shape} {X.dtype} do not match {n} keys x {dim}")
        except Exception as e:
            log.warning("feature store %s is unreadable or stale (%s): rebuilding it", folder, e)
            idx_p.unlink(missing_ok=True)
            rows_p.unlink(missing_ok=True)
            return None
        return index, X, present

    def _load_pending(self, folder: Path, dim: int) -> dict[tuple[str | None, str], Row]:
        """(utterance id, key) -> row of every pending chunk (id None in chunks seeded without ids)."""
        rows: dict[tuple[str | None, str], Row] = {}

        def load(p: Path) -> tuple[list, list, np.ndarray, np.ndarray, list]:
            with np.load(p, allow_pickle=False) as z:
                keys, X, present = json.loads(str(z["keys"])), z["X"], z["present"].astype(bool)
                reasons = json.loads(str(z["reasons"]))
                ids = json.loads(str(z["ids"])) if "ids" in z.files else [None] * len(keys)
            if X.shape != (len(keys), dim) or X.dtype != np.float32 or not len(reasons) == len(ids) == len(keys):
                raise ValueError(f"shape {X.shape} for {len(keys)} keys, expected dim {dim}")
            return ids, keys, X, present, reasons

        for p in sorted((folder / PENDING).glob("chunk_*.npz")):
            chunk = read_chunk(p, load)
            if chunk is None:
                continue
            for u, k, x, ok, r in zip(*chunk):
                rows[(u, k)] = (x, bool(ok), r)
        return rows

    def _write_pending(self, folder: Path, ids: list[str | None], keys: list[str], X: np.ndarray,
                       present: Sequence[bool], reasons: Sequence[str | None], *, tag: str | None = None) -> None:
        """One pending chunk, atomically: ``chunk_<n>.npz`` (the next free number), or ``chunk_<tag>.npz`` for a
        writer that runs beside others (a Ray worker: the tag is unique, two writers never pick one name)."""
        pending = folder / PENDING
        n = 0
        while tag is None and chunk_path(pending, n).exists():
            n += 1
        write_chunk(pending / f"chunk_{tag}.npz" if tag else chunk_path(pending, n),
                    _npz_bytes(ids=np.array(json.dumps(ids)), keys=np.array(json.dumps(keys)), X=X,
                               present=np.asarray(present, np.uint8), reasons=np.array(json.dumps(reasons))))

    # the entry points

    def get(self, corpus: Corpus, split: str, encoder: Encoder, *, progress: bool = True) -> Features:
        """Features of ``corpus.utterances(split)`` by ``encoder``: from the store, extracting what is missing."""
        return self.get_conversations(store_key(corpus, split), split, corpus[split], encoder, progress=progress)

    def get_conversations(self, corpus_name: str, split: str, conversations: Sequence[Sequence], encoder: Encoder,
                          *, progress: bool = True) -> Features:
        """Like :meth:`get` for explicit conversations (prediction on new media, unimodal items: one each)."""
        return self.get_many(corpus_name, split, conversations, [encoder], progress=progress)[0]

    def get_many(self, corpus_name: str, split: str, conversations: Sequence[Sequence], encoders: Sequence[Encoder],
                 *, progress: bool = True) -> list[Features]:
        """:meth:`get_conversations` of several encoders (one modality) at once: what they still miss is extracted
        chunk by chunk, every encoder on the same chunk inside one :class:`merc.media.clip.ClipCache`, so each clip
        is decoded once for all of them (and their face detections are shared); a thread decodes the chunk's
        clips ahead of the models. Each encoder keeps its own folder, pending chunks and index (format unchanged)."""
        conversations = [list(c) for c in conversations]
        ids = [u.utterance_id for c in conversations for u in c]
        if len(set(ids)) != len(ids):
            dup = next(i for i, c in Counter(ids).items() if c > 1)
            raise ValueError(f"{corpus_name}/{split} has duplicate utterance id {dup!r}; fix the reader first")
        plans = [self._plan(corpus_name, split, conversations, ids, enc) for enc in encoders]
        busy = [p for p in plans if p.todo]
        if busy:
            self._extract(corpus_name, split, busy, progress)
        return [p.features if p.features is not None else self._finish(p, corpus_name, split) for p in plans]

    def plan(self, corpus_name: str, split: str, conversations: Sequence[Sequence], encoder: Encoder) -> "_Plan":
        """What :meth:`get_conversations` would extract with ``encoder``: the inputs, their content keys, and the
        indices not in the store yet (``todo``); ``features`` is set when nothing is missing. Reads only."""
        conversations = [list(c) for c in conversations]
        return self._plan(corpus_name, split, conversations, [u.utterance_id for c in conversations for u in c],
                          encoder)

    def _plan(self, corpus_name: str, split: str, conversations: list[list], ids: list[str],
              encoder: Encoder) -> "_Plan":
        inputs = encoder.inputs(conversations)
        if len(inputs) != len(ids):
            raise RuntimeError(f"encoder {encoder.name!r} gave {len(inputs)} inputs for {len(ids)} utterances")
        dim = encoder.dim
        folder = self.folder(corpus_name, split, encoder)
        keys = [encoder.content_key(x) for x in inputs]
        final = self._load_final(folder, dim)
        if final is not None and final[0]["keys"] == keys and final[0]["ids"] == ids and (
                not self.retry_absent or final[2].all()):
            index, X, present = final
            return _Plan(encoder, folder, ids, inputs, keys, {}, {}, [],
                         Features(ids, X, present, index["reasons"], {**_meta(index), "cache_hit": True}))
        own: dict[tuple[str | None, str], Row] = {}  # (utterance id, key) -> the row computed for it
        if final is not None:  # an older state of this split: reuse the rows whose content is unchanged
            index, X, present = final
            own.update(((u, k), (x, bool(p), r))
                       for u, k, x, p, r in zip(index["ids"], index["keys"], X, present, index["reasons"]))
        own.update(self._load_pending(folder, dim))
        if self.retry_absent:
            own = {k: v for k, v in own.items() if v[1]}
        known = {k: v for (_, k), v in own.items()}  # key -> a row of that content
        todo = [i for i, k in enumerate(keys) if k not in known]
        return _Plan(encoder, folder, ids, inputs, keys, own, known, todo, None)

    def _extract(self, corpus_name: str, split: str, plans: list["_Plan"], progress: bool) -> None:
        from merc.media.clip import ClipCache, Prefetcher
        corpus_shown = re.sub(r"-[0-9a-f]{10}$", "", corpus_name)  # the corpus, not store_key's hash
        size = self.chunk_size or min(p.encoder.chunk_size for p in plans)
        if len(plans) > 1:
            size = min(size, JOINT_CHUNK)  # every clip of a chunk stays decoded until its encoders are done
        union = sorted(set().union(*(p.todo for p in plans)))
        bars = [tqdm(total=len(p.todo), unit="utt", disable=not progress,
                     desc=f"{corpus_shown}/{split} {p.encoder.modality}:{p.encoder.name}") for p in plans]
        todo = [set(p.todo) for p in plans]
        try:
            for s in range(0, len(union), size):
                chunk = union[s:s + size]
                with ClipCache(max_clips=2 * len(chunk)) as cache:
                    jobs = [job for i in chunk for p, t in zip(plans, todo) if i in t
                            for job in getattr(p.encoder, "decode_jobs", lambda _u: [])(p.inputs[i])]
                    fetch = Prefetcher(cache, jobs, ahead=len(jobs)).start() if jobs else None
                    try:
                        for p, t, bar in zip(plans, todo, bars):
                            batch = [i for i in chunk if i in t]
                            if batch:
                                self._encode_chunk(p, batch)
                                bar.update(len(batch))
                    finally:
                        if fetch is not None:
                            fetch.stop()
        finally:
            for bar in bars:
                bar.close()

    def _encode_chunk(self, p: "_Plan", batch: list[int]) -> None:
        encoder, dim = p.encoder, p.encoder.dim
        t0 = time.perf_counter()
        res = encoder.encode_batch([p.inputs[i] for i in batch], progress=False)
        p.seconds += time.perf_counter() - t0
        X = np.ascontiguousarray(res.X, dtype=np.float32)
        if X.shape != (len(batch), dim) or not np.isfinite(X).all():
            raise RuntimeError(f"encoder {encoder.name!r} returned {X.shape} (or non-finite values) for "
                               f"{len(batch)} utterances; expected ({len(batch)}, {dim}) float32")
        bids, bkeys = [p.ids[i] for i in batch], [p.keys[i] for i in batch]
        self._write_pending(p.folder, bids, bkeys, X, res.present, res.reasons)
        for u, k, x, ok, r in zip(bids, bkeys, X, res.present, res.reasons):
            p.own[(u, k)] = p.known[k] = (x, bool(ok), r)

    def _finish(self, p: "_Plan", corpus_name: str, split: str) -> Features:
        encoder, dim, ids, keys = p.encoder, p.encoder.dim, p.ids, p.keys
        X = np.zeros((len(ids), dim), np.float32)
        present = np.zeros(len(ids), bool)
        reasons: list[str | None] = []
        for i, (u, k) in enumerate(zip(ids, keys)):
            x, ok, r = p.own.get((u, k)) or p.known[k]
            X[i], present[i] = x, ok
            reasons.append(None if ok else (r or "absent"))
        feats = Features(ids, X, present, reasons)
        meta = {"corpus": corpus_name, "split": split, "modality": encoder.modality, "encoder": encoder.name,
                "fingerprint": encoder.fingerprint, "dim": dim, "n": len(ids),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(p.seconds, 3), "extracted": len(p.todo), "reused": len(ids) - len(p.todo),
                "summary": feats.summary()}
        from safetensors.numpy import save as st_save
        folder = p.folder
        atomic_write_bytes(folder / ROWS_FILE, st_save({"X": X, "present": present.astype(np.uint8)},
                                                       metadata={"encoder": encoder.name}))
        write_json(folder / INDEX_FILE, {**meta, "ids": ids, "keys": keys, "reasons": reasons})  # marks completion
        shutil.rmtree(folder / PENDING, ignore_errors=True)
        feats.meta = {**meta, "cache_hit": False}
        if feats.summary()["absent"]:
            log.debug("%s/%s %s: %d of %d utterances absent (%s)", corpus_name, split, encoder.name,
                     feats.summary()["absent"], len(ids), feats.summary()["reasons"])
        return feats


@dataclass
class _Plan:
    """One encoder's part of :meth:`FeatureStore.get_many`: what it has, what it still needs."""
    encoder: Encoder
    folder: Path
    ids: list[str]
    inputs: list
    keys: list[str]
    own: dict
    known: dict
    todo: list[int]
    features: Features | None  # the whole split was in the store already
    seconds: float = 0.0


def seed_rows(store: FeatureStore, corpus_name: str, split: str, utts: Sequence, encoder: Encoder,
              rows: dict[str, Row]) -> int:
    """Put rows computed elsewhere (utterance id -> (x (dim,), present, reason)), e.g. by ``merc qc``, into
    the store as if ``encoder`` had extracted them; the next :meth:`FeatureStore.get` reuses them. Rows whose
    content key the store already holds are skipped. Returns how many were written."""
    folder = store.folder(corpus_name, split, encoder)
    final = store._load_final(folder, encoder.dim)
    have = set(final[0]["keys"]) if final is not None else set()
    have |= {k for _, k in store._load_pending(folder, encoder.dim)}
    ids, keys, X, present, reasons = [], [], [], [], []
    for u in utts:
        if u.utterance_id not in rows:
            continue
        k = encoder.content_key(u)
        if k in have:
            continue
        x, ok, r = rows[u.utterance_id]
        x = np.asarray(x, np.float32).reshape(-1)
        if x.shape != (encoder.dim,) or not np.isfinite(x).all():
            raise ValueError(f"seeded row for {u.utterance_id} has shape {x.shape}, expected ({encoder.dim},)")
        have.add(k)
        ids.append(u.utterance_id)
        keys.append(k)
        X.append(x if ok else np.zeros(encoder.dim, np.float32))
        present.append(bool(ok))
        reasons.append(None if ok else (r or "absent"))
    if keys:
        store._write_pending(folder, ids, keys, np.stack(X), present, reasons)
    return len(keys)


def _meta(index: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in index.items() if k not in ("ids", "keys", "reasons")}


def extract_split(corpus: Corpus, split: str, encoder: Encoder | str, *, modality: str | None = None,
                  store: FeatureStore | None = None, progress: bool = True, **encoder_options) -> Features:
    """Features of ``corpus``/``split`` by one encoder (an instance or a registered name), via the store."""
    if isinstance(encoder, str):
        from merc.encoders.base import get_encoder
        encoder = get_encoder(encoder, modality, **encoder_options)
    return (store or FeatureStore()).get(corpus, split, encoder, progress=progress)


def extract_modality(corpus: Corpus, split: str, modality: str, encoders: Sequence[Encoder | str], *,
                     store: FeatureStore | None = None, progress: bool = True,
                     encoder_options: dict[str, dict[str, Any]] | None = None) -> Features:
    """All ``encoders`` of ``modality`` on ``corpus``/``split``, concatenated in the given order
    (:func:`merc.encoders.features.concat`: present only where every encoder has the utterance).
    ``encoder_options``: per encoder name, keyword arguments of its factory (e.g. ``{"fer": {"speaker_tracks":
    qc_dir}}``)."""
    store = store or FeatureStore()
    from merc.encoders.base import get_encoder
    built = [get_encoder(e, modality, **(encoder_options or {}).get(e, {})) if isinstance(e, str) else e
             for e in encoders]
    if not built:
        raise ValueError(f"no {modality} encoders given")
    for enc in built:
        if enc.modality != modality:
            raise ValueError(f"encoder {enc.name!r} is {an(enc.modality)} encoder, not {modality}")
    feats = store.get_many(store_key(corpus, split), split, corpus[split], built, progress=progress)
    out = concat([(enc.name, f) for enc, f in zip(built, feats)])
    out.meta["modality"] = modality
    return out
