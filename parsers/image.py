"""Scanned documents sent as images (PNG, JPEG, TIFF, WebP): every page OCR'd.

A multi-page TIFF is one document whose frames are its pages. An image that Pillow
cannot decode raises ``ParserError``, and so does a page of more than ``MAX_PIXELS``
pixels, before it is decoded; a blank page is not an error (it yields little or no text,
which later checks reject).
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterator

from PIL import ExifTags, Image, ImageSequence, UnidentifiedImageError

from parsers.ocr import MAX_PIXELS, OcrPage, TesseractOcr, pages_left_unread
from pipeline.errors import CarnetError, ParserError
from pipeline.model import Format, ParsedDocument, Problem

log = logging.getLogger(__name__)

_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG (SOI + first marker)
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)
# HEIF brands (ISO/IEC 23008-12, MIAF; AVIF is HEIF with AV1 images): an iPhone's photos are
# HEIC by default. Pillow has no decoder for them; they are refused saying so.
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)


def is_webp(head: bytes) -> bool:
    """A WebP image (a RIFF container of form type WEBP): Android phones and messaging
    apps save photos so."""
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def unread_photo_format(head: bytes) -> str | None:
    """What a photo Carnet does not read is (HEIC, AVIF), with what to send instead; None
    for anything else."""
    if head[4:8] != b"ftyp" or head[8:12] not in _HEIF_BRANDS:
        return None
    return (
        "a HEIF photo (HEIC or AVIF, an iPhone's default format), which Carnet does not read: "
        "send it as JPEG (iPhone: Settings > Camera > Formats > Most Compatible) or PDF"
    )


# Frames of a multi-page image counted for its page count; past it, "more than" this.
MAX_COUNTED_FRAMES = 2_000

# EXIF orientation -> the transposition that shows the page upright. Phones store a photo
# taken in portrait sideways, with this tag saying how to turn it; tesseract reads the
# pixels as stored, so a photographed prescription was read sideways (and rejected).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageParser:
    """OCRs every page (frame) of a PNG, JPEG, TIFF or WebP scan or photo."""

    name = "image"

    def __init__(self, *, ocr: TesseractOcr) -> None:
        self.ocr = ocr

    def score(self, head: bytes) -> int:
        return 100 if head.startswith(_MAGIC) or is_webp(head) else 0

    def parse(self, data: bytes, *, source: str) -> list[ParsedDocument]:
        reads: list[OcrPage] = []
        warnings: tuple[Problem, ...] = ()
        total = 0
        try:
            with Image.open(io.BytesIO(data)) as image:
                frames = _frames(image, source)
                cap = self.ocr.max_pages
                if cap:
                    frames = itertools.islice(frames, cap)
                reads = list(self.ocr.read_pages(frames))
                total, more = _frame_count(image)
                if total > len(reads):
                    warnings = (pages_left_unread(len(reads), total, cap, more=more),)
        except CarnetError:
            raise
        except (
            UnidentifiedImageError,
            OSError,
            SyntaxError,
            ValueError,
            EOFError,
            Image.DecompressionBombError,
        ) as exc:  # Pillow's ways of saying "corrupt"
            raise ParserError(f"unreadable image: {exc}", source=source) from exc
        if not reads:
            raise ParserError("image has no frames", source=source)
        log.debug("%s: %d pages OCR'd", source, len(reads))
        return [
            ParsedDocument(
                source=source,
                format=Format.IMAGE,
                text="\n\n".join(read.text for read in reads if read.text),
                content=data,
                page_count=max(total, len(reads)),
                ocr_pages=len(reads),
                ocr_confidence=sum(read.confidence for read in reads) / len(reads),
                warnings=warnings,
            )
        ]


def _frame_count(image: Image.Image) -> tuple[int, bool]:
    """The number of frames of ``image``, counted up to ``MAX_COUNTED_FRAMES``, and whether
    it has more. Pillow's ``n_frames`` reads every IFD of a TIFF, each slower than the last
    (154 s of CPU for the 200,000 one-pixel frames a 23 MB file can hold); the count only
    says how many pages were left unread."""
    count = 1
    try:
        while count <= MAX_COUNTED_FRAMES:
            image.seek(count)  # from the frame read last: one IFD further each time
            count += 1
    except EOFError:
        return count, False
    return MAX_COUNTED_FRAMES, True


def _frames(image: Image.Image, source: str) -> Iterator[tuple[Image.Image, str]]:
    """Each frame decoded on its own (a corrupt frame fails here, not in OCR)."""
    for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
        width, height = frame.size  # read from the header: nothing is decoded yet
        if width * height > MAX_PIXELS:
            raise ParserError(
                f"page {number} is {width} x {height} pixels, more than the {MAX_PIXELS:,}"
                " a scanned page may have (a decompression bomb?)",
                source=source,
            )
        # A copy (a transposition is one): the iterator moves one shared image object from
        # frame to frame, while the OCR pool may still be reading the previous ones.
        orientation = frame.getexif().get(ExifTags.Base.Orientation)
        upright = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
        yield (frame.transpose(upright) if upright is not None else frame.copy()), f"{source} page {number}"
