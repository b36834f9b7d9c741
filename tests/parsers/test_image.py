"""ImageParser on the synthetic scans in tests/samples/image (see make_pdf_image_samples.py).

Tests marked ``tesseract`` run the real OCR engine.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from parsers.image import MAX_PIXELS, ImageParser
from parsers.ocr import OcrPage, TesseractOcr
from pipeline.errors import ParserError
from pipeline.model import Format, ParsedDocument

IMAGE_SAMPLES = Path(__file__).parents[1] / "samples" / "image"
PDF_SAMPLES = Path(__file__).parents[1] / "samples" / "pdf"


@pytest.fixture(scope="module")
def parser() -> ImageParser:
    return ImageParser(ocr=TesseractOcr(lang="fra", timeout_s=120))


def parse_one(parser: ImageParser, name: str) -> ParsedDocument:
    data = (IMAGE_SAMPLES / name).read_bytes()
    documents = parser.parse(data, source=name)
    assert len(documents) == 1
    assert documents[0].content == data
    assert documents[0].format is Format.IMAGE
    return documents[0]


@pytest.mark.tesseract
def test_png_scan_is_ocred(parser: ImageParser) -> None:
    document = parse_one(parser, "biology_scan.png")

    assert document.page_count == 1
    assert document.ocr_pages == 1
    assert document.ocr_confidence is not None and document.ocr_confidence > 50
    assert "Hémoglobine" in document.text
    assert "INS : 2 84 05 75 123 456 72" in document.text


@pytest.mark.tesseract
def test_jpeg_scan_is_ocred(parser: ImageParser) -> None:
    document = parse_one(parser, "biology_scan.jpg")

    assert document.ocr_pages == 1
    assert document.ocr_confidence is not None and document.ocr_confidence > 50
    assert "Hémoglobine" in document.text
    assert "Compte rendu d'examens biologiques" in document.text


@pytest.mark.tesseract
def test_every_frame_of_a_multipage_tiff_is_ocred(parser: ImageParser) -> None:
    document = parse_one(parser, "imaging_2pages.tiff")

    assert document.page_count == 2
    assert document.ocr_pages == 2
    assert document.ocr_confidence is not None and document.ocr_confidence > 50
    assert document.text.index("Compte rendu d'imagerie") < document.text.index(
        "Silhouette cardiaque"
    )  # page 1 then page 2


@pytest.mark.tesseract
def test_blank_image_gives_little_or_no_text(parser: ImageParser) -> None:
    document = parse_one(parser, "blank.png")

    assert document.ocr_pages == 1
    assert len(document.text.strip()) < 5
    assert document.ocr_confidence is not None and document.ocr_confidence < 50


@pytest.mark.tesseract
def test_small_screenshot_is_upscaled_enough_to_read(parser: ImageParser) -> None:
    # The PNG scan at a fifth of its size (60 dpi, like a thumbnail): tesseract misreads
    # it as is (mean confidence ~64, "Hémoglobine" lost); upscaled it reads it (~87).
    with Image.open(IMAGE_SAMPLES / "biology_scan.png") as scan:
        size = (scan.width // 5, scan.height // 5)
        small = scan.convert("L").resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "PNG")

    document = parser.parse(buffer.getvalue(), source="small.png")[0]
    assert document.ocr_confidence is not None and document.ocr_confidence > 75
    assert "Hémoglobine" in document.text


@pytest.mark.parametrize("name", ["truncated.png", "random.bin"])
def test_corrupt_image_raises_parser_error(parser: ImageParser, name: str) -> None:
    data = (IMAGE_SAMPLES / name).read_bytes()
    with pytest.raises(ParserError) as caught:
        parser.parse(data, source=name)
    assert caught.value.context == {"source": name}
    # A reason two runs give alike: no repr of an object of this process.
    assert " at 0x" not in caught.value.message


class CapturingOcr(TesseractOcr):
    """An engine that reads nothing and keeps the page images it was given."""

    def __init__(self) -> None:
        super().__init__(lang="fra", timeout_s=5)
        self.pages: list[Image.Image] = []

    def read(self, image: Image.Image, *, source: str | None = None) -> OcrPage:
        self.pages.append(image)
        return OcrPage(text="", confidence=0.0, word_count=0)


@pytest.mark.parametrize(
    ("orientation", "stored"),
    [
        (1, None),
        (3, Image.Transpose.ROTATE_180),
        (6, Image.Transpose.ROTATE_90),  # a phone held upright: stored turned left
        (8, Image.Transpose.ROTATE_270),
        (2, Image.Transpose.FLIP_LEFT_RIGHT),
    ],
)
def test_a_photo_is_read_the_way_its_exif_orientation_shows_it(
    orientation: int, stored: Image.Transpose | None
) -> None:
    """Phones store a portrait photo sideways with an EXIF orientation: it was OCR'd as
    stored, sideways (a photographed report: missing_ins instead of its INS)."""
    upright = Image.frombytes("L", (40, 24), bytes(i * 7 % 251 for i in range(40 * 24)))  # no symmetry
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    (upright.transpose(stored) if stored is not None else upright).save(buffer, "PNG", exif=exif)
    ocr = CapturingOcr()
    ImageParser(ocr=ocr).parse(buffer.getvalue(), source="photo.png")
    [page] = ocr.pages
    assert page.size == upright.size and page.tobytes() == upright.tobytes()


class SmallPagesOcr(TesseractOcr):
    """An engine that reads nothing and fails the test if a page too big reaches it."""

    def read(self, image: Image.Image, *, source: str | None = None) -> OcrPage:
        assert image.width * image.height <= MAX_PIXELS, f"{source} was decoded and sent to OCR"
        return OcrPage(text="", confidence=0.0, word_count=0)


@pytest.mark.parametrize("first_page", [False, True])
def test_a_page_of_too_many_pixels_is_refused_before_it_is_decoded(first_page: bool) -> None:
    """Pillow refuses only past 179 million pixels: a page below that but beyond
    ``MAX_PIXELS`` (a few hundred KB on disk) was decoded, taking gigabytes."""
    side = math.isqrt(MAX_PIXELS) + 1
    pages = [Image.new("1", (side, side), 1), Image.new("1", (100, 100), 1)]
    if not first_page:
        pages.reverse()
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", compression="group4", save_all=True, append_images=pages[1:])
    with pytest.raises(ParserError, match=f"page {1 if first_page else 2} is {side} x {side} pixels"):
        ImageParser(ocr=SmallPagesOcr(lang="fra", timeout_s=5)).parse(buffer.getvalue(), source="big.tif")


def test_score_recognises_png_jpeg_and_tiff_only(parser: ImageParser) -> None:
    for name in ("biology_scan.png", "biology_scan.jpg", "imaging_2pages.tiff", "blank.png"):
        assert parser.score((IMAGE_SAMPLES / name).read_bytes()[:4096]) == 100, name
    assert parser.score(b"MM\x00*\x00\x00\x00\x08") == 100  # big-endian TIFF
    assert parser.score((IMAGE_SAMPLES / "random.bin").read_bytes()[:4096]) == 0
    for path in sorted(PDF_SAMPLES.iterdir()):
        assert parser.score(path.read_bytes()[:4096]) == 0, path.name
    assert parser.score(b"GIF89a") == 0
    assert parser.score(b"") == 0


@pytest.mark.tesseract
def test_pages_read_on_several_cores_come_back_identical_and_in_order() -> None:
    data = (IMAGE_SAMPLES / "imaging_2pages.tiff").read_bytes()
    one = ImageParser(ocr=TesseractOcr(workers=1)).parse(data, source="tiff")[0]
    pool = TesseractOcr(workers=2)
    # Three documents at once share the one pool (never more than 2 tesseract processes).
    with ThreadPoolExecutor(max_workers=3) as callers:
        several = list(callers.map(lambda _: ImageParser(ocr=pool).parse(data, source="tiff")[0], range(3)))

    for document in several:
        assert document.text == one.text
        assert document.ocr_confidence == one.ocr_confidence
    assert one.text.index("Compte rendu d'imagerie") < one.text.index("Silhouette cardiaque")


@pytest.mark.tesseract
def test_pages_past_the_ocr_limit_are_left_unread_with_a_warning() -> None:
    from pipeline.model import Reason

    pages = [Image.new("1", (1240, 1754), 1) for _ in range(5)]  # blank A4 pages, 150 dpi
    buffer = io.BytesIO()
    pages[0].save(
        buffer, "TIFF", compression="group4", save_all=True, append_images=pages[1:], dpi=(150, 150)
    )
    data = buffer.getvalue()
    ocr = TesseractOcr(max_pages=2)
    (doc,) = ImageParser(ocr=ocr).parse(data, source="long.tif")
    assert (doc.ocr_pages, doc.page_count) == (2, 5)
    assert [(w.code, w.blocking) for w in doc.warnings] == [(Reason.TEXT_TRUNCATED, False)]
    assert "first 2 of 5" in doc.warnings[0].message
    (whole,) = ImageParser(ocr=TesseractOcr(max_pages=0)).parse(data, source="long.tif")
    assert (whole.ocr_pages, whole.warnings) == (5, ())


def test_a_page_past_pillows_own_warning_leaves_stderr_quiet(tmp_path: Path) -> None:
    """Between 89 and 179 million pixels Pillow warns on stderr as it opens the image,
    before Carnet refuses it with a reason: one message is enough."""
    import subprocess
    import sys

    side = 9_600  # 92 million pixels
    buffer = io.BytesIO()
    Image.new("1", (side, side), 1).save(buffer, "TIFF", compression="group4")
    (tmp_path / "big.tif").write_bytes(buffer.getvalue())
    code = (
        "import sys; from pathlib import Path\n"
        "from parsers.image import ImageParser; from parsers.ocr import TesseractOcr\n"
        "from pipeline.errors import ParserError\n"
        "try:\n"
        "    ImageParser(ocr=TesseractOcr()).parse(Path(sys.argv[1]).read_bytes(), source='big.tif')\n"
        "except ParserError as exc:\n"
        "    print(exc.message)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big.tif")], capture_output=True, text=True, timeout=60
    )
    assert f"is {side} x {side} pixels" in done.stdout
    assert done.stderr == ""


def printed_page(ins: str) -> Image.Image:
    """A small report page (DejaVu on white), upright, printing ``ins``."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 30)
    lines = [
        "Compte rendu d'examens biologiques",
        "Patient : DUPONT Marie",
        f"INS : {ins[0]} {ins[1:3]} {ins[3:5]} {ins[5:7]} {ins[7:10]} {ins[10:13]} {ins[13:]}",
        "Hémoglobine 13,5 g/dL",
    ]
    page = Image.new("L", (1000, 80 + 50 * len(lines)), 255)
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((50, 40 + 50 * i), line, font=font, fill=0)
    return page


