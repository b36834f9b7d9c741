"""The one place where Carnet's parsers are listed; the best-scoring parser wins."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from parsers.base import SNIFF_BYTES, Parser


@dataclass(frozen=True)
class ParserOptions:
    """What parsers may be configured with (built from ``Settings`` by the caller)."""

    ocr_lang: str = "fra"
    ocr_timeout_s: int = 120
    min_text_chars_per_page: int = 20
    # Tesseract processes at once (``Settings.ocr.workers``: the CPUs this process may use).
    ocr_workers: int = 1
    # Shared by parsers in several processes: tesseract runs at once among them all (see
    # ``TesseractOcr``); ``None`` in a single process, where ``ocr_workers`` bounds them.
    ocr_slots: AbstractContextManager[object] | None = None
    # The tesseract binary: a name on the PATH, or a path.
    ocr_command: str = "tesseract"
    # Pages OCR'd per document, the rest left unread with a warning; 0: no limit.
    ocr_max_pages: int = 200
    # Characters of a PDF's text layers read (``Settings.ingestion.max_text_chars``, what is
    # indexed at most): its further pages are not read, with a warning; 0: no limit.
    max_text_chars: int = 0


class ParserRegistry:
    def __init__(self, parsers: list[Parser]) -> None:
        self.parsers = list(parsers)

    def choose(self, data: bytes) -> Parser | None:
        """The parser scoring highest on the first bytes of ``data``, or None."""
        best: tuple[int, Parser] | None = None
        for parser in self.parsers:
            score = parser.score(data[: getattr(parser, "sniff_bytes", SNIFF_BYTES)])
            if score > 0 and (best is None or score > best[0]):
                best = (score, parser)
        return best[1] if best else None


def default_registry(options: ParserOptions | None = None) -> ParserRegistry:
    """The built-in parsers: PDF (text layer + OCR fallback), images (OCR), HL7 v2, CDA R2.

    The HL7 parser reads the documents its messages carry (OBX ED) with the same PDF,
    image and CDA parsers.
    """
    from parsers.hl7 import Hl7Parser

    documents = document_registry(options)
    pdf, image, cda = documents.parsers
    return ParserRegistry([pdf, image, Hl7Parser(embedded=documents), cda])


def document_registry(options: ParserOptions | None = None) -> ParserRegistry:
    """The parsers of documents an HL7 message may carry in an OBX ED: PDF, images, CDA."""
    from parsers.cda import CdaParser
    from parsers.image import ImageParser
    from parsers.ocr import TesseractOcr
    from parsers.pdf import PdfParser

    opts = options or ParserOptions()
    ocr = TesseractOcr(
        lang=opts.ocr_lang,
        timeout_s=opts.ocr_timeout_s,
        workers=opts.ocr_workers,
        slots=opts.ocr_slots,
        command=opts.ocr_command,
        max_pages=opts.ocr_max_pages,
    )
    return ParserRegistry([
        PdfParser(
            ocr=ocr, min_text_chars_per_page=opts.min_text_chars_per_page, max_text_chars=opts.max_text_chars
        ),
        ImageParser(ocr=ocr),
        CdaParser(ocr=ocr, min_text_chars_per_page=opts.min_text_chars_per_page),
    ])  # fmt: skip
