"""The feature store: stage-1 features of every modality, extracted once, resumably, and reused.

Keyed by (corpus, split, modality, encoder fingerprint) — one folder each — and inside it per
utterance by *content*: ``encoder.content_key(u)`` is the hash of the text the encoder sees (text), or
the media digest + segment (audio, faces; digest = size, mtime and sha256 of the first and last MB,
see :func:`merc.encoders.base.media_digest`) plus, for faces, the QC speaker track. So

- a changed clip (or transcript, or track) is re-extracted, every unchanged utterance is reused;
- an utterance the encoder could not use (missing/corrupt clip, no audio stream, no face) is stored
  as *absent* with its reason: reruns do not retry it forever, but a missing file that appears (or a
  corrupt one that is replaced) has a new key and is retried.

Layout under ``root`` (default ``<cache_root()>/store``)::

    <corpus>/<split>/<modality>/<encoder>-<hash of fingerprint>/
        pending/chunk_00003.npz   while extracting: one atomic file per finished chunk of new keys
        rows.safetensors          when complete: "X" (n, dim) float32, "present" (n,) uint8
        index.json                written last: ids, content keys, reasons, encoder, fingerprint, summary

An interrupted run keeps its finished chunks; the next run extracts only what is still missing. Every
file is written through :func:`merc.io.atomic_write_bytes` (temporary file, fsync, rename).

The one call the training plumbing needs is :func:`extract_split` (one encoder) or
:func:`extract_modality` (several encoders of a modality, concatenated).
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from merc.data.schema import Corpus
from merc.encoders.base import Encoder
from merc.encoders.cache import Features, _safe
from merc.encoders.standardize import Standardizer
from merc.errors import an
from merc.io import atomic_write_bytes, write_json

log = logging.getLogger(__name__)
ROWS_FILE = "rows.safetensors"
INDEX_FILE = "index.json"
PENDING = "pending"

# helpers


def store_root(root: str | Path | None = None) -> Path:
    from merc.encoders.text import cache_root
    return Path(root) if root is not None else cache_root() / "store"


def reason_kind(reason: str) -> str:
    """A reason without its file names and numbers, for counting ("no face in N/N sampled frames of <file>")."""
    path = r"(?=[^\s:]*[A-Za-z])[^\s:]*[/\\][^\s:]*|\S+\.(?:mp4|avi|wav|mkv|mov|webm|flac|mp3|m4a)\b"
    r = re.sub(path, "<file>", reason)
    r = re.sub(r"\d+(?:\.\d+)?", "N", r)
    r = re.sub(r"utterance \S+", "utterance <id>", r)
    return r.strip()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# classes


class ModalityFeatures(Features):
    """Features of one encoder for one split, with presence: ``present[i]`` is False where utterance
    ``ids[i]`` has no usable input (its row is zeros and ``reasons[i]`` says why)."""
    present: np.ndarray  # (n,) bool
    reasons: list[str | None]

    def __init__(self, ids: list[str], X: np.ndarray, present: np.ndarray | None = None,
                 reasons: list[str | None] | None = None, meta: dict[str, Any] | None = None):
        self.ids, self.X, self.meta = ids, X, dict(meta or {})
        self.present = np.ones(len(ids), bool) if present is None else np.asarray(present, bool)
        self.reasons = [None] * len(ids) if reasons is None else list(reasons)
        super().__post_init__()
        if self.present.shape != (len(ids),) or len(self.reasons) != len(ids):
            raise ValueError(f"ModalityFeatures: {len(ids)} ids but present {self.present.shape}, "
                             f"{len(self.reasons)} reasons")

    def take_present(self, ids: Sequence[str]) -> np.ndarray:
        """Presence for ``ids`` in the given order, ``(len(ids),)`` bool."""
        out = []
        for u in ids:
            if u not in self.index:
                self[u]  # raises the helpful KeyError
            out.append(self.present[self.index[u]])
        return np.asarray(out, bool)

    def summary(self) -> dict[str, Any]:
        """{"n", "present", "absent", "reasons": {kind: count}} (most common first)."""
        kinds = Counter(reason_kind(r or "absent") for r, p in zip(self.reasons, self.present) if not p)
        return {"n": len(self.ids), "present": int(self.present.sum()), "absent": int((~self.present).sum()),
                "reasons": dict(kinds.most_common())}


def store_key(corpus: Corpus, split: str) -> str:
    """The store folder name of ``corpus``/``split``: the reader's corpus name plus a short hash of its
    utterance ids and media paths, so two corpora read with the same reader from different places (say a
    generated corpus and its control) get their own folders instead of overwriting each other's index."""
    h = hashlib.sha256()
    for u in corpus.utterances(split):
        h.update(f"{u.utterance_id}\0{u.audio or ''}\0{u.video or ''}\n".encode())
    return f"{corpus.name}-{h.hexdigest()[:10]}"


