"""Stage-1 audio encoders: one vector per utterance from its speech (16 kHz mono, segment cut when given).

=============  ======  ==============================================================  ========================
name           dim     what it measures                                                × real time (wall / CPU)
=============  ======  ==============================================================  ========================
resemblyzer    256     GE2E d-vector: who is speaking (speaker identity), L2-normed   8.6× / 31×
egemaps        88      openSMILE eGeMAPSv02 functionals: pitch, loudness, voice        7.9× / 23×
                       quality, spectral balance, rate (standard acoustic emotion set)
compare        6373    openSMILE ComParE_2016 functionals (large brute-force set)      8.7× / 26×
wavlm          hidden  WavLM mean-pooled last layer (user's weights: path / hub name)  not measured (no weights)
ecapa          192     SpeechBrain ECAPA-TDNN speaker embedding (user's weights)       not measured (no weights)
=============  ======  ==============================================================  ========================

Speeds: 72 synthetic 3-s mp4 clips, decoding included, on this shared 2-core machine under a load
average of ~13 (wall) and per CPU-second of this process (CPU); ``benchmarks/results/extract_speed/extract_speed.md``
(``benchmarks/bench_extract.py``). ``egemaps`` and ``compare`` need standardising with train-split
statistics (``standardize = True``, see :mod:`merc.encoders.standardize`).

References: Wan et al., GE2E (ICASSP 2018) / resemblyzer 0.1.4; Eyben et al., "The Geneva Minimalistic
Acoustic Parameter Set (GeMAPS)" (IEEE TAC 2016); Schuller et al., ComParE 2016; Chen et al., WavLM
(IEEE JSTSP 2022); Desplanques et al., ECAPA-TDNN (Interspeech 2020). openSMILE is under audEERING's
research licence (commercial use needs their permission).

The audio of an utterance is ``u.audio`` (else ``u.video``: MELD's mp4 carry both), decoded with
:func:`merc.media.decode.load_audio`; a missing/corrupt file, a clip without an audio stream or with
too little audio becomes an absent row with its reason (never an exception).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merc.encoders.base import MediaEncoder, _spec_found, media_key, media_segment, register_encoder, require
from merc.errors import MissingDependencyError, MissingMedia, TooLittleSpeech
from merc.io import file_digest

log = logging.getLogger(__name__)
SR = 16000

# helpers


def audio_source(u) -> tuple[str | None, float | None, float | None]:
    """(path, start, end) of the utterance's audio: ``u.audio`` else ``u.video``; segment when shared."""
    path = u.audio or u.video
    start, end = media_segment(u, path)
    return path, start, end


# classes


@dataclass
class AudioConfig:
    min_seconds: float = 0.1  # shorter decoded audio is absent ("too short")
    max_seconds: float | None = 30.0  # longer audio: its first 30 s (MELD has minutes-long clips; = QC speaker check)


class AudioEncoder(MediaEncoder):
    """Decode the utterance's audio, then ``_embed(wav) -> (dim,)``."""

    modality = "audio"
    needs = ("audio", "segment")

    def __init__(self, config: AudioConfig | None = None):
        self.config = config or AudioConfig()

    def content_key(self, u) -> str:
        return media_key(*audio_source(u))

    def _cut(self, u) -> tuple[str | None, float | None, float | None]:
        path, start, end = audio_source(u)
        if end is None and self.config.max_seconds is not None:
            end = (start or 0.0) + self.config.max_seconds
        return path, start, end

    def decode_jobs(self, u) -> list:
        """What to decode ahead for this utterance (:class:`merc.media.clip.Prefetcher`)."""
        path, start, end = self._cut(u)
        return [(path, lambda c: c.audio(SR, start, end))] if path else []

    def load(self, u) -> np.ndarray:
        from merc.media.clip import open_clip
        path, start, end_cut = self._cut(u)
        if not path:
            raise MissingMedia(f"utterance {u.utterance_id} has no audio or video file")
        wav = open_clip(path).audio(SR, start, end_cut)  # decoded once for every encoder (merc.media.clip)
        if len(wav) < self.config.min_seconds * SR:
            raise TooLittleSpeech(f"audio too short in {path}: {len(wav) / SR:.2f} s < {self.config.min_seconds} s")
        return wav

    def _encode_one(self, u) -> np.ndarray:
        return self._embed(self.load(u))

    def _embed(self, wav: np.ndarray) -> np.ndarray:  # (samples,) -> (dim,)
        raise NotImplementedError

    def _settings(self) -> str:
        c = self.config
        return f"min{c.min_seconds}-max{c.max_seconds}"


