"""Conversations -> the records ``merc predict --json`` prints, through :class:`~merc.inference.predictor.Predictor`
and the record functions of :mod:`merc.training.predict` (finiteness check, modality presence, record)."""
from __future__ import annotations

from typing import Any, Sequence

from merc.data.schema import Conversation
from merc.inference.predictor import Predictor
from merc.training.predict import absence_reasons, check_finite, modality_presence, prediction_record


def conversation_raw(conv: Conversation) -> dict[str, Any]:
    """The input object ``merc predict`` echoes for a conversation given as plain text."""
    return {"conversation_id": conv.conversation_id,
            "utterances": [{"utterance_id": u.utterance_id, "speaker": u.speaker, "text": u.text} for u in conv]}


def predict_records(predictor: Predictor, conversations: Sequence[Conversation],
                    raws: Sequence[dict[str, Any]] | None = None) -> list[dict]:
    """One record per conversation, as ``merc predict --json`` prints it. ``raws``: the input objects to echo
    (default :func:`conversation_raw`)."""
    raws = raws or [conversation_raw(c) for c in conversations]
    reasons: dict[str, dict[str, str]] = {}
    features, probs = predictor.label(conversations, reasons=reasons)
    out = []
    for raw, conv, p in zip(raws, conversations, probs, strict=True):
        check_finite(p, conv, predictor.run.path)
        present = modality_presence(conv, features)
        absent = absence_reasons(conv, present, reasons, predictor.config.encoders)
        out.append(prediction_record(raw, conv, p, predictor.labels, present, absent))
    return out
