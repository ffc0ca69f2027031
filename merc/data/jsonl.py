"""The generic corpus format (``--dataset jsonl``): a folder with train.jsonl (dev.jsonl, test.jsonl optional).

One conversation per line::

    {"conversation_id": "c1", "utterances": [
      {"utterance_id": "c1_u0", "speaker": "Ross", "text": "Hi.", "emotion": "joy",
       "start": 1.2, "end": 3.4, "audio": "clips/c1_u0.wav", "video": "clips/c1_u0.mp4", "meta": {}}]}

Required per utterance: utterance_id, speaker, text (a non-empty string, or "" for a non-verbal turn — a
laugh, a sigh — that has ``audio`` or ``video``: it is labelled from those where the run uses them, and has
no text feature); ``emotion`` may be null or absent (unlabelled). Media paths are relative to the folder
(absolute ones are kept). The label set is
``labels.json`` (a JSON list) when present, else the sorted set of train emotions — logged as a warning
that lists every class with its count, so a typo cannot create a class unnoticed; any other emotion is an
error. Conversation and utterance ids are unique across the corpus; files must be UTF-8.

:func:`read_jsonl_file` reads one such file on its own (``merc predict`` input), optionally filling absent
ids (``<file stem>_<line>`` and ``<conversation_id>_u<index>``).
"""
from __future__ import annotations

import difflib
import json
import logging
import os
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from merc.data.schema import SPLITS, Conversation, Corpus, CorpusError, Utterance
from merc.data.textio import read_lines
from merc.io import atomic_write_text

log = logging.getLogger(__name__)

REQUIRED = ("utterance_id", "speaker", "text")
OPTIONAL = ("emotion", "start", "end", "audio", "video", "meta")
_TYPES: dict[str, tuple[type, ...]] = {"utterance_id": (str,), "speaker": (str,), "text": (str,),
                                       "emotion": (str, type(None)), "start": (int, float, type(None)),
                                       "end": (int, float, type(None)), "audio": (str, type(None)),
                                       "video": (str, type(None)), "meta": (dict,)}
_JSON_TYPE = {str: "a string", int: "a number", float: "a number", type(None): "null", dict: "an object"}


# helpers

def _expected(types: tuple[type, ...]) -> str:
    return " or ".join(dict.fromkeys(_JSON_TYPE[t] for t in types))


