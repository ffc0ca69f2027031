"""merc.training.flags: `merc train` and both experiments turn the same flags into the same configs."""
from __future__ import annotations

from dataclasses import replace

import pytest

from merc.cli import build_parser
from merc.errors import ConfigError
from merc.models.dialogue import DialogueConfig
from merc.models.matav import MatavConfig
from merc.training.flags import (
    dialogue_config_from_args,
    encoders_from_args,
    matav_config_from_args,
    modalities_from_args,
    model_config_from_args,
    text_encoder_from_args,
    train_config_from_args,
)
from merc.training.trainer import TrainConfig

DATA = ["--dataset", "jsonl", "--data-dir", "d", "--out", "o"]
# encoder, training and loss flags every command takes, each away from its default
SHARED = ["--text-encoder", "ft_a, ft_b", "--audio-encoders", "egemaps,resemblyzer", "--face-encoders", "fer",
          "--epochs", "7", "--batch-size", "3", "--lr", "0.002", "--weight-decay", "0.05", "--patience", "2",
          "--class-weights", "effective", "--loss", "focal", "--focal-gamma", "1.5", "--cb-beta", "0.99",
          "--supcon-weight", "0.2", "--supcon-temperature", "0.3", "--seed", "4"]


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_experiments_take_the_loss_flags_and_comma_lists_as_merc_train_does():
    train = parse("train", *DATA, "--modalities", "text,audio", *SHARED)
    ablation = parse("experiment", "ablation", *DATA, "--modalities", "text,audio", *SHARED)
    transfer = parse("experiment", "transfer", *DATA, *SHARED)
    tc = train_config_from_args(train)
    assert tc == TrainConfig(epochs=7, batch_size=3, lr=0.002, weight_decay=0.05, patience=2,
                             class_weights="effective", loss="focal", focal_gamma=1.5, cb_beta=0.99,
                             supcon_weight=0.2, supcon_temperature=0.3, seed=4)
    assert train_config_from_args(ablation) == tc == train_config_from_args(transfer)
    assert encoders_from_args(train, modalities_from_args(train)) == {"text": ["ft_a", "ft_b"],
                                                                      "audio": ["egemaps", "resemblyzer"]}
    assert encoders_from_args(ablation, modalities_from_args(ablation)) == encoders_from_args(
        train, modalities_from_args(train))
    assert encoders_from_args(transfer) == {"text": ["ft_a", "ft_b"], "audio": ["egemaps", "resemblyzer"],
                                            "face": ["fer"]}
    assert text_encoder_from_args(train) == text_encoder_from_args(transfer) == "ft_a"


def test_defaults_are_the_config_defaults():
    train = parse("train", *DATA)
    assert train_config_from_args(train) == TrainConfig()
    assert model_config_from_args(train) == DialogueConfig()
    ablation = parse("experiment", "ablation", *DATA)
    assert train_config_from_args(ablation) == TrainConfig() and matav_config_from_args(ablation) == MatavConfig()
    assert ablation.seeds == 3 and train.seeds == 1


def test_model_flags_give_the_same_configs():
    model = ["--model", "gru", "--d-model", "64", "--layers", "1", "--dropout", "0.3"]
    train, transfer = parse("train", *DATA, *model), parse("experiment", "transfer", *DATA, *model)
    assert model_config_from_args(train) == dialogue_config_from_args(transfer) == DialogueConfig(
        kind="gru", d_model=64, n_layers=1, dropout=0.3)
    assert model_config_from_args(parse("train", *DATA, *model, "--causal")).bidirectional is False
    # --dropout given: its default differs (merc train: DialogueConfig's 0.5 for every kind; ablation: MaTAV's 0.3)
    matav = ["--d-model", "32", "--dropout", "0.2", "--heads", "2", "--cross-layers", "1", "--attention", "dialogue"]
    train = parse("train", *DATA, "--model", "matav", "--layers", "3", "--causal", *matav)
    ablation = parse("experiment", "ablation", *DATA, *matav)
    assert model_config_from_args(train) == replace(matav_config_from_args(ablation), n_mamba_layers=3,
                                                    bidirectional=False)
    with pytest.raises(ConfigError, match="MaTAV ablations"):
        model_config_from_args(parse("train", *DATA, "--no-mec"))
    with pytest.raises(SystemExit):  # the transfer table's adapters feed the dialogue models only
        parse("experiment", "transfer", *DATA, "--model", "matav")


def test_an_empty_encoder_list_is_a_config_error():
    with pytest.raises(ConfigError, match="--text-encoder"):
        encoders_from_args(parse("train", *DATA, "--text-encoder", " , "))
    with pytest.raises(ConfigError, match="--face-encoders"):
        encoders_from_args(parse("experiment", "ablation", *DATA, "--face-encoders", ""), ["text", "face"])
    assert encoders_from_args(parse("train", *DATA, "--face-encoders", ""), ["text"]) == {"text": ["mpnet"]}
