"""The unseen fault-injection corpus (merc.testing.qc_faults) that ``benchmarks/bench_qc_unseen.py`` scores QC on:
a small one in the MELD layout, every fault kind present once, files damaged as the ground truth says."""
from __future__ import annotations

import csv
import shutil

import pytest

pytest.importorskip("av")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng not installed (apt-get install espeak-ng)", allow_module_level=True)

from merc.data import load_corpus  # noqa: E402
from merc.media import probe  # noqa: E402
from merc.testing.qc_faults import UNSEEN_VOICES, build_unseen_corpus, spread_faults  # noqa: E402
from merc.testing.synth import FAULTS, VOICES  # noqa: E402

pytestmark = pytest.mark.slow  # synthesizes speech, faces and clips


def test_spread_faults_is_even_and_sums():
    assert spread_faults(10) == {k: (2 if i < 10 - len(FAULTS) else 1) for i, k in enumerate(FAULTS)}
    assert sum(spread_faults(32).values()) == 32


def test_unseen_voices_are_not_the_test_voices():
    assert not {v for v, _, _ in UNSEEN_VOICES.values()} & set(VOICES)


def test_small_unseen_corpus_has_every_fault_as_recorded(tmp_path, shared_data):
    n = 2 * len(FAULTS)
    fx = build_unseen_corpus(tmp_path, meld_csv=shared_data / "meld" / "train_sent_emo.csv", n_utterances=n,
                             fault_rate=0.5, seed=3, too_long_seconds=2.0)
    assert sorted(fx.faults.values()) == sorted(FAULTS)  # one of each kind, on distinct utterances
    rows = list(csv.DictReader(open(fx.data_dir / "train_sent_emo.csv", encoding="utf-8")))
    assert len(rows) == n == len(fx.utterances)
    corpus = load_corpus("meld", fx.data_dir, media_dir=fx.media_dir, splits=("train",))
    assert len(corpus.utterances("train")) == n
    for uid, u in fx.utterances.items():
        media = fx.media_dir / "train_splits" / f"{uid.split('_', 1)[1]}.mp4"
        assert u.media == str(media)
        if u.fault == "missing":
            assert not media.exists(), uid
            continue
        if u.fault == "corrupt":
            continue  # truncated: whether the container still opens depends on where it was cut
        info = probe(media)
        assert info.has_video, uid
        assert info.has_audio == (u.fault != "no_audio"), uid
        assert (u.face == -1) == (u.fault == "no_face"), uid
        if u.fault == "swapped_speaker":
            assert u.label_speaker != u.true_speaker
        elif u.fault == "wrong_transcript":
            assert u.label_text.lower() != u.true_text.lower()
        else:
            assert (u.label_speaker, u.label_text) == (u.true_speaker, u.true_text)
    long_ = next(u for u in fx.utterances.values() if u.fault == "too_long")
    short = next(u for u in fx.utterances.values() if u.fault is None)
    assert probe(long_.media).duration > 2.0 and probe(short.media).duration < probe(long_.media).duration
