"""Feature cache: each (dataset, split, encoder) is encoded once, resumably, and reused.

Layout under ``cache_dir`` (default ``<cache_root()>/features``)::

    <corpus>/<split>/<encoder>-<key>/
        chunks_<size>/chunk_00003.npy   while encoding: one atomic file per finished chunk
        features.safetensors            when complete: tensor "X" (n, d) float32
        meta.json                       written last: ids, encoder, fingerprint, created, seconds

``key`` hashes the encoder fingerprint and every (utterance_id, text) pair, so a changed corpus or
encoder lands in a new folder. An interrupted run leaves its finished chunks; the next run encodes
only the missing ones. Chunks and final files are checked (shape, dtype, finite values, ids) and
recomputed when corrupt. Every write goes to a temporary file that is renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from merc.data.schema import Corpus
from merc.encoders.text import TextEncoder, cache_root
from merc.errors import ConfigError, InputError
from merc.io import atomic_write_bytes, atomic_write_text, atomic_writer

log = logging.getLogger(__name__)
FEATURES_FILE = "features.safetensors"
META_FILE = "meta.json"

# helpers


def _content_hash(ids: list[str], texts: list[str]) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(i.encode() + b"\0" + t.encode() + b"\n")
    return h.hexdigest()


def _valid(X: np.ndarray, n: int, dim: int) -> bool:
    return X.dtype == np.float32 and X.shape == (n, dim) and bool(np.isfinite(X).all())


def _load_chunk(path: Path, n: int, dim: int) -> np.ndarray | None:
    """The chunk's array, or None (and the file removed) when it is missing or corrupt."""
    if not path.is_file():
        return None
    try:
        X = np.load(path, allow_pickle=False)
    except Exception as e:  # truncated / garbage file
        log.warning("corrupt feature chunk %s (%s): recomputing", path, e)
        X = None
    if X is not None and not _valid(X, n, dim):
        log.warning("feature chunk %s has shape %s %s, expected (%d, %d) float32: recomputing",
                    path, X.shape, X.dtype, n, dim)
        X = None
    if X is None:
        path.unlink(missing_ok=True)
    return X


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-48:] or "encoder"

# classes


@dataclass
class Features:
    """Encoded utterances: row ``i`` of ``X`` belongs to ``ids[i]`` (the split's utterance order)."""
    ids: list[str]
    X: np.ndarray  # (n, d) float32
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.X.shape[0] != len(self.ids):
            raise ValueError(f"Features: X has shape {self.X.shape} but there are {len(self.ids)} ids")
        self.index = {u: i for i, u in enumerate(self.ids)}

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, uid: object) -> bool:
        return uid in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __getitem__(self, uid: str) -> np.ndarray:
        try:
            return self.X[self.index[uid]]
        except KeyError:
            raise KeyError(f"utterance {uid!r} is not in these features ({len(self)} utterances of "
                           f"{self.meta.get('corpus', '?')}/{self.meta.get('split', '?')})") from None

    def get(self, uid: str, default: np.ndarray | None = None) -> np.ndarray | None:
        return self.X[self.index[uid]] if uid in self.index else default

    def take(self, ids: Iterable[str]) -> np.ndarray:
        """Rows for ``ids`` in the given order, ``(len(ids), d)``."""
        rows = []
        for u in ids:
            if u not in self.index:
                self[u]  # raises the helpful KeyError
            rows.append(self.index[u])
        return self.X[np.asarray(rows, dtype=np.int64)].reshape(len(rows), self.dim)


def feature_cache_dir(corpus: Corpus, split: str, encoder: TextEncoder, *, cache_dir: str | Path | None = None,
                      texts: tuple[list[str], list[str]] | None = None) -> Path:
    """The folder holding ``corpus``/``split`` encoded by ``encoder`` (it may not exist yet)."""
    if texts is None:
        utts = corpus.utterances(split)
        texts = ([u.utterance_id for u in utts], encoder.dialogue_texts(corpus[split]))
    key = hashlib.sha256(f"{encoder.fingerprint}\0{encoder.dim}\0{_content_hash(*texts)}".encode()).hexdigest()[:16]
    base = Path(cache_dir) if cache_dir is not None else cache_root() / "features"
    return base / _safe(corpus.name) / _safe(split) / f"{_safe(encoder.name)}-{key}"


