"""Writes this fixture. Run it with the code BEFORE issue 26 (commit 7bae888), e.g. from a worktree of it:

    git worktree add /tmp/before 7bae888 && cd /tmp/before
    PYTHONPATH=$PWD MERC_CACHE=/tmp/fixture-cache python <this file> /tmp/pre_store_run

then copy run/ (without its plots), corpus/test.jsonl and reference.json here.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from merc.cli import main
from merc.data import load_corpus
from merc.testing.fakes import write_label_free_corpus
from merc.training.run import from_pretrained

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
hidden: dict[str, str] = {}
(out / "corpus").mkdir(parents=True)
corpus_dir = write_label_free_corpus(out / "corpus", ["joy", "neutral", "sadness"], hidden,
                                     sizes={"train": 10, "dev": 4, "test": 4}, turns=(3, 6))
assert main(["train", "--dataset", "jsonl", "--data-dir", str(corpus_dir), "--model", "mamba", "--modalities", "text",
             "--text-encoder", "minilm", "--epochs", "3", "--d-model", "8", "--layers", "1", "--quiet",
             "--out", str(out / "run")]) == 0
for p in (out / "run").glob("*.png"):
    p.unlink()
run = from_pretrained(out / "run")
convs = load_corpus("jsonl", str(corpus_dir))["test"]
probs = run.predict(convs)
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
(out / "reference.json").write_text(json.dumps({"commit": commit, "split": "test",
                                                "probabilities": [p.tolist() for p in probs]}))
print("ok", [p.shape for p in probs])
