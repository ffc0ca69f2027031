"""MELD reader: the real release and its dyadic variant (checked against their SOURCE.md) and small CSVs
written here."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from merc.data import CorpusError, load_corpus
from merc.data.labels import MELD_LABELS
from merc.data.meld import parse_time, read_meld, read_meld_dyadic

HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
ROWS = [  # deliberately out of dialogue / utterance order
    '3,"Oh, hi!",Ross,joy,positive,1,0,2,5,"00:01:00,000","00:01:01,500"',
    '2,"He\u0092s here.", Monica ,surprise,positive,0,1,1,1,"0:00:03,250","0:00:04,000"',
    '1,"Itâ€™s fine.",Rachel,neutral,neutral,0,0,1,1,"00:00:01,000","00:00:02,5"',
]


def write_meld(folder: Path, rows: list[str], split: str = "train", header: str = HEADER,
               encoding: str = "utf-8", dyadic: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}_sent_emo{'_dya' if dyadic else ''}.csv"
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return path


# the real release

def source_statement(meld: Path, suffix: str = "_sent_emo.csv") -> dict[str, tuple[int, dict[str, int]]]:
    """split -> (rows, emotion distribution) as written in SOURCE.md for the files ``{split}{suffix}``."""
    text = (meld / "SOURCE.md").read_text(encoding="utf-8")
    name = r"(\w+)" + re.escape(suffix)
    rows = {m[1]: int(m[2]) for m in re.finditer(rf"\| {name} \| \d+ \| (\d+) \|", text)}
    section = text.split("Emotion distribution:")[1].split("\n\n")[0]
    dists = {m[1]: {lab: int(n) for lab, n in re.findall(r"(\w+) (\d+)", m[2])}
             for m in re.finditer(rf"- {name}: (.+)", section)}
    assert set(rows) == set(dists) == {"train", "dev", "test"}, "SOURCE.md format changed"
    return {s: (rows[s], dists[s]) for s in rows}


@pytest.fixture(scope="module")
def real_meld():
    meld = Path(__file__).resolve().parents[2] / "shared" / "data" / "meld"
    if not meld.is_dir():
        pytest.skip(f"real MELD not available at {meld}")
    return meld, read_meld(meld, media_dir="/nonexistent/MELD.Raw")


def test_real_meld_matches_source_statement(real_meld):
    meld, corpus = real_meld
    stated = source_statement(meld)
    stats = corpus.stats()
    assert stats["labels"] == MELD_LABELS
    dialogues = {"train": 1038, "dev": 114, "test": 280}
    for split, (rows, dist) in stated.items():
        s = stats["splits"][split]
        assert s["utterances"] == rows
        assert s["conversations"] == dialogues[split]
        assert s["labels"] == {lab: dist[lab] for lab in MELD_LABELS}
        assert sum(s["dropped"].values()) == 0
    assert corpus.repaired["mojibake"] == 0  # our copy is clean UTF-8
    assert corpus.repaired.get("short_milliseconds") == 3  # 00:06:47,28 and two in test


def test_real_meld_ids_order_times_and_media(real_meld):
    _, corpus = real_meld
    for split in ("train", "dev", "test"):
        ids = [u.utterance_id for u in corpus.utterances(split)]
        assert len(set(ids)) == len(ids)
        for conv in corpus[split]:
            assert re.fullmatch(rf"{split}_dia\d+", conv.conversation_id)
            utt_numbers = [int(u.utterance_id.rsplit("utt", 1)[1]) for u in conv]
            assert utt_numbers == sorted(utt_numbers)
            assert all(u.utterance_id.startswith(conv.conversation_id + "_utt") for u in conv)
        dia_numbers = [int(c.conversation_id.rsplit("dia", 1)[1]) for c in corpus[split]]
        assert dia_numbers == sorted(dia_numbers)
    u = corpus["dev"][0].utterances[0]
    assert (u.utterance_id, u.speaker, u.emotion) == ("dev_dia0_utt0", "Phoebe", "sadness")
    assert u.text == "Oh my God, he\u2019s lost it. He\u2019s totally lost it."
    assert u.start == pytest.approx(20 * 60 + 57.256) and u.end == pytest.approx(21 * 60 + 0.049)
    assert u.meta == {"sr_no": 1, "sentiment": "negative", "season": 4, "episode": 7}
    assert u.video == u.audio == "/nonexistent/MELD.Raw/dev_splits_complete/dia0_utt0.mp4"
    assert corpus["train"][0].utterances[0].video.endswith("/train_splits/dia0_utt0.mp4")
    assert corpus["test"][0].utterances[0].video.endswith("/output_repeated_splits_test/dia0_utt0.mp4")


# the real dyadic variant

def test_real_meld_dyadic_matches_source_statement(shared_data):
    folder = shared_data / "meld_dyadic"
    stated = source_statement(folder, "_sent_emo_dya.csv")
    corpus = load_corpus("meld_dyadic", folder, media_dir="/nonexistent/MELD.Raw")
    stats = corpus.stats()
    assert stats["dataset"] == "meld_dyadic" and stats["labels"] == MELD_LABELS
    dialogues = {"train": 2160, "dev": 270, "test": 577}
    for split, (rows, dist) in stated.items():
        s = stats["splits"][split]
        assert s["utterances"] == rows
        assert s["labels"] == {lab: dist[lab] for lab in MELD_LABELS}
        assert s["conversations"] == dialogues[split]
        assert sum(s["dropped"].values()) == 0
        assert all(len(conv.speakers) == 2 for conv in corpus[split])  # dyadic
    assert corpus.repaired == {"mojibake": 0, "short_milliseconds": 4}
    u = corpus["dev"][2].utterances[0]  # the re-grouped utterance keeps its original clip
    assert (u.utterance_id, u.speaker, u.text) == ("dev_dia2_utt0", "Chandler", "You\u2019re a genius!")
    assert (u.meta["old_dialogue_id"], u.meta["old_utterance_id"]) == (1, 1)
    assert u.video == u.audio == "/nonexistent/MELD.Raw/dev_splits_complete/dia1_utt1.mp4"


# small files written here

def test_small_csv_order_repairs_and_times(tmp_path):
    write_meld(tmp_path, ROWS)
    corpus = load_corpus("meld", tmp_path, splits=("train",))
    assert [c.conversation_id for c in corpus["train"]] == ["train_dia0", "train_dia1"]
    a, b = corpus["train"][0].utterances
    assert (a.utterance_id, b.utterance_id) == ("train_dia0_utt0", "train_dia0_utt1")
    assert a.text == "It\u2019s fine." and b.text == "He\u2019s here."
    assert b.speaker == "Monica"  # whitespace stripped
    assert (a.start, a.end, b.start) == (1.0, 2.5, 3.25)
    assert a.audio is None and a.video is None  # no media_dir
    assert corpus.repaired == {"mojibake": 2, "short_milliseconds": 1}


def test_cp1252_file_is_decoded_and_counted(tmp_path):
    write_meld(tmp_path, ['1,He\u2019s here \u2026,Joey,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"'],
               encoding="cp1252")
    corpus = read_meld(tmp_path, splits=("train",))
    assert corpus["train"][0].utterances[0].text == "He\u2019s here \u2026"
    assert corpus.repaired["cp1252_files"] == 1


def test_blank_rows_are_counted_not_silent(tmp_path):
    write_meld(tmp_path, [ROWS[0], "", ",,,,,,,,,,", ROWS[1]])
    corpus = read_meld(tmp_path, splits=("train",))
    assert sum(len(c) for c in corpus["train"]) == 2
    assert corpus.dropped["train"]["blank_row"] == 1  # the empty line is no record


def test_parse_time():
    assert parse_time("0:12:43,012") == (763.012, False)
    assert parse_time("01:00:00,5") == (3600.5, True)
    for bad in ("12:43,012", "00:61:00,000", "00:00:01", "a:00:01,000"):
        with pytest.raises(ValueError):
            parse_time(bad)


GOOD = '1,Hi.,Ross,joy,positive,0,0,1,1,"00:00:01,000","00:00:02,000"'
BAD_CASES = {
    "missing_column": (HEADER.replace(",Emotion", ""), [GOOD], 1, "Emotion"),
    "field_count": (HEADER, [GOOD, '2,Hey.,Ross,joy,positive,0,1,1,1,"00:00:03,000"'], 3, "10 fields"),
    "dialogue_id": (HEADER, [GOOD, '2,Hey.,Ross,joy,positive,x7,1,1,1,"00:00:03,000","00:00:04,000"'], 3, "'x7'"),
    "time_stamp": (HEADER, [GOOD, '2,Hey.,Ross,joy,positive,0,1,1,1,"00:00:03.000.1","00:00:04,000"'], 3,
                   "'00:00:03.000.1'"),
    "emotion": (HEADER, [GOOD, '2,Hey.,Ross,happy,positive,0,1,1,1,"00:00:03,000","00:00:04,000"'], 3, "'happy'"),
    "duplicate": (HEADER, [GOOD, '2,"multi\nline",Ross,joy,positive,0,1,1,1,"00:00:03,000","00:00:04,000"',
                           '3,Hey.,Ross,joy,positive,0,0,1,1,"00:00:05,000","00:00:06,000"'], 5, "train_dia0_utt0"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_names_file_line_and_value(tmp_path, case):
    header, rows, line, value = BAD_CASES[case]
    path = write_meld(tmp_path, rows, header=header)
    with pytest.raises(CorpusError) as e:
        read_meld(tmp_path, splits=("train",))
    msg = str(e.value)
    assert f"{path}:{line}:" in msg and value in msg and "expected" in msg


def test_missing_split_file(tmp_path):
    write_meld(tmp_path, [GOOD])
    with pytest.raises(CorpusError, match=r"dev_sent_emo\.csv: no such file"):
        read_meld(tmp_path)


# the dyadic variant, small files

HEADER_DYA = ("Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Old_Dialogue_ID,Old_Utterance_ID,"
              "Season,Episode,StartTime,EndTime")
ROWS_DYA = [  # dyadic dia1 re-uses old dia0_utt1; out of order
    '"Itâ€™s me.",Ross,joy,positive,1,0,0,1,2,5,"00:01:00,000","00:01:01,50"',
    'Hi.,Rachel,neutral,neutral,0,1,0,2,2,5,"00:00:03,000","00:00:04,000"',
    'Hey.,Monica,surprise,positive,0,0,7,3,2,5,"00:00:01,000","00:00:02,000"',
    'Yes?,Ross,joy,positive,1,1,0,1,2,5,"00:01:00,000","00:01:01,500"',
]


def test_dyadic_ids_meta_and_media_point_at_old_clips(tmp_path):
    write_meld(tmp_path, ROWS_DYA, split="dev", header=HEADER_DYA, dyadic=True)
    corpus = load_corpus("meld_dyadic", tmp_path, media_dir=tmp_path / "raw", splits=("dev",))
    assert corpus.name == "meld_dyadic" and list(corpus.splits) == ["dev"]
    assert [[u.utterance_id for u in c] for c in corpus["dev"]] == [
        ["dev_dia0_utt0", "dev_dia0_utt1"], ["dev_dia1_utt0", "dev_dia1_utt1"]]
    first, second = corpus["dev"][0].utterances
    assert first.meta == {"sentiment": "positive", "old_dialogue_id": 7, "old_utterance_id": 3,
                          "season": 2, "episode": 5}
    clips = tmp_path.resolve() / "raw" / "dev_splits_complete"
    assert first.video == first.audio == str(clips / "dia7_utt3.mp4")
    assert second.video == str(clips / "dia0_utt2.mp4")
    a, b = corpus["dev"][1].utterances  # two dyadic utterances may share one original clip
    assert a.video == b.video == str(clips / "dia0_utt1.mp4")
    assert a.text == "It\u2019s me." and (a.start, a.end) == (60.0, 61.5)
    assert corpus.repaired == {"mojibake": 1, "short_milliseconds": 1}


def test_dyadic_without_media_dir_and_read_meld_flag(tmp_path):
    write_meld(tmp_path, ROWS_DYA, header=HEADER_DYA, dyadic=True)
    corpus = read_meld(tmp_path, splits=("train",), dyadic=True)
    assert corpus.stats() == read_meld_dyadic(tmp_path, splits=("train",)).stats()
    assert all(u.video is None and u.audio is None for u in corpus.utterances("train"))


BAD_DYA = {
    "old_dialogue_id": (HEADER_DYA, [ROWS_DYA[0], 'Hi.,Ross,joy,positive,0,0,x3,0,2,5,"00:00:01,000","00:00:02,000"'],
                        3, "Old_Dialogue_ID is 'x3'"),
    "old_utterance_id": (HEADER_DYA, ['Hi.,Ross,joy,positive,0,0,3,-1,2,5,"00:00:01,000","00:00:02,000"'],
                         2, "Old_Utterance_ID is '-1'"),
    "missing_old_column": (HEADER_DYA.replace(",Old_Utterance_ID", ""),
                           ['Hi.,Ross,joy,positive,0,0,3,2,5,"00:00:01,000","00:00:02,000"'], 1, "Old_Utterance_ID"),
    "emotion": (HEADER_DYA, ['Hi.,Ross,happy,positive,0,0,3,0,2,5,"00:00:01,000","00:00:02,000"'], 2, "'happy'"),
    "time_stamp": (HEADER_DYA, ['Hi.,Ross,joy,positive,0,0,3,0,2,5,"1:00,000","00:00:02,000"'], 2, "'1:00,000'"),
    "duplicate": (HEADER_DYA, [ROWS_DYA[0], ROWS_DYA[0]], 3, "dev_dia1_utt0"),
}


@pytest.mark.parametrize("case", list(BAD_DYA))
def test_dyadic_bad_input_names_file_line_and_value(tmp_path, case):
    header, rows, line, value = BAD_DYA[case]
    path = write_meld(tmp_path, rows, split="dev", header=header, dyadic=True)
    with pytest.raises(CorpusError) as e:
        read_meld_dyadic(tmp_path, splits=("dev",))
    msg = str(e.value)
    assert f"{path}:{line}:" in msg and value in msg and "expected" in msg


def test_wrong_variant_points_at_the_other_dataset(tmp_path):
    write_meld(tmp_path, [GOOD])
    with pytest.raises(CorpusError, match=r"train_sent_emo_dya\.csv: no such file.*use dataset 'meld'"):
        load_corpus("meld_dyadic", tmp_path, splits=("train",))
    write_meld(tmp_path / "dya", ROWS_DYA, header=HEADER_DYA, dyadic=True)
    with pytest.raises(CorpusError, match=r"train_sent_emo\.csv: no such file.*use dataset 'meld_dyadic'"):
        load_corpus("meld", tmp_path / "dya", splits=("train",))
