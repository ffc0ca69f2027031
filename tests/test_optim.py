"""Weight-decay groups (merc.optim): biases, norms and the Mamba A_log / D are not decayed."""
from __future__ import annotations

import pytest
import torch

from merc.models.dialogue import DialogueConfig, DialogueModel
from merc.optim import decay_split, param_groups


def model(kind: str) -> DialogueModel:
    torch.manual_seed(0)
    return DialogueModel(DialogueConfig(kind=kind, d_model=16, n_layers=2, input_dims={"text": 8}, n_classes=3))


@pytest.mark.parametrize("kind", ["mamba", "transformer", "gru", "mlp"])
def test_every_parameter_in_exactly_one_group(kind):
    m = model(kind)
    groups = param_groups(m, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no parameter in two groups
    assert set(ids) == {id(p) for p in m.parameters()}  # none missing
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decay, no_decay = decay_split(m)
    assert groups[0]["names"] == decay and groups[1]["names"] == no_decay


def test_mamba_groups():
    m = model("mamba")
    decay, no_decay = decay_split(m)
    params = dict(m.named_parameters())
    # not decayed: Mamba's A_log (2-d, flagged) and D, every bias, every norm weight
    a_logs = [n for n in params if n.endswith("A_log")]
    assert a_logs and all(params[n].dim() == 2 for n in a_logs)
    assert set(a_logs) | {n for n in params if n.endswith(".D")} <= set(no_decay)
    assert all(n in no_decay for n in params if n.endswith("bias"))
    norms = [f"{mn}.weight" for mn, mod in m.named_modules() if isinstance(mod, (torch.nn.LayerNorm, torch.nn.RMSNorm))]
    assert norms and set(norms) <= set(no_decay)
    # decayed: the projections, the depthwise convolution, the speaker embedding, the classifier
    for suffix in ("in_proj.weight", "x_proj.weight", "dt_proj.weight", "out_proj.weight", "conv1d.weight"):
        assert any(n.endswith(suffix) for n in decay) and all(n in decay for n in params if n.endswith(suffix))
    assert "speaker.weight" in decay and "head.2.weight" in decay
    assert all(params[n].dim() >= 2 for n in decay)


def test_adamw_leaves_undecayed_parameters_alone():
    """With zero gradients, one AdamW step changes only the decayed parameters (by -lr * wd * p)."""
    m = model("mamba")
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW(param_groups(m, 0.5), lr=0.1)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    decay, no_decay = decay_split(m)
    after = dict(m.named_parameters())
    for n in no_decay:
        assert torch.equal(after[n], before[n]), n
    for n in decay:
        torch.testing.assert_close(after[n], before[n] * (1 - 0.1 * 0.5))


def test_groups_of_a_transformer_layer_carry_their_lr():
    """The rule fine-tuning applies to the encoder and to its head, each at its own learning rate: attention
    and feed-forward matrices decayed; biases and LayerNorm weights not."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    decay, no_decay = (g["names"] for g in param_groups(layer, 0.01))
    assert set(decay) == {"self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight"}
    assert {"norm1.weight", "norm2.weight", "norm1.bias", "linear1.bias"} <= set(no_decay)
    groups = param_groups(layer, 0.01, lr=2e-5) + param_groups(torch.nn.Linear(8, 3), 0.01, lr=1e-3)
    assert [g["lr"] for g in groups] == [2e-5, 2e-5, 1e-3, 1e-3]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0, 0.01, 0.0]
