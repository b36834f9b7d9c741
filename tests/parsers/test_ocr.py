"""TesseractOcr's own behaviour around the tesseract binary: its output read, its
processes kept between pages and replaced when they fail, its failures turned into
Carnet's errors. Fakes speak tesseract's ``stream_filelist`` protocol; the real engine is
checked against a plain ``tesseract IMAGE stdout tsv`` run here, and exercised by the
image and PDF tests."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from parsers import ocr
from parsers.ocr import TesseractOcr
from pipeline.errors import ConfigurationError, ParserError

SAMPLES = Path(__file__).parents[1] / "samples" / "image"
_HEADER = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"


def _fake(tmp_path: Path, page: str, *, start: str = "") -> str:
    """A tesseract reading image paths on stdin as ``stream_filelist`` does: ``start`` runs
    once, then ``page`` (Python, with ``n`` the image's number, ``path`` its path, ``row``
    a function writing one TSV row of page ``n``) for each image but the blank pages,
    which get their one page row. Its pid goes to ``ended`` when stdin is closed."""
    path = tmp_path / "tesseract"
    body = "\n".join("        " + line for line in page.splitlines())
    path.write_text(
        f"""#!{sys.executable}
import os, sys, time
assert sys.argv[1:3] == ["stdin", "stdout"] and "stream_filelist=true" in sys.argv, sys.argv
assert sys.argv[-1] == "tsv", sys.argv
{start}
def row(*cells):
    sys.stdout.write("\\t".join(str(c) for c in cells) + "\\n")
sys.stdout.write({_HEADER!r} + "\\n")
sys.stdout.flush()
n = 0
for line in sys.stdin:
    n += 1
    path = line.strip()
    if path.endswith("blank.pgm"):
        row(1, n, 0, 0, 0, 0, 0, 0, 8, 8, -1, "")
    else:
{body}
    sys.stdout.flush()
with open({str(tmp_path / "ended")!r}, "a") as ended:
    ended.write("%d\\n" % os.getpid())
"""
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# A page whose one word is the pid of the process that read it.
_PID_WORD = "row(5, n, 1, 1, 1, 1, 0, 0, 10, 10, 90, os.getpid())"


def _page() -> Image.Image:
    return Image.new("L", (1700, 2200), 255)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_words_are_read_from_the_tsv_on_stdout_by_line_and_paragraph(tmp_path: Path) -> None:
    page = """\
row(1, n, 0, 0, 0, 0, 0, 0, 1700, 2200, -1, "")
row(5, n, 1, 1, 1, 1, 0, 0, 10, 10, 95.8, "Bonjour")
row(5, n, 1, 1, 1, 2, 0, 0, 10, 10, 90.2, "Madame")
row(5, n, 2, 1, 1, 1, 0, 0, 10, 10, 80, "Créatinine")
sys.stdout.write("4\\t%d\\t2\\t1\\t2\\t0\\t0\\t0\\t10\\t10\\t-1\\n" % n)  # no (empty) text cell"""
    engine = TesseractOcr(command=_fake(tmp_path, page))
    for _ in range(2):  # the second page from the same process: only its own rows
        read = engine.read(_page())
        assert read.text == "Bonjour Madame\n\nCréatinine"
        assert read.word_count == 3
        assert read.confidence == (95 + 90 + 80) / 3  # whole confidences, as always read
    engine.close()


def test_one_process_reads_page_after_page(tmp_path: Path) -> None:
    engine = TesseractOcr(command=_fake(tmp_path, _PID_WORD))
    pids = {engine.read(_page()).text for _ in range(4)}
    assert len(pids) == 1
    engine.close()
    assert (tmp_path / "ended").read_text().split() == list(pids)  # closed: it ended


def test_pages_read_on_several_cores_keep_one_process_per_worker(tmp_path: Path) -> None:
    engine = TesseractOcr(command=_fake(tmp_path, "time.sleep(0.2)\n" + _PID_WORD), workers=2)
    pids = [read.text for read in engine.read_pages((_page(), f"p{n}") for n in range(8))]
    assert len(set(pids)) == 2
    engine.close()


def test_a_page_of_more_output_than_a_pipe_holds_is_read_whole(tmp_path: Path) -> None:
    page = "for w in range(6000):\n    row(5, n, 1, 1, 1 + w // 10, w, 0, 0, 10, 10, 90, 'mot%05d' % w)"
    engine = TesseractOcr(command=_fake(tmp_path, page))
    for _ in range(2):
        read = engine.read(_page())
        assert read.word_count == 6000 and read.text.split()[-1] == "mot05999"
    engine.close()


def test_a_failing_tesseract_is_a_parser_error(tmp_path: Path) -> None:
    fake = _fake(tmp_path, "pass", start="sys.stderr.write('Error in pixReadStream\\n'); sys.exit(1)")
    said = r"tesseract failed \(1\): Error in pixReadStream \[source=scan.png\]$"
    with pytest.raises(ParserError, match=said):
        TesseractOcr(command=fake).read(_page(), source="scan.png")