@dataclass
class FeatureStore:
    """Folder of stage-1 features (see the module docstring)."""
    root: Path | None = None
    chunk_size: int = 128  # new keys per pending chunk (a kill loses at most one chunk of work)
    retry_absent: bool = False  # re-try stored absent rows whose key is unchanged

    def __post_init__(self) -> None:
        self.root = store_root(self.root)
        if self.chunk_size < 1:
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

    def _load_pending(self, folder: Path, dim: int) -> dict[str, tuple[np.ndarray, bool, str | None]]:
        rows: dict[str, tuple[np.ndarray, bool, str | None]] = {}
        for p in sorted((folder / PENDING).glob("chunk_*.npz")):
            try:
                with np.load(p, allow_pickle=False) as z:
                    keys, X, present = json.loads(str(z["keys"])), z["X"], z["present"].astype(bool)
                    reasons = json.loads(str(z["reasons"]))
                if X.shape != (len(keys), dim) or X.dtype != np.float32 or len(reasons) != len(keys):
                    raise ValueError(f"shape {X.shape} for {len(keys)} keys, expected dim {dim}")
            except Exception as e:
                log.warning("corrupt pending chunk %s (%s): re-extracting its utterances", p, e)
                p.unlink(missing_ok=True)
                continue
            for k, x, ok, r in zip(keys, X, present, reasons):
                rows[k] = (x, bool(ok), r)
        return rows

    # the one entry point

    def get(self, corpus: Corpus, split: str, encoder: Encoder, *, progress: bool = True) -> ModalityFeatures:
        """Features of ``corpus.utterances(split)`` by ``encoder``: from the store, extracting what is missing."""
        utts = corpus.utterances(split)
        ids = [u.utterance_id for u in utts]
        if len(set(ids)) != len(ids):
            dup = next(i for i, c in Counter(ids).items() if c > 1)
            raise ValueError(f"{corpus.name}/{split} has duplicate utterance id {dup!r}; fix the reader first")
        return self.get_utterances(store_key(corpus, split), split, utts, encoder, progress=progress)

    def get_utterances(self, corpus_name: str, split: str, utts: Sequence, encoder: Encoder, *,
                       progress: bool = True) -> ModalityFeatures:
        """Like :meth:`get` for an explicit list of utterances (prediction on new media uses it too)."""
        dim, ids = encoder.dim, [u.utterance_id for u in utts]
        folder = self.folder(corpus_name, split, encoder)
        keys = [encoder.content_key(u) for u in utts]
        final = self._load_final(folder, dim)
        if final is not None and final[0]["keys"] == keys and final[0]["ids"] == ids and (
                not self.retry_absent or final[2].all()):
            index, X, present = final
            return ModalityFeatures(ids, X, present, index["reasons"], {**_meta(index), "cache_hit": True})

        known: dict[str, tuple[np.ndarray, bool, str | None]] = {}
        if final is not None:  # an older state of this split: reuse the rows whose content is unchanged
            index, X, present = final
            known.update((k, (x, bool(p), r)) for k, x, p, r in zip(index["keys"], X, present, index["reasons"]))
        known.update(self._load_pending(folder, dim))
        if self.retry_absent:
            known = {k: v for k, v in known.items() if v[1]}
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [i for k, i in first.items() if k not in known]
        reused = len(first) - len(todo)

        pending = folder / PENDING
        n_done = len(list(pending.glob("chunk_*.npz"))) if pending.is_dir() else 0
        seconds = 0.0
        corpus_shown = re.sub(r"-[0-9a-f]{10}$", "", corpus_name)  # the corpus, not store_key's hash
        desc = f"{corpus_shown}/{split} {encoder.modality}:{encoder.name}"
        with tqdm(total=len(todo), unit="utt", desc=desc, disable=not progress or not todo) as bar:
            for s in range(0, len(todo), self.chunk_size):
                batch = todo[s:s + self.chunk_size]
                t0 = time.perf_counter()
                res = encoder.encode_batch([utts[i] for i in batch], progress=False)
                seconds += time.perf_counter() - t0
                X = np.ascontiguousarray(res.X, dtype=np.float32)
                if X.shape != (len(batch), dim) or not np.isfinite(X).all():
                    raise RuntimeError(f"encoder {encoder.name!r} returned {X.shape} (or non-finite values) for "
                                       f"{len(batch)} utterances; expected ({len(batch)}, {dim}) float32")
                bkeys = [keys[i] for i in batch]
                payload = _npz_bytes(keys=np.array(json.dumps(bkeys)), X=X, present=np.asarray(res.present, np.uint8),
                                     reasons=np.array(json.dumps(res.reasons)))
                while (pending / f"chunk_{n_done:05d}.npz").exists():
                    n_done += 1
                atomic_write_bytes(pending / f"chunk_{n_done:05d}.npz", payload)
                n_done += 1
                known.update((k, (x, bool(p), r)) for k, x, p, r in zip(bkeys, X, res.present, res.reasons))
                bar.update(len(batch))

        X = np.zeros((len(utts), dim), np.float32)
        present = np.zeros(len(utts), bool)
        reasons: list[str | None] = []
        for i, k in enumerate(keys):
            x, ok, r = known[k]
            X[i], present[i] = x, ok
            reasons.append(None if ok else (r or "absent"))
        feats = ModalityFeatures(ids, X, present, reasons)
        meta = {"corpus": corpus_name, "split": split, "modality": encoder.modality, "encoder": encoder.name,
                "fingerprint": encoder.fingerprint, "dim": dim, "n": len(ids),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(seconds, 3), "extracted": len(todo), "reused": reused,
                "standardize": bool(getattr(encoder, "standardize", False)), "summary": feats.summary()}
        from safetensors.numpy import save as st_save
        atomic_write_bytes(folder / ROWS_FILE, st_save({"X": X, "present": present.astype(np.uint8)},
                                                       metadata={"encoder": encoder.name}))
        write_json(folder / INDEX_FILE, {**meta, "ids": ids, "keys": keys, "reasons": reasons})  # marks completion
        shutil.rmtree(pending, ignore_errors=True)
        feats.meta = {**meta, "cache_hit": False}
        if feats.summary()["absent"]:
            log.debug("%s/%s %s: %d of %d utterances absent (%s)", corpus_name, split, encoder.name,
                     feats.summary()["absent"], len(ids), feats.summary()["reasons"])
        return feats


