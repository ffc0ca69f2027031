"""One place that turns a model config into a model: ``build_model(config)``, and a saved config dict
(``config.json["model"]``) back into its config class: ``config_from_dict(d)``.

Families are told apart by the config's ``kind``: ``"matav"`` -> ``MatavConfig`` / ``MatavModel``;
``"linear"`` -> ``LinearConfig`` / ``LinearProbe`` (fitted by ``merc.training.probe``, not by SGD); every other
kind (mamba, gru, transformer, mlp) -> ``DialogueConfig`` / ``DialogueModel``.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Union

import torch

from merc.errors import ConfigError
from merc.models.dialogue import KINDS, DialogueConfig, DialogueModel
from merc.models.linear import LinearConfig, LinearProbe
from merc.models.matav import MatavConfig, MatavModel

ModelConfig = Union[DialogueConfig, MatavConfig, LinearConfig]
MODEL_KINDS = (*KINDS, "matav", "linear")
FAMILIES = {"matav": MatavConfig, "linear": LinearConfig}  # kind -> config class; any other kind: DialogueConfig


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    kind = d.get("kind", "mamba")
    cls = FAMILIES.get(kind, DialogueConfig)
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"model config has settings {unknown} that {cls.__name__} does not know "
                          f"(kind {kind!r}); was the run made by a newer merc?")
    return cls(**d)


def build_model(config: ModelConfig) -> torch.nn.Module:
    if isinstance(config, MatavConfig):
        return MatavModel(config)
    if isinstance(config, LinearConfig):
        return LinearProbe(config)
    if isinstance(config, DialogueConfig):
        return DialogueModel(config)
    raise ConfigError(f"no model for a {type(config).__name__}; give a DialogueConfig, MatavConfig or LinearConfig")
