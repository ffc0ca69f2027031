"""Audio and face items through the registry encoders (``merc.encoders.items``) and ``merc adapt --modality
audio|face`` end to end, then ``merc train --adapters audio=DIR,face=DIR`` on a tiny MELD-layout corpus.

Generated trees in the real layouts: CREMA-D wavs spoken by espeak-ng (emotion prosody of
``merc.testing.mmcorpus``) plus one corrupt and one silent wav; JAFFE tiffs of package-shipped face photos plus one
faceless photo and one corrupt file; a FER2013 csv with pixel rows of the same faces plus one blank row. Bad items
must be left out and counted by reason, never fatal. This checks plumbing, not accuracy.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from merc.data.unimodal.items import EmotionItem

CREMAD_TEXT = {"DFA": "Don't forget a jacket.", "IEO": "It's eleven o'clock.", "TIE": "That is exactly what happened.",
               "IWW": "I wonder what this is about."}
CREMAD_CODES = {"anger": "ANG", "joy": "HAP", "sadness": "SAD"}
JAFFE_CODES = {"anger": "AN", "joy": "HA", "sadness": "SA"}


def _installed(*pairs: tuple[str, str]) -> str | None:
    from merc.encoders.base import available_encoders
    have = {(i.modality, i.name) for i in available_encoders() if i.installed()}
    missing = [f"{m}:{n}" for m, n in pairs if (m, n) not in have]
    return f"encoders not installed: {', '.join(missing)} (`merc encoder list`)" if missing else None


def _need(*pairs: tuple[str, str]) -> None:
    why = _installed(*pairs)
    if why:
        pytest.skip(why)


# generated corpora


def cremad_tree(root: Path, per_class: int = 6) -> Path:
    """``1001_DFA_ANG_XX.wav`` … spoken by espeak-ng with each emotion's prosody, + one corrupt + one silent wav."""
    from merc.testing.mmcorpus import espeak_params, tts
    from merc.testing.synth import silence, write_wav
    root.mkdir(parents=True)
    sents = list(CREMAD_TEXT)
    for emo, code in CREMAD_CODES.items():
        for k in range(per_class):
            actor, sent = 1001 + k % 3, sents[k % len(sents)]
            wav = tts(CREMAD_TEXT[sent], espeak_params(k % 3, emo), cache_dir=root.parent / "tts")
            write_wav(wav, root / f"{actor}_{sent}_{code}_{'XX' if k < len(sents) else 'HI'}.wav")
    (root / "1091_DFA_ANG_XX.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage, not audio" * 3)
    silence(1.5, root / "1091_IEO_SAD_XX.wav", noise=0.0)
    return root


def _face_photos(n: int) -> list[np.ndarray]:
    from merc.testing.synth import face_images
    faces = face_images(n)
    if len(faces) < n:
        pytest.skip(f"only {len(faces)} distinct face photos available (need {n})")
    return faces


def jaffe_tree(root: Path, faces: list[np.ndarray]) -> Path:
    """``KA.AN1.39.tiff`` per photo (emotions round-robin), + a faceless photo and a corrupt tiff."""
    from PIL import Image

    from merc.testing.synth import no_face_image
    root.mkdir(parents=True)
    emos = list(JAFFE_CODES.values())
    for i, img in enumerate(faces):
        Image.fromarray(img).save(root / f"P{chr(65 + i)}.{emos[i % 3]}1.{i + 1}.tiff")
    Image.fromarray(no_face_image()).save(root / "NF.NE1.90.tiff")
    (root / "XX.SA1.91.tiff").write_bytes(b"II*\x00 this is not a tiff image at all")
    return root