def _load_final(folder: Path, ids: list[str], dim: int) -> Features | None:
    meta_p, feat_p = folder / META_FILE, folder / FEATURES_FILE
    if not meta_p.is_file():
        return None
    try:
        from safetensors.numpy import load_file
        meta = json.loads(meta_p.read_text())
        X = load_file(str(feat_p))["X"]
        if meta.get("ids") != ids or not _valid(X, len(ids), dim):
            raise ValueError(f"ids or shape {X.shape} do not match ({len(ids)}, {dim})")
    except Exception as e:
        log.warning("cached features in %s are unreadable or stale (%s): recomputing", folder, e)
        meta_p.unlink(missing_ok=True)
        feat_p.unlink(missing_ok=True)
        return None
    return Features(ids, X, {**meta, "cache_hit": True})


def encode_split(corpus: Corpus, split: str, encoder: TextEncoder, *, cache_dir: str | Path | None = None,
                 chunk_size: int = 512, progress: bool = True) -> Features:
    """Features of ``corpus.utterances(split)`` by ``encoder``, from the cache or encoded (resumably) into it."""
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    utts = corpus.utterances(split)
    ids, texts = [u.utterance_id for u in utts], encoder.dialogue_texts(corpus[split])
    if len(set(ids)) != len(ids):
        raise InputError(f"{corpus.name}/{split} has duplicate utterance ids; fix the reader before encoding")
    folder = feature_cache_dir(corpus, split, encoder, cache_dir=cache_dir, texts=(ids, texts))
    done = _load_final(folder, ids, encoder.dim)
    if done is not None:
        return done

    n, dim = len(ids), encoder.dim
    chunk_dir = folder / f"chunks_{chunk_size}"
    bounds = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    chunks: list[np.ndarray | None] = [_load_chunk(chunk_dir / f"chunk_{k:05d}.npy", e - s, dim)
                                       for k, (s, e) in enumerate(bounds)]
    reused = sum(c is not None for c in chunks)
    seconds = 0.0
    with tqdm(total=n, initial=sum(e - s for (s, e), c in zip(bounds, chunks) if c is not None), unit="utt",
              desc=f"{corpus.name}/{split} {encoder.name}", disable=not progress) as bar:
        for k, (s, e) in enumerate(bounds):
            if chunks[k] is not None:
                continue
            t0 = time.perf_counter()
            X = np.ascontiguousarray(encoder.encode(texts[s:e], progress=False), dtype=np.float32)
            seconds += time.perf_counter() - t0
            if not _valid(X, e - s, dim):
                raise RuntimeError(f"encoder {encoder.name!r} returned {X.shape} {X.dtype} (or non-finite "
                                   f"values) for {e - s} texts; expected ({e - s}, {dim}) float32")
            with atomic_writer(chunk_dir / f"chunk_{k:05d}.npy") as f:
                np.save(f, X, allow_pickle=False)
            chunks[k] = X
            bar.update(e - s)

    X = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, dim), np.float32)
    meta = {"corpus": corpus.name, "split": split, "n": n, "dim": dim, "encoder": encoder.name,
            "fingerprint": encoder.fingerprint, "content_sha256": _content_hash(ids, texts),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 3),
            "chunk_size": chunk_size, "chunks": len(bounds), "chunks_reused": reused, "ids": ids}
    from safetensors.numpy import save as st_save
    payload = st_save({"X": X}, metadata={"encoder": encoder.name, "fingerprint": encoder.fingerprint})
    atomic_write_bytes(folder / FEATURES_FILE, payload)
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=1))  # written last: marks completion
    shutil.rmtree(chunk_dir, ignore_errors=True)
    return Features(ids, X, {**meta, "cache_hit": False})
