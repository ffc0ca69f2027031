"""Seed ensembles (merc.training.ensemble): ``merc evaluate --ensemble`` reports the members, their mean ± std
and the ensemble apart; ``merc predict --ensemble`` averages the members' probabilities; a single run is refused.
The run is trained with the new loss flags, which the run config must record."""
from __future__ import annotations

import json

import numpy as np
import pytest
from toy_corpus import TINY, write_corpus

from merc.cli import main


@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    corpus = write_corpus(root / "corpus")
    mp = pytest.MonkeyPatch()
    mp.setenv("MERC_CACHE", str(root / "cache"))
    out = root / "run"
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--model", "gru", *TINY, "--seeds", "2",
                 "--loss", "focal", "--focal-gamma", "1.5", "--class-weights", "effective", "--cb-beta", "0.99",
                 "--weight-decay", "0.05", "--out", str(out)]) == 0
    yield corpus, out
    mp.undo()


def test_run_config_records_the_loss_settings(two_seed_run):
    _, out = two_seed_run
    train = json.loads((out / "seed_1" / "config.json").read_text())["train"]
    assert (train["loss"], train["focal_gamma"], train["class_weights"], train["cb_beta"], train["weight_decay"]) == \
        ("focal", 1.5, "effective", 0.99, 0.05)
    history = json.loads((out / "seed_1" / "metrics.json").read_text())["history"]
    assert "train_focal" in history[0]


def test_evaluate_ensemble_reports_members_mean_and_ensemble_apart(two_seed_run, tmp_path, capsys):
    corpus, out = two_seed_run
    capsys.readouterr()
    report = tmp_path / "ens.json"
    assert main(["evaluate", str(out), "--split", "test", "--ensemble", "--json", "--output", str(report)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(report.read_text())
    md = report.with_suffix(".md").read_text()
    assert "## Single models" in md and "## Ensemble" in md
    assert set(result) == {"split", "run_dir", "n", "members", "single_model", "ensemble"}
    assert [m["member"] for m in result["members"]] == ["seed_0", "seed_1"]
    singles = []
    for k in (0, 1):  # each member's figures are exactly `merc evaluate seed_k`
        assert main(["evaluate", str(out / f"seed_{k}"), "--split", "test", "--json"]) == 0
        singles.append(json.loads(capsys.readouterr().out))
        for key in ("weighted_f1", "accuracy", "macro_f1", "per_class_f1", "n"):
            assert result["members"][k][key] == pytest.approx(singles[k][key])
    assert result["single_model"]["weighted_f1"]["mean"] == pytest.approx(np.mean([s["weighted_f1"] for s in singles]))
    assert result["single_model"]["weighted_f1"]["std"] == pytest.approx(
        np.std([s["weighted_f1"] for s in singles], ddof=1))
    # the ensemble: argmax of the members' mean probabilities, computed here from the members themselves
    from merc.data import load_corpus
    from merc.training.run import from_pretrained
    convs = load_corpus("jsonl", str(corpus))["test"]
    members = [from_pretrained(out / f"seed_{k}") for k in (0, 1)]
    probs = [np.concatenate(m.predict(convs)) for m in members]
    gold = np.array([members[0].labels.index(u.emotion) for c in convs for u in c])
    acc = float(np.mean(((probs[0] + probs[1]) / 2).argmax(1) == gold))
    assert result["ensemble"]["accuracy"] == pytest.approx(acc)
    assert result["ensemble"]["n_members"] == 2 and result["ensemble"]["n"] == len(gold)


def test_predict_ensemble_is_the_mean_of_member_probabilities(two_seed_run, capsys):
    corpus, out = two_seed_run
    capsys.readouterr()
    outputs = {}
    for name, argv in (("ens", [str(out), "--ensemble"]), ("s0", [str(out / "seed_0")]), ("s1", [str(out / "seed_1")])):
        assert main(["predict", *argv, str(corpus / "test.jsonl"), "--json", "--no-plots"]) == 0
        outputs[name] = [u["probabilities"] for line in capsys.readouterr().out.splitlines()
                         for u in json.loads(line)["utterances"]]
    labels = list(outputs["ens"][0])
    ens = np.array([[p[lab] for lab in labels] for p in outputs["ens"]])
    mean = np.mean([[[p[lab] for lab in labels] for p in outputs[k]] for k in ("s0", "s1")], axis=0)
    np.testing.assert_allclose(ens, mean, atol=2e-4)  # the JSON rounds to 4 decimals
    assert not np.allclose(mean, np.array([[p[lab] for lab in labels] for p in outputs["s0"]]), atol=1e-3)


def test_ensemble_of_a_single_run_is_a_clear_error(two_seed_run, capsys):
    corpus, out = two_seed_run
    capsys.readouterr()
    assert main(["evaluate", str(out / "seed_0"), "--ensemble", "--json"]) == 2
    err = capsys.readouterr().err
    assert "single run" in err and "drop --ensemble" in err
    assert main(["predict", str(out / "seed_0"), str(corpus / "test.jsonl"), "--ensemble", "--no-plots"]) == 2
