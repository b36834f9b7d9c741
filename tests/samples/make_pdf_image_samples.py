"""Generate the synthetic, de-identified PDF and image samples used by the parser tests.

Every name, number and result here is invented. Run from the repository root:

    .venv/bin/python tests/samples/make_pdf_image_samples.py

The generated files are committed; re-run this script only to change them.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

HERE = Path(__file__).parent
PDF_DIR = HERE / "pdf"
IMAGE_DIR = HERE / "image"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian package fonts-dejavu-core
SCAN_DPI = 300


def ins(nir: str) -> str:
    """A 15-character INS: the 13-character NIR and its key 97 - (NIR mod 97)."""
    number = int(nir.replace("2A", "19").replace("2B", "18"))
    return f"{nir}{97 - number % 97:02d}"


def spaced(value: str) -> str:
    """The INS as printed on reports: 2 84 05 75 123 456 72."""
    parts = (value[0], value[1:3], value[3:5], value[5:7], value[7:10], value[10:13], value[13:])
    return " ".join(parts)


PATIENT_INS = ins("2840575123456")  # woman born 05/1984 in Paris
SECOND_INS = ins("1690869388041")  # man born 08/1969

BIOLOGY_REPORT = [
    "Laboratoire de biologie médicale des Tilleuls",
    "Compte rendu d'examens biologiques",
    "",
    "Patiente : MARTIN Élodie, née le 12/05/1984",
    f"INS : {spaced(PATIENT_INS)}",
    "Prélèvement du 03/02/2025 à 08h15",
    "Prescripteur : Dr Hélène Dupré",
    "",
    "Hématologie",
    "Hémoglobine : 13,2 g/dL (12,0 - 16,0)",
    "Hématocrite : 39 % (36 - 46)",
    "Leucocytes : 6,8 G/L (4,0 - 10,0)",
    "Plaquettes : 245 G/L (150 - 400)",
    "",
    "Biochimie",
    "Glycémie à jeun : 5,1 mmol/L (4,1 - 5,9)",
    "Créatinine : 68 µmol/L (45 - 90)",
    "",
    "Validé par le Dr Hélène Dupré, biologiste",
]

IMAGING_PAGES = [
    [
        "Cabinet de radiologie du Parc",
        "Compte rendu d'imagerie",
        f"Patient : BERNARD Théo, INS : {spaced(SECOND_INS)}",
        "Examen : radiographie thoracique de face, 14/01/2025",
        "Indication : toux persistante depuis trois semaines.",
    ],
    [
        "Résultats",
        "Silhouette cardiaque de taille normale.",
        "Pas d'épanchement pleural ni de pneumothorax.",
        "Parenchyme pulmonaire sans opacité suspecte.",
    ],
    [
        "Conclusion",
        "Radiographie thoracique normale.",
        "Dr Irène Lefèvre, radiologue",
    ],
]

SCAN_REPORT = BIOLOGY_REPORT  # the scanned sample is the same report, printed then scanned

# Page 2 of the mixed PDF: a signed annex scanned and appended to the lab's own PDF.
SCANNED_ANNEX = [
    "Annexe : bilan martial",
    f"Patiente : MARTIN Élodie, INS : {spaced(PATIENT_INS)}",
    "",
    "Ferritine : 45 µg/L (15 - 150)",
    "Fer sérique : 16 µmol/L (9 - 30)",
    "Transferrine : 2,6 g/L (2,0 - 3,6)",
    "",
    "Validé par le Dr Hélène Dupré, biologiste",
]


def register_fonts() -> None:
    pdfmetrics.registerFont(TTFont("DejaVuSans", str(FONT_DIR / "DejaVuSans.ttf")))


def letterhead_logo() -> Image.Image:
    """A small lab logo image, as printed at the top of real reports."""
    font = ImageFont.truetype(str(FONT_DIR / "DejaVuSans-Bold.ttf"), 48)
    logo = Image.new("L", (520, 140), 255)
    draw = ImageDraw.Draw(logo)
    draw.rectangle((4, 4, 515, 135), outline=0, width=6)
    draw.text((30, 40), "LBM Tilleuls", font=font, fill=0)
    return logo


def text_pages_pdf(pages: list[list[str]], *, title: str, logo: Image.Image | None = None) -> bytes:
    """A PDF with a real text layer, one list of lines per page (logo on page 1)."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, pageCompression=1)
    pdf.setTitle(title)
    pdf.setAuthor("Carnet test samples")
    width, height = A4
    for number, lines in enumerate(pages, start=1):
        if logo is not None and number == 1:
            pdf.drawImage(ImageReader(logo), width - 200, height - 90, width=130, height=35)
        pdf.setFont("DejaVuSans", 11)
        y = height - 72
        for line in lines:
            pdf.drawString(60, y, line)
            y -= 18
        if len(pages) > 1:
            pdf.drawString(width - 120, 40, f"Page {number}/{len(pages)}")
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def scan_image(lines: list[str], *, width_px: int, dpi: int = SCAN_DPI) -> Image.Image:
    """A clean bilevel 'scan' of printed lines (11 pt text at ``dpi``)."""
    font = ImageFont.truetype(str(FONT_DIR / "DejaVuSans.ttf"), round(11 * dpi / 72))
    line_height = round(18 * dpi / 72)
    margin = round(0.8 * dpi)
    height_px = 2 * margin + line_height * len(lines)
    image = Image.new("L", (width_px, height_px), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * line_height), line, font=font, fill=0)
    image.info["dpi"] = (dpi, dpi)
    return image


