"""PDF documents: the text layer read with pypdf, OCR only for pages without text.

A page whose text layer has at least ``min_text_chars_per_page`` non-space characters
is never OCR'd; other pages have their embedded images OCR'd (a page without images is
blank), and so do pages whose text layer is garbled (glyph codes of a font without a
character map: control and private-use characters), that layer set aside with a warning.
The values filled in a form's fields are text of their page, after the label printed
beside them. Password-protected files raise ``EncryptedDocumentError``, unreadable or
truncated ones ``ParserError``. ``extract_pdf_text`` reads only the text layer, for PDFs
embedded in HL7 or CDA documents.
"""

from __future__ import annotations

import io
import logging
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parsers.ocr import MAX_PIXELS, OcrPage, TesseractOcr, pages_left_unread
from pipeline.errors import CarnetError, EncryptedDocumentError, ParserError
from pipeline.model import Format, ParsedDocument, Problem, Reason

if TYPE_CHECKING:
    from PIL import Image
    from pypdf import PageObject, PdfReader

log = logging.getLogger(__name__)

PDF_MAGIC = b"%PDF-"
# Producers and transports sometimes prepend whitespace or a few junk bytes; readers
# accept the header anywhere in the first 1024 bytes.
_HEADER_WINDOW = 1024
# A page of at most this many lines of text over an image of at least this many pixels
# (an A4 page scanned at 100 dpi has 0.97 million; a letterhead's logo far fewer) is a scan
# under a stamp: its image is OCR'd. A report typed over a background image has more lines.
_STAMP_LINES = 3
_SCAN_MIN_PIXELS = 900_000
# Images smaller than this (bullets, rules, logos' slivers) hold no readable text.
_MIN_OCR_IMAGE_SIDE = 16
# Placeholder titles set by PDF generators, not by the author.
_PLACEHOLDER_TITLES = frozenset({"untitled", "sans titre", "document"})


