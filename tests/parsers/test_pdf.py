"""PdfParser on the synthetic samples in tests/samples/pdf (see make_pdf_image_samples.py).

Tests marked ``tesseract`` run the real OCR engine.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from parsers.ocr import MAX_PIXELS, OcrPage, TesseractOcr
from parsers.pdf import PdfParser, extract_pdf_text
from pipeline.errors import EncryptedDocumentError, ParserError
from pipeline.model import Format, ParsedDocument

PDF_SAMPLES = Path(__file__).parents[1] / "samples" / "pdf"
IMAGE_SAMPLES = Path(__file__).parents[1] / "samples" / "image"
PATIENT_INS_PRINTED = "2 84 05 75 123 456 72"


class CountingOcr(TesseractOcr):
    """The real OCR, counting how many page images it is asked to read."""

    def __init__(self) -> None:
        super().__init__(lang="fra", timeout_s=120)
        self.calls = 0

    def read(self, image: Image.Image, *, source: str | None = None) -> OcrPage:
        self.calls += 1
        return super().read(image, source=source)


def sample(name: str) -> bytes:
    return (PDF_SAMPLES / name).read_bytes()


def parse_one(parser: PdfParser, name: str) -> ParsedDocument:
    documents = parser.parse(sample(name), source=name)
    assert len(documents) == 1
    return documents[0]


@pytest.fixture
def ocr() -> CountingOcr:
    return CountingOcr()


@pytest.fixture
def parser(ocr: CountingOcr) -> PdfParser:
    return PdfParser(ocr=ocr, min_text_chars_per_page=20)


def test_text_pdf_is_read_from_its_text_layer_without_ocr(parser: PdfParser, ocr: CountingOcr) -> None:
    document = parse_one(parser, "biology_text.pdf")

    assert ocr.calls == 0  # the page has a letterhead logo, but enough text not to need it
    assert document.ocr_pages == 0
    assert document.ocr_confidence is None
    assert document.format is Format.PDF
    assert document.page_count == 1
    assert document.title == "Compte rendu d'examens biologiques"
    assert document.content == sample("biology_text.pdf")
    for expected in (
        "Compte rendu d'examens biologiques",
        "Hémoglobine",
        "Créatinine",
        "µmol/L",
        "Élodie",
        f"INS : {PATIENT_INS_PRINTED}",
    ):
        assert expected in document.text


def test_multipage_text_pdf_keeps_every_page_in_order(parser: PdfParser) -> None:
    document = parse_one(parser, "imaging_multipage.pdf")

    assert document.page_count == 3
    assert document.ocr_pages == 0
    positions = [
        document.text.index(word)
        for word in ("radiographie thoracique", "Silhouette cardiaque", "Radiographie thoracique normale")
    ]
    assert positions == sorted(positions)
    assert "Page 3/3" in document.text


@pytest.mark.tesseract
def test_scanned_pdf_is_ocred(parser: PdfParser) -> None:
    document = parse_one(parser, "biology_scanned.pdf")

    assert document.page_count == 1
    assert document.ocr_pages == 1
    assert document.ocr_confidence is not None and document.ocr_confidence > 50
    assert "Hémoglobine" in document.text
    assert PATIENT_INS_PRINTED in document.text
    # Lines are rebuilt from tesseract's word table, one report line per text line.
    assert any(line.startswith("Hémoglobine") and "13,2" in line for line in document.text.splitlines())


@pytest.mark.tesseract
def test_mixed_pdf_ocrs_only_the_page_without_text(parser: PdfParser, ocr: CountingOcr) -> None:
    document = parse_one(parser, "mixed.pdf")

    assert document.page_count == 2
    assert document.ocr_pages == 1
    assert ocr.calls == 1  # one image on page 2, page 1 never sent to tesseract
    assert document.ocr_confidence is not None and document.ocr_confidence > 50
    assert "Compte rendu d'examens biologiques" in document.text  # page 1, text layer
    assert "Ferritine" in document.text  # page 2, OCR
    assert document.text.index("Compte rendu") < document.text.index("Ferritine")


def test_page_below_the_threshold_has_its_images_ocred_and_keeps_its_text(
    ocr: CountingOcr,
) -> None:
    # With a threshold above the page's text, the text page counts as "no text": its
    # letterhead logo is then OCR'd, and the text layer it had is kept before the OCR text.
    strict = PdfParser(ocr=ocr, min_text_chars_per_page=10_000)
    document = strict.parse(sample("biology_text.pdf"), source="biology_text.pdf")[0]

    assert ocr.calls == 1
    assert document.ocr_pages == 1
    assert "Hémoglobine" in document.text


def test_encrypted_pdf_raises_encrypted_document_error(parser: PdfParser) -> None:
    with pytest.raises(EncryptedDocumentError) as caught:
        parser.parse(sample("encrypted.pdf"), source="encrypted.pdf")
    assert caught.value.context == {"source": "encrypted.pdf"}


def test_pdf_with_only_an_owner_password_opens_with_the_empty_password(
    parser: PdfParser,
) -> None:
    document = parse_one(parser, "owner_password_only.pdf")

    assert "Hémoglobine" in document.text
    assert document.ocr_pages == 0


def test_truncated_pdf_raises_parser_error(parser: PdfParser) -> None:
    with pytest.raises(ParserError) as caught:
        parser.parse(sample("truncated.pdf"), source="truncated.pdf")
    assert not isinstance(caught.value, EncryptedDocumentError)


def test_corrupt_body_with_valid_markers_raises_parser_error(parser: PdfParser) -> None:
    # Header and %%EOF intact, everything between scrambled: pypdf's own errors are wrapped.
    data = sample("biology_text.pdf")
    corrupt = data[:16] + bytes(b ^ 0x5A for b in data[16:-64]) + data[-64:]

    with pytest.raises(ParserError) as caught:
        parser.parse(corrupt, source="corrupt.pdf")
    assert caught.value.__cause__ is not None


def test_pdf_without_text_or_images_gives_empty_text(parser: PdfParser, ocr: CountingOcr) -> None:
    document = parse_one(parser, "blank.pdf")

    assert document.text == ""
    assert document.page_count == 1
    assert document.ocr_pages == 0
    assert ocr.calls == 0
    assert document.title is None


def test_leading_junk_before_the_header_is_tolerated(parser: PdfParser) -> None:
    data = b"\r\n\xef\xbb\xbfjunk from the transport\r\n" + sample("biology_text.pdf")

    assert parser.score(data[:4096]) > 0
    document = parser.parse(data, source="junk.pdf")[0]
    assert "Hémoglobine" in document.text


def test_score_recognises_pdfs_only(parser: PdfParser) -> None:
    for name in ("biology_text.pdf", "biology_scanned.pdf", "encrypted.pdf", "truncated.pdf"):
        assert parser.score(sample(name)[:4096]) == 100, name
    assert parser.score(b"  \n%PDF-1.7\n") == 100
    assert parser.score(b"x" * 1500 + b"%PDF-1.7") == 0  # header too far in
    for path in sorted(IMAGE_SAMPLES.iterdir()):
        assert parser.score(path.read_bytes()[:4096]) == 0, path.name
    assert parser.score(b"MSH|^~\\&|LAB|") == 0
    assert parser.score(b"") == 0


def test_extract_pdf_text_reads_the_text_layer_only() -> None:
    assert "Hémoglobine" in extract_pdf_text(sample("biology_text.pdf"))
    assert extract_pdf_text(sample("biology_scanned.pdf")) == ""  # no OCR here
    with pytest.raises(EncryptedDocumentError):
        extract_pdf_text(sample("encrypted.pdf"))
    with pytest.raises(ParserError):
        extract_pdf_text(sample("truncated.pdf"))


@pytest.mark.tesseract
def test_scanned_pages_read_on_several_cores_keep_page_order() -> None:
    writer = PdfWriter()
    for name in ("biology_scanned.pdf", "mixed.pdf"):  # scan, then text + scan
        for page in PdfReader(io.BytesIO(sample(name))).pages:
            writer.add_page(page)
    buffer = io.BytesIO()
    writer.write(buffer)
    data = buffer.getvalue()

    one = PdfParser(ocr=TesseractOcr(workers=1)).parse(data, source="joined")[0]
    two = PdfParser(ocr=TesseractOcr(workers=2)).parse(data, source="joined")[0]

    assert two.text == one.text and two.ocr_confidence == one.ocr_confidence
    assert two.ocr_pages == 2 and two.page_count == 3
    assert two.text.index("Hémoglobine") < two.text.index("Ferritine")  # page 1 (scan) before page 3


def _image_pdf(image: Image.Image) -> bytes:
    """A one-page PDF of ``image`` as Pillow writes it (JPEG, DCTDecode, no text layer)."""
    buffer = io.BytesIO()
    image.save(buffer, "PDF", resolution=300)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["biology_scanned.pdf", "mixed.pdf", "biology_text.pdf"])
def test_page_images_decode_to_pypdfs_pixels(name: str) -> None:
    # The samples' deflated gray and RGB images are decoded without pypdf's PNG round
    # trip: the pixels tesseract gets are the same.
    from PIL import ImageChops

    from parsers.pdf import _page_image

    for page in PdfReader(io.BytesIO(sample(name))).pages:
        for image_id in page.images.keys():
            ours, theirs = _page_image(page, image_id), page.images[image_id].image
            assert ours is not None and theirs is not None
            assert (ours.mode, ours.size) == (theirs.mode, theirs.size)
            assert ImageChops.difference(ours, theirs).getbbox() is None


def test_jpeg_page_image_is_the_embedded_jpeg() -> None:
    from parsers.pdf import _page_image

    scan = Image.open(IMAGE_SAMPLES / "biology_scan.jpg").convert("RGB")
    page = PdfReader(io.BytesIO(_image_pdf(scan))).pages[0]
    image = _page_image(page, page.images.keys()[0])

    assert image is not None and image.format == "JPEG" and image.size == scan.size


def test_undecodable_page_image_is_a_warning_not_a_failure(parser: PdfParser, ocr: CountingOcr) -> None:
    data = bytearray(_image_pdf(Image.new("L", (200, 200), 255)))
    start = data.index(b"\xff\xd8\xff")  # the JPEG stream: its markers made unreadable
    data[start : start + 64] = b"\x00" * 64

    document = parser.parse(bytes(data), source="broken.pdf")[0]

    assert ocr.calls == 0
    assert [w.code for w in document.warnings] == ["unreadable_scan"]


def test_page_image_of_too_many_pixels_is_not_decoded(parser: PdfParser, ocr: CountingOcr) -> None:
    """A 2 MB JPEG of 12,000 x 12,000 pixels on a page took 800 MB to decode for OCR: an
    image declaring more than ``MAX_PIXELS`` is skipped with a warning, never decoded."""
    data = _image_pdf(Image.new("L", (1000, 1000), 255))
    big = data.replace(b"/Width 1000", b"/Width 9000").replace(b"/Height 1000", b"/Height 9000")
    assert 9000 * 9000 > MAX_PIXELS and len(big) == len(data)

    document = parser.parse(big, source="big.pdf")[0]

    assert ocr.calls == 0
    assert [(w.code, w.blocking) for w in document.warnings] == [("unreadable_scan", False)]
    assert "9000 x 9000 pixels" in document.warnings[0].message


@pytest.mark.tesseract
def test_scanned_pages_past_the_ocr_limit_are_left_unread_with_a_warning() -> None:
    from pipeline.model import Reason

    writer = PdfWriter()
    for _ in range(2):
        for name in ("biology_scanned.pdf", "mixed.pdf"):  # scan, then text + scan
            for page in PdfReader(io.BytesIO(sample(name))).pages:
                writer.add_page(page)
    buffer = io.BytesIO()
    writer.write(buffer)
    capped = CountingOcr()
    capped.max_pages = 3
    (doc,) = PdfParser(ocr=capped).parse(buffer.getvalue(), source="joined")
    # 6 pages, 4 of them scans: the first 3 scans are read, the text page after them too.
    assert (doc.page_count, doc.ocr_pages, capped.calls) == (6, 3, 3)
    assert [(w.code, w.blocking) for w in doc.warnings] == [(Reason.TEXT_TRUNCATED, False)]
    assert "first 3 of 4" in doc.warnings[0].message
    assert doc.text.count("Hémoglobine") >= 2


@pytest.mark.tesseract
def test_a_scanned_page_shown_upright_by_its_rotate_entry_is_read_upright(parser: PdfParser) -> None:
    """Scanners store a landscape-fed page's image as scanned and turn the page for display
    with /Rotate: the image was OCR'd as stored, sideways."""
    from pypdf import PdfReader, PdfWriter

    from pipeline.identity import identify_patient
    from tests.parsers.test_image import printed_page

    ins = "284057512345672"
    scan = io.BytesIO()
    printed_page(ins).rotate(90, expand=True).save(scan, "PDF", resolution=150)
    writer = PdfWriter()
    for page in PdfReader(scan).pages:
        writer.add_page(page).rotate(90)
    rotated = io.BytesIO()
    writer.write(rotated)
    [document] = parser.parse(rotated.getvalue(), source="rotated.pdf")
    assert document.ocr_pages == 1
    assert identify_patient(document).patient_id == ins, document.text


