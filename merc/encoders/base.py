"""One interface for every stage-1 encoder (text, audio, face) and one registry holding them all.

An :class:`Encoder` maps a list of inputs (utterances; for text the strings it renders from them) to an
``(n, dim)`` float32 array. :meth:`Encoder.encode_batch` returns an :class:`EncodeResult` whose
``present[i]`` is False (and ``reasons[i]`` says why: missing file, no audio stream, no face in 0/4 sampled
frames, empty text, …) for an utterance it could not encode; that row is zeros.

Every encoder also says

- ``fingerprint``: changes when its weights or settings change (part of every feature-store key);
- ``needs``: what it reads from an utterance (``"text"``, ``"speaker"``, ``"audio"``, ``"video"``);
- ``inputs(conversations)``: what it reads, per utterance, in order (the utterances themselves; a text
  encoder renders its template and dialogue context into strings);
- ``content_key(x)``: an id of exactly one input (text hash; media digest + segment), so the feature store
  (:mod:`merc.encoders.store`) re-extracts a changed input and reuses the others.

Registry: ``register_encoder(name, factory, modality=..., dim=..., description=...)``;
``get_encoder(name, modality=None)``; ``available_encoders()`` (one :class:`EncoderInfo` per entry, read
without loading any model, for ``merc encoder list``). A modality may also take names it has not registered
(``register_open_encoders``: text takes any sentence-transformers folder or hub name).

Design after sentence-transformers' ``encode`` and pyannote's ``Model``/``Inference`` split; the
failure-per-item contract follows the QC checks (:mod:`merc.qc.base`).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from merc.errors import ConfigError, MissingDependencyError, NonFiniteFeatures, UnusableInput, an


def cache_root() -> Path:
    """Root of merc's caches: ``$MERC_CACHE`` if set, else ``~/.cache/merc``."""
    env = os.environ.get("MERC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "merc"


log = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "face")
DIGEST_BLOCK = 1 << 20  # media digest: first and last MB (see media_digest)

# helpers


def media_digest(path: str | os.PathLike) -> str:
    """Content id of a media file: size, mtime (ns) and sha256 of its first and last MB.

    Cheap on multi-GB IEMOCAP recordings (reads at most 2 MB) and still changes when a clip is
    re-encoded, truncated or replaced; an in-place edit of a large file's middle that keeps its size
    would go unnoticed were it not for the mtime. Copies that keep mtimes (``cp -p``, ``rsync -a``)
    keep their features. Raises OSError when the file cannot be read.
    """
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
    with open(p, "rb") as f:
        h.update(f.read(DIGEST_BLOCK))
        if st.st_size > 2 * DIGEST_BLOCK:
            f.seek(st.st_size - DIGEST_BLOCK)
            h.update(f.read(DIGEST_BLOCK))
        elif st.st_size > DIGEST_BLOCK:
            h.update(f.read())
    return h.hexdigest()[:24]


def media_segment(u, path: str | None) -> tuple[float | None, float | None]:
    """(start, end) seconds to cut from ``path`` for utterance ``u``, or (None, None) for a whole clip.

    A segment is cut when the recording is shared by several utterances: ``u.meta["segment"] =
    [start, end]`` (explicit), or ``u.meta["video_scope"] == "dialogue"`` and ``path`` is ``u.video``
    (IEMOCAP's dialogue avi; its turn wavs are whole clips). JSONL users whose utterances point into
    one long recording set ``"meta": {"video_scope": "dialogue"}`` (or ``"audio_scope"`` for a shared
    audio file) together with ``start``/``end``.
    """
    meta = u.meta or {}
    if meta.get("segment"):
        s, e = meta["segment"]
        return float(s), float(e)
    if u.start is None or u.end is None or not path:
        return None, None
    if (path == u.video and meta.get("video_scope") == "dialogue") or (
            path == u.audio and meta.get("audio_scope") == "dialogue"):
        return float(u.start), float(u.end)
    return None, None


def media_key(path: str | None, start: float | None, end: float | None) -> str:
    """``content_key`` of a media input: digest + segment, or a marker naming why it cannot be read
    (a missing file's key changes when the file appears, so the store retries then)."""
    if not path:
        return "none"
    try:
        digest = media_digest(path)
    except OSError as e:
        return f"unreadable:{Path(path).name}:{type(e).__name__}"
    seg = "" if start is None and end is None else f"@{start}-{end}"
    return f"{digest}{seg}"


