"""One tesseract process reading page after page: its language model is loaded once.

Tesseract's ``stream_filelist`` mode reads image paths on stdin, one a line, and writes
each page's TSV rows to stdout as soon as the page is read (it flushes after every page).
Nothing marks where a page's rows end, so each page is followed by a blank 8 x 8 image:
the first row numbered with the blank's ``page_num`` says that the page before it is
complete. On 24 A4 scans at 300 dpi: 0.49 s of CPU a page, against 0.56 s with one
process a page (the model's load), for the same rows, cell for cell.

``TesseractProcess.read`` raises ``ParserError`` when tesseract fails on a page or runs
past its timeout (the process is then done for: the caller closes it),
``TesseractGone`` when a process that had read pages was found dead before it was given
the next one (its successor may read the page), and ``ConfigurationError`` when the
binary is not installed.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time

from pipeline.errors import ConfigurationError, ParserError

# A blank page: no word on it, read in a few milliseconds.
END_OF_PAGE_IMAGE = b"P5\n8 8\n255\n" + b"\xff" * 64
# What tesseract writes on stderr for every image it starts ("Page 3 : /tmp/x.bmp"): said
# for each page and its blank, it is left out of an error's message.
_PAGE_LINE = re.compile(rb"^Page \d+ : .*$", re.MULTILINE)
# The end of stderr kept for an error's message.
_STDERR_KEPT = 4096


class TesseractGone(Exception):
    """A process that had read pages died while idle (killed, out of memory)."""


class TesseractProcess:
    """A running ``tesseract stdin stdout -l LANG -c stream_filelist=true tsv``.

    Used by one thread at a time. The page's resolution comes from its image file (BMP
    and TIFF carry one), so one process serves pages of any resolution.
    """

    def __init__(self, command: str, lang: str) -> None:
        argv = [command, "stdin", "stdout", "-l", lang, "-c", "stream_filelist=true", "tsv"]
        try:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"tesseract is not installed ({command!r} not found: "
                "apt-get install tesseract-ocr tesseract-ocr-fra)"
            ) from exc
        assert self._process.stdin and self._process.stdout and self._process.stderr
        self._stdin = self._process.stdin.fileno()
        self._stdout = self._process.stdout.fileno()
        self._stderr = self._process.stderr.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._selector.register(self._stderr, selectors.EVENT_READ)
        self._named = 0  # images named on stdin so far, blanks included
        self._header: list[str] = []
        self._page_column = 1
        self._partial = b""  # stdout's bytes after its last full line
        self._errors = b""  # stderr since the current page was named
        self._released = False
        self.idle_since = time.monotonic()

    @property
    def pid(self) -> int:
        return self._process.pid

    def read(self, image: str, blank: str, *, timeout_s: float, source: str | None = None) -> list[list[str]]:
        """The TSV rows (header first) of the page image at ``image``, followed on stdin by
        the blank page at ``blank``."""
        page = self._named + 1  # tesseract numbers the images it is given from 1
        self._errors = b""
        try:
            os.write(self._stdin, f"{image}\n{blank}\n".encode())
        except BrokenPipeError as exc:
            if self._named:
                raise TesseractGone(f"tesseract (pid {self.pid}) ended while idle") from exc
            raise self._failure(source) from exc
        self._named += 2
        rows = self._rows_until(page, time.monotonic() + timeout_s, timeout_s, source)
        self.idle_since = time.monotonic()
        return [self._header, *rows]

    def _rows_until(
        self, page: int, deadline: float, timeout_s: float, source: str | None
    ) -> list[list[str]]:
        rows: list[list[str]] = []
        while True:
            remaining = deadline - time.monotonic()
            events = self._selector.select(remaining) if remaining > 0 else []
            if not events:
                self.kill()
                raise ParserError(f"OCR gave up after {timeout_s:g} s", source=source)
            for key, _ in events:
                chunk = os.read(key.fd, 65536)
                if key.fd == self._stderr:
                    if chunk:
                        self._errors = (self._errors + chunk)[-_STDERR_KEPT:]
                    else:
                        self._selector.unregister(self._stderr)
                    continue
                if not chunk:  # stdout closed: tesseract ended amid the page
                    raise self._failure(source)
                lines = (self._partial + chunk).split(b"\n")
                self._partial = lines.pop()
                if self._complete(lines, page, rows):
                    return rows

    def _complete(self, lines: list[bytes], page: int, rows: list[list[str]]) -> bool:
        """Add the rows of ``page`` among ``lines``; whether the blank after it has begun."""
        done = False
        for line in lines:
            cells = line.decode("utf-8", "replace").rstrip("\r").split("\t")
            if not self._header:
                self._header = cells
                self._page_column = cells.index("page_num") if "page_num" in cells else 1
                continue
            cell = cells[self._page_column] if len(cells) > self._page_column else ""
            number = int(cell) if cell.isdigit() else 0
            if number == page:
                rows.append(cells)
            elif number > page:
                done = True
        return done

    def _failure(self, source: str | None) -> ParserError:
        """Tesseract has ended: its exit status and what it said on stderr."""
        self._drain_stderr()
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self._process.returncode
        said = " ".join(_PAGE_LINE.sub(b"", self._errors).decode("utf-8", "replace").split())
        return ParserError(f"tesseract failed ({code}): {said or 'no message'}", source=source)

    def _drain_stderr(self) -> None:
        deadline = time.monotonic() + 2
        while self._stderr in self._selector.get_map():
            if not self._selector.select(max(0.0, deadline - time.monotonic())):
                return
            chunk = os.read(self._stderr, 65536)
            if not chunk:
                self._selector.unregister(self._stderr)
                return
            self._errors = (self._errors + chunk)[-_STDERR_KEPT:]

    def close(self) -> None:
        """End of input: tesseract ends (killed if it has not within a few seconds)."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._release()

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._selector.close()
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
