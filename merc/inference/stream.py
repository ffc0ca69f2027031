"""Live labelling of a conversation one utterance at a time (the WebSocket ``/v1/stream`` of ``merc serve``).

Contract: the label (and probabilities) sent for utterance ``i`` equal what whole-conversation prediction
(``merc predict``, ``POST /v1/predict``) gives utterance ``i`` of the conversation cut after utterance ``i``.

Two modes, chosen by the run (:attr:`merc.inference.predictor.Predictor.step_mode`):

- **step** (a causal Mamba run): each utterance is encoded alone (with the past turns a context encoder reads)
  and the model takes one step (:mod:`merc.inference.step`), carrying its recurrent state: O(1) work and memory
  per utterance, however long the conversation. A causal model never changes an earlier label.
- **prefix** (any other run): the model runs on the whole conversation so far at every utterance, O(n) per
  utterance (features are encoded once per utterance and kept, unless an encoder reads neighbouring turns). A
  bidirectional model sees the new utterance when it relabels earlier ones: the reply then carries
  ``"revised": [{"index", "predicted", "probabilities"}, …]`` for each earlier utterance whose **label** changed
  (probabilities move a little with every utterance; only a changed label is sent).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from merc.data.schema import Conversation, Utterance
from merc.errors import InputError
from merc.inference.predictor import Predictor


@dataclass
class StreamSession:
    """One conversation streamed utterance by utterance; :meth:`reset` starts the next one."""
    predictor: Predictor
    max_utterances: int = 1000
    conversation: int = 0  # how many conversations this session has started before the current one
    mode: str = field(init=False)

    def __post_init__(self):
        self.mode = "step" if self.predictor.step_mode else "prefix"
        self.reset(first=True)

    @property
    def conversation_id(self) -> str:
        return f"stream{self.conversation}"

    def reset(self, *, first: bool = False) -> None:
        if not first:
            self.conversation += 1
        self.utterances: list[Utterance] = []
        self.sent: list[str] = []  # the label last sent for each utterance
        self._features: dict[str, dict[str, Any]] = {}
        self._speakers: dict[str, int] = {}
        self._view = self._step = None
        if self.mode == "step":
            from merc.inference.step import stepping_view
            self._view, self._step = stepping_view(self.predictor.run.model)

    def add(self, speaker: str, text: str) -> dict[str, Any]:
        """Label the next utterance: ``{"index", "speaker", "text", "predicted", "probabilities"}`` (plus
        ``"modalities"`` for a multimodal run and ``"revised"`` when earlier labels changed)."""
        if len(self.utterances) >= self.max_utterances:
            raise InputError(f"this stream already has {self.max_utterances} utterances, the most a conversation "
                             "may have here; send {\"reset\": true} to start another")
        i = len(self.utterances)
        u = Utterance(f"{self.conversation_id}_u{i}", speaker, text)
        self.utterances.append(u)
        try:
            if self.mode == "step":
                p, present = self._add_step(u)
                revised = []
            else:
                probs, present = self._add_prefix()
                p, revised = probs[-1], self._revisions(probs)
        except Exception:
            self.utterances.pop()
            raise
        from merc.training.predict import prediction_record
        conv = Conversation(self.conversation_id, "predict", [u])
        raw = {"conversation_id": conv.conversation_id,
               "utterances": [{"utterance_id": u.utterance_id, "speaker": speaker, "text": text}]}
        rec = prediction_record(raw, conv, p[None], self.predictor.labels, present)["utterances"][0]
        self.sent.append(rec["predicted"])
        out = {"index": i, **rec}
        if revised:
            out["revised"] = revised
        return out

    # the two modes

    def _new_features(self, u: Utterance) -> dict[str, dict[str, Any]]:
        """Raw features of the newest utterance: encoded alone, or with the turns before it when a text
        encoder reads them (then the whole conversation so far is encoded, and only its last row kept)."""
        past, future = self.predictor.text_context()
        convs = [Conversation(self.conversation_id, "predict", self.utterances if past or future else [u])]
        feats = self.predictor.features(convs)
        return {m: {u.utterance_id: table.get(u.utterance_id)} for m, table in feats.items()}

    def _add_step(self, u: Utterance) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from merc.training.batching import collate
        from merc.training.predict import check_finite, modality_presence
        run = self.predictor.run
        feats = self._new_features(u)
        conv = Conversation(self.conversation_id, "predict", [u])
        batch = collate(run.dialogues([conv], feats))                  # feats[m] (1, 1, d_m)
        slot = self._speakers.setdefault(u.speaker, len(self._speakers))
        speakers = torch.tensor([[min(slot, run.config.model.max_speakers - 1)]])  # (1, 1) order of appearance
        with self.predictor.lock, torch.no_grad():
            logits = self._view(batch.feats, speakers, batch.mask, present=batch.present)  # (1, 1, n_classes)
        p = logits.softmax(-1)[0].numpy()                               # (1, n_classes)
        check_finite(p, conv, run.path)
        return p[0], modality_presence(conv, feats)

    def _add_prefix(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from merc.training.predict import modality_presence
        u = self.utterances[-1]
        past, future = self.predictor.text_context()
        conv = Conversation(self.conversation_id, "predict", list(self.utterances))
        if past or future:  # a context encoder: every utterance's input may change with the new one
            self._features = self.predictor.features([conv])
        else:
            for m, table in self._new_features(u).items():
                self._features.setdefault(m, {}).update(table)
        probs = self.predictor.probabilities([conv], self._features)[0]  # (n, n_classes)
        present = modality_presence(Conversation(conv.conversation_id, "predict", [u]), self._features)
        return probs, present

    def _revisions(self, probs: np.ndarray) -> list[dict[str, Any]]:
        labels = self.predictor.labels
        out = []
        for j, old in enumerate(self.sent):
            new = labels[int(probs[j].argmax())]
            if new != old:
                self.sent[j] = new
                out.append({"index": j, "predicted": new,
                            "probabilities": {lab: round(float(x), 4) for lab, x in zip(labels, probs[j])}})
        return out
