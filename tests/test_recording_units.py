"""The recording pipeline's steps on hand-made inputs (no models): VAD regions from probabilities, windows for
Whisper, words to utterances, clustering with the speaker count estimated or given, the transcript writer
against the reader, streamed decoding against whole-file decoding, the time-axis timeline."""
from __future__ import annotations

import numpy as np
import pytest

from merc.data.schema import Conversation, Utterance
from merc.data.transcript import read_transcript, write_transcript
from merc.errors import ConfigError, InputError
from merc.recording.asr import Word, windows
from merc.recording.diarize import DiarizeConfig, RegionVoice, cluster, diarize
from merc.recording.segment import SegmentConfig, assign_words, build_segments, split_at_changes
from merc.recording.vad import FRAME, SAMPLE_RATE, Region, RegionTracker, VadConfig

F = FRAME / SAMPLE_RATE  # 0.032 s


def _probs(spans: list[tuple[int, int]], n: int) -> np.ndarray:
    p = np.full(n, 0.05, np.float32)
    for a, b in spans:
        p[a:b] = 0.9
    return p


def test_region_tracker_hysteresis_and_streaming():
    cfg = VadConfig(min_silence=0.15, min_speech=0.25, pad=0.0, max_region=28.0)
    # speech 10-40, a 3-frame dip (0.096 s < min_silence: same region), speech 43-60, long silence, 5-frame blip
    # (0.16 s < min_speech: dropped), speech 200-260 running to the end of the stream
    p = _probs([(10, 40), (43, 60), (100, 105), (200, 260)], 260)
    p[41] = 0.4  # between the two thresholds (0.35..0.5): neither starts nor ends silence
    whole = RegionTracker(cfg)
    regions = whole.feed(p) + whole.finish()
    assert [(round(r.start / F), round(r.end / F)) for r in regions] == [(10, 60), (200, 260)]
    streamed = RegionTracker(cfg)
    got = []
    for k in range(0, 260, 37):  # any block size gives the same regions
        got += streamed.feed(p[k:k + 37])
    assert got + streamed.finish() == regions


def test_region_tracker_closes_long_regions_and_pads():
    cfg = VadConfig(max_region=1.0, pad=0.05, min_silence=0.15)
    t = RegionTracker(cfg)
    regions = t.feed(_probs([(0, 100)], 120)) + t.finish()
    assert all(r.end - r.start <= 1.0 + 0.1 for r in regions) and len(regions) == 4
    assert all(a.end <= b.start for a, b in zip(regions, regions[1:]))  # padding never overlaps


def test_windows_span_at_most_the_window():
    regions = [Region(0, 5), Region(6, 12), Region(20, 29), Region(31, 35), Region(70, 71)]
    assert windows(regions, 30.0) == [regions[:3], regions[3:4], regions[4:]]


def _w(t0: float, t1: float, text: str) -> Word:
    return Word(t0, t1, " " + text, 0.9)


def test_words_to_regions_and_split_at_changes():
    regions = [Region(0.0, 2.0), Region(3.0, 6.0)]
    words = [_w(0.1, 0.5, "hi"), _w(2.1, 2.3, "there"), _w(3.1, 3.5, "one"), _w(3.6, 4.0, "two"),
             _w(4.5, 4.9, "three"), _w(9.0, 9.5, "far")]
    per = assign_words(regions, words, snap=0.5)
    assert [[w.text.strip() for w in ws] for ws in per] == [["hi", "there"], ["one", "two", "three"]]  # far dropped
    pieces = split_at_changes(regions[1], per[1], 0, [(4.2, 1)])  # change nearest the gap between two and three
    assert [(p[0], p[1], p[2], [w.text.strip() for w in p[3]]) for p in pieces] == [
        (3.0, 4.0, 0, ["one", "two"]), (4.5, 6.0, 1, ["three"])]


