"""The QC pipeline with small fake checks: caching/resume, errors, gating, outputs, workers."""
from __future__ import annotations

import csv
import json
import os
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from merc.data import load_corpus
from merc.data.jsonl import parse_line
from merc.data.schema import Conversation, Corpus, Utterance
from merc.qc.base import Flag, QCItem
from merc.qc.cache import MeasureCache
from merc.qc.config import QCConfig
from merc.qc.pipeline import QCPipeline, build_items
from merc.qc.report import read_flags_csv

# fake checks (module level: the spawn pool pickles them by reference)

@dataclass
class FakeConfig:
    threshold: float = 0.3
    counter: str | None = None  # file that gets one line per measure call (works across processes)
    crash_after: int | None = None  # raise KeyboardInterrupt on call number crash_after + 1
    fail_on: str = "boom"  # utterance ids containing this raise ValueError in measure
    die_on: str | None = None  # utterance ids containing this kill the (worker) process


class FakeIntegrity:
    """Passes when the media file exists and is not empty; ``exists`` false gates later checks."""
    name = "integrity"

    def __init__(self, config: FakeConfig | None = None):
        self.config = config or FakeConfig()

    def measure(self, item: QCItem) -> dict:
        _count(self.config)
        p = Path(item.media)
        if not p.exists():
            return {"exists": False}
        return {"exists": True, "bytes": p.stat().st_size, "duration": 2.0}

    def judge(self, items, measurements) -> list[Flag]:
        out = []
        for it in items:
            m = measurements[it.utterance_id]
            ok = m["exists"] and m["bytes"] > 0
            out.append(Flag(it.utterance_id, self.name, ok, float(m.get("bytes", 0)), 1.0,
                            "ok" if ok else "media missing" if not m["exists"] else "empty file"))
        return out


class FakeScore:
    """A deterministic pseudo-random score per utterance text; fails below the threshold."""
    name = "fake_score"
    calls = 0  # in-process counter
    measure_fields = ("fail_on", "die_on")  # the threshold only changes judge

    def __init__(self, config: FakeConfig | None = None):
        self.config = config or FakeConfig()
        self.n = 0

    def measure(self, item: QCItem) -> dict:
        _count(self.config)
        FakeScore.calls += 1
        self.n += 1
        if self.config.crash_after is not None and self.n > self.config.crash_after:
            raise KeyboardInterrupt
        if self.config.die_on and self.config.die_on in item.utterance_id:
            os._exit(3)
        if self.config.fail_on in item.utterance_id:
            raise ValueError(f"cannot score {item.media}")
        return {"score": (zlib.crc32(item.utterance.text.encode()) % 1000) / 1000}

    def judge(self, items, measurements) -> list[Flag]:
        # corpus-level: the threshold is relative to the mean score, like a centroid-based check
        scores = [measurements[it.utterance_id]["score"] for it in items]
        mean = sum(scores) / len(scores)
        t = mean * self.config.threshold / 0.5
        return [Flag(it.utterance_id, self.name, s >= t, s, t, f"score {s:.3f} vs {t:.3f}")
                for it, s in zip(items, scores)]


def _count(cfg: FakeConfig) -> None:
    if cfg.counter:
        with open(cfg.counter, "a") as f:
            f.write("x\n")


def _calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


FACTORIES = {"integrity": FakeIntegrity, "fake_score": FakeScore}


# helpers

def make_corpus(root: Path, n_conv: int = 3, n_utt: int = 4) -> Corpus:
    """Clips are small text files; train_c1_u2 is missing, train_c0_u1 is a 'boom' utterance."""
    splits = {}
    for split in ("train", "dev"):
        convs = []
        for c in range(n_conv if split == "train" else 2):
            utts = []
            for u in range(n_utt):
                uid = f"{split}_c{c}_u{u}" + ("_boom" if (split, c, u) == ("train", 0, 1) else "")
                clip = root / "clips" / f"{uid}.mp4"
                if (split, c, u) != ("train", 1, 2):
                    clip.parent.mkdir(parents=True, exist_ok=True)
                    clip.write_bytes(b"fake media " + uid.encode())
                utts.append(Utterance(uid, f"spk{u % 2}", f"line {c} {u} of {split}", ["joy", "anger"][u % 2],
                                      start=float(u), end=float(u) + 1.5, audio=str(clip), video=str(clip)))
            convs.append(Conversation(f"{split}_c{c}", split, utts))
        splits[split] = convs
    return Corpus(name="fake", splits=splits, labels=["anger", "joy"], root=str(root))


