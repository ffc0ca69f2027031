"""Stage-1 speaker encoder: resemblyzer's GE2E d-vector (256-d), weights bundled in the wheel.

Reference: Wan et al., "Generalized End-to-End Loss for Speaker Verification" (ICASSP 2018);
resemblyzer 0.1.4 (``VoiceEncoder``, ``preprocess_wav``). See docs/offline-models.md
for installation
(``resemblyzer --no-deps`` + ``webrtcvad-wheels`` + ``librosa``).

``get_speaker_embedder()`` returns one process-wide instance; the network loads on first use.
Audio that is too short or holds no speech raises :class:`AudioTooShortError`, whose message the
QC check reports as the reason.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from merc.errors import CorruptMedia, MissingDependencyError, NonFiniteFeatures, TooLittleSpeech
from merc.io import file_digest


class AudioTooShortError(TooLittleSpeech):
    """The audio has too little speech (after silence trimming) to give a speaker embedding."""


@dataclass
class SpeakerEmbedderConfig:
    min_speech_seconds: float = 0.3  # speech left after resemblyzer's VAD trimming
    silence_rms: float = 1e-4  # below this RMS the input is treated as silent
    device: str = "cpu"


# helpers


def _require_resemblyzer():
    try:
        import resemblyzer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("the speaker encoder needs resemblyzer: pip install --no-deps resemblyzer; "
                          "pip install webrtcvad-wheels librosa (see docs/offline-models.md)") from e
    return resemblyzer



def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), (200.0 / 3) * m)


def mel_filters(sr: int = 16000, n_fft: int = 400, n_mels: int = 40) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32: ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)`` (Slaney mel
    scale and area normalisation), in numpy. Importing librosa costs about 1.7 CPU-s per process (numba, scipy
    docstrings), more than resemblyzer's embeddings of a whole QC batch; tests compare the two."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    ramps = mel_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_bins)
    gaps = np.diff(mel_hz)
    w = np.maximum(0.0, np.minimum(-ramps[:-2] / gaps[:-1, None], ramps[2:] / gaps[1:, None]))
    return (w * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]).astype(np.float32)


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(n_frames, 40) float32: resemblyzer's ``audio.wav_to_mel_spectrogram`` (librosa's power mel spectrogram:
    25-ms periodic Hann window, 10-ms hop, centred frames padded with zeros), without importing librosa."""
    from resemblyzer.hparams import mel_n_channels, mel_window_length, mel_window_step, sampling_rate
    n_fft, hop = int(sampling_rate * mel_window_length / 1000), int(sampling_rate * mel_window_step / 1000)
    y = np.pad(np.asarray(wav, np.float32), n_fft // 2)  # center=True, pad_mode="constant"
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]  # (n_frames, n_fft)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (n_frames, 1 + n_fft // 2)
    return (power.astype(np.float32) @ _filters(sampling_rate, n_fft, mel_n_channels).T).astype(np.float32)


_FILTERS: dict[tuple[int, int, int], np.ndarray] = {}


def _filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    key = (sr, n_fft, n_mels)
    if key not in _FILTERS:
        _FILTERS[key] = mel_filters(sr, n_fft, n_mels)
    return _FILTERS[key]



# classes


