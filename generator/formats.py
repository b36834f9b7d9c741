"""Writers turning a ``Report`` into the bytes producers send: text PDFs (reportlab),
scans (Pillow, DejaVu Sans at 300 dpi, as PNG, TIFF or image-only PDF), HL7 v2.5
ORU^R01 messages and CDA R2 documents, plus the broken files a real feed also brings
(truncated, encrypted, empty, random bytes, an office document, a blank scan).

Every writer is deterministic: reportlab runs with ``invariant=1`` (no timestamps or
random ids) and archive members get fixed dates, so a seed always gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import zipfile
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, ImageDraw, ImageFont
from reportlab.lib.pagesizes import A4
from reportlab.lib.pdfencrypt import StandardEncryption
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from generator.documents import PANEL_CODES, TYPE_LABELS, Report, report_lines
from generator.people import INS_PRINTS, Patient, format_ins
from pipeline.identifiers import INS_NIR_OID, RPPS_OID, STRUCTURE_OID
from pipeline.model import DocClass

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
SCAN_DPI = 300
# A4 at 300 dpi.
SCAN_SIZE = (2480, 3508)
LOINC_OID = "2.16.840.1.113883.6.1"
_WRAP = 95


def _wrap(line: str, width: int) -> list[str]:
    words, out, current = line.split(), [], ""
    for w in words:
        if current and len(current) + 1 + len(w) > width:
            out.append(current)
            current = w
        else:
            current = f"{current} {w}" if current else w
    out.append(current)
    return out


def printed_lines(report: Report, *, ins_line: str | None, narrow: bool = False) -> list[tuple[str, str]]:
    """The page as ``(style, text)`` lines; style is ``head``, ``title`` or ``body``.

    ``ins_line`` is the printed identifier line (``None``: the document prints no INS).
    """
    p, patient, author = report.producer, report.patient, report.author
    width = 58 if narrow else _WRAP
    lines: list[tuple[str, str]] = [
        ("head", p.name),
        ("body", p.address),
        ("body", f"Tél. {p.phone}"),
        ("body", f"FINESS : {p.finess}"),
        ("body", ""),
        ("body", f"Patient : {patient.family_name} {patient.given_name}"),
        ("body", f"Né(e) le {patient.birth_date:%d/%m/%Y}   Sexe : {patient.sex}"),
    ]
    if ins_line:
        lines.append(("body", ins_line))
    lines += [("body", ""), ("title", report.title)]
    if report.doc_class is DocClass.PRESCRIPTION:
        lines.append(("body", f"{author.display_name}, {author.specialty.lower()}"))
    lines.append(("body", ""))
    for raw in report_lines(report):
        lines.extend(("body", part) for part in _wrap(raw, width))
    lines.append(("body", ""))
    if report.doc_class is DocClass.PRESCRIPTION:
        lines.append(("body", f"Fait à {p.city}, le {report.date:%d/%m/%Y}"))
    elif report.doc_class is DocClass.BIOLOGY:
        lines.append(("body", f"Compte rendu validé le {report.date:%d/%m/%Y}"))
    lines.append(("body", f"{author.display_name} ({author.specialty})"))
    lines.append(("body", f"RPPS : {author.rpps}"))
    return lines


def ins_print(patient_ins: str, label_style: tuple[str, str]) -> str:
    label, style = label_style
    return f"{label} {format_ins(patient_ins, style)}"


# -- PDF -----------------------------------------------------------------------------------


def text_pdf(report: Report, *, ins_line: str | None, password: str | None = None) -> bytes:
    """A one-page report with a text layer (standard fonts, no embedding: fast)."""
    buf = io.BytesIO()
    enc = StandardEncryption(password, ownerPassword=password + "-owner", strength=128) if password else None
    c = canvas.Canvas(buf, pagesize=A4, invariant=1, encrypt=enc)
    c.setTitle(report.title)
    c.setAuthor(report.author.display_name)
    c.setCreator(report.producer.name)
    width, height = A4
    y = height - 56
    for style, text in printed_lines(report, ins_line=ins_line):
        if y < 50:
            c.showPage()
            y = height - 56
        if style == "head":
            c.setFont("Helvetica-Bold", 13)
        elif style == "title":
            c.setFont("Helvetica-Bold", 15)
            y -= 4
        else:
            c.setFont("Helvetica", 10)
        if text:
            c.drawString(50, y, text)
        y -= 20 if style == "title" else 14
    c.showPage()
    c.save()
    return buf.getvalue()


def truncated(data: bytes) -> bytes:
    """The first 60 % of a file, as a transfer cut short leaves it."""
    return data[: int(len(data) * 0.6)]


# -- scans ---------------------------------------------------------------------------------


@cache
def _font(bold: bool, size: int) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(FONT_DIR / name), size)


def scan_page(report: Report, *, ins_line: str | None) -> Image.Image:
    """The report printed and scanned: grayscale A4 at 300 dpi, large clean DejaVu text."""
    page = Image.new("L", SCAN_SIZE, 255)
    draw = ImageDraw.Draw(page)
    y = 200
    for style, text in printed_lines(report, ins_line=ins_line, narrow=True):
        font = _font(style != "body", 60 if style == "title" else 44)
        if text:
            draw.text((180, y), text, fill=20, font=font)
        y += 90 if style == "title" else 66
        if y > SCAN_SIZE[1] - 150:
            break
    return page


def blank_page() -> Image.Image:
    return Image.new("L", SCAN_SIZE, 255)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", dpi=(SCAN_DPI, SCAN_DPI), optimize=False)
    return buf.getvalue()


def tiff(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "TIFF", dpi=(SCAN_DPI, SCAN_DPI), compression="tiff_lzw")
    return buf.getvalue()


def scanned_pdf(image: Image.Image, *, title: str) -> bytes:
    """An image-only PDF, as a scanner's "scan to PDF" makes (no text layer)."""
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=1)
    c.setTitle(title)
    c.drawImage(ImageReader(image), 0, 0, width=A4[0], height=A4[1])
    c.showPage()
    c.save()
    return buf.getvalue()


