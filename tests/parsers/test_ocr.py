"""TesseractOcr's own behaviour around the tesseract binary: its output read, its failures
turned into Carnet's errors (the real engine is exercised by the image and PDF tests)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from PIL import Image

from parsers.ocr import TesseractOcr
from pipeline.errors import ConfigurationError, ParserError

_HEADER = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"


def _fake(tmp_path: Path, body: str) -> str:
    """A tesseract that runs ``body`` (Python) with its arguments in ``sys.argv``."""
    path = tmp_path / "tesseract"
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _page() -> Image.Image:
    return Image.new("L", (1700, 2200), 255)


def test_words_are_read_from_the_tsv_on_stdout_by_line_and_paragraph(tmp_path: Path) -> None:
    rows = [
        _HEADER,
        "1\t1\t0\t0\t0\t0\t0\t0\t1700\t2200\t-1\t",
        "5\t1\t1\t1\t1\t1\t0\t0\t10\t10\t95.8\tBonjour",
        "5\t1\t1\t1\t1\t2\t0\t0\t10\t10\t90.2\tMadame",
        "5\t1\t2\t1\t1\t1\t0\t0\t10\t10\t80\tCréatinine",
        "4\t1\t2\t1\t2\t0\t0\t0\t10\t10\t-1",  # a last row without its (empty) text cell
    ]
    tsv = "\n".join(rows)
    script = f"assert sys.argv[2] == 'stdout' and sys.argv[-1] == 'tsv'\nprint({tsv!r})"
    page = TesseractOcr(command=_fake(tmp_path, script)).read(_page())
    assert page.text == "Bonjour Madame\n\nCréatinine"
    assert page.word_count == 3
    assert page.confidence == (95 + 90 + 80) / 3  # whole confidences, as always read


def test_a_failing_tesseract_is_a_parser_error(tmp_path: Path) -> None:
    fake = _fake(tmp_path, "sys.stderr.write('Error in pixReadStream\\n'); sys.exit(1)")
    with pytest.raises(ParserError, match="pixReadStream"):
        TesseractOcr(command=fake).read(_page(), source="scan.png")


def test_a_tesseract_past_its_timeout_is_a_parser_error(tmp_path: Path) -> None:
    fake = _fake(tmp_path, "import time; time.sleep(30)")
    with pytest.raises(ParserError, match="gave up after 1 s"):
        TesseractOcr(command=fake, timeout_s=1).read(_page(), source="scan.png")


def test_a_missing_tesseract_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not installed"):
        TesseractOcr(command=str(tmp_path / "no-tesseract")).read(_page())