class PdfParser:
    """Reads PDFs; OCRs only the pages that have no usable text layer."""

    name = "pdf"

    def __init__(
        self, *, ocr: TesseractOcr, min_text_chars_per_page: int = 20, max_text_chars: int = 0
    ) -> None:
        self.ocr = ocr
        self.min_text_chars_per_page = min_text_chars_per_page
        # Characters of text layers read per document (0: all): what is indexed at most.
        self.max_text_chars = max_text_chars

    def score(self, head: bytes) -> int:
        position = head.find(PDF_MAGIC, 0, _HEADER_WINDOW + len(PDF_MAGIC))
        if position < 0:
            return 0
        return 100 if position == 0 or not head[:position].strip() else 80

    def parse(self, data: bytes, *, source: str) -> list[ParsedDocument]:
        reader = _open(data, source)
        pages: list[_PageText] = []
        try:
            # Text layers are read while earlier pages' scans are with tesseract: the
            # images of pages without text go to the OCR pool as they are found.
            reads = iter(list(self.ocr.read_pages(self._images_to_ocr(reader, source, pages))))
            for page in pages:
                if page.ocr_images:
                    page.add_ocr([next(reads) for _ in range(page.ocr_images)])
            title = _title(reader)
            attached = _attachments_warning(reader)
        except CarnetError:
            raise
        except Exception as exc:  # pypdf raises many types on malformed files
            raise ParserError(f"unreadable PDF: {exc}", source=source) from exc
        ocr_read = [page for page in pages if page.ocr is not None]
        confidences = [page.ocr.confidence for page in ocr_read if page.ocr is not None]
        warnings = tuple(problem for page in pages for problem in page.problems)
        if attached is not None:
            warnings += (attached,)
        log.debug("%s: %d pages, %d OCR'd", source, len(pages), len(ocr_read))
        return [
            ParsedDocument(
                source=source,
                format=Format.PDF,
                text="\n\n".join(page.text for page in pages if page.text),
                title=title,
                content=data,
                page_count=len(reader.pages),
                ocr_pages=len(ocr_read),
                ocr_confidence=sum(confidences) / len(confidences) if confidences else None,
                warnings=warnings,
            )
        ]

    def _images_to_ocr(
        self, reader: PdfReader, source: str, pages: list[_PageText]
    ) -> Iterator[tuple[Image.Image, str]]:
        """Read every page's text layer into ``pages``; yield the images to OCR, in order,
        those of the first ``ocr.max_pages`` pages that need it (a warning on the last page
        read says how many were left). Pages past ``max_text_chars`` of text are not read."""
        cap, scanned, unread, read_chars = self.ocr.max_pages, 0, 0, 0
        for number, page in enumerate(reader.pages, start=1):
            if self.max_text_chars and read_chars >= self.max_text_chars:
                # A 7 MB PDF of 30,000 pages sharing one content stream took 24 s of CPU
                # to extract, for text dropped before indexing (CARNET_MAX_TEXT_CHARS).
                pages[-1].problems.append(Problem(
                    code=Reason.TEXT_TRUNCATED, blocking=False,
                    message=f"text read on the first {number - 1} of {len(reader.pages)} pages, past"
                    f" CARNET_MAX_TEXT_CHARS ({self.max_text_chars:,}); the document is kept whole",
                ))  # fmt: skip
                break
            fields = _filled_fields(page)
            if fields:
                fragments: list[_Fragment] = []
                text = page.extract_text(visitor_text=_fragment_visitor(fragments))
                text = "\n".join([text, *(_form_line(field, fragments) for field in fields)])
            else:
                text = page.extract_text()
            result = _PageText(text=_clean(text))
            if _garbled(result.text):
                result.text = ""
                result.problems.append(Problem(
                    code=Reason.EMPTY_DOCUMENT, blocking=False,
                    message=f"page {number}: its text layer cannot be read (a font without a usable"
                    " character map): set aside, the page read by OCR of its images if it has any",
                ))  # fmt: skip
            pages.append(result)
            read_chars += len(result.text)
            if _visible_chars(result.text) >= self.min_text_chars_per_page and not _stamped_scan(
                page, result.text
            ):
                continue
            if cap and scanned >= cap:
                unread += 1
                continue
            scanned += 1
            for image in self._page_images(page, number, source, result):
                result.ocr_images += 1
                yield image, f"{source} page {number}"
        if unread:
            pages[-1].problems.append(pages_left_unread(scanned, scanned + unread, cap))

    def _page_images(
        self, page: PageObject, number: int, source: str, result: _PageText
    ) -> Iterator[Image.Image]:
        for image_id in page.images.keys():
            width, height = _declared_size(page, image_id)
            if width * height > MAX_PIXELS:  # decoding it alone would take gigabytes
                result.problems.append(Problem(
                    code=Reason.UNREADABLE_SCAN, blocking=False,
                    message=f"page {number}: image {image_id} is {width} x {height} pixels, more than"
                    f" the {MAX_PIXELS:,} a scanned page may have: not decoded",
                ))  # fmt: skip
                continue
            try:
                image = _page_image(page, image_id)
            except CarnetError:
                raise
            except Exception as exc:  # an undecodable image codec: say so, keep the rest
                name = image_id if isinstance(image_id, str) else "/".join(image_id)
                log.warning("%s page %d: cannot decode image %s: %s", source, number, name, exc)
                result.problems.append(
                    Problem(
                        code=Reason.UNREADABLE_SCAN,
                        message=f"page {number}: image {name} cannot be decoded",
                        blocking=False,
                    )
                )
                continue
            if image is None or min(image.size) < _MIN_OCR_IMAGE_SIDE:
                continue
            yield image


def _stamped_scan(page: PageObject, text: str) -> bool:
    """Whether a page is a scan under a stamp: a few lines of text (a fax server's 'Fax reçu
    le … de …', a gateway's reception line) over an image of a scanned page's size. Its text
    layer says nothing of the scan, which is OCR'd as a page without text is."""
    if sum(1 for line in text.splitlines() if line.strip()) > _STAMP_LINES:
        return False
    return any(
        width * height >= _SCAN_MIN_PIXELS
        for width, height in (_declared_size(page, image_id) for image_id in page.images.keys())
    )


