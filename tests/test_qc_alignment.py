"""Alignment QC: wrong transcripts are flagged, right ones pass; label-free calibration separates them."""
from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("pocketsphinx")
pytest.importorskip("jiwer")
pytest.importorskip("rapidfuzz")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng not installed (apt-get install espeak-ng)", allow_module_level=True)

from merc.data import load_corpus  # noqa: E402
from merc.data.schema import Utterance  # noqa: E402
from merc.qc.alignment import (  # noqa: E402
    METRICS,
    AlignmentCalibration,
    AlignmentCheck,
    AlignmentConfig,
    best_joint_thresholds,
    calibrate_alignment,
    calibrate_from_scores,
    derangement,
    normalize,
    roc_auc,
)
from merc.qc.base import QCItem  # noqa: E402
from merc.testing.synth import build_corpus_fixture  # noqa: E402

pytestmark = pytest.mark.slow  # its module fixture synthesizes speech and runs pocketsphinx (~80 s)


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """12 MELD-layout clips, 3 with another utterance's transcript; measured once with the default config."""
    root = tmp_path_factory.mktemp("alignment")
    fx = build_corpus_fixture(root, layout="meld", n_dialogues=3, utts_per_dialogue=4,
                              faults={"wrong_transcript": 3}, seed=5, cache_dir=root / "tts")
    corpus = load_corpus("meld", fx.data_dir, fx.media_dir)
    items = [QCItem(u, c.conversation_id, s, u.video) for s in corpus.splits for c in corpus[s] for u in c]
    check = AlignmentCheck(AlignmentConfig(asr="pocketsphinx"))  # this file tests the pocketsphinx path
    check.config.cache_size = len(items)  # keep every analysis: calibration below reuses them
    t = time.perf_counter()
    measurements = {it.utterance_id: check.measure(it) for it in items}
    print(f"\nalignment measure: {(time.perf_counter() - t) / len(items):.2f} s per utterance")
    return fx, items, check, measurements


def test_wrong_transcripts_flagged_right_ones_pass(run):
    fx, items, check, measurements = run
    flags = {f.utterance_id: f for f in check.judge(items, measurements)}
    wrong = [u for u, f in fx.faults.items() if f == "wrong_transcript"]
    assert len(wrong) == 3
    for uid in wrong:
        f = flags[uid]
        assert not f.passed, f
        assert f.reason.startswith("transcript does not match the audio: ")
    for uid in fx.clean:
        assert flags[uid].passed, flags[uid]
        assert flags[uid].reason.startswith("ok: ")
    # the forced alignment succeeds on every right transcript here
    assert all(measurements[u]["align_ok"] == 1 for u in fx.clean)


def test_measurements_hold_all_metrics(run):
    fx, items, _, measurements = run
    for uid, m in measurements.items():
        assert set(METRICS) <= set(m)
        assert 0.0 <= m["fuzzy"] <= 1.0 and m["wer"] >= 0.0 and 0.0 <= m["align_coverage"] <= 1.0
        assert isinstance(m["hypothesis"], str) and m["words"] == len(normalize(fx.utterances[uid].label_text))
    # free decoding is weak on espeak speech but not useless: right transcripts score better on average
    clean = [measurements[u] for u in fx.clean]
    wrong = [measurements[u] for u, f in fx.faults.items() if f == "wrong_transcript"]
    assert np.mean([m["fuzzy"] for m in clean]) > np.mean([m["fuzzy"] for m in wrong])


def test_label_free_calibration_separates_with_forced_alignment(run, tmp_path):
    fx, items, check, _ = run
    clean_items = [it for it in items if it.utterance_id not in fx.faults]
    t = time.perf_counter()
    cal = calibrate_alignment(clean_items, check.score, seed=0)
    print(f"\ncalibration ({len(clean_items)} true + {len(clean_items)} mismatched pairs, "
          f"{(time.perf_counter() - t) / len(clean_items):.2f} s per utterance): rule {cal.rule} "
          f"{cal.rule_thresholds}, "
          f"AUC {{{', '.join(f'{k}: {v:.3f}' for k, v in cal.auc.items())}}}, "
          f"thresholds {{{', '.join(f'{k}: {v:.3g}' for k, v in cal.thresholds.items())}}}")
    assert (cal.n_true, cal.n_mismatched) == (9, 9)
    assert set(cal.auc) == set(METRICS) and set(cal.thresholds) == set(METRICS)
    assert cal.auc["align_coverage"] > 0.9
    assert cal.auc["align_ok"] > 0.75
    assert 1 <= len(cal.rule) <= 2 and set(cal.rule) <= set(METRICS)
    assert cal.rule_balanced_accuracy >= max(cal.balanced_accuracy.values())
    back = AlignmentCalibration.load(cal.save(tmp_path / "cal.json"))
    assert back == cal
    # the check adopts it
    check2 = AlignmentCheck()
    check2.use_calibration(back)
    assert check2.config.rule == tuple(cal.rule)
    assert all(check2.config.thresholds[m] == cal.rule_thresholds[m] for m in cal.rule)


