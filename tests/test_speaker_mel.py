"""The numpy mel spectrogram of the batched speaker embedder against resemblyzer's (librosa's) own."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("resemblyzer")
librosa = pytest.importorskip("librosa")


def test_mel_filters_equal_librosa() -> None:
    from merc.encoders.speaker import mel_filters
    for sr, n_fft, n_mels in ((16000, 400, 40), (22050, 512, 64)):
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        got = mel_filters(sr, n_fft, n_mels)
        assert got.shape == ref.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("n", [400, 16000, 25_601, 48_123])
def test_mel_spectrogram_equals_resemblyzer(n: int) -> None:
    from resemblyzer.audio import wav_to_mel_spectrogram

    from merc.encoders.speaker import mel_spectrogram
    t = np.arange(n) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
           + 0.05 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)  # (n,)
    ref = wav_to_mel_spectrogram(wav)  # (n_frames, 40)
    got = mel_spectrogram(wav)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
