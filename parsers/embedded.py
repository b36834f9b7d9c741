"""Documents carried inside other documents: a CDA ``nonXMLBody``, an HL7 OBX of type ED.

``EmbeddedReader.read`` turns decoded bytes and their declared media type into text with
the same parsers as top-level files — a PDF through ``PdfParser`` (its text layer, and OCR
for pages without one), an image through ``ImageParser`` (OCR), plain text decoded, RTF
stripped of its markup (striprtf), HTML of its tags (the standard library's parser) — so an
embedded scan is read exactly like a scanned file, with its page and OCR figures.
``decode_base64`` is the one strict base64 decoder for embedded payloads (line breaks and
other whitespace inside the text are allowed, anything else is an error).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING

from pipeline.errors import ParserError
from pipeline.model import ParsedDocument, Problem, Reason

if TYPE_CHECKING:
    from parsers.ocr import TesseractOcr

log = logging.getLogger(__name__)

_PDF_TYPES = frozenset({"application/pdf", "application/x-pdf"})
_IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/tiff", "image/tif"})
_RTF_TYPES = frozenset({"text/rtf", "application/rtf"})
_RTF_MAGIC = b"{\\rtf"
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_HTML_STARTS = (b"<!doctype html", b"<html")
# Media types that say nothing about the content: the bytes are sniffed instead.
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_PDF_MAGIC = b"%PDF-"
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class EmbeddedText:
    """What was read from an embedded document."""

    text: str
    page_count: int = 0
    ocr_pages: int = 0
    ocr_confidence: float | None = None
    warnings: tuple[Problem, ...] = ()


def decode_base64(encoded: str, *, source: str, what: str) -> bytes:
    """Strict base64 with any whitespace (line breaks every 64 or 76 characters) ignored.

    Decoded a slice at a time, so a big payload (a scanned PDF in a CDA) is not held again
    as a list of its lines and a compacted copy; anything unusual (non-ASCII text, a bad
    character, padding) is decoded again the plain way, which says what is wrong.
    """
    decoded = _decode_base64_slices(encoded)
    if decoded is not None:
        return decoded
    compact = "".join(encoded.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII characters
        raise ParserError(f"{what} is not valid base64: {exc}", source=source) from exc


# What ``str.split()`` drops among ASCII characters; base64 alphabet, no padding.
_ASCII_BLANKS = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_BASE64_BODY = re.compile(rb"[A-Za-z0-9+/]*")
_BASE64_END = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_SLICE_CHARS = 1 << 22


def _decode_base64_slices(encoded: str) -> bytes | None:
    """``encoded`` decoded slice by slice; None when it is not plain ASCII base64."""
    parts: list[bytes] = []
    carry = b""
    end = len(encoded)
    while end and encoded[end - 1].isspace():  # trailing blanks: the padding ends the last slice
        end -= 1
    for start in range(0, end, _SLICE_CHARS):
        piece = encoded[start : min(start + _SLICE_CHARS, end)]
        if not piece.isascii():
            return None
        compact = carry + piece.encode("ascii").translate(None, _ASCII_BLANKS)
        if start + _SLICE_CHARS < end:
            cut = len(compact) - len(compact) % 4
            carry = compact[cut:]
            compact = compact[:cut]
            if not _BASE64_BODY.fullmatch(compact):
                return None
        else:
            carry = b""
            if not _BASE64_END.fullmatch(compact):
                return None
        try:
            parts.append(binascii.a2b_base64(compact, strict_mode=True))
        except binascii.Error:
            return None
    if carry:  # only when the last slice was empty of base64: never, kept for safety
        return None
    return b"".join(parts)


def media_type(declared: str | None) -> tuple[str, str | None]:
    """(``type/subtype`` lower-cased, charset or None) of a declared media type."""
    if not declared:
        return "", None
    kind, *params = (part.strip() for part in declared.split(";"))
    charsets = (p.split("=", 1)[1].strip(" \"'") for p in params if p.lower().startswith("charset="))
    charset = next(charsets, None)
    return kind.lower(), charset


class EmbeddedReader:
    """Reads embedded documents with Carnet's own parsers; OCR engine given at construction."""

    def __init__(self, *, ocr: TesseractOcr | None = None, min_text_chars_per_page: int = 20) -> None:
        self._ocr = ocr
        self.min_text_chars_per_page = min_text_chars_per_page

    @property
    def ocr(self) -> TesseractOcr:
        if self._ocr is None:  # built on first use: most documents embed nothing to OCR
            from parsers.ocr import TesseractOcr

            self._ocr = TesseractOcr()
        return self._ocr

    def read(self, payload: bytes, declared_type: str | None, *, source: str) -> EmbeddedText:
        """The text of ``payload``; an unsupported type gives no text and a warning."""
        kind, charset = media_type(declared_type)
        if kind in _GENERIC_TYPES:
            kind = sniff_media_type(payload) or kind
        if kind in _PDF_TYPES:
            from parsers.pdf import PdfParser  # pypdf is loaded only for documents that embed a PDF

            parser = PdfParser(ocr=self.ocr, min_text_chars_per_page=self.min_text_chars_per_page)
            return _from_parsed(parser.parse(payload, source=source))
        if kind in _IMAGE_TYPES:
            from parsers.image import ImageParser

            return _from_parsed(ImageParser(ocr=self.ocr).parse(payload, source=source))
        if kind == "text/plain":
            # Decoded as text, a PDF's or an image's bytes would be indexed as its words.
            if payload.lstrip().startswith(_PDF_MAGIC) or payload.startswith(_IMAGE_MAGIC):
                what = "a PDF" if payload.lstrip().startswith(_PDF_MAGIC) else "an image"
                raise ParserError(f"embedded document declared {kind} holds {what}", source=source)
            return EmbeddedText(text=_squash_lines(_decode_text(payload, charset)))
        if kind in _RTF_TYPES:
            return EmbeddedText(text=_squash_lines(_rtf_text(payload, source)))
        if kind in _HTML_TYPES:
            return EmbeddedText(text=_squash_lines(html_text(_decode_text(payload, charset))))
        log.info("%s: embedded document of type %r is not read", source, declared_type)
        return EmbeddedText(
            text="",
            warnings=(
                Problem(
                    code=Reason.UNSUPPORTED_FORMAT,
                    message=f"embedded document of type {declared_type or 'unknown'} is not read",
                    blocking=False,
                ),
            ),
        )