def seed_rows(store: FeatureStore, corpus_name: str, split: str, utts: Sequence, encoder: Encoder,
              rows: dict[str, tuple[np.ndarray, bool, str | None]]) -> int:
    """Put rows computed elsewhere (utterance id -> (x (dim,), present, reason)), e.g. by ``merc qc``, into
    the store as if ``encoder`` had extracted them; the next :meth:`FeatureStore.get` reuses them. Rows whose
    content key the store already holds are skipped. Returns how many were written."""
    folder = store.folder(corpus_name, split, encoder)
    final = store._load_final(folder, encoder.dim)
    have = set(final[0]["keys"]) if final is not None else set()
    have |= set(store._load_pending(folder, encoder.dim))
    keys, X, present, reasons = [], [], [], []
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
        keys.append(k)
        X.append(x if ok else np.zeros(encoder.dim, np.float32))
        present.append(bool(ok))
        reasons.append(None if ok else (r or "absent"))
    if keys:
        pending = folder / PENDING
        n = 0
        while (pending / f"chunk_{n:05d}.npz").exists():
            n += 1
        atomic_write_bytes(pending / f"chunk_{n:05d}.npz",
                           _npz_bytes(keys=np.array(json.dumps(keys)), X=np.stack(X),
                                      present=np.asarray(present, np.uint8), reasons=np.array(json.dumps(reasons))))
    return len(keys)


def _meta(index: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in index.items() if k not in ("ids", "keys", "reasons")}


def extract_split(corpus: Corpus, split: str, encoder: Encoder | str, *, modality: str | None = None,
                  store: FeatureStore | None = None, progress: bool = True, **encoder_options) -> ModalityFeatures:
    """Features of ``corpus``/``split`` by one encoder (an instance or a registered name), via the store."""
    if isinstance(encoder, str):
        from merc.encoders.base import get_encoder
        encoder = get_encoder(encoder, modality, **encoder_options)
    return (store or FeatureStore()).get(corpus, split, encoder, progress=progress)


