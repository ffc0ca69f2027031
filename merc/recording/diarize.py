"""Who spoke when: speaker embeddings of speech regions, clustered, with the number of speakers estimated.

Embeddings are merc's speaker encoder (:mod:`merc.encoders.speaker`, resemblyzer's GE2E d-vectors, 256-d).
1. Every region of at least ``min_embed`` seconds gets one embedding (resemblyzer averages its 1.6 s partial
   windows); shorter regions are too noisy and take the speaker of the nearest region in time. Optionally
   only regions of ``cluster_min`` seconds are clustered and shorter embedded ones join the nearest centroid,
   and ``refine`` k-means rounds re-assign every embedded region to its nearest centroid (chosen on the dev
   split: mean DER 22.3% against 26.7% clustering every region of 0.8 s or more; tune.md).
2. Agglomerative clustering (average linkage, cosine distance; scikit-learn) of those embeddings. With
   ``num_speakers`` the tree is cut into that many clusters; otherwise the count k in ``[min_speakers,
   max_speakers]`` is the one with the highest mean silhouette (one speaker when every k scores below
   ``min_silhouette``). Chosen on the generated corpus's dev split (``benchmarks/bench_recording.py --tune``;
   results/recording/tune.md) over cutting the tree at a distance threshold and NME spectral clustering.
   With a video, regions may also carry the face on screen (:mod:`merc.recording.faces`): for two regions that
   both have one, the distance clustered is ``(1 - face_weight)`` x the voices' cosine distance + ``face_weight``
   x the faces' (likewise the similarity to a cluster's voice and face centroids in the refine steps), and the
   speaker count is estimated on those distances. Changes of speaker inside a region are found from the voice alone
   (and not at all in a region with a face when ``voice_changes_with_face`` is off).
3. A region of at least ``change_min`` seconds may hold two turns with no pause between them (or overlapping
   speech): its partial windows (1.6 s, every ``1/partial_rate`` s) are labelled by the nearest centroid and
   smoothed; each change that leaves at least ``min_turn`` seconds on both sides is a split point, which
   :mod:`merc.recording.segment` moves to the nearest gap between words.

Reference: Park et al. 2022, "A Review of Speaker Diarization: Recent Advances with Deep Learning" (§3,
clustering of speaker embeddings); Wan et al. 2018 (GE2E).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from merc.errors import ConfigError
from merc.recording.vad import SAMPLE_RATE, Region


@dataclass
class DiarizeConfig:
    num_speakers: int | None = None
    min_speakers: int = 1
    max_speakers: int = 10
    method: str = "silhouette"  # how the count is estimated: "silhouette", "threshold" (cut the tree), "spectral"
    threshold: float = 0.35  # average-linkage cosine distance at which clusters stop merging
    min_silhouette: float = 0.1  # "silhouette": below this mean silhouette for every k >= 2, one speaker
    min_embed: float = 0.5  # seconds: shorter regions get no embedding and the speaker of the nearest in time
    cluster_min: float = 1.0  # seconds: only regions this long are clustered; shorter embedded ones join the
    #                           nearest centroid (when at least 3 regions are this long)
    refine: int = 5  # rounds of re-assigning every embedded region to its nearest centroid after clustering
    change_min: float = 2.5  # seconds: longer regions are checked for a change of speaker inside
    partial_rate: float = 2.0  # partial windows per second inside such regions
    min_turn: float = 1.0  # seconds of a speaker on each side of an accepted change
    torch_threads: int = 1  # resemblyzer's small LSTM: 1 thread was 5-10x faster than 2 on the loaded machine
    face_weight: float = 0.9  # share of the face distance in the distance of two regions that both have a face
    #                           (merc.recording.faces; 0 = voices alone). Chosen on the dev split with the rest fixed:
    #                           DER 22.4% -> 11.8%, speaker count right 58.3% -> 79.2% (results/recording/tune.md)
    new_face: float | None = 0.1  # a region too short to cluster whose face is farther than this (cosine
    #                               distance) from every cluster's face starts a speaker of its own; None = never.
    #                               Dev: DER 11.8% -> 11.6%, speaker count 79.2% -> 83.3% (tune.md)
    voice_changes_with_face: bool = True  # look for a change of voice inside a region that has a face too (its
    #                                       one face says nothing about a change; two people may sound alike)

    def validate(self) -> None:
        if self.method not in ("threshold", "silhouette", "spectral"):
            raise ConfigError(f"unknown speaker-count method {self.method!r}; expected threshold, silhouette or "
                              "spectral")
        if self.num_speakers is not None and self.num_speakers < 1:
            raise ConfigError(f"--num-speakers must be >= 1, got {self.num_speakers}")
        if not 0.0 <= self.face_weight <= 1.0:
            raise ConfigError(f"face_weight must be in [0, 1], got {self.face_weight}")
        if not 1 <= self.min_speakers <= self.max_speakers:
            raise ConfigError(f"--min-speakers {self.min_speakers} and --max-speakers {self.max_speakers}: expected "
                              "1 <= min <= max")


@dataclass
class RegionVoice:
    """What the diarizer keeps of one region: its embedding and, for a long region, its partial windows."""
    region: Region
    embedding: np.ndarray | None  # (256,) unit norm; None when the region is too short or silent
    partial_times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (p,) window centres, seconds
    partials: np.ndarray = field(default_factory=lambda: np.zeros((0, 256), np.float32))  # (p, 256)
    face: np.ndarray | None = None  # (128,) unit face descriptor of the person on screen (merc.recording.faces)


@dataclass
class Diarization:
    labels: list[int]  # per region, cluster id (0-based, arbitrary order)
    changes: list[list[tuple[float, int]]]  # per region: [(time, label from then on)], empty = no change inside
    num_speakers: int
    centroids: np.ndarray  # (k, 256)


# helpers

def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def cluster(x: np.ndarray, config: DiarizeConfig, dist: np.ndarray | None = None) -> np.ndarray:
    """x: (n, d) unit embeddings -> (n,) cluster ids, clusters numbered by first occurrence. ``dist`` (n, n): the
    distances to cluster by instead of x's cosine distances (voice and face mixed, :func:`distances`)."""
    from sklearn.cluster import AgglomerativeClustering
    n = len(x)
    metric = "cosine" if dist is None else "precomputed"
    data = x if dist is None else dist
    if n == 0:
        return np.zeros(0, int)
    if n == 1:
        return np.zeros(1, int)
    k = config.num_speakers
    ids = None
    if config.method == "spectral" and n > 2:
        return _renumber(_spectral(x, config, dist))
    if k is None and config.method == "silhouette":
        k = _silhouette_k(data, config, metric)
    elif k is None:
        ids = AgglomerativeClustering(n_clusters=None, metric=metric, linkage="average",
                                      distance_threshold=config.threshold).fit_predict(data)
        k = int(np.clip(len(set(ids)), config.min_speakers, config.max_speakers))
        if k != len(set(ids)):
            ids = None
    k = min(k, n)
    if ids is None:
        ids = np.zeros(n, int) if k == 1 else \
            AgglomerativeClustering(n_clusters=k, metric=metric, linkage="average").fit_predict(data)
    return _renumber(ids)


