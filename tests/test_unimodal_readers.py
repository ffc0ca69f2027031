"""Unimodal emotion corpora: audio and face layouts on generated trees, text readers on tiny files and on
../shared/data (skipped with a reason when absent), the balanced sample and the generic JSONL."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import write_wav

from merc.data.labels import MELD_LABELS
from merc.data.unimodal import balanced_sample, items_to_corpus, merge, read_unimodal
from merc.data.unimodal.audio import read_cremad, read_ravdess, read_savee, read_tess
from merc.data.unimodal.face import load_face_image, read_ckplus, read_fer2013, read_jaffe, read_rafdb
from merc.data.unimodal.items import EmotionItem
from merc.data.unimodal.text import read_crowdflower, read_goemotions, read_isear
from merc.errors import ConfigError, InputError


def wavs(root: Path, names: list[str]) -> Path:
    for n in names:
        write_wav(root / n, seconds=0.01)
    return root


def png(path: Path, size: int = 8) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(path)


def labels_of(s) -> dict[str, str]:
    return {it.item_id: it.label for it in s.items}

# audio


def test_cremad(tmp_path):
    root = wavs(tmp_path / "AudioWAV", ["1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1091_TSI_SAD_LO.wav",
                                        "1002_WSI_NEU_XX.wav", "1002_ITS_DIS_MD.wav", "1003_MTI_FEA_X.wav"])
    (root / "README.txt").write_text("not audio")
    s = read_cremad(tmp_path)
    assert labels_of(s) == {"cremad:1001_DFA_ANG_XX": "anger", "cremad:1001_IEO_HAP_HI": "joy",
                            "cremad:1091_TSI_SAD_LO": "sadness", "cremad:1002_WSI_NEU_XX": "neutral",
                            "cremad:1002_ITS_DIS_MD": "disgust", "cremad:1003_MTI_FEA_X": "fear"}
    assert {it.speaker for it in s.items} == {"1001", "1002", "1003", "1091"}
    assert all(Path(it.media).is_file() for it in s.items) and not s.dropped


@pytest.mark.parametrize("bad", ["1001_DFA_XYZ_XX.wav", "1001-DFA-ANG-XX.wav", "1001_QQQ_ANG_XX.wav"])
def test_cremad_bad_name_is_named(tmp_path, bad):
    wavs(tmp_path, ["1001_DFA_ANG_XX.wav", bad])
    with pytest.raises(InputError, match=bad.replace(".", r"\.")):
        read_cremad(tmp_path)
    assert read_cremad(tmp_path, strict=False).dropped == Counter({"bad file name": 1})


def test_ravdess_codes_calm_and_song(tmp_path):
    names = ["03-01-01-01-01-01-01.wav", "03-01-02-01-01-01-01.wav", "03-01-03-02-01-02-02.wav",
             "03-01-04-01-02-01-03.wav", "03-01-05-01-02-01-12.wav", "03-01-06-02-01-01-04.wav",
             "03-01-07-01-01-01-05.wav", "03-01-08-02-02-02-24.wav", "03-02-03-01-01-01-06.wav"]
    wavs(tmp_path / "Actor_01", names)
    s = read_ravdess(tmp_path)
    got = {k.split(":")[1]: v for k, v in labels_of(s).items()}
    assert got == {"03-01-01-01-01-01-01": "neutral", "03-01-03-02-01-02-02": "joy", "03-01-04-01-02-01-03": "sadness",
                   "03-01-05-01-02-01-12": "anger", "03-01-06-02-01-01-04": "fear", "03-01-07-01-01-01-05": "disgust",
                   "03-01-08-02-02-02-24": "surprise"}
    assert s.dropped == Counter({"calm (no MELD class)": 1, "song": 1})
    assert next(it for it in s.items if it.item_id.endswith("-12")).speaker == "ravdess_actor12"
    s2 = read_ravdess(tmp_path, calm="neutral", include_song=True)
    assert len(s2) == 9 and s2.counts()["neutral"] == 2 and not s2.dropped


@pytest.mark.parametrize("bad", ["03-01-09-01-01-01-01.wav", "03-01-05-01-02-01.wav", "03-01-05-01-02-01-25.wav"])
def test_ravdess_bad_name_is_named(tmp_path, bad):
    wavs(tmp_path, ["03-01-05-01-02-01-12.wav", bad])
    with pytest.raises(InputError, match=bad.replace(".", r"\.")):
        read_ravdess(tmp_path)


def test_savee_speaker_folders_and_flat(tmp_path):
    wavs(tmp_path / "nested" / "AudioData" / "DC", ["a01.wav", "sa03.wav", "su15.wav", "n30.wav"])
    wavs(tmp_path / "nested" / "AudioData" / "KL", ["d02.wav", "f04.wav", "h05.wav"])
    s = read_savee(tmp_path / "nested")
    assert labels_of(s) == {"savee:DC_a01": "anger", "savee:DC_sa03": "sadness", "savee:DC_su15": "surprise",
                            "savee:DC_n30": "neutral", "savee:KL_d02": "disgust", "savee:KL_f04": "fear",
                            "savee:KL_h05": "joy"}
    wavs(tmp_path / "flat" / "ALL", ["JE_a01.wav", "JK_su02.wav"])
    flat = read_savee(tmp_path / "flat")
    assert labels_of(flat) == {"savee:JE_a01": "anger", "savee:JK_su02": "surprise"}
    assert {it.speaker for it in flat.items} == {"savee_JE", "savee_JK"}


@pytest.mark.parametrize("bad", ["DC/x01.wav", "XX_a01.wav", "Other/a01.wav"])
def test_savee_bad_name_is_named(tmp_path, bad):
    wavs(tmp_path, ["DC/a01.wav", bad])
    with pytest.raises(InputError, match=Path(bad).name.replace(".", r"\.")):
        read_savee(tmp_path)


def test_tess(tmp_path):
    wavs(tmp_path / "TESS" / "OAF_angry", ["OAF_back_angry.wav"])
    wavs(tmp_path / "TESS" / "YAF_pleasant_surprised", ["YAF_bath_ps.wav"])
    wavs(tmp_path / "TESS" / "OAF_Pleasant_surprise", ["OAF_bite_pleasant_surprise.wav"])
    wavs(tmp_path / "TESS" / "YAF_happy", ["YAF_chain_happy.wav", "YAF_dog_disgust.wav", "OA_bite_neutral.wav",
                                            "YAF_germ_sad.wav", "OAF_lot_fear.wav"])
    s = read_tess(tmp_path)
    assert s.counts() == {"anger": 1, "disgust": 1, "fear": 1, "joy": 1, "neutral": 1, "sadness": 1, "surprise": 2}
    assert next(it for it in s.items if "bite_neutral" in it.item_id).speaker == "tess_OAF"


def test_tess_bad_name_is_named(tmp_path):
    wavs(tmp_path, ["OAF_back_angry.wav", "OAF_back_bored.wav"])
    with pytest.raises(InputError, match=r"OAF_back_bored\.wav.*unknown TESS emotion"):
        read_tess(tmp_path)

# faces


def test_fer2013(tmp_path):
    rows = ["emotion,pixels,Usage"]
    for k, usage in enumerate(["Training"] * 7 + ["PublicTest", "PrivateTest"]):
        rows.append(f"{k % 7},{' '.join(str((k + i) % 256) for i in range(2304))},{usage}")
    (tmp_path / "fer2013.csv").write_text("\n".join(rows) + "\n")
    s = read_fer2013(tmp_path)
    assert len(s) == 9 and s.counts()["anger"] == 2 and s.counts()["disgust"] == 2
    assert [it.label for it in s.items[:7]] == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    img = load_face_image(s.items[1])
    assert img.shape == (48, 48) and img.dtype == np.uint8 and img[0, 0] == 1
    train = read_fer2013(tmp_path / "fer2013.csv", usages=("Training",))
    assert len(train) == 7 and sum(train.dropped.values()) == 2


def test_fer2013_bad_row_is_named(tmp_path):
    (tmp_path / "fer2013.csv").write_text("emotion,pixels,Usage\n0," + " ".join(["1"] * 2304) + ",Training\n"
                                          "9," + " ".join(["1"] * 2304) + ",Training\n")
    with pytest.raises(InputError, match=r"fer2013\.csv, line 3"):
        read_fer2013(tmp_path)


def test_rafdb(tmp_path):
    basic = tmp_path / "RAF" / "basic"
    lines = []
    for k, code in enumerate([1, 2, 3, 4, 5, 6, 7], 1):
        lines.append(f"train_{k:05d}.jpg {code}")
        png(basic / "Image" / "aligned" / f"train_{k:05d}_aligned.jpg")
    lines.append("test_0001.jpg 4")
    png(basic / "Image" / "original" / "test_0001.jpg")
    lines.append("test_0002.jpg 6")  # listed, not on disk
    (basic / "EmoLabel").mkdir(parents=True)
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    s = read_rafdb(tmp_path / "RAF")  # the parent of basic/ works too
    assert [it.label for it in s.items[:7]] == ["surprise", "fear", "disgust", "joy", "sadness", "anger", "neutral"]
    assert s.items[7].item_id == "rafdb:test_0001" and s.items[7].media.endswith("original/test_0001.jpg")
    assert s.dropped == Counter({"image missing": 1})
    assert load_face_image(s.items[0]).shape == (8, 8)
    (basic / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(InputError, match=r"list_patition_label\.txt, line 1"):
        read_rafdb(basic)


def test_ckplus_peak_frames_neutral_and_drops(tmp_path):
    def sequence(subject, seq, n_frames, code):
        for f in range(1, n_frames + 1):
            png(tmp_path / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{f:08d}.png")
        if code is not None:
            e = tmp_path / "Emotion" / subject / seq / f"{subject}_{seq}_{n_frames:08d}_emotion.txt"
            e.parent.mkdir(parents=True, exist_ok=True)
            e.write_text(f"   {code:.7e}\n")
    sequence("S005", "001", 6, 3)  # disgust
    sequence("S010", "002", 5, 7)  # surprise
    sequence("S011", "001", 4, 2)  # contempt: dropped
    sequence("S011", "002", 4, None)  # unlabelled: dropped
    s = read_ckplus(tmp_path)
    assert s.counts() == {"anger": 0, "disgust": 3, "fear": 0, "joy": 0, "neutral": 2, "sadness": 0, "surprise": 3}
    assert {it.item_id for it in s.items if it.label == "disgust"} == {f"ckplus:S005_001_{f:08d}" for f in (4, 5, 6)}
    assert "ckplus:S005_001_00000001" in labels_of(s) and labels_of(s)["ckplus:S005_001_00000001"] == "neutral"
    assert s.dropped == Counter({"contempt (no MELD class)": 1, "sequence without emotion label": 1})
    assert len(read_ckplus(tmp_path, peak_frames=1, neutral_first=False)) == 2
    png(tmp_path / "cohn-kanade-images" / "S005" / "001" / "frame7.png")
    with pytest.raises(InputError, match=r"frame7\.png"):
        read_ckplus(tmp_path)


def test_ckplus_bad_label_file_is_named(tmp_path):
    png(tmp_path / "cohn-kanade-images" / "S005" / "001" / "S005_001_00000001.png")
    e = tmp_path / "Emotion" / "S005" / "001" / "S005_001_00000001_emotion.txt"
    e.parent.mkdir(parents=True)
    e.write_text("happy\n")
    with pytest.raises(InputError, match=r"S005_001_00000001_emotion\.txt"):
        read_ckplus(tmp_path)


def test_jaffe(tmp_path):
    for n in ["KA.AN1.39", "KA.DI2.43", "KL.FE3.57", "KM.HA1.4", "NA.NE1.202", "TM.SA2.191", "YM.SU3.60"]:
        png(tmp_path / "jaffe" / f"{n}.tiff")
    (tmp_path / "jaffe" / "README").write_text("x")
    s = read_jaffe(tmp_path)
    assert [it.label for it in s.items] == ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
    assert s.items[0].speaker == "jaffe_KA"
    png(tmp_path / "jaffe" / "KA.XX1.40.tiff")
    with pytest.raises(InputError, match=r"KA\.XX1\.40\.tiff.*unknown JAFFE expression code"):
        read_jaffe(tmp_path)
    (tmp_path / "jaffe" / "KA.XX1.40.tiff").unlink()
    png(tmp_path / "jaffe" / "KA_AN1_39.tiff")
    with pytest.raises(InputError, match=r"KA_AN1_39\.tiff"):
        read_jaffe(tmp_path)

# text, tiny files


def test_goemotions_ekman_and_multilabel(tmp_path):
    rows = ['hello there\t27\ta1', '"I ""love"" it"\t17,18\ta2', 'ugh\t2,17\ta3', 'wow\t26,6\ta4',
            'meh\t27,3\ta5', '   \t25\ta6']
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text("\n".join(r.replace("\ta", f"\t{split}") for r in rows) + "\n")
    s = read_goemotions(tmp_path, splits=("train",))
    assert labels_of(s) == {"goemotions:train1": "neutral", "goemotions:train2": "joy", "goemotions:train4": "surprise"}
    assert s.items[1].text == 'I "love" it' and s.items[1].raw_label == "joy,love"
    assert s.dropped == Counter({"labels map to 2+ classes": 2, "empty text": 1})
    assert len(read_goemotions(tmp_path)) == 9
    (tmp_path / "dev.tsv").write_text("bad\t28\tx\n")
    with pytest.raises(InputError, match=r"dev\.tsv, line 1"):
        read_goemotions(tmp_path)


def test_crowdflower_mapping(tmp_path):
    rows = ["tweet_id,sentiment,author,content", "1,worry,a,so nervous", "2,hate,b,i hate this", "3,empty,c,...",
            "4,fun,d,yay", '5,boredom,e,"zzz, zzz"', "6,love,f,love you", "7,neutral,g,ok"]
    (tmp_path / "text_emotion.csv").write_text("\n".join(rows) + "\n")
    s = read_crowdflower(tmp_path)
    assert labels_of(s) == {"crowdflower:1": "fear", "crowdflower:2": "anger", "crowdflower:4": "joy",
                            "crowdflower:6": "joy", "crowdflower:7": "neutral"}
    assert s.dropped == Counter({"label empty (no MELD class)": 1, "label boredom (no MELD class)": 1})
    (tmp_path / "text_emotion.csv").write_text("\n".join(rows[:2] + ["8,rage,x,grr"]) + "\n")
    with pytest.raises(InputError, match=r"text_emotion\.csv, line 3.*'rage'"):
        read_crowdflower(tmp_path)


def test_isear_both_formats(tmp_path):
    header = [f"F{i}" for i in range(36)] + ["Field1", "Field3", "Field2", "MYKEY", "SIT", "STATE", ""]
    def row(key, emo, sit):
        return "|".join(["1"] * 36 + [emo, "1", "1", key, sit, "1", ""])
    lines = ["|".join(header), row("01", "joy", "When I passed á the exam."), row("02", "shame", "I lied."),
             row("03", "anger", "He broke | my bike \\ again."), row("04", "fear", "[ No response.]")]
    (tmp_path / "isear.csv").write_text("\n".join(lines) + "\n")
    s = read_isear(tmp_path)
    assert labels_of(s) == {"isear:01": "joy", "isear:03": "anger"}
    assert [it.text for it in s.items] == ["When I passed the exam.", "He broke my bike again."]
    assert s.dropped == Counter({"label shame (no MELD class)": 1, "non-answer": 1})
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "isear_text_emotion.csv").write_text("id,emotion,text,text_raw\n01,joy,When I passed the exam.,x\n"
                                                    "02,guilt,I lied.,x\n")
    assert labels_of(read_isear(csv_dir)) == {"isear:01": "joy"}

# text, real corpora


def test_text_readers_on_shared_data(shared_data):
    ge = read_goemotions(shared_data / "goemotions")
    # SOURCE.md: single-class rows train 39555 + dev 4946 + test 4968
    assert len(ge) == 39555 + 4946 + 4968
    assert ge.counts()["fear"] == 541 + 72 + 80 and ge.counts()["neutral"] == 12823 + 1592 + 1606
    cf = read_crowdflower(shared_data / "crowdflower_text_emotion")
    assert len(cf) + sum(cf.dropped.values()) == 40000 and cf.counts()["fear"] == 8459
    assert cf.dropped == Counter({"label empty (no MELD class)": 827, "label boredom (no MELD class)": 179})
    isear = read_isear(shared_data / "isear")
    assert isear.counts()["neutral"] == 0 and isear.dropped["label shame (no MELD class)"] == 1096
    assert len(isear) + sum(isear.dropped.values()) == 7666
    other = read_isear(shared_data / "isear" / "isear_text_emotion.csv")
    def rows(s):
        return [(it.item_id, it.label, it.text) for it in s.items]
    assert rows(other) == rows(isear)

# sampling, jsonl, registry


def _items(counts: dict[str, int], source: str = "x") -> list[EmotionItem]:
    return [EmotionItem(f"{source}:{lab}{k}", lab, source, "text", text=f"{lab} {k}")
            for lab, n in counts.items() for k in range(n)]


def test_balanced_sample_caps_seeds_and_keeps_small_classes():
    items = _items({"joy": 50, "anger": 5, "fear": 20})
    s = balanced_sample(items, 10, seed=1)
    assert Counter(it.label for it in s) == {"joy": 10, "anger": 5, "fear": 10}
    assert [it.item_id for it in s] == [it.item_id for it in balanced_sample(list(reversed(items)), 10, seed=1)]
    assert {it.item_id for it in s} != {it.item_id for it in balanced_sample(items, 10, seed=2)}
    assert len(balanced_sample(items, None)) == 75
    with pytest.raises(ValueError):
        balanced_sample(items, 0)
    corpus = items_to_corpus(s, "adapt_text")
    assert corpus.labels == MELD_LABELS and len(corpus.utterances("all")) == 25


def test_emotion_jsonl(tmp_path):
    write_wav(tmp_path / "clips" / "a.wav")
    (tmp_path / "audio.jsonl").write_text(
        '{"audio": "clips/a.wav", "emotion": "Angry", "speaker": "s1"}\n\n'
        '{"audio": "clips/missing.wav", "emotion": "joy"}\n{"audio": "clips/a.wav", "emotion": null}\n')
    s = read_unimodal("jsonl", tmp_path / "audio.jsonl", modality="audio")
    assert [(it.label, it.speaker) for it in s.items] == [("anger", "s1")]
    assert s.dropped == Counter({"media missing": 1, "unlabelled": 1})
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.jsonl").write_text('{"text": "yay", "emotion": "happy", "id": "y"}\n')
    (tmp_path / "t" / "b.jsonl").write_text('{"text": "hmm", "emotion": "bored"}\n')
    with pytest.raises(InputError, match=r"b\.jsonl, line 1.*'bored'"):
        read_unimodal("jsonl", tmp_path / "t", modality="text")
    (tmp_path / "t" / "b.jsonl").write_text('{"image": "x.png", "emotion": "joy"}\n')
    with pytest.raises(InputError, match=r"b\.jsonl, line 1.*'text'"):
        read_unimodal("jsonl", tmp_path / "t", modality="text")


def test_registry_checks_modality_and_merge_prefixes_drops(tmp_path):
    with pytest.raises(ConfigError, match="audio corpus, not text"):
        read_unimodal("cremad", tmp_path, modality="text")
    with pytest.raises(ConfigError, match="unknown unimodal corpus"):
        read_unimodal("emodb", tmp_path)
    wavs(tmp_path / "c", ["1001_DFA_ANG_XX.wav"])
    wavs(tmp_path / "r", ["03-01-02-01-01-01-01.wav", "03-01-05-01-01-01-01.wav"])
    m = merge([read_unimodal("cremad", tmp_path / "c", modality="audio"), read_unimodal("ravdess", tmp_path / "r")])
    assert len(m) == 2 and m.dropped == Counter({"ravdess: calm (no MELD class)": 1})
    with pytest.raises(ValueError, match="more than once"):
        merge([read_cremad(tmp_path / "c"), read_cremad(tmp_path / "c")])
    assert json.dumps(m.stats())  # JSON-serialisable counts for config.json