def a4_scan(lines: list[str]) -> Image.Image:
    """A full A4 page scanned at 300 dpi, bilevel like a fax or office scanner."""
    width_px, height_px = round(8.27 * SCAN_DPI), round(11.69 * SCAN_DPI)
    page = Image.new("L", (width_px, height_px), 255)
    page.paste(scan_image(lines, width_px=width_px), (0, 0))
    return page.convert("1")


def image_pdf(page_images: list[Image.Image | list[str]]) -> bytes:
    """A PDF whose pages are either full-page images (no text layer) or text lines."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, pageCompression=1)
    width, height = A4
    for page in page_images:
        if isinstance(page, Image.Image):
            pdf.drawImage(ImageReader(page), 0, 0, width=width, height=height)
        else:
            pdf.setFont("DejaVuSans", 11)
            y = height - 72
            for line in page:
                pdf.drawString(60, y, line)
                y -= 18
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def encrypted(data: bytes, *, user_password: str, owner_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def blank_pdf() -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    pdf.setTitle("")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    print(f"{path.relative_to(HERE)}: {len(data)} bytes")


def image_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def main() -> None:
    register_fonts()
    PDF_DIR.mkdir(exist_ok=True)
    IMAGE_DIR.mkdir(exist_ok=True)

    text = text_pages_pdf(
        [BIOLOGY_REPORT], title="Compte rendu d'examens biologiques", logo=letterhead_logo()
    )
    write(PDF_DIR / "biology_text.pdf", text)
    write(PDF_DIR / "imaging_multipage.pdf", text_pages_pdf(IMAGING_PAGES, title="Compte rendu d'imagerie"))
    write(PDF_DIR / "biology_scanned.pdf", image_pdf([a4_scan(SCAN_REPORT)]))
    write(PDF_DIR / "mixed.pdf", image_pdf([BIOLOGY_REPORT, a4_scan(SCANNED_ANNEX)]))
    write(PDF_DIR / "encrypted.pdf", encrypted(text, user_password="secret", owner_password="owner-secret"))
    # Only an owner password: readers open it with the empty user password.
    write(
        PDF_DIR / "owner_password_only.pdf", encrypted(text, user_password="", owner_password="owner-secret")
    )
    write(PDF_DIR / "truncated.pdf", text[: len(text) // 2])
    write(PDF_DIR / "blank.pdf", blank_pdf())

    scan = scan_image(SCAN_REPORT, width_px=2000)
    write(IMAGE_DIR / "biology_scan.png", image_bytes(scan.convert("1"), "PNG", dpi=(300, 300)))
    # Phone-or-office JPEG at 200 dpi: lossy, grey, smaller than the bilevel PNG scan.
    photo = scan_image(SCAN_REPORT, width_px=1400, dpi=200)
    write(IMAGE_DIR / "biology_scan.jpg", image_bytes(photo, "JPEG", quality=50, dpi=(200, 200)))
    pages = [scan_image(lines, width_px=2000).convert("1") for lines in IMAGING_PAGES[:2]]
    write(
        IMAGE_DIR / "imaging_2pages.tiff",
        image_bytes(
            pages[0], "TIFF", save_all=True, append_images=pages[1:], compression="group4", dpi=(300, 300)
        ),
    )
    png = (IMAGE_DIR / "biology_scan.png").read_bytes()
    write(IMAGE_DIR / "truncated.png", png[: len(png) // 2])
    write(IMAGE_DIR / "blank.png", image_bytes(Image.new("L", (1240, 1754), 255), "PNG"))
    write(IMAGE_DIR / "random.bin", random.Random(20250203).randbytes(4096))


if __name__ == "__main__":
    main()