def distances(x: np.ndarray, faces: list[np.ndarray | None], weight: float) -> np.ndarray | None:
    """Voice cosine distances (n, n) of unit embeddings x (n, d), with ``weight`` of the face cosine distance mixed
    in for each pair of regions that both have a face: ``(1 - w) d_voice + w d_face``; None (voices alone) when
    ``weight`` is 0 or fewer than two regions have a face."""
    has = np.array([f is not None for f in faces], bool)  # (n,)
    if weight <= 0 or has.sum() < 2:
        return None
    f = np.stack([f if f is not None else np.zeros(128, np.float32) for f in faces])  # (n, 128)
    dv = 1.0 - x @ x.T
    both = has[:, None] & has[None, :]
    d = np.where(both, (1 - weight) * dv + weight * (1.0 - f @ f.T), dv)
    d = np.clip((d + d.T) / 2, 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    return d


def _similarities(x: np.ndarray, faces: list[np.ndarray | None], cv: np.ndarray, cf: list[np.ndarray | None],
                  weight: float) -> np.ndarray:
    """(n, k) similarity of n regions (voice x (n, d), faces) to k centroids (voice cv (k, d), faces cf), mixed as
    in :func:`distances`."""
    s = x @ cv.T
    if weight <= 0:
        return s
    for i, f in enumerate(faces):
        if f is None:
            continue
        for c, g in enumerate(cf):
            if g is not None:
                s[i, c] = (1 - weight) * s[i, c] + weight * float(f @ g)
    return s


def _face_centroids(faces: list[np.ndarray | None], ids: np.ndarray, k: int) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for c in range(k):
        m = [f for f, i in zip(faces, ids) if i == c and f is not None]
        out.append(_unit(np.mean(m, 0)) if m else None)
    return out


def _renumber(ids: np.ndarray) -> np.ndarray:
    order = {c: i for i, c in enumerate(dict.fromkeys(np.asarray(ids).tolist()))}
    return np.array([order[c] for c in ids], int)


def _spectral(x: np.ndarray, config: DiarizeConfig, dist: np.ndarray | None = None) -> np.ndarray:
    """NME-SC (Park et al. 2019, "Auto-Tuning Spectral Clustering for Speaker Diarization Using Normalized
    Maximum Eigengap"): keep each row's p strongest cosine affinities, symmetrise, and choose p and the count k
    together by the largest normalised eigengap of the Laplacian; then spectral clustering into k groups."""
    from sklearn.cluster import SpectralClustering
    n = len(x)
    sim = np.clip(x @ x.T if dist is None else 1.0 - dist, -1.0, 1.0)  # (n, n)
    lo, hi = max(1, config.min_speakers), min(config.max_speakers, n - 1)
    best = None
    for p in range(max(2, n // 20), max(3, n // 2) + 1):
        a = np.zeros_like(sim)
        top = np.argsort(-sim, axis=1)[:, :p]
        np.put_along_axis(a, top, 1.0, axis=1)
        a = (a + a.T) / 2
        lap = np.diag(a.sum(1)) - a
        ev = np.sort(np.linalg.eigvalsh(lap))  # ascending
        gaps = np.diff(ev[: hi + 1])  # gaps[k - 1] = ev[k] - ev[k - 1]
        if config.num_speakers is not None:
            k = config.num_speakers
        else:
            k = int(np.argmax(gaps[lo - 1:hi])) + lo
        g = gaps[k - 1] / max(ev[-1], 1e-8)
        r = p / max(g, 1e-8)
        if best is None or r < best[0]:
            best = (r, k, a)
    _, k, a = best
    if k <= 1:
        return np.zeros(n, int)
    return SpectralClustering(n_clusters=k, affinity="precomputed", random_state=0).fit_predict(a)


def _silhouette_k(x: np.ndarray, config: DiarizeConfig, metric: str = "cosine") -> int:
    """The k in [min_speakers, max_speakers] whose average-linkage clustering has the highest mean silhouette
    (``metric``: cosine on embeddings x, or "precomputed" with x the distances); 1 when that is below
    ``min_silhouette`` and 1 is allowed."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score
    best, best_k = -1.0, max(1, config.min_speakers)
    for k in range(max(2, config.min_speakers), min(config.max_speakers, len(x) - 1) + 1):
        ids = AgglomerativeClustering(n_clusters=k, metric=metric, linkage="average").fit_predict(x)
        s = float(silhouette_score(x, ids, metric=metric))
        if s > best:
            best, best_k = s, k
    if best < config.min_silhouette and config.min_speakers <= 1:
        return 1
    return best_k


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=400, n_mels=40)  # (40, 201): resemblyzer's 25 ms, 40 mels


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """resemblyzer's ``audio.wav_to_mel_spectrogram`` (power mel, 25 ms window, 10 ms hop, 40 bands), as a plain
    matrix product: wav (samples,) at 16 kHz -> (frames, 40) float32."""
    import librosa
    power = np.abs(librosa.stft(np.asarray(wav, np.float32), n_fft=400, hop_length=160, center=True,
                                pad_mode="constant")) ** 2  # (201, frames)
    return (_mel_basis() @ power).astype(np.float32).T


def _smooth(labels: np.ndarray, width: int) -> np.ndarray:
    """Majority label in a centred window of ``width`` partials (removes one-window flips)."""
    if width <= 1 or len(labels) < 3:
        return labels
    out = labels.copy()
    h = width // 2
    for i in range(len(labels)):
        w = labels[max(0, i - h):i + h + 1]
        out[i] = np.bincount(w).argmax()
    return out


# classes

class VoiceEmbedder:
    """Region audio -> :class:`RegionVoice` with merc's speaker encoder (resemblyzer)."""

    def __init__(self, config: DiarizeConfig | None = None):
        from merc.encoders.speaker import get_speaker_embedder
        self.config = config or DiarizeConfig()
        self.encoder = get_speaker_embedder()

    def partials(self, wav: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray, list[slice]]:
        """resemblyzer's ``embed_utterance(wav, return_partials=True, rate=rate, min_coverage=0.5)`` with the mel
        spectrogram computed by one matrix product (librosa's ``melspectrogram`` took half the time in its
        ``einsum``) and torch on ``torch_threads`` threads: (embedding (256,), partials (p, 256), wav slices)."""
        import torch
        model = self.encoder.model
        wav_slices, mel_slices = model.compute_partial_slices(len(wav), rate, 0.5)
        if wav_slices[-1].stop >= len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
        mel = mel_spectrogram(wav)  # (frames, 40)
        mels = np.stack([mel[s] for s in mel_slices])  # (p, 160, 40)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.torch_threads)
        try:
            with torch.no_grad():
                part = model(torch.from_numpy(mels).to(model.device)).cpu().numpy()  # (p, 256)
        finally:
            torch.set_num_threads(threads)
        emb = part.mean(0)
        return emb / np.linalg.norm(emb), part, wav_slices

    def __call__(self, region: Region, wav: np.ndarray) -> RegionVoice:
        """wav: (samples,) float32 at 16 kHz, the region's audio. One pass of the network: the partial windows
        (every ``1/partial_rate`` s in a long region, resemblyzer's 1.3 per second otherwise) and their mean."""
        cfg = self.config
        seconds = len(wav) / SAMPLE_RATE
        x = np.asarray(wav, np.float32)
        peak = float(np.abs(x).max()) if len(x) else 0.0
        if seconds < cfg.min_embed or peak < 1e-3:
            return RegionVoice(region, None)
        x = x / peak * 0.5  # volume-normalised (the region is speech already: no silence trimming)
        long = seconds >= cfg.change_min
        emb, partials, slices = self.partials(x, cfg.partial_rate if long else 1.3)
        voice = RegionVoice(region, _unit(np.asarray(emb, np.float32)))
        if long:
            centres = np.array([(s.start + min(s.stop, len(x))) / 2 / SAMPLE_RATE for s in slices])
            voice.partial_times = region.start + centres
            voice.partials = _unit(np.asarray(partials, np.float32))
        return voice


def diarize(voices: list[RegionVoice], config: DiarizeConfig | None = None) -> Diarization:
    """Cluster the regions' embeddings and find changes of speaker inside long regions."""
    cfg = config or DiarizeConfig()
    cfg.validate()
    embedded = [i for i, v in enumerate(voices)
                if v.embedding is not None and v.region.end - v.region.start >= cfg.min_embed]
    if not embedded:  # nothing long enough to tell voices apart: one speaker
        return Diarization([0] * len(voices), [[] for _ in voices], 1 if voices else 0, np.zeros((1, 256)))
    have = [i for i in embedded if voices[i].region.end - voices[i].region.start >= cfg.cluster_min]
    if len(have) < 3:
        have = embedded
    x = np.stack([voices[i].embedding for i in have])  # (m, 256)
    w = cfg.face_weight
    fx = [voices[i].face for i in have]
    ids = cluster(x, cfg, distances(x, fx, w))
    k = int(ids.max()) + 1
    centroids = _unit(np.stack([x[ids == c].mean(0) for c in range(k)]))  # (k, 256)
    faces = _face_centroids(fx, ids, k)  # per cluster: (128,) or None
    labels = [0] * len(voices)
    for i, c in zip(have, ids):
        labels[i] = int(c)
    xe = np.stack([voices[i].embedding for i in embedded])  # (e, 256)
    fe = [voices[i].face for i in embedded]
    if w > 0 and cfg.new_face is not None:  # a face unlike every cluster's: someone who only spoke briefly
        clustered = set(have)
        for i in embedded:
            f = voices[i].face
            known = [g for g in faces if g is not None]
            if i in clustered or f is None or not known or min(1.0 - float(f @ g) for g in known) <= cfg.new_face:
                continue
            centroids = np.vstack([centroids, voices[i].embedding[None]])
            faces.append(f)
            k += 1
    near = _similarities(xe, fe, centroids, faces, w).argmax(1)  # (e,)
    for _ in range(cfg.refine if k > 1 else 0):  # k-means steps over all embedded regions
        new = _unit(np.stack([xe[near == c].mean(0) if (near == c).any() else centroids[c] for c in range(k)]))
        faces = [g if g is not None else old for g, old in zip(_face_centroids(fe, near, k), faces)]
        centroids, prev = new, near
        near = _similarities(xe, fe, centroids, faces, w).argmax(1)
        if (near == prev).all():
            break
    clustered = set(have)
    for i, c in zip(embedded, near):
        if cfg.refine or i not in clustered:
            labels[i] = int(c)
    have, clustered = embedded, set(embedded)
    for i, v in enumerate(voices):
        if i not in clustered:  # short region: the speaker of the nearest region in time that has an embedding
            j = min(have, key=lambda h: abs(voices[h].region.start - v.region.start))
            labels[i] = labels[j]
    changes: list[list[tuple[float, int]]] = [[] for _ in voices]
    for i, v in enumerate(voices):
        if len(v.partials) < 3 or k < 2 or (v.face is not None and w > 0 and not cfg.voice_changes_with_face):
            continue
        lab = _smooth((v.partials @ centroids.T).argmax(1), 3)  # (p,)
        runs = []  # [start index, end index (exclusive), label]
        for j, c in enumerate(lab):
            if runs and runs[-1][2] == c:
                runs[-1][1] = j + 1
            else:
                runs.append([j, j + 1, int(c)])
        hop = 1.0 / cfg.partial_rate
        runs = [r for r in runs if (r[1] - r[0]) * hop >= cfg.min_turn] or runs[:1]
        merged: list[list[int]] = []
        for r in runs:
            if merged and merged[-1][2] == r[2]:
                merged[-1][1] = r[1]
            else:
                merged.append(list(r))
        if len(merged) < 2:
            continue
        t = v.partial_times
        labels[i] = merged[0][2]
        changes[i] = [(float((t[a - 1] + t[a]) / 2), c) for a, _, c in merged[1:]]
    return Diarization(labels, changes, k, centroids)