def fer2013_csv(path: Path, faces: list[np.ndarray]) -> Path:
    """FER2013 csv: each photo as a 48x48 grey pixel row (emotions 0 anger / 3 joy / 4 sadness), + one blank row."""
    from PIL import Image
    rows = ["emotion,pixels,Usage"]
    for i, img in enumerate(faces):
        g = np.asarray(Image.fromarray(img).convert("L").resize((48, 48), Image.BILINEAR))
        rows.append(f"{(0, 3, 4)[i % 3]},{' '.join(map(str, g.reshape(-1)))},Training")
    rows.append(f"6,{' '.join(['0'] * 2304)},PublicTest")
    path.write_text("\n".join(rows) + "\n")
    return path


# the item encoder


def test_face_items_still_images_pixels_and_bad_items(tmp_path):
    """fer on still images: files and inline pixels give the same feature for the same pixels; a faceless photo,
    a corrupt file and a blank pixel row are absent with their reasons; the fingerprint is the encoder's."""
    _need(("face", "fer"))
    from PIL import Image

    from merc.encoders.base import get_encoder
    from merc.encoders.items import item_encoder
    from merc.encoders.store import FeatureStore
    from merc.testing.synth import no_face_image
    [face] = _face_photos(1)
    grey = np.asarray(Image.fromarray(face).convert("L").resize((48, 48), Image.BILINEAR))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(face).save(tmp_path / "face.jpg")
    Image.fromarray(no_face_image()).save(tmp_path / "scene.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    items = [EmotionItem("t:pixels", "joy", "t", "face", pixels=grey),
             EmotionItem("t:png", "joy", "t", "face", media=str(tmp_path / "grey.png")),
             EmotionItem("t:photo", "anger", "t", "face", media=str(tmp_path / "face.jpg")),
             EmotionItem("t:scene", "anger", "t", "face", media=str(tmp_path / "scene.jpg")),
             EmotionItem("t:broken", "joy", "t", "face", media=str(tmp_path / "broken.png")),
             EmotionItem("t:blank", "joy", "t", "face", pixels=np.zeros((48, 48), np.uint8))]
    store = FeatureStore(tmp_path / "store")
    enc = item_encoder("face", "fer", crop="whole", store=store, progress=False)
    assert enc.fingerprint == get_encoder("fer", "face").fingerprint and enc.dim == 135
    res = enc.encode_items(items[:2] + items[4:])
    assert res.present.tolist() == [True, True, False, False]
    assert np.allclose(res.X[0], res.X[1], atol=1e-5)  # inline pixels == the same pixels read from a png
    assert abs(res.X[0][:7].sum() - 1) < 1e-4  # the 7 FER probabilities
    assert res.reasons[2].startswith("fer: not decodable: ") and "broken.png" in res.reasons[2]
    assert res.reasons[3].startswith("fer: blank image")
    auto = item_encoder("face", "fer", store=store, progress=False).encode_items(items)  # crop="auto"
    assert auto.present.tolist() == [True, True, True, False, False, False]
    assert auto.reasons[3] == "fer: no face found in scene.jpg"
    assert np.allclose(auto.X[0], res.X[0])  # FER2013 pixels are taken whole under "auto" too
    assert not np.allclose(auto.X[1], res.X[1])  # a png is searched for a face under "auto"
    again = item_encoder("face", "fer", store=store, progress=False)
    again.encode_items(items)
    assert again.last_meta["fer"]["cache_hit"] is True  # stored by content: nothing re-encoded


def test_item_encoder_refuses_wrong_modality_and_text():
    from merc.encoders.items import item_encoder
    from merc.errors import ConfigError
    with pytest.raises(ConfigError, match="'fer' is a face encoder, not an audio encoder"):
        item_encoder("audio", "fer")
    with pytest.raises(ConfigError, match="not 'text'"):
        item_encoder("text", "minilm")
    with pytest.raises(ConfigError, match="twice"):
        item_encoder("audio", "egemaps,egemaps")


