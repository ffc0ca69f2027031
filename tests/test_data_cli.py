"""``merc data stats`` run in-process through merc.cli.main."""
from __future__ import annotations

import json

import pytest
from test_iemocap import TREE
from test_meld import GOOD, HEADER_DYA, ROWS_DYA, write_meld

import merc.cli
from merc.data import load_corpus


@pytest.fixture(autouse=True)
def only_data_command(monkeypatch):
    """Register only ``merc data`` so these tests do not depend on the other sub-commands' modules."""
    monkeypatch.setattr(merc.cli, "COMMANDS", {"data": "merc.data.cli"})


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = merc.cli.main(["data", "stats", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl_folder(folder, bad: bool = False):
    folder.mkdir()
    conv = lambda cid, emo: json.dumps({"conversation_id": cid, "utterances": [  # noqa: E731
        {"utterance_id": f"{cid}_u{k}", "speaker": spk, "text": "Hi.", "emotion": emo}
        for k, spk in enumerate(["Ann", "Bob", "Ann"])]})
    (folder / "train.jsonl").write_text(conv("c1", "joy") + "\n" + conv("c2", "sad") + "\n")
    (folder / "test.jsonl").write_text(conv("t1", "joy") + "\n" + ("{oops\n" if bad else ""))
    return folder


def test_table_and_json(tmp_path, capsys):
    folder = write_jsonl_folder(tmp_path / "corpus")
    code, out, _ = run(capsys, "--dataset", "jsonl", "--data-dir", str(folder))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("dataset: jsonl") and "joy, sad" in lines[0]
    assert lines[3].split() == ["train", "2", "6", "2", "0"]
    assert lines[4].split() == ["test", "1", "3", "2", "0"]
    assert "sad" in out and "3 (50.0%)" in out and "3 (100.0%)" in out
    code, out, _ = run(capsys, "--dataset", "jsonl", "--data-dir", str(folder), "--json")
    assert code == 0 and json.loads(out) == load_corpus("jsonl", folder).stats()


def test_iemocap_classes_flag_and_dropped_section(make_iemocap, capsys):
    root = make_iemocap(TREE)
    code, out, _ = run(capsys, "--dataset", "iemocap", "--data-dir", str(root), "--iemocap-classes", "4", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["labels"] == ["neu", "hap", "sad", "ang"]
    assert stats["splits"]["test"]["dropped"] == {"label:fru": 1, "label:dis": 1}
    code, out, _ = run(capsys, "--dataset", "iemocap", "--data-dir", str(root))
    dropped = out.split("\ndropped\n")[1].split("\nrepaired\n")[0].splitlines()
    assert ["test", "label:dis", "1"] in [line.split() for line in dropped]


def test_real_meld_table(shared_data, capsys):
    code, out, _ = run(capsys, "--dataset", "meld", "--data-dir", str(shared_data / "meld"))
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["train"][1:3] == ["1038", "9989"] and rows["dev"][1:3] == ["114", "1109"]
    assert rows["test"][1:3] == ["280", "2610"]
    assert rows["neutral"][1:] == ["4710", "(47.2%)", "470", "(42.4%)", "1256", "(48.1%)"]


def test_bad_file_exits_2_with_one_line(tmp_path, capsys):
    folder = write_jsonl_folder(tmp_path / "corpus", bad=True)
    code, out, err = run(capsys, "--dataset", "jsonl", "--data-dir", str(folder))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("merc data: error: ") and f"{folder / 'test.jsonl'}:2:" in err


def test_media_dir_rejected_for_iemocap_and_bad_dataset(make_iemocap, capsys):
    code, _, err = run(capsys, "--dataset", "iemocap", "--data-dir", str(make_iemocap(TREE)), "--media-dir", "/x")
    assert code == 2 and "meld and meld_dyadic only" in err
    with pytest.raises(SystemExit) as e:
        merc.cli.main(["data", "stats", "--dataset", "nope", "--data-dir", "x"])
    assert e.value.code == 2
    with pytest.raises(ValueError, match=r"choose one of \['meld', 'meld_dyadic', 'iemocap', 'jsonl'\]"):
        load_corpus("nope", "x")


# --split

def split_rows(out: str) -> list[str]:
    """The split names in the first table of ``format_stats`` output."""
    return [line.split()[0] for line in out.split("\n\n")[1].splitlines()[1:]]


def test_split_restricts_table_and_json(tmp_path, capsys):
    folder = write_jsonl_folder(tmp_path / "corpus")
    code, out, _ = run(capsys, "--dataset", "jsonl", "--data-dir", str(folder), "--split", "test")
    assert code == 0 and split_rows(out) == ["test"]
    label_header = out.split("label distribution\n")[1].splitlines()[0].split()
    assert label_header == ["label", "test"] and "3 (100.0%)" in out
    full = load_corpus("jsonl", folder).stats()
    for argv in (["--split", "test"], ["--split", " test ,test"]):
        code, out, _ = run(capsys, "--dataset", "jsonl", "--data-dir", str(folder), "--json", *argv)
        assert code == 0 and json.loads(out) == {**full, "splits": {"test": full["splits"]["test"]}}
    for argv in (["--split", "test,train"], ["--split", "test", "--split", "train"]):
        code, out, _ = run(capsys, "--dataset", "jsonl", "--data-dir", str(folder), "--json", *argv)
        assert code == 0 and json.loads(out) == full  # both splits, in corpus order


def test_unknown_split_is_one_line_naming_available_splits(tmp_path, capsys):
    folder = write_jsonl_folder(tmp_path / "corpus")
    code, out, err = run(capsys, "--dataset", "jsonl", "--data-dir", str(folder), "--split", "train,dev")
    errors = [line for line in err.strip().splitlines() if not line.startswith("merc: warning: ")]
    assert code == 2 and out == "" and len(errors) == 1  # warnings (labels inferred from train) aside: one line
    assert errors[0].startswith("merc data: error: ") and "['dev']" in err and "['train', 'test']" in err
    code, out, err = run(capsys, "--dataset", "jsonl", "--data-dir", str(folder), "--split", ",")
    assert code == 2 and out == "" and "no split named" in err


def test_meld_split_reads_only_the_files_asked_for(tmp_path, capsys):
    write_meld(tmp_path, [GOOD])  # train only: the full corpus would fail on dev
    code, out, _ = run(capsys, "--dataset", "meld", "--data-dir", str(tmp_path), "--split", "train", "--json")
    assert code == 0 and list(json.loads(out)["splits"]) == ["train"]
    code, out, err = run(capsys, "--dataset", "meld", "--data-dir", str(tmp_path), "--split", "valid")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "['valid']" in err and "['train', 'dev', 'test']" in err


def test_meld_dyadic_with_media_dir(tmp_path, capsys):
    write_meld(tmp_path, ROWS_DYA, split="dev", header=HEADER_DYA, dyadic=True)
    code, out, _ = run(capsys, "--dataset", "meld_dyadic", "--data-dir", str(tmp_path), "--media-dir",
                       str(tmp_path / "raw"), "--split", "dev")
    assert code == 0 and out.startswith("dataset: meld_dyadic") and split_rows(out) == ["dev"]
    assert ["mojibake", "1"] in [line.split() for line in out.split("\nrepaired\n")[1].splitlines()]


def test_real_meld_dyadic_table_with_split(shared_data, capsys):
    code, out, _ = run(capsys, "--dataset", "meld_dyadic", "--data-dir", str(shared_data / "meld_dyadic"),
                       "--split", "dev,test")
    assert code == 0 and split_rows(out) == ["dev", "test"]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["dev"][1:3] == ["270", "1462"] and rows["test"][1:3] == ["577", "3400"]
    assert rows["neutral"][1:] == ["600", "(41.0%)", "1615", "(47.5%)"]
