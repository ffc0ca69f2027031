"""Shared fixtures: the real data folder, espeak-ng for speech fixtures, and a fake IEMOCAP tree in the official
release layout."""
from __future__ import annotations

import shutil
import wave
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests use tiny models: a second intra-op thread only adds contention (several times slower on a
    shared 2-core machine)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# dialogue -> turns (turn name, start s, end s, raw label, text); EmoEvaluation order = list order
Turns = dict[str, list[tuple[str, float, float, str, str]]]

DEFAULT_IEMOCAP: Turns = {
    "Ses01F_impro01": [("Ses01F_impro01_F000", 6.2901, 8.2357, "neu", "Excuse me."),
                       ("Ses01F_impro01_M000", 8.5, 10.25, "fru", "Do you have your forms?"),
                       ("Ses01F_impro01_F001", 10.5, 12.0, "xxx", "Yeah.")],
    "Ses02M_script01_1": [("Ses02M_script01_1_M000", 1.0, 2.5, "exc", "Guess what!"),
                          ("Ses02M_script01_1_F000", 2.75, 4.0, "hap", "What?")],
    "Ses03F_impro02": [("Ses03F_impro02_F000", 0.5, 1.5, "sad", "I lost it."),
                       ("Ses03F_impro02_M000", 1.75, 3.0, "ang", "How could you?")],
    "Ses04M_impro03": [("Ses04M_impro03_M000", 0.25, 1.0, "neu", "Hi."),
                       ("Ses04M_impro03_F000", 1.25, 2.0, "sur", "Oh!")],
    "Ses05F_impro01": [("Ses05F_impro01_F000", 2.0, 3.5, "ang", "Stop it."),
                       ("Ses05F_impro01_M000", 3.75, 5.0, "fru", "Fine.")],
}


def write_wav(path: Path, seconds: float = 0.05, rate: int = 16000) -> None:
    """A silent 16-bit mono wav (the stdlib ``wave`` module)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))


def build_iemocap(root: Path, dialogues: Turns) -> Path:
    """Write ``dialogues`` as an IEMOCAP tree (EmoEvaluation, transcriptions, wavs) under ``root``."""
    for dialog, turns in dialogues.items():
        session = root / f"Session{int(dialog[3:5])}"
        ev = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        tr = []
        for k, (turn, start, end, label, text) in enumerate(turns):
            vad = (1.5 + k, 2.0 + k, 2.5 + k)
            ev += [f"[{start:.4f} - {end:.4f}]\t{turn}\t{label}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]",
                   "C-E2:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
            tr.append(f"{turn} [{start:08.4f}-{end:08.4f}]: {text}")
            write_wav(session / "sentences" / "wav" / dialog / f"{turn}.wav")
        tr.append("M_noise [000.0000-000.5000]: [BREATHING]")
        for sub, lines in (("EmoEvaluation", ev), ("transcriptions", tr)):
            path = session / "dialog" / sub / f"{dialog}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        # the release's sub-folders of EmoEvaluation must not be read as dialogues
        (session / "dialog" / "EmoEvaluation" / "Categorical").mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def espeak() -> str:
    """Path of espeak-ng, which speaks the media fixtures; the test skips, saying so, when it is missing."""
    path = shutil.which("espeak-ng")
    if path is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng); it synthesizes the fixture's speech")
    return path


@pytest.fixture
def clips(tmp_path, espeak, monkeypatch) -> Path:
    """tests/media_doubles.py's folder of espeak clips (good, silent, audio-only, corrupt); MERC_CACHE in tmp_path."""
    from media_doubles import build_clips
    monkeypatch.setenv("MERC_CACHE", str(tmp_path / "cache"))
    return build_clips(tmp_path)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data next to the repository root (real corpora, read-only)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} does not exist")
    return SHARED_DATA


@pytest.fixture
def make_iemocap(tmp_path: Path) -> Callable[[Turns], Path]:
    """Factory: ``make_iemocap(dialogues)`` -> root of a fresh fake IEMOCAP tree."""
    counter = iter(range(1000))

    def make(dialogues: Turns = DEFAULT_IEMOCAP) -> Path:
        return build_iemocap(tmp_path / f"iemocap{next(counter)}", dialogues)
    return make