def _page_image(page: PageObject, image_id: str | list[str]) -> Image.Image | None:
    """The page's image ``image_id``, decoded once.

    pypdf's ``ImageFile.image`` encodes every image it decodes to PNG (JPEG for a JPEG)
    and decodes that again: ~0.08 s of CPU on an A4 page at 300 dpi, as much as the
    image's own decoding. The plain kinds a scanner writes are decoded here instead, to
    the same pixels; anything else (masks, decode arrays, palettes, CMYK, other codecs,
    inline images) goes through pypdf.
    """
    xobject = _xobject(page, image_id)
    image = _plain_image(xobject) if xobject is not None else None
    return image if image is not None else page.images[image_id].image


def _xobject(page: PageObject, image_id: str | list[str]) -> Any:
    """The image XObject ``image_id`` of the page's resources; None for an inline image
    or one nested in a form."""
    if not isinstance(image_id, str) or image_id.startswith("~"):
        return None
    resources: Any = page.get("/Resources")
    xobjects: Any = resources.get_object().get("/XObject") if resources is not None else None
    xobject: Any = xobjects.get_object().get(image_id) if xobjects is not None else None
    return xobject.get_object() if xobject is not None else None


def _declared_size(page: PageObject, image_id: str | list[str]) -> tuple[int, int]:
    """(width, height) an image XObject declares, (0, 0) when unknown (pypdf and Pillow
    then decide, Pillow refusing past its own limit)."""
    xobject = _xobject(page, image_id)
    try:
        return int(xobject["/Width"]), int(xobject["/Height"])
    except (TypeError, KeyError, ValueError):
        return 0, 0


# Filters that only unwrap bytes before the image codec (pypdf's get_data undoes them).
_TRANSPORT_FILTERS = frozenset({"/ASCII85Decode", "/A85", "/ASCIIHexDecode", "/AHx"})
_FLATE_FILTERS = frozenset({"/FlateDecode", "/Fl"})
_JPEG_FILTERS = frozenset({"/DCTDecode", "/DCT"})
_PLAIN_MODES = {"/DeviceGray": "L", "/DeviceRGB": "RGB"}
# Any of these changes the pixels beyond the samples themselves: pypdf applies them.
_PIXEL_MODIFIERS = ("/Decode", "/SMask", "/Mask", "/ImageMask", "/SMaskInData")


def _plain_image(xobject: Any) -> Image.Image | None:
    """8-bit gray or RGB samples, deflated or JPEG; None for any other kind of image."""
    from PIL import Image

    color_space = xobject.get("/ColorSpace")
    mode = _PLAIN_MODES.get(color_space.get_object()) if color_space is not None else None
    if mode is None or xobject.get("/BitsPerComponent") != 8:
        return None
    if any(key in xobject for key in _PIXEL_MODIFIERS):
        return None
    filters = xobject.get("/Filter")
    filters = filters.get_object() if filters is not None else []
    chain = [str(name) for name in filters] if isinstance(filters, list) else [str(filters)]
    if not chain or not set(chain[:-1]) <= _TRANSPORT_FILTERS:
        return None
    data = xobject.get_data()  # every filter undone but the image codec (DCT)
    if chain[-1] in _JPEG_FILTERS:
        image = Image.open(io.BytesIO(data), formats=["JPEG"])
        image.load()  # a corrupt JPEG fails here, as pypdf's own decoding would
        return image if image.mode == mode else None
    if chain[-1] not in _FLATE_FILTERS:
        return None
    size = (int(xobject["/Width"]), int(xobject["/Height"]))
    expected = size[0] * size[1] * len(mode)
    if len(data) not in (expected, expected + 1):  # a trailing newline is tolerated
        return None
    return Image.frombytes(mode, size, data[:expected])