def test_check_calibrate_reuses_its_measurements(run):
    import copy
    fx, items, check, measurements = run
    clean_items = [it for it in items if it.utterance_id not in fx.faults]
    saved = copy.deepcopy(check.config)
    calls = []
    free_run = check._decoders().run

    def counting_run(decoder, pcm):
        calls.append(decoder is check._decoders().free)
        return free_run(decoder, pcm)
    check._decoders().run = counting_run
    try:
        cal = check.calibrate(clean_items, measurements, seed=0)
        assert check.config.rule == tuple(cal.rule)
    finally:
        check.config = saved
        del check._decoders().run
    assert not any(calls)  # no second free decoding: hypotheses come from the measurements
    direct = calibrate_alignment(clean_items, check.score, seed=0)
    assert cal.auc == pytest.approx(direct.auc)


def test_bad_media_is_an_error_not_an_exception(tmp_path):
    check = AlignmentCheck()
    u = Utterance("u1", "A", "Hello there.")
    items = [QCItem(u, "c", "train", str(tmp_path / "gone.mp4"))]
    m = check.measure(items[0])
    assert "error" in m and "gone.mp4" in m["error"]
    (flag,) = check.judge(items, {"u1": m})
    assert not flag.passed and flag.reason.startswith("audio: missing file")


def test_normalize():
    assert normalize("Oh, I DON’T know... 42 cats-and dogs!") == ["oh", "i", "don't", "know", "forty", "two", "cats",
                                                                  "and", "dogs"]
    assert normalize("") == []


def test_roc_auc_and_thresholds():
    assert roc_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert roc_auc([0, 1], [0, 1]) == 0.5
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert math.isnan(roc_auc([], [1]))
    t, bacc = best_joint_thresholds(np.array([[0.8], [0.9], [0.7]]), np.array([[0.1], [0.2], [0.75]]))
    assert bacc == pytest.approx(5 / 6) and 0.2 < t[0] <= 0.7
    # two metrics: positives need both high; each negative is low in one of them
    pos = np.array([[0.9, 0.9], [0.8, 0.95], [0.95, 0.8]])
    neg = np.array([[0.1, 0.9], [0.9, 0.1], [0.85, 0.2]])
    t, bacc = best_joint_thresholds(pos, neg)
    assert bacc == 1.0 and (pos >= t).all() and not (neg >= t).all(1).any()


def test_calibration_prefers_a_pair_only_when_it_helps():
    # coverage alone cannot separate (a negative aligned with coverage 0.81 > a positive's 0.2), nor llr
    # alone (a negative at -4.0 > a positive at -4.2); together they do
    true = [{"align_coverage": c, "align_llr": llr, "wer": 0.5}
            for c, llr in [(0.9, -2), (1.0, -3), (0.2, -2.5), (0.95, -4.2)]]
    wrong = [{"align_coverage": c, "align_llr": llr, "wer": 0.5}
             for c, llr in [(0.0, None), (0.0, None), (0.81, -6.0), (0.1, -4.0)]]
    cal = calibrate_from_scores(true, wrong, metrics=("align_coverage", "align_llr", "wer"))
    assert cal.rule == ["align_coverage", "align_llr"] and cal.rule_balanced_accuracy == 1.0
    assert cal.balanced_accuracy["align_coverage"] < 1.0 and cal.auc["wer"] == 0.5
    assert cal.rule_thresholds["align_coverage"] < 0.2 and -6.0 < cal.rule_thresholds["align_llr"] < -4.2
    single = calibrate_from_scores(true, wrong, metrics=("align_coverage", "align_llr"), max_rule=1)
    assert len(single.rule) == 1


def test_derangement_pairs_different_texts():
    texts = ["Yeah.", "yeah!", "No way.", "Okay then.", "What?"]
    part = derangement(texts, seed=3)
    for i, j in enumerate(part):
        assert i != j and normalize(texts[i]) != normalize(texts[j])
    with pytest.raises(ValueError, match="two different"):
        derangement(["Yeah.", "yeah"])
