"""End to end on a tiny generated JSONL corpus with a toy text encoder: train -> run dir -> evaluate ->
predict -> from_pretrained. The toy task needs dialogue context, so it also checks that context models learn."""
from __future__ import annotations

import json

import numpy as np
import pytest
from toy_corpus import HashedWords, conversations

from merc.cli import main
from merc.encoders import register_encoder
from merc.metrics import evaluate_predictions, mean_std


@pytest.fixture(scope="module")
def toy_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("dev", 30), ("test", 30)):
        convs = conversations(n, rng, split, lengths=(4, 9))
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(c) for c in convs) + "\n")
    return root


def test_metrics_match_definitions():
    m = evaluate_predictions([0, 0, 1, 2], [0, 1, 1, 2], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 1.0})
    assert m["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 / 3 + 1) / 4)
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "n": 2}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mamba", "gru", "transformer", "mlp"])
def test_train_evaluate_predict(kind, toy_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(toy_corpus), "--model", kind,
                 "--text-encoder", "toy", "--epochs", "25", "--d-model", "32", "--layers", "1",
                 "--dropout", "0.1", "--lr", "3e-3", "--quiet", "--out", str(run)]) == 0
    for f in ("config.json", "model.safetensors", "labels.json", "metrics.json", "training_curve.png",
              "confusion_dev.png", "confusion_test.png"):
        assert (run / f).exists(), f
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["history"][metrics["best_epoch"]]["dev_weighted_f1"] == pytest.approx(metrics["dev"]["weighted_f1"])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--dataset", "jsonl", "--data-dir", str(toy_corpus), "--split", "test",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"weighted_f1", "accuracy", "macro_f1", "per_class_f1", "n", "absent_classes"}
    assert result["n"] == sum(len(json.loads(line)["utterances"]) for line in (toy_corpus / "test.jsonl").open())
    assert all(0 <= result[k] <= 1 for k in ("weighted_f1", "accuracy", "macro_f1"))
    assert result["weighted_f1"] == pytest.approx(metrics["test"]["weighted_f1"])
    # context matters: filler utterances are only labellable from the speaker's earlier utterance
    if kind == "mlp":
        assert result["accuracy"] < 0.75
    else:
        assert result["accuracy"] > 0.85, f"{kind} failed to use the dialogue context"

    # predict on the test conversations (their labels are ignored) agrees with evaluate
    assert main(["predict", str(run), str(toy_corpus / "test.jsonl"), "--json", "--no-plots"]) == 0
    predicted = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    gold = [json.loads(x) for x in (toy_corpus / "test.jsonl").open()]
    pairs = [(p["predicted"], g["emotion"]) for pc, gc in zip(predicted, gold)
             for p, g in zip(pc["utterances"], gc["utterances"])]
    assert all(p["emotion"] == p["gold"] == g["emotion"] for pc, gc in zip(predicted, gold)  # input kept
               for p, g in zip(pc["utterances"], gc["utterances"]))
    assert len(pairs) == result["n"]
    assert np.mean([a == b for a, b in pairs]) == pytest.approx(result["accuracy"])

    conv = tmp_path / "new.txt"
    conv.write_text("A: I feel furious.\nB: I feel great.\nA: ok then.\nB: sure.\n\nX: I feel fine.\n")
    assert main(["predict", str(run), str(conv), "--json", "--out", str(tmp_path / "pred")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [len(c["utterances"]) for c in lines] == [4, 1]
    for c in lines:
        for u in c["utterances"]:
            assert sum(u["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "pred" / "new_0_timeline.png").exists()
    assert [u["predicted"] for u in lines[0]["utterances"]][:2] == ["angry", "happy"]


@pytest.mark.slow
def test_multi_seed_summary_and_dev_selection(toy_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(toy_corpus), "--model", "gru", "--text-encoder",
                 "toy", "--epochs", "3", "--d-model", "16", "--layers", "1", "--seeds", "3", "--quiet",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and summary["test"]["weighted_f1"]["n"] == 3
    devs = {s: json.loads((out / f"seed_{s}" / "metrics.json").read_text())["dev"]["weighted_f1"] for s in (0, 1, 2)}
    assert summary["dev_selected_seed_dir"] == f"seed_{max(devs, key=devs.get)}"
    assert summary["test"]["weighted_f1"]["mean"] == pytest.approx(
        np.mean([json.loads((out / f"seed_{s}" / "metrics.json").read_text())["test"]["weighted_f1"]
                 for s in (0, 1, 2)]))
    from merc.training.run import from_pretrained
    assert from_pretrained(out).path.name == summary["dev_selected_seed_dir"]


def test_bad_predict_input_names_file_and_line(toy_corpus, tmp_path):
    from merc.data.schema import CorpusError
    from merc.training.predict import read_conversations
    bad = tmp_path / "bad.txt"
    bad.write_text("A: hello\nthis line has no speaker\n")
    with pytest.raises(CorpusError, match=r"bad.txt:2"):
        read_conversations(bad)
    badj = tmp_path / "bad.jsonl"
    badj.write_text('{"conversation_id": "c", "utterances": [{"speaker": "A"}]}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:1: utterance 'c_u0' \(utterances\[0\]\) lacks .*\['text'\]"):
        read_conversations(badj)


class SpeakerToyEncoder(HashedWords):
    """The toy encoder reading ``"{speaker} {text}"``, as a fine-tuned encoder's template asks."""
    template = "{speaker} {text}"


register_encoder("toy-speaker", lambda **kw: SpeakerToyEncoder("toy-speaker", 32), modality="text", dim=None,
                 overwrite=True)


@pytest.mark.slow
def test_encoder_template_reaches_training_and_prediction(tmp_path, monkeypatch, capsys):
    """Here only the speaker's name tells the emotion: a model learns it only if the template is applied
    by the feature cache (training) and by predict (new conversations)."""
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    mood = {"Furious": "angry", "Fine": "calm", "Great": "happy"}
    for split, n in (("train", 60), ("dev", 15), ("test", 15)):
        convs = []
        for c in range(n):
            names = rng.choice(list(mood), size=2, replace=False)
            utts = [{"utterance_id": f"{split}{c}_{i}", "speaker": str(names[i % 2]), "text": "ok then.",
                     "emotion": mood[str(names[i % 2])]} for i in range(4)]
            convs.append({"conversation_id": f"{split}{c}", "utterances": utts})
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(c) for c in convs) + "\n")
    args = ["train", "--dataset", "jsonl", "--data-dir", str(tmp_path), "--model", "mlp", "--epochs", "20",
            "--d-model", "16", "--dropout", "0.0", "--lr", "1e-2", "--quiet"]
    assert main([*args, "--text-encoder", "toy-speaker", "--out", str(tmp_path / "run")]) == 0
    assert main([*args, "--text-encoder", "toy", "--out", str(tmp_path / "plain")]) == 0
    acc = {r: json.loads((tmp_path / r / "metrics.json").read_text())["test"]["accuracy"] for r in ("run", "plain")}
    assert acc["run"] > 0.95 and acc["plain"] < 0.6, acc
    conv = tmp_path / "new.txt"
    conv.write_text("Furious: ok then.\nGreat: ok then.\nFine: ok then.\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(conv), "--json", "--no-plots"]) == 0
    got = [u["predicted"] for u in json.loads(capsys.readouterr().out)["utterances"]]
    assert got == ["angry", "happy", "calm"]
