"""What clients send, checked and read through merc's own validating readers.

- A conversation (``POST /v1/predict``): JSON in the JSONL conversation format, or ``text/plain``
  ``Speaker: text`` lines. The body is written to a private temporary file and read by
  :func:`merc.training.predict.read_input`, the reader of ``merc predict``, so the same input gives the same
  errors and the same records. Media fields (``audio``, ``video``) are refused: the server never opens a path
  a client names.
- A recording (``POST /v1/recordings``): checked by its content with PyAV (:func:`merc.media.decode.probe`,
  what ffprobe reports), never by its name or extension; it is stored under a name of the server's choosing
  whose suffix matches the container found. A transcript is SRT or JSON segments, told apart by content.

Errors are :class:`InputError` (HTTP 422) with messages that name the request, not server paths.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from merc.errors import InputError, MercError

MEDIA_FIELDS = ("audio", "video")
# container format names (PyAV / ffmpeg demuxers) -> a suffix the media readers accept
FORMAT_SUFFIX = {"wav": ".wav", "flac": ".flac", "mp3": ".mp3", "ogg": ".ogg", "aac": ".aac", "matroska": ".mkv",
                 "webm": ".webm", "mov": ".mp4", "mp4": ".mp4", "avi": ".avi", "mpeg": ".mpg"}


def decode_utf8(body: bytes, what: str = "request body") -> str:
    """UTF-8 text (a leading byte-order mark dropped, as the file readers do); InputError naming the byte."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{what}: byte {e.start} ({body[e.start:e.start + 1]!r}) is not UTF-8; "
                         "send UTF-8 text") from None


def conversation_json(text: str) -> str:
    """A JSON conversation object -> one JSONL line; InputError for malformed JSON, another shape or media."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"request body: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); expected "
                         "one conversation object {\"utterances\": [{\"speaker\": ..., \"text\": ...}, ...]}") from None
    if not isinstance(obj, dict):
        raise InputError(f"request body: got a JSON {type(obj).__name__}; expected one conversation object "
                         "{\"utterances\": [...]}")
    utts = obj.get("utterances")
    if isinstance(utts, list):
        for k, u in enumerate(utts):
            used = [f for f in MEDIA_FIELDS if isinstance(u, dict) and u.get(f) is not None]
            if used:
                raise InputError(f"request body: utterances[{k}] has {used}: the server opens no path a client "
                                 "sends; upload a recording to POST /v1/recordings instead")
    return json.dumps(obj, ensure_ascii=False)


def read_conversation(body: bytes, content_type: str, *, max_utterances: int):
    """Request body -> :class:`merc.training.predict.PredictInput` with exactly one conversation."""
    from merc.training.predict import read_input
    text = decode_utf8(body)
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        line, name = conversation_json(text), "request.jsonl"
    elif kind == "text/plain":
        line, name = text, "request.txt"
    else:
        raise UnsupportedMediaType(f"content type {kind or 'none'!r}; send application/json (a conversation "
                                   "object) or text/plain ('Speaker: text' lines)")
    with tempfile.TemporaryDirectory(prefix="merc-request-") as tmp:
        path = Path(tmp) / name
        path.write_text(line + "\n", encoding="utf-8")
        try:
            data = read_input(path)
        except MercError as e:
            raise InputError(str(e).replace(str(path), "request body")) from None
    if len(data.conversations) != 1:
        raise InputError(f"request body: {len(data.conversations)} conversations (blank lines separate them in "
                         "text/plain); send one conversation per request")
    n = len(data.conversations[0])
    if n > max_utterances:
        raise TooLong(f"request body: the conversation has {n} utterances; this server takes at most "
                      f"{max_utterances} (merc serve --max-utterances)")
    return data


class UnsupportedMediaType(InputError):
    """HTTP 415."""


class TooLong(InputError):
    """A conversation over the server's length limit (HTTP 422 with a message saying so)."""


def recording_suffix(path: Path) -> tuple[str, Any]:
    """The suffix for the container PyAV finds in ``path`` and its :class:`merc.media.decode.MediaInfo`;
    InputError when it is not an audio or video file."""
    import av

    from merc.media.decode import probe
    try:
        info = probe(path)
        with av.open(str(path)) as c:
            names = c.format.name.split(",")
    except MercError as e:
        raise InputError("upload: " + str(e).replace(str(path), "the uploaded file")
                         + "; expected an audio or video recording") from None
    except Exception as e:  # noqa: BLE001 — whatever the demuxer says, it is not a recording we can read
        raise InputError(f"upload: not an audio or video recording ({type(e).__name__}: {e})") from None
    for n in names:
        if n in FORMAT_SUFFIX:
            suffix = FORMAT_SUFFIX[n]
            if suffix == ".mp4" and not info.has_video:
                suffix = ".m4a"
            return suffix, info
    raise InputError(f"upload: a {names[0]} container, which merc does not read; send wav, flac, mp3, ogg, m4a, "
                     "mp4, mkv, webm or avi")


def transcript_suffix(body: bytes) -> str:
    """``.json`` for JSON segments, ``.srt`` for subtitles, told apart by the first non-blank character."""
    text = decode_utf8(body, "transcript").lstrip()
    if not text:
        raise InputError("transcript: the file is empty; expected SRT subtitles or JSON segments")
    return ".json" if text[0] in "[{" else ".srt"
