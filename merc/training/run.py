"""Run directories: everything needed to reload a trained dialogue model (transformers-style
``save_pretrained`` / ``from_pretrained``).

A run directory holds ``config.json`` (model, training, data and encoder settings), ``model.safetensors``,
``labels.json``, ``metrics.json`` and plots. A multi-seed run holds one such directory per seed
(``seed_<n>/``) plus ``summary.json``; loading it picks the seed with the best **dev** weighted F1.

``config.json`` is versioned (``config_version``): version 2 adds ``provenance`` (merc version, git commit
and dirtiness, command line, machine, date: :func:`merc.io.provenance`) and ``corpus_fingerprint``
(:meth:`merc.data.schema.Corpus.fingerprint`). A config without a version is version 1 (e.g. the bundled
demo run) and still loads; a config from a newer merc is refused with a clear error.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from safetensors.torch import save as st_save

from merc.data.schema import Conversation, Corpus
from merc.device import current_device
from merc.errors import ConfigError, IncompatibleRunError, MissingFileError
from merc.io import atomic_write_bytes, write_json
from merc.models.dialogue import DialogueConfig, DialogueModel
from merc.models.factory import config_from_dict
from merc.training.adapters import build_run_model
from merc.training.batching import Dialogue, build_dialogues
from merc.training.features import FEATURE_PROVIDERS, check_fingerprints, combine, encoder_features
from merc.training.normalize import FeatureNormalizer
from merc.training.trainer import TrainConfig, predict_dialogues
from merc.training.weights import load_into, record_checksum

log = logging.getLogger(__name__)


# 1: text only (text_encoder, text_encoder_fingerprint); 2: encoders per modality, standardisation, modality
# dropout, media_dir, provenance, corpus_fingerprint, and any model kind (DialogueConfig or MatavConfig)
CONFIG_VERSION = 2


@dataclass
class RunConfig:
    """Everything needed to rebuild a run's inputs: model and training settings, data, and per modality the
    encoders (concatenated in this order), their fingerprints and the train-split standardisation stats.

    ``text_encoder`` / ``text_encoder_fingerprint`` mirror ``encoders["text"][0]`` and its fingerprint, so
    readers of version-1 configs keep working. :meth:`from_dict` migrates version-less (version 1) configs."""
    model: DialogueConfig
    train: TrainConfig
    dataset: str = ""
    data_dir: str = ""
    modalities: list[str] = field(default_factory=lambda: ["text"])
    text_encoder: str = "mpnet"
    text_encoder_fingerprint: str = ""
    encoders: dict[str, list[str]] = field(default_factory=dict)  # modality -> encoder names, concatenated in order
    encoder_fingerprints: dict[str, list[str]] = field(default_factory=dict)  # modality -> one per encoder
    normalization: dict[str, Any] = field(default_factory=dict)  # FeatureNormalizer.to_dict(): train-split stats
    modality_dropout: dict[str, float] = field(default_factory=dict)  # modality -> p (training only)
    media_dir: str = ""
    qc_dir: str = ""  # `merc qc` folder whose speaker_tracks.json chose the face of each utterance ("" = largest)
    corpus_fingerprint: str = ""  # Corpus.fingerprint() of the corpus trained on ("" in version 1)
    provenance: dict[str, Any] = field(default_factory=dict)  # merc.io.provenance() at training time
    adapters: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> stage-2 adapter record
    tune_adapters: bool = False  # the adapters were fine-tuned with the dialogue model (merc.training.adapters)
    config_version: int = CONFIG_VERSION

    def __post_init__(self):
        if "text" in self.modalities:
            if not self.encoders.get("text"):
                self.encoders = {**self.encoders, "text": [self.text_encoder]}
            self.text_encoder = self.encoders["text"][0]
            if self.text_encoder_fingerprint and not self.encoder_fingerprints.get("text"):
                self.encoder_fingerprints = {**self.encoder_fingerprints, "text": [self.text_encoder_fingerprint]}
            self.text_encoder_fingerprint = (self.encoder_fingerprints.get("text") or [""])[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str | Path = "config.json") -> "RunConfig":
        d = migrate_config(d, source=source)
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            log.warning("run config: ignoring fields this version of merc does not know: %s", extra)
        d = {k: v for k, v in d.items() if k in known}
        return cls(model=config_from_dict(d.pop("model")), train=TrainConfig(**d.pop("train")), **d)


def migrate_config(d: dict[str, Any], *, source: str | Path = "config.json") -> dict[str, Any]:
    """A config dict of any known version -> the current version (a new dict). Version 1 (no
    ``config_version``): text only, ``text_encoder`` + ``text_encoder_fingerprint``, no standardisation."""
    d = dict(d)
    version = d.get("config_version", 1)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise IncompatibleRunError(f"{source}: run config version {version!r} is newer than this merc understands "
                                   f"({CONFIG_VERSION}); upgrade merc to load this run")
    if version == 1:
        modalities = list(d.get("modalities") or ["text"])
        text = d.get("text_encoder", "mpnet")
        d["encoders"] = {"text": [text]} if "text" in modalities else {}
        fp = d.get("text_encoder_fingerprint", "")
        d["encoder_fingerprints"] = {"text": [fp]} if "text" in modalities and fp else {}
        d.setdefault("normalization", {})
        d.setdefault("modality_dropout", {})
    d["config_version"] = CONFIG_VERSION
    return d


def save_run(run_dir: str | Path, model: DialogueModel, config: RunConfig, labels: Sequence[str],
             metrics: dict[str, Any] | None = None) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "model.safetensors",
                       st_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
    record_checksum(run_dir)  # checksums.json: sha256 of the weights, verified by from_pretrained
    write_json(run_dir / "config.json", config.to_dict())
    write_json(run_dir / "labels.json", list(labels))
    if metrics is not None:
        write_json(run_dir / "metrics.json", metrics)
    return run_dir


def resolve_run_dir(run_dir: str | Path) -> Path:
    """A single run, or the dev-best seed of a multi-seed run."""
    run_dir = Path(run_dir)
    if (run_dir / "model.safetensors").exists():
        return run_dir
    summary = run_dir / "summary.json"
    if summary.exists():
        best = json.loads(summary.read_text())["dev_selected_seed_dir"]
        return run_dir / best
    if run_dir.is_dir() and any(run_dir.iterdir()):  # a folder of something else: never suggest training into it
        corpus = [p.name for pat in ("*.jsonl", "*_sent_emo.csv", "Session[1-5]") for p in sorted(run_dir.glob(pat))]
        what = f"it looks like a corpus folder ({', '.join(corpus[:3])})" if corpus else "it holds other files"
        raise MissingFileError(f"{run_dir} is not a merc run directory (no model.safetensors or summary.json): {what}. "
                               "The run directory comes first (`merc predict RUN_DIR INPUT`); train one with "
                               "`merc train ... --out runs/NAME`")
    raise MissingFileError(f"{run_dir} is not a merc run directory (no model.safetensors or summary.json); "
                           f"create one with `merc train ... --out {run_dir}`")


@dataclass
class TrainedRun:
    """A loaded run: the model, its labels and config, and the means to predict on new conversations."""
    model: DialogueModel
    labels: list[str]
    config: RunConfig
    path: Path
    # encoders loaded by features_for, kept for the next call: predict asks for features chunk by chunk,
    # and each load reads the weights again (MPNet ~0.4 GB, resemblyzer, dlib, the FER net)
    _encoders: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_pretrained(cls, run_dir: str | Path) -> "TrainedRun":
        path = resolve_run_dir(run_dir)
        config = RunConfig.from_dict(json.loads((path / "config.json").read_text()), source=path / "config.json")
        labels = json.loads((path / "labels.json").read_text())
        model = build_run_model(config.model, config.adapters, tune=config.tune_adapters)
        load_into(model, path)  # checksum (when recorded), parse, finite values: IncompatibleRunError otherwise
        model.eval()
        model.to(current_device())  # --device of the command (predict, evaluate); the CPU otherwise
        return cls(model, labels, config, path)

    @property
    def normalizer(self) -> FeatureNormalizer:
        return FeatureNormalizer.from_dict(self.config.normalization)

    def features_for(self, conversations: Sequence[Conversation], *, progress: bool = False, encoder=None,
                     media_dir: str | None = None, reasons: dict[str, dict[str, str]] | None = None
                     ) -> dict[str, dict[str, np.ndarray | None]]:
        """Raw (unstandardised) ``features[modality][utterance_id]`` of ``conversations`` by the run's encoders
        (``encoder``: an instance to use instead of the run's single text encoder). ``reasons``, when given, is
        filled with ``reasons[modality][utterance_id]``: why an absent one is absent."""
        utts = [u for c in conversations for u in c]
        corpus = Corpus("predict", {"predict": list(conversations)}, list(self.labels))
        out: dict[str, dict[str, np.ndarray | None]] = {}
        for m in self.config.modalities:
            names = self.config.encoders.get(m) or []
            if encoder is not None and m == encoder.modality:
                if len(names) != 1:
                    raise ConfigError(f"this run concatenates {len(names)} {m} encoders ({names}); pass none "
                                      "to use them")
                encs = {names[0]: encoder}
            else:
                # the store provider takes encoder instances (loaded once per run); another provider gets names
                store = getattr(FEATURE_PROVIDERS.get(m), "takes_encoders", False)
                encs = {n: (self.encoder(m, n) if store else n) for n in names}
            parts = [(n, encoder_features(corpus, "predict", m, e, media_dir=media_dir, progress=progress))
                     for n, e in encs.items()]
            actual = {m: [str(p.meta.get("fingerprint", "")) for _, p in parts]}
            recorded = self.config.encoder_fingerprints
            if m == "face" and self.config.qc_dir:
                # trained on QC speaker tracks, which new media does not have: the largest face in each
                # frame, through the same networks and frame settings
                from merc.encoders.face_expr import without_face_choice
                log.info("this run chose faces with the QC speaker tracks of %s; new media has none, so the "
                         "largest face of each frame is used", self.config.qc_dir)
                actual = {m: [without_face_choice(f) for f in actual[m]]}
                recorded = {m: [without_face_choice(f) for f in recorded.get(m, [])]}
            check_fingerprints(recorded, actual)
            both = combine([u.utterance_id for u in utts], parts)
            out[m] = both.table()
            if reasons is not None:
                reasons[m] = {u: r for u, p, r in zip(both.ids, both.present, both.reasons) if not p}
        return out

    def encoder(self, modality: str, name: str):
        """The run's encoder ``name`` of ``modality``, loaded on first use and kept (``merc.encoders.get_encoder``)."""
        key = (modality, name)
        if key not in self._encoders:
            from merc.encoders.base import get_encoder
            self._encoders[key] = get_encoder(name, modality)
        return self._encoders[key]

    def dialogues(self, conversations: Sequence[Conversation], features) -> list[Dialogue]:
        """Standardise raw ``features`` with the run's train-split statistics and build dialogues."""
        return build_dialogues(conversations, self.normalizer.transform(features), self.labels,
                               max_speakers=self.config.model.max_speakers, dims=self.config.model.input_dims)

    def predict(self, conversations: Sequence[Conversation], *, features=None,
                progress: bool = False) -> list[np.ndarray]:
        """Per conversation, class probabilities (seq_len, n_classes) in ``self.labels`` order. ``features`` are
        raw encoder outputs (as from :meth:`features_for`); the run's standardisation is applied here."""
        features = features or self.features_for(conversations, progress=progress)
        stripped = [Conversation(c.conversation_id, c.split,
                                 [type(u)(**{**u.__dict__, "emotion": None}) for u in c]) for c in conversations]
        return predict_dialogues(self.model, self.dialogues(stripped, features))


def from_pretrained(run_dir: str | Path) -> TrainedRun:
    return TrainedRun.from_pretrained(run_dir)