def config(tmp_path: Path, **kw) -> QCConfig:
    counter = tmp_path / "calls.txt"
    fake = FakeConfig(counter=str(counter), crash_after=kw.pop("crash_after", None))
    return QCConfig(checks=["integrity", "fake_score"], factories=FACTORIES,
                    check_configs={"integrity": FakeConfig(counter=str(counter)), "fake_score": fake}, **kw)


def flag_set(flags: list[Flag]) -> list[tuple]:
    return sorted((f.utterance_id, f.check, f.passed, f.score, f.threshold, f.reason) for f in flags)


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    return make_corpus(tmp_path / "corpus")


# tests

def test_run_flags_and_result(tmp_path: Path, corpus: Corpus) -> None:
    calls = []
    res = QCPipeline(config(tmp_path)).run(corpus, tmp_path / "qc", progress=False,
                                           hook=lambda step, completed, total: calls.append(step))
    n = sum(len(c) for cs in corpus.splits.values() for c in cs)
    assert len(res.flags) == 2 * n and len(res.by_check("fake_score")) == n
    # the missing clip: integrity fails, the score check is gated, not run
    missing = {f.check: f for f in res.flags_for("train_c1_u2")}
    assert not missing["integrity"].passed and missing["integrity"].reason == "media missing"
    assert missing["fake_score"].reason == "not measured: media missing" and missing["fake_score"].score is None
    # the raising measure is recorded, not fatal
    boom = {f.check: f for f in res.flags_for("train_c0_u1_boom")}
    assert boom["integrity"].passed
    assert not boom["fake_score"].passed and boom["fake_score"].reason.startswith("not measured: ValueError: cannot "
                                                                                  "score")
    cache = MeasureCache(tmp_path / "qc" / "cache" / "fake_score.jsonl").load()
    assert cache["train_c0_u1_boom"]["result"]["error"].startswith("ValueError: cannot score")
    assert "train_c1_u2" not in cache  # gated utterances are not measured, so not cached
    # kept = passed every check; some genuinely fail the score threshold
    real_fail = [f for f in res.failed("fake_score") if not f.reason.startswith("not measured")]
    assert real_fail, "fixture should make some utterances fail on score"
    failed_ids = {f.utterance_id for f in res.failed() if f.measured}  # "not measured" is no failure: kept
    assert set(res.dropped) == failed_ids and set(res.kept) == {it.utterance_id for it in res.items} - failed_ids
    assert "train_c0_u1_boom" in res.kept and boom["fake_score"].status == "not measured"
    assert "fake_score" in calls and "judge:fake_score" in calls
    with pytest.raises(KeyError, match="no check 'speaker'"):
        res.by_check("speaker")
    assert "fake_score" in str(res) and "kept" in str(res)