def require(module: str, hint: str, *, what: str) -> Any:
    """``import module`` or raise MissingDependencyError naming ``what`` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(f"{what} needs the Python package {module!r}: {hint}") from e


def _spec_found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# classes


@dataclass
class EncodeResult:
    """What an encoder returns for a batch: features, which rows are real, and why the others are not."""
    X: np.ndarray  # (n, dim) float32; absent rows are zeros
    present: np.ndarray  # (n,) bool
    reasons: list[str | None]  # None where present, else one line naming the utterance's problem

    def __post_init__(self) -> None:
        n = len(self.reasons)
        if self.X.ndim != 2 or self.X.shape[0] != n or self.present.shape != (n,):
            raise ValueError(f"EncodeResult: X {self.X.shape}, present {self.present.shape}, {n} reasons disagree")

    @classmethod
    def empty(cls, n: int, dim: int) -> "EncodeResult":
        return cls(np.zeros((n, dim), np.float32), np.zeros(n, bool), ["not encoded"] * n)


class Encoder(ABC):
    """A frozen stage-1 encoder for one modality (see the module docstring)."""

    name: str
    modality: str  # "text" | "audio" | "face"
    dim: int
    needs: tuple[str, ...] = ()
    description: str = ""  # what it measures, one line (shown by `merc encoder list`)
    install_hint: str = ""  # how to install what it needs
    standardize: bool = False  # features need mean/std from the train split (see merc.encoders.standardize)

    fingerprint: str  # stable id of the exact weights and settings (an attribute or a property)
    chunk_size: int = 128  # inputs per resumable chunk of the feature store (a kill loses at most one chunk)

    @classmethod
    def installed(cls) -> bool:
        """Whether the packages / weights this encoder needs are present (cheap: nothing is loaded)."""
        return True

    def inputs(self, conversations: Iterable[Iterable]) -> list:
        """What :meth:`encode_batch` and :meth:`content_key` take for each utterance of ``conversations``
        (flat, in order): the utterances themselves, unless the encoder renders something from them."""
        return [u for c in conversations for u in c]

    def content_key(self, u) -> str:
        """Id of what this encoder reads from input ``u`` (see :func:`media_key`)."""
        h = hashlib.sha256()
        for need in self.needs:
            h.update(f"{need}={getattr(u, need, None)}\0".encode())
        return h.hexdigest()[:24]

    @abstractmethod
    def encode_batch(self, utterances: Sequence, *, progress: bool = False) -> EncodeResult:
        """Features of ``utterances``; an utterance that cannot be encoded is absent with a reason."""

    def encode(self, utterances: Sequence, *, progress: bool = True) -> np.ndarray:
        """``(n, dim)`` float32; absent rows are zeros (use :meth:`encode_batch` to know which)."""
        return self.encode_batch(list(utterances), progress=progress).X

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}, dim={self.dim})"


class MediaEncoder(Encoder):
    """Shared loop of the audio and face encoders: one utterance at a time.

    Subclasses implement ``_encode_one(u) -> (dim,)`` and raise one of the named
    :class:`merc.errors.UnusableInput` kinds (missing or corrupt media — every ``merc.media.MediaError`` —, no
    audio stream, too little speech, no face) with a one-line reason when an utterance has no usable input: that
    utterance is absent, with its reason. Any other exception is a bug (in merc, a model, a decoder) and
    propagates with its traceback, naming the utterance, instead of looking like missing data.
    ``torch_threads``: torch models on one small input at a time run faster on 1 thread (measured here:
    resemblyzer 0.43 s per clip with 1 thread, 4.5 s with 2 on the shared machine); set while encoding.
    """

    torch_threads: int | None = None

    def encode_batch(self, utterances: Sequence, *, progress: bool = False) -> EncodeResult:
        if self.torch_threads is None:
            return self._encode_all(utterances, progress)
        import torch
        n = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        try:
            return self._encode_all(utterances, progress)
        finally:
            torch.set_num_threads(n)

    def _encode_all(self, utterances: Sequence, progress: bool) -> EncodeResult:
        from tqdm.auto import tqdm
        utterances = list(utterances)
        res = EncodeResult.empty(len(utterances), self.dim)
        for i, u in enumerate(tqdm(utterances, desc=f"encode {self.name}", unit="utt", disable=not progress)):
            try:
                x = np.asarray(self._encode_one(u), dtype=np.float32).reshape(-1)
                if x.shape != (self.dim,):
                    raise RuntimeError(f"encoder {self.name!r} returned shape {x.shape} for {u.utterance_id}, "
                                       f"expected ({self.dim},)")
                if not np.isfinite(x).all():
                    raise NonFiniteFeatures(f"non-finite {self.name} features")
            except UnusableInput as e:  # an expected, named condition: absent, with its reason
                res.reasons[i] = str(e) or type(e).__name__
                continue
            except Exception as e:  # a bug: say which utterance, keep the traceback
                if hasattr(e, "add_note"):
                    e.add_note(f"while encoding utterance {u.utterance_id!r} with {self.name!r}")
                raise
            res.X[i], res.present[i], res.reasons[i] = x, True, None
        return res

    @abstractmethod
    def _encode_one(self, u) -> np.ndarray:
        """One utterance -> (dim,)."""


@dataclass
class EncoderInfo:
    """A registry entry, readable without loading the model (``merc encoder list``)."""
    name: str
    modality: str
    dim: int | None
    description: str
    factory: Callable[..., Encoder]
    installed: Callable[[], bool] = field(default=lambda: True)
    install_hint: str = ""
    optional: bool = False  # not a default: needs an extra or the user's own weights


_REGISTRY: dict[tuple[str, str], EncoderInfo] = {}
# modality -> factory(name, **options) for the names of that modality that are not registered (text: a local
# sentence-transformers folder or a hub name), and a cheap check(name) that raises ConfigError for a name it
# cannot be (a path to a folder that does not exist) without loading anything
_OPEN: dict[str, tuple[Callable[..., Encoder], Callable[[str], None]]] = {}
_BUILTIN_MODULES = ("merc.encoders.text", "merc.encoders.audio", "merc.encoders.face_expr", "merc.encoders.blendshapes")
_LOADED = False


def register_encoder(name: str, factory: Callable[..., Encoder], *, modality: str, dim: int | None,
                     description: str = "", installed: Callable[[], bool] | None = None, install_hint: str = "",
                     optional: bool = False, overwrite: bool = False) -> None:
    """Make ``get_encoder(name, modality)`` call ``factory(**options)``."""
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    key = (modality, name)
    if key in _REGISTRY and not overwrite:
        raise ConfigError(f"{modality} encoder {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = EncoderInfo(name, modality, dim, description, factory, installed or (lambda: True),
                                 install_hint, optional)


def register_open_encoders(modality: str, factory: Callable[..., Encoder], check: Callable[[str], None]) -> None:
    """Names of ``modality`` that are not registered go to ``factory(name, **options)`` (after ``check(name)``)."""
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    _OPEN[modality] = (factory, check)


def _load_builtins() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for m in _BUILTIN_MODULES:
            importlib.import_module(m)


def available_encoders(modality: str | None = None) -> list[EncoderInfo]:
    """Registered encoders, by modality then name."""
    _load_builtins()
    out = [i for k, i in sorted(_REGISTRY.items()) if modality is None or k[0] == modality]
    return sorted(out, key=lambda i: (MODALITIES.index(i.modality), i.name))


def _resolve(name: str, modality: str | None) -> EncoderInfo | str:
    """The registry entry of ``name``, or the modality whose open factory takes it; ConfigError otherwise."""
    _load_builtins()
    if modality is not None and modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    matches = [i for i in available_encoders(modality) if i.name == name]
    if len(matches) > 1:
        raise ConfigError(f"encoder name {name!r} exists for several modalities "
                          f"({', '.join(i.modality for i in matches)}); pass modality=")
    if matches:
        return matches[0]
    elsewhere = [i.modality for i in available_encoders() if i.name == name]
    if modality is not None and elsewhere:
        raise ConfigError(f"{name!r} is {an(elsewhere[0])} encoder, not {an(modality)} encoder "
                          f"(use it with --{elsewhere[0]}-encoders)")
    if modality in _OPEN:  # e.g. a text encoder folder; only with the modality named
        _OPEN[modality][1](name)
        return modality
    names = ", ".join(f"{i.name} ({i.modality})" for i in available_encoders(modality))
    raise ConfigError(f"unknown {modality + ' ' if modality else ''}encoder {name!r}; registered: {names} "
                      "(`merc encoder list`)")


def check_encoder(name: str, modality: str | None = None) -> None:
    """ConfigError, without loading anything, when ``get_encoder(name, modality)`` cannot work."""
    _resolve(name, modality)


def get_encoder(name: str, modality: str | None = None, **options) -> Encoder:
    """The encoder ``name`` (of ``modality`` when two modalities share a name). With ``modality="text"`` a name
    that is not registered is a local sentence-transformers folder (e.g. written by ``merc encoder finetune``) or
    a hub name (:func:`merc.encoders.text.open_text_encoder`)."""
    found = _resolve(name, modality)
    if isinstance(found, str):
        return _OPEN[found][0](name, **options)
    return found.factory(**options)
