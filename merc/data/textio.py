"""Reading user text files line by line as UTF-8, with an error that says where the file stops being UTF-8
and what encoding it probably is.

A file saved by a spreadsheet or an old editor is often cp1252 (Windows "ANSI") or latin-1; Python's own
``UnicodeDecodeError`` names neither the file nor the line. :func:`read_lines` does, and suggests the
``iconv`` command that converts the file.
"""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Iterator

from merc.errors import InputError, MissingFileError

_BOMS = {codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16", codecs.BOM_UTF32_LE: "UTF-32",
         codecs.BOM_UTF32_BE: "UTF-32"}


def guess_encoding(data: bytes) -> str:
    """A best guess of a non-UTF-8 file's encoding: a UTF-16/32 byte-order mark, else cp1252 if every byte
    decodes as cp1252 (the usual case: Windows "ANSI" text), else latin-1 (which decodes anything)."""
    for bom, name in sorted(_BOMS.items(), key=lambda kv: -len(kv[0])):
        if data.startswith(bom):
            return name
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line of a UTF-8 file (a UTF-8 byte-order mark is skipped; line ends
    stripped). Raises :class:`InputError` naming the file, line and byte offset of the first byte that is not
    UTF-8, with the probable encoding and the command that converts the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file")
    data = path.read_bytes()
    offset = 0
    if data.startswith(codecs.BOM_UTF8):
        offset = len(codecs.BOM_UTF8)
    elif any(data.startswith(b) for b in _BOMS):
        enc = guess_encoding(data)
        raise InputError(f"{path}: the file is {enc} (byte-order mark at byte 0), not UTF-8; "
                         f"convert it with: iconv -f {enc} -t UTF-8 {path} > converted{path.suffix}")
    for n, raw in enumerate(data[offset:].splitlines(keepends=True), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            enc = guess_encoding(data)
            bad = raw[e.start:e.start + 4]
            raise InputError(
                f"{path}:{n}: byte {offset + e.start} (column {e.start + 1} of the line, value {bad[:1]!r}) is not "
                f"UTF-8; the file looks like {enc}: convert it with "
                f"iconv -f {enc} -t UTF-8 {path} > converted{path.suffix}") from None
        offset += len(raw)
        yield n, text.rstrip("\r\n")