class SpeakerEmbedder:
    """Frozen resemblyzer ``VoiceEncoder`` on CPU: audio (float mono) -> L2-normalised 256-d vector.

    A model, not a stage-1 :class:`~merc.encoders.base.Encoder`: the ``resemblyzer`` audio encoder
    (:class:`merc.encoders.audio.ResemblyzerEncoder`) and the QC speaker check use it."""

    dim = 256
    name = "resemblyzer"

    def __init__(self, config: SpeakerEmbedderConfig | None = None):
        self.config = config or SpeakerEmbedderConfig()
        self._model = None
        self._lock = threading.Lock()
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """Stable id of the exact weights (hash of resemblyzer's ``pretrained.pt``)."""
        if self._fingerprint is None:
            weights = Path(_require_resemblyzer().__file__).parent / "pretrained.pt"
            self._fingerprint = f"resemblyzer-ge2e-{file_digest(weights)}"
        return self._fingerprint

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                self._model = _require_resemblyzer().VoiceEncoder(device=self.config.device, verbose=False)
        return self._model

    def preprocess(self, wav: np.ndarray, sr: int = 16000) -> np.ndarray:
        """Resample to 16 kHz, normalise volume, trim long silences; raise if too little speech is left."""
        from resemblyzer import preprocess_wav
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected mono audio of shape (n,), got {wav.shape}")
        seconds = len(wav) / sr
        if seconds < self.config.min_speech_seconds:
            raise AudioTooShortError(f"audio too short for a speaker embedding: {seconds:.2f} s "
                                     f"< {self.config.min_speech_seconds} s")
        if not np.isfinite(wav).all():
            raise CorruptMedia("audio contains NaN or inf samples")
        rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
        if rms < self.config.silence_rms:
            raise AudioTooShortError(f"audio is silent (RMS {rms:.2g} over {seconds:.2f} s)")
        out = preprocess_wav(np.clip(wav, -1.0, 1.0), source_sr=sr if sr != 16000 else None)
        speech = len(out) / 16000
        if speech < self.config.min_speech_seconds:
            raise AudioTooShortError(f"too little speech for a speaker embedding: {speech:.2f} s left of "
                                     f"{seconds:.2f} s after silence trimming (< {self.config.min_speech_seconds} s)")
        return out

    def embed(self, wav: np.ndarray, sr: int = 16000) -> np.ndarray:
        """One utterance -> (256,) float32, unit L2 norm."""
        return self._unit(self.model.embed_utterance(self.preprocess(wav, sr)))

    @staticmethod
    def _unit(emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, np.float32)
        norm = float(np.linalg.norm(emb))
        if not np.isfinite(norm) or norm == 0.0:
            raise NonFiniteFeatures("speaker encoder returned a zero or non-finite embedding")
        return emb / norm

    def partial_mels(self, speech: np.ndarray) -> np.ndarray:
        """A preprocessed utterance -> its partial windows' mel spectrograms (n_partials, 160, 40), cut exactly as
        resemblyzer's ``embed_utterance`` cuts them (rate 1.3 per second, min coverage 0.75)."""
        wav_slices, mel_slices = self.model.compute_partial_slices(len(speech), 1.3, 0.75)
        if wav_slices[-1].stop >= len(speech):
            speech = np.pad(speech, (0, wav_slices[-1].stop - len(speech)), "constant")
        mel = mel_spectrogram(speech)  # (n_frames, 40), as resemblyzer's wav_to_mel_spectrogram
        return np.array([mel[s] for s in mel_slices])

    def embed_batch(self, wavs: Sequence[np.ndarray], sr: int = 16000,
                    max_partials: int = 256) -> list[np.ndarray | Exception]:
        """Several utterances -> one (256,) unit vector each, or the exception that utterance raised (as
        :meth:`embed` would raise it). Equal to :meth:`embed` one by one within float tolerance (about 1e-6:
        only the batch size of the matrix products differs); the partial windows of all utterances go through
        the network together, at most ``max_partials`` at a time (about 2x less CPU than one by one)."""
        import torch
        out: list[np.ndarray | Exception | None] = [None] * len(wavs)
        mels: list[np.ndarray] = []  # per embedded utterance: (n_partials, 160, 40)
        where: list[int] = []
        for i, w in enumerate(wavs):
            try:
                mels.append(self.partial_mels(self.preprocess(w, sr)))
                where.append(i)
            except Exception as e:  # noqa: BLE001 - handed back for this utterance alone
                out[i] = e
        if mels:
            x = np.concatenate(mels)  # (total partials, 160, 40)
            model = self.model
            with torch.no_grad():
                partial = np.concatenate([model(torch.from_numpy(x[k:k + max_partials]).to(model.device)).cpu().numpy()
                                          for k in range(0, len(x), max_partials)])  # (total partials, 256)
            at = 0
            for i, m in zip(where, mels):
                raw = partial[at:at + len(m)].mean(axis=0)
                at += len(m)
                try:
                    with np.errstate(invalid="ignore", divide="ignore"):  # a zero vector: NonFiniteFeatures
                        raw = raw / np.linalg.norm(raw, 2)
                    out[i] = self._unit(raw)
                except NonFiniteFeatures as e:
                    out[i] = e
        return out  # type: ignore[return-value]

    def embed_many(self, wavs: Iterable[np.ndarray], sr: int = 16000) -> np.ndarray:
        """Several utterances -> (n, 256); raises on the first bad one (its index in the message)."""
        out = []
        for i, w in enumerate(wavs):
            try:
                out.append(self.embed(w, sr))
            except ValueError as e:
                raise type(e)(f"utterance {i}: {e}") from e
        return np.stack(out) if out else np.zeros((0, self.dim), np.float32)

    def __repr__(self) -> str:
        return f"SpeakerEmbedder(name={self.name!r}, dim={self.dim}, device={self.config.device!r})"


_INSTANCE: SpeakerEmbedder | None = None
_INSTANCE_LOCK = threading.Lock()


def get_speaker_embedder() -> SpeakerEmbedder:
    """The process-wide speaker encoder (the model itself loads lazily on first ``embed``)."""
    global _INSTANCE
    with _INSTANCE_LOCK:
        if _INSTANCE is None:
            _INSTANCE = SpeakerEmbedder()
        return _INSTANCE