def one_page_pdf(content: bytes, image: Image.Image | None) -> bytes:
    """A PDF of one page drawing ``content`` with font F1, a Type0 font (Identity-H) whose
    ToUnicode map is missing, as subset fonts of some generators are; ``image`` as /Im1."""
    width, height = (image.width * 72 // 150, image.height * 72 // 150) if image else (595, 842)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents 4 0 R /Resources"
        b" << /Font << /F1 5 0 R >> /XObject << /Im1 7 0 R >> >> >>" % (width, height),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type0 /BaseFont /AAAAAA+Arial /Encoding /Identity-H"
        b" /DescendantFonts [6 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /AAAAAA+Arial /DW 500 /CIDSystemInfo"
        b" << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> >>",
    ]
    if image is not None:
        pixels = image.convert("L").tobytes()
        objects.append(
            b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
            b" /BitsPerComponent 8 /Length %d >>\nstream\n%s\nendstream"
            % (image.width, image.height, len(pixels), pixels)
        )
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def glyph_ids(text: str) -> bytes:
    """``text`` shown as a TrueType subset's glyph ids (the standard Macintosh order: the
    character code minus 29), which a reader without ToUnicode takes for characters."""
    return b"<" + "".join(f"{(ord(c) - 29) % 0xFFFF:04x}" for c in text).encode() + b"> Tj"


