"""QC check "speaker": does the voice match the labelled speaker?

measure: decode the utterance audio (16 kHz mono) and embed it with resemblyzer (256-d d-vector).
judge: per labelled speaker (scope: the corpus, names as given; or per conversation) a robust centroid
(iterated trimmed mean of the unit embeddings); an utterance is compared with a *leave-one-out*
centroid of its own speaker (a mislabelled utterance must not pull its own reference) and with the
centroids of the other speakers. It fails when

- another speaker's centroid is closer than the labelled one's by more than ``margin``, and close
  enough (>= ``min_cos``) to name that speaker as the likely true one
  ("voice matches 'Ross' (cos 0.95) better than the labelled 'Joey' (cos 0.73)"), or
- the cosine to its own centroid is below ``min_cos`` (overlapping speech, mis-cut, wrong person
  who is not among the known speakers).

A failure is *weak* when the voice evidence is close to the line: another speaker wins by at most
``strong_margin`` and the own cosine is at least ``strong_min_cos``. Similar voices sit that close
(seeds 0-3 of benchmarks/results/qc/qc_unseen*.md: clean utterances lost by 0.02-0.07, or own cosine 0.65-0.69;
mislabelled ones won by 0.05-0.40, own cosine 0.38-0.87). A weak failure stands only when no corroborating
check vouches for the utterance: by default the faces check (``QCConfig.corroborate``), whose verified
match of the labelled speaker's face, alone on screen, keeps it.

Speakers with fewer than ``min_utts`` embedded utterances cannot be judged: they pass with a reason
that says so. Measured on espeak-ng voices (docs/offline-models.md):
correctly labelled 0.78–0.97 to
the own centroid; mislabelled 0.73–0.74 to the label's and 0.93–0.96 to the true speaker's.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from merc.errors import ConfigError
from merc.qc.base import Flag, QCItem


@dataclass
class SpeakerCheckConfig:
    sr: int = 16000
    min_cos: float = 0.70  # cosine to the own (leave-one-out) centroid below this fails
    margin: float = 0.02  # fail when another speaker's centroid is closer by more than this
    # a failure with a margin <= strong_margin and an own cosine >= strong_min_cos is weak (module docstring)
    strong_margin: float = 0.10
    strong_min_cos: float = 0.60
    min_utts: int = 3  # a speaker needs this many embedded utterances (incl. the judged one) to be judged
    scope: str = "corpus"  # "corpus": one voice per speaker name; "conversation": per (conversation, name)
    rivals: str = "corpus"  # candidate true speakers: every speaker in scope, or those of the same conversation
    trim: float = 0.2  # robust centroid: drop this fraction of the farthest embeddings…
    iters: int = 3  # …re-estimating this many times
    max_seconds: float | None = 30.0  # embed at most this much audio of very long clips


# helpers


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (rows (n, d), centre (d,)) -> (n,)


def _euclidean(rows: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.linalg.norm(rows - c, axis=1)


def _cosine(rows: np.ndarray, c: np.ndarray) -> np.ndarray:
    return -(rows @ _unit(c))


def _trimmed(x: np.ndarray, trim: float, iters: int, distance: Distance) -> tuple[np.ndarray, np.ndarray]:
    """(centre, indices of the rows averaged last)."""
    centre = np.median(x, axis=0)
    keep = max(1, int(np.ceil((1.0 - trim) * len(x))))
    idx = np.arange(len(x))
    for _ in range(iters):
        idx = np.argsort(distance(x, centre), kind="stable")[:keep]
        centre = x[idx].mean(axis=0)
    return centre, idx


def robust_centroid(x: np.ndarray, *, trim: float = 0.2, iters: int = 3,
                    distance: Distance | None = None) -> np.ndarray:
    """Iterated trimmed mean of the rows of ``x`` (n, d): start from the coordinate-wise median, keep the
    ``ceil((1 - trim) n)`` rows nearest the current centre, average them, repeat ``iters`` times.

    ``distance(rows, centre) -> (n,)`` defaults to euclidean; pass cosine distance for unit vectors.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"robust_centroid needs a non-empty (n, d) array, got shape {x.shape}")
    return _trimmed(x, trim, iters, distance or _euclidean)[0]


