"""Faster inference backends for the sentence-transformers text encoders: ONNX Runtime, in fp32 or int8.

A text encoder name takes a backend suffix, ``minilm@onnx`` or ``mpnet@onnx-int8`` (``merc train
--text-backend onnx`` adds it to every ``--text-encoder``):

- ``torch`` (the default, no suffix): the sentence-transformers model in PyTorch, as before;
- ``onnx``: the same transformer exported once to ONNX and run by ONNX Runtime with its graph optimisations
  (fused attention, layer norm and GELU). Same weights, same fp32 arithmetic up to summation order;
- ``onnx-int8``: that graph with int8 weights (ONNX Runtime dynamic quantisation, per output channel;
  activations quantised per batch at run time). Smaller and faster, and *not* the same features.

Measured on MELD (benchmarks/results/text_speed/): the speed-up, the cosine of the new embeddings to
today's, and the weighted F1 of a dialogue model trained on them.

The exported graph covers the transformer only (``input_ids``, ``attention_mask`` -> token embeddings ``(b, t, d)``);
tokenisation and the modules after it (pooling, dense, normalisation) stay the sentence-transformers model's own, so
any pooling it declares is kept. The files are written once per weights fingerprint into
``<cache_root()>/models/onnx/<fingerprint>/`` (a temporary folder renamed into place: it exists only complete).

The backend is part of the encoder's name and fingerprint, so its features get their own feature-store folder
(``minilm@onnx`` never reads ``minilm``'s rows) and a run trained on them predicts with the same backend.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from merc.errors import ConfigError, MissingDependencyError

BACKENDS = ("torch", "onnx", "onnx-int8")
SEP = "@"  # name@backend
ONNX_FILE = {"onnx": "model.onnx", "onnx-int8": "model-int8.onnx"}
OPSET = 17

# helpers


def split_backend(name: str) -> tuple[str, str]:
    """``"minilm@onnx"`` -> ``("minilm", "onnx")``; a name without a known backend suffix -> ``(name, "torch")``.
    A suffix that looks like a backend but is not one (``minilm@int4``) is a ConfigError."""
    base, sep, suffix = name.rpartition(SEP)
    if not sep or not base:
        return name, "torch"
    if suffix in BACKENDS:
        return base, suffix
    if Path(name).expanduser().exists():  # a folder whose name happens to hold an @
        return name, "torch"
    raise ConfigError(f"text encoder {name!r}: unknown backend {suffix!r}; use one of {', '.join(BACKENDS)} "
                      f"(e.g. {base}{SEP}onnx)")


def with_backend(name: str, backend: str) -> str:
    """``name`` run on ``backend`` (``torch`` leaves it unchanged); ConfigError for an unknown backend."""
    check_backend(backend)
    base, _ = split_backend(name)
    return base if backend == "torch" else f"{base}{SEP}{backend}"


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown text backend {backend!r}; use one of {', '.join(BACKENDS)}")


def require_onnxruntime() -> None:
    missing = [m for m in ("onnxruntime", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"the ONNX text backends need {' and '.join(missing)}: pip install 'merc[onnx]' "
                                     "(or: pip install onnxruntime onnx)")


def onnx_dir(fingerprint: str, root: Path | None = None) -> Path:
    from merc.encoders.base import cache_root
    from merc.encoders.store import _safe
    return (root or cache_root()) / "models" / "onnx" / _safe(fingerprint)


def export_onnx(st, folder: Path, *, int8: bool) -> Path:
    """The ONNX graph of sentence-transformers model ``st``'s transformer in ``folder`` (``model.onnx``, and
    ``model-int8.onnx`` when ``int8``), exporting (and quantising) once; returns the requested file."""
    want = folder / ONNX_FILE["onnx-int8" if int8 else "onnx"]
    if want.is_file():
        return want
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-tmp-", dir=folder.parent))
    try:
        fp32 = folder / ONNX_FILE["onnx"]
        if fp32.is_file():
            shutil.copy2(fp32, tmp / fp32.name)
        else:
            _export_fp32(st, tmp / fp32.name)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # its advice to pre-process: that shape inference fails on these graphs
            try:
                quantize_dynamic(str(tmp / fp32.name), str(tmp / ONNX_FILE["onnx-int8"]), per_channel=True,
                                 weight_type=QuantType.QInt8)
            finally:
                root.setLevel(level)
        os.chmod(tmp, 0o755)
        if folder.is_dir():  # complete files from an earlier export (or a concurrent one) stay; add ours
            for p in tmp.iterdir():
                if not (folder / p.name).exists():
                    os.replace(p, folder / p.name)
        else:
            try:
                os.rename(tmp, folder)
            except OSError:  # lost a race: the other process's folder is complete
                pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not want.is_file():
        raise RuntimeError(f"ONNX export did not leave {want}")
    return want


def _export_fp32(st, path: Path) -> None:
    import torch

    class Body(torch.nn.Module):  # (b, t) ids, (b, t) mask -> (b, t, d) token embeddings
        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, input_ids, attention_mask):
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    hf = st[0].auto_model
    feats = _tokenize(st, ["an example sentence", "and a second, longer example sentence"])
    args = (feats["input_ids"].cpu(), feats["attention_mask"].cpu())
    axes = {"b": 0, "t": 1}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(Body(hf).eval().cpu(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "attention_mask"], output_names=["token_embeddings"],
                          dynamic_axes={k: {v: n for n, v in axes.items()}
                                        for k in ("input_ids", "attention_mask", "token_embeddings")})


def _tokenize(st, texts: list[str]) -> dict:
    """sentence-transformers' own tokenisation (truncation at its ``max_seq_length``): ``preprocess`` in 6.x."""
    prep = getattr(st, "preprocess", None) or st.tokenize
    return prep(texts)


# classes


class OnnxRunner:
    """Runs a sentence-transformers model with its transformer in ONNX Runtime: ``encode(texts) -> (n, dim)``."""

    def __init__(self, st, fingerprint: str, backend: str):
        require_onnxruntime()
        import onnxruntime as ort
        import torch
        t0 = time.perf_counter()
        self.st, self.backend = st, backend
        self.path = export_onnx(st, onnx_dir(fingerprint), int8=backend == "onnx-int8")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = torch.get_num_threads()  # merc's --threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        self.load_seconds = time.perf_counter() - t0

    def encode(self, texts: list[str], *, normalize: bool) -> np.ndarray:
        import torch
        feats = _tokenize(self.st, texts)
        ids = feats["input_ids"].cpu().numpy().astype(np.int64)  # (b, t)
        mask = feats["attention_mask"].cpu().numpy().astype(np.int64)  # (b, t)
        (tokens,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})  # (b, t, d)
        dev = self.st.device  # ONNX Runtime runs on the CPU; the modules after the transformer stay where they are
        out = {"token_embeddings": torch.from_numpy(tokens).to(dev), "attention_mask": feats["attention_mask"].to(dev)}
        with torch.inference_mode():
            for module in list(self.st)[1:]:  # pooling, dense, normalise: the model's own
                out = module(out)
            emb = out["sentence_embedding"].float()  # (b, dim)
            if normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)  # (b, dim)
        return emb.cpu().numpy()
