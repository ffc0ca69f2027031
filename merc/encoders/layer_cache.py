"""Frozen lower layers, run once: fine-tune only the upper ``k`` transformer layers from cached states.

Fine-tuning a base-size encoder end to end costs a forward and a backward pass through all ``L`` layers per
utterance per epoch; on a 2-core CPU that is hours for MELD. Freezing the embeddings and the lower ``L - k``
layers makes their output a fixed function of the input text, so it is computed **once** per input
(in eval mode), stored, and every epoch runs only the upper ``k`` layers, the pooling and the head —
the "partial fine-tuning" of e.g. Lee et al. 2019 ("What would Elsa do? Freezing layers during
transformer fine-tuning"), here as a cache (cf. the layer-wise feature caching of Houlsby et al. 2019's
baselines).

Cache layout under ``<cache_root()>/layer_states/<label>-<key>/`` (``key`` hashes the model fingerprint,
the number of frozen layers, the max length, the storage dtype and every input string)::

    chunk_00003.npy   (sum of the chunk's token counts, hidden) float16: each input's unpadded states
    meta.json         written last: n, hidden, lengths, model, created

It is not the feature store (:mod:`merc.encoders.store`): the store keeps one fixed-size row per utterance,
this cache a ragged block of per-token states per input, memory-mapped. It shares the store's chunk
primitives (:func:`~merc.encoders.store.chunk_path`, :func:`~merc.encoders.store.write_chunk`,
:func:`~merc.encoders.store.read_chunk`): every chunk is written atomically, an interrupted build keeps its
finished chunks and computes only the missing ones, and a torn or stale chunk is deleted and computed again.
Loading maps the chunks from disk (``mmap_mode="r"``), so the cache need not fit in memory.

Supported architectures: MPNet (the encoder's relative position bias is computed once from the
sequence length and passed to every layer, as ``MPNetEncoder.forward`` does; ``relative_attention_bias``
stays frozen since the cached lower layers used it) and BERT (MiniLM is a BERT). Others raise ConfigError.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from merc.encoders.store import chunk_path, read_chunk, write_chunk
from merc.errors import ConfigError
from merc.io import write_json

log = logging.getLogger(__name__)
SUPPORTED = ("mpnet", "bert")  # Hugging Face model_type values
DTYPES = ("float16", "float32")

# helpers


def transformer_of(st):
    """The Hugging Face model inside a SentenceTransformer's first module; ConfigError if unsupported."""
    hf = getattr(st[0], "auto_model", None)
    kind = getattr(getattr(hf, "config", None), "model_type", None)
    if kind not in SUPPORTED:
        raise ConfigError(f"--train-layers (frozen-layer cache) supports {list(SUPPORTED)} encoders (MPNet, "
                          f"BERT/MiniLM); this model is {kind or type(hf).__name__!r}. Fine-tune all layers "
                          "instead (omit --train-layers)")
    return hf


def tokenize(st, texts: Sequence[str]) -> dict:
    """``st``'s own tokenization (``preprocess`` in sentence-transformers >= 6, ``tokenize`` before)."""
    fn = getattr(st, "preprocess", None) or st.tokenize
    return fn(list(texts))


def num_layers(st) -> int:
    return len(transformer_of(st).encoder.layer)


def _mask4d(hf, hidden, mask):
    from transformers.masking_utils import create_bidirectional_mask
    return create_bidirectional_mask(config=hf.config, inputs_embeds=hidden, attention_mask=mask)


def _run_layers(hf, hidden, mask, layers):
    """``hidden`` (b, s, h) through ``layers`` with the model's own attention mask (and MPNet's bias)."""
    mask4 = _mask4d(hf, hidden, mask)
    extra = (hf.encoder.compute_position_bias(hidden),) if hf.config.model_type == "mpnet" else ()
    for layer in layers:
        out = layer(hidden, mask4, *extra)
        hidden = out[0] if isinstance(out, tuple) else out  # MPNet layers return tuples, BERT (5.x) tensors
    return hidden


def lower_forward(hf, features: dict, n_frozen: int):
    """Embeddings + the first ``n_frozen`` layers: (b, s) token ids -> (b, s, hidden)."""
    kw = {"input_ids": features["input_ids"]}
    if hf.config.model_type == "bert" and "token_type_ids" in features:
        kw["token_type_ids"] = features["token_type_ids"]
    hidden = hf.embeddings(**kw)  # (b, s, h)
    return _run_layers(hf, hidden, features["attention_mask"], hf.encoder.layer[:n_frozen])


def upper_forward(hf, hidden, mask, n_frozen: int):
    """The layers from ``n_frozen`` on: cached (b, s, h) states + (b, s) mask -> last hidden state (b, s, h)."""
    return _run_layers(hf, hidden, mask, hf.encoder.layer[n_frozen:])


def pooled(st, token_embeddings, mask):
    """The SentenceTransformer's modules after the transformer (pooling, normalize): -> (b, dim)."""
    feats = {"token_embeddings": token_embeddings, "attention_mask": mask}
    for module in list(st)[1:]:
        feats = module(feats)
    return feats["sentence_embedding"]


