"""Embedded payloads read piecewise (``parsers/embedded.py``): slicing changes nothing."""

from __future__ import annotations

import base64
import binascii
import random

import pytest

from parsers import embedded
from parsers.embedded import decode_base64
from pipeline.errors import ParserError

# Pieces of base64 text: valid groups, line ends, blanks str.split() drops, padding, and
# characters that make it invalid (non-ASCII blanks among them).
_PIECES = ["QUJD", "RA==", "RUY=", "\n", "\r\n", " ", "\t", "\x1c", "\xa0", "=", "*", "é", "A"]


def _whole(encoded: str) -> bytes | str:
    """What decoding the compacted text in one go gives (or its error)."""
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        return str(exc)


def _sliced(encoded: str) -> bytes | str:
    try:
        return decode_base64(encoded, source="x", what="payload")
    except ParserError as exc:
        return exc.message.removeprefix("payload is not valid base64: ")


@pytest.mark.parametrize("slice_chars", [1, 3, 4, 7, 64])
def test_base64_decoded_by_slices_as_in_one_go(monkeypatch: pytest.MonkeyPatch, slice_chars: int) -> None:
    monkeypatch.setattr(embedded, "_SLICE_CHARS", slice_chars)
    rnd = random.Random(slice_chars)
    for _ in range(2000):
        encoded = "".join(rnd.choice(_PIECES) for _ in range(rnd.randint(0, 12)))
        assert _sliced(encoded) == _whole(encoded), repr(encoded)
    payload = bytes(range(256)) * 40
    # Valid base64 with line breaks is decoded slice by slice (not by the one-go fallback).
    assert embedded._decode_base64_slices(base64.encodebytes(payload).decode()) == payload


@pytest.mark.parametrize("slice_chars", [1, 2, 5, 64])
def test_text_squashed_by_slices_as_in_one_go(monkeypatch: pytest.MonkeyPatch, slice_chars: int) -> None:
    def whole(text: str) -> str:
        lines = (" ".join(line.split()) for line in text.splitlines())
        return "\n".join(line for line in lines if line)

    monkeypatch.setattr(embedded, "_SQUASH_SLICE", slice_chars)
    rnd = random.Random(slice_chars)
    pieces = ["mot", " ", "\t", "\n", "\r", "\r\n", "\n\n", "\x0b", "\x85", "\u2028", "\xa0", "é"]
    for _ in range(2000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 30)))
        assert embedded._squash_lines(text) == whole(text), repr(text)


@pytest.mark.parametrize(
    ("payload", "what"),
    [(b"%PDF-1.7\n%\xe2\xe3\n1 0 obj", "a PDF"), (b"\n%PDF-1.4\n", "a PDF"),
     (b"\x89PNG\r\n\x1a\n\x00\x00", "an image"), (b"\xff\xd8\xff\xe0\x00\x10JFIF", "an image")],
)  # fmt: skip
def test_text_declared_over_a_pdf_or_an_image_is_an_error(payload: bytes, what: str) -> None:
    """Decoded as text, its bytes would be indexed as the document's words."""
    with pytest.raises(ParserError, match=f"declared text/plain holds {what}"):
        embedded.EmbeddedReader().read(payload, "text/plain; charset=utf-8", source="x")
    # Text that merely mentions one is text.
    text = embedded.EmbeddedReader().read(b"Joint : rapport.pdf (%PDF-1.7)", "text/plain", source="x")
    assert text.text == "Joint : rapport.pdf (%PDF-1.7)"


def test_html_is_read_as_the_text_it_shows() -> None:
    page = (
        b"<html><head><title>CR</title><script>var x = '<p>';</script></head><body>"
        b"<p>Bilan <b>normal</b>,\nrevoir dans 1&nbsp;an &amp; contr\xc3\xb4ler.</p>"
        b"<ul><li>TSH</li><li>T4</li></ul>"
        b"<pre>col1  col2\nval1  val2</pre></body></html>"
    )
    sniffed = [b"<!DOCTYPE html>" + page, b'<?xml version="1.0"?>\n' + page]  # no type given
    for declared, payload in [("text/html; charset=utf-8", page), ("application/xhtml+xml", page),
                              *(("", p) for p in sniffed)]:  # fmt: skip
        read = embedded.EmbeddedReader().read(payload, declared, source="x")
        assert read.text.splitlines() == [
            "CR", "Bilan normal, revoir dans 1 an & contrôler.", "TSH", "T4", "col1 col2", "val1 val2",
        ], declared  # fmt: skip
