"""Decoding generated wav/mp4 with PyAV: durations, rates, frame sampling, and MediaError on bad files."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from merc.media import Frame, MediaError, MediaInfo, load_audio, load_frames, probe  # noqa: E402
from merc.testing.synth import make_audio_only_clip, make_clip, make_video_only_clip, truncate_file, write_wav  # noqa: E402

SR_IN = 22050
SECONDS = 2.5


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    t = np.arange(int(SECONDS * SR_IN)) / SR_IN
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    tone[: SR_IN // 2] = 0  # the first half second silent, to locate segments
    import soundfile as sf
    wav = root / "tone.wav"
    sf.write(str(wav), tone, SR_IN, subtype="PCM_16")
    wav16 = write_wav(load_audio(wav, sr=16000), root / "tone16.wav")
    image = np.zeros((120, 100, 3), np.uint8)
    image[:, :50] = (255, 0, 0)
    clip = make_clip(wav16, image, root / "clip.mp4", fps=10)
    audio_only = make_audio_only_clip(wav16, root / "audio_only.mp4")
    video_only = make_video_only_clip(image, root / "video_only.mp4", 1.5, fps=10)
    broken = truncate_file(make_clip(wav16, image, root / "broken.mp4"), 0.5)
    text = root / "notes.mp4"
    text.write_text("this is not a video\n")
    return {"wav": wav, "wav16": wav16, "clip": clip, "audio_only": audio_only, "video_only": video_only,
            "broken": broken, "text": text, "root": root}


def test_probe_wav(media):
    info = probe(media["wav"])
    assert isinstance(info, MediaInfo)
    assert info.has_audio and not info.has_video
    assert info.audio_rate == SR_IN
    assert info.duration == pytest.approx(SECONDS, abs=0.01)
    assert info.width is None and info.fps is None


def test_load_audio_resamples_to_mono_float(media):
    wav = load_audio(media["wav"], sr=16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == pytest.approx(SECONDS * 16000, abs=160)  # within 10 ms
    assert np.abs(wav).max() <= 1.0
    assert np.abs(wav[: 16000 // 4]).max() < 1e-3  # silent start kept in place
    assert np.sqrt(np.mean(wav[16000:] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # tone RMS
    wav8 = load_audio(media["wav"], sr=8000)
    assert len(wav8) == pytest.approx(SECONDS * 8000, abs=80)


def test_load_audio_segment(media):
    seg = load_audio(media["wav"], sr=16000, start=1.0, end=2.0)
    assert len(seg) == pytest.approx(16000, abs=160)
    assert np.abs(seg).max() > 0.4  # inside the tone
    head = load_audio(media["wav"], sr=16000, end=0.4)
    assert len(head) == pytest.approx(0.4 * 16000, abs=160)
    assert np.abs(head).max() < 1e-3  # inside the silence


def test_mp4_clip_streams_and_duration(media):
    info = probe(media["clip"])
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (320, 240)
    assert info.fps == pytest.approx(10)
    assert info.audio_rate == 16000
    assert info.duration == pytest.approx(SECONDS, abs=0.15)  # video as long as the audio (to a frame)
    wav = load_audio(media["clip"])
    assert len(wav) / 16000 == pytest.approx(SECONDS, abs=0.1)  # AAC adds < 0.1 s of priming


@pytest.mark.parametrize("fps", [1.0, 2.0, 5.0])
def test_load_frames_samples_at_fps(media, fps):
    frames = load_frames(media["clip"], fps=fps)
    assert all(isinstance(f, Frame) for f in frames)
    assert len(frames) == int(np.ceil(SECONDS * fps - 1e-6))
    ts = np.array([f.t for f in frames])
    assert np.allclose(np.diff(ts), 1 / fps, atol=0.11)
    img = frames[0].image
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8
    # the red half of the test image survives the H.264 round trip somewhere in the frame
    red = (img[..., 0] > 180) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 1000


def test_load_frames_window_and_limit(media):
    frames = load_frames(media["clip"], fps=5, start=1.0, end=2.0)
    assert len(frames) == 5
    assert frames[0].t == pytest.approx(1.0, abs=0.11) and frames[-1].t < 2.0
    assert len(load_frames(media["clip"], fps=10, max_frames=3)) == 3


def test_missing_file_raises_with_path(media):
    missing = media["root"] / "nope" / "dia3_utt1.mp4"
    for fn in (probe, load_audio, load_frames):
        with pytest.raises(MediaError, match=r"missing file .*dia3_utt1\.mp4"):
            fn(missing)


def test_truncated_and_non_media_files_raise(media):
    for bad in (media["broken"], media["text"]):
        with pytest.raises(MediaError, match="not decodable"):
            probe(bad)
        with pytest.raises(MediaError, match=str(bad.name)):
            load_audio(bad)


def test_missing_streams_raise(media):
    assert not probe(media["video_only"]).has_audio
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(media["video_only"])
    assert not probe(media["audio_only"]).has_video
    with pytest.raises(MediaError, match="no video stream"):
        load_frames(media["audio_only"])
    assert len(load_audio(media["audio_only"])) / 16000 == pytest.approx(SECONDS, abs=0.1)


def test_empty_file_raises(media):
    empty = media["root"] / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        probe(empty)


@pytest.mark.parametrize("codec", ["pcm_s16le", "aac"])
def test_audio_with_timestamp_gaps_keeps_samples_at_their_time(tmp_path, espeak, codec):
    """Two spoken clips stamped at 0 s and 6 s with nothing between (a concatenated recording): the decoded audio
    is as long as the file, the gap is silence, and a segment after the gap holds the second clip — the samples
    the timestamps place there, which ffmpeg plays at those times (not the first clip's tail, not nothing)."""
    from merc.testing.synth import speak, write_gapped_audio
    a = load_audio(speak("Hello there, my friend.", "en-us+m6", tmp_path / "a.wav"))
    b = load_audio(speak("The weather is lovely today.", "en-gb-scotland+f4", tmp_path / "b.wav"))
    gap_at = 6.0
    path = write_gapped_audio([(0.0, a), (gap_at, b)], tmp_path / "gapped", codec=codec)
    info = probe(path)
    whole = load_audio(path)
    assert abs(len(whole) / 16000 - info.duration) < 0.1 and info.duration > gap_at + len(b) / 16000 - 0.1
    inside = load_audio(path, start=len(a) / 16000 + 0.5, end=gap_at - 0.5)  # inside the gap: silence
    assert inside.size == int(round((gap_at - 1.0 - len(a) / 16000) * 16000)) and np.abs(inside).max() < 1e-3
    seg = load_audio(path, start=gap_at, end=gap_at + len(b) / 16000)
    n = min(len(seg), len(b))
    r = np.corrcoef(seg[:n], b[:n])[0, 1]
    assert r > 0.9, f"segment after the gap does not hold the second clip (r={r:.2f})"
    # the whole-file decode and the cut (which seeks) agree, past the decoder's warm-up after a seek
    assert np.corrcoef(whole[int(gap_at * 16000):][2048:n], seg[2048:n])[0, 1] > 0.99


def test_stream_audio_places_samples_like_load_audio(tmp_path, espeak):
    """The streamed blocks of a recording with a timestamp gap are the samples load_audio gives, at the same
    times: segment times found on the stream (the no-transcript path) cut the same audio."""
    from merc.media.stream import stream_audio
    from merc.testing.synth import speak, write_gapped_audio
    a = load_audio(speak("Hello there, my friend.", "en-us+m6", tmp_path / "a.wav"))
    path = write_gapped_audio([(0.0, a), (5.0, a)], tmp_path / "gapped", codec="pcm_s16le")
    whole = load_audio(path)
    blocks = list(stream_audio(path, block_seconds=1.0))
    assert [round(t, 6) for t, _ in blocks] == [float(k) for k in range(len(blocks))]
    streamed = np.concatenate([b for _, b in blocks])
    assert len(streamed) == len(whole) and np.allclose(streamed, whole, atol=1e-6)
    assert abs(len(streamed) / 16000 - (5.0 + len(a) / 16000)) < 0.01
