"""Tesseract OCR behind one small class: one tesseract pass per page image.

``TesseractOcr.read`` returns an ``OcrPage`` (text rebuilt line by line, mean word
confidence, word count) from the page's TSV, so a page is never recognised twice.
``TesseractOcr.read_pages`` reads the pages of a document on every core: one tesseract
process per worker (``workers``, one thread each waiting on its process), results in
page order; ``slots``, when given, is a semaphore shared with other processes' engines,
held while tesseract reads a page, so that parsers in several processes together never
read more pages at once than its count. Failures reading a page raise ``ParserError``; a
missing tesseract binary raises ``ConfigurationError`` (a broken install, not a bad
document).

Tesseract runs as a subprocess that reads page after page (``parsers.tesseract``), kept
between pages and documents: loading its model costs ~0.07 s of CPU, an eighth of a
page. At most ``workers`` wait idle in an engine, each ended after ``IDLE_S`` seconds
without a page, and when the interpreter exits. pytesseract is not used: it starts one
process a page and imports pandas when it is installed (~0.35 s of CPU in every process
that reads a scan, for an output type Carnet never asks).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from PIL import Image

from parsers.tesseract import END_OF_PAGE_IMAGE, TesseractGone, TesseractProcess
from pipeline.errors import ConfigurationError
from pipeline.model import Problem, Reason

log = logging.getLogger(__name__)

# Below this many pixels on the long side a page is upscaled: tesseract reads best when
# capital letters are 20+ px tall, which small screenshots or thumbnails do not give.
_MIN_LONG_SIDE = 1600
_MAX_UPSCALE = 4.0
# Pixels a page image may have. An A3 page scanned at 600 dpi has 70 million; Pillow
# refuses only past 179 million, and an image that size costs gigabytes once decoded and
# prepared for OCR (a 700 KB PNG of 13,000 x 13,000 transparent pixels: 3.5 GB), so the
# parsers refuse a bigger one from its declared size, before decoding it.
MAX_PIXELS = 80_000_000
# Pillow also warns, on stderr, when it opens an image past 89 million pixels: such a page
# is refused above, with a reason, so the warning would only be noise on the run's stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Assumed resolution when the image does not say (typical scanner setting). Without it
# tesseract guesses (and warns about) a resolution, which skews its noise filters.
_DEFAULT_DPI = 300
# Below this mean word confidence a page may be turned (upright text reads at 80-95; a
# sideways or upside-down page at 40-50): its orientation is detected, and the page read
# again turned upright if that reads better. ~0.4 s of CPU, paid by such pages only.
ORIENT_BELOW_CONFIDENCE = 65.0
# Tesseract's orientation confidence under which its answer is not tried (measured: 6-8
# for a turned page of a report, 2.5 for one at half that size); the turned page is kept
# only if it reads better anyway.
_MIN_OSD_CONFIDENCE = 1.0
_OSD_ROTATE = re.compile(rb"^Rotate: (\d+)$", re.MULTILINE)
_OSD_CONFIDENCE = re.compile(rb"^Orientation confidence: ([0-9.]+)$", re.MULTILINE)
# Seconds an idle tesseract process is kept for the next page: a run's pages follow each
# other closely; a server between two uploads should not hold processes (~50 MB each).
IDLE_S = 10.0


@dataclass(frozen=True)
class OcrPage:
    """What tesseract read on one page image."""

    text: str
    confidence: float  # mean word confidence 0-100; 0.0 when no word was recognised
    word_count: int


class TesseractOcr:
    """Runs the tesseract binary (``command``, found on the PATH) on page images."""

    def __init__(
        self,
        *,
        lang: str = "fra",
        timeout_s: int = 120,
        workers: int = 1,
        slots: AbstractContextManager[object] | None = None,
        command: str = "tesseract",
        max_pages: int = 0,
    ) -> None:
        self.command = command
        # Pages of one document the parsers hand over (0: all); they say what was left.
        self.max_pages = max_pages
        self.lang = lang
        self.timeout_s = timeout_s
        self.workers = max(1, workers)
        self.slots = slots
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._idle: list[TesseractProcess] = []
        self._idle_lock = threading.Lock()
        self._reaper: threading.Thread | None = None
        _engines.add(self)

    def read(self, image: Image.Image, *, source: str | None = None) -> OcrPage:
        """Recognise the text of one page image; a page read poorly is turned upright first
        when tesseract's orientation detection says it is sideways or upside down."""
        prepared, dpi = prepare_page(image)
        with tempfile.TemporaryDirectory(prefix="carnet-ocr-") as folder:
            # BMP carries the resolution (so one tesseract serves pages of any resolution)
            # and is the cheapest to write: 7 ms for an A4 page at 300 dpi, against 11 for
            # a PGM (which has none) and 24 for an uncompressed PNG.
            page, blank = os.path.join(folder, "page.bmp"), os.path.join(folder, "blank.pgm")
            prepared.save(page, "BMP", dpi=(dpi, dpi))
            with open(blank, "wb") as fh:
                fh.write(END_OF_PAGE_IMAGE)
            with self.slots or nullcontext():
                read = _page_from_data(_tsv_columns(self._recognise(page, blank, source)))
                # A page turned on the scanner bed carries no orientation tag, and reads as
                # letter soup of low confidence. Only such pages pay for the detection.
                if 0 < read.word_count and read.confidence < ORIENT_BELOW_CONFIDENCE:
                    turn = self._orientation(page, source)
                    if turn:
                        prepared.rotate(-turn, expand=True).save(page, "BMP", dpi=(dpi, dpi))
                        turned = _page_from_data(_tsv_columns(self._recognise(page, blank, source)))
                        if turned.confidence > read.confidence:
                            log.info("%s: read turned %d degrees clockwise", source, turn)
                            read = turned
        return read

    def _orientation(self, page: str, source: str | None) -> int:
        """Degrees (clockwise) that turn the page image at ``page`` upright, by tesseract's
        orientation and script detection; 0 when it is upright or cannot tell."""
        argv = [self.command, page, "stdout", "--psm", "0", "-l", "osd"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s: orientation not detected: %s", source, exc)
            return 0
        # A page of too few letters, or an install without osd.traineddata: left as it is.
        found = _OSD_ROTATE.search(done.stdout)
        confidence = _OSD_CONFIDENCE.search(done.stdout)
        if done.returncode != 0 or found is None or confidence is None:
            return 0
        if float(confidence.group(1)) < _MIN_OSD_CONFIDENCE:
            return 0
        return int(found.group(1)) % 360

    def _recognise(self, page: str, blank: str, source: str | None) -> list[list[str]]:
        process = self._checkout(source)
        try:
            try:
                rows = process.read(page, blank, timeout_s=self.timeout_s, source=source)
            except TesseractGone:
                # Died while idle, before this page: a fresh process reads it.
                log.warning("a tesseract process ended while idle: starting another")
                process.close()
                process = self._start(source)
                rows = process.read(page, blank, timeout_s=self.timeout_s, source=source)
        except BaseException:
            process.close()  # amid a page: its next rows would be this page's
            raise
        self._checkin(process)
        return rows

    def _start(self, source: str | None) -> TesseractProcess:
        _limit_openmp_threads()
        try:
            return TesseractProcess(self.command, self.lang)
        except ConfigurationError as exc:
            raise ConfigurationError(str(exc), source=source) from exc

    def _checkout(self, source: str | None) -> TesseractProcess:
        """An idle process (the one used last: its pages are warm in the cache), or a new one."""
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return self._start(source)

    def _checkin(self, process: TesseractProcess) -> None:
        with self._idle_lock:
            if len(self._idle) < self.workers:
                self._idle.append(process)
                if self._reaper is None:
                    self._reaper = threading.Thread(target=self._reap, name="tesseract-reaper", daemon=True)
                    self._reaper.start()
                return
        process.close()

    def _reap(self) -> None:
        """Close the processes idle for ``IDLE_S``; the thread ends with the last of them."""
        while True:
            time.sleep(IDLE_S / 4)
            now = time.monotonic()
            with self._idle_lock:
                expired = [p for p in self._idle if now - p.idle_since >= IDLE_S]
                self._idle = [p for p in self._idle if p not in expired]
                if not self._idle:
                    self._reaper = None
            for process in expired:
                process.close()
            if self._reaper is None:
                return

    def close(self) -> None:
        """End the idle tesseract processes (those at work end when their page is read)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for process in idle:
            process.close()

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
    # One thread per process is the fastest setup. Tesseract is started with os.environ,
    # so the limit goes there; a value set by the operator is left alone.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def prepare_page(image: Image.Image) -> tuple[Image.Image, int]:
    """The page as tesseract is given it: grayscale (drops alpha and palettes), upscaled
    when small; with its resolution."""
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


def _tsv_columns(rows: list[list[str]]) -> dict[str, list[str]]:
    """Tesseract's TSV rows (header first) as columns (header name -> cells); a row's
    missing last cell (an empty text at the end of the output) is empty."""
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    return {name: [row[i] if i < len(row) else "" for row in body] for i, name in enumerate(header)}


def _page_from_data(data: dict[str, list[str]]) -> OcrPage:
    """Rebuild the text line by line from tesseract's word table, with its confidence."""
    lines: dict[tuple[int, int, int], list[str]] = {}
    boxes: dict[tuple[int, int, int], tuple[int, int, int, int]] = {}  # left, top, right, bottom
    confidences: list[float] = []
    for i, word in enumerate(data.get("text", ())):
        word = word.strip()
        # Tesseract gives confidences with decimals; they are read whole, as pytesseract
        # read them before, so that stored confidences and the gate's checks do not move.
        conf = float(int(float(data["conf"][i])))
        if not word or conf < 0:  # conf -1 marks page/block/line rows, not words
            continue
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        lines.setdefault(key, []).append(word)
        box = _union(boxes.get(key), _word_box(data, i))
        if box is not None:
            boxes[key] = box
        confidences.append(conf)
    _join_boxed_values(lines, boxes)
    text_lines: list[str] = []
    previous_block: tuple[int, int] | None = None
    for (block, par, _line), words in lines.items():
        if previous_block is not None and (block, par) != previous_block:
            text_lines.append("")  # blank line between paragraphs
        previous_block = (block, par)
        text_lines.append(" ".join(words))
    mean = sum(confidences) / len(confidences) if confidences else 0.0
    return OcrPage(text="\n".join(text_lines), confidence=mean, word_count=len(confidences))


def _word_box(data: dict[str, list[str]], i: int) -> tuple[int, int, int, int] | None:
    try:
        left, top = int(data["left"][i]), int(data["top"][i])
        return left, top, left + int(data["width"][i]), top + int(data["height"][i])
    except (KeyError, IndexError, ValueError):
        return None


def _union(
    a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None
) -> tuple[int, int, int, int] | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _join_boxed_values(
    lines: dict[tuple[int, int, int], list[str]], boxes: dict[tuple[int, int, int], tuple[int, int, int, int]]
) -> None:
    """Read a block of one line that stands level with an earlier line, to its right, at
    the end of that line: a value printed in a box of its own ('Clé [72]', a form's field)
    is a block to tesseract, read after all the others, away from its label. A block of
    several lines (a column) stays where tesseract put it."""
    per_block: dict[int, int] = {}
    for block, _par, _line in lines:
        per_block[block] = per_block.get(block, 0) + 1
    keys = list(lines)
    for index, key in enumerate(keys):
        box = boxes.get(key)
        if per_block[key[0]] != 1 or box is None:
            continue
        for earlier in keys[:index]:
            target = boxes.get(earlier)
            if earlier[0] == key[0] or earlier not in lines or target is None or target[2] > box[0]:
                continue
            overlap = min(box[3], target[3]) - max(box[1], target[1])
            if overlap * 2 >= min(box[3] - box[1], target[3] - target[1]) > 0:
                lines[earlier].extend(lines.pop(key))
                boxes[earlier] = (target[0], min(box[1], target[1]), box[2], max(box[3], target[3]))
                break


def pages_left_unread(read: int, total: int, max_pages: int, *, more: bool = False) -> Problem:
    """The warning of a document whose pages past ``max_pages`` were not OCR'd (``more``:
    it has more than ``total``, which were not counted)."""
    return Problem(
        code=Reason.TEXT_TRUNCATED,
        blocking=False,
        message=f"only the first {read} of {'more than ' if more else ''}{total:,} scanned pages were "
        f"read (CARNET_OCR_MAX_PAGES {max_pages}); the document is kept whole",
    )


_engines: weakref.WeakSet[TesseractOcr] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    # Idle processes would end anyway when this process's pipes close; closed here, they
    # are waited for, not left to whoever reaps orphans.
    for engine in list(_engines):
        engine.close()
