"""What `merc train` and `merc evaluate` say about absent media and absent classes: each absent-modality count
once, with real utterance ids and files; "N of M test utterances had no audio (…); they are scored from the
other modalities"; classes a split lacks are listed and left out of macro F1; labels without training examples
are warned about; progress bars name the corpus and split."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from media_doubles import LABELS

from merc.cli import main
from merc.metrics import evaluate_predictions


def test_macro_f1_leaves_out_classes_the_split_lacks():
    # three labels, the split has only a and b; the model is perfect on them
    m = evaluate_predictions([0, 1, 0, 1], [0, 1, 0, 1], ["a", "b", "c"])
    assert m["macro_f1"] == 1.0 and m["absent_classes"] == ["c"] and m["per_class_f1"]["c"] == 0.0
    m = evaluate_predictions([0, 1, 2], [0, 1, 1], ["a", "b", "c"])
    assert m["absent_classes"] == [] and m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def _corpus(root: Path, clips: Path) -> Path:
    """train/dev/test with the clips; the last utterance of every other conversation (of every test one) names a
    missing clip; labels.json adds 'angry', which no train utterance has, and test has no 'happy'."""
    root.mkdir()
    rel = Path("..") / clips.name
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("dev", 2), ("test", 2)):
        lines = []
        for c in range(n):
            utts = []
            for i in range(3):
                clip = f"gone_{split}{c}.mp4" if i == 2 and (c % 2 or split == "test") else f"u{i % 2}.mp4"
                label = "calm" if split == "test" else LABELS[int(rng.integers(2))]
                utts.append({"utterance_id": f"{split}{c}_u{i}", "speaker": "AB"[i % 2], "text": f"said {c} {i}",
                             "emotion": label, "audio": str(rel / clip)})
            lines.append(json.dumps({"conversation_id": f"{split}{c}", "utterances": utts}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "labels.json").write_text(json.dumps(["angry", *LABELS]))
    return root


def test_train_and_evaluate_say_what_happened(tmp_path, clips, capsys):
    data = _corpus(tmp_path / "data", clips)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(data), "--modalities", "text,audio",
                 "--text-encoder", "toy-acct", "--audio-encoders", "rms-acct", "--model", "gru", "--d-model", "8",
                 "--layers", "1", "--epochs", "1", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "<id>" not in err and "<file>" not in err, err
    absent = [x for x in err.splitlines() if "utterances had no audio" in x]
    assert len(absent) == 3, err  # once per split, not once per layer of the plumbing
    train = next(x for x in absent if " train utterances " in x)
    assert "2 of 12 train utterances had no audio (2 × rms-acct: missing file" in train
    assert str(clips / "gone_train1.mp4") in train and "(train1_u2, train3_u2)" in train
    assert "the model uses their other modalities" in train
    assert "warning: jsonl has no training utterance labelled 'angry': the model cannot learn it" in err
    # progress bars name the corpus and split, never the store's hash
    bars = re.findall(r"(\S+/(?:train|dev|test)) audio:rms-acct", err)
    assert bars and all(re.fullmatch(r"jsonl/(train|dev|test)", b) for b in bars), bars

    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test", "--quiet"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "had no audio" in x).strip()
    assert line.startswith("2 of 6 test utterances had no audio (2 × rms-acct: missing file ")
    assert "(test0_u2, test1_u2)" in line and line.endswith("they are scored from the other modalities")
    assert "note: no test utterance is labelled angry, happy: these classes are left out of macro F1" in out
    assert re.search(r"angry  F1      -", out) and re.search(r"happy  F1      -", out)
    assert main(["evaluate", str(run), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["absent_classes"] == ["angry", "happy"]
    calm = result["per_class_f1"]["calm"]
    assert result["macro_f1"] == pytest.approx(calm)  # the one class the split has