@pytest.mark.tesseract
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_scan_stored_turned_without_exif_is_read_upright(parser: ImageParser, degrees: int) -> None:
    """A scanner feeding a page sideways or upside down writes no orientation tag: the
    page was OCR'd as stored, into letters soup, and its INS was never found."""
    from pipeline.identity import identify_patient

    ins = "284057512345672"
    buffer = io.BytesIO()
    printed_page(ins).rotate(degrees, expand=True).save(buffer, "PNG")
    [document] = parser.parse(buffer.getvalue(), source="turned.png")
    assert identify_patient(document).patient_id == ins, document.text
    assert "Hémoglobine" in document.text


@pytest.mark.tesseract
def test_a_webp_photo_is_read(parser: ImageParser) -> None:
    """Android phones and messaging apps save photos as WebP: it was unsupported_format."""
    from parsers.registry import default_registry
    from pipeline.identity import identify_patient

    ins = "284057512345672"
    buffer = io.BytesIO()
    printed_page(ins).save(buffer, "WEBP", quality=90)
    assert isinstance(default_registry().choose(buffer.getvalue()), ImageParser)
    [document] = parser.parse(buffer.getvalue(), source="photo.webp")
    assert document.format is Format.IMAGE and document.ocr_pages == 1
    assert identify_patient(document).patient_id == ins