# How far a form field's parents are followed for its type, value and names.
_MAX_FIELD_DEPTH = 8
# Annotation flags Hidden (2) and NoView (32): a field so flagged is shown to no reader.
_HIDDEN_FLAGS = 2 | 32


@dataclass(frozen=True)
class _Field:
    """A text or choice field filled in on a page: its value, where it is, what it is."""

    value: str
    rect: tuple[float, float, float, float]  # x0, y0, x1, y1 in page space
    name: str  # the field's tooltip (TU), else its name (T)


@dataclass(frozen=True)
class _Fragment:
    """A run of text the page draws, where it starts (page space)."""

    text: str
    x: float
    y: float


def _filled_fields(page: PageObject) -> list[_Field]:
    """The text and choice fields of ``page`` that hold a value (a form filled in a PDF
    editor: the values live in the fields, not in the page's text), in page order."""
    annotations: Any = page.get("/Annots")
    annotations = annotations.get_object() if annotations is not None else None
    if not isinstance(annotations, list):
        return []
    fields = []
    for reference in annotations:
        widget: Any = reference.get_object()
        if not hasattr(widget, "get") or widget.get("/Subtype") != "/Widget":
            continue
        flags = widget.get("/F", 0)
        if isinstance(flags, int) and flags & _HIDDEN_FLAGS:  # not shown: no reader sees it
            continue
        kind, value, name = _inherited(widget, "/FT"), _inherited(widget, "/V"), None
        if kind not in ("/Tx", "/Ch") or value is None:
            continue
        values = value if isinstance(value, list) else [value]
        text = " ".join(" ".join(str(v).split()) for v in values if isinstance(v, str)).strip()
        name = _inherited(widget, "/TU") or _inherited(widget, "/T")
        try:
            x0, y0, x1, y1 = (float(c) for c in widget["/Rect"])
        except (KeyError, TypeError, ValueError):
            continue
        if text:
            rect = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            fields.append(_Field(text, rect, str(name) if isinstance(name, str) else ""))
    return fields


def _inherited(widget: Any, key: str) -> Any:
    """``key`` of a widget or of the field it belongs to (its parents)."""
    node = widget
    for _ in range(_MAX_FIELD_DEPTH):
        if key in node:
            return node[key].get_object() if hasattr(node[key], "get_object") else node[key]
        parent = node.get("/Parent")
        if parent is None:
            return None
        node = parent.get_object()
    return None


def _fragment_visitor(fragments: list[_Fragment]) -> Any:
    """A pypdf text visitor that notes where each run of text starts."""

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: Any) -> None:
        if text.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            fragments.append(_Fragment(text.strip(), x, y))

    return visit


def _form_line(field: _Field, fragments: list[_Fragment]) -> str:
    """A field's value as a line of text after its label: the text printed just left of
    it on its line (what a reader sees), else the field's own name."""
    x0, y0, x1, y1 = field.rect
    beside = [f for f in fragments if y0 - 2 <= f.y <= y1 + 2 and f.x < x0]
    label = max(beside, key=lambda f: f.x).text if beside else field.name
    return f"{label} {field.value}".strip()


@dataclass
class _PageText:
    text: str
    ocr: OcrPage | None = None  # set when the page was OCR'd
    ocr_images: int = 0  # images of this page sent to OCR
    problems: list[Problem] = field(default_factory=list)

    def add_ocr(self, reads: list[OcrPage]) -> None:
        """The page's OCR after its text layer (kept, though below the threshold)."""
        ocr_text = "\n\n".join(read.text for read in reads if read.text)
        self.text = "\n".join(part for part in (self.text, ocr_text) if part)
        self.ocr = _merge(reads)


def extract_pdf_text(data: bytes, *, source: str | None = None) -> str:
    """The text layer of a PDF (no OCR), pages separated by a blank line."""
    reader = _open(data, source)
    try:
        texts = [_clean(page.extract_text()) for page in reader.pages]
    except Exception as exc:  # pypdf raises many types on malformed files
        raise ParserError(f"unreadable PDF: {exc}", source=source) from exc
    return "\n\n".join(text for text in texts if text)


