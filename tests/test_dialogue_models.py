"""Dialogue models: shapes, padding, gradients, and a tiny task that needs context."""
from __future__ import annotations

import pytest
import torch

from merc.models.dialogue import KINDS, DialogueConfig, DialogueModel


def tiny(kind: str, **kw) -> DialogueConfig:
    return DialogueConfig(**{"kind": kind, "input_dims": {"text": 12, "audio": 6}, "n_classes": 5, "d_model": 16,
                             "n_layers": 2, "dropout": 0.1, "d_state": 4, "n_heads": 2, **kw})


def padded(lengths: list[int], dims: dict[str, int], *, seed: int = 0):
    """Right-padded batch with garbage (large random values) at padded positions."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths) + 2
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    feats = {m: torch.randn(len(lengths), T, d, generator=g) * torch.where(mask, 1.0, 50.0)[..., None]
             for m, d in dims.items()}
    speakers = torch.randint(0, 4, (len(lengths), T), generator=g)
    return feats, speakers, mask


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_shapes_and_padding_invariance(kind, bidirectional):
    torch.manual_seed(0)
    model = DialogueModel(tiny(kind, bidirectional=bidirectional)).eval()
    lengths = [7, 1, 4]
    feats, speakers, mask = padded(lengths, model.config.input_dims)
    logits = model(feats, speakers, mask)
    assert logits.shape == (3, 9, 5)
    assert torch.isfinite(logits[mask]).all()
    for b, n in enumerate(lengths):  # each dialogue alone, unpadded, must give the same logits
        alone = model({m: f[b:b + 1, :n] for m, f in feats.items()}, speakers[b:b + 1, :n],
                      torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(logits[b, :n], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow(kind):
    torch.manual_seed(0)
    model = DialogueModel(tiny(kind)).train()
    feats, speakers, mask = padded([5, 3, 8], model.config.input_dims)
    labels = torch.randint(0, 5, mask.shape)
    # every third utterance lacks audio (and text is absent at padding only), so the absent embeddings learn too
    present = {"audio": mask & (torch.arange(mask.shape[1]) % 3 != 0), "text": mask}
    loss = torch.nn.functional.cross_entropy(model(feats, speakers, mask, present)[mask], labels[mask])
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["inputs.text.0.weight"].abs().sum() > 0 and grads["speaker.weight"].abs().sum() > 0
    assert grads["absent.audio"].abs().sum() > 0


def test_config_errors_and_missing_modality():
    with pytest.raises(ValueError, match="unknown dialogue model kind 'lstm'"):
        DialogueConfig(kind="lstm")
    model = DialogueModel(tiny("mlp"))
    feats, speakers, mask = padded([3], {"text": 12})
    with pytest.raises(KeyError, match="audio"):
        model(feats, speakers, mask)


def test_speaker_indices_beyond_max_share_the_last_embedding():
    torch.manual_seed(0)
    model = DialogueModel(tiny("mlp", max_speakers=3)).eval()
    feats, _, mask = padded([4], model.config.input_dims)
    a = model(feats, torch.full(mask.shape, 2), mask)
    b = model(feats, torch.full(mask.shape, 9), mask)
    torch.testing.assert_close(a, b)


def previous_token_task(n_dialogues: int, *, n_tokens: int = 4, seed: int):
    """Each utterance shows one token (one-hot); its label is the token of the previous utterance."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 13, (n_dialogues,), generator=g)
    T = int(lengths.max())
    mask = torch.arange(T)[None] < lengths[:, None]
    tokens = torch.randint(0, n_tokens, (n_dialogues, T), generator=g)
    labels = torch.cat([tokens[:, :1], tokens[:, :-1]], 1)   # label_0 = own token
    feats = {"text": torch.nn.functional.one_hot(tokens, 8).float() * mask[..., None]}
    speakers = torch.randint(0, 3, (n_dialogues, T), generator=g)
    return feats, speakers, mask, labels


@pytest.mark.slow
def test_context_models_learn_what_mlp_cannot():
    train, test = previous_token_task(64, seed=1), previous_token_task(64, seed=2)
    acc = {}
    for kind in ("mamba", "gru", "mlp"):
        torch.manual_seed(0)
        model = DialogueModel(DialogueConfig(kind=kind, input_dims={"text": 8}, n_classes=4, d_model=32,
                                             n_layers=1, dropout=0.0, d_state=4, bidirectional=False))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        feats, speakers, mask, labels = train
        for _ in range(60):
            loss = torch.nn.functional.cross_entropy(model(feats, speakers, mask)[mask], labels[mask])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        feats, speakers, mask, labels = test
        with torch.no_grad():
            pred = model(feats, speakers, mask).argmax(-1)
        acc[kind] = (pred[mask] == labels[mask]).float().mean().item()
    assert acc["mamba"] > 0.95 and acc["gru"] > 0.95, acc
    assert acc["mlp"] < 0.5, acc


def test_context_modalities_keep_a_modality_out_of_the_context():
    from merc.errors import ConfigError
    with pytest.raises(ConfigError, match="subset"):
        tiny("mamba", utterance_logits=True, context_modalities=["face"])
    with pytest.raises(ConfigError, match="per-utterance path"):
        tiny("mamba", context_modalities=["text"])  # audio would be read by nothing
    torch.manual_seed(0)
    model = DialogueModel(tiny("mamba", utterance_logits=True, context_modalities=["text"])).eval()
    assert list(model.inputs) == ["text"] and list(model.utterance.linear) == ["text", "audio"]
    torch.nn.init.normal_(model.utterance.linear["audio"].weight)  # the path starts silent: make audio count
    feats, speakers, mask = padded([6, 4], model.config.input_dims)
    base = model(feats, speakers, mask)
    moved = {**feats, "audio": feats["audio"].clone()}
    moved["audio"][0, 2] += 3.0                                   # one utterance's audio changes ...
    delta = (model(moved, speakers, mask) - base).abs().sum(-1)   # (batch, seq_len)
    assert delta[0, 2] > 0                                        # ... its own logits move (per-utterance path)
    assert torch.all(delta[mask].sum() == delta[0, 2])            # and no other utterance's: not in the context
    text = {**feats, "text": feats["text"].clone()}
    text["text"][0, 2] += 3.0
    assert (model(text, speakers, mask) - base)[0, 3].abs().sum() > 0  # text still reaches the neighbours


def test_gated_fusion_scales_each_modality_per_utterance():
    torch.manual_seed(0)
    plain = DialogueModel(tiny("mamba")).eval()
    gated = DialogueModel(tiny("mamba", gated=True)).eval()
    assert set(gated.gates) == {"text", "audio"}
    gated.load_state_dict(plain.state_dict(), strict=False)           # same weights, gates open at 0.88
    feats, speakers, mask = padded([5, 3], gated.config.input_dims)
    for g in gated.gates.values():
        torch.nn.init.constant_(g.bias, 30.0)                          # fully open: the plain sum
    torch.testing.assert_close(gated(feats, speakers, mask), plain(feats, speakers, mask), atol=1e-5, rtol=1e-5)
    torch.nn.init.constant_(gated.gates["audio"].bias, -30.0)          # audio shut: audio no longer matters
    base = gated(feats, speakers, mask)
    moved = {**feats, "audio": feats["audio"] + 5.0}
    torch.testing.assert_close(gated(moved, speakers, mask)[mask], base[mask], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain(moved, speakers, mask)[mask], plain(feats, speakers, mask)[mask])
