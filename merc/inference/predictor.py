"""A run and its encoders loaded once, and the one prediction path that ``merc predict``, ``merc serve`` and
live streaming share.

``Predictor.label(conversations)`` is raw features by the run's encoders (``TrainedRun.features_for``), then the
model with the run's standardisation (``TrainedRun.predict``); ``merc predict``
(:func:`merc.training.predict.predict_file`) calls it chunk by chunk, and :func:`merc.inference.records.predict_records`
turns its output into the records ``merc predict --json`` prints (``check_finite``, ``prediction_record``).

Model and encoder calls hold one lock: a server answers requests from several threads, and a tokenizer or a
torch module is not something to call from two threads at once. :meth:`Predictor.shared_run` hands the same
lock to code that takes a run (``predict_file`` for recordings).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from merc.data.schema import Conversation, Utterance

log = logging.getLogger(__name__)


class _LockedRun:
    """A run whose ``features_for`` and ``predict`` hold the predictor's lock; everything else passes through."""

    def __init__(self, run, lock: threading.RLock):
        self._run, self._lock = run, lock

    def __getattr__(self, name: str):
        return getattr(self._run, name)

    def features_for(self, *args, **kw):
        with self._lock:
            return self._run.features_for(*args, **kw)

    def predict(self, *args, **kw):
        with self._lock:
            return self._run.predict(*args, **kw)


class Predictor:
    """``Predictor.from_pretrained(run_dir)``: a run (or, ``ensemble=True``, all seeds of a multi-seed run) with
    its encoders, loaded once and kept."""

    def __init__(self, run):
        self.run = run
        self.lock = threading.RLock()
        self._step_ok: bool | None = None

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, *, ensemble: bool = False) -> "Predictor":
        if ensemble:
            from merc.training.ensemble import EnsembleRun
            return cls(EnsembleRun.from_pretrained(run_dir))
        from merc.training.run import from_pretrained
        return cls(from_pretrained(run_dir))

    # what the run is

    @property
    def labels(self) -> list[str]:
        return list(self.run.labels)

    @property
    def config(self):
        return self.run.config

    @property
    def causal(self) -> bool:
        return not getattr(self.config.model, "bidirectional", True)

    def text_encoders(self) -> list:
        """The run's text encoder objects (loaded on first use, then kept by the run)."""
        base = self.run.members[0] if hasattr(self.run, "members") else self.run
        if "text" not in self.config.modalities:
            return []
        return [base.encoder("text", n) for n in self.config.encoders.get("text") or [self.config.text_encoder]]

    def text_context(self) -> tuple[int, int]:
        """The most past and future turns any text encoder of the run reads around an utterance."""
        specs = [e.context for e in self.text_encoders() if getattr(e, "context", None) is not None]
        return max((s.past for s in specs), default=0), max((s.future for s in specs), default=0)

    @property
    def step_mode(self) -> bool:
        """Whether live streaming can step the model (O(1) per utterance) and stay equal to whole-conversation
        prediction: a causal run whose model steps exactly like its forward (checked once, on random inputs)
        and whose text encoders read no future turns."""
        if self._step_ok is None:
            from merc.inference.step import step_matches_forward
            model = getattr(self.run, "model", None)
            ok = self.causal and model is not None and self.text_context()[1] == 0
            if ok:
                with self.lock:
                    ok = step_matches_forward(model, dict(self.config.model.input_dims))
                if not ok:
                    log.warning("this causal run's model does not step like its whole-sequence forward; live "
                                "streaming recomputes each prefix instead")
            self._step_ok = bool(ok)
        return self._step_ok

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` says: labels, modalities, encoders, model kind, causal, streaming mode."""
        model = self.config.model
        return {"run": Path(self.run.path).name, "labels": self.labels, "modalities": list(self.config.modalities),
                "encoders": {m: list(v) for m, v in self.config.encoders.items()},
                "model": getattr(model, "kind", type(model).__name__), "causal": self.causal,
                "max_speakers": int(model.max_speakers),
                "ensemble": hasattr(self.run, "members"),
                "streaming": "step" if self.step_mode else "prefix"}

    # predicting

    def shared_run(self):
        """The run, its model and encoder calls under this predictor's lock (for ``predict_file(run=...)``)."""
        return _LockedRun(self.run, self.lock)

    def features(self, conversations: Sequence[Conversation], *, progress: bool = False,
                 reasons: dict[str, dict[str, str]] | None = None):
        """Raw ``features[modality][utterance_id]`` by the run's encoders (``reasons``, when given, is filled with
        why each absent one is absent: ``TrainedRun.features_for``)."""
        with self.lock:
            if reasons is None:
                return self.run.features_for(conversations, progress=progress)
            return self.run.features_for(conversations, progress=progress, reasons=reasons)

    def probabilities(self, conversations: Sequence[Conversation], features) -> list[np.ndarray]:
        """Per conversation (seq_len, n_classes): the model on the run's standardised ``features``."""
        with self.lock:
            return self.run.predict(conversations, features=features)

    def label(self, conversations: Sequence[Conversation], *, progress: bool = False,
              reasons: dict[str, dict[str, str]] | None = None):
        """``(features, probabilities)`` of ``conversations``: :meth:`features`, then :meth:`probabilities`."""
        features = self.features(conversations, progress=progress, reasons=reasons)
        return features, self.probabilities(conversations, features)

    def warm_up(self) -> None:
        """Load the encoders and run the model once, so the first request does not pay for it."""
        self.label([Conversation("warm-up", "predict", [Utterance("warm-up_u0", "A", "Hello.")])])
        _ = self.step_mode

