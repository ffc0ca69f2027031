"""Provenance of runs and results: merc.io.provenance, Corpus.fingerprint, versioned run configs."""
from __future__ import annotations

import json
import subprocess

import pytest
from test_training import toy_corpus  # noqa: F401  (fixture)

from merc.data import load_corpus
from merc.data.schema import Conversation, Corpus, Utterance
from merc.errors import IncompatibleRunError
from merc.io import git_state, provenance, provenance_markdown


def test_provenance_fields():
    p = provenance(["merc", "train"])
    assert set(p) >= {"merc_version", "git_commit", "git_dirty", "command", "python", "torch", "platform",
                      "machine", "date"}
    assert p["command"] == ["merc", "train"]
    assert p["machine"]["cpu_count"] >= 1 and p["machine"]["cpu_model"]
    assert p["git_commit"] is None or len(p["git_commit"]) == 40
    json.dumps(p)


def test_git_state_of_a_repository_and_of_a_plain_folder(tmp_path):
    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None}
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    clean = git_state(repo)
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    (repo / "a.txt").write_text("b")
    assert git_state(repo)["git_dirty"] is True
    text = provenance_markdown({**provenance(), **git_state(repo)})
    assert "dirty" in text and clean["git_commit"] in text and "`a.txt`" in text


def test_dirty_results_files_alone_are_told_apart_from_dirty_code(tmp_path):
    """A benchmark writing results while another runs leaves only benchmarks/results/ dirty: the results file
    says so (the code was the commit's); any other changed path keeps the bold warning, with the paths."""
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "benchmarks" / "results" / "r.md").write_text("old\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    (repo / "benchmarks" / "results" / "r.md").write_text("new\n")
    (repo / "benchmarks" / "results" / "new.json").write_text("{}\n")
    state = git_state(repo)
    assert state["git_dirty"] is True
    assert sorted(state["git_dirty_paths"]) == ["benchmarks/results/new.json", "benchmarks/results/r.md"]
    text = provenance_markdown({**provenance(), **state})
    assert "only in benchmark results files" in text and "**" not in text
    (repo / "code.py").write_text("x = 2\n")
    text = provenance_markdown({**provenance(), **git_state(repo)})
    assert "**the working tree had uncommitted changes" in text and "`code.py`" in text
    # a provenance recorded before the paths were kept stays a plain warning
    assert "**the working tree" in provenance_markdown({**provenance(), "git_dirty": True, "git_dirty_paths": None})


def _corpus(text: str = "hi", label: str = "joy", speaker: str = "A", uid: str = "u1") -> Corpus:
    return Corpus("c", {"train": [Conversation("d1", "train", [Utterance(uid, speaker, text, label),
                                                                Utterance("u2", "B", "yo", None)])]}, ["joy", "sad"])


def test_corpus_fingerprint_covers_ids_speakers_texts_labels():
    base = _corpus().fingerprint()
    assert base == _corpus().fingerprint() and len(base) == 64
    for changed in (_corpus(text="hi!"), _corpus(label="sad"), _corpus(speaker="Z"), _corpus(uid="u9")):
        assert changed.fingerprint() != base


def test_corpus_subset_keeps_order_and_drops_empty_conversations():
    c = _corpus()
    sub = c.subset({"u2"})
    assert [u.utterance_id for u in sub.utterances("train")] == ["u2"]
    assert c.subset(set()).splits == {"train": []}


def test_old_run_directory_without_version_still_loads():
    from merc.demo import demo_paths
    from merc.training.run import from_pretrained
    run_dir, _ = demo_paths()
    assert "config_version" not in json.loads((run_dir / "config.json").read_text())
    run = from_pretrained(run_dir)
    # read as version 1 and migrated in memory to the current version (merc.training.run.migrate_config)
    assert run.config.config_version == 2 and run.config.provenance == {} and run.config.corpus_fingerprint == ""


def test_new_run_records_version_provenance_and_fingerprint(toy_corpus, tmp_path, monkeypatch):  # noqa: F811
    from merc.models.dialogue import DialogueConfig
    from merc.training.experiment import run_experiment
    from merc.training.run import CONFIG_VERSION, RunConfig, from_pretrained
    from merc.training.trainer import TrainConfig
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    run_experiment(dataset="jsonl", data_dir=str(toy_corpus), out=tmp_path / "run",
                   model_config=DialogueConfig(kind="mlp", d_model=8, n_layers=1),
                   train_config=TrainConfig(epochs=1), text_encoder="toy", progress=False)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["config_version"] == CONFIG_VERSION == 2
    assert cfg["corpus_fingerprint"] == load_corpus("jsonl", toy_corpus).fingerprint()
    assert cfg["provenance"]["git_commit"] == provenance()["git_commit"]
    assert from_pretrained(tmp_path / "run").config.corpus_fingerprint == cfg["corpus_fingerprint"]
    with pytest.raises(IncompatibleRunError, match="newer than this merc"):
        RunConfig.from_dict({**cfg, "config_version": CONFIG_VERSION + 1})