HEIF_HEADS = [
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",  # an iPhone photo
    b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heixmiaf",
    b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1miaf",
]


@pytest.mark.parametrize("head", HEIF_HEADS)
def test_an_heif_photo_is_refused_saying_what_it_is(head: bytes, tmp_path: Path) -> None:
    """iPhones save photos as HEIC, which Carnet does not decode: it was 'content not
    recognised', which tells the sender nothing."""
    from pipeline.ingest import ingest_sources
    from pipeline.model import Reason, Status
    from pipeline.settings import Settings

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "IMG_0001.bin").write_bytes(head + b"\x00" * 200)
    [outcome] = ingest_sources([str(tmp_path / "in")], Settings(data_dir=tmp_path / "carnet")).outcomes
    assert outcome.status is Status.REJECTED
    [reason] = outcome.reasons
    assert reason.code is Reason.UNSUPPORTED_FORMAT
    assert "HEIF" in reason.message and "JPEG" in reason.message


@pytest.mark.tesseract
def test_an_ins_key_printed_apart_is_read_with_its_number(parser: ImageParser) -> None:
    """The key printed apart on the INS's line (a box of its own on a form) was read by
    tesseract as a block after all the others: the number lost its key (missing_ins)."""
    from PIL import ImageDraw, ImageFont

    from pipeline.identity import identify_patient

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 30)
    page = Image.new("L", (1400, 300), 255)
    draw = ImageDraw.Draw(page)
    draw.text((40, 40), "Compte rendu biologique", font=font, fill=0)
    draw.text((40, 120), "INS : 2 84 05 75 123 456", font=font, fill=0)
    draw.text((900, 120), "72", font=font, fill=0)
    draw.text((40, 200), "Hémoglobine 13,5 g/dL", font=font, fill=0)
    buffer = io.BytesIO()
    page.save(buffer, "PNG")
    [document] = parser.parse(buffer.getvalue(), source="form.png")
    assert identify_patient(document).patient_id == "284057512345672", document.text


