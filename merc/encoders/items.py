"""Stage-1 encoders over unimodal emotion items (``merc adapt --modality audio|face``): any registered audio
or face encoder applied to a corpus clip or a still face image, through the feature store.

- **audio** items (CREMA-D, RAVDESS, SAVEE, TESS, JSONL ``audio``): the whole file is the utterance's
  ``audio`` (no segment), so the registry encoder reads it exactly as it reads a dialogue clip.
- **face** items (FER2013, RAF-DB, CK+, JAFFE, JSONL ``image``): one still image instead of video frames —
  a file (jpg / png / tiff / bmp, via Pillow, EXIF orientation applied) or FER2013's inline 48×48 pixels
  (no temporary files). Which face (``crop``): ``"auto"`` (default) takes *pre-cropped* images whole —
  FER2013 pixel rows and RAF-DB ``*_aligned.jpg`` are face crops already, where a detector is unreliable —
  and looks for the largest face (dlib HOG, as for video frames) in every other image; ``"detect"`` always
  looks; ``"whole"`` never does. The face then goes through the encoder's own per-frame function
  (:meth:`~merc.encoders.face_expr.FaceFrameEncoder.encode_image`), so a still image gives the same
  feature as a one-frame clip of it.

An item the encoder cannot use — a corrupt or missing file, no face found, a blank image, too little speech —
is *absent* with its one-line reason (never an exception); :func:`merc.training.adapt.train_adapter` leaves
it out of the adapter's training and reports the count by reason.

Several encoders of a modality (``--encoder egemaps,resemblyzer``) are concatenated in the given order, as the
dialogue training does (:func:`merc.encoders.features.concat`): the name and fingerprint are the parts
joined by ``+``, an item is present only when every part has it. The fingerprint is the registry encoder's own,
so an adapter over ``fer`` matches a ``merc train --face-encoders fer`` run (:mod:`merc.training.adapters`).

Features are stored per item content (media digest, or the pixels' hash, plus the crop rule) under
``<cache>/store/unimodal/<corpora>/``: a rerun, a larger ``--per-class`` or an interrupted extraction only
encodes what is new.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from merc.data.schema import Utterance
from merc.data.unimodal.items import EmotionItem
from merc.encoders.base import Encoder, EncodeResult, MediaEncoder, get_encoder, media_key
from merc.encoders.features import concat
from merc.errors import ConfigError, CorruptMedia, MissingMedia, NoFace, an

log = logging.getLogger(__name__)

CROPS = ("auto", "detect", "whole")
STORE_CORPUS = "unimodal"

# helpers


def is_precropped(item: EmotionItem) -> bool:
    """Whether the item's image is a face crop already (FER2013 pixel rows, RAF-DB aligned images)."""
    return item.pixels is not None or (item.media or "").lower().endswith("_aligned.jpg")


def read_image(item: EmotionItem) -> np.ndarray:
    """The item's image: inline pixels ``(h, w)`` uint8, or the file as ``(h, w, 3)`` RGB uint8."""
    if item.pixels is not None:
        return np.asarray(item.pixels, dtype=np.uint8)
    if not item.media:
        raise MissingMedia(f"item {item.item_id} has no image file or pixels")
    from PIL import Image, ImageOps
    p = Path(item.media)
    if not p.is_file():
        raise MissingMedia(f"missing file {p}")
    try:
        with Image.open(p) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises SyntaxError for some broken headers
        raise CorruptMedia(f"not decodable: {p}: {e}") from None


@dataclass
class _Row:
    """What the feature store iterates over: an id and the item."""
    utterance_id: str
    item: EmotionItem


# classes


