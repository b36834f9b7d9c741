"""Tesseract OCR behind one small class: one tesseract run per page image.

``TesseractOcr.read`` returns an ``OcrPage`` (text rebuilt line by line, mean word
confidence, word count) from a single ``image_to_data`` call, so a page is never
recognised twice. ``TesseractOcr.read_pages`` reads the pages of a document on every
core: one tesseract process per worker (``workers``, one thread each waiting on its
process), results in page order; ``slots``, when given, is a semaphore shared with other
processes' engines, held while tesseract runs, so that parsers in several processes
together never run more than its count. Failures reading a page raise ``ParserError``; a
missing tesseract binary raises ``ConfigurationError`` (a broken install, not a bad
document).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from PIL import Image

from pipeline.errors import ConfigurationError, ParserError

log = logging.getLogger(__name__)

# Below this many pixels on the long side a page is upscaled: tesseract reads best when
# capital letters are 20+ px tall, which small screenshots or thumbnails do not give.
_MIN_LONG_SIDE = 1600
_MAX_UPSCALE = 4.0
# Assumed resolution when the image does not say (typical scanner setting). Without it
# tesseract guesses (and warns about) a resolution, which skews its noise filters.
_DEFAULT_DPI = 300


@dataclass(frozen=True)
class OcrPage:
    """What tesseract read on one page image."""

    text: str
    confidence: float  # mean word confidence 0-100; 0.0 when no word was recognised
    word_count: int


class TesseractOcr:
    """Runs the tesseract binary (through pytesseract) on page images."""

    def __init__(
        self,
        *,
        lang: str = "fra",
        timeout_s: int = 120,
        workers: int = 1,
        slots: AbstractContextManager[object] | None = None,
    ) -> None:
        self.lang = lang
        self.timeout_s = timeout_s
        self.workers = max(1, workers)
        self.slots = slots
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def read(self, image: Image.Image, *, source: str | None = None) -> OcrPage:
        """Recognise the text of one page image."""
        prepared, dpi = _prepare(image)
        _limit_openmp_threads()
        # pytesseract would write the image as PNG (deflate, then inflated again by
        # tesseract): ~0.1 s of CPU a page for nothing. An uncompressed PGM costs a copy.
        # Imported here: pytesseract imports pandas when it is installed (~0.5 s of CPU),
        # which a run without scans should not pay at start-up.
        import pytesseract

        handle, path = tempfile.mkstemp(prefix="carnet-ocr-", suffix=".pgm")
        try:
            with os.fdopen(handle, "wb") as fh:
                prepared.save(fh, "PPM")
            with self.slots or nullcontext():
                data = pytesseract.image_to_data(
                    path,
                    lang=self.lang,
                    config=f"--dpi {dpi}",
                    output_type=pytesseract.Output.DICT,
                    timeout=self.timeout_s,
                )
        except pytesseract.TesseractNotFoundError as exc:
            raise ConfigurationError(
                "tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-fra)",
                source=source,
            ) from exc
        except pytesseract.TesseractError as exc:
            raise ParserError(f"tesseract failed: {exc.message}", source=source) from exc
        except RuntimeError as exc:  # pytesseract's way of reporting its timeout
            raise ParserError(f"OCR gave up after {self.timeout_s} s: {exc}", source=source) from exc
        finally:
            os.unlink(path)
        return _page_from_data(data)

    def read_pages(self, pages: Iterable[tuple[Image.Image, str]]) -> Iterator[OcrPage]:
        """Read ``(image, source)`` pages ``workers`` at a time; yield results in page order.

        ``pages`` is consumed lazily: at most twice ``workers`` decoded pages are held at
        once, so a long scan does not sit whole in memory. The first failure is raised
        (in page order) and the pages not yet started are cancelled.
        """
        if self.workers == 1:
            for image, source in pages:
                yield self.read(image, source=source)
            return
        pool = self._executor()
        running: deque[Future[OcrPage]] = deque()
        try:
            for image, source in pages:
                running.append(pool.submit(self.read, image, source=source))
                if len(running) >= 2 * self.workers:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:
            for future in running:
                future.cancel()

    def _executor(self) -> ThreadPoolExecutor:
        # One pool per OCR engine, shared by every parser (and thread) using it: the
        # number of tesseract processes never exceeds ``workers``. Created on first use,
        # so runs without scans start no thread.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tesseract")
            return self._pool


def _limit_openmp_threads() -> None:
    # tesseract is built with OpenMP; on a small machine running several tesseract
    # processes (one per core), its threads fight each other and a page takes ~6x longer.
    # One thread per process is the fastest setup. pytesseract starts tesseract with
    # os.environ, so the limit goes there; a value set by the operator is left alone.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def _prepare(image: Image.Image) -> tuple[Image.Image, int]:
    """Grayscale (drops alpha and palettes), upscaled when small; with its resolution."""
    dpi = _image_dpi(image)
    if image.mode == "RGBA" or image.mode == "LA" or "transparency" in image.info:
        # Transparent pixels are often black underneath: paint them white first.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    # An 8-bit gray page is used as it is (convert would copy it: ~9 MB for an A4 page).
    gray = image if image.mode == "L" else image.convert("L")
    long_side = max(gray.size)
    if 0 < long_side < _MIN_LONG_SIDE:
        factor = min(_MAX_UPSCALE, _MIN_LONG_SIDE / long_side)
        size = (round(gray.width * factor), round(gray.height * factor))
        gray = gray.resize(size, Image.Resampling.LANCZOS)
        dpi = round(dpi * factor)
    return gray, dpi


def _image_dpi(image: Image.Image) -> int:
    raw = image.info.get("dpi")
    try:
        dpi = round(float(raw[0])) if raw else 0
    except (TypeError, ValueError, IndexError):
        dpi = 0
    # Some files carry 1 or 72 "dpi" that says nothing about the scan.
    return dpi if 100 <= dpi <= 1200 else _DEFAULT_DPI


def _page_from_data(data: dict[str, list[object]]) -> OcrPage:
    """Rebuild the text line by line from tesseract's word table, with its confidence."""
    lines: dict[tuple[int, int, int], list[str]] = {}
    confidences: list[float] = []
    for i, word in enumerate(data["text"]):
        word = str(word).strip()
        conf = float(str(data["conf"][i]))
        if not word or conf < 0:  # conf -1 marks page/block/line rows, not words
            continue
        key = (int(str(data["block_num"][i])), int(str(data["par_num"][i])), int(str(data["line_num"][i])))
        lines.setdefault(key, []).append(word)
        confidences.append(conf)
    text_lines: list[str] = []
    previous_block: tuple[int, int] | None = None
    for (block, par, _line), words in lines.items():
        if previous_block is not None and (block, par) != previous_block:
            text_lines.append("")  # blank line between paragraphs
        previous_block = (block, par)
        text_lines.append(" ".join(words))
    mean = sum(confidences) / len(confidences) if confidences else 0.0
    return OcrPage(text="\n".join(text_lines), confidence=mean, word_count=len(confidences))