# -- other files ---------------------------------------------------------------------------


def random_bytes(rng: random.Random, size: int = 4096) -> bytes:
    """Bytes no parser recognises (the first byte keeps them clear of every magic number)."""
    return b"\x00" + rng.randbytes(size - 1)


def office_document(text: str) -> bytes:
    """A minimal ``.docx``-like archive (a ZIP with a WordprocessingML part)."""
    buf = io.BytesIO()
    parts = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns='
        '"http://schemas.openxmlformats.org/package/2006/content-types"><Override '
        'PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.wordprocessingml.document.main+xml"/></Types>',
        "word/document.xml": '<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w='
        '"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>'
        f"{escape(text)}</w:t></w:r></w:p></w:body></w:document>",
    }
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in parts.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), content)
    return buf.getvalue()


# -- HL7 v2.5 ORU^R01 ----------------------------------------------------------------------


def _hl7_escape(text: str) -> str:
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )


def _ts(moment: dt.datetime) -> str:
    return f"{moment:%Y%m%d%H%M%S}"


def hl7_message(report: Report, *, control_id: str, ipp: str, ins: str, sent_at: dt.datetime) -> str:
    """One ORU^R01 message, segments ended by ``\\r``; ``ins`` goes into PID-3 as given."""
    p, patient, author = report.producer, report.patient, report.author
    e = _hl7_escape
    msh = [
        "MSH",
        "^~\\&",
        "SIL",
        f"{e(p.name)}^{p.finess}^FINESS",
        "CARNET",
        "DMP",
        _ts(sent_at),
        "",
        "ORU^R01^ORU_R01",
        control_id,
        "P",
        "2.5",
        "",
        "",
        "AL",
        "NE",
        "FRA",
        p.hl7_charset,
        "FRA",
    ]
    pid3 = f"{ipp}^^^{p.producer_id.upper()}&{p.oid}&ISO^PI~{ins}^^^ASIP-SANTE-INS-NIR&{INS_NIR_OID}&ISO^INS"
    pid = [
        "PID",
        "1",
        "",
        pid3,
        "",
        f"{e(patient.family_name)}^{e(patient.given_name)}^^^^^L",
        "",
        f"{patient.birth_date:%Y%m%d}",
        patient.sex,
    ]
    status = "C" if report.corrected else "F"
    placer = f"P{report.order_number}"
    panels = list(dict.fromkeys(r.analyte.panel for r in report.results))
    code, label = PANEL_CODES[panels[0]]
    interpreter = (
        f"{author.rpps}&{e(author.family_name.upper())}&{e(author.given_name)}&&&Dr&&&"
        f"ASIP-SANTE-PS&{RPPS_OID}&ISO"
    )
    orc = ["ORC", "RE", placer, report.order_number]
    obr = (
        ["OBR", "1", placer, report.order_number, f"{code}^{e(label)}^LN", "", "", _ts(report.moment)]
        + [""] * 14
        + [_ts(sent_at), "", "", status]
        + [""] * 6
        + [interpreter]
    )
    segments = ["|".join(msh), "|".join(pid), "|".join(orc), "|".join(obr)]
    for i, r in enumerate(report.results, start=1):
        a = r.analyte
        segments.append(
            "|".join(
                [
                    "OBX",
                    str(i),
                    "NM",
                    f"{a.loinc}^{e(a.name)}^LN",
                    "",
                    r.text,
                    f"{a.ucum}^{a.ucum}^UCUM",
                    r.range_text,
                    r.flag,
                    "",
                    "",
                    status,
                    "",
                    "",
                    _ts(report.moment),
                ]
            )
        )
    for _, body in report.sections:
        for j, line in enumerate(body, start=1):
            segments.append(f"NTE|{j}|L|{e(line)}")
    return "\r".join(segments) + "\r"