class ItemMediaEncoder(MediaEncoder):
    """One registry encoder (audio or face) over :class:`EmotionItem` rows; name, dim and fingerprint are its own."""

    def __init__(self, inner: Encoder, *, crop: str = "auto"):
        if inner.modality not in ("audio", "face"):
            raise ConfigError(f"item encoders wrap audio or face encoders; {inner.name!r} is {an(inner.modality)} one")
        if crop not in CROPS:
            raise ConfigError(f"face crop {crop!r} unknown; use one of {', '.join(CROPS)}")
        if inner.modality == "face" and not hasattr(inner, "encode_image"):
            raise ConfigError(f"face encoder {inner.name!r} cannot read still images (no encode_image); "
                              "use fer or dlib")
        self.inner, self.crop = inner, crop
        self.name, self.modality, self.dim = inner.name, inner.modality, int(inner.dim)
        self.torch_threads = getattr(inner, "torch_threads", None)
        self.standardize = bool(getattr(inner, "standardize", False))

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def whole(self, item: EmotionItem) -> bool:
        return self.crop == "whole" or (self.crop == "auto" and is_precropped(item))

    @staticmethod
    def utterance(item: EmotionItem) -> Utterance:
        """An audio item as the utterance an audio encoder reads: the whole file as its ``audio``."""
        return Utterance(item.item_id, item.speaker or "", "", item.label, audio=item.media)

    def content_key(self, row: _Row) -> str:
        it = row.item
        if self.modality == "audio":
            return self.inner.content_key(self.utterance(it))
        if it.pixels is not None:
            px = np.ascontiguousarray(it.pixels, dtype=np.uint8)
            key = "px" + hashlib.sha256(f"{px.shape}".encode() + px.tobytes()).hexdigest()[:24]
        else:
            key = media_key(it.media, None, None)
        return f"{key}#{'whole' if self.whole(it) else 'detect'}"

    def _encode_one(self, row: _Row) -> np.ndarray:
        it = row.item
        if self.modality == "audio":
            if not it.media:
                raise MissingMedia(f"item {it.item_id} has no audio file")
            return self.inner._encode_one(self.utterance(it))
        image = read_image(it)
        if image.size == 0 or int(image.max()) == int(image.min()):
            raise NoFace(f"blank image (every pixel {int(image.flat[0]) if image.size else '-'}) "
                             f"of {it.item_id}")
        h, w = image.shape[:2]
        where = Path(it.media).name if it.pixels is None and it.media else it.item_id
        return self.inner.encode_image(image, box=(0.0, 0.0, float(w), float(h)) if self.whole(it) else None,
                                       name=where)


class MediaItemEncoder:
    """The stage-1 encoder of an audio / face adapter: one or several registry encoders over items, concatenated.

    ``encode_items(items) -> EncodeResult`` (absent items with reasons); ``encode(items)`` its ``X``.
    """

    def __init__(self, modality: str, names: Sequence[str], *, crop: str = "auto", store=None,
                 progress: bool = True, encoder_options: dict[str, dict[str, Any]] | None = None):
        if modality not in ("audio", "face"):
            raise ConfigError(f"item encoders are for audio or face corpora, not {modality!r} "
                              "(text adapters use merc.training.adapt_data.CachedTextEncoder)")
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise ConfigError(f"no {modality} encoder given (e.g. --encoder "
                              f"{'egemaps' if modality == 'audio' else 'fer'})")
        if len(set(names)) != len(names):
            raise ConfigError(f"--encoder {','.join(names)} names an encoder twice")
        self.modality, self.crop, self.progress = modality, crop, progress
        self.parts = [ItemMediaEncoder(get_encoder(n, modality, **(encoder_options or {}).get(n, {})), crop=crop)
                      for n in names]
        self.name = "+".join(p.name for p in self.parts)
        self.fingerprint = "+".join(p.fingerprint for p in self.parts)  # computed now: a missing model fails here
        self.dim = sum(p.dim for p in self.parts)
        self._store = store
        self.last_meta: dict[str, Any] = {}

    @property
    def store(self):
        from merc.encoders.store import FeatureStore
        if self._store is None:
            self._store = FeatureStore()
        return self._store

    def settings(self) -> dict[str, Any]:
        """What the adapter folder records about how items were encoded."""
        out: dict[str, Any] = {"kind": "items", "parts": [{"name": p.name, "fingerprint": p.fingerprint,
                                                          "dim": p.dim} for p in self.parts]}
        if self.modality == "face":
            out["crop"] = self.crop
        return out

    def encode_items(self, items: Sequence[EmotionItem]) -> EncodeResult:
        """Features of ``items`` ``(n, dim)``; ``present[i]`` False (row zeros) with ``reasons[i]`` where any
        encoder could not use the item (the reason is the first such encoder's, prefixed with its name)."""
        rows = [_Row(it.item_id, it) for it in items]
        ids = [r.utterance_id for r in rows]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate item ids in the sample")
        split = "+".join(sorted({it.source for it in items})) or "none"
        feats = [self.store.get_conversations(STORE_CORPUS, split, [[r] for r in rows], p, progress=self.progress)
                 for p in self.parts]
        both = concat([(p.name, f) for p, f in zip(self.parts, feats)])  # (n, dim)
        self.last_meta = {p.name: {k: v for k, v in f.meta.items() if k in ("seconds", "extracted", "reused",
                                                                           "cache_hit")}
                          for p, f in zip(self.parts, feats)}
        return EncodeResult(both.X, both.present, both.reasons)

    def encode(self, items: Sequence[EmotionItem]) -> np.ndarray:
        return self.encode_items(items).X

    def __repr__(self) -> str:
        return f"MediaItemEncoder(modality={self.modality!r}, name={self.name!r}, dim={self.dim})"


def item_encoder(modality: str, names: str | Sequence[str], **options) -> MediaItemEncoder:
    """``item_encoder("audio", "egemaps,resemblyzer")``: the encoder ``merc adapt`` uses for audio / face items."""
    if isinstance(names, str):
        names = names.split(",")
    return MediaItemEncoder(modality, list(names), **options)