def many_frames_tiff(count: int) -> bytes:
    """A TIFF of ``count`` frames of one gray pixel, all sharing that pixel: 126 bytes a
    frame, so a 20 MiB upload holds 160,000 of them."""
    import struct

    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    pixel = 8 + count * (2 + 9 * 12 + 4)
    tags = ((256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, pixel), (277, 3, 1))
    for number in range(count):
        following = len(out) + 2 + 9 * 12 + 4 if number < count - 1 else 0
        out += struct.pack("<H", 9)
        for tag, kind, value in (*tags, (278, 3, 1), (279, 4, 1)):
            packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", following)
    return bytes(out + b"\x80")


def test_the_frames_of_a_tiff_are_counted_no_further_than_a_bound() -> None:
    """Pillow's n_frames reads every IFD of a TIFF, each slower than the last: 2.3 s of CPU
    for 20,000 one-pixel frames, 154 s for 200,000 (a 23 MB file), before any OCR."""
    from parsers.image import MAX_COUNTED_FRAMES

    [document] = ImageParser(ocr=SmallPagesOcr(lang="fra", timeout_s=5, max_pages=3)).parse(
        many_frames_tiff(MAX_COUNTED_FRAMES + 500), source="frames.tif"
    )
    assert document.ocr_pages == 3 and document.page_count == MAX_COUNTED_FRAMES
    [warning] = document.warnings
    assert f"first 3 of more than {MAX_COUNTED_FRAMES:,}" in warning.message
    # Fewer frames than the bound are counted exactly.
    [short] = ImageParser(ocr=SmallPagesOcr(lang="fra", timeout_s=5, max_pages=3)).parse(
        many_frames_tiff(10), source="frames.tif"
    )
    assert short.page_count == 10 and "first 3 of 10 " in short.warnings[0].message