def test_a_page_failing_amid_a_stream_fails_alone(tmp_path: Path) -> None:
    page = f"""\
if n == 3:
    sys.stderr.write("Page %d : %s\\nError in pixRead: image unreadable\\n" % (n, path))
    sys.exit(1)
{_PID_WORD}"""
    engine = TesseractOcr(command=_fake(tmp_path, page))
    first = engine.read(_page()).text
    said = r"failed \(1\): Error in pixRead: image unreadable \[source=scan.png\]$"
    with pytest.raises(ParserError, match=said):
        engine.read(_page(), source="scan.png")  # the process's second page: n == 3
    assert engine.read(_page()).text not in ("", first)  # a new process
    engine.close()


def test_a_tesseract_past_its_timeout_is_a_parser_error_and_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    fake = _fake(tmp_path, f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(30)")
    engine = TesseractOcr(command=fake, timeout_s=1)
    with pytest.raises(ParserError, match="gave up after 1 s"):
        engine.read(_page(), source="scan.png")
    assert not _alive(int(pid_file.read_text()))  # killed and reaped, not kept for the next page
    engine.close()
    assert not (tmp_path / "ended").exists()


def test_a_process_that_died_while_idle_is_replaced(tmp_path: Path) -> None:
    engine = TesseractOcr(command=_fake(tmp_path, _PID_WORD))
    first = int(engine.read(_page()).text)
    os.kill(first, signal.SIGKILL)
    assert _wait_until(lambda: not _alive(first) or _zombie(first))
    second = int(engine.read(_page()).text)
    assert second != first
    engine.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


def test_idle_processes_end_after_a_while(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocr, "IDLE_S", 0.3)
    engine = TesseractOcr(command=_fake(tmp_path, _PID_WORD))
    pid = engine.read(_page()).text
    assert _wait_until(lambda: (tmp_path / "ended").exists(), timeout=5)
    assert (tmp_path / "ended").read_text().split() == [pid]
    assert engine.read(_page()).text != pid  # the next page starts a new one
    engine.close()


def test_a_missing_tesseract_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not installed"):
        TesseractOcr(command=str(tmp_path / "no-tesseract")).read(_page())


def test_the_real_tesseract_reads_each_page_as_a_run_of_its_own_would(tmp_path: Path) -> None:
    """Pages of several resolutions through one process: each gives the words, lines and
    confidences of ``tesseract PAGE stdout --dpi N tsv`` on that page alone."""
    with Image.open(SAMPLES / "biology_scan.png") as scan:
        scan.load()
        pages = [
            (scan.convert("L"), 300),
            (scan.convert("L").resize((scan.width * 2 // 3, scan.height * 2 // 3)), 200),
            (scan.convert("L"), 150),
        ]
    engine = TesseractOcr()
    for page, dpi in pages:
        page.info["dpi"] = (dpi, dpi)
        read = engine.read(page)
        path = tmp_path / "page.pgm"
        prepared, expected_dpi = ocr.prepare_page(page)
        prepared.save(path, "PPM")
        alone = subprocess.run(
            ["tesseract", str(path), "stdout", "-l", "fra", "--dpi", str(expected_dpi), "tsv"],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, OMP_THREAD_LIMIT="1"),
        ).stdout
        rows = [line.split("\t") for line in alone.strip().split("\n")]
        assert read == ocr._page_from_data(ocr._tsv_columns(rows)), dpi
        assert read.word_count > 20
    engine.close()


def test_a_value_boxed_apart_on_its_line_is_read_on_that_line(tmp_path: Path) -> None:
    """Forms print the INS key in a box of its own ('N° SS : 2 84 05 75 123 456  Clé [72]'):
    tesseract reads the box as a block of its own, which came after every other block, so
    the number lost its key. A one-line block level with an earlier line, to its right, is
    read at the end of that line; a block of several lines (a column) is left as it is."""
    page = """\
row(5, n, 1, 1, 1, 1, 50, 100, 60, 30, 95, "N°")
row(5, n, 1, 1, 1, 2, 120, 100, 60, 30, 95, "SS")
row(5, n, 1, 1, 2, 1, 50, 160, 300, 30, 95, "Hémoglobine")
row(5, n, 2, 1, 1, 1, 900, 98, 60, 32, 95, "72")
row(5, n, 3, 1, 1, 1, 900, 160, 60, 30, 95, "Dr")
row(5, n, 3, 1, 2, 1, 900, 200, 150, 30, 95, "MARTIN")"""
    engine = TesseractOcr(command=_fake(tmp_path, page))
    assert engine.read(_page()).text == "N° SS 72\nHémoglobine\n\nDr\nMARTIN"
    engine.close()