@pytest.mark.tesseract
def test_a_scan_under_a_garbled_text_layer_is_ocred(parser: PdfParser, ocr: CountingOcr) -> None:
    """A scanner's invisible text layer written with a font that has no character map
    reads as shifted letters and control characters ('/DERUDWRLUH\\x03GH…'): it passed
    for text, the scan under it was never OCR'd and its INS never found."""
    from pipeline.identity import identify_patient
    from tests.parsers.test_image import printed_page

    ins = "284057512345672"
    layer = "Compte rendu d'examens biologiques Patient DUPONT Marie INS 2 84 05 75 123 456 72"
    content = b"q 480 0 0 163 0 0 cm /Im1 Do Q BT 3 Tr /F1 12 Tf 50 100 Td " + glyph_ids(layer) + b" ET"
    [document] = parser.parse(one_page_pdf(content, printed_page(ins)), source="garbled.pdf")
    assert ocr.calls == 1 and document.ocr_pages == 1
    assert identify_patient(document).patient_id == ins, document.text
    assert "\x03" not in document.text and "/DERUDWRLUH" not in document.text
    assert any("text layer" in w.message for w in document.warnings)


def test_a_garbled_text_layer_alone_is_no_text(parser: PdfParser, ocr: CountingOcr) -> None:
    content = b"BT /F1 12 Tf 50 700 Td " + glyph_ids("Ordonnance du 12/03/2025 : amoxicilline 1 g") + b" ET"
    [document] = parser.parse(one_page_pdf(content, None), source="garbled.pdf")
    assert document.text == "" and ocr.calls == 0
    [warning] = document.warnings
    assert not warning.blocking and "page 1" in warning.message and "text layer" in warning.message


