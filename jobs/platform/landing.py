"""The byte-level contract of a landing file: how its bytes become a header and numbered data lines.

Pure Python (no Spark), so the contract can be fuzzed fast and every ingest run uses the same code:

* **Encoding**: a landing file is UTF-8. One leading UTF-8 byte-order mark (``EF BB BF``) is tolerated and
  ignored; a BOM anywhere else is data (U+FEFF), so a row holding one fails its cast.
* **Lines**: a line ends at LF, CRLF or a lone CR (``bytes.splitlines``: the same three terminators as
  Spark's and Hadoop's line readers); a last line without a terminator is a line, a terminator at the
  very end does not start another one. A quoted field never spans lines: a record cut by a newline
  inside quotes is two malformed lines. Line 1 is the header; **rows in** = every line after it,
  blank ones included (they are quarantined as ``malformed line: blank line``).
* **Decoding** is per line: a data line that is not valid UTF-8 is not fatal. It keeps its number and
  its bytes, escaped with Python's ``backslashreplace`` (valid UTF-8 stays as it is, each offending byte
  becomes ``\\xNN``), and the reason ``encoding: invalid UTF-8 at byte N`` where N is the 0-based offset
  of the first offending byte within the line (counted after the BOM on line 1). Ingestion quarantines
  such a line and publishes the rest of the file.
* **Header**: a header line that is not UTF-8 fails the run with an :class:`IngestError` naming the file,
  line 1, the byte and the rule (the header's own checks are :func:`jobs.platform.ingest.check_header`'s).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from jobs.platform.config import Settings, get_settings

ENCODING_RULE = "encoding: invalid UTF-8"
UTF8_RULE = "rule: landing files are UTF-8, a leading BOM tolerated"


class IngestError(Exception):
    """An expected, explained failure: the message names the file or field, the value and the rule."""


@dataclass(frozen=True)
class Line:
    """One physical line of a landing file."""

    number: int  # 1-based; the header is line 1
    raw: bytes  # without its terminator
    text: str | None  # the decoded line, None when it is not valid UTF-8
    error: str | None  # "encoding: invalid UTF-8 at byte N" when text is None

    @property
    def record(self) -> str:
        """The line as text for the quarantine record: decoded, or with its bad bytes escaped."""
        return self.text if self.text is not None else escape(self.raw)


@dataclass(frozen=True)
class LandingFile:
    name: str
    header: str  # the decoded header line, BOM removed ("" for a file without a line)
    lines: list[Line]  # the data lines (line 2 onwards)


def escape(raw: bytes) -> str:
    r"""``raw`` as text: valid UTF-8 kept, every byte that is not part of it written ``\xNN``."""
    return raw.decode("utf-8", "backslashreplace")


def decode_line(raw: bytes) -> tuple[str | None, str | None]:
    """(text, None) for a valid UTF-8 line, (None, "encoding: invalid UTF-8 at byte N") otherwise."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"{ENCODING_RULE} at byte {exc.start}"


def split_landing(data: bytes, name: str) -> LandingFile:
    """Split the bytes of one landing file into its header and numbered, decoded data lines."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    physical = data.splitlines()
    if not physical:
        return LandingFile(name, "", [])
    header, error = decode_line(physical[0])
    if header is None:
        raise IngestError(
            f"{name}:1: {error.removeprefix('encoding: ')} of the header line {physical[0][:40]!r} "
            f"({UTF8_RULE})"
        )
    lines = []
    for number, raw in enumerate(physical[1:], start=2):
        text, error = decode_line(raw)
        lines.append(Line(number, raw, text, error))
    return LandingFile(name, header, lines)


def read_landing(path: Path) -> LandingFile:
    """Read and split one landing file (the whole file is read: a landing file is one day's drop)."""
    return split_landing(path.read_bytes(), path.name)


def mark_landed(folder: Path, settings: Settings | None = None) -> None:
    """What a producer does after writing a day's files: the done marker (empty file), if one is set."""
    marker = (settings or get_settings()).landing_done_marker
    if marker:
        (folder / marker).touch()
