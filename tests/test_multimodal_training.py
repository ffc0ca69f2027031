"""Training with any subset of modalities, where a missing modality never drops an utterance: presence masks
in batches, modality dropout, masked fusion that ignores absent slots, train-split standardisation, versioned
run configs (old ones migrate), and a fake audio provider plugged into ``FEATURE_PROVIDERS`` whose features
carry the label while the text does not."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from merc.cli import main
from merc.data.schema import Conversation, Utterance
from merc.encoders import register_encoder
from merc.errors import ConfigError, IncompatibleRunError, InputError
from merc.models.dialogue import KINDS, DialogueConfig, DialogueModel
from merc.testing.fakes import FakeProvider, HashedWords, write_label_free_corpus
from merc.training import experiment
from merc.training.batching import absence_counts, apply_modality_dropout, build_dialogues, collate, iterate_batches
from merc.training.features import FEATURE_PROVIDERS, resolve_encoders
from merc.training.normalize import FeatureNormalizer
from merc.training.run import CONFIG_VERSION, RunConfig, from_pretrained

DEMO_RUN = Path(__file__).resolve().parents[1] / "merc" / "assets" / "demo_run"
LABELS = ["angry", "calm", "happy"]


def conv(cid: str, n: int, labels=None) -> Conversation:
    return Conversation(cid, "train", [Utterance(f"{cid}_u{i}", "AB"[i % 2], f"words {i}",
                                                 None if labels is None else labels[i]) for i in range(n)])

# batching


def test_build_dialogues_absent_modalities_keep_every_utterance(caplog):
    convs = [conv("c0", 4, ["angry", "calm", None, "happy"]), conv("c1", 2, ["calm", "calm"])]
    text = {f"{c.conversation_id}_u{i}": np.full(3, i + 1.0) for c in convs for i in range(len(c))}
    audio = {"c0_u0": np.ones(2), "c0_u1": None, "c0_u3": np.array([np.nan, 1.0])}  # c0_u2 missing, c1 none
    with caplog.at_level(logging.WARNING):
        ds = build_dialogues(convs, {"text": text, "audio": audio}, LABELS)
    assert "not finite" in caplog.text
    assert [d.utterance_ids for d in ds] == [[f"c0_u{i}" for i in range(4)], ["c1_u0", "c1_u1"]]
    assert ds[0].present["audio"].tolist() == [True, False, False, False]
    assert ds[1].present["audio"].tolist() == [False, False] and ds[1].feats["audio"].shape == (2, 2)
    assert ds[0].present["text"].all() and not ds[0].feats["audio"][1:].any()
    assert ds[0].labels.tolist() == [0, 1, -100, 2]
    assert absence_counts(ds) == {"text": 0, "audio": 5}
    # text is strict: an utterance missing from its mapping means stale features (None = absent is fine)
    with pytest.raises(InputError, match="no text feature for utterance 'c0_u1'"):
        build_dialogues(convs, {"text": {k: v for k, v in text.items() if k != "c0_u1"}}, LABELS)
    ds = build_dialogues(convs, {"text": {**text, "c0_u1": None}}, LABELS)
    assert ds[0].present["text"].tolist() == [True, False, True, True]
    # no vector at all for a modality: the dimension must come from the run
    with pytest.raises(ConfigError, match="face"):
        build_dialogues(convs, {"text": text, "face": {}}, LABELS)
    assert build_dialogues(convs, {"text": text, "face": {}}, LABELS, dims={"face": 5})[0].feats["face"].shape == (4, 5)


def test_collate_present_masks_false_at_padding():
    convs = [conv("c0", 3), conv("c1", 1)]
    text = {f"{c.conversation_id}_u{i}": np.ones(3) for c in convs for i in range(len(c))}
    batch = collate(build_dialogues(convs, {"text": text, "audio": {"c0_u1": np.ones(2)}}, LABELS))
    assert batch.present["text"].tolist() == [[True, True, True], [True, False, False]]
    assert batch.present["audio"].tolist() == [[False, True, False], [False, False, False]]
    assert batch.present["text"].dtype == torch.bool and batch.feats["audio"].shape == (2, 3, 2)


def _random_dialogues(n: int, rng: np.random.Generator):
    convs = [conv(f"c{k}", int(rng.integers(1, 9))) for k in range(n)]
    uids = [u.utterance_id for c in convs for u in c]
    # some utterances have one modality only, some both, some none
    feats = {m: {u: (rng.normal(size=4) if rng.random() < 0.7 else None) for u in uids} for m in ("text", "audio")}
    return build_dialogues(convs, feats, LABELS)


def test_modality_dropout_never_drops_every_modality_and_is_off_at_eval():
    ds = _random_dialogues(40, np.random.default_rng(0))
    had_both = dropped = 0
    p = {"text": 0.8, "audio": 0.8}
    for batch, ref in zip(iterate_batches(ds, 8, rng=np.random.default_rng(1), modality_dropout=p),
                          iterate_batches(ds, 8), strict=True):
        before = torch.stack([ref.present[m] for m in ("text", "audio")])     # (2, B, T)
        after = torch.stack([batch.present[m] for m in ("text", "audio")])
        assert not (after & ~before).any()                                    # nothing absent becomes present
        assert torch.equal(after.any(0), before.any(0))                       # an utterance with a modality keeps one
        for k, m in enumerate(("text", "audio")):                             # dropped slots are zeroed
            assert not batch.feats[m][before[k] & ~after[k]].any()
        both = before.all(0)
        had_both += int(both.sum())
        dropped += int((both & ~after.all(0)).sum())
    assert had_both > 20 and dropped > 0.5 * had_both  # with p=0.8 most two-modality utterances lose one
    # seeded: the same rng gives the same drops; no dropout argument (evaluation) changes nothing
    a, b = ([x.present["audio"] for x in iterate_batches(ds, 8, rng=np.random.default_rng(5),
                                                         modality_dropout={"audio": 0.5})] for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    for batch in iterate_batches(ds, 8):
        assert torch.equal(batch.present["audio"], collate([d for d in ds if d.utterance_ids[0] in
                                                             {u[0] for u in batch.utterance_ids}]).present["audio"])
    with pytest.raises(ConfigError, match="smell"):
        apply_modality_dropout(collate(ds[:2]), {"smell": 0.1}, np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        apply_modality_dropout(collate(ds[:2]), {"audio": 1.0}, np.random.default_rng(0))

# the model: absent slots and padding are never read


def _tiny(kind: str, utterance_logits: bool = False) -> DialogueModel:
    torch.manual_seed(0)
    model = DialogueModel(DialogueConfig(kind=kind, input_dims={"text": 6, "face": 5}, n_classes=3, d_model=16,
                                         n_layers=1, dropout=0.1, d_state=4, n_heads=2,
                                         utterance_logits=utterance_logits)).eval()
    if utterance_logits:  # trained weights, not the zeros the per-utterance path starts from
        with torch.no_grad():
            for p in model.utterance.parameters():
                p.normal_()
    return model


@pytest.mark.parametrize("utterance_logits", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_absent_face_slot_values_do_not_matter(kind, utterance_logits):
    model = _tiny(kind, utterance_logits)
    with torch.no_grad():
        model.absent["face"].normal_()  # a trained absent embedding, not the zero it starts from
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    present = {"text": mask.clone(), "face": mask & torch.tensor([True, False, True, False, True])}
    feats = {"text": torch.randn(2, 5, 6, generator=g), "face": torch.randn(2, 5, 5, generator=g)}
    base = model(feats, torch.zeros(2, 5, dtype=torch.long), mask, present)
    slot = ~present["face"]  # absent faces and padding
    for fill in (torch.randn(2, 5, 5, generator=g) * 1e3, torch.full((2, 5, 5), float("nan")), torch.zeros(2, 5, 5)):
        f2 = dict(feats, face=torch.where(slot[..., None], fill, feats["face"]))
        out = model(f2, torch.zeros(2, 5, dtype=torch.long), mask, present)
        assert torch.isfinite(out[mask]).all()
        torch.testing.assert_close(out[mask], base[mask], atol=0, rtol=0)
    # gradients through a NaN slot stay finite
    model.train()
    f2 = dict(feats, face=torch.where(slot[..., None], torch.tensor(float("nan")), feats["face"]))
    model(f2, torch.zeros(2, 5, dtype=torch.long), mask, present)[mask].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # and the face does matter where it is present
    f3 = dict(feats, face=feats["face"] + 1.0)
    assert not torch.allclose(model.eval()(f3, torch.zeros(2, 5, dtype=torch.long), mask, present)[mask], base[mask])


@pytest.mark.parametrize("utterance_logits", [False, True])
@pytest.mark.parametrize("kind", ["mamba", "transformer"])
def test_padding_never_changes_real_positions_with_presence(kind, utterance_logits):
    model = _tiny(kind, utterance_logits)
    g = torch.Generator().manual_seed(2)
    lengths = [4, 2]
    mask = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    feats = {m: torch.randn(2, 6, d, generator=g) for m, d in (("text", 6), ("face", 5))}
    feats = {m: torch.where(mask[..., None], f, torch.tensor(float("nan"))) for m, f in feats.items()}
    present = {"text": mask, "face": mask & (torch.arange(6) != 1)}
    speakers = torch.zeros(2, 6, dtype=torch.long)
    out = model(feats, speakers, mask, present)
    for b, n in enumerate(lengths):
        alone = model({m: f[b:b + 1, :n] for m, f in feats.items()}, speakers[b:b + 1, :n],
                      torch.ones(1, n, dtype=torch.bool), {m: p[b:b + 1, :n] for m, p in present.items()})
        torch.testing.assert_close(out[b, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_demo_run_predicts_as_before():
    """Logits of the bundled (version-1) demo run on fixed inputs, recorded with main's code before this
    change (tests/data/demo_run_reference.json, commit named inside): unchanged, with or without ``present``."""
    ref = json.loads((Path(__file__).parent / "data" / "demo_run_reference.json").read_text())
    run = from_pretrained(DEMO_RUN)
    assert run.config.config_version == CONFIG_VERSION and run.config.encoders == {"text": ["minilm"]}
    assert torch.equal(run.model.absent["text"], torch.zeros(run.config.model.d_model))  # filled in at load
    rng = np.random.default_rng(ref["seed"])
    x = rng.normal(size=(2, 5, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    speakers = torch.tensor([[0, 1, 0, 2, 1], [0, 1, 0, 0, 0]])
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    with torch.no_grad():
        a = run.model({"text": torch.from_numpy(x)}, speakers, mask)[mask]
        b = run.model({"text": torch.from_numpy(x)}, speakers, mask, {"text": mask})[mask]
    torch.testing.assert_close(a, torch.tensor(ref["logits"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, b, atol=0, rtol=0)

# run config, standardisation


def test_version_less_config_migrates_and_round_trips(caplog):
    old = json.loads((DEMO_RUN / "config.json").read_text())
    assert "config_version" not in old
    rc = RunConfig.from_dict(old)
    assert rc.config_version == 2 and rc.modalities == ["text"]
    assert rc.encoders == {"text": ["minilm"]}
    assert rc.encoder_fingerprints == {"text": [old["text_encoder_fingerprint"]]}
    assert rc.text_encoder == "minilm" and rc.text_encoder_fingerprint == old["text_encoder_fingerprint"]
    assert rc.normalization == {} and rc.modality_dropout == {}
    assert RunConfig.from_dict(json.loads(json.dumps(rc.to_dict()))) == rc
    with pytest.raises(IncompatibleRunError, match="newer"):
        RunConfig.from_dict({**rc.to_dict(), "config_version": CONFIG_VERSION + 1})
    with caplog.at_level(logging.WARNING):
        assert RunConfig.from_dict({**rc.to_dict(), "a_future_field": {"git": "abc"}}) == rc
    assert "a_future_field" in caplog.text


def test_normalizer_fits_present_train_rows_only():
    train = {"audio": {"a": np.array([1.0, 5.0]), "b": np.array([3.0, 5.0]), "c": None,
                       "d": np.array([np.nan, 0.0])},
             "text": {"a": np.array([9.0])}}
    norm = FeatureNormalizer.fit(train, ["audio"])
    assert norm.stats["audio"]["mean"] == [2.0, 5.0] and norm.stats["audio"]["std"] == [1.0, 1.0]  # constant dim: 1
    out = FeatureNormalizer.from_dict(json.loads(json.dumps(norm.to_dict()))).transform(
        {"audio": {"x": np.array([4.0, 6.0]), "y": None}, "text": {"x": np.array([9.0])}})
    assert out["audio"]["x"].tolist() == [2.0, 1.0] and out["audio"]["y"] is None
    assert out["text"]["x"].tolist() == [9.0]  # text is not standardised
    with pytest.raises(IncompatibleRunError, match="dimension"):
        norm.transform({"audio": {"x": np.ones(3)}})


def test_encoder_and_modality_names_are_checked():
    assert resolve_encoders(["text", "audio", "face"]) == {"text": ["mpnet"], "audio": ["egemaps", "resemblyzer"],
                                                           "face": ["fer", "dlib"]}
    with pytest.raises(ConfigError, match="'fer' is a face encoder, not an audio encoder"):
        resolve_encoders(["audio"], {"audio": ["fer"]})
    with pytest.raises(ConfigError, match="unknown modalities"):
        resolve_encoders(["text", "smell"])
    with pytest.raises(ConfigError, match="unknown audio encoder 'wav2vec9'"):
        resolve_encoders(["audio"], {"audio": ["wav2vec9"]})

# end to end with a fake audio provider: the label is in the audio, not in the text


register_encoder("toymm", lambda **kw: HashedWords("toymm"), modality="text", dim=None, overwrite=True)
HIDDEN: dict[str, str] = {}  # utterance id -> label, known to the fake audio encoder only


def audio_vector(label: str, r: np.random.Generator) -> np.ndarray:
    """A label-dependent mean in 6 raw dims (offset and scaled, so standardisation matters) plus noise."""
    return 200.0 + 50.0 * (np.eye(3)[LABELS.index(label)].repeat(2) + 0.5 * r.normal(size=6))


def FakeAudio() -> FakeProvider:  # noqa: N802 - stands in for a provider class
    """Deterministic per utterance; one utterance in eight has no audio."""
    return FakeProvider("fakeaudio", "fakeaudio-v1", 0.125, audio_vector, HIDDEN, seed_prefix="",
                        reason="no audio stream")


@pytest.fixture(scope="module")
def audio_corpus(tmp_path_factory):
    return write_label_free_corpus(tmp_path_factory.mktemp("mm"), LABELS, HIDDEN,
                                   sizes={"train": 80, "dev": 25, "test": 25}, turns=(3, 8))


@pytest.fixture
def fake_audio(monkeypatch, tmp_path):
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(FEATURE_PROVIDERS, "audio", FakeAudio())


def _train(root, out, modalities, *extra):
    return main(["train", "--dataset", "jsonl", "--data-dir", str(root), "--model", "gru", "--text-encoder", "toymm",
                 "--modalities", modalities, "--audio-encoders", "fakeaudio", "--epochs", "15", "--d-model", "16",
                 "--layers", "1", "--dropout", "0.1", "--lr", "3e-3", "--quiet", "--out", str(out), *extra])


@pytest.mark.slow
def test_text_plus_audio_beats_text_and_run_round_trips(audio_corpus, fake_audio, tmp_path, capsys):
    assert _train(audio_corpus, tmp_path / "t", "text") == 0
    assert _train(audio_corpus, tmp_path / "ta", "text,audio") == 0
    mt = json.loads((tmp_path / "t" / "metrics.json").read_text())
    mta = json.loads((tmp_path / "ta" / "metrics.json").read_text())
    assert mta["dev"]["weighted_f1"] > mt["dev"]["weighted_f1"] + 0.2, (mt["dev"], mta["dev"])
    assert mta["dev"]["weighted_f1"] > 0.7
    # every utterance is scored; absences are counted with their reasons
    n_test = sum(len(json.loads(x)["utterances"]) for x in (audio_corpus / "test.jsonl").open())
    assert mta["test"]["n"] == n_test
    ext = mta["extraction"]["test"]["audio"]
    assert ext["utterances"] == n_test and 0 < ext["absent"] < n_test / 3
    assert ext["reasons"] == {"fakeaudio: no audio stream": ext["absent"]}
    assert mta["absent"]["test"]["audio"] == ext["absent"] and mta["absent"]["test"]["text"] == 0
    # the run records encoders, fingerprints, standardisation; it loads and evaluates the same
    cfg = json.loads((tmp_path / "ta" / "config.json").read_text())
    assert cfg["config_version"] == 2 and cfg["encoders"] == {"text": ["toymm"], "audio": ["fakeaudio"]}
    assert cfg["encoder_fingerprints"] == {"text": ["toymm-v1"], "audio": ["fakeaudio-v1"]}
    assert set(cfg["normalization"]) == {"audio"} and len(cfg["normalization"]["audio"]["mean"]) == 6
    assert 200 < np.mean(cfg["normalization"]["audio"]["mean"]) < 250
    run = from_pretrained(tmp_path / "ta")
    assert RunConfig.from_dict(cfg) == run.config
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "ta"), "--dataset", "jsonl", "--data-dir", str(audio_corpus),
                 "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == n_test and result["weighted_f1"] == pytest.approx(mta["test"]["weighted_f1"])
    # predict on raw conversations goes through the provider and the stored standardisation
    from merc.data import load_corpus
    test = load_corpus("jsonl", str(audio_corpus))["test"]
    probs = run.predict(test)
    y = [LABELS.index(u.emotion) for c in test for u in c]
    acc = np.mean(np.concatenate(probs).argmax(-1) == np.array(y))
    assert acc == pytest.approx(mta["test"]["accuracy"])
    # a run scored with a changed encoder is refused
    changed = FakeAudio()
    changed.fingerprint = "fakeaudio-v2"
    FEATURE_PROVIDERS["audio"] = changed
    with pytest.raises(IncompatibleRunError, match="fingerprints"):
        run.predict(test)


def test_cli_refuses_bad_modalities(audio_corpus, fake_audio, tmp_path, capsys):
    assert _train(audio_corpus, tmp_path / "x", "text,smell") == 2
    assert "unknown modalities ['smell']" in capsys.readouterr().err
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(audio_corpus), "--modalities", "text,audio",
                 "--audio-encoders", "dlib", "--text-encoder", "toymm", "--out", str(tmp_path / "y")]) == 2
    assert "'dlib' is a face encoder" in capsys.readouterr().err


def test_modality_dropout_reaches_the_trainer_and_the_config(audio_corpus, fake_audio, tmp_path, monkeypatch):
    seen = {}
    real_fit = experiment.fit

    def fit(model, train, dev, labels, config, *, progress=True, modality_dropout=None, **kw):
        seen["p"] = modality_dropout
        return real_fit(model, train, dev, labels, config, progress=progress, modality_dropout=modality_dropout, **kw)
    monkeypatch.setattr(experiment, "fit", fit)
    assert _train(audio_corpus, tmp_path / "d", "text,audio", "--modality-dropout", "audio=0.3",
                  "--epochs", "1") == 0
    assert seen["p"] == {"audio": 0.3}
    assert json.loads((tmp_path / "d" / "config.json").read_text())["modality_dropout"] == {"audio": 0.3}


register_encoder("toymm8", lambda **kw: HashedWords("toymm8", dim=8), modality="text", dim=None, overwrite=True)


@pytest.mark.slow
def test_two_text_encoders_are_concatenated_in_training_and_prediction(audio_corpus, fake_audio, tmp_path):
    out = tmp_path / "tt"
    assert main(["train", "--dataset", "jsonl", "--data-dir", str(audio_corpus), "--model", "gru", "--text-encoder",
                 "toymm,toymm8", "--epochs", "2", "--d-model", "8", "--layers", "1", "--quiet", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["encoders"] == {"text": ["toymm", "toymm8"]}
    assert cfg["encoder_fingerprints"] == {"text": ["toymm-v1", "toymm8-v1"]}
    assert cfg["model"]["input_dims"] == {"text": 16 + 8}
    run = from_pretrained(out)
    from merc.data import load_corpus
    test = load_corpus("jsonl", str(audio_corpus))["test"]
    feats = run.features_for(test)["text"]
    u = test[0].utterances[0]
    both = np.concatenate([HashedWords("a").encode([u.text])[0], HashedWords("b", dim=8).encode([u.text])[0]])
    assert np.allclose(feats[u.utterance_id], both)  # in the recorded order, nothing else
    y = [LABELS.index(u.emotion) for c in test for u in c]
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.mean(np.concatenate(run.predict(test)).argmax(-1) == np.array(y)) == pytest.approx(
        metrics["test"]["accuracy"])
    with pytest.raises(ConfigError, match="concatenates 2 text encoders"):
        run.features_for(test, encoder=HashedWords("toymm"))
    register_encoder("toymm8", lambda **kw: HashedWords("toymm8-changed", dim=8), modality="text", dim=None,
                     overwrite=True)
    try:
        run2 = from_pretrained(out)
        with pytest.raises(IncompatibleRunError, match="fingerprints"):
            run2.predict(test)
    finally:
        register_encoder("toymm8", lambda **kw: HashedWords("toymm8", dim=8), modality="text", dim=None, overwrite=True)


def test_a_missing_text_encoder_folder_fails_before_any_encoding(tmp_path):
    (tmp_path / "encoders").mkdir()
    for missing in ("/nonexistent/enc", str(tmp_path / "encoders" / "mpnet-meld"), "./nope"):
        with pytest.raises(ConfigError, match="no such folder"):
            resolve_encoders(["text"], {"text": ["toymm", missing]})
    assert resolve_encoders(["text"], {"text": ["toymm", str(tmp_path / "encoders")]})["text"][1].endswith("encoders")
    assert resolve_encoders(["text"], {"text": ["someone/some-model"]}) == {"text": ["someone/some-model"]}  # hub
