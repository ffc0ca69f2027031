"""The loss options of ``merc train`` (rare-class objectives, :mod:`merc.objectives`): ``--loss {ce,focal,supcon}``,
``--focal-gamma``, ``--cb-beta`` (for ``--class-weights effective``), ``--supcon-weight``,
``--supcon-temperature``. Defaults are :class:`~merc.training.trainer.TrainConfig`'s: plain cross-entropy."""
from __future__ import annotations

import argparse

from merc.objectives import LOSSES
from merc.training.trainer import TrainConfig


def add_loss_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loss (rare classes)")
    g.add_argument("--loss", choices=LOSSES, default=TrainConfig.loss,
                   help="ce: cross-entropy; focal: focal loss (--focal-gamma); supcon: cross-entropy + "
                        "--supcon-weight × supervised contrastive term over the dialogue model's utterance "
                        "representations (mamba, gru, transformer, mlp)")
    g.add_argument("--focal-gamma", type=float, default=TrainConfig.focal_gamma,
                   help="γ of the focal loss (0 = cross-entropy)")
    g.add_argument("--cb-beta", type=float, default=TrainConfig.cb_beta,
                   help="β of --class-weights effective: weight ∝ (1-β)/(1-β^n_class)")
    g.add_argument("--supcon-weight", type=float, default=TrainConfig.supcon_weight, help="λ of the SupCon term")
    g.add_argument("--supcon-temperature", type=float, default=TrainConfig.supcon_temperature,
                   help="τ of the SupCon term")