def test_build_segments_merges_names_and_splits_long():
    regions = [Region(0, 1), Region(1.2, 2), Region(3, 4), Region(5, 6)]
    words = [_w(0.1, 0.9, "a"), _w(1.3, 1.9, "b"), _w(3.1, 3.9, "c"), _w(5.1, 5.9, "d")]
    segs = build_segments(regions, [7, 7, 3, 7], [[], [], [], []], words, SegmentConfig(merge_pause=0.4))
    # regions 0 and 1 (same speaker, 0.2 s apart) merge; speakers renamed in order of first appearance
    assert [(s.start, s.end, s.speaker, s.text) for s in segs] == [(0, 2, "S1", "a b"), (3, 4, "S2", "c"),
                                                                   (5, 6, "S1", "d")]
    long = build_segments([Region(0, 10)], [0], [[]], [_w(0.1, 1, "x"), _w(1.1, 4, "y"), _w(6, 9.9, "z")],
                          SegmentConfig(max_seconds=5.0))
    assert [s.text for s in long] == ["x y", "z"]  # cut at the widest word gap
    assert build_segments(regions, [0] * 4, [[]] * 4, []) == []  # no words: no utterances


def _voices(rng, centres: np.ndarray, counts: list[int], noise: float = 0.15) -> tuple[list[RegionVoice], list[int]]:
    voices, truth, t = [], [], 0.0
    order = [k for k, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(order)
    for k in order:
        e = centres[k] + noise * rng.standard_normal(centres.shape[1])
        voices.append(RegionVoice(Region(t, t + 2), (e / np.linalg.norm(e)).astype(np.float32)))
        truth.append(k)
        t += 3
    return voices, truth


@pytest.mark.parametrize("k", [2, 3, 5])
def test_clustering_estimates_the_number_of_speakers(k):
    rng = np.random.default_rng(k)
    centres = rng.standard_normal((k, 64))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    voices, truth = _voices(rng, centres, [6] * k, noise=0.02)
    d = diarize(voices, DiarizeConfig())
    assert d.num_speakers == k
    pairs = {(a, b) for a, b in zip(truth, d.labels)}
    assert len(pairs) == k  # a one-to-one map between true and found speakers
    assert d.labels[0] == 0  # clusters numbered by first appearance


def test_clustering_honours_given_counts():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 64))
    x = np.stack([c + 0.02 * rng.standard_normal(64) for c in centres for _ in range(4)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert len(set(cluster(x, DiarizeConfig(num_speakers=2)))) == 2
    assert len(set(cluster(x, DiarizeConfig(max_speakers=2)))) == 2
    assert len(set(cluster(x, DiarizeConfig(min_speakers=4)))) == 4
    with pytest.raises(ConfigError, match="min-speakers"):
        DiarizeConfig(min_speakers=3, max_speakers=2).validate()
    # no region long enough to embed: one speaker
    d = diarize([RegionVoice(Region(0, 0.5), None)] * 2)
    assert d.labels == [0, 0] and d.num_speakers == 1


@pytest.mark.parametrize("suffix", [".srt", ".json"])
def test_written_transcript_reads_back_the_same(tmp_path, suffix):
    segs = [{"speaker": "S1", "text": "Time: ten o'clock, okay?", "start": 0.123, "end": 2.5},
            {"speaker": "S2", "text": "Yes.", "start": 3601.007, "end": 3602.999}]
    path = write_transcript(segs, tmp_path / f"t{suffix}")
    back = [{k: s[k] for k in ("speaker", "text", "start", "end")} for s in read_transcript(path)]
    assert back == segs
    with pytest.raises(InputError, match="expected .srt or .json"):
        write_transcript(segs, tmp_path / "t.txt")


def test_stream_audio_equals_whole_file_decoding(tmp_path):
    from merc.media.decode import load_audio
    from merc.media.stream import stream_audio
    from merc.testing.synth import make_audio_only_clip, write_wav
    rng = np.random.default_rng(0)
    wav = write_wav((0.1 * rng.standard_normal(int(2.3 * SAMPLE_RATE))).astype(np.float32), tmp_path / "a.wav")
    for path in (wav, make_audio_only_clip(wav, tmp_path / "a.mp4")):
        blocks = list(stream_audio(path, block_seconds=0.5))
        assert [round(t, 3) for t, _ in blocks[:3]] == [0.0, 0.5, 1.0]
        assert all(len(b) == 8000 for _, b in blocks[:-1])
        np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), load_audio(path), atol=1e-6)


