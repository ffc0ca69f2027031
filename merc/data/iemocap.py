"""IEMOCAP reader (official release layout) -> :class:`~merc.data.schema.Corpus`.

Layout under ``root``::

    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt
                                                        [6.2901 - 8.2357]\\tSes01F_impro01_F000\\tneu\\t[2.5, 2.5, 2.5]
    Session{n}/dialog/transcriptions/<dialog>.txt       Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
    Session{n}/sentences/wav/<dialog>/<turn>.wav        one wav per turn
    Session{n}/dialog/avi/DivX/<dialog>.avi             one video per *dialogue* (cut it with start/end)

Utterance id = turn name, conversation id = dialogue name, speaker = session + gender of the turn
(``Ses01_F``), turns ordered by start time. Labels outside the class set (xxx, oth, sur, fea, dis, and
fru in the 4-class variant) are dropped and counted as ``label:<raw>``. Split: session 5 is test; a
seeded, deterministic ``dev_fraction`` of the session 1-4 dialogues is dev, the rest train.
``meta`` keeps ``session``, ``raw_label``, ``valence``, ``arousal``, ``dominance`` and
``video_scope="dialogue"`` (the avi holds the whole dialogue).
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from merc.data.labels import iemocap_label_map, iemocap_labels
from merc.data.schema import SPLITS, Conversation, Corpus, CorpusError, Utterance
from merc.errors import ConfigError

SESSIONS = tuple(f"Session{i}" for i in range(1, 6))
_EVAL = re.compile(r"\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*")
_TRANS = re.compile(r"(\S+)\s+\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]:\s?(.*)")
_TURN = re.compile(r"(Ses\d\d)[FM]_.+_([FM])[^_]*")


@dataclass
class Turn:
    name: str
    start: float
    end: float
    label: str
    vad: tuple[float, float, float]
    line: int


# helpers

def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not valid UTF-8 at byte {e.start}; expected an IEMOCAP text file") from None


def read_evaluation(path: Path) -> list[Turn]:
    """The turn lines of an EmoEvaluation file (headers and ``C-E1:``-style annotator lines are skipped)."""
    turns: list[Turn] = []
    for i, line in enumerate(_read_lines(path), 1):
        if not line.startswith("["):
            continue
        m = _EVAL.fullmatch(line.strip())
        if not m:
            raise CorpusError(f"{path}:{i}: cannot parse {line!r}; expected "
                              "'[start - end]<TAB>turn<TAB>label<TAB>[V, A, D]'")
        start, end, name, label, vad = m.groups()
        try:
            v, a, d = (float(x) for x in vad.split(","))
            turns.append(Turn(name, float(start), float(end), label, (v, a, d), i))
        except ValueError:
            raise CorpusError(f"{path}:{i}: bad numbers in {line!r}; "
                              "expected seconds and three V, A, D values") from None
    return turns


def read_transcription(path: Path) -> dict[str, str]:
    """turn name -> text; lines that are not ``turn [start-end]: text`` (noises, blanks) are skipped."""
    out: dict[str, str] = {}
    for line in _read_lines(path):
        m = _TRANS.fullmatch(line.strip())
        if m:
            out[m.group(1)] = m.group(4).strip()
    return out


def speaker_of(turn: str) -> str:
    """``Ses01F_impro01_M013`` -> ``Ses01_M`` (the gender letter starts the last ``_`` part)."""
    m = _TURN.fullmatch(turn)
    if not m:
        raise ValueError(turn)
    return f"{m.group(1)}_{m.group(2)}"


def assign_splits(dialogues: list[str], dev_fraction: float, seed: int) -> dict[str, str]:
    """dialogue -> split: Ses05* is test; a seeded fraction of the others (sorted, then shuffled) is dev."""
    if not 0.0 <= dev_fraction < 1.0:
        raise ConfigError(f"dev_fraction must be in [0, 1), got {dev_fraction!r}")
    pool = sorted(d for d in dialogues if not d.startswith("Ses05"))
    random.Random(seed).shuffle(pool)
    n_dev = round(dev_fraction * len(pool))
    if dev_fraction > 0 and len(pool) > 1:
        n_dev = max(1, n_dev)
    dev = set(pool[:n_dev])
    return {d: "test" if d.startswith("Ses05") else "dev" if d in dev else "train" for d in dialogues}


# reader

def read_iemocap(root: str | Path, classes: int = 6, dev_fraction: float = 0.1, seed: int = 0) -> Corpus:
    """Read IEMOCAP from ``root`` (holding Session1..Session5) with the 6- or 4-class label set."""
    root = Path(root).expanduser().resolve()
    label_map = iemocap_label_map(classes)
    sessions = [root / s for s in SESSIONS if (root / s).is_dir()]
    if not sessions:
        raise CorpusError(f"{root}: no Session1..Session5 folders; expected the IEMOCAP release root "
                          "(Session{n}/dialog/EmoEvaluation/*.txt)")
    dialogues: dict[str, tuple[Path, list[Turn]]] = {}
    for session in sessions:
        eval_dir = session / "dialog" / "EmoEvaluation"
        files = sorted(p for p in eval_dir.glob("*.txt") if not p.name.startswith("."))
        if not files:
            raise CorpusError(f"{eval_dir}: no EmoEvaluation .txt files; expected one per dialogue")
        for path in files:
            dialogues[path.stem] = (session, read_evaluation(path))

    split_of = assign_splits(list(dialogues), dev_fraction, seed)
    dropped: dict[str, Counter] = {s: Counter() for s in SPLITS}
    convs: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
    seen: dict[str, str] = {}
    for dialog in sorted(dialogues):
        session, turns = dialogues[dialog]
        split = split_of[dialog]
        eval_path = session / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        trans_path = session / "dialog" / "transcriptions" / f"{dialog}.txt"
        if not trans_path.is_file():
            raise CorpusError(f"{trans_path}: no such file; expected the transcription of dialogue {dialog}")
        texts = read_transcription(trans_path)
        video = str(session / "dialog" / "avi" / "DivX" / f"{dialog}.avi")
        utts: list[Utterance] = []
        for t in turns:
            where = f"{eval_path}:{t.line}"
            if not t.name.startswith(dialog + "_"):
                raise CorpusError(f"{where}: turn {t.name!r} does not belong to dialogue {dialog!r}; "
                                  f"expected a name starting with '{dialog}_'")
            if t.name in seen:
                raise CorpusError(f"{where}: duplicate turn {t.name!r} (first in {seen[t.name]}); expected unique "
                                  "turns")
            seen[t.name] = where
            try:
                speaker = speaker_of(t.name)
            except ValueError:
                raise CorpusError(f"{where}: cannot read session and gender from turn {t.name!r}; "
                                  "expected a name like Ses01F_impro01_F000") from None
            if t.label not in label_map:
                dropped[split][f"label:{t.label}"] += 1
                continue
            if t.name not in texts:
                dropped[split]["no_transcription"] += 1
                continue
            utts.append(Utterance(
                utterance_id=t.name, speaker=speaker, text=texts[t.name], emotion=label_map[t.label],
                start=t.start, end=t.end,
                audio=str(session / "sentences" / "wav" / dialog / f"{t.name}.wav"), video=video,
                meta={"session": int(session.name[-1]), "raw_label": t.label, "valence": t.vad[0],
                      "arousal": t.vad[1], "dominance": t.vad[2], "video_scope": "dialogue"}))
        if not utts:
            dropped[split]["empty_conversation"] += 1
            continue
        utts.sort(key=lambda u: (u.start, u.utterance_id))
        convs[split].append(Conversation(dialog, split, utts))
    return Corpus(name="iemocap", splits=convs, labels=iemocap_labels(classes),
                  dropped={s: c for s, c in dropped.items()}, repaired={}, root=str(root))
