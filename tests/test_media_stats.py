"""``merc data stats --media-dir`` counts each split's media: present, missing, undecodable, without an audio
stream, as the fixture's ground truth says (a MELD-layout corpus of espeak clips with one fault of each kind)."""
from __future__ import annotations

import json

import pytest

from merc.cli import main

FAULTS = {"missing": 1, "corrupt": 1, "no_audio": 1}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    import shutil
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng); it voices the fixture")
    from merc.testing.synth import build_corpus_fixture
    root = tmp_path_factory.mktemp("media_stats")
    return build_corpus_fixture(root / "corpus", layout="meld", n_dialogues=3, utts_per_dialogue=3,
                                faults=FAULTS, seed=1, fps=2, cache_dir=root / "tts")


def test_stats_count_media_per_split(fixture, capsys):
    capsys.readouterr()
    assert main(["data", "stats", "--dataset", "meld", "--data-dir", str(fixture.data_dir), "--media-dir",
                 str(fixture.media_dir), "--json"]) == 0
    media = json.loads(capsys.readouterr().out)["media"]
    kind = {"missing": "missing", "corrupt": "undecodable", "no_audio": "no_audio_stream"}
    for split, counts in media.items():
        uids = [u for u, fu in fixture.utterances.items() if fu.split == split]
        faults = [fixture.faults.get(u) for u in uids]
        assert counts["utterances"] == len(uids)
        for fault, key in kind.items():
            assert counts[key] == faults.count(fault), (split, key, counts)
            want = [u for u in uids if fixture.faults.get(u) == fault]
            assert counts["examples"].get(key, []) == want
        assert counts["present"] == len(uids) - faults.count("missing") - faults.count("corrupt")
        assert counts["no_media"] == 0 and counts["no_video_stream"] == 0
    assert sum(c[k] for c in media.values() for k in kind.values()) == 3  # every fault found once
    # the table says it too, with the ids
    assert main(["--quiet", "data", "stats", "--dataset", "meld", "--data-dir", str(fixture.data_dir),
                 "--media-dir", str(fixture.media_dir)]) == 0
    out = capsys.readouterr().out
    assert "media (probed: file present and opens, its streams)" in out
    missing = next(u for u, f in fixture.faults.items() if f == "missing")
    assert f"{fixture.utterances[missing].split} missing: {missing}" in out
    # without --media-dir nothing is probed
    assert main(["data", "stats", "--dataset", "meld", "--data-dir", str(fixture.data_dir), "--json"]) == 0
    assert "media" not in json.loads(capsys.readouterr().out)
