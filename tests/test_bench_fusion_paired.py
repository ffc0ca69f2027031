"""benchmarks/fusion_paired.py: weighted F1 from confusion counts, and the paired bootstrap over dialogues."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paired():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fusion_paired
    return fusion_paired


def test_weighted_f1_from_confusion_is_sklearns(paired):
    rng = np.random.default_rng(0)
    for k in (2, 5, 7):
        y = rng.integers(0, k - 1, 200)          # the last class never true: zero support
        pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
        conf = np.zeros((k, k))
        np.add.at(conf, (y, pred), 1)
        want = f1_score(y, pred, labels=list(range(k)), average="weighted", zero_division=0)
        assert paired.weighted_f1_from_confusion(conf) == pytest.approx(want, abs=1e-12)


def _preds(y, groups, *rows):
    return {"y": y, "groups": groups, "pred": np.stack(rows), "k": 3}


def test_paired_delta_centres_on_the_difference_and_knows_a_tie(paired):
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 9)               # 40 dialogues of 9 utterances
    y = rng.integers(0, 3, groups.size)
    noisy = np.where(rng.random(groups.size) < 0.5, y, (y + 1) % 3)
    better = np.where(rng.random(groups.size) < 0.9, y, (y + 1) % 3)
    same = _preds(y, groups, noisy)
    delta, lo, hi = paired.paired_delta(same, same)
    assert (delta, lo, hi) == (0.0, 0.0, 0.0)
    delta, lo, hi = paired.paired_delta(_preds(y, groups, better, better), same)
    full = 100 * (f1_score(y, better, average="weighted") - f1_score(y, noisy, average="weighted"))
    assert delta == pytest.approx(full) and 0 < lo < delta < hi
    one_flip = noisy.copy()
    one_flip[np.flatnonzero(noisy != y)[0]] = y[np.flatnonzero(noisy != y)[0]]  # one utterance put right
    delta, lo, hi = paired.paired_delta(_preds(y, groups, one_flip), same)
    assert 0 < delta < 1 and lo <= 0 <= hi                                        # the test set cannot tell


def test_paired_delta_refuses_different_utterances(paired):
    y = np.array([0, 1, 2, 0])
    a = _preds(y, np.array([0, 0, 1, 1]), y)
    b = _preds(y[::-1].copy(), np.array([0, 0, 1, 1]), y)
    with pytest.raises(ValueError, match="same test utterances"):
        paired.paired_delta(a, b)
