"""Utterance features for training, evaluation and prediction, for any set of modalities.

    corpus_features(corpus, splits, modalities, encoders) -> (features, report, fingerprints)
        features[split][modality][utterance_id] -> (d,) float32 vector, or None when absent
        report[split][modality] = {"utterances", "present", "absent", "reasons": {reason: n}, "examples"}
        fingerprints[modality] = [fingerprint of each encoder, in order]

Every modality, text included, comes from a **feature provider** registered per modality in
:data:`FEATURE_PROVIDERS`; the default one is the registered encoder of that name through the feature store
(:mod:`merc.encoders.store`: resumable, keyed by content; an empty transcript, a missing, corrupt, silent or
faceless clip is an absent row with its reason)::

    provider(corpus, split, encoder, *, media_dir=None, progress=True[, qc_dir=...]) -> Features
        merc.encoders.features.Features with meta["fingerprint"], the stable id of the encoder's weights/settings

(``qc_dir`` is passed only when set: the folder of a ``merc qc`` run, whose ``speaker_tracks.json`` the face
encoders use to find the labelled speaker's face instead of the largest face.) Tests and users may register
their own provider (e.g. precomputed features); one with an ``encoders`` attribute names the encoders it knows.

Several encoders of one modality are **concatenated** in the order the run lists them
(``encoders["audio"] = ["egemaps", "resemblyzer"]`` -> 88 + 256 = 344-d) and the utterance has the modality
only when **every** one of them produced a vector (:func:`merc.encoders.features.concat`): a half-filled row
would be indistinguishable from real values to the model, while presence masks say exactly what is missing.
The reason recorded is that of the first encoder (in order) that failed.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from merc.data.schema import Corpus
from merc.encoders.features import Features, concat, reason_kind
from merc.errors import ConfigError, IncompatibleRunError, InputError, an

log = logging.getLogger(__name__)

MODALITIES = ("text", "audio", "face")
DEFAULT_ENCODERS: dict[str, list[str]] = {"text": ["mpnet"], "audio": ["egemaps", "resemblyzer"],
                                          "face": ["fer", "dlib"]}
N_EXAMPLES = 5  # utterance ids kept per absence reason in the report

FeatureProvider = Callable[..., Features]


def store_provider(modality: str) -> FeatureProvider:
    """The default provider of ``modality``: the registered encoder of that name through the feature store."""
    def provider(corpus: Corpus, split: str, name, *, media_dir: str | None = None,
                 progress: bool = True, qc_dir: str | None = None) -> Features:
        """``name``: a registered encoder name, or an encoder instance already loaded (then without ``qc_dir``:
        the instance was built with its own options)."""
        from merc.encoders.store import extract_split
        options = {"speaker_tracks": qc_dir} if qc_dir and modality == "face" else {}
        if options and not isinstance(name, str):
            raise ConfigError("qc_dir is an option of a face encoder built by name; pass the name, not an instance")
        return extract_split(corpus, split, name, modality=modality, progress=progress, **options)
    provider.__name__ = f"store_provider_{modality}"
    provider.takes_encoders = True  # type: ignore[attr-defined]  # TrainedRun passes the encoders it keeps
    return provider


# modality -> provider; tests and users may register their own (e.g. precomputed features)
FEATURE_PROVIDERS: dict[str, FeatureProvider] = {m: store_provider(m) for m in MODALITIES}


def resolve_encoders(modalities: Sequence[str], encoders: Mapping[str, Sequence[str]] | None = None
                     ) -> dict[str, list[str]]:
    """Encoders per used modality: given ones, else :data:`DEFAULT_ENCODERS`. Raises ConfigError, before any
    encoding, for an unknown modality, an empty list, a repeated name, an unknown encoder, an encoder of another
    modality, or a path to a folder that does not exist."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ConfigError(f"unknown modalities {unknown or list(modalities)}; choose from {list(MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"modalities {list(modalities)} repeat a name")
    from merc.encoders.base import check_encoder
    encoders = encoders or {}
    out = {}
    for m in modalities:
        names = list(encoders.get(m) or DEFAULT_ENCODERS[m])
        if len(set(names)) != len(names):
            raise ConfigError(f"{m} encoders {names} repeat a name")
        for name in names:
            if name not in getattr(FEATURE_PROVIDERS.get(m), "encoders", ()):
                check_encoder(name, m)
        out[m] = names
    return out


def encoder_features(corpus: Corpus, split: str, modality: str, name, *, media_dir: str | None = None,
                     progress: bool = True, qc_dir: str | None = None) -> Features:
    """One encoder's features for one split, from the modality's provider (``qc_dir``: see the module
    docstring). ``name`` is an encoder name, or for a provider marked ``takes_encoders`` (the store provider)
    also an encoder instance."""
    provider = FEATURE_PROVIDERS.get(modality)
    if provider is None:
        raise ConfigError(f"no feature provider is registered for {modality!r} "
                          f"(merc.training.features.FEATURE_PROVIDERS[{modality!r}])")
    extra = {"qc_dir": qc_dir} if qc_dir else {}
    feats = provider(corpus, split, name, media_dir=media_dir, progress=progress, **extra)
    if not isinstance(feats, Features):
        raise TypeError(f"the {modality} feature provider returned {type(feats).__name__}, not Features")
    return feats


def combine(utterance_ids: Sequence[str], parts: Sequence[tuple[str, Features]]) -> Features:
    """Several encoders' features concatenated per utterance, in ``utterance_ids`` order
    (:func:`merc.encoders.features.concat`); an id a part lacks is absent ("no feature")."""
    full = []
    for name, f in parts:
        missing = [u for u in utterance_ids if u not in f]
        if missing:  # a provider may leave utterances out: absent
            f = Features.from_table(list(utterance_ids), f.table(), dict(zip(f.ids, f.reasons)), f.meta)
        full.append((name, f))
    return concat(full, ids=utterance_ids)


def presence_report(feats: Features) -> dict[str, Any]:
    """Counts of absent utterances per reason *kind* (file names and numbers replaced,
    :func:`merc.encoders.features.reason_kind`: "fer: missing file <file>"), with up to N_EXAMPLES ids each."""
    absent = [(u, r) for u, p, r in zip(feats.ids, feats.present, feats.reasons) if not p]
    kind = {u: reason_kind(r or "no feature") for u, r in absent}
    why = Counter(kind.values())
    examples: dict[str, list[str]] = {}
    first: dict[str, str] = {}  # kind -> the first such reason in full (real file names), for messages
    for u, r in absent:
        first.setdefault(kind[u], r or "no feature")
        if len(examples.setdefault(kind[u], [])) < N_EXAMPLES:
            examples[kind[u]].append(u)
    return {"utterances": len(feats), "present": len(feats) - len(absent), "absent": len(absent),
            "reasons": dict(why.most_common()), "examples": examples, "first": first}


def seed_from_qc(corpus: Corpus, splits: Sequence[str], encoders: Mapping[str, Sequence[Any]], qc_dir: str) -> None:
    """``merc qc`` already computed the resemblyzer voice and the dlib descriptor of the labelled speaker's face
    track of each utterance: copy them into the feature store (:func:`merc.qc.share.seed_store_from_qc`, which
    checks that QC's settings are the encoders' defaults) so that extraction does not compute them again. Only
    for modalities served by the store provider, and only when those encoders are used."""
    wanted = {m: n for m, n in (("audio", "resemblyzer"), ("face", "dlib"))
              if n in [getattr(e, "name", e) for e in encoders.get(m, ())]
              and getattr(FEATURE_PROVIDERS.get(m), "takes_encoders", False)}
    if not wanted:
        return
    from merc.qc.share import seed_store_from_qc
    for split in splits:
        written = seed_store_from_qc(qc_dir, corpus, split)
        if any(written.values()):
            log.info("%s/%s: rows copied from the QC run %s: %s", corpus.name, split, qc_dir, written)


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
    if qc_dir:
        seed_from_qc(corpus, splits, encoders, qc_dir)
    features: dict[str, dict[str, dict[str, np.ndarray | None]]] = {}
    report: dict[str, dict[str, Any]] = {}
    fingerprints: dict[str, list[str]] = {}
    for split in splits:
        ids = [u.utterance_id for u in corpus.utterances(split)]
        features[split], report[split] = {}, {}
        for m, names in encoders.items():
            parts = [(n, encoder_features(corpus, split, m, n, media_dir=media_dir, progress=progress, qc_dir=qc_dir))
                     for n in names]
            fps = [str(p.meta.get("fingerprint", "")) for _, p in parts]
            if fingerprints.setdefault(m, fps) != fps:
                raise InputError(f"{m} encoder fingerprints changed between splits ({fingerprints[m]} vs {fps})")
            both = combine(ids, parts)
            features[split][m] = both.table()
            report[split][m] = rep = presence_report(both)
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
