"""Prediction on new conversations: read them through merc's validating readers, encode and run the model in
bounded batches, show a table or JSON lines, write a predictions file and an emotion timeline per conversation.

Input formats:
- ``.jsonl``: one conversation per line, as in the generic corpus format (``merc.data.jsonl``), read by the
  same validating reader: ``{"conversation_id": ..., "utterances": [{"speaker", "text", ...}]}``. Ids may be
  absent here (``<file stem>_<line>``, ``<conversation_id>_u<i>`` are used); duplicate ids, empty or null text,
  unknown fields and non-UTF-8 bytes are errors naming file and line. ``emotion`` (gold) is optional; media
  fields (audio, video, start, end) are kept.
- ``.txt``: ``Speaker: text`` per line, a blank line between conversations.
- a recording (``.mp4``, ``.wav``, … :data:`merc.data.transcript.MEDIA_SUFFIXES`) with ``transcript=``
  (``--transcript talk.srt`` or JSON segments, :mod:`merc.data.transcript`): one conversation whose utterances
  are time segments of the recording.

Media: a run trained with audio or faces extracts them on the fly with the encoders it recorded (JSONL
``audio``/``video`` paths are relative to the JSONL's folder). An utterance whose clip is missing, corrupt or
faceless is still labelled from what it has; each output utterance then lists the ``modalities`` it had, and
the timeline marks them.

Output per utterance (``--json`` on stdout, ``--output FILE.jsonl``): the utterance's original fields (the
input's ``emotion`` untouched), ``gold`` (the input's emotion, when present), ``predicted`` and
``probabilities``. Probabilities are checked finite: a model that yields NaN is an error, never a printed
number. ``--output`` is appended one conversation at a time (flushed), so an interrupted run leaves a valid
file; rerunning with the same ``--output`` skips the conversations already in it.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

import numpy as np

from merc.data.schema import Conversation, CorpusError, Utterance
from merc.errors import IncompatibleRunError, InputError, MissingFileError, OutputExistsError
from merc.training.absence import MEDIA_OF, has_media

log = logging.getLogger(__name__)

BATCH_UTTERANCES = 1024  # encode and run at most this many utterances at a time (whole conversations)


@dataclass
class PredictInput:
    """Conversations to label, and for each the original JSON object (ids filled in) to echo in the output."""
    conversations: list[Conversation]
    raw: list[dict[str, Any]]


# reading

def read_input(path: str | Path, transcript: str | Path | None = None, *, recording=None,
               save_transcript: str | Path | None = None, progress: bool = False) -> PredictInput:
    """``recording``: the :class:`merc.recording.pipeline.RecordingConfig` that derives the transcript of a
    recording given without one (``save_transcript``: where to write it)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file")
    from merc.data.transcript import MEDIA_SUFFIXES, media_conversation
    if transcript is not None:
        conv, raw = media_conversation(path, transcript)
        check_recording(path, conv, transcript)
        return PredictInput([conv], [raw])
    if path.suffix.lower() in MEDIA_SUFFIXES:  # no transcript: derive one (VAD, Whisper, speaker clustering)
        from merc.recording.conversation import derive_conversation
        conv, raw = derive_conversation(path, recording, save_transcript=save_transcript, progress=progress)
        return PredictInput([conv], [raw])
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if path.suffix == ".txt":
        return _read_txt(path)
    raise InputError(f"{path}: unknown input format {path.suffix!r}; expected .jsonl, .txt, or a recording "
                     "with --transcript")


def check_recording(path: Path, conv: Conversation, transcript: str | Path) -> None:
    """A recording that cannot be opened, or a transcript segment that starts after the recording ends, is an
    error (never a conversation labelled from text alone): MediaError / InputError naming the file or segment."""
    from merc.media.decode import probe
    info = probe(path)  # MediaError: missing, empty, not decodable, no audio or video stream
    if not info.has_video:  # an audio-only recording: no faces, said once (input_absence_warnings), not per segment
        for u in conv:
            u.video = None
    for k, u in enumerate(conv):
        if u.start is not None and u.start >= info.duration:
            raise InputError(f"{transcript}: segment {k} ({u.utterance_id}, {u.start:g}-{u.end:g} s) starts after "
                             f"the end of the recording {path} ({info.duration:.2f} s); is it the transcript of "
                             "another recording?")