def _open(data: bytes, source: str | None) -> PdfReader:
    """A reader on ``data``, decrypted with the empty password when that is enough."""
    start = data.find(PDF_MAGIC, 0, _HEADER_WINDOW + len(PDF_MAGIC))
    if start < 0:
        raise ParserError("not a PDF: no %PDF- header", source=source)
    # Object offsets count from the header, so junk before it would shift them all.
    data = data[start:]
    # A file cut short in transfer loses its end-of-file marker; pypdf would try to
    # rebuild it and might return part of the document as if it were whole.
    if b"%%EOF" not in data[-_HEADER_WINDOW:]:
        raise ParserError("truncated PDF: no %%EOF marker at the end", source=source)
    # pypdf is imported with the first PDF (a run without PDFs does not pay for it).
    from pypdf import PasswordType, PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise EncryptedDocumentError("PDF is protected by a password", source=source)
    except CarnetError:
        raise
    except Exception as exc:  # pypdf raises many types on malformed files
        raise ParserError(f"unreadable PDF: {exc}", source=source) from exc
    return reader


# Attached files named in the warning; the rest are counted.
_NAMED_ATTACHMENTS = 5


def _attachments_warning(reader: PdfReader) -> Problem | None:
    """The warning naming the files attached to the document (its EmbeddedFiles), which
    are not read; None without any."""
    names = [" ".join(str(name).split())[:80] for name in reader.attachments]
    if not names:
        return None
    shown = ", ".join(names[:_NAMED_ATTACHMENTS]) + (", …" if len(names) > _NAMED_ATTACHMENTS else "")
    # text_truncated, as for pages left unread: part of what was sent is not indexed, and
    # never blocks (an unsupported_format warning would refuse a CDA whose body this is).
    return Problem(
        code=Reason.TEXT_TRUNCATED,
        blocking=False,
        message=f"{len(names)} file(s) attached to the PDF ({shown}) are not read, only its pages;"
        " the document is kept whole",
    )


def _title(reader: PdfReader) -> str | None:
    metadata = reader.metadata
    title = metadata.title if metadata is not None else None
    if not isinstance(title, str):
        return None
    title = " ".join(title.split())
    return title if title and title.lower() not in _PLACEHOLDER_TITLES else None


def _clean(text: str) -> str:
    # Trailing spaces and NULs are layout noise from extract_text.
    return "\n".join(line.rstrip() for line in text.replace("\x00", "").splitlines()).strip()


# Characters no text holds: controls, private-use and unassigned code points, surrogates
# and U+FFFD. A font without a character map gives them (its glyph ids read as codes).
_UNUSABLE_CATEGORIES = frozenset({"Cc", "Co", "Cn", "Cs"})
# Share of a page's visible characters past which its text layer is garbled. Real text has
# none (the odd stray one is tolerated); a glyph-id layer has one for every space and digit.
_MAX_UNUSABLE_SHARE = 0.05


def _garbled(text: str) -> bool:
    """Whether a page's text layer is glyph codes rather than text."""
    visible = [char for char in text if not char.isspace()]
    unusable = sum(1 for c in visible if c == "\ufffd" or unicodedata.category(c) in _UNUSABLE_CATEGORIES)
    return bool(visible) and unusable > _MAX_UNUSABLE_SHARE * len(visible)


def _visible_chars(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def _merge(reads: list[OcrPage]) -> OcrPage:
    """One page's OCR from several images: confidence weighted by words read."""
    words = sum(read.word_count for read in reads)
    confidence = sum(read.confidence * read.word_count for read in reads) / words if words else 0.0
    text = "\n\n".join(read.text for read in reads if read.text)
    return OcrPage(text=text, confidence=confidence, word_count=words)


__all__ = ["PdfParser", "extract_pdf_text"]