def freeze_lower(st, n_frozen: int) -> list:
    """Freeze everything of the transformer but the layers from ``n_frozen`` on; returns the trainable ones."""
    hf = transformer_of(st)
    for p in st.parameters():
        p.requires_grad_(False)
    params = [p for layer in hf.encoder.layer[n_frozen:] for p in layer.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _key(fingerprint: str, n_frozen: int, max_length: int, dtype: str, texts: Sequence[str]) -> str:
    h = hashlib.sha256(f"{fingerprint}\0{n_frozen}\0{max_length}\0{dtype}\0".encode())
    for t in texts:
        h.update(t.encode() + b"\n")
    return h.hexdigest()[:16]

# classes


@dataclass
class LayerStates:
    """Cached lower-layer states of ``n`` inputs: ``batch(idx)`` gives padded (b, s, h) float32 + (b, s) mask."""
    folder: Path
    chunks: list[np.ndarray]  # each (tokens, hidden), memory-mapped
    lengths: np.ndarray  # (n,) tokens per input
    where: np.ndarray  # (n, 2): chunk index, first row in that chunk

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx: Sequence[int]):
        import torch
        lens = self.lengths[list(idx)]
        s, h = int(lens.max()), self.chunks[0].shape[1]
        out = np.zeros((len(idx), s, h), np.float32)  # (b, s, h), zeros at padding
        mask = np.zeros((len(idx), s), np.int64)  # (b, s)
        for r, i in enumerate(idx):
            c, off = self.where[i]
            n = int(self.lengths[i])
            out[r, :n] = self.chunks[c][off:off + n]
            mask[r, :n] = 1
        return torch.from_numpy(out), torch.from_numpy(mask)


def build_layer_states(st, texts: Sequence[str], n_frozen: int, *, fingerprint: str, label: str = "encoder",
                       cache_dir: str | Path | None = None, dtype: str = "float16", chunk_size: int = 256,
                       batch_size: int = 32, progress: bool = True) -> LayerStates:
    """Lower-layer states of every string in ``texts`` (tokenized as ``st`` does), built once and cached."""
    import torch

    from merc.encoders.base import cache_root
    if dtype not in DTYPES:
        raise ConfigError(f"layer cache dtype must be one of {list(DTYPES)}, got {dtype!r}")
    hf = transformer_of(st)
    if not 0 < n_frozen < len(hf.encoder.layer):
        raise ConfigError(f"frozen layers must be in 1..{len(hf.encoder.layer) - 1}, got {n_frozen}")
    texts = list(texts)
    key = _key(fingerprint, n_frozen, st.max_seq_length, dtype, texts)
    base = Path(cache_dir) if cache_dir is not None else cache_root() / "layer_states"
    folder = base / f"{label[-48:]}-{key}"
    bounds = [(s, min(s + chunk_size, len(texts))) for s in range(0, len(texts), chunk_size)]
    lengths = np.zeros(len(texts), np.int64)
    chunks: list[np.ndarray] = []
    was_training = hf.training
    hf.eval()
    t0, c0, built = time.perf_counter(), time.process_time(), 0
    with tqdm(total=len(texts), unit="utt", desc=f"frozen layers 1-{n_frozen}", disable=not progress) as bar:
        for k, (s, e) in enumerate(bounds):
            feats = tokenize(st, texts[s:e])
            lens = feats["attention_mask"].sum(1).numpy()  # (chunk,)
            lengths[s:e] = lens
            path = chunk_path(folder, k, ".npy")
            shape = (int(lens.sum()), hf.config.hidden_size)
            X = read_chunk(path, lambda p, shape=shape: _checked(np.load(p, mmap_mode="r"), shape, dtype))
            if X is None:
                rows = []
                order = np.argsort(-lens, kind="stable")  # batches of similar length: less padding
                for b in range(0, len(order), batch_size):
                    sel = order[b:b + batch_size]
                    sub = texts_feats(feats, sel)
                    with torch.inference_mode():
                        H = lower_forward(hf, sub, n_frozen)  # (b, s, h)
                    for r, i in enumerate(sel):
                        rows.append((int(i), H[r, :int(lens[i])].numpy().astype(dtype)))
                rows.sort(key=lambda t: t[0])
                X = np.concatenate([r for _, r in rows], axis=0) if rows else np.zeros((0, hf.config.hidden_size),
                                                                                         dtype)
                buf = io.BytesIO()
                np.save(buf, X, allow_pickle=False)
                write_chunk(path, buf.getvalue())
                built += e - s
                X = np.load(path, mmap_mode="r")
            chunks.append(X)
            bar.update(e - s)
    hf.train(was_training)
    where = np.zeros((len(texts), 2), np.int64)
    for k, (s, e) in enumerate(bounds):
        where[s:e, 0] = k
        where[s:e, 1] = np.concatenate([[0], np.cumsum(lengths[s:e])[:-1]])
    if built or not (folder / "meta.json").is_file():
        write_json(folder / "meta.json", {"n": len(texts), "hidden": hf.config.hidden_size, "n_frozen": n_frozen,
                                          "max_length": st.max_seq_length, "dtype": dtype, "model": fingerprint,
                                          "tokens": int(lengths.sum()), "seconds": round(time.perf_counter() - t0, 1),
                                          "cpu_seconds": round(time.process_time() - c0, 1),
                                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return LayerStates(folder, chunks, lengths, where)


def _checked(X: np.ndarray, shape: tuple[int, int], dtype: str) -> np.ndarray:
    if X.shape != shape or X.dtype != np.dtype(dtype):
        raise ValueError(f"shape {X.shape} {X.dtype}, expected {shape} {dtype}")
    return X


def texts_feats(feats: dict, sel) -> dict:
    """Rows ``sel`` of tokenized features, cut to their longest real length."""
    import torch
    sel_t = torch.as_tensor(np.asarray(sel), dtype=torch.long)
    mask = feats["attention_mask"][sel_t]
    s = int(mask.sum(1).max())
    return {k: v[sel_t][:, :s] for k, v in feats.items() if hasattr(v, "shape") and v.dim() == 2}


def layer_cache_seconds(folder: Path, key: str = "seconds") -> float | None:
    """Seconds (wall, or ``key="cpu_seconds"``: CPU time) the build of a cache folder took (its meta.json)."""
    try:
        return float(json.loads((folder / "meta.json").read_text())[key])
    except Exception:
        return None
