"""``--executor ray`` (merc.executors) against a local Ray instance this module starts once: loopback only, two
CPUs, a small object store, its own temporary folder. Extraction, QC and seeds give what a local run gives; a
worker killed mid-batch is restarted and its batch run again with nothing lost or counted twice; a run that
dies part-way resumes on the other executor. Skips (saying why) when ray is not installed; `make test` installs
it (the `ray` extra)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'merc[ray]' (make test installs it)")

import ray_helpers  # noqa: E402
from toy_corpus import TINY, write_corpus  # noqa: E402  (registers the toy text encoders)

from merc.cli import main  # noqa: E402
from merc.data import load_corpus  # noqa: E402
from merc.executors import LocalExecutor, open_executor  # noqa: E402
from merc.training.extract import extract, fill_store  # noqa: E402
from merc.training.features import corpus_features  # noqa: E402

TESTS = Path(__file__).resolve().parent
ENCODERS = {"text": ["toy"], "audio": ["egemaps"]}


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    kills = tmp_path_factory.mktemp("kills")
    path = os.pathsep.join(p for p in (str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    for k, v in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                 "MERC_TEST_KILL_DIR": str(kills), "PYTHONPATH": path}.items():
        mp.setenv(k, v)  # read by the workers Ray starts: set before ray.init
    mp.delenv("RAY_ADDRESS", raising=False)
    temp = tempfile.mkdtemp(prefix="mrt-")  # short: Ray's socket paths must stay under 108 characters
    ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024 ** 2, include_dashboard=False,
             _temp_dir=temp, _node_ip_address="127.0.0.1", log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "ray_helpers.setup"})
    try:
        yield kills
    finally:
        ray.shutdown()
        mp.undo()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory, espeak):
    """Three dialogues of three spoken utterances (espeak-ng), one clip missing."""
    from merc.testing.synth import build_corpus_fixture
    fx = build_corpus_fixture(tmp_path_factory.mktemp("media") / "c", layout="meld", n_dialogues=3,
                              utts_per_dialogue=3, faults={"missing": 1}, seed=1, fps=5)
    return load_corpus("meld", str(fx.data_dir), media_dir=str(fx.media_dir))


def stored(root: Path) -> dict[str, tuple]:
    """Every finished store folder under ``root``: relative path -> (ids, keys, reasons, X, present)."""
    from safetensors.numpy import load_file
    out = {}
    for idx in sorted(root.rglob("index.json")):
        index, rows = json.loads(idx.read_text()), load_file(str(idx.parent / "rows.safetensors"))
        assert not (idx.parent / "pending").exists()
        out[str(idx.parent.relative_to(root))] = (index["ids"], index["keys"], index["reasons"], rows["X"],
                                                   rows["present"])
    return out


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = stored(a), stored(b)
    assert sa and sorted(sa) == sorted(sb)
    for k in sa:
        ids, keys, reasons, X, present = sa[k]
        assert (ids, keys, reasons) == sb[k][:3], k
        np.testing.assert_array_equal(present, sb[k][4])
        np.testing.assert_allclose(X, sb[k][3], rtol=1e-6, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def reference(media, tmp_path_factory):
    """The store a local `merc extract` fills."""
    root = tmp_path_factory.mktemp("local-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MERC_CACHE", str(root))
    try:
        result = extract(media, ["text", "audio"], ENCODERS, LocalExecutor(), dataset="meld", progress=False)
    finally:
        mp.undo()
    return root / "store", result


@pytest.mark.slow
def test_extract_on_ray_equals_local(ray_session, media, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path))
    with open_executor("ray") as ex:
        result = extract(media, ["text", "audio"], ENCODERS, ex, dataset="meld", progress=False)
    n = sum(len(media.utterances(s)) for s in media.splits)
    assert result["workers"]["missing"] == result["workers"]["encoded"] == 2 * n  # two encoders
    assert result["workers"]["worker_processes"] == 2
    assert_same_store(reference[0], tmp_path / "store")
    assert result["report"] == reference[1]["report"]
    assert sum(r["audio"]["absent"] for r in result["report"].values()) == 1  # the missing clip, with its reason
    # a later `merc train` only reads: every split and encoder is a cache hit
    feats, _, _ = corpus_features(media, list(media.splits), ["text", "audio"], ENCODERS, progress=False)
    assert set(feats) == set(media.splits)


@pytest.mark.slow
def test_killed_worker_is_retried_nothing_lost_or_doubled(ray_session, media, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path))
    with open_executor("ray") as ex:
        filled = fill_store(media, list(media.splits), {"audio": ["egemaps"]}, ex, progress=False,
                            make=ray_helpers.kill_once_encoder)
        killed = int((ray_session / "extract").read_text())
        assert killed not in filled["worker_pids"]  # that process died; its restarted actor finished the batch
        result = extract(media, ["audio"], {"audio": ["egemaps"]}, ex, dataset="meld", progress=False)
    n = sum(len(media.utterances(s)) for s in media.splits)
    assert filled["missing"] == filled["encoded"] == n  # the killed batch ran again, and was counted once
    assert result["workers"]["missing"] == 0  # everything was in the store already
    ref = {k: v for k, v in stored(reference[0]).items() if "/audio/" in k}
    got = stored(tmp_path / "store")
    assert sorted(ref) == sorted(got)
    for k in ref:
        assert ref[k][:3] == got[k][:3]
        np.testing.assert_array_equal(ref[k][3], got[k][3])


@pytest.mark.slow
def test_resume_across_executors(ray_session, media, reference, tmp_path, monkeypatch):
    n = {s: len(media.utterances(s)) for s in media.splits}
    # ray dies part-way (every test-split batch fails): what finished is in the store; local does only the rest
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "a"))
    with pytest.raises(Exception, match="simulated failure"):
        with open_executor("ray") as ex:
            fill_store(media, list(media.splits), {"audio": ["egemaps"]}, ex, progress=False,
                       make=ray_helpers.fail_on_test_encoder)
    pending = list((tmp_path / "a").rglob("pending/chunk_*.npz"))
    assert pending, "the batches that finished before the failure must be in the store"
    extract(media, ["audio"], {"audio": ["egemaps"]}, LocalExecutor(), dataset="meld", progress=False)
    done = {k: v for k, v in stored(tmp_path / "a" / "store").items()}
    extracted = sum(json.loads((tmp_path / "a" / "store" / k / "index.json").read_text())["extracted"] for k in done)
    assert n["test"] <= extracted < sum(n.values())  # the test split, plus whatever ray had not finished
    # local stops after train; ray does dev and test only
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "b"))
    corpus_features(media, ["train"], ["audio"], {"audio": ["egemaps"]}, progress=False)
    with open_executor("ray") as ex:
        result = extract(media, ["audio"], {"audio": ["egemaps"]}, ex, dataset="meld", progress=False)
    assert result["workers"]["stored"] == n["train"] and result["workers"]["encoded"] == n["dev"] + n["test"]
    ref = {k: v for k, v in stored(reference[0]).items() if "/audio/" in k}
    for root in (tmp_path / "a" / "store", tmp_path / "b" / "store"):
        got = stored(root)
        assert sorted(got) == sorted(ref)
        for k in ref:
            assert ref[k][:3] == got[k][:3]
            np.testing.assert_array_equal(ref[k][3], got[k][3])


@pytest.mark.slow
def test_qc_on_ray_equals_local_and_survives_a_killed_worker(ray_session, media, tmp_path):
    from merc.qc import QCConfig, QCPipeline
    cfg = QCConfig(checks=["integrity", "speaker"])
    local = QCPipeline(cfg).run(media, tmp_path / "local", progress=False)
    with open_executor("ray") as ex:
        remote = QCPipeline(cfg, executor=ex).run(media, tmp_path / "ray", progress=False)
        killer = QCConfig(checks=["integrity"], factories={"integrity": "ray_helpers:kill_once_integrity"})
        killed = QCPipeline(killer, executor=ex).run(media, tmp_path / "killed", progress=False)
    assert [f.to_row() for f in remote.flags] == [f.to_row() for f in local.flags]
    assert remote.kept == local.kept and remote.dropped == local.dropped
    assert (tmp_path / "ray" / "flags.csv").read_text() == (tmp_path / "local" / "flags.csv").read_text()
    assert (ray_session / "qc").exists()  # a worker died measuring
    integrity = [f.to_row() for f in local.flags if f.check == "integrity"]
    assert [f.to_row() for f in killed.flags] == integrity
    lines = (tmp_path / "killed" / "cache" / "integrity.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["utterance_id"] for x in lines) == sorted(media_ids(media))  # each once


def media_ids(corpus) -> list[str]:
    return [u.utterance_id for s in corpus.splits for u in corpus.utterances(s)]


@pytest.mark.slow
def test_seeds_and_search_on_ray_equal_local(ray_session, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "toy", sizes=(("train", 16), ("dev", 6), ("test", 6)))
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{}, {"lr": 0.01}]))
    runs = {}
    for ex in ("local", "ray"):
        out = tmp_path / ex
        argv = ["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", "gru", *TINY, "--seeds", "2",
                "--search", "--search-grid", str(grid), "--out", str(out), "--executor", ex]
        assert main(argv) == 0, capsys.readouterr().err
        runs[ex] = out
    for seed in (0, 1):
        a, b = (json.loads((runs[ex] / f"seed_{seed}" / "metrics.json").read_text()) for ex in ("local", "ray"))
        # the same epochs and selection; losses within float tolerance (Ray workers run torch on one thread, the
        # local driver on its own count: sums of floats then round differently in the last bits)
        assert [(h["epoch"], h["dev_weighted_f1"]) for h in a["history"]] == \
            [(h["epoch"], h["dev_weighted_f1"]) for h in b["history"]]
        assert a["history"] == [pytest.approx(h, rel=1e-6) for h in b["history"]]
        assert a["best_epoch"] == b["best_epoch"]
        for split in ("dev", "test"):
            assert a[split]["weighted_f1"] == pytest.approx(b[split]["weighted_f1"], abs=1e-9)
    a, b = (json.loads((runs[ex] / "search.json").read_text()) for ex in ("local", "ray"))
    assert a["best"] == b["best"]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra["name"] == rb["name"] and ra["dev_weighted_f1"] == rb["dev_weighted_f1"]