@dataclass
class ModalityBlock:
    """Several encoders of one modality for one split, concatenated: what a fusion model consumes."""
    modality: str
    ids: list[str]
    X: np.ndarray  # (n, sum of dims) float32; absent rows zero
    present: np.ndarray  # (n,) bool: the utterance has *every* encoder of this modality
    reasons: list[str | None]
    parts: dict[str, ModalityFeatures] = field(default_factory=dict)  # encoder name -> its features

    def take(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows and presence for ``ids`` in the given order: ``(len(ids), dim)``, ``(len(ids),)``."""
        index = {u: i for i, u in enumerate(self.ids)}
        missing = [u for u in ids if u not in index]
        if missing:
            raise KeyError(f"utterance {missing[0]!r} is not in these {self.modality} features ({len(self.ids)} "
                           f"utterances)")
        rows = np.asarray([index[u] for u in ids], np.int64)
        return self.X[rows], self.present[rows]

    def fit_standardizers(self) -> dict[str, Standardizer]:
        """Per-encoder statistics (present rows) for the parts that need them (``standardize`` encoders).
        Call on the *train* block only; keep ``{name: s.to_dict()}`` in the run config."""
        return {n: Standardizer.fit(p.X, p.present) for n, p in self.parts.items() if p.meta.get("standardize")}

    def standardized(self, standardizers: dict[str, Standardizer]) -> "ModalityBlock":
        """A copy whose parts named in ``standardizers`` are standardised (absent rows stay zero)."""
        cols = []
        for n, p in self.parts.items():
            cols.append(standardizers[n].transform(p.X, p.present) if n in standardizers else p.X)
        X = np.concatenate(cols, axis=1)
        X[~self.present] = 0.0
        return ModalityBlock(self.modality, self.ids, X, self.present, self.reasons, self.parts)

    @property
    def dims(self) -> dict[str, int]:
        return {n: p.dim for n, p in self.parts.items()}

    def summary(self) -> dict[str, Any]:
        kinds = Counter(reason_kind(r or "absent") for r, p in zip(self.reasons, self.present) if not p)
        return {"modality": self.modality, "n": len(self.ids), "present": int(self.present.sum()),
                "absent": int((~self.present).sum()), "reasons": dict(kinds.most_common()),
                "encoders": {k: v.summary() for k, v in self.parts.items()}}


def extract_modality(corpus: Corpus, split: str, modality: str, encoders: Sequence[Encoder | str], *,
                     store: FeatureStore | None = None, progress: bool = True,
                     encoder_options: dict[str, dict[str, Any]] | None = None) -> ModalityBlock:
    """All ``encoders`` of ``modality`` on ``corpus``/``split``, concatenated in the given order.

    An utterance is present for the modality only when every encoder has it (its reason is the
    first absent encoder's, prefixed with the encoder name). Encoders with ``standardize = True``
    (egemaps, compare) need train-split statistics: ``stds = train_block.fit_standardizers()``, then
    ``block.standardized(stds)`` for every split. ``encoder_options``: per encoder name, keyword
    arguments of its factory (e.g. ``{"fer": {"speaker_tracks": qc_dir}}``).
    """
    store = store or FeatureStore()
    parts: dict[str, ModalityFeatures] = {}
    for enc in encoders:
        name = enc if isinstance(enc, str) else enc.name
        opts = (encoder_options or {}).get(name, {})
        parts[name] = extract_split(corpus, split, enc, modality=modality, store=store, progress=progress, **opts)
        if parts[name].meta.get("modality", modality) != modality:
            raise ValueError(f"encoder {name!r} is {an(parts[name].meta['modality'])} encoder, not {modality}")
    if not parts:
        raise ValueError(f"no {modality} encoders given")
    first = next(iter(parts.values()))
    present = np.logical_and.reduce([p.present for p in parts.values()])
    reasons = []
    for i in range(len(first.ids)):
        r = next((f"{n}: {p.reasons[i]}" for n, p in parts.items() if not p.present[i]), None)
        reasons.append(r)
    X = np.concatenate([p.X for p in parts.values()], axis=1)
    X[~present] = 0.0
    return ModalityBlock(modality, first.ids, X, present, reasons, parts)
