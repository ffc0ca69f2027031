"""A recording plus its transcript (speakers and times) -> one conversation whose utterances are time segments
of that recording: ``merc predict RUN talk.mp4 --transcript talk.srt``.

Transcript formats:

- **SRT** (``.srt``): numbered blocks ``index`` / ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` / text lines, a blank
  line between blocks; the text starts with the speaker, ``Speaker: text`` (further lines continue the
  text). The common SubRip variants are accepted: ``.`` instead of ``,`` before the milliseconds, a BOM,
  CRLF line ends, positions after the time line (``X1:…``), a missing final blank line.
- **WebVTT** (``.vtt``, read with the ``webvtt-py`` package): cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` (hours
  optional, cue settings and NOTE blocks ignored); the speaker is the cue's voice span ``<v Ann>Hello.`` or
  a leading ``Ann: Hello.``; a cue naming neither is the unknown speaker.
- **JSON segments** (``.json``): ``[{"speaker": "Ann", "text": "Hello.", "start": 1.2, "end": 2.5}, …]``
  (or ``{"segments": [...]}``); optional ``utterance_id``; a segment without ``speaker`` (a transcriber that
  does not diarize) is the unknown speaker.

Segments of the unknown speaker are one speaker, :data:`UNKNOWN_SPEAKER` (the model cannot tell them apart;
a warning says how many). A segment's text may be empty (a laugh, a sigh): it is labelled from the recording
alone, for a run that uses audio or faces.

Every segment becomes an :class:`~merc.data.schema.Utterance` with ``audio`` and ``video`` = the recording
(``video`` None for an audio-only file) and ``meta["segment"] = [start, end]``, which the media encoders cut
(:func:`merc.encoders.base.media_segment`). Errors name the file and line (SRT) or segment (JSON).
Reference: the SubRip format as parsed by the ``srt`` package (https://github.com/cdown/srt).
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from merc.data.schema import Conversation, Utterance
from merc.data.textio import read_lines
from merc.errors import InputError, MissingDependencyError, MissingFileError

log = logging.getLogger(__name__)
UNKNOWN_SPEAKER = "unknown"  # the one speaker of segments that name none

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
MEDIA_SUFFIXES = AUDIO_SUFFIXES + VIDEO_SUFFIXES
_TIME = r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(\s.*)?$")


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def read_srt(path: str | os.PathLike) -> list[dict[str, Any]]:
    """``[{"speaker", "text", "start", "end", "line"}]`` from an SRT file whose text lines read
    ``Speaker: text``; InputError naming ``file:line`` otherwise."""
    path = Path(path)
    blocks: list[list[tuple[int, str]]] = [[]]
    for n, line in read_lines(path):
        line = line.lstrip("\ufeff").rstrip()
        if line.strip():
            blocks[-1].append((n, line))
        elif blocks[-1]:
            blocks.append([])
    segments = []
    for block in (b for b in blocks if b):
        (n0, first), rest = block[0], block[1:]
        if _TIMING.match(first):  # index line omitted
            timing, text = (n0, first), rest
        elif first.strip().isdigit() and rest:
            timing, text = rest[0], rest[1:]
        else:
            raise InputError(f"{path}:{n0}: expected a subtitle number or a time line "
                             f"'HH:MM:SS,mmm --> HH:MM:SS,mmm', got {first[:80]!r}")
        m = _TIMING.match(timing[1])
        if not m:
            raise InputError(f"{path}:{timing[0]}: expected a time line 'HH:MM:SS,mmm --> HH:MM:SS,mmm', "
                             f"got {timing[1][:80]!r}")
        start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:8])
        if not text:
            raise InputError(f"{path}:{timing[0]}: subtitle has no text; expected 'Speaker: text' on the next line")
        n1, line = text[0]
        speaker, sep, said = line.partition(":")
        if not sep or not speaker.strip() or len(speaker) > 60:
            raise InputError(f"{path}:{n1}: expected 'Speaker: text' (the speaker names who talks), got {line[:80]!r}")
        said = " ".join([said.strip(), *(t.strip() for _, t in text[1:])]).strip()
        if not said:
            raise InputError(f"{path}:{n1}: speaker {speaker.strip()!r} has empty text")
        segments.append({"speaker": speaker.strip(), "text": said, "start": start, "end": end, "line": timing[0]})
    if not segments:
        raise InputError(f"{path}: no subtitles found; expected SRT blocks with 'Speaker: text' lines")
    return segments


def read_vtt(path: str | os.PathLike) -> list[dict[str, Any]]:
    """``[{"speaker", "text", "start", "end", "cue"}]`` from a WebVTT file (``webvtt-py``); the speaker from the
    voice span or a leading ``Speaker:``, else :data:`UNKNOWN_SPEAKER`. InputError naming the file (and cue)."""
    try:
        import webvtt
        from webvtt.errors import MalformedFileError
    except ImportError as e:
        raise MissingDependencyError("WebVTT transcripts need the Python package 'webvtt-py': "
                                     "pip install 'merc[audio]' (or webvtt-py)") from e
    path = Path(path)
    try:
        captions = webvtt.read(str(path)).captions
    except MalformedFileError as e:
        raise InputError(f"{path}: not a WebVTT file ({e}); expected 'WEBVTT' on the first line, then cues "
                         "'HH:MM:SS.mmm --> HH:MM:SS.mmm' with their text") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    segments = []
    for k, c in enumerate(captions):
        text = " ".join(line.strip() for line in c.text.splitlines()).strip()
        speaker = (c.voice or "").strip()
        if not speaker:
            name, sep, said = text.partition(":")
            if sep and name.strip() and len(name) <= 40 and len(name.split()) <= 4:
                speaker, text = name.strip(), said.strip()
        segments.append({"speaker": speaker or UNKNOWN_SPEAKER, "text": text,
                         "start": c.start_time.in_milliseconds() / 1000, "end": c.end_time.in_milliseconds() / 1000,
                         "cue": f"cue {k + 1}" + (f" ({c.identifier})" if c.identifier else f" at {c.start}")})
    if not segments:
        raise InputError(f"{path}: no cues found; expected WebVTT cues 'HH:MM:SS.mmm --> HH:MM:SS.mmm' with text")
    return segments


def read_segments_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """``[{"speaker", "text", "start", "end"}]`` (or ``{"segments": [...]}``) with types checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); expected a list of "
                         '{"speaker", "text", "start", "end"} segments') from None
    if isinstance(data, dict) and "segments" in data:
        data = data["segments"]
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: expected a non-empty list of {{\"speaker\", \"text\", \"start\", \"end\"}} "
                         f"segments, got {type(data).__name__}")
    out = []
    for k, seg in enumerate(data):
        where = f"{path}: segment {k}"
        if not isinstance(seg, dict):
            raise InputError(f"{where}: expected an object, got {type(seg).__name__}")
        unknown = sorted(set(seg) - {"speaker", "text", "start", "end", "utterance_id"})
        if unknown:
            raise InputError(f"{where}: unknown field(s) {unknown}; expected speaker, text, start, end "
                             "(utterance_id optional)")
        if seg.get("speaker") is None:  # a transcriber that does not diarize
            seg = {**seg, "speaker": UNKNOWN_SPEAKER}
        for key, types in (("speaker", str), ("text", str), ("start", (int, float)), ("end", (int, float))):
            v = seg.get(key)
            if v is None or isinstance(v, bool) or not isinstance(v, types):
                raise InputError(f"{where}: {key!r} must be a {'string' if types is str else 'number'}, got {v!r}")
        if not seg["speaker"].strip():
            raise InputError(f"{where}: empty speaker {seg['speaker']!r}; leave 'speaker' out when it is unknown")
        out.append({**seg, "speaker": seg["speaker"].strip(), "text": seg["text"].strip(),
                    "start": float(seg["start"]), "end": float(seg["end"])})
    return out


def read_transcript(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Segments of an ``.srt`` or ``.json`` transcript, with times checked (0 <= start < end)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such transcript file")
    if path.suffix.lower() == ".srt":
        segments = read_srt(path)
    elif path.suffix.lower() == ".vtt":
        segments = read_vtt(path)
    elif path.suffix.lower() == ".json":
        segments = read_segments_json(path)
    else:
        raise InputError(f"{path}: unknown transcript format {path.suffix!r}; expected .srt ('Speaker: text' "
                         "subtitles), .vtt (WebVTT) or .json segments")
    for k, s in enumerate(segments):
        where = f"{path}:{s['line']}" if "line" in s else f"{path}: {s['cue']}" if "cue" in s else \
            f"{path}: segment {k}"
        if not 0 <= s["start"] < s["end"]:
            raise InputError(f"{where}: segment times start {s['start']} s, end {s['end']} s; expected "
                             "0 <= start < end")
    unknown = sum(s["speaker"] == UNKNOWN_SPEAKER for s in segments)
    if unknown:
        log.warning("%s: %d of %d segments name no speaker; they are one speaker, %r, to the model", path, unknown,
                    len(segments), UNKNOWN_SPEAKER)
    return segments


def media_conversation(media: str | os.PathLike, transcript: str | os.PathLike, *,
                       conversation_id: str | None = None, split: str = "predict") -> tuple[Conversation, dict]:
    """The conversation of ``media`` segmented by ``transcript``, and its JSON form (echoed by ``merc predict``)."""
    media = Path(media)
    if not media.is_file():
        raise MissingFileError(f"{media}: no such media file")
    if media.suffix.lower() not in MEDIA_SUFFIXES:
        raise InputError(f"{media}: not a known audio/video file type ({media.suffix!r}); expected one of "
                         f"{', '.join(MEDIA_SUFFIXES)}")
    return segments_conversation(media, read_transcript(transcript), str(transcript),
                                 conversation_id=conversation_id, split=split)


def segments_conversation(media: Path, segments: list[dict[str, Any]], transcript: str | None, *,
                          conversation_id: str | None = None, split: str = "predict") -> tuple[Conversation, dict]:
    """The conversation of ``media`` cut into ``segments`` (as :func:`read_transcript` returns them; also the
    transcript ``merc predict`` derives from a recording, ``transcript`` None)."""
    cid = conversation_id or media.stem
    path = os.path.abspath(media)
    video = None if media.suffix.lower() in AUDIO_SUFFIXES else path
    utts, raws, seen = [], [], set()
    for k, s in enumerate(segments):
        uid = s.get("utterance_id") or f"{cid}_u{k}"
        if uid in seen:
            raise InputError(f"{transcript}: segment {k}: duplicate utterance_id {uid!r}")
        seen.add(uid)
        utts.append(Utterance(uid, s["speaker"], s["text"], None, s["start"], s["end"], audio=path, video=video,
                              meta={"segment": [s["start"], s["end"]]}))
        raws.append({"utterance_id": uid, "speaker": s["speaker"], "text": s["text"], "start": s["start"],
                     "end": s["end"]})
    raw = {"conversation_id": cid, "media": str(media), "transcript": transcript, "utterances": raws}
    return Conversation(cid, split, utts), raw


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_transcript(segments: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``[{"speaker", "text", "start", "end"}]`` as ``.srt`` ('Speaker: text' subtitles) or ``.json``
    segments, atomically, so that :func:`read_transcript` gives the same segments back (times in ms)."""
    from merc.io import atomic_write_text
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps([{k: s[k] for k in ("speaker", "text", "start", "end")} for s in segments],
                          ensure_ascii=False, indent=1) + "\n"
    elif path.suffix.lower() == ".srt":
        text = "".join(f"{k}\n{_srt_time(s['start'])} --> {_srt_time(s['end'])}\n{s['speaker']}: "
                       f"{' '.join(s['text'].split())}\n\n" for k, s in enumerate(segments, 1))
    else:
        raise InputError(f"{path}: unknown transcript format {path.suffix!r}; expected .srt or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)