def _parse_utterance(d: Any, where: str, k: int, folder: Path, default_id: str | None = None) -> Utterance:
    if not isinstance(d, dict):
        raise CorpusError(f"{where}: utterances[{k}] is {d!r}; expected an object")
    if default_id is not None and "utterance_id" not in d:
        d = {"utterance_id": default_id, **d}
    uid = d.get("utterance_id", f"#{k}")
    missing = [f for f in REQUIRED if f not in d]
    if missing:
        raise CorpusError(f"{where}: utterance {uid!r} (utterances[{k}]) lacks required field(s) {missing}; "
                          f"expected {list(REQUIRED)}")
    unknown = sorted(set(d) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise CorpusError(f"{where}: utterance {uid!r} has unknown field(s) {unknown}; "
                          f"expected some of {list(REQUIRED + OPTIONAL)} (put extras under \"meta\")")
    for f, v in d.items():
        if isinstance(v, bool) or not isinstance(v, _TYPES[f]):
            raise CorpusError(f"{where}: utterance {uid!r} field {f!r} is {v!r}; expected {_expected(_TYPES[f])}")
    if not d["text"].strip() and not (d.get("audio") or d.get("video")):
        raise CorpusError(f"{where}: utterance {uid!r} (utterances[{k}]) has empty text {d['text']!r} and no "
                          "audio or video; expected the words spoken (drop the utterance or transcribe it; a "
                          "non-verbal turn, a laugh or a sigh, needs its audio or video)")
    u = Utterance(**{f: d[f] for f in REQUIRED + OPTIONAL if f in d})
    u.start = None if u.start is None else float(u.start)
    u.end = None if u.end is None else float(u.end)
    u.audio = None if u.audio is None else os.path.abspath(folder / u.audio)
    u.video = None if u.video is None else os.path.abspath(folder / u.video)
    return u


def parse_line(line: str, where: str, split: str, folder: Path, *, default_id: str | None = None) -> Conversation:
    """One JSONL line -> Conversation; ``where`` is ``file:line`` for messages. With ``default_id``, an absent
    conversation_id becomes ``default_id`` and an absent utterance_id ``<conversation_id>_u<index>``."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{where}: not valid JSON ({e.msg} at column {e.colno}) in {line.strip()[:80]!r}; "
                          "expected one conversation object per line") from None
    if not isinstance(d, dict):
        raise CorpusError(f"{where}: got {line.strip()[:80]!r}; expected a conversation object")
    cid = d.get("conversation_id", default_id)
    if not isinstance(cid, str) or not cid:
        raise CorpusError(f"{where}: conversation_id is {cid!r}; expected a non-empty string")
    utts = d.get("utterances")
    if not isinstance(utts, list) or not utts:
        raise CorpusError(f"{where}: conversation {cid!r} has utterances {str(utts)[:60]!r}; expected a non-empty list")
    unknown = sorted(set(d) - {"conversation_id", "utterances", "split"})
    if unknown:
        raise CorpusError(f"{where}: conversation {cid!r} has unknown field(s) {unknown}; "
                          "expected conversation_id and utterances")
    if d.get("split", split) != split:
        raise CorpusError(f"{where}: conversation {cid!r} has split {d['split']!r} in {split}.jsonl; "
                          f"expected {split!r} or no split field")
    fill = default_id is not None
    return Conversation(cid, split, [_parse_utterance(u, where, k, folder, f"{cid}_u{k}" if fill else None)
                                     for k, u in enumerate(utts)])


def _read_labels(path: Path) -> list[str]:
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected a list of label strings") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels) \
            or len(set(labels)) != len(labels):
        raise CorpusError(f"{path}: got {labels!r}; expected a non-empty JSON list of distinct label strings")
    return labels


# reader / writers

def read_jsonl(folder: str | Path) -> Corpus:
    """Read a JSONL corpus folder (see the module docstring); raises CorpusError naming file and line."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / "train.jsonl").is_file():
        raise CorpusError(f"{folder / 'train.jsonl'}: no such file; expected a folder with train.jsonl "
                          "(dev.jsonl, test.jsonl optional)")
    splits: dict[str, list[Conversation]] = {}
    seen_conv: dict[str, str] = {}
    seen_utt: dict[str, str] = {}
    for split in SPLITS:
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            continue
        splits[split] = [c for _, _, c in iter_jsonl_file(path, split, folder, seen_conv=seen_conv,
                                                           seen_utt=seen_utt)]
    labels_path = folder / "labels.json"
    if labels_path.is_file():
        labels, source = _read_labels(labels_path), str(labels_path)
    else:
        labels = sorted({u.emotion for c in splits["train"] for u in c if u.emotion is not None})
        source = "the emotions of train.jsonl (add labels.json to fix the label set)"
        _warn_inferred_labels(folder, splits["train"], labels)
    allowed = set(labels)
    for convs in splits.values():
        for c in convs:
            for u in c:
                if u.emotion is not None and u.emotion not in allowed:
                    raise CorpusError(f"{seen_utt[u.utterance_id]}: utterance {u.utterance_id!r} has emotion "
                                      f"{u.emotion!r}; expected one of {labels} (from {source})")
    return Corpus(name="jsonl", splits=splits, labels=labels,
                  dropped={s: Counter() for s in splits}, repaired={}, root=str(folder))


def iter_jsonl_file(path: str | Path, split: str, folder: str | Path | None = None, *, fill_ids: bool = False,
                    seen_conv: dict[str, str] | None = None, seen_utt: dict[str, str] | None = None,
                    ) -> Iterator[tuple[str, dict[str, Any], Conversation]]:
    """``(where, raw object, Conversation)`` per non-blank line of one JSONL file, validated as in
    :func:`read_jsonl` (UTF-8, fields and types, non-empty text, ids unique — also against ``seen_conv`` /
    ``seen_utt`` when given). Media paths are relative to ``folder`` (default: the file's folder). With
    ``fill_ids``, absent ids are filled (see :func:`parse_line`)."""
    path = Path(path).expanduser().resolve()
    folder = path.parent if folder is None else Path(folder)
    seen_conv = {} if seen_conv is None else seen_conv
    seen_utt = {} if seen_utt is None else seen_utt
    for i, line in read_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        c = parse_line(line, where, split, folder, default_id=f"{path.stem}_{i}" if fill_ids else None)
        if c.conversation_id in seen_conv:
            raise CorpusError(f"{where}: duplicate conversation_id {c.conversation_id!r} "
                              f"(first at {seen_conv[c.conversation_id]}); expected unique ids")
        seen_conv[c.conversation_id] = where
        for u in c:
            if u.utterance_id in seen_utt:
                raise CorpusError(f"{where}: duplicate utterance_id {u.utterance_id!r} "
                                  f"(first at {seen_utt[u.utterance_id]}); expected unique ids")
            seen_utt[u.utterance_id] = where
        yield where, json.loads(line), c


def read_jsonl_file(path: str | Path, split: str = "predict", *, fill_ids: bool = True) -> list[Conversation]:
    """Every conversation of one JSONL file (labelled or not), validated as in :func:`read_jsonl`."""
    convs = [c for _, _, c in iter_jsonl_file(path, split, fill_ids=fill_ids)]
    if not convs:
        raise CorpusError(f"{path}: no conversations found; expected one conversation object per line")
    return convs


def _warn_inferred_labels(folder: Path, train: list[Conversation], labels: list[str]) -> None:
    """Without labels.json every train emotion is a class: say so, listing the classes with their counts,
    and point at rare ones and near-duplicates (``'anger'`` and ``'angr'``) — likely typos."""
    if not labels:
        return
    counts = Counter(u.emotion for c in train for u in c if u.emotion is not None)
    total = sum(counts.values())
    suspicious = []
    for lab in labels:
        twins = [o for o in difflib.get_close_matches(lab, labels, n=3, cutoff=0.75) if o != lab]
        twins += [o for o in labels if o != lab and o.lower() == lab.lower() and o not in twins]
        if twins and counts[lab] <= max(counts[o] for o in twins):
            suspicious.append(f"{lab!r} ({counts[lab]}) looks like {twins[0]!r} ({counts[twins[0]]})")
        elif total >= 100 and counts[lab] < 0.002 * total:
            suspicious.append(f"{lab!r} is rare ({counts[lab]} of {total})")
    listing = ", ".join(f"{lab} ({counts[lab]})" for lab in labels)
    msg = (f"{folder}: no labels.json, so every emotion in train.jsonl is a class: {len(labels)} classes: {listing}")
    if suspicious:
        msg += "; check for typos: " + "; ".join(suspicious)
    log.warning(msg + f". Write the intended list to {folder / 'labels.json'} to fix the label set.")


def _relative(path: str | None, folder: Path) -> str | None:
    """A media path relative to ``folder`` (posix style; ``../`` when it lies outside), as the format says: the
    folder moved together with its media still reads. Absolute when the two share no folder but the root
    (``/elsewhere/b.mp4``: a relative path would only climb to the root and break on any move)."""
    if path is None:
        return None
    p, base = os.path.abspath(path), os.path.abspath(folder)
    try:
        common = os.path.commonpath([p, base])
    except ValueError:  # another drive (Windows)
        return p
    if os.path.dirname(common) == common:  # only the filesystem root in common
        return p
    return os.path.relpath(p, base).replace(os.sep, "/")


def _utterance_dict(u: Utterance, folder: Path) -> dict:
    """Like ``Utterance.to_dict`` (empty meta left out) without its deep copy, media made relative."""
    d = {f.name: getattr(u, f.name) for f in fields(u)}
    d["audio"], d["video"] = _relative(u.audio, folder), _relative(u.video, folder)
    if not d["meta"]:
        d.pop("meta")
    return d


def write_jsonl(conversations: Iterable[Conversation], path: str | Path) -> Path:
    """Write conversations to one JSONL file atomically; media paths become relative to the file's folder."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for c in conversations:
        d = {"conversation_id": c.conversation_id, "utterances": [_utterance_dict(u, path.parent) for u in c]}
        lines.append(json.dumps(d, ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))
    return path


def write_corpus_jsonl(corpus: Corpus, folder: str | Path) -> Path:
    """Write every split of ``corpus`` as ``folder/{split}.jsonl`` plus ``folder/labels.json``."""
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for split, convs in corpus.splits.items():
        write_jsonl(convs, folder / f"{split}.jsonl")
    atomic_write_text(folder / "labels.json", json.dumps(list(corpus.labels), ensure_ascii=False) + "\n")
    return folder
