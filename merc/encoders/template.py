"""How an utterance becomes a text encoder's input, and the file that carries that choice.

A fine-tuned encoder folder (``merc encoder finetune``) holds :data:`META_FILE` (``merc_encoder.json``):
its input template, labels and provenance. ``SentenceTransformerEncoder`` reads the template from it and
the feature store and ``merc predict`` apply it through :func:`render`. A leaf module: it imports nothing
from merc but the errors.
"""
from __future__ import annotations

from typing import Any

from merc.errors import ConfigError

META_FILE = "merc_encoder.json"  # read by SentenceTransformerEncoder: template, labels, provenance
DEFAULT_TEMPLATE = "{speaker}: {text}"  # the fine-tuning default: the encoder learns speaker priors
PLAIN_TEMPLATE = "{text}"  # frozen encoders see the text alone


def render(template: str, u: Any) -> str:
    """The text an encoder sees for utterance ``u`` (``{speaker}`` and ``{text}`` are filled in)."""
    try:
        return template.format(speaker=u.speaker, text=u.text)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"text template {template!r} is invalid ({e}); "
                          "use the fields {speaker} and {text}") from None
