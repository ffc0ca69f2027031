"""merc.executors without a Ray session: the local executor, and the one-line errors of --executor ray when the
package is missing or the address does not answer."""
from __future__ import annotations

import importlib.util
import socket
import sys

import pytest
from toy_corpus import write_corpus

from merc.cli import main
from merc.errors import ConfigError, MissingDependencyError
from merc.executors import LocalExecutor, check_reachable, open_executor

HAS_RAY = importlib.util.find_spec("ray") is not None


def _count(cache, payload):
    cache["calls"] = cache.get("calls", 0) + 1
    return payload * 10, cache["calls"]


def test_local_executor_keeps_order_and_one_cache_per_run():
    ex = LocalExecutor()
    assert list(ex.map_workers(_count, [1, 2, 3])) == [(0, (10, 1)), (1, (20, 2)), (2, (30, 3))]
    assert list(ex.map_tasks(lambda shared, p: shared + p, (p for p in [1, 2]), shared=5)) == [(0, 6), (1, 7)]
    with open_executor("local") as ex:
        assert ex.name == "local"


def test_missing_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'merc\[ray\]'"):
        with open_executor("ray"):
            pass
    corpus = write_corpus(tmp_path / "toy", sizes=(("train", 2), ("dev", 1)))
    code = main(["extract", "--dataset", "jsonl", "--data-dir", str(corpus), "--text-encoder", "toy",
                 "--executor", "ray", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("merc extract: error:") and "merc[ray]" in err[0]


def _closed_port() -> int:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed: pip install 'merc[ray]'")
@pytest.mark.parametrize("command", ["extract", "qc", "train"])
def test_unreachable_address_is_one_line(command, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    corpus = write_corpus(tmp_path / "toy", sizes=(("train", 2), ("dev", 1)))
    address = f"127.0.0.1:{_closed_port()}"
    argv = {"extract": ["extract", "--text-encoder", "toy"],
            "qc": ["qc", "--checks", "integrity", "--out", str(tmp_path / "qc")],
            "train": ["train", "--text-encoder", "toy", "--out", str(tmp_path / "run")]}[command]
    code = main([*argv, "--dataset", "jsonl", "--data-dir", str(corpus), "--executor", "ray",
                 "--ray-address", address, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"cannot reach the Ray cluster at {address}" in err[0] and "ray start --head" in err[0]


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed: pip install 'merc[ray]'")
def test_address_from_environment_is_checked(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_closed_port()}")
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster"):
        with open_executor("ray"):
            pass


@pytest.mark.parametrize("address", ["nohost", "host:port", ":6379"])
def test_malformed_address(address):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        check_reachable(address)
