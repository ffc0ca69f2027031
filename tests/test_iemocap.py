"""IEMOCAP reader on fake trees in the official release layout (built by tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from merc.data import CorpusError, load_corpus
from merc.data.iemocap import assign_splits, read_iemocap, speaker_of
from merc.data.labels import IEMOCAP_4, IEMOCAP_6

# one or two short dialogues per session; EmoEvaluation order is *not* time order in Ses01F_impro01
TREE = {
    "Ses01F_impro01": [("Ses01F_impro01_M000", 8.5, 10.25, "fru", "Do you have your forms?"),
                       ("Ses01F_impro01_F000", 6.2901, 8.2357, "neu", "Excuse me."),
                       ("Ses01F_impro01_F001", 10.5, 12.0, "xxx", "Yeah.")],
    "Ses01M_impro02": [("Ses01M_impro02_M000", 0.5, 1.0, "sad", "Bye.")],
    "Ses02M_script01_1": [("Ses02M_script01_1_M000", 1.0, 2.5, "exc", "Guess what!"),
                          ("Ses02M_script01_1_F000", 2.75, 4.0, "hap", "What?")],
    "Ses03F_impro02": [("Ses03F_impro02_F000", 0.5, 1.5, "sad", "I lost it."),
                       ("Ses03F_impro02_M000", 1.75, 3.0, "ang", "How could you?")],
    "Ses04M_impro03": [("Ses04M_impro03_M000", 0.25, 1.0, "oth", "Hi."),
                       ("Ses04M_impro03_F000", 1.25, 2.0, "sur", "Oh!")],  # everything dropped
    "Ses05F_impro01": [("Ses05F_impro01_F000", 2.0, 3.5, "ang", "Stop it."),
                       ("Ses05F_impro01_M000", 3.75, 5.0, "fru", "Fine."),
                       ("Ses05F_impro01_M001", 5.25, 6.0, "dis", "Ugh.")],
}


def all_utts(corpus):
    return {u.utterance_id: u for s in corpus.splits for u in corpus.utterances(s)}


def test_six_classes_labels_paths_meta_and_order(make_iemocap):
    root = make_iemocap(TREE)
    corpus = read_iemocap(root, classes=6, dev_fraction=0.0)
    assert corpus.labels == IEMOCAP_6
    utts = all_utts(corpus)
    assert sorted(utts) == sorted(["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01M_impro02_M000",
                                   "Ses02M_script01_1_M000", "Ses02M_script01_1_F000", "Ses03F_impro02_F000",
                                   "Ses03F_impro02_M000", "Ses05F_impro01_F000", "Ses05F_impro01_M000"])
    assert {k: u.emotion for k, u in utts.items() if k.startswith(("Ses01F", "Ses02"))} == {
        "Ses01F_impro01_F000": "neu", "Ses01F_impro01_M000": "fru",
        "Ses02M_script01_1_M000": "exc", "Ses02M_script01_1_F000": "hap"}
    conv = next(c for c in corpus["train"] if c.conversation_id == "Ses01F_impro01")
    assert [u.utterance_id for u in conv] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000"]  # by start time
    assert conv.speakers == ["Ses01_F", "Ses01_M"]
    u = conv.utterances[0]
    assert (u.text, u.start, u.end) == ("Excuse me.", 6.2901, 8.2357)
    assert u.audio == str(root.resolve() / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    assert Path(u.audio).is_file()
    assert u.video == str(root.resolve() / "Session1/dialog/avi/DivX/Ses01F_impro01.avi")
    assert u.meta == {"session": 1, "raw_label": "neu", "valence": 2.5, "arousal": 3.0, "dominance": 3.5,
                      "video_scope": "dialogue"}  # VAD of the 2nd line written (k=1)
    assert utts["Ses02M_script01_1_F000"].speaker == "Ses02_F"
    assert corpus.dropped["train"] == {"label:xxx": 1, "label:oth": 1, "label:sur": 1, "empty_conversation": 1}
    assert corpus.dropped["test"] == {"label:dis": 1}
    assert [c.conversation_id for c in corpus["test"]] == ["Ses05F_impro01"]


def test_four_classes_merge_exc_and_drop_fru(make_iemocap):
    corpus = load_corpus("iemocap", make_iemocap(TREE), classes=4, dev_fraction=0.0)
    assert corpus.labels == IEMOCAP_4
    utts = all_utts(corpus)
    assert utts["Ses02M_script01_1_M000"].emotion == "hap"
    assert utts["Ses02M_script01_1_M000"].meta["raw_label"] == "exc"
    assert "Ses01F_impro01_M000" not in utts and "Ses05F_impro01_M000" not in utts
    assert corpus.dropped["train"]["label:fru"] == 1 and corpus.dropped["test"]["label:fru"] == 1
    assert set(corpus.stats()["splits"]["train"]["labels"]) == set(IEMOCAP_4)


def test_splits_are_disjoint_deterministic_and_session5_is_test(make_iemocap):
    root = make_iemocap(TREE)
    a = read_iemocap(root, dev_fraction=0.5, seed=3)
    b = read_iemocap(root, dev_fraction=0.5, seed=3)
    ids = {s: {c.conversation_id for c in a[s]} for s in ("train", "dev", "test")}
    assert ids == {s: {c.conversation_id for c in b[s]} for s in ("train", "dev", "test")}
    assert ids["test"] == {"Ses05F_impro01"}
    assert not ids["train"] & ids["dev"] and ids["dev"]
    assert all(c.split == s for s in ("train", "dev", "test") for c in a[s])
    # the assignment itself: every session 1-4 dialogue in exactly one of train/dev, fraction respected
    names = [f"Ses0{i}F_impro{j:02d}" for i in range(1, 6) for j in range(10)]
    split = assign_splits(names, 0.1, seed=0)
    assert sum(v == "dev" for v in split.values()) == 4
    assert {k for k, v in split.items() if v == "test"} == {n for n in names if n.startswith("Ses05")}
    assert split == assign_splits(list(reversed(names)), 0.1, seed=0)  # independent of input order
    assert split != assign_splits(names, 0.1, seed=1)


def test_missing_transcription_line_is_counted(make_iemocap):
    root = make_iemocap(TREE)
    trans = root / "Session3/dialog/transcriptions/Ses03F_impro02.txt"
    trans.write_text("\n".join(ln for ln in trans.read_text().splitlines() if "_M000" not in ln) + "\n")
    corpus = read_iemocap(root, dev_fraction=0.0)
    assert "Ses03F_impro02_M000" not in all_utts(corpus)
    assert corpus.dropped["train"]["no_transcription"] == 1


def test_bad_evaluation_line_names_file_line_and_value(make_iemocap):
    root = make_iemocap(TREE)
    path = root / "Session2/dialog/EmoEvaluation/Ses02M_script01_1.txt"
    lines = path.read_text().splitlines()
    lines[6] = "[2.7500 - 4.0x00]\tSes02M_script01_1_F000\thap\t[2.0, 2.0, 2.0]"  # the 2nd turn line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError) as e:
        read_iemocap(root)
    assert f"{path}:7:" in str(e.value) and "4.0x00" in str(e.value) and "expected" in str(e.value)


def test_turn_of_another_dialogue_and_missing_files(make_iemocap, tmp_path):
    root = make_iemocap({"Ses01F_impro01": [("Ses01F_impro09_F000", 1.0, 2.0, "neu", "Hi.")]})
    with pytest.raises(CorpusError, match=r"Ses01F_impro01\.txt:3: turn 'Ses01F_impro09_F000'"):
        read_iemocap(root)
    root = make_iemocap({"Ses01F_impro01": [("Ses01F_impro01_F000", 1.0, 2.0, "neu", "Hi.")]})
    (root / "Session1/dialog/transcriptions/Ses01F_impro01.txt").unlink()
    with pytest.raises(CorpusError, match=r"transcriptions/Ses01F_impro01\.txt: no such file"):
        read_iemocap(root)
    with pytest.raises(CorpusError, match="no Session1..Session5"):
        read_iemocap(tmp_path / "empty")


def test_speaker_of_and_bad_classes():
    assert speaker_of("Ses01F_impro01_F000") == "Ses01_F"
    assert speaker_of("Ses03M_script02_2_M021") == "Ses03_M"
    with pytest.raises(ValueError):
        speaker_of("Ses01F_impro01_X000")
    with pytest.raises(ValueError, match="4 or 6"):
        read_iemocap("/nowhere", classes=5)
