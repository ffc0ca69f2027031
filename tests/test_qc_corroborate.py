"""Corroboration: a weak failure of one QC check stands unless another check verified the utterance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from merc.data.schema import Conversation, Corpus, Utterance
from merc.errors import ConfigError
from merc.qc.base import Flag, QCItem
from merc.qc.config import QCConfig
from merc.qc.corroborate import corroborate, vouches
from merc.qc.pipeline import QCPipeline
from merc.qc.speaker import SpeakerCheckConfig, SpeakerIdentityCheck

# fake checks (module level: a spawn pool would pickle them by reference)


class _Fake:
    def __init__(self, config=None):
        pass

    def measure(self, item: QCItem) -> dict:
        return {"conv": item.conversation_id}


class Doubter(_Fake):
    """Fails every utterance: weakly those of conversation c0-c3, strongly those of c4."""
    name = "doubter"

    def judge(self, items, measurements) -> list[Flag]:
        return [Flag(it.utterance_id, self.name, False, 0.5, 0.6, "doubtful", weak=it.conversation_id != "c4")
                for it in items]


class Witness(_Fake):
    """Per conversation: c0 verified (a pass with a score), c1 a pass without a score (nothing verified),
    c2 failed, c3 not measured, c4 verified."""
    name = "witness"

    def judge(self, items, measurements) -> list[Flag]:
        out = []
        for it in items:
            c, uid = it.conversation_id, it.utterance_id
            out.append({"c0": Flag(uid, self.name, True, 0.2, 0.5, "matched at 0.20"),
                        "c1": Flag(uid, self.name, True, None, 0.5, "not verified: no gallery"),
                        "c2": Flag(uid, self.name, False, 0.9, 0.5, "someone else"),
                        "c3": Flag(uid, self.name, False, None, None, "not measured: no video"),
                        "c4": Flag(uid, self.name, True, 0.1, 0.5, "matched at 0.10")}[c])
        return out


FACTORIES = {"doubter": Doubter, "witness": Witness}


def make_corpus(root: Path) -> Corpus:
    convs = [Conversation(f"c{c}", "train", [Utterance(f"c{c}_u{u}", "A", f"line {c} {u}", "joy",
                                                       audio=str(root / f"c{c}_u{u}.wav")) for u in range(2)])
             for c in range(5)]
    return Corpus(name="fake", splits={"train": convs}, labels=["joy"], root=str(root))


def run(tmp_path: Path, checks: list[str], **kw):
    cfg = QCConfig(checks=checks, factories=FACTORIES, gate_on_integrity=False, **kw)
    return QCPipeline(cfg).run(make_corpus(tmp_path), tmp_path / "qc", progress=False)


# tests

def test_weak_failure_is_kept_only_when_another_check_verified_it(tmp_path: Path) -> None:
    res = run(tmp_path, ["doubter", "witness"], corroborate={"doubter": ["witness"]})
    flags = {f.utterance_id: f for f in res.by_check("doubter")}
    assert sorted(u for u, f in flags.items() if f.passed) == ["c0_u0", "c0_u1"]
    assert flags["c0_u0"].overruled_by == "witness" and flags["c0_u0"].reason.startswith("kept: doubtful")
    assert "witness check verified it (matched at 0.20)" in flags["c0_u0"].reason
    assert all(flags[u].overruled_by is None for u in flags if not u.startswith("c0"))
    # c1: a pass without a score vouches for nothing; c2 failed; c3 not measured; c4: strong failure
    assert sorted(res.kept) == ["c0_u0", "c0_u1"]
    assert res.summary["corroboration"] == {"doubter": {"weak": 8, "overruled": 2, "by": ["witness"]}}
    # the outcome is stated, not hidden in the reason text: "kept", not "passed" (#27)
    assert res.summary["checks"]["doubter"]["total"]["passed"] == 0
    assert res.summary["checks"]["doubter"]["total"]["kept"] == 2
    assert "doubter: 8 failure(s) on weak evidence, 2 kept because the witness check verified them" in res.table()
    html = (tmp_path / "qc" / "report.html").read_text()
    assert "8 failure(s) on weak evidence; 2 kept" in html and "c0_u1" in html
    rows = (tmp_path / "qc" / "flags.csv").read_text()
    assert "c0_u0,doubter,kept,True" in rows and ",doubter,passed," not in rows
    from merc.qc.report import read_flags_csv
    back = {f.utterance_id: f for f in read_flags_csv(tmp_path / "qc" / "flags.csv") if f.check == "doubter"}
    assert back["c0_u0"].status == "kept" and back["c0_u0"].overruled_by == "witness"


def test_weak_failures_stand_without_a_witness(tmp_path: Path) -> None:
    off = run(tmp_path / "off", ["doubter", "witness"], corroborate={})
    assert off.kept == [] and "corroboration" not in off.summary
    alone = run(tmp_path / "alone", ["doubter"], corroborate={"doubter": ["witness"]})  # the witness is not run
    assert alone.kept == [] and alone.summary["corroboration"]["doubter"] == {"weak": 8, "overruled": 0, "by": []}


def test_vouches_needs_a_measured_pass_with_a_score() -> None:
    assert vouches(Flag("u", "faces", True, 0.3, 0.6, "speaker 'A' is face track 0"))
    assert not vouches(Flag("u", "faces", True, None, 0.6, "not verified: no face gallery"))
    assert not vouches(Flag("u", "faces", False, 0.9, 0.6, "labelled speaker not among face tracks"))
    assert not vouches(None)
    assert not vouches(Flag("u", "faces", True, 0.3, 0.6, "speaker 'A' is face track 1 of 2", can_vouch=False))
    strong = Flag("u", "speaker", False, 0.2, 0.7, "voice far")
    assert corroborate([strong, Flag("u", "faces", True, 0.3, 0.6, "ok")], {"speaker": ["faces"]})[0][0] == strong


@pytest.mark.parametrize("bad", [{"speaker": ["nope"]}, {"nope": ["faces"]}, {"speaker": ["speaker"]}])
def test_config_rejects_unknown_or_self_corroboration(bad: dict) -> None:
    with pytest.raises(ConfigError, match="corroborate"):
        QCConfig(corroborate=bad)


def test_no_corroborate_flag_turns_it_off() -> None:
    from merc.cli import build_parser
    from merc.qc.cli import build_config
    base = ["qc", "--dataset", "jsonl", "--data-dir", "d", "--out", "o"]
    assert build_config(build_parser().parse_args(base)).corroborate == {"speaker": ["faces"]}
    assert build_config(build_parser().parse_args([*base, "--no-corroborate"])).corroborate == {}


def _item(uid: str, speaker: str) -> QCItem:
    return QCItem(Utterance(uid, speaker, "text", audio=f"/x/{uid}.wav"), "c0", "train", f"/x/{uid}.wav")


def test_speaker_check_marks_near_misses_weak_and_clear_mismatches_strong() -> None:
    """Two similar voices A and B (centroid cosine 0.95) and a distinct C: B's voice labelled A loses by
    about 0.05 (weak); C's voice labelled A, or a voice at cosine 0.5 to A, fails strongly; a voice at
    cosine 0.65 to A (below min_cos 0.70, above strong_min_cos 0.60) is weak."""
    rng = np.random.default_rng(0)
    e = np.linalg.qr(rng.standard_normal((256, 6)))[0].T  # (6, 256) orthonormal
    centre = {"A": e[0], "B": 0.95 * e[0] + np.sqrt(1 - 0.95 ** 2) * e[1], "C": e[2]}

    def voice(v: np.ndarray) -> list[float]:
        x = v + 0.004 * rng.standard_normal(256)
        return (x / np.linalg.norm(x)).tolist()

    items, meas = [], {}
    for name, c in centre.items():
        for j in range(6):
            items.append(_item(f"{name}{j}", name))
            meas[f"{name}{j}"] = {"embedding": voice(c)}
    cases = {"b_as_a": centre["B"], "c_as_a": centre["C"], "far_weak": 0.65 * e[0] + np.sqrt(1 - 0.65 ** 2) * e[3],
             "far_strong": 0.5 * e[0] + np.sqrt(1 - 0.5 ** 2) * e[4]}
    for uid, v in cases.items():
        items.append(_item(uid, "A"))
        meas[uid] = {"embedding": voice(v)}
    flags = {f.utterance_id: f for f in SpeakerIdentityCheck().judge(items, meas)}
    assert all(flags[f"{n}{j}"].passed for n in centre for j in range(6))
    assert not flags["b_as_a"].passed and flags["b_as_a"].weak and "matches 'B'" in flags["b_as_a"].reason
    assert "weak evidence" in flags["b_as_a"].reason
    assert not flags["c_as_a"].passed and not flags["c_as_a"].weak and "weak" not in flags["c_as_a"].reason
    assert not flags["far_weak"].passed and flags["far_weak"].weak and "far from" in flags["far_weak"].reason
    assert not flags["far_strong"].passed and not flags["far_strong"].weak
    # a stricter line: nothing is weak
    strict = SpeakerIdentityCheck(SpeakerCheckConfig(strong_margin=0.0, strong_min_cos=1.0)).judge(items, meas)
    assert not any(f.weak for f in strict)
