"""The protocol every format parser implements.

A parser is chosen by sniffing content (``score``), never by file extension alone.
``parse`` returns one ``ParsedDocument`` per document found (several for an HL7 batch
file) and raises ``ParserError`` for a document it cannot read; a parser of files that
hold many documents is also a ``StreamingParser``, read one document at a time. Parsers
never read settings or the environment: what they need (OCR language…) is given at
construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from pipeline.model import ParsedDocument

# How much of a file is shown to ``score``; a parser whose format may start further in (a
# CDA inside a wrapper) sets a ``sniff_bytes`` attribute of its own, still bounded.
SNIFF_BYTES = 4096


@runtime_checkable
class Parser(Protocol):
    name: str

    def score(self, head: bytes) -> int:
        """How sure this parser is that ``head`` (first bytes) is its format: 0 = not mine."""
        ...

    def parse(self, data: bytes, *, source: str) -> list[ParsedDocument]:
        """Read every document in ``data``; raise ``ParserError`` when it cannot."""
        ...


@runtime_checkable
class StreamingParser(Parser, Protocol):
    """A parser whose files may hold thousands of documents (an HL7 batch): the pipeline
    reads a big one a document at a time instead of holding all its parsed documents."""

    def count_documents(self, data: bytes) -> int:
        """About how many documents ``data`` holds, found without parsing it."""
        ...

    def iter_documents(self, data: bytes, *, source: str) -> Iterator[ParsedDocument]:
        """``parse``, one document at a time, each read only when asked for."""
        ...


_STREAMING: dict[type, bool] = {}


def streaming(parser: Parser | None) -> StreamingParser | None:
    """``parser`` if it is a ``StreamingParser``, else None: decided once per class, since
    a runtime protocol check looks up each of the protocol's methods on every call."""
    if parser is None:
        return None
    kind = type(parser)
    is_streaming = _STREAMING.get(kind)
    if is_streaming is None:
        is_streaming = _STREAMING[kind] = isinstance(parser, StreamingParser)
    return parser if is_streaming else None  # type: ignore[return-value]


class ParserChooser(Protocol):
    """What a container format needs to read the documents it carries (an HL7 OBX ED holds
    a CDA, PDF or image): the parser for some bytes. The registry is one."""

    def choose(self, data: bytes) -> Parser | None: ...