def sniff_media_type(payload: bytes) -> str | None:
    """The media type the payload's first bytes show (PDF, PNG/JPEG/TIFF, RTF, HTML), or None."""
    head = payload[:1024]
    if _PDF_MAGIC in head:
        return "application/pdf"
    if payload.startswith(_IMAGE_MAGIC):
        return "image/png" if payload.startswith(_IMAGE_MAGIC[0]) else "image/jpeg"
    if payload.lstrip().startswith(_RTF_MAGIC):
        return "text/rtf"
    start = payload.lstrip().removeprefix(b"\xef\xbb\xbf")[:14].lower()
    if start.startswith(_HTML_STARTS) or (start.startswith(b"<?xml") and _XHTML_ROOT.search(head)):
        return "text/html"
    return None


# XHTML: an XML declaration, then (comments, a doctype maybe) an html root element.
_XHTML_ROOT = re.compile(rb"<html[\s>]", re.IGNORECASE)


_MARKUP_STARTS = (b"<?xml", b"<!doctype", b"<html")


def opens_a_document(head: bytes) -> bool:
    """Whether ``head`` is the start of a document (PDF, image, RTF, XML or HTML), not a
    piece from the middle of one."""
    return sniff_media_type(head) is not None or head.lstrip()[:9].lower().startswith(_MARKUP_STARTS)


class _HtmlText(HTMLParser):
    """The text of an HTML document: scripts and styles left out, a line per block (paragraph,
    heading, list item, table row…), table cells side by side."""

    _BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
         "dl", "dt", "dd", "pre", "blockquote", "hr", "section", "article", "header", "footer",
         "title", "caption", "thead", "tbody", "tfoot"}
    )  # fmt: skip
    _HIDDEN = frozenset({"script", "style", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
            return
        self._pre += tag == "pre"
        if tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag in {"td", "th"}:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:  # <br/>, <hr/>: no end tag follows
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
            return
        self._pre = max(0, self._pre - (tag == "pre"))
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            # Line breaks outside <pre> are the source's wrapping, not the text's.
            self.parts.append(data if self._pre else " ".join(data.splitlines()))


def html_text(html: str) -> str:
    """The text an HTML document shows (entities resolved, markup dropped)."""
    reader = _HtmlText()
    reader.feed(html)
    reader.close()
    return "".join(reader.parts)


def _rtf_text(payload: bytes, source: str) -> str:
    """The text of an RTF document (control words, font and colour tables dropped)."""
    from striprtf.striprtf import rtf_to_text

    if not payload.lstrip().startswith(_RTF_MAGIC):
        raise ParserError("embedded RTF does not start with {\\rtf", source=source)
    # RTF is 7-bit text with \'hh escapes in the code page its header names (\ansicpg1252
    # for French producers); stray 8-bit bytes are kept one for one.
    rtf = payload.decode("latin-1")
    declared = re.search(r"\\ansicpg(\d+)", rtf[:2048])
    encoding = f"cp{declared.group(1)}" if declared else "cp1252"
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "cp1252"
    try:
        return rtf_to_text(rtf, encoding=encoding, errors="replace")
    except (ValueError, IndexError, LookupError, OverflowError) as exc:  # striprtf on a malformed file
        raise ParserError(f"unreadable RTF: {exc}", source=source) from exc


def _decode_text(payload: bytes, charset: str | None) -> str:
    if charset:
        try:
            return payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            log.debug("declared charset %r does not decode the text; trying UTF-8", charset)
    try:
        return payload.decode("utf-8-sig")
    except UnicodeDecodeError:
        # French producers' other usual encoding; cp1252 decodes every byte but five, and
        # those are replaced rather than failing the document.
        return payload.decode("cp1252", errors="replace")


def _squash_lines(text: str) -> str:
    """Each line's blanks squashed to one space, empty lines dropped. Done a slice of
    ``_SQUASH_SLICE`` characters at a time (cut after a ``\n``, where a line ends whatever
    else ends lines), so a long text is never held as the list of all its lines."""
    if len(text) <= _SQUASH_SLICE:
        return _squash_slice(text)
    parts: list[str] = []
    start = 0
    while start < len(text):
        end = text.find("\n", start + _SQUASH_SLICE) + 1 or len(text)
        part = _squash_slice(text[start:end])
        if part:
            parts.append(part)
        start = end
    return "\n".join(parts)


_SQUASH_SLICE = 1 << 20


def _squash_slice(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _from_parsed(documents: list[ParsedDocument]) -> EmbeddedText:
    (doc,) = documents  # PDF and image parsers return exactly one document
    return EmbeddedText(
        text=_squash_lines(doc.text),
        page_count=doc.page_count,
        ocr_pages=doc.ocr_pages,
        ocr_confidence=doc.ocr_confidence,
        warnings=doc.warnings,
    )