# merc adapt, then merc train --adapters


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """An audio adapter (egemaps,resemblyzer over CREMA-D) and a face adapter (fer over JAFFE + FER2013)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (it voices the CREMA-D tree)")
    why = _installed(("audio", "egemaps"), ("audio", "resemblyzer"), ("face", "fer"))
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("adapt_items")
    faces = _face_photos(9)
    trees = {"cremad": cremad_tree(root / "CREMA-D" / "AudioWAV"), "jaffe": jaffe_tree(root / "jaffe", faces),
             "fer2013": fer2013_csv(root / "fer2013.csv", faces)}
    out: dict = {"root": root, "trees": trees}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MERC_CACHE", str(root / "cache"))
        from contextlib import redirect_stderr, redirect_stdout
        from io import StringIO

        from merc.cli import main
        for name, argv in {
            "audio": ["--modality", "audio", "--encoder", "egemaps,resemblyzer", "--corpus",
                      f"cremad={trees['cremad']}", "--out", str(root / "ad_audio")],
            "face": ["--modality", "face", "--encoder", "fer", "--corpus", f"jaffe={trees['jaffe']}",
                     f"fer2013={trees['fer2013']}", "--out", str(root / "ad_face")],
        }.items():
            so, se = StringIO(), StringIO()
            with redirect_stdout(so), redirect_stderr(se):
                code = main(["adapt", *argv, "--hidden", "16", "--epochs", "8", "--heldout", "0.25", "--quiet"])
            out[name] = (code, so.getvalue(), se.getvalue(), root / f"ad_{name}")
    return out


@pytest.mark.slow  # the module fixture: ~20 s (espeak-ng, resemblyzer, fer)
def test_adapt_audio_cli(adapters):
    from merc.encoders.items import item_encoder
    from merc.models.adapter import Adapter
    code, stdout, stderr, folder = adapters["audio"]
    assert code == 0, stderr
    printed = json.loads(stdout)
    # the corrupt wav fails both encoders (egemaps first); the silent one only resemblyzer (no speech)
    assert printed["unusable"]["n"] == 2, printed
    reasons = printed["unusable"]["reasons"]
    assert sum(reasons.values()) == 2 and any(r.startswith("egemaps: not decodable") for r in reasons), reasons
    assert any(r.startswith("resemblyzer: ") for r in reasons), reasons
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["unusable"]["examples"]) == {"cremad:1091_DFA_ANG_XX", "cremad:1091_IEO_SAD_XX"}
    assert metrics["n_train"] + metrics["n_heldout"] == 18  # 3 classes x 6 spoken clips
    cfg = json.loads((folder / "config.json").read_text())
    enc = item_encoder("audio", "egemaps,resemblyzer", progress=False)
    assert cfg["encoder"] == {"name": "egemaps+resemblyzer", "fingerprint": enc.fingerprint, "dim": 88 + 256}
    assert cfg["counts"]["unusable"]["n"] == 2 and cfg["encoding"]["parts"][1]["name"] == "resemblyzer"
    a = Adapter.from_pretrained(folder)
    items = [EmotionItem(f"x{i}", "joy", "x", "audio", media=str(p))
             for i, p in enumerate(sorted(adapters["trees"]["cremad"].glob("100*_*.wav"))[:3])]
    X = enc.encode(items)
    assert a.refine(X).shape == (3, 128) and a.modality == "audio"


@pytest.mark.slow
def test_adapt_face_cli(adapters):
    from merc.models.adapter import Adapter
    code, stdout, stderr, folder = adapters["face"]
    assert code == 0, stderr
    printed = json.loads(stdout)
    assert printed["unusable"]["n"] == 3, printed  # faceless photo, corrupt tiff, blank FER2013 row
    metrics = json.loads((folder / "metrics.json").read_text())
    ex = metrics["unusable"]["examples"]
    assert ex["jaffe:NF.NE1.90"] == "fer: no face found in NF.NE1.90.tiff"
    assert ex["jaffe:XX.SA1.91"].startswith("fer: not decodable: ")
    assert ex["fer2013:00009"].startswith("fer: blank image")
    assert metrics["n_train"] + metrics["n_heldout"] == 18  # 9 photos as JAFFE tiffs + 9 as FER2013 rows
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["encoder"]["name"] == "fer" and cfg["encoding"]["crop"] == "auto"
    a = Adapter.from_pretrained(folder)
    assert a.config.bottleneck == 128 and a.refine(np.zeros((2, 135), np.float32)).shape == (2, 128)


@pytest.mark.slow
def test_train_with_audio_and_face_adapters(adapters, tmp_path, monkeypatch, capsys):
    """``merc train --adapters audio=DIR,face=DIR`` on a MELD-layout corpus records both adapters; an adapter over
    other encoders than the run's is refused with a clear error."""
    from merc.cli import main
    from merc.testing.synth import build_corpus_fixture
    assert adapters["audio"][0] == 0 and adapters["face"][0] == 0
    monkeypatch.setenv("MERC_CACHE", str(adapters["root"] / "cache"))
    fx = build_corpus_fixture(tmp_path / "corpus", layout="meld", n_dialogues=4, utts_per_dialogue=4, seed=0, fps=5)
    ad_audio, ad_face = adapters["audio"][3], adapters["face"][3]
    base = ["train", "--dataset", "meld", "--data-dir", str(fx.data_dir), "--media-dir", str(fx.media_dir),
            "--modalities", "text,audio,face", "--text-encoder", "minilm", "--model", "mamba", "--d-model", "16",
            "--layers", "1", "--epochs", "2", "--quiet", "--face-encoders", "fer"]
    run = tmp_path / "run"
    code = main(base + ["--audio-encoders", "egemaps,resemblyzer", "--adapters", f"audio={ad_audio},face={ad_face}",
                        "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["adapters"]["audio"]["encoder"]["name"] == "egemaps+resemblyzer"
    assert cfg["adapters"]["face"]["encoder"]["name"] == "fer"
    assert cfg["adapters"]["audio"]["path"] == str(ad_audio.resolve())
    assert json.loads((run / "metrics.json").read_text())["test"]["n"] > 0
    capsys.readouterr()
    code = main(base + ["--audio-encoders", "egemaps", "--adapters", f"audio={ad_audio}", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "trained on stage-1 features of 'egemaps+resemblyzer'" in err, err
    assert "--audio-encoders egemaps,resemblyzer" in err


def test_adapter_encoder_rule_ignores_how_the_face_was_chosen():
    """A face adapter trained on still images (fingerprint ``…-largest``) fits a run that chose faces by QC speaker
    tracks (``…-qc``) through the same network; another network or another concatenation does not."""
    from merc.errors import ConfigError
    from merc.models.adapter import Adapter, AdapterConfig
    from merc.training.adapters import check_adapter_encoders

    def adapter(m, name, fp, d):
        return Adapter(AdapterConfig(d_in=d, n_classes=2, hidden=4, bottleneck=3), labels=["a", "b"], modality=m,
                       encoder={"name": name, "fingerprint": fp, "dim": d})
    face = {"face": adapter("face", "fer", "fer-minixception-abc-m0.25-fps1.0-max30-hog1-largest", 135)}
    check_adapter_encoders(face, {"face": ["fer"]}, {"face": ["fer-minixception-abc-m0.25-fps1.0-max30-hog1-qc"]},
                           {"face": 135})
    with pytest.raises(ConfigError, match="trained on stage-1 features of 'fer'"):
        check_adapter_encoders(face, {"face": ["fer"]}, {"face": ["fer-minixception-OTHER-m0.25-fps1.0-max30-hog1-qc"]},
                               {"face": 135})
    audio = {"audio": adapter("audio", "egemaps+resemblyzer", "e1+r1", 344)}
    check_adapter_encoders(audio, {"audio": ["egemaps", "resemblyzer"]}, {"audio": ["e1", "r1"]}, {"audio": 344})
    with pytest.raises(ConfigError, match="--audio-encoders egemaps,resemblyzer"):
        check_adapter_encoders(audio, {"audio": ["resemblyzer", "egemaps"]}, {"audio": ["r1", "e1"]}, {"audio": 344})
