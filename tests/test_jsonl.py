"""JSONL format: round trips, relative media paths, atomic writes, and errors naming file and line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from merc.data import Conversation, Corpus, CorpusError, Utterance, load_corpus
from merc.data.jsonl import read_jsonl, write_corpus_jsonl, write_jsonl
from merc.data.meld import read_meld


def sample(folder: Path) -> Corpus:
    inside, outside = str(folder / "clips" / "a.wav"), "/elsewhere/b.mp4"
    train = [Conversation("c1", "train", [
                 Utterance("c1_u0", "Ross", "Hi — “there”.", "joy", 1.25, 3.5, inside, outside,
                           {"season": 1, "vad": [2.5, 3.0, 1.0]}),
                 Utterance("c1_u1", "Rachel", "Hey.", None)]),
             Conversation("c2", "train", [Utterance("c2_u0", "Joey", "How you doin'?", "neutral", 0.0, 1.0)])]
    test = [Conversation("t1", "test", [Utterance("t1_u0", "Ross", "Bye.", "joy", video=inside)])]
    return Corpus("jsonl", {"train": train, "test": test}, ["joy", "neutral"])


def test_round_trip_is_identical_and_media_relative(tmp_path):
    corpus = sample(tmp_path / "out")
    folder = write_corpus_jsonl(corpus, tmp_path / "out")
    back = read_jsonl(folder)
    assert back.splits == corpus.splits  # dataclass equality, order included
    assert back.labels == ["joy", "neutral"] and set(back.splits) == {"train", "test"}
    first = json.loads((folder / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["utterances"][0]["audio"] == "clips/a.wav"
    assert first["utterances"][0]["video"] == "/elsewhere/b.mp4"
    assert first["utterances"][1]["emotion"] is None
    assert sorted(p.name for p in folder.iterdir()) == ["labels.json", "test.jsonl", "train.jsonl"]  # no tmp left


def test_round_trip_real_meld(shared_data, tmp_path):
    corpus = read_meld(shared_data / "meld", media_dir=tmp_path / "out" / "media", splits=("train", "dev"))
    back = load_corpus("jsonl", write_corpus_jsonl(corpus, tmp_path / "out"))
    assert back.splits == corpus.splits
    assert back.labels == corpus.labels
    line = (tmp_path / "out" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert '"audio": "media/dev_splits_complete/dia0_utt0.mp4"' in line and "he’s" in line


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(sample(tmp_path)["train"], path)
    before = path.read_bytes()
    bad = [Conversation("x", "train", [Utterance("x0", "A", "t", meta={"obj": object()})])]
    with pytest.raises(TypeError):
        write_jsonl(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def write_lines(folder: Path, name: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / name


def conv(cid: str, emotion: str | None = "joy", **extra) -> str:
    return json.dumps({"conversation_id": cid, "utterances": [
        {"utterance_id": f"{cid}_u0", "speaker": "A", "text": "Hi.", "emotion": emotion, **extra}]})


def test_labels_unlabelled_and_relative_paths(tmp_path):
    write_lines(tmp_path, "train.jsonl", [conv("c2", "sad"), "", conv("c1", None, audio="a/x.wav")])
    corpus = read_jsonl(tmp_path)
    assert corpus.labels == ["sad"]  # sorted set of train emotions
    assert [c.conversation_id for c in corpus["train"]] == ["c2", "c1"]  # file order kept
    assert corpus["train"][1].utterances[0].audio == str(tmp_path.resolve() / "a" / "x.wav")
    assert corpus.stats()["splits"]["train"]["unlabelled"] == 1
    write_lines(tmp_path, "labels.json", ['["sad", "joy"]'])
    assert read_jsonl(tmp_path).labels == ["sad", "joy"]


BAD = {  # case -> (file, lines, line number and value the message must name)
    "broken_json": ("train.jsonl", [conv("c1"), '{"conversation_id": "c2", "utterances": [}'], 2, "c2"),
    "missing_field": ("train.jsonl", [conv("c1"), json.dumps({"conversation_id": "c2", "utterances": [
        {"utterance_id": "c2_u0", "text": "Hi."}]})], 2, "speaker"),
    "unknown_field": ("train.jsonl", [conv("c1", emotions="joy")], 1, "emotions"),
    "bad_type": ("train.jsonl", [conv("c1", start="1.5")], 1, "'1.5'"),
    "duplicate_utterance": ("train.jsonl", [conv("c1"), conv("c2"), json.dumps({
        "conversation_id": "c3", "utterances": [{"utterance_id": "c1_u0", "speaker": "A", "text": "x"}]})],
        3, "c1_u0"),
    "emotion_not_in_train": ("dev.jsonl", [conv("d1"), conv("d2", "angry")], 2, "'angry'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_line_and_value(tmp_path, case):
    name, lines, line, value = BAD[case]
    if name != "train.jsonl":
        write_lines(tmp_path, "train.jsonl", [conv("c1")])
    path = write_lines(tmp_path, name, lines)
    with pytest.raises(CorpusError) as e:
        read_jsonl(tmp_path)
    msg = str(e.value)
    assert f"{path.resolve()}:{line}:" in msg and value in msg and "expected" in msg


def test_emotion_outside_labels_json(tmp_path):
    path = write_lines(tmp_path, "train.jsonl", [conv("c1"), conv("c2", "fear")])
    write_lines(tmp_path, "labels.json", ['["joy", "sad"]'])
    with pytest.raises(CorpusError, match=rf"{path.resolve()}:2: .*'fear'.*labels\.json"):
        read_jsonl(tmp_path)


def test_missing_train_file(tmp_path):
    write_lines(tmp_path, "dev.jsonl", [conv("c1")])
    with pytest.raises(CorpusError, match=r"train\.jsonl: no such file"):
        read_jsonl(tmp_path)