class ResemblyzerEncoder(AudioEncoder):
    """resemblyzer's GE2E d-vector (256-d speaker identity), via :mod:`merc.encoders.speaker`."""

    name = "resemblyzer"
    dim = 256
    description = "speaker identity (GE2E d-vector, resemblyzer; unit norm)"
    install_hint = "pip install --no-deps resemblyzer; pip install webrtcvad-wheels librosa"
    torch_threads = 1

    def __init__(self, config: AudioConfig | None = None):
        super().__init__(config)
        from merc.encoders.speaker import get_speaker_embedder
        self.speaker = get_speaker_embedder()

    @classmethod
    def installed(cls) -> bool:
        return _spec_found("resemblyzer") and _spec_found("webrtcvad")

    @property
    def fingerprint(self) -> str:
        try:
            fp = self.speaker.fingerprint
        except ImportError as e:
            raise MissingDependencyError(f"audio encoder 'resemblyzer': {e}") from e
        c = self.speaker.config
        return f"{fp}-min{c.min_speech_seconds}-{self._settings()}"

    def _embed(self, wav: np.ndarray) -> np.ndarray:
        try:
            return self.speaker.embed(wav, SR)  # AudioTooShortError (TooLittleSpeech) -> absent
        except ImportError as e:
            raise MissingDependencyError(f"audio encoder 'resemblyzer': {e}") from e


class OpenSmileEncoder(AudioEncoder):
    """openSMILE functionals of one feature set (eGeMAPSv02: 88, ComParE_2016: 6373)."""

    standardize = True
    install_hint = "pip install opensmile"
    _SETS = {"egemaps": ("eGeMAPSv02", 88, "prosody and voice quality: pitch, loudness, jitter/shimmer, "
                                             "spectral balance, rate (openSMILE eGeMAPSv02 functionals)"),
             "compare": ("ComParE_2016", 6373, "ComParE_2016 functionals: large brute-force acoustic set "
                                               "(openSMILE)")}

    def __init__(self, feature_set: str = "egemaps", config: AudioConfig | None = None):
        super().__init__(config)
        if feature_set not in self._SETS:
            raise ValueError(f"unknown openSMILE set {feature_set!r}; use one of {sorted(self._SETS)}")
        self.name = feature_set
        self.set_name, self.dim, self.description = self._SETS[feature_set]
        self._smile = None
        self._lock = threading.Lock()

    @classmethod
    def installed(cls) -> bool:
        return _spec_found("opensmile")

    @property
    def smile(self):
        with self._lock:
            if self._smile is None:
                opensmile = require("opensmile", self.install_hint, what=f"audio encoder {self.name!r}")
                self._smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, self.set_name),
                                              feature_level=opensmile.FeatureLevel.Functionals)
        return self._smile

    @property
    def fingerprint(self) -> str:
        opensmile = require("opensmile", self.install_hint, what=f"audio encoder {self.name!r}")
        conf = file_digest(self.smile.config_path)
        return f"opensmile-{opensmile.__version__}-{self.set_name}-{conf}-{self._settings()}"

    def _embed(self, wav: np.ndarray) -> np.ndarray:
        return self.smile.process_signal(wav, SR).to_numpy(dtype=np.float32).reshape(-1)


def _weights_source(name: str, model: str | None, env: str) -> str:
    src = model or os.environ.get(env)
    if not src:
        raise MissingDependencyError(
            f"audio encoder {name!r} needs model weights, which merc does not ship: pass model=PATH (a local "
            f"folder) or a hub name, or set {env}=PATH. Offline alternatives: egemaps, compare, resemblyzer")
    return src