def leave_one_out_centroids(x: np.ndarray, *, trim: float = 0.2, iters: int = 3, distance: Distance | None = None,
                            exact_max: int = 64) -> np.ndarray:
    """(n, d): row i is the robust centroid of all rows but i (n >= 2).

    Exact (one robust fit per row) up to ``exact_max`` rows; beyond that the full fit is down-dated:
    a row among the final kept rows is removed from their mean, any other row leaves the centre
    unchanged (its removal would shift the trimming by a fraction of one row).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        raise ValueError(f"leave-one-out centroids need at least 2 rows, got {n}")
    distance = distance or _euclidean
    if n <= exact_max:
        return np.stack([_trimmed(np.delete(x, i, axis=0), trim, iters, distance)[0] for i in range(n)])
    centre, idx = _trimmed(x, trim, iters, distance)
    out = np.repeat(centre[None], n, axis=0)
    if len(idx) > 1:
        total = x[idx].sum(axis=0)
        out[idx] = (total[None] - x[idx]) / (len(idx) - 1)
    return out


def cosine_centroid(x: np.ndarray, *, trim: float = 0.2, iters: int = 3) -> np.ndarray:
    """Robust centroid of unit vectors under cosine distance, returned unit-norm."""
    return _unit(robust_centroid(_unit(np.asarray(x, np.float64)), trim=trim, iters=iters, distance=_cosine))


def media_segment(item: QCItem, path: str) -> tuple[float | None, float | None]:
    """(start, end) to cut from ``path``: the utterance's segment when ``path`` is a recording shared by
    several utterances (the pipeline sets ``extra["video_segment"]`` for IEMOCAP's dialogue avi), else
    (None, None) for a per-utterance clip."""
    seg = item.extra.get("video_segment") if item.extra else None
    if seg and path == item.extra.get("video"):
        return float(seg[0]), float(seg[1])
    if item.extra.get("segment"):  # an explicit override: [start, end] within ``path``
        return float(item.extra["segment"][0]), float(item.extra["segment"][1])
    return None, None


# classes


class SpeakerIdentityCheck:
    """Voice vs. speaker label (see the module docstring)."""

    name = "speaker"
    measure_fields = ("sr", "max_seconds")  # config fields that change ``measure`` (see merc.qc.cache)

    def __init__(self, config: SpeakerCheckConfig | None = None):
        self.config = config or SpeakerCheckConfig()
        if self.config.scope not in ("corpus", "conversation"):
            raise ConfigError(f"SpeakerCheckConfig.scope must be 'corpus' or 'conversation', got {self.config.scope!r}")
        if self.config.rivals not in ("corpus", "conversation"):
            raise ConfigError("SpeakerCheckConfig.rivals must be 'corpus' or 'conversation', "
                             f"got {self.config.rivals!r}")
        if self.config.min_utts < 2:
            raise ConfigError(f"SpeakerCheckConfig.min_utts must be >= 2 (a leave-one-out reference needs another "
                             f"utterance), got {self.config.min_utts}")
        self._encoder = None

    @property
    def encoder(self):
        if self._encoder is None:
            from merc.encoders.speaker import get_speaker_embedder
            self._encoder = get_speaker_embedder()
        return self._encoder

    # phase 1
    def _wav(self, item: QCItem) -> np.ndarray | dict[str, Any]:
        """The utterance audio to embed (16 kHz mono, at most ``max_seconds``), or the measurement's error."""
        from merc.media.clip import open_clip
        from merc.media.decode import MediaError

        u = item.utterance
        path = item.media or u.audio or u.video
        if not path:
            return {"error": f"utterance {u.utterance_id}: no audio or video file"}
        start, end = media_segment(item, path)
        cap = self.config.max_seconds
        if cap is not None and (end is None or end - (start or 0.0) > cap):
            end = (start or 0.0) + cap  # minutes-long clips (MELD test dia220_utt0): embed the first part
        try:
            return open_clip(path).audio(self.config.sr, start, end)  # decoded once for every check
        except MediaError as e:
            return {"error": str(e)}
        except Exception as e:  # a decoder failure PyAV did not wrap
            return {"error": f"{type(e).__name__} decoding {path}: {e}"}

    def prepare(self, items: list[QCItem]) -> None:
        """Embed the audio of every item in one batched forward pass over all their partial windows
        (:meth:`merc.encoders.speaker.SpeakerEmbedder.embed_batch`: about half the CPU of one by one, the same
        vectors within float tolerance); ``measure`` uses the result. Items that fail to decode are left to
        ``measure``, which reports them."""
        self._prepared: dict[str, np.ndarray | Exception] = {}
        uids, wavs = [], []
        for it in items:
            wav = self._wav(it)
            if isinstance(wav, np.ndarray):
                uids.append(it.utterance_id)
                wavs.append(wav)
        self._prepared = dict(zip(uids, self.encoder.embed_batch(wavs, self.config.sr), strict=True))

    def measure(self, item: QCItem) -> dict[str, Any]:
        from merc.encoders.speaker import AudioTooShortError

        wav = self._wav(item)
        if isinstance(wav, dict):
            return wav
        path = item.media or item.utterance.audio or item.utterance.video
        seconds = len(wav) / self.config.sr
        prepared = getattr(self, "_prepared", {}).pop(item.utterance_id, None)
        try:
            if isinstance(prepared, Exception):
                raise prepared
            emb = prepared if prepared is not None else self.encoder.embed(wav, self.config.sr)
        except AudioTooShortError as e:
            return {"error": f"{e} ({path})", "seconds": round(seconds, 3)}
        except ValueError as e:
            return {"error": f"cannot embed {path}: {e}", "seconds": round(seconds, 3)}
        cap = self.config.max_seconds
        out: dict[str, Any] = {"embedding": [round(float(v), 6) for v in emb], "seconds": round(seconds, 3)}
        if cap is not None and seconds >= cap - 1e-3:
            out["truncated_to"] = cap
        return out

    # phase 2
    def _key(self, item: QCItem) -> tuple[str, ...]:
        s = item.utterance.speaker
        return (item.conversation_id, s) if self.config.scope == "conversation" else (s,)

    def judge(self, items: list[QCItem], measurements: dict[str, dict[str, Any]]) -> list[Flag]:
        cfg = self.config
        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
        emb: dict[str, np.ndarray] = {}
        for it in items:
            m = measurements.get(it.utterance_id) or {}
            if "embedding" in m and "error" not in m:
                emb[it.utterance_id] = _unit(np.asarray(m["embedding"], np.float64))
                groups[self._key(it)].append(it.utterance_id)
        full, loo = {}, {}
        for k, uids in groups.items():
            if len(uids) >= cfg.min_utts:
                x = np.stack([emb[u] for u in uids])
                full[k] = cosine_centroid(x, trim=cfg.trim, iters=cfg.iters)
                own = _unit(leave_one_out_centroids(x, trim=cfg.trim, iters=cfg.iters, distance=_cosine))
                loo.update(zip(uids, own))
        keys = list(full)
        col = {k: j for j, k in enumerate(keys)}
        ref = np.stack([full[k] for k in keys]) if keys else np.zeros((0, 1))
        ids = list(emb)
        row = {u: i for i, u in enumerate(ids)}
        sims = np.stack([emb[u] for u in ids]) @ ref.T if ids and keys else None  # (n_utts, n_speakers)
        conv_cols: dict[str, list[int]] = defaultdict(list)
        for it in items:
            j = col.get(self._key(it))
            if j is not None and j not in conv_cols[it.conversation_id]:
                conv_cols[it.conversation_id].append(j)

        flags = []
        for it in items:
            uid, key, name = it.utterance_id, self._key(it), it.utterance.speaker
            m = measurements.get(uid)
            if m is None or uid not in emb:
                why = (m or {}).get("error", "no measurement")
                flags.append(Flag(uid, self.name, False, None, cfg.min_cos, f"no speaker embedding: {why}"))
                continue
            n = len(groups[key])
            if n < cfg.min_utts:
                flags.append(Flag(uid, self.name, True, None, cfg.min_cos,
                                  f"not judged: speaker {name!r} has {n} embedded utterance(s) "
                                  f"(< min_utts {cfg.min_utts}), too few for a voice reference"))
                continue
            own_cos = float(emb[uid] @ loo[uid])  # leave-one-out: the utterance does not pull its own reference
            cols = conv_cols[it.conversation_id] if cfg.rivals == "conversation" else range(len(keys))
            cols = [j for j in cols if j != col[key]]
            best, rival = None, -np.inf
            if cols:
                cand = sims[row[uid], cols]
                best, rival = keys[cols[int(np.argmax(cand))]], float(np.max(cand))
            rival_cos = {best: rival}
            label = f"the labelled {name!r}"
            if best is not None and rival_cos[best] > own_cos + cfg.margin and rival_cos[best] >= cfg.min_cos:
                weak = self._weak(own_cos, rival_cos[best] - own_cos)
                flags.append(Flag(uid, self.name, False, own_cos, cfg.min_cos,
                                  f"voice matches {best[-1]!r} (cos {rival_cos[best]:.2f}) better than "
                                  f"{label} (cos {own_cos:.2f})" + self._weak_note(weak, lead=True), weak=weak))
            elif own_cos < cfg.min_cos:
                near = f"; nearest other speaker {best[-1]!r} (cos {rival_cos[best]:.2f})" if best else ""
                weak = self._weak(own_cos, None)
                flags.append(Flag(uid, self.name, False, own_cos, cfg.min_cos,
                                  f"voice far from {label} (cos {own_cos:.2f} < {cfg.min_cos}): overlapping speech, "
                                  f"mis-cut or an unknown speaker{near}" + self._weak_note(weak, lead=False),
                                  weak=weak))
            else:
                near = f", next {best[-1]!r} {rival_cos[best]:.2f}" if best else ", no other speaker to compare"
                flags.append(Flag(uid, self.name, True, own_cos, cfg.min_cos,
                                  f"voice matches {label} (cos {own_cos:.2f}{near})"))
        return flags

    def _weak(self, own_cos: float, lead: float | None) -> bool:
        """Whether a failure rests on weak evidence: own cosine >= strong_min_cos and (for "another speaker is
        closer") that speaker's lead <= strong_margin."""
        cfg = self.config
        return own_cos >= cfg.strong_min_cos and (lead is None or lead <= cfg.strong_margin)

    def _weak_note(self, weak: bool, *, lead: bool) -> str:
        """The reason's note on a weak failure; ``lead``: the failure is "another speaker is closer"."""
        cfg = self.config
        why = (f"lead <= {cfg.strong_margin:.2f} and " if lead else "") + f"own cos >= {cfg.strong_min_cos:.2f}"
        return (f" (weak evidence: {why}; it stands unless a corroborating check vouches for the speaker)"
                if weak else "")