def read_conversations(path: str | Path) -> list[Conversation]:
    return read_input(path).conversations


def _read_jsonl(path: Path) -> PredictInput:
    from merc.data.jsonl import iter_jsonl_file
    convs, raws = [], []
    for _, raw, conv in iter_jsonl_file(path, "predict", fill_ids=True):
        raw = {"conversation_id": conv.conversation_id, **raw}
        raw["utterances"] = [{"utterance_id": u.utterance_id, **r}
                             for u, r in zip(conv, raw["utterances"], strict=True)]
        convs.append(conv)
        raws.append(raw)
    if not convs:
        raise CorpusError(f"{path}: no conversations found; expected one conversation object per line")
    return PredictInput(convs, raws)


def _read_txt(path: Path) -> PredictInput:
    from merc.data.textio import read_lines
    convs: list[Conversation] = []
    current: list[Utterance] = []

    def close():
        if current:
            cid = f"{path.stem}_{len(convs)}"
            for i, u in enumerate(current):
                u.utterance_id = f"{cid}_u{i}"
            convs.append(Conversation(cid, "predict", list(current)))
            current.clear()

    for n, line in read_lines(path):
        if not line.strip():
            close()
            continue
        speaker, sep, text = line.partition(":")
        if not sep or not speaker.strip():
            raise CorpusError(f"{path}:{n}: expected 'Speaker: text', got {line[:80]!r}")
        if not text.strip():
            raise CorpusError(f"{path}:{n}: speaker {speaker.strip()!r} has empty text; expected 'Speaker: text'")
        current.append(Utterance("", speaker.strip(), text.strip()))
    close()
    if not convs:
        raise CorpusError(f"{path}: no conversations found; expected 'Speaker: text' lines")
    raws = [{"conversation_id": c.conversation_id,
             "utterances": [{"utterance_id": u.utterance_id, "speaker": u.speaker, "text": u.text} for u in c]}
            for c in convs]
    return PredictInput(convs, raws)


# output records