def test_time_axis_timeline_draws_each_speaker_lane(tmp_path):
    from merc.training.turns import has_times, turn_figure, write_turn_timelines
    utts = [Utterance(f"u{i}", s, "x", None, a, b) for i, (s, a, b) in
            enumerate([("S1", 0.5, 2.0), ("S2", 2.4, 4.0), ("S1", 3.8, 6.0)])]
    conv = Conversation("talk", "predict", utts)
    assert has_times(conv) and not has_times(Conversation("c", "p", [Utterance("u", "A", "x")]))
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    fig = turn_figure(conv, probs, ["joy", "anger"], 0, "t", {"text": np.ones(3, bool), "audio": np.array([1, 0, 1],
                                                                                                         bool)})
    lanes = {a.get_gid(): a for a in fig.findobj(lambda a: (a.get_gid() or "").startswith("turn:"))}
    assert set(lanes) == {"turn:S1", "turn:S2"}
    assert len(lanes["turn:S1"].get_paths()) == 2 and fig.axes[0].get_xlim()[0] < 0.5 < 6.0 < fig.axes[0].get_xlim()[1]
    [absent] = fig.findobj(lambda a: a.get_gid() == "absent:audio")
    assert np.asarray(absent.get_offsets())[:, 0].tolist() == [3.2]  # the middle utterance's midpoint
    pages = write_turn_timelines(conv, probs, ["joy", "anger"], tmp_path, "talk", per_page=2)
    assert [p.name for p in pages] == ["talk_timeline_p01.png", "talk_timeline_p02.png"]


def test_voice_embedder_partials_equal_resemblyzer():
    """The embedder's own mel + forward gives resemblyzer's embed_utterance output (same partials, same mean)."""
    pytest.importorskip("resemblyzer")
    from resemblyzer import audio as ra

    from merc.recording.diarize import VoiceEmbedder, mel_spectrogram
    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * SAMPLE_RATE)) / SAMPLE_RATE
    wav = (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * np.sin(3 * t))) + 0.02 * rng.standard_normal(len(t)))
    wav = wav.astype(np.float32)
    np.testing.assert_allclose(mel_spectrogram(wav), ra.wav_to_mel_spectrogram(wav), rtol=1e-4, atol=1e-5)
    embedder = VoiceEmbedder()
    emb, part, slices = embedder.partials(wav, 2.0)
    ref, ref_part, ref_slices = embedder.encoder.model.embed_utterance(wav, return_partials=True, rate=2.0,
                                                                       min_coverage=0.5)
    assert slices == ref_slices and part.shape == (len(ref_slices), 256)
    np.testing.assert_allclose(part, ref_part, atol=1e-5)
    np.testing.assert_allclose(emb, ref, atol=1e-5)


