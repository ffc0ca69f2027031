"""QC measurements are stage-1 features: copy them into the feature store instead of computing them twice.

``merc qc`` embeds every utterance's voice (resemblyzer, check "speaker") and the faces of its sampled
frames (dlib, check "faces"), and records the labelled speaker's face track in ``speaker_tracks.json``.
Those are exactly the ``resemblyzer`` audio features and the ``dlib`` face features on the speaker's
track (:mod:`merc.encoders.audio`, :mod:`merc.encoders.face_expr`) when the settings agree (same sample
rate and audio cap; same fps, frame cap and detector). :func:`seed_store_from_qc` checks that they
agree, then writes the QC rows into the store; the next extraction reuses them.

Limits: the QC cache rounds embeddings (6 decimals for voices, 5 for faces), so seeded rows differ from
freshly extracted ones by at most that rounding. A clip modified after QC measured it is not seeded
(its mtime is newer than the QC cache file): the store extracts it itself. The QC checks do not read the
store (QC keeps its own measurement cache); the direction is QC -> store only.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from merc.data.schema import Corpus

log = logging.getLogger(__name__)


def _fresh(path: str | None, cache_mtime: float) -> bool:
    try:
        return path is not None and os.stat(path).st_mtime <= cache_mtime
    except OSError:
        return False


def seed_store_from_qc(qc_dir: str | Path, corpus: Corpus, split: str, *, store=None) -> dict[str, int]:
    """Seed ``resemblyzer`` (audio) and, when ``speaker_tracks.json`` exists, ``dlib`` (face, on the QC
    tracks) features of ``corpus``/``split`` from a QC run's measurement cache. Returns rows written per encoder."""
    from merc.encoders.audio import AudioConfig, ResemblyzerEncoder
    from merc.encoders.store import FeatureStore, seed_rows, store_key
    from merc.qc.cache import MeasureCache, measure_key
    from merc.qc.faces import FaceCheck, FaceCheckConfig
    from merc.qc.speaker import SpeakerCheckConfig, SpeakerIdentityCheck

    qc_dir = Path(qc_dir)
    store = store or FeatureStore()
    utts = corpus.utterances(split)
    out: dict[str, int] = {}

    cache_p = qc_dir / "cache" / "speaker.jsonl"
    if cache_p.is_file():
        enc = ResemblyzerEncoder(AudioConfig())
        want = measure_key(SpeakerIdentityCheck(SpeakerCheckConfig(sr=16000, max_seconds=enc.config.max_seconds)))
        cached, mtime = MeasureCache(cache_p).load(), cache_p.stat().st_mtime
        rows: dict[str, tuple[np.ndarray, bool, str | None]] = {}
        for u in utts:
            rec = cached.get(u.utterance_id)
            if not rec or rec.get("key") != want or not _fresh(rec.get("media"), mtime):
                continue
            if rec.get("media") != (u.audio or u.video):
                continue  # QC measured another file (e.g. IEMOCAP's turn wav vs. what we decode)
            res: dict[str, Any] = rec["result"]
            if "embedding" in res:
                rows[u.utterance_id] = (np.asarray(res["embedding"], np.float32), True, None)
            elif "error" in res and not res.get("gated"):
                rows[u.utterance_id] = (np.zeros(enc.dim, np.float32), False, res["error"])
        out["resemblyzer"] = seed_rows(store, store_key(corpus, split), split, utts, enc, rows)

    faces_p, tracks_p = qc_dir / "cache" / "faces.jsonl", qc_dir / "speaker_tracks.json"
    if faces_p.is_file() and tracks_p.is_file():
        from merc.encoders.face_expr import DlibFaceEncoder, FaceFrameConfig
        fc = FaceFrameConfig()
        enc = DlibFaceEncoder(fc, speaker_tracks=tracks_p)
        want = measure_key(FaceCheck(FaceCheckConfig(fps=fc.fps, max_frames=fc.max_frames, detector=fc.detector,
                                                     upsample=fc.upsample, min_face=fc.min_face)))
        cached, mtime = MeasureCache(faces_p).load(), faces_p.stat().st_mtime
        rows = {}
        for u in utts:
            rec, track = cached.get(u.utterance_id), (enc.tracks or {}).get(u.utterance_id)
            if not rec or not track or rec.get("key") != want or not _fresh(u.video, mtime):
                continue
            tracks = rec["result"].get("tracks") or []
            i = track.get("track_index")
            if i is None or i >= len(tracks) or tracks[i]["boxes"] != track.get("boxes"):
                continue
            rows[u.utterance_id] = (np.asarray(tracks[i]["embedding"], np.float32), True, None)
        out["dlib"] = seed_rows(store, store_key(corpus, split), split, utts, enc, rows)
    if not out:
        log.info("no QC measurement cache under %s: nothing to seed", qc_dir)
    return out
