"""Stacked fusion (``--fusion stacked``): the context model trained on out-of-fold probe logits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_linear_probe import LABELS, dialogues
from test_linear_probe import corpus as corpus  # noqa: F401  (the fixture)

from merc.cli import main
from merc.models.dialogue import DialogueConfig
from merc.models.factory import build_model
from merc.models.linear import LinearConfig, LinearProbe
from merc.models.matav import MatavConfig
from merc.training.batching import collate
from merc.training.probe import fit_probe, init_from_probe
from merc.training.stacking import dialogue_folds, out_of_fold_logits, probe_logits
from merc.training.trainer import TrainConfig, predict_dialogues

DIMS = {"text": 4, "audio": 3}


def small(family: str):
    if family == "mamba":
        return DialogueConfig(kind="mamba", input_dims=DIMS, n_classes=3, d_model=8, n_layers=1, d_state=4,
                              utterance_logits=True, stacked=True)
    return MatavConfig(input_dims=DIMS, n_classes=3, d_model=8, d_align=8, n_cross_layers=1, n_heads=2, d_mamba=8,
                       n_mamba_layers=1, d_state=4, queue_size=8, utterance_logits=True, stacked=True)


def test_folds_partition_the_dialogues():
    parts = dialogue_folds(12, 5)
    assert len(parts) == 5 and sorted(np.concatenate(parts).tolist()) == list(range(12))
    assert [p.tolist() for p in dialogue_folds(12, 5)] == [p.tolist() for p in parts]  # fixed split
    assert len(dialogue_folds(3, 5)) == 3
    with pytest.raises(Exception, match="at least 2 training dialogues"):
        dialogue_folds(1)


def test_out_of_fold_logits_come_from_probes_that_never_saw_the_dialogue():
    rng = np.random.default_rng(1)
    train, dev = dialogues(30, rng, absent=0.2), dialogues(10, rng)
    out = out_of_fold_logits(train, dev, LABELS, TrainConfig(), C=1.0, input_dims=DIMS, folds=3)
    assert [d.utterance_ids for d in out] == [d.utterance_ids for d in train]
    assert all(d.utt_logits.shape == (len(d.labels), 3) for d in out)
    assert all(d.utt_logits is None for d in train)  # copies: the caller's dialogues are untouched
    held = dialogue_folds(30, 3)[1]  # refit fold 1 by hand: the probe of the other folds, C fixed
    probe = LinearProbe(LinearConfig(input_dims=DIMS, n_classes=3, c_grid=[1.0]))
    fit_probe(probe, [train[i] for i in range(30) if i not in held], dev, LABELS, TrainConfig(), progress=False)
    want = probe_logits(probe, [train[i] for i in held])
    for i, w in zip(held, want):
        assert np.allclose(out[i].utt_logits, w, atol=1e-5)
    # out of fold is worse on train than in sample: the point of it
    full = LinearProbe(LinearConfig(input_dims=DIMS, n_classes=3, c_grid=[1.0]))
    fit_probe(full, train, dev, LABELS, TrainConfig(), progress=False)
    y = np.concatenate([d.labels for d in train])
    nll = [-torch.log_softmax(torch.from_numpy(np.concatenate(L)), -1)[torch.arange(len(y)), y].mean().item()
           for L in ([d.utt_logits for d in out], probe_logits(full, train))]
    assert nll[0] > nll[1]


@pytest.mark.parametrize("family", ["mamba", "matav"])
def test_stacked_model_starts_as_the_probe_and_reads_batch_logits(family):
    rng = np.random.default_rng(3)
    train, dev = dialogues(40, rng, absent=0.2), dialogues(15, rng, absent=0.2)
    torch.manual_seed(0)
    model = build_model(small(family))
    assert not any(p.requires_grad for p in model.utterance.parameters())  # the path is a frozen probe
    h = init_from_probe(model, train, dev, LABELS, TrainConfig(), progress=False)
    probe = LinearProbe(LinearConfig(input_dims=DIMS, n_classes=3, c_grid=(h.epochs[h.best_epoch]["C"],)))
    fit_probe(probe, train, dev, LABELS, TrainConfig(), progress=False)
    got, want = np.concatenate(predict_dialogues(model, dev)), np.concatenate(predict_dialogues(probe, dev))
    assert np.allclose(got, want, atol=1e-5)
    # given logits in the batch, the model adds those (and reads their probabilities once probe_in learns)
    oof = out_of_fold_logits(train[:8], dev, LABELS, TrainConfig(), C=1.0, input_dims=DIMS, folds=2)
    batch = collate(oof)
    model.eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.probe_in.weight)
        torch.nn.init.normal_(model.head[-1].weight)
        a = model(batch.feats, batch.speakers, batch.mask, present=batch.present, utt_logits=batch.utt_logits)
        b = model(batch.feats, batch.speakers, batch.mask, present=batch.present)
        c = model(batch.feats, batch.speakers, batch.mask, present=batch.present, utt_logits=batch.utt_logits + 1)
        d = model(batch.feats, batch.speakers, batch.mask, present=batch.present, utt_logits=2 * batch.utt_logits)
    m = batch.mask
    assert not torch.allclose(a[m], b[m])
    assert torch.allclose((c - a)[m], torch.ones_like(a[m]), atol=1e-5)  # same probabilities: logits + 1
    assert not torch.allclose((d - a)[m], batch.utt_logits[m], atol=1e-3)  # other probabilities: the context moved


def test_stacked_needs_the_path():
    with pytest.raises(Exception, match="utterance_logits"):
        DialogueConfig(stacked=True)
    with pytest.raises(Exception, match="utterance_logits"):
        MatavConfig(stacked=True)


@pytest.mark.slow
def test_cli_stacked_fusion_trains_saves_and_evaluates(corpus, tmp_path, capsys):  # noqa: F811
    from merc.encoders import register_encoder
    from merc.testing.fakes import HashedWords
    register_encoder("toystack", lambda **kw: HashedWords("toystack", 16), modality="text", dim=16, overwrite=True)
    common = ["train", "--dataset", "jsonl", "--data-dir", str(corpus), "--modalities", "text,audio",
              "--text-encoder", "toystack", "--audio-encoders", "fakeaudio", "--quiet", "--d-model", "16",
              "--layers", "1", "--epochs", "3", "--min-steps", "20", "--fusion", "stacked"]
    assert main([*common, "--model", "gru", "--out", str(tmp_path / "st")]) == 0
    cfg = json.loads((tmp_path / "st" / "config.json").read_text())
    assert cfg["model"]["stacked"] and cfg["model"]["utterance_logits"] and cfg["train"]["probe_init"]
    res = json.loads((tmp_path / "st" / "metrics.json").read_text())
    assert res["dev"]["weighted_f1"] >= res["probe"]["dev_weighted_f1"] - 1e-9  # the probe stays a candidate
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "st"), "--split", "dev", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weighted_f1"] == pytest.approx(res["dev"]["weighted_f1"])
    assert main([*common, "--model", "gru", "--adapters", "text=nowhere", "--out", str(tmp_path / "bad")]) == 2
    assert "--fusion stacked starts the per-utterance path from a probe" in capsys.readouterr().err