def test_silenced_window_keeps_regions_and_zeroes_gaps():
    from merc.recording.asr import silenced
    wav = np.ones(5 * SAMPLE_RATE, np.float32)  # the recording from t0 = 1 s on
    start, chunk = silenced(wav, 1.0, [Region(1.5, 2.0), Region(3.0, 3.5)])
    assert start == 1.5 and len(chunk) == 2 * SAMPLE_RATE
    assert chunk[: SAMPLE_RATE // 2].all() and not chunk[SAMPLE_RATE // 2: int(1.5 * SAMPLE_RATE)].any()
    assert chunk[int(1.5 * SAMPLE_RATE):].all()


def test_transcribe_retries_empty_and_looping_regions_alone_then_caps():
    from merc.recording.asr import AsrConfig, Transcriber

    class Fake(Transcriber):  # Whisper replaced by canned words; the retry and cap logic is what is tested
        def __init__(self, batch_size):
            self.config = AsrConfig(batch_size=batch_size)
            self.alone: list[tuple[float, float]] = []

        def batch_words(self, chunks):  # the window: words for region A only, and a loop in region C
            ws = [Word(0.1, 0.4, " hello", 0.9)]
            ws += [Word(round(4.0 + 0.02 * i, 3), round(4.01 + 0.02 * i, 3), " no", 0.5) for i in range(40)]
            return [list(ws) for _ in chunks]

        def words(self, wav, offset):  # alone: region B has words; region C still loops
            self.alone.append((offset, round(offset + len(wav) / SAMPLE_RATE, 3)))
            if offset < 3.0:
                return [Word(offset + 0.1, offset + 0.3, " there", 0.8)]
            return [Word(offset + 0.01 * i, offset + 0.01 * i + 0.005, " no", 0.5) for i in range(50)]

    regions = [Region(0.0, 1.0), Region(2.0, 3.0), Region(4.0, 5.0)]
    wav = np.ones(6 * SAMPLE_RATE, np.float32)
    fake = Fake(batch_size=8)
    words = fake.transcribe([(0.0, wav, regions)])
    assert fake.alone == [(2.0, 3.0), (4.0, 5.0)]  # B (no words) and C (a loop) again, A kept
    assert [w.text for w in words[:2]] == [" hello", " there"]
    assert len(words) == 2 + int(6.0 * 1.0 + 2)  # C capped at 6 words per second + 2
    assert [w.start for w in words] == sorted(w.start for w in words)


def test_cluster_min_counts_speakers_on_long_regions_only():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 64))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    voices, truth = _voices(rng, centres[:2], [5, 5], noise=0.02)  # 2 s regions of two speakers
    short = []  # three 0.9 s regions whose embeddings look like a third voice
    for t in (1.0 + 6 * i for i in range(3)):
        e = centres[2] + 0.02 * rng.standard_normal(64)
        short.append(RegionVoice(Region(t + 1.05, t + 1.95), (e / np.linalg.norm(e)).astype(np.float32)))
    allv = sorted(voices + short, key=lambda v: v.region.start)
    assert diarize(allv, DiarizeConfig(cluster_min=0.0, refine=0)).num_speakers == 3  # every region clustered
    for refine in (0, 5):
        d = diarize(allv, DiarizeConfig(cluster_min=1.5, refine=refine))
        assert d.num_speakers == 2 and len(set(d.labels)) == 2
        long_labels = {(truth[voices.index(v)], lab) for v, lab in zip(allv, d.labels) if v in voices}
        assert len(long_labels) == 2  # the two long-region speakers are kept apart
        for v, lab in zip(allv, d.labels):
            if v in short:
                assert lab == int((d.centroids @ v.embedding).argmax())  # the nearest centroid
    # with min_embed above their length the short regions take the speaker of the nearest long region in time
    d = diarize(allv, DiarizeConfig(min_embed=1.0))
    assert d.num_speakers == 2
    for lab, v in zip(d.labels, allv):
        if v in short:
            j = min((i for i, u in enumerate(allv) if u not in short),
                    key=lambda i: abs(allv[i].region.start - v.region.start))
            assert lab == d.labels[j]


def test_packed_windows_join_regions_and_map_words_back():
    from merc.recording.asr import packed, unpack
    regions = [Region(1.0, 3.0), Region(10.0, 12.0), Region(40.0, 58.0), Region(90.0, 91.0)]
    # packed: up to 30 s of speech joined by 0.5 s gaps, spanning at most 60 s of the recording
    assert windows(regions, 30.0, 0.5, 60.0) == [regions[:3], regions[3:]]
    assert windows(regions, 30.0, 0.5, 20.0) == [regions[:2], regions[2:3], regions[3:]]
    wav = np.arange(13 * SAMPLE_RATE, dtype=np.float32)  # the recording from t0 = 0.5 s on
    chunk, shifts = packed(wav, 0.5, regions[:2], 0.5)
    assert len(chunk) == int(4.5 * SAMPLE_RATE)
    assert chunk[0] == 0.5 * SAMPLE_RATE and chunk[int(2.5 * SAMPLE_RATE)] == 9.5 * SAMPLE_RATE  # region 2's start
    assert not chunk[2 * SAMPLE_RATE:int(2.5 * SAMPLE_RATE)].any()  # the gap is silence
    words = unpack([Word(0.2, 0.6, " a", 1.0), Word(2.7, 3.1, " b", 1.0)], shifts)
    assert [(w.start, w.end) for w in words] == [(1.2, 1.6), (10.2, 10.6)]