def filled_form(fields: list[tuple[str, str, str]]) -> bytes:
    """A one-page form: each (printed label, field tooltip, value) on its own line, the value
    typed in a text field (AcroForm) to the right of the label, as PDF editors fill them."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4)
    page.drawString(60, 800, "Compte rendu d'examens biologiques - Hémoglobine 13,5 g/dL")
    for number, (label, tooltip, value) in enumerate(fields):
        y = 760 - 40 * number
        page.drawString(60, y + 6, label)
        page.acroForm.textfield(
            name=f"Champ{number}", tooltip=tooltip, value=value, x=250, y=y, width=250, height=20
        )
    page.showPage()
    page.save()
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("label", "tooltip"),
    [
        ("INS :", ""),  # the label printed on the page, beside the field
        ("", "Identifiant national de santé (INS)"),  # only the field's own name says it
    ],
)
def test_the_values_typed_in_a_form_are_its_text(
    parser: PdfParser, ocr: CountingOcr, label: str, tooltip: str
) -> None:
    """A form filled in a PDF editor keeps its values in fields, not in the page's text:
    the INS typed there was never read (missing_ins, or an upload filed as declared by its
    owner whoever the form named)."""
    from pipeline.identity import identify_patient

    ins = "284057512345672"
    data = filled_form([("Date du prélèvement :", "", "02/03/2024"), (label, tooltip, PATIENT_INS_PRINTED)])
    [document] = parser.parse(data, source="form.pdf")
    assert identify_patient(document).patient_id == ins, document.text
    assert "Date du prélèvement : 02/03/2024" in document.text and ocr.calls == 0


def test_a_hidden_form_field_is_not_text(parser: PdfParser) -> None:
    from pypdf.generic import NameObject, NumberObject

    reader = PdfReader(io.BytesIO(filled_form([("INS :", "", PATIENT_INS_PRINTED)])))
    writer = PdfWriter(clone_from=reader)
    for annotation in writer.pages[0]["/Annots"]:
        annotation.get_object()[NameObject("/F")] = NumberObject(2)  # Hidden
    hidden = io.BytesIO()
    writer.write(hidden)
    [document] = parser.parse(hidden.getvalue(), source="form.pdf")
    assert PATIENT_INS_PRINTED not in document.text


def test_a_text_layer_is_read_no_further_than_what_is_indexed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 7 MB upload of 30,000 text pages (one page's content shared by all) cost 24 s of
    CPU to extract, all but the first ~400 pages' text then dropped by CARNET_MAX_TEXT_CHARS."""
    from pypdf import PageObject

    source = PdfReader(io.BytesIO(sample("biology_text.pdf"))).pages[0]
    writer = PdfWriter()
    for _ in range(3000):
        writer.add_page(source)
    data = io.BytesIO()
    writer.write(data)
    page_chars = len(source.extract_text())
    extracted = 0
    extract = PageObject.extract_text

    def counting(page: PageObject, *args: object, **kwargs: object) -> str:
        nonlocal extracted
        extracted += 1
        return extract(page, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PageObject, "extract_text", counting)
    parser = PdfParser(ocr=CountingOcr(), min_text_chars_per_page=20, max_text_chars=20_000)
    [document] = parser.parse(data.getvalue(), source="long.pdf")
    assert document.page_count == 3000
    assert 20_000 <= len(document.text) < 20_000 + 2 * page_chars and extracted < 100
    [warning] = document.warnings
    assert not warning.blocking and "of 3000 pages" in warning.message