def broken_hl7_message() -> str:
    """A message whose MSH lost its encoding characters and fields, followed by noise."""
    return "MSH|||||\r%%%% TRANSMISSION INTERROMPUE %%%% 7F3A-9C0B\r@@@@@@@@\r"


def hl7_encoding(charset: str) -> str:
    """The Python codec for an MSH-18 character set value."""
    return "latin-1" if charset == "8859/1" else "utf-8"


# -- CDA R2 --------------------------------------------------------------------------------


def _cda_section(title: str, paragraphs: list[str], entries: str = "", code: str | None = None) -> str:
    body = "".join(f"<paragraph>{escape(x)}</paragraph>" for x in paragraphs)
    code_xml = f'<code code="{code}" codeSystem="{LOINC_OID}"/>' if code else ""
    return (
        f"<component><section>{code_xml}<title>{escape(title)}</title><text>{body}</text>"
        f"{entries}</section></component>"
    )


def _result_table(report: Report) -> str:
    rows = "".join(
        f"<tr><td>{escape(r.analyte.name)}</td><td>{r.text}</td><td>{escape(r.analyte.printed_unit)}"
        f"</td><td>{r.range_text}</td><td>{r.flag}</td></tr>"
        for r in report.results
    )
    return (
        "<table><thead><tr><th>Analyse</th><th>Résultat</th><th>Unité</th>"
        f"<th>Valeurs de référence</th><th>Interprétation</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _result_entries(report: Report) -> str:
    out = []
    for r in report.results:
        a = r.analyte
        out.append(
            '<entry><observation classCode="OBS" moodCode="EVN">'
            f'<code code="{a.loinc}" codeSystem="{LOINC_OID}" displayName={quoteattr(a.name)}/>'
            f'<statusCode code="completed"/><effectiveTime value="{_ts(report.moment)}"/>'
            f'<value xsi:type="PQ" value="{r.text}" unit={quoteattr(a.ucum)}/>'
            f'<interpretationCode code="{r.flag}" codeSystem="2.16.840.1.113883.5.83"/>'
            '<referenceRange><observationRange><value xsi:type="IVL_PQ">'
            f'<low value="{a.low:.{a.decimals}f}" unit={quoteattr(a.ucum)}/>'
            f'<high value="{a.high:.{a.decimals}f}" unit={quoteattr(a.ucum)}/>'
            "</value></observationRange></referenceRange></observation></entry>"
        )
    return "".join(out)


def cda_document(
    report: Report,
    *,
    doc_id: str,
    set_id: str,
    version: int,
    ins: str,
    printed_ins: str | None = None,
    ipp: str,
) -> bytes:
    """A CDA R2 document; ``printed_ins`` (if given) is printed in the narrative."""
    p, patient, author = report.producer, report.patient, report.author
    when = f"{_ts(report.moment)}+0100"
    family, given = escape(patient.family_name), escape(patient.given_name)
    sections = []
    header = [f"Patient : {patient.family_name} {patient.given_name}, né(e) le {patient.birth_date:%d/%m/%Y}"]
    if printed_ins:
        header.append(printed_ins)
    sections.append(_cda_section("Identification", header))
    if report.results:
        sections.append(
            f'<component><section><code code="18723-7" codeSystem="{LOINC_OID}"/>'
            f"<title>Résultats d'examens biologiques</title><text>"
            f"<paragraph>Prélèvement du {report.date:%d/%m/%Y} à {report.time:%H:%M}</paragraph>"
            f"{_result_table(report)}</text>{_result_entries(report)}</section></component>"
        )
    for heading, body in report.sections:
        sections.append(_cda_section(heading, list(body)))
    sections.append(
        _cda_section("Signature", [f"{author.display_name} ({author.specialty})", f"RPPS : {author.rpps}"])
    )
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <templateId root="1.2.250.1.213.1.1.1.1"/>
  <id root="{p.oid}.2" extension="{doc_id}"/>
  <code code="{report.type_code}" codeSystem="{LOINC_OID}" codeSystemName="LOINC"
        displayName={quoteattr(TYPE_LABELS[report.type_code])}/>
  <title>{escape(report.title)}</title>
  <effectiveTime value="{when}"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="{p.oid}.3" extension="{set_id}"/>
  <versionNumber value="{version}"/>
  <recordTarget>
    <patientRole>
      <id root="{INS_NIR_OID}" extension="{ins}"/>
      <id root="{p.oid}.1" extension="{ipp}"/>
      <patient>
        <name><given>{given}</given><family>{family}</family></name>
        <administrativeGenderCode code="{patient.sex}" codeSystem="2.16.840.1.113883.5.1"/>
        <birthTime value="{patient.birth_date:%Y%m%d}"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="{when}"/>
    <assignedAuthor>
      <id root="{RPPS_OID}" extension="8{author.rpps}"/>
      <assignedPerson><name><prefix>Dr</prefix><given>{escape(author.given_name)}</given><family>{escape(author.family_name)}</family></name></assignedPerson>
      <representedOrganization>
        <id root="{STRUCTURE_OID}" extension="1{p.finess}"/>
        <name>{escape(p.name)}</name>
      </representedOrganization>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="{STRUCTURE_OID}" extension="1{p.finess}"/>
        <name>{escape(p.name)}</name>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <documentationOf>
    <serviceEvent><effectiveTime><low value="{when}"/></effectiveTime></serviceEvent>
  </documentationOf>
  <component>
    <structuredBody>
      {"".join(sections)}
    </structuredBody>
  </component>
</ClinicalDocument>
"""
    return xml.encode("utf-8")


def patient_ins_line(patient: Patient, index: int) -> str:
    """The INS line printed for ``patient``, varying the label and spacing with ``index``."""
    return ins_print(patient.ins, INS_PRINTS[index % len(INS_PRINTS)])
