"""Decode once (merc.media.clip): the same samples and frames as merc.media.decode, each stream decoded once
per clip for every QC check and every media encoder of a chunk, and a prefetching thread that decodes ahead."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from merc.data.schema import Conversation, Corpus, Utterance  # noqa: E402
from merc.media import MediaError, load_audio, load_frames  # noqa: E402
from merc.media.clip import DECODES, ClipCache, MediaClip, Prefetcher, open_clip  # noqa: E402
from merc.testing.synth import make_clip, truncate_file, write_wav  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    sr = 16000
    out = {}
    for i, seconds in enumerate((1.5, 2.5, 3.5)):
        t = np.arange(int(seconds * sr)) / sr
        tone = (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32)
        image = np.full((96, 128, 3), 40 * (i + 1), np.uint8)
        out[i] = make_clip(write_wav(tone, root / f"t{i}.wav"), image, root / f"c{i}.mp4", fps=10)
    out["broken"] = truncate_file(make_clip(write_wav(tone, root / "b.wav"), image, root / "broken.mp4"), 0.4)
    return out


def test_clip_gives_what_decode_gives(media):
    clip = MediaClip(media[1])
    full = clip.audio(16000)
    np.testing.assert_array_equal(full, load_audio(media[1], sr=16000))
    # a cut ending after the audio (the 30 s cap of the speaker check / audio encoders) is the same decode
    np.testing.assert_array_equal(clip.audio(16000, None, 30.0), load_audio(media[1], sr=16000, end=30.0))
    # a real cut is decoded as asked
    np.testing.assert_array_equal(clip.audio(16000, 0.5, 1.5), load_audio(media[1], sr=16000, start=0.5, end=1.5))
    np.testing.assert_array_equal(clip.audio(16000, None, 1.0), load_audio(media[1], sr=16000, end=1.0))
    frames = clip.frames(2.0, None, None, 3)
    ref = load_frames(media[1], fps=2.0, max_frames=3)
    assert [f.t for f in frames] == [f.t for f in ref]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, ref))
    assert clip.decodes == {"audio": 3, "frames": 1}  # whole stream once, the two real cuts once each
    assert not full.flags.writeable  # shared between consumers: nobody may change it in place


def test_each_stream_is_decoded_once_and_errors_are_remembered(media):
    clip = MediaClip(media["broken"])
    for _ in range(3):
        with pytest.raises(MediaError):
            clip.audio(16000)
    assert clip.decodes["audio"] == 1
    with ClipCache() as cache:
        a, b = open_clip(media[0]), open_clip(str(media[0]))
        assert a is b and cache.clip(media[0]) is a
        a.audio(16000), b.audio(16000), a.info(), b.info()
        assert a.decodes == {"audio": 1, "probe": 1}
    assert open_clip(media[0]) is not a  # no active cache: a fresh clip


def test_prefetcher_decodes_ahead(media):
    with ClipCache() as cache:
        jobs = [(media[i], lambda c: c.audio(16000)) for i in range(3)]
        with Prefetcher(cache, jobs, ahead=3):
            for i in range(3):
                wav = open_clip(media[i]).audio(16000)  # waits for the thread's decode, never decodes twice
                assert len(wav) > 0
        assert sum(cache.clip(media[i]).decodes["audio"] for i in range(3)) == 3


def _corpus(media) -> Corpus:
    utts = [Utterance(f"dev_c0_u{i}", f"spk{i % 2}", "hello there", None, audio=str(media[i]), video=str(media[i]))
            for i in range(3)]
    return Corpus(name="clips", splits={"dev": [Conversation("dev_c0", "dev", utts)]}, labels=["neutral"])


class AudioProbe:
    """A QC check that decodes the utterance's audio (like alignment and speaker)."""
    name = "audio_probe"

    def __init__(self, config=None):
        self.config = config

    def measure(self, item) -> dict:
        return {"samples": len(open_clip(item.media).audio(16000, None, 30.0))}

    def judge(self, items, measurements):
        from merc.qc.base import Flag
        return [Flag(it.utterance_id, self.name, True, None, None, "ok") for it in items]


class AudioProbe2(AudioProbe):
    name = "audio_probe2"


def test_qc_decodes_each_clip_once_for_every_check(media, tmp_path):
    """Integrity (probe + audio) and two more audio checks: one audio decode per clip, not three."""
    from merc.qc.config import QCConfig
    from merc.qc.pipeline import QCPipeline
    cfg = QCConfig(checks=["integrity", "audio_probe", "audio_probe2"],
                   factories={"audio_probe": AudioProbe, "audio_probe2": AudioProbe2}, drop_on=[], corroborate={})
    before = DECODES.copy()
    res = QCPipeline(cfg).run(_corpus(media), tmp_path / "qc", progress=False)
    got = DECODES - before
    assert got["audio"] == 3 and got["probe"] == 3
    samples = {m["samples"] for m in res.measurements["audio_probe"].values()}
    assert samples == {len(load_audio(media[i], sr=16000)) for i in range(3)}


def test_audio_encoders_of_a_modality_share_each_decode(media, tmp_path):
    """Two audio encoders extracted together by the feature store decode each clip once."""
    from media_doubles import RmsAudio

    from merc.encoders.store import FeatureStore

    class RmsAudio2(RmsAudio):
        name, fingerprint = "rms-acct2", "rms-acct2-v1"

    store = FeatureStore(root=tmp_path / "store")
    conv = _corpus(media).splits["dev"]
    before = DECODES.copy()
    a, b = store.get_many("clips", "dev", conv, [RmsAudio(), RmsAudio2()], progress=False)
    assert (DECODES - before)["audio"] == 3
    np.testing.assert_array_equal(a.X, b.X)
    alone = FeatureStore(root=tmp_path / "alone").get_conversations("clips", "dev", conv, RmsAudio(), progress=False)
    np.testing.assert_array_equal(alone.X, a.X)
    assert Path(tmp_path / "store").is_dir()