class WavLMEncoder(AudioEncoder):
    """WavLM (transformers ``WavLMModel``): mean of the last hidden layer over time. Weights: the user's."""

    name = "wavlm"
    description = "self-supervised speech representation (WavLM, mean-pooled last layer; your weights)"
    install_hint = "pip install transformers; weights: a local WavLM folder via MERC_WAVLM_MODEL or model="
    ENV = "MERC_WAVLM_MODEL"

    def __init__(self, model: str | None = None, config: AudioConfig | None = None):
        super().__init__(config)
        self.source = _weights_source(self.name, model, self.ENV)
        transformers = require("transformers", "pip install transformers", what="audio encoder 'wavlm'")
        local = Path(self.source).expanduser().is_dir()
        try:
            self._net = transformers.WavLMModel.from_pretrained(self.source, local_files_only=local).eval()
            self._fe = transformers.AutoFeatureExtractor.from_pretrained(self.source, local_files_only=local)
        except OSError as e:
            raise MissingDependencyError(f"audio encoder 'wavlm': no WavLM weights at {self.source!r} ({e})") from e
        self.dim = int(self._net.config.hidden_size)
        if local:
            from merc.encoders.text import _hash_files
            digest = _hash_files(Path(self.source).expanduser())
        else:
            digest = hashlib.sha256(self.source.encode()).hexdigest()[:16]
        self._fp = f"wavlm-{Path(self.source).name}-{digest}-{self._settings()}"

    @classmethod
    def installed(cls) -> bool:
        return _spec_found("transformers") and bool(os.environ.get(cls.ENV))

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _embed(self, wav: np.ndarray) -> np.ndarray:
        import torch
        inputs = self._fe(wav, sampling_rate=SR, return_tensors="pt")
        with torch.inference_mode():
            h = self._net(**inputs).last_hidden_state  # (1, frames, hidden)
        return h.mean(dim=1)[0].numpy()


class EcapaEncoder(AudioEncoder):
    """SpeechBrain ECAPA-TDNN speaker embedding (192-d). Weights: the user's (folder or hub name)."""

    name = "ecapa"
    dim = 192
    description = "speaker identity (SpeechBrain ECAPA-TDNN; your weights)"
    install_hint = "pip install speechbrain; weights: spkrec-ecapa-voxceleb folder via MERC_ECAPA_MODEL or model="
    ENV = "MERC_ECAPA_MODEL"

    def __init__(self, model: str | None = None, config: AudioConfig | None = None):
        super().__init__(config)
        self.source = _weights_source(self.name, model, self.ENV)
        require("speechbrain", "pip install speechbrain", what="audio encoder 'ecapa'")
        from speechbrain.inference.speaker import EncoderClassifier
        try:
            self._net = EncoderClassifier.from_hparams(source=self.source, run_opts={"device": "cpu"})
        except Exception as e:
            raise MissingDependencyError(f"audio encoder 'ecapa': could not load {self.source!r} ({e})") from e
        self._fp = f"ecapa-{hashlib.sha256(str(self.source).encode()).hexdigest()[:16]}-{self._settings()}"

    @classmethod
    def installed(cls) -> bool:
        return _spec_found("speechbrain") and bool(os.environ.get(cls.ENV))

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _embed(self, wav: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            return self._net.encode_batch(torch.from_numpy(wav)[None]).reshape(-1).numpy()


# registry

register_encoder("resemblyzer", ResemblyzerEncoder, modality="audio", dim=256,
                 description=ResemblyzerEncoder.description, installed=ResemblyzerEncoder.installed,
                 install_hint=ResemblyzerEncoder.install_hint)
register_encoder("egemaps", lambda **kw: OpenSmileEncoder("egemaps", **kw), modality="audio", dim=88,
                 description=OpenSmileEncoder._SETS["egemaps"][2], installed=OpenSmileEncoder.installed,
                 install_hint=OpenSmileEncoder.install_hint)
register_encoder("compare", lambda **kw: OpenSmileEncoder("compare", **kw), modality="audio", dim=6373,
                 description=OpenSmileEncoder._SETS["compare"][2], installed=OpenSmileEncoder.installed,
                 install_hint=OpenSmileEncoder.install_hint, optional=True)
register_encoder("wavlm", WavLMEncoder, modality="audio", dim=None, description=WavLMEncoder.description,
                 installed=WavLMEncoder.installed, install_hint=WavLMEncoder.install_hint, optional=True)
register_encoder("ecapa", EcapaEncoder, modality="audio", dim=192, description=EcapaEncoder.description,
                 installed=EcapaEncoder.installed, install_hint=EcapaEncoder.install_hint, optional=True)
