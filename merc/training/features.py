"""Utterance features for training, evaluation and prediction, for any set of modalities.

    corpus_features(corpus, splits, modalities, encoders) -> (features, report, fingerprints)
        features[split][modality][utterance_id] -> (d,) float32 vector, or None when absent
        report[split][modality] = {"utterances", "present", "absent", "reasons": {reason: n}, "examples"}
        fingerprints[modality] = [fingerprint of each encoder, in order]

Text goes through the text feature cache (``merc.encoders.cache.encode_split``) as before; an utterance with
an empty transcript is absent for text (reason "empty text") instead of encoding "". Audio and face come
from a **feature provider** registered per modality in :data:`FEATURE_PROVIDERS`::

    provider(corpus, split, encoder_name, *, media_dir=None, progress=True[, qc_dir=...]) -> ProvidedFeatures
        ProvidedFeatures(features={uid: vector | None}, reasons={uid: why absent}, fingerprint="...")

(``qc_dir`` is passed only when set: the folder of a ``merc qc`` run, whose ``speaker_tracks.json`` the face
encoders of :func:`store_provider` use to find the labelled speaker's face instead of the largest face.)

(the feature store plugs in here). Several encoders of one modality are **concatenated** in the order the run
lists them (``encoders["audio"] = ["egemaps", "resemblyzer"]`` -> 88 + 256 = 344-d) and the utterance has the
modality only when **every** one of them produced a vector: a half-filled row would be indistinguishable from
real values to the model, while presence masks say exactly what is missing. The reason recorded is that of
the first encoder (in order) that failed.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from merc.data.schema import Corpus
from merc.errors import ConfigError, IncompatibleRunError, InputError, an

log = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "face")
DEFAULT_ENCODERS: dict[str, list[str]] = {"text": ["mpnet"], "audio": ["egemaps", "resemblyzer"],
                                          "face": ["fer", "dlib"]}
N_EXAMPLES = 5  # utterance ids kept per absence reason in the report


class ProvidedFeatures(NamedTuple):
    features: Mapping[str, "np.ndarray | None"]  # utterance id -> (d,) vector, None (or missing) = absent
    reasons: Mapping[str, str]  # utterance id -> why it is absent (no face found, no audio stream, …)
    fingerprint: str  # stable id of the encoder's exact weights/settings


FeatureProvider = Callable[..., ProvidedFeatures]


def stage1_encoders(modality: str) -> tuple[str, ...]:
    """Names of the registered audio / face encoders (``merc encoder list``); text encoders are open-ended
    (any sentence-transformers name or folder)."""
    from merc.encoders.base import available_encoders
    return tuple(i.name for i in available_encoders(modality))


def store_provider(modality: str) -> FeatureProvider:
    """The default provider of ``modality``: the registered encoder of that name through the feature store
    (``merc.encoders.store``: resumable, keyed by clip content; a missing, corrupt, silent or faceless clip
    is an absent row with its reason)."""
    def provider(corpus: Corpus, split: str, name, *, media_dir: str | None = None,
                 progress: bool = True, qc_dir: str | None = None) -> ProvidedFeatures:
        """``name``: a registered encoder name, or an encoder instance already loaded (then without ``qc_dir``:
        the instance was built with its own options)."""
        from merc.encoders.store import extract_split
        options = {"speaker_tracks": qc_dir} if qc_dir and modality == "face" else {}
        if options and not isinstance(name, str):
            raise ConfigError("qc_dir is an option of a face encoder built by name; pass the name, not an instance")
        feats = extract_split(corpus, split, name, modality=modality, progress=progress, **options)
        table = {uid: (feats.X[i] if feats.present[i] else None) for i, uid in enumerate(feats.ids)}
        reasons = {uid: r for uid, r in zip(feats.ids, feats.reasons) if r}
        return ProvidedFeatures(table, reasons, str(feats.meta.get("fingerprint", "")))
    provider.__name__ = f"store_provider_{modality}"
    provider.takes_encoders = True  # type: ignore[attr-defined]  # TrainedRun passes the encoders it keeps
    return provider


# modality -> provider; tests and users may register their own (e.g. precomputed features)
FEATURE_PROVIDERS: dict[str, FeatureProvider] = {"audio": store_provider("audio"), "face": store_provider("face")}


def resolve_encoders(modalities: Sequence[str], encoders: Mapping[str, Sequence[str]] | None = None
                     ) -> dict[str, list[str]]:
    """Encoders per used modality: given ones, else :data:`DEFAULT_ENCODERS`. Raises ConfigError for an
    unknown modality, an empty list, a repeated name, or an encoder of another modality."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ConfigError(f"unknown modalities {unknown or list(modalities)}; choose from {list(MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"modalities {list(modalities)} repeat a name")
    encoders = encoders or {}
    out = {}
    for m in modalities:
        names = list(encoders.get(m) or DEFAULT_ENCODERS[m])
        if len(set(names)) != len(names):
            raise ConfigError(f"{m} encoders {names} repeat a name")
        if m == "text" and not names:
            raise ConfigError("a run with text needs a text encoder")
        if m == "text":
            from merc.encoders.text import check_text_encoder_name
            for name in names:
                check_text_encoder_name(name)  # before any encoding, not after the encoders listed first
        for name in names:
            home = [k for k in ("audio", "face") if name in stage1_encoders(k)]
            if home and m not in home:
                raise ConfigError(f"{name!r} is {an(home[0])} encoder, not {an(m)} encoder "
                                  f"(use it with --{home[0]}-encoders)")
            if m != "text" and not home and name not in _provider_encoders(m):
                raise ConfigError(f"unknown {m} encoder {name!r}; known: {list(stage1_encoders(m))} "
                                  "(`merc encoder list`)")
        out[m] = names
    return out


def _provider_encoders(m: str) -> tuple[str, ...]:
    return tuple(getattr(FEATURE_PROVIDERS.get(m), "encoders", ()))


def _text_features(corpus: Corpus, split: str, name: str, *, progress: bool) -> ProvidedFeatures:
    from merc.encoders import get_text_encoder
    from merc.encoders.cache import encode_split
    enc = get_text_encoder(name)
    feats = encode_split(corpus, split, enc, progress=progress)
    texts = {u.utterance_id: u.text for u in corpus.utterances(split)}
    table: dict[str, np.ndarray | None] = {}
    reasons = {}
    for uid, x in zip(feats.ids, feats.X):
        if texts[uid] is None or not str(texts[uid]).strip():
            table[uid], reasons[uid] = None, "empty text"
        else:
            table[uid] = x
    return ProvidedFeatures(table, reasons, enc.fingerprint)


def encoder_features(corpus: Corpus, split: str, modality: str, name, *, media_dir: str | None = None,
                     progress: bool = True, qc_dir: str | None = None) -> ProvidedFeatures:
    """One encoder's features for one split (text: the feature cache; others: the registered provider;
    ``qc_dir``: see the module docstring). ``name`` is an encoder name, or for a provider marked
    ``takes_encoders`` (the store provider) also an encoder instance."""
    if modality == "text":
        return _text_features(corpus, split, name, progress=progress)
    provider = FEATURE_PROVIDERS.get(modality)
    if provider is None:
        raise ConfigError(f"no feature provider is registered for {modality!r}: {modality} features need the "
                          f"encoder feature store (merc.training.features.FEATURE_PROVIDERS[{modality!r}])")
    extra = {"qc_dir": qc_dir} if qc_dir else {}
    return ProvidedFeatures(*provider(corpus, split, name, media_dir=media_dir, progress=progress, **extra))


def combine(utterance_ids: Sequence[str], parts: Sequence[tuple[str, ProvidedFeatures]]
            ) -> tuple[dict[str, np.ndarray | None], dict[str, str]]:
    """Concatenate several encoders' vectors per utterance (present only when every encoder gave a finite
    vector); reasons name the first encoder that failed."""
    dims = {}
    for name, p in parts:
        for v in p.features.values():
            if v is not None:
                dims[name] = int(np.asarray(v).size)
                break
    table: dict[str, np.ndarray | None] = {}
    reasons: dict[str, str] = {}
    for uid in utterance_ids:
        vecs = []
        for name, p in parts:
            v = p.features.get(uid)
            if v is None:
                reasons[uid] = f"{name}: {p.reasons.get(uid, 'no feature')}"
                break
            v = np.asarray(v, dtype=np.float32).reshape(-1)
            if v.size != dims[name]:
                raise InputError(f"encoder {name!r} gave utterance {uid!r} a {v.size}-d vector, other utterances "
                                 f"{dims[name]}-d")
            if not np.isfinite(v).all():
                reasons[uid] = f"{name}: non-finite values"
                break
            vecs.append(v)
        table[uid] = np.concatenate(vecs) if len(vecs) == len(parts) else None
    return table, reasons


def presence_report(table: Mapping[str, "np.ndarray | None"], reasons: Mapping[str, str]) -> dict[str, Any]:
    """Counts of absent utterances per reason *kind* (file names and numbers replaced,
    ``merc.encoders.store.reason_kind``: "fer: missing file <file>"), with up to N_EXAMPLES ids each."""
    from merc.encoders.store import reason_kind
    absent = [uid for uid, v in table.items() if v is None]
    kind = {uid: reason_kind(reasons.get(uid, "no feature")) for uid in absent}
    why = Counter(kind.values())
    examples: dict[str, list[str]] = {}
    first: dict[str, str] = {}  # kind -> the first such reason in full (real file names), for messages
    for uid in absent:
        r = kind[uid]
        first.setdefault(r, reasons.get(uid, "no feature"))
        if len(examples.setdefault(r, [])) < N_EXAMPLES:
            examples[r].append(uid)
    return {"utterances": len(table), "present": len(table) - len(absent), "absent": len(absent),
            "reasons": dict(why.most_common()), "examples": examples, "first": first}


def corpus_features(corpus: Corpus, splits: Sequence[str], modalities: Sequence[str],
                    encoders: Mapping[str, Sequence[str]] | str | None = None, *, media_dir: str | None = None,
                    progress: bool = True, qc_dir: str | None = None):
    """``(features, report, fingerprints)`` for ``splits``: see the module docstring. ``encoders`` maps modality
    -> encoder names (defaults per modality when omitted; a plain string is the text encoder); ``qc_dir`` a
    ``merc qc`` folder whose speaker tracks the face encoders use."""
    if isinstance(encoders, str):
        encoders = {"text": [encoders]}
    encoders = resolve_encoders(list(modalities), encoders)
    if qc_dir and "face" in encoders:
        from merc.encoders.face_expr import load_speaker_tracks
        load_speaker_tracks(qc_dir)  # a clear error now, before any extraction, when the folder has no tracks
    elif qc_dir:
        log.warning("--qc-dir %s is used by face encoders only, and this run has no face modality", qc_dir)
    features: dict[str, dict[str, dict[str, np.ndarray | None]]] = {}
    report: dict[str, dict[str, Any]] = {}
    fingerprints: dict[str, list[str]] = {}
    for split in splits:
        ids = [u.utterance_id for u in corpus.utterances(split)]
        features[split], report[split] = {}, {}
        for m, names in encoders.items():
            parts = [(n, encoder_features(corpus, split, m, n, media_dir=media_dir, progress=progress, qc_dir=qc_dir))
                     for n in names]
            fps = [p.fingerprint for _, p in parts]
            if fingerprints.setdefault(m, fps) != fps:
                raise InputError(f"{m} encoder fingerprints changed between splits ({fingerprints[m]} vs {fps})")
            table, reasons = combine(ids, parts)
            features[split][m] = table
            report[split][m] = rep = presence_report(table, reasons)
            if rep["absent"]:  # said to the user by the command (merc.training.absence.describe), once
                log.debug("%s/%s: %d of %d utterances lack %s (%s)", corpus.name, split, rep["absent"],
                          rep["utterances"], m, ", ".join(f"{r}: {n}" for r, n in rep["reasons"].items()))
    return features, report, fingerprints


def feature_dims(features: Mapping[str, Mapping[str, "np.ndarray | None"]]) -> dict[str, int]:
    """Dimension per modality from the first present vector; ConfigError when a modality has none."""
    dims = {}
    for m, table in features.items():
        v = next((v for v in table.values() if v is not None), None)
        if v is None:
            raise ConfigError(f"no utterance of the training split has {an(m)} feature: nothing to learn from; "
                              f"check --media-dir or drop {m} from --modalities")
        dims[m] = int(np.asarray(v).size)
    return dims


def check_fingerprints(recorded: Mapping[str, Sequence[str]], actual: Mapping[str, Sequence[str]]) -> None:
    """IncompatibleRunError when an encoder now gives different features than when the run was trained."""
    for m, fps in actual.items():
        want = list(recorded.get(m) or [])
        if want and any(want) and list(fps) != want:
            raise IncompatibleRunError(f"the {m} encoders differ from the ones this run was trained with "
                                       f"(fingerprints {list(fps)} != recorded {want}); use the same encoder "
                                       f"versions or retrain")