def test_files_attached_to_a_pdf_are_named_as_not_read(parser: PdfParser) -> None:
    """A PDF may carry files (a CDA, another report) that no reader of its pages sees: they
    were dropped silently, the producer never told that part of what it sent was not read."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(sample("biology_text.pdf"))))
    writer.add_attachment("cr-bio.xml", b"<ClinicalDocument/>")
    data = io.BytesIO()
    writer.write(data)
    [document] = parser.parse(data.getvalue(), source="attached.pdf")
    assert PATIENT_INS_PRINTED in document.text
    [warning] = document.warnings
    assert not warning.blocking and "cr-bio.xml" in warning.message and "not read" in warning.message


def scan_with_text_lines(lines: list[str], scan: Image.Image) -> bytes:
    """An A4 page: ``scan`` drawn over the whole page, then ``lines`` of real text at its top
    (a fax server's or a mail gateway's stamp on a received scan)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4)
    page.drawImage(ImageReader(scan), 0, 0, width=A4[0], height=A4[1])
    page.setFont("Helvetica", 8)
    for number, line in enumerate(lines):
        page.drawString(20, 830 - 10 * number, line)
    page.showPage()
    page.save()
    return buffer.getvalue()


@pytest.mark.tesseract
def test_a_scan_under_a_stamped_line_of_text_is_ocred(parser: PdfParser, ocr: CountingOcr) -> None:
    """A fax server stamps each received page with a line of real text ('Fax reçu le … de
    …'): that line passed the page's text threshold, so the scan itself, the whole report,
    was never OCR'd (missing_ins; an upload filed as declared whoever it named)."""
    from pipeline.identity import identify_patient
    from tests.parsers.test_image import printed_page

    ins = "284057512345672"
    report = printed_page(ins)
    scan = Image.new("L", (1654, 2339), 255)  # A4 at 200 dpi
    scan.paste(report.resize((report.width * 8 // 5, report.height * 8 // 5)), (0, 100))
    stamp = "Fax reçu le 02/03/2024 à 10:42 de +33 1 45 67 89 10 - page 1/1"
    [document] = parser.parse(scan_with_text_lines([stamp], scan), source="fax.pdf")
    assert ocr.calls == 1 and document.ocr_pages == 1
    assert identify_patient(document).patient_id == ins, document.text
    assert stamp in document.text


def test_a_text_page_over_a_background_image_is_not_ocred(parser: PdfParser, ocr: CountingOcr) -> None:
    """A letterhead drawn as a full-page image under a typed report: its text layer is the
    report, and OCR would only cost time."""
    letterhead = Image.new("L", (1000, 1400), 240)
    lines = [f"Ligne {n} du compte rendu : résultat dans les valeurs de référence" for n in range(12)]
    [document] = parser.parse(scan_with_text_lines(lines, letterhead), source="letter.pdf")
    assert ocr.calls == 0 and document.ocr_pages == 0