def modality_presence(conv: Conversation, features: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """modality -> (n_utterances,) bool: which utterances of ``conv`` have a usable (finite) feature."""
    def ok(v) -> bool:
        return v is not None and bool(np.isfinite(np.asarray(v, dtype=np.float32)).all())
    return {m: np.array([ok(table.get(u.utterance_id)) for u in conv], bool) for m, table in features.items()}


def absence_reasons(conv: Conversation, present: dict[str, np.ndarray], reasons: dict[str, dict[str, str]],
                    encoders: dict[str, list[str]] | None = None) -> list[dict[str, str]]:
    """Per utterance, ``{modality: why it is absent}`` for each modality of the run it could not use: the encoder's
    reason (missing file …, not decodable: …, no audio stream in …, no face in 0/4 sampled frames of …) without
    the encoder's name, or "no … file in the input" when the input names none."""
    out: list[dict[str, str]] = []
    for t, u in enumerate(conv):
        why = {}
        for m, has in present.items():
            if has[t]:
                continue
            r = (reasons.get(m) or {}).get(u.utterance_id) or "no feature"
            for name in (encoders or {}).get(m, []):
                if r.startswith(f"{name}: "):
                    r = r[len(name) + 2:]
                    break
            if not has_media(u, m):
                r = f"no {MEDIA_OF[m]} file in the input"
            why[m] = r
        out.append(why)
    return out


def absence_warnings(conv: Conversation, absent: list[dict[str, str]], modalities: Sequence[str],
                     said_once: set[str] = frozenset()) -> list[str]:
    """One line per utterance that misses a modality: the utterance, the reason(s) naming the file, and what it is
    labelled from. Modalities in ``said_once`` (absent from the whole input, said once already) are not repeated."""
    lines = []
    for u, every in zip(conv, absent, strict=True):
        why = {m: r for m, r in every.items() if m not in said_once}
        if not why:
            continue
        by_reason: dict[str, list[str]] = {}
        for m, r in why.items():
            by_reason.setdefault(r, []).append(m)
        parts = [f"no {' or '.join(ms)} ({r})" for r, ms in by_reason.items()]
        used = [m for m in modalities if m not in every]
        lines.append(f"{conv.conversation_id}: utterance {u.utterance_id} has {'; '.join(parts)}; labelled from "
                     + (", ".join(used) if used else "its position in the conversation alone"))
    return lines


def input_absence_warnings(convs: Sequence[Conversation], modalities: Sequence[str]) -> tuple[list[str], set[str]]:
    """Media modalities of the run that no utterance of the input can have (a text-only input to a multimodal
    run): one line for all of them, and the set of those modalities."""
    media = [m for m in modalities if m != "text"]
    none = [m for m in media if not any(has_media(u, m) for c in convs for u in c)]
    if not none:
        return [], set()
    used = [m for m in modalities if m not in none]
    need = "audio or video" if "audio" in none else "video"
    return [f"the input has no {need}, so {' and '.join(none)} "
            f"{'is' if len(none) == 1 else 'are'} absent for every utterance; labelled from "
            f"{', '.join(used) or 'nothing'} alone (this run was trained with {', '.join(modalities)})"], set(none)


def prediction_record(raw: dict[str, Any], conv: Conversation, probs: np.ndarray, labels: Sequence[str],
                      present: dict[str, np.ndarray] | None = None,
                      absent: list[dict[str, str]] | None = None) -> dict:
    """The output object of one conversation: original fields + gold, predicted, probabilities per utterance,
    and (for a multimodal run, ``present``) the ``modalities`` each utterance had and, beside them, ``absent``:
    why each other modality is absent (``{}`` when none is)."""
    utts = []
    for t, (r, u, p) in enumerate(zip(raw["utterances"], conv, probs, strict=True)):
        rec = dict(r)
        if present and len(present) > 1:
            rec["modalities"] = [m for m, has in present.items() if has[t]]
            if absent is not None:
                rec["absent"] = absent[t]
        if u.emotion is not None:
            rec["gold"] = u.emotion
        rec["predicted"] = labels[int(p.argmax())]
        rec["probabilities"] = {lab: round(float(x), 4) for lab, x in zip(labels, p, strict=True)}
        utts.append(rec)
    return {**{k: v for k, v in raw.items() if k != "utterances"}, "utterances": utts}


def modality_marks(present: dict[str, np.ndarray] | None, t: int) -> str:
    """``TAF`` for utterance ``t`` of a multimodal run, a ``-`` for each modality it lacked (``T-F``)."""
    return "".join(m[0].upper() if has[t] else "-" for m, has in present.items()) if present else ""


def format_table(conv: Conversation, probs: np.ndarray, labels: Sequence[str],
                 present: dict[str, np.ndarray] | None = None) -> str:
    """One row per utterance: speaker │ text │ [used │] [gold │] predicted p (runner-up); gold only when the input
    has it; ``used`` (a multimodal run's ``present``) marks the modalities each row was labelled from."""
    gold = any(u.emotion is not None for u in conv)
    present = present if present and len(present) > 1 else None
    rows = [f"── {conv.conversation_id} " + "─" * max(0, 60 - len(conv.conversation_id))]
    width = len(present) if present else 0
    if present:
        rows.append("   used: " + ", ".join(f"{m[0].upper()} {m}" for m in present) + "; - absent (see warnings)")
    if gold or present:
        rows.append(f"{'speaker':>12} │ {'text':<48} │ " + (f"{'used':<{max(width, 4)}} │ " if present else "")
                    + (f"{'gold':>8} │ " if gold else "") + "predicted")
    for t, (u, p) in enumerate(zip(conv.utterances, probs, strict=True)):
        used = f"{modality_marks(present, t):<{max(width, 4)}} │ " if present else ""
        k = int(p.argmax())
        top2 = np.argsort(-p)[:2]
        alt = f"{labels[top2[1]]} {p[top2[1]]:.2f}" if len(labels) > 1 else ""
        text = u.text if len(u.text) <= 48 else u.text[:45] + "..."
        pred = f"{labels[k]:>8} {p[k]:.2f}  ({alt})"
        if gold:
            mark = " " if u.emotion is None or u.emotion == labels[k] else "✗"
            rows.append(f"{u.speaker[:12]:>12} │ {text:<48} │ {used}{u.emotion or '-':>8} │{mark}{pred}")
        else:
            rows.append(f"{u.speaker[:12]:>12} │ {text:<48} │ {used}{pred}")
    return "\n".join(rows)


def check_finite(probs: np.ndarray, conv: Conversation, run_path: Path) -> None:
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IncompatibleRunError(
            f"{run_path}: the model gave non-finite probabilities for {int(bad.sum())} utterance(s) of conversation "
            f"{conv.conversation_id!r} (first: {conv.utterances[i].utterance_id!r}); the run's weights or its text "
            "encoder are broken — check the run with `merc evaluate` or retrain")


def speaker_slot_warning(conv: Conversation, max_speakers: int) -> str | None:
    speakers = conv.speakers
    if len(speakers) <= max_speakers:
        return None
    shared = speakers[max_speakers - 1:]
    return (f"conversation {conv.conversation_id!r} has {len(speakers)} speakers but the model has "
            f"{max_speakers} speaker slots: {', '.join(repr(s) for s in shared[:6])}"
            f"{' …' if len(shared) > 6 else ''} ({len(shared)} speakers) share the last slot, so the model "
            "cannot tell them apart")


def _done_in_output(output: Path, input_ids: set[str], labels: Sequence[str]) -> set[str]:
    """Conversation ids already in ``output`` (a predictions file from an earlier, maybe interrupted, run).
    A partial last line (a run killed while writing) is cut off; anything else that does not fit is an error."""
    data = output.read_bytes()
    *complete, tail = data.split(b"\n")
    done: set[str] = set()

    def parse(line: bytes, n: int) -> str | None:
        try:
            obj = json.loads(line)
            cid, probs = obj["conversation_id"], obj["utterances"][0]["probabilities"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if cid not in input_ids:
            raise OutputExistsError(f"{output}:{n}: conversation {cid!r} is not in the input, so this file holds "
                                    "predictions for other conversations; pass --overwrite to replace it or choose "
                                    "another --output")
        if list(probs) != list(labels):
            raise OutputExistsError(f"{output}:{n}: predictions over labels {list(probs)}, but this run predicts "
                                    f"{list(labels)}; pass --overwrite to replace the file or choose another --output")
        return cid

    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        cid = parse(line, n)
        if cid is None:
            raise OutputExistsError(f"{output}:{n}: not a merc predictions line; pass --overwrite to replace "
                                    "the file or choose another --output")
        done.add(cid)
    if tail.strip():  # no newline at the end: the last write was interrupted (or the file was edited)
        cid = parse(tail, len(complete) + 1)
        with open(output, "r+b") as f:
            if cid is None:
                log.warning("%s: dropping an incomplete last line left by an interrupted run", output)
                f.truncate(len(data) - len(tail))
            else:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
                done.add(cid)
    return done


def _chunks(convs: Sequence[Conversation], max_utterances: int) -> Iterator[list[int]]:
    """Indices of consecutive conversations, at most ``max_utterances`` utterances per chunk (a longer
    conversation is a chunk of its own: the model needs its whole context)."""
    chunk: list[int] = []
    size = 0
    for i, c in enumerate(convs):
        if chunk and size + len(c) > max_utterances:
            yield chunk
            chunk, size = [], 0
        chunk.append(i)
        size += len(c)
    if chunk:
        yield chunk


def predict_file(run_dir, input_path, *, out_dir: str | Path | None = "predictions", as_json: bool = False,
                 plots: bool = True, stream: TextIO | None = None, run=None, output: str | Path | None = None,
                 overwrite: bool = False, progress: bool = False, batch_utterances: int = BATCH_UTTERANCES,
                 per_page: int | None = None, transcript: str | Path | None = None, recording=None,
                 save_transcript: str | Path | None = None) -> list[dict]:
    """Label every utterance of ``input_path`` (a recording when ``transcript`` is given); returns the output
    record of each conversation labelled now."""
    from tqdm.auto import tqdm

    from merc.inference.predictor import Predictor
    from merc.training.run import from_pretrained
    from merc.training.timeline import PER_PAGE, NameAllocator, write_timelines
    from merc.training.turns import has_times, write_turn_timelines
    if batch_utterances < 1:
        raise InputError(f"--batch-utterances must be >= 1, got {batch_utterances}")
    stream = stream or sys.stdout
    run = run or from_pretrained(run_dir)
    data = read_input(input_path, transcript, recording=recording, save_transcript=save_transcript,
                      progress=progress)
    convs = data.conversations
    done: set[str] = set()
    out_file = None
    if output is not None:
        output = Path(output)
        if output.exists() and not overwrite:
            done = _done_in_output(output, {c.conversation_id for c in convs}, run.labels)
            if done:
                log.warning("%s: resuming: %d of %d conversations already predicted there are skipped",
                            output, len(done), len(convs))
        output.parent.mkdir(parents=True, exist_ok=True)
        out_file = open(output, "a" if done else "w", encoding="utf-8")
    names = NameAllocator()
    stems = [names.stem(c.conversation_id) for c in convs]  # over all conversations: stable across resumes
    todo = [i for i, c in enumerate(convs) if c.conversation_id not in done]
    max_speakers = run.config.model.max_speakers
    modalities = list(run.config.modalities)
    said, said_once = input_absence_warnings([convs[i] for i in todo], modalities)
    for line in said:  # a warning, shown with --quiet too
        log.warning(line)
    results: list[dict] = []
    bar = tqdm(total=sum(len(convs[i]) for i in todo), unit="utt", desc="predict", disable=not progress,
               file=sys.stderr)
    try:
        for chunk in _chunks([convs[i] for i in todo], batch_utterances):
            idx = [todo[j] for j in chunk]
            batch = [convs[i] for i in idx]
            for c in batch:
                warning = speaker_slot_warning(c, max_speakers)
                if warning:
                    log.warning(warning)
            reasons: dict[str, dict[str, str]] = {}  # why each absent modality is absent, filled by label
            # raw features[modality][utterance_id]; per conversation (seq_len, n_classes)
            feats, probs = Predictor(run).label(batch, progress=progress, reasons=reasons)
            for i, conv, p in zip(idx, batch, probs, strict=True):
                check_finite(p, conv, run.path)
                present = modality_presence(conv, feats)
                absent = absence_reasons(conv, present, reasons, run.config.encoders)
                for line in absence_warnings(conv, absent, modalities, said_once):
                    log.warning(line)
                rec = prediction_record(data.raw[i], conv, p, run.labels, present, absent)
                line = json.dumps(rec, ensure_ascii=False, allow_nan=False)
                results.append(rec)
                if out_file is not None:
                    out_file.write(line + "\n")
                    out_file.flush()
                if as_json:
                    print(line, file=stream, flush=True)
                else:
                    print(format_table(conv, p, run.labels, present), file=stream)
                if plots and out_dir is not None:
                    draw = write_turn_timelines if has_times(conv) else write_timelines  # recordings: time axis
                    pngs = draw(conv, p, run.labels, out_dir, stems[i], per_page=per_page or PER_PAGE,
                                present=present if len(present) > 1 else None)
                    if not as_json:
                        where = pngs[0] if len(pngs) == 1 else f"{len(pngs)} pages, {pngs[0]} … {pngs[-1].name}"
                        print(f"   timeline: {where}", file=stream)
                bar.update(len(conv))
            if out_file is not None:
                os.fsync(out_file.fileno())
    finally:
        bar.close()
        if out_file is not None:
            out_file.close()
    return results