def test_outputs_parse_and_agree(tmp_path: Path, corpus: Corpus) -> None:
    qc = tmp_path / "qc"
    res = QCPipeline(config(tmp_path)).run(corpus, qc, progress=False)
    # flags.csv
    with open(qc / "flags.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["utterance_id", "check", "status", "passed", "score", "threshold", "reason"]
    assert len(rows) == len(res.flags)
    assert {r["status"] for r in rows} == {"passed", "failed", "not measured"}
    assert flag_set(read_flags_csv(qc / "flags.csv")) == flag_set(
        [Flag(f.utterance_id, f.check, f.passed, float(f"{f.score:.6g}") if f.score is not None else None,
              float(f"{f.threshold:.6g}") if f.threshold is not None else None, f.reason) for f in res.flags])
    # summary.json: internally consistent and equal to the flags
    s = json.loads((qc / "summary.json").read_text())
    for name in ("integrity", "fake_score"):
        t = s["checks"][name]["total"]
        assert t["checked"] == t["passed"] + t["kept"] + t["failed"] + t["not_measured"] == len(res.items)
        assert t["failed"] + t["not_measured"] == len(res.failed(name))
        for k in t:
            assert sum(sp[k] for sp in s["checks"][name]["splits"].values()) == t[k]
    assert s["checks"]["fake_score"]["total"]["not_measured"] == 2  # missing + boom
    for name in ("integrity", "fake_score"):  # flags.csv and summary.json count the same three states
        for state in ("passed", "failed", "not measured"):
            assert sum(r["check"] == name and r["status"] == state for r in rows) == \
                s["checks"][name]["total"][state.replace(" ", "_")]
    # dropped.csv: one row per dropped utterance, and the combinations sum to "dropped"
    with open(qc / "dropped.csv", newline="") as f:
        dropped = list(csv.DictReader(f))
    assert [r["utterance_id"] for r in dropped] == list(res.dropped) and len(dropped) == s["dropped"] > 0
    assert sum(s["dropped_by_combination"].values()) == s["dropped"]
    assert all(r["reasons"].startswith(r["checks"].split("+")[0] + ": ") for r in dropped)
    assert {u: r["checks"] for u, r in zip(res.dropped, dropped)} == {u: "+".join(c) for u, c in res.dropped.items()}
    assert s["kept"] + s["dropped"] == len(res.items) == sum(v["utterances"] for v in s["splits"].values())
    assert sum(v["kept"] for v in s["splits"].values()) == len(res.kept)
    assert s["thresholds"]["fake_score"]["threshold"] == 0.3
    assert s["timings"]["fake_score"]["measured"] == len(res.items) - 1  # all but the gated one
    assert s["audio_seconds"] == pytest.approx(2.0 * (len(res.items) - 1) + 1.5)  # missing: end - start
    # manifest.jsonl: exactly the kept utterances, split per line, readable by the reader; media paths relative
    # to QC_DIR as the JSONL format says (#27), so QC_DIR moved together with the corpus still reads
    ids = []
    for line in (qc / "manifest.jsonl").read_text().splitlines():
        d = json.loads(line)
        assert all(not Path(u["audio"]).is_absolute() and u["audio"].startswith("../corpus/clips/")
                   for u in d["utterances"])
        conv = parse_line(line, "manifest", d["split"], qc)
        for u in conv:
            assert Path(u.audio).exists()
            ids.append(u.utterance_id)
    assert ids == res.kept
    curated_lines = (qc / "curated" / "train.jsonl").read_text()
    assert '"video": "../../corpus/clips/' in curated_lines and str(tmp_path) not in curated_lines
    moved = tmp_path.parent / f"{tmp_path.name}_moved"
    shutil.copytree(tmp_path, moved)
    shutil.rmtree(tmp_path / "corpus")
    again = load_corpus("jsonl", moved / "qc" / "curated")
    assert [u.utterance_id for sp in again.splits for u in again.utterances(sp)] == res.kept
    assert all(Path(u.video).exists() and str(moved) in u.video for u in again.utterances("train"))
    for line in (moved / "qc" / "manifest.jsonl").read_text().splitlines():
        conv = parse_line(line, "manifest", json.loads(line)["split"], moved / "qc")
        assert all(Path(u.audio).exists() for u in conv)
    shutil.copytree(moved / "corpus", tmp_path / "corpus")  # back, for the checks below
    curated = load_corpus("jsonl", qc / "curated")
    assert [u.utterance_id for sp in curated.splits for u in curated.utterances(sp)] == res.kept
    assert curated.labels == corpus.labels
    assert all(Path(u.video).exists() for u in curated.utterances("train"))
    # report.html: self-contained, one plot per check, the flagged examples
    html = (qc / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 2
    assert "train_c0_u1_boom" in html and "not measured: media missing" in html and "spk0" in html
    assert not list(qc.glob(".*.tmp"))  # atomic writes leave no temp files


@pytest.mark.slow
def test_rerun_skips_finished_utterances(tmp_path: Path, corpus: Corpus) -> None:
    counter = tmp_path / "calls.txt"
    first = QCPipeline(config(tmp_path)).run(corpus, tmp_path / "qc", progress=False)
    n = len(first.items)
    assert _calls(counter) == n + (n - 1)  # integrity on all, score on all but the gated one
    again = QCPipeline(config(tmp_path)).run(corpus, tmp_path / "qc", progress=False)
    assert _calls(counter) == 2 * n - 1  # nothing measured again
    assert flag_set(again.flags) == flag_set(first.flags)
    assert again.summary["timings"]["fake_score"]["cached"] == n - 1


@pytest.mark.slow
def test_crash_then_rerun_equals_uninterrupted(tmp_path: Path, corpus: Corpus) -> None:
    reference = QCPipeline(config(tmp_path / "ref")).run(corpus, tmp_path / "ref" / "qc", progress=False)
    counter = tmp_path / "calls.txt"
    with pytest.raises(KeyboardInterrupt):
        QCPipeline(config(tmp_path, crash_after=5)).run(corpus, tmp_path / "qc", progress=False)
    n = len(reference.items)
    cache_file = tmp_path / "qc" / "cache" / "fake_score.jsonl"
    assert len(cache_file.read_text().splitlines()) == 5
    assert not (tmp_path / "qc" / "flags.csv").exists()
    # a crash mid-write leaves a truncated last line: it is ignored and cut off
    with open(cache_file, "a") as f:
        f.write('{"utterance_id": "dev_c1_u3", "media": "x", "res')
    before = _calls(counter)
    # utterances are measured a batch at a time by every check: integrity got ahead of the score check
    integrity_done = len((tmp_path / "qc" / "cache" / "integrity.jsonl").read_text().splitlines())
    assert 5 <= integrity_done < n
    resumed = QCPipeline(config(tmp_path)).run(corpus, tmp_path / "qc", progress=False)
    assert _calls(counter) - before == (n - integrity_done) + (n - 1 - 5)  # only what the caches do not hold
    assert flag_set(resumed.flags) == flag_set(reference.flags)
    lines = cache_file.read_text().splitlines()
    assert len(lines) == n - 1 and all(json.loads(x) for x in lines)


@pytest.mark.slow
def test_changed_media_path_is_remeasured(tmp_path: Path, corpus: Corpus) -> None:
    counter = tmp_path / "calls.txt"
    QCPipeline(config(tmp_path)).run(corpus, tmp_path / "qc", progress=False)
    before = _calls(counter)
    u = corpus.splits["dev"][0].utterances[0]
    new = Path(u.audio).with_name("moved.mp4")
    new.write_bytes(b"moved")
    u.audio = u.video = str(new)
    QCPipeline(config(tmp_path)).run(corpus, tmp_path / "qc", progress=False)
    assert _calls(counter) - before == 2


@pytest.mark.slow
def test_workers_two_equals_one(tmp_path: Path, corpus: Corpus) -> None:
    one = QCPipeline(config(tmp_path / "a")).run(corpus, tmp_path / "a" / "qc", progress=False)
    two = QCPipeline(config(tmp_path / "b", workers=2)).run(corpus, tmp_path / "b" / "qc", progress=False)
    assert flag_set(two.flags) == flag_set(one.flags)
    assert two.kept == one.kept
    assert _calls(tmp_path / "b" / "calls.txt") == 2 * len(one.items) - 1


def test_drop_on_and_items(tmp_path: Path, corpus: Corpus) -> None:
    res = QCPipeline(config(tmp_path, drop_on=["integrity"])).run(corpus, tmp_path / "qc", progress=False)
    assert list(res.dropped) == ["train_c1_u2"] and res.dropped["train_c1_u2"] == ["integrity"]
    items = build_items(corpus)
    assert items[0].media == corpus.splits["train"][0].utterances[0].audio
    assert items[0].extra["video_segment"] is None  # one clip per utterance
    with pytest.raises(ValueError, match="unknown QC check"):
        QCConfig(checks=["integrity", "nope"])
    with pytest.raises(ValueError, match="drop_on"):
        QCConfig(checks=["integrity"], drop_on=["faces"])


def test_shared_dialogue_video_gives_segments(tmp_path: Path) -> None:
    """IEMOCAP style: a turn wav for audio checks, the dialogue video + start/end for faces."""
    avi = str(tmp_path / "dialog.avi")
    utts = [Utterance(f"Ses01F_impro01_F00{k}", "Ses01_F", "hi", "neu", start=k * 2.0, end=k * 2.0 + 1,
                      audio=str(tmp_path / f"F00{k}.wav"), video=avi) for k in range(2)]
    items = build_items(Corpus("iemocap", {"train": [Conversation("Ses01F_impro01", "train", utts)]}, ["neu"]))
    assert items[1].media.endswith("F001.wav") and items[1].extra["video"] == avi
    assert items[1].extra["video_segment"] == [2.0, 3.0]


@pytest.mark.slow
def test_worker_crash_is_recorded_not_fatal(tmp_path: Path, corpus: Corpus) -> None:
    """A worker dying in native code (here os._exit) on one file: retried once, then recorded."""
    cfg = config(tmp_path, workers=2)
    cfg.check_configs["fake_score"].die_on = "dev_c0_u1"
    res = QCPipeline(cfg).run(corpus, tmp_path / "qc", progress=False)
    crashed = {f.check: f for f in res.flags_for("dev_c0_u1")}["fake_score"]
    assert not crashed.passed and crashed.reason.startswith("not measured: WorkerCrash")
    ok = [f for f in res.by_check("fake_score") if f.reason.startswith("score")]
    assert len(ok) == len(res.items) - 3  # all but the gated, the raising and the crashing one


class FakeGallery:
    """Records the ``exclude_from_gallery`` the pipeline passes (faces gets the speaker check's failures)."""
    name = "gallery"
    seen: list[str] | None = None

    def __init__(self, config=None):
        self.config = config

    def measure(self, item: QCItem) -> dict:
        return {}

    def judge(self, items, measurements, *, exclude_from_gallery=None) -> list[Flag]:
        FakeGallery.seen = list(exclude_from_gallery)
        return [Flag(it.utterance_id, self.name, True, None, None, "ok") for it in items]


def test_failures_of_earlier_checks_are_kept_out_of_galleries(tmp_path: Path, corpus: Corpus) -> None:
    cfg = config(tmp_path, gallery_exclude_from=["fake_score"])
    cfg.checks.append("gallery")
    cfg.factories["gallery"] = FakeGallery
    res = QCPipeline(cfg).run(corpus, tmp_path / "qc", progress=False, write=False)
    assert FakeGallery.seen == sorted(f.utterance_id for f in res.failed("fake_score"))
    reasons = Counter(f.reason for f in res.by_check("gallery"))
    assert reasons == {"ok": len(res.items) - 1, "not measured: media missing": 1}
    assert not (tmp_path / "qc" / "flags.csv").exists()  # write=False


def test_cache_reused_only_for_the_same_measure_config(tmp_path: Path, corpus: Corpus) -> None:
    counter = tmp_path / "calls.txt"
    QCPipeline(config(tmp_path)).run(corpus, tmp_path / "qc", progress=False, write=False)
    before = _calls(counter)
    cfg = config(tmp_path)
    cfg.check_configs["fake_score"].threshold = 0.6  # a judge-only field: measurements are reused
    stricter = QCPipeline(cfg).run(corpus, tmp_path / "qc", progress=False, write=False)
    assert _calls(counter) == before
    assert stricter.by_check("fake_score")[0].threshold != QCPipeline(config(tmp_path)).run(
        corpus, tmp_path / "qc", progress=False, write=False).by_check("fake_score")[0].threshold
    cfg = config(tmp_path)
    cfg.check_configs["fake_score"].fail_on = "c2_u3"  # a measure field: every score is measured again
    res = QCPipeline(cfg).run(corpus, tmp_path / "qc", progress=False, write=False)
    assert _calls(counter) - before == len(res.items) - 1
    assert {f.utterance_id for f in res.by_check("fake_score") if "ValueError" in f.reason} == {"train_c2_u3"}


def test_not_measured_is_one_state_everywhere(tmp_path: Path, corpus: Corpus) -> None:
    """A flag whose reason says "not measured" is no failure whoever built it; an utterance failed by two
    dropping checks is one dropped row; flags.csv round-trips the state."""
    assert Flag("u", "integrity", False, None, None, "not measured").status == "not measured"
    assert Flag("u", "x", False, 0.1, 0.5, "too low").status == "failed"
    qc = tmp_path / "qc"
    res = QCPipeline(config(tmp_path, drop_not_measured=True)).run(corpus, qc, progress=False)
    s = res.summary
    # the missing clip fails integrity and is "not measured" by fake_score: dropped once, under both checks
    assert res.dropped["train_c1_u2"] == ["integrity", "fake_score"]
    assert s["dropped_by_combination"]["integrity+fake_score"] >= 1
    assert sum(s["dropped_by_check"].values()) > s["dropped"] == sum(s["dropped_by_combination"].values())
    back = {(f.utterance_id, f.check): f.status for f in read_flags_csv(qc / "flags.csv")}
    assert back == {(f.utterance_id, f.check): f.status for f in res.flags}
    html = (qc / "report.html").read_text()
    assert f"Dropped utterances ({s['dropped']}" in html and "not measured (no score)" in html
