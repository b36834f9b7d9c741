"""A corpus of normal French biology and imaging reports, and of defective ones, for the quality gate.

Run it to write the corpus to a folder (``.venv/bin/python -m tests.samples.quality.corpus OUT``)
or import ``normal_corpus`` / ``defect_corpus`` (the tests and
``benchmarks/quality_false_rejections.py`` do). Everything is made up and deterministic:
patients and producers come from Carnet's generator (valid INS keys), values are drawn
from the usual adult ranges, 20 % of them outside the range as real reports have them.

Normal reports use many analytes with the units French labs print — ``%``, ``pg``, ``fL``,
``/mL``, ``mL/min/1,73m²``, ``mmol/L``, ``µmol/L``, ``g/L``, ``g/dL``, ``UI/L``, ``U/L``,
``G/L``, ``10^9/L``, ``x10E3/µL``, ``/mm3``, ``T/L``, ``ng/mL``, ``pmol/L`` for vitamin B12
and free T4 — and imaging reports print their dose indicators (``mGy``, ``mGy.cm``,
``Gy.cm²``). They come as text PDFs in five row layouts (one drawn cell by cell), HL7 v2.5
ORU^R01 messages and CDA R2 documents. Defective reports carry one known defect each: µ read
as p, a unit of the wrong kind, a ×10 slip beside its range, a negative value, an exam
before the birth.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

from generator import formats
from generator.documents import BIOLOGY_CODE, IMAGING_CODE, Analyte, Report, Result
from generator.people import (
    DEFAULT_PRODUCERS,
    Patient,
    ProducerKind,
    make_patients,
    with_professionals,
)
from pipeline.model import DocClass, Outcome, Reason

REFERENCE_DAY = dt.date(2025, 6, 1)
LAYOUTS = 5  # ways of printing a result row, see ``result_row``


@dataclass(frozen=True)
class Printed:
    """One way an analyte's unit is printed on paper, and the factor from the HL7/CDA value."""

    unit: str
    factor: float = 1.0


# name, LOINC, UCUM (HL7/CDA), low, high, decimals, panel (the OBR code of the generator).
def _a(name: str, loinc: str, ucum: str, low: float, high: float, decimals: int, panel: str) -> Analyte:
    return Analyte(name, loinc, ucum, ucum, low, high, decimals, panel)


H, R, G, T, M, INF = (
    "Hémogramme",
    "Bilan rénal",
    "Bilan glucidique",
    "Bilan thyroïdien",
    "Bilan martial",
    "Inflammation",
)
ANALYTES: tuple[tuple[Analyte, tuple[Printed, ...]], ...] = (
    (
        _a("Hématies", "789-8", "10*12/L", 4.2, 5.7, 2, H),
        (Printed("T/L"), Printed("10^12/L"), Printed("x10E6/µL")),
    ),
    (_a("Hémoglobine", "718-7", "g/dL", 12.0, 16.5, 1, H), (Printed("g/dL"), Printed("g/L", 10))),
    (_a("Hématocrite", "4544-3", "%", 37.0, 49.0, 1, H), (Printed("%"),)),
    (_a("VGM", "787-2", "fL", 80.0, 100.0, 1, H), (Printed("fL"), Printed("µm3"))),
    (_a("TCMH", "785-6", "pg", 27.0, 32.0, 1, H), (Printed("pg"),)),
    (_a("CCMH", "786-4", "g/dL", 32.0, 36.0, 1, H), (Printed("g/dL"), Printed("%"))),
    (_a("IDR", "788-0", "%", 11.5, 14.5, 1, H), (Printed("%"),)),
    (
        _a("Leucocytes", "6690-2", "10*9/L", 4.0, 10.0, 2, H),
        (Printed("G/L"), Printed("10^9/L"), Printed("x10E3/µL"), Printed("/mm3", 1000)),
    ),
    (_a("Polynucléaires neutrophiles", "770-8", "%", 40.0, 75.0, 1, H), (Printed("%"),)),
    (_a("Polynucléaires neutrophiles", "751-8", "10*9/L", 1.8, 7.5, 2, H), (Printed("G/L"),)),
    (_a("Lymphocytes", "736-9", "%", 20.0, 45.0, 1, H), (Printed("%"),)),
    (_a("Lymphocytes", "731-0", "10*9/L", 1.0, 4.0, 2, H), (Printed("G/L"),)),
    (_a("Monocytes", "5905-5", "%", 2.0, 10.0, 1, H), (Printed("%"),)),
    (_a("Plaquettes", "777-3", "10*9/L", 150, 400, 0, H), (Printed("G/L"), Printed("/mm3", 1000))),
    (_a("VPM", "32623-1", "fL", 7.4, 10.8, 1, H), (Printed("fL"),)),
    (
        _a("Créatinine", "14682-9", "umol/L", 45, 104, 0, R),
        (Printed("µmol/L"), Printed("umol/L"), Printed("mg/L", 0.1131)),
    ),
    (
        _a("DFG estimé (CKD-EPI)", "62238-1", "mL/min/{1.73_m2}", 60, 140, 0, R),
        (Printed("mL/min/1,73m²"), Printed("mL/min/1.73 m2")),
    ),
    (_a("Clairance de la créatinine", "2164-2", "mL/min", 80, 140, 0, R), (Printed("mL/min"),)),
    (_a("Urée", "22664-7", "mmol/L", 2.5, 7.5, 2, R), (Printed("mmol/L"), Printed("g/L", 0.06006))),
    (_a("Sodium", "2951-2", "mmol/L", 136, 145, 0, R), (Printed("mmol/L"), Printed("mEq/L"))),
    (_a("Potassium", "2823-3", "mmol/L", 3.5, 5.1, 1, R), (Printed("mmol/L"),)),
    (_a("Chlore", "2075-0", "mmol/L", 98, 107, 0, R), (Printed("mmol/L"),)),
    (_a("Calcium", "17861-6", "mmol/L", 2.15, 2.55, 2, R), (Printed("mmol/L"), Printed("mg/L", 40.08))),
    (_a("Acide urique", "3084-1", "umol/L", 150, 420, 0, R), (Printed("µmol/L"),)),
    (_a("Leucocytes urinaires", "30405-5", "/mL", 0, 10000, 0, R), (Printed("/mL"),)),
    (_a("Hématies urinaires", "13945-1", "/mL", 0, 10000, 0, R), (Printed("/mL"),)),
    (_a("Microalbuminurie", "14957-5", "mg/L", 0, 30, 1, R), (Printed("mg/L"),)),
    (
        _a("Glycémie à jeun", "14749-6", "mmol/L", 3.9, 5.8, 2, G),
        (Printed("mmol/L"), Printed("g/L", 0.18016)),
    ),
    (_a("HbA1c", "4548-4", "%", 4.0, 6.0, 1, G), (Printed("%"),)),
    (_a("Cholestérol total", "2093-3", "g/L", 1.5, 2.0, 2, G), (Printed("g/L"), Printed("mmol/L", 2.586))),
    (_a("Cholestérol HDL", "2085-9", "g/L", 0.4, 0.8, 2, G), (Printed("g/L"),)),
    (_a("Cholestérol LDL", "13457-7", "g/L", 0.8, 1.6, 2, G), (Printed("g/L"),)),
    (_a("Triglycérides", "2571-8", "g/L", 0.35, 1.5, 2, G), (Printed("g/L"), Printed("mmol/L", 1.14))),
    (_a("ALAT", "1742-6", "[IU]/L", 7, 40, 0, INF), (Printed("UI/L"), Printed("U/L"))),
    (_a("ASAT", "1920-8", "[IU]/L", 10, 40, 0, INF), (Printed("UI/L"),)),
    (_a("Gamma GT", "2324-2", "U/L", 9, 55, 0, INF), (Printed("U/L"), Printed("UI/L"))),
    (_a("Phosphatases alcalines", "6768-6", "U/L", 40, 130, 0, INF), (Printed("U/L"),)),
    (_a("Bilirubine totale", "1975-2", "umol/L", 3, 21, 0, INF), (Printed("µmol/L"),)),
    (_a("Protéine C réactive", "1988-5", "mg/L", 0, 5, 1, INF), (Printed("mg/L"),)),
    (_a("Taux de prothrombine", "5894-1", "%", 70, 100, 0, INF), (Printed("%"),)),
    (_a("INR", "6301-6", "{INR}", 0.8, 1.2, 2, INF), (Printed(""),)),
    (_a("Fibrinogène", "3255-7", "g/L", 2.0, 4.0, 2, INF), (Printed("g/L"),)),
    (_a("TSH", "3016-3", "m[IU]/L", 0.4, 4.0, 2, T), (Printed("mUI/L"), Printed("µUI/mL"))),
    (_a("T4 libre", "3024-7", "pmol/L", 9.0, 19.0, 1, T), (Printed("pmol/L"),)),
    (_a("Vitamine B12", "2132-9", "pmol/L", 145, 569, 0, T), (Printed("pmol/L"), Printed("pg/mL", 1.355))),
    (_a("Folates", "2284-8", "ng/mL", 3.9, 26.8, 1, T), (Printed("ng/mL"), Printed("nmol/L", 2.266))),
    (_a("25-OH vitamine D", "1989-3", "ng/mL", 30, 100, 0, T), (Printed("ng/mL"), Printed("nmol/L", 2.496))),
    (_a("PSA total", "2857-1", "ng/mL", 0, 4, 2, T), (Printed("ng/mL"),)),
    (_a("Ferritine", "2276-4", "ug/L", 30, 300, 0, M), (Printed("µg/L"), Printed("ng/mL"))),
    (_a("Fer sérique", "2498-4", "umol/L", 11, 30, 1, M), (Printed("µmol/L"),)),
    (_a("Transferrine", "3034-6", "g/L", 2.0, 3.6, 2, M), (Printed("g/L"),)),
)
PRINTED = {(a.name, a.loinc): p for a, p in ANALYTES}


@dataclass(frozen=True)
class Dose:
    label: str
    unit: str
    low: float
    high: float


# Dose indicators by modality, as radiology reports print them (code du travail / Euratom).
DOSES: dict[str, tuple[Dose, ...]] = {
    "CT": (Dose("CTDIvol", "mGy", 3, 15), Dose("PDL", "mGy.cm", 150, 900)),
    "DX": (Dose("Produit dose-surface (PDS)", "Gy.cm²", 0.05, 1.5),),
    "MG": (Dose("Dose glande moyenne", "mGy", 0.8, 2.5),),
}
EXAMS = (
    (
        "Scanner thoracique sans injection",
        "CT",
        "Acquisition hélicoïdale, coupes de 1 mm.",
        ("Absence de nodule pulmonaire suspect.", "Pas d'adénomégalie médiastinale."),
        "Scanner thoracique sans anomalie significative.",
    ),
    (
        "Scanner abdomino-pelvien avec injection",
        "CT",
        "Acquisition au temps portal après injection.",
        ("Foie de taille normale, sans lésion focale.", "Reins de morphologie normale."),
        "Examen sans anomalie.",
    ),
    (
        "Radiographie thoracique de face",
        "DX",
        "Cliché de face en inspiration profonde, debout.",
        ("Parenchyme pulmonaire sans foyer de condensation.", "Culs-de-sac pleuraux libres."),
        "Radiographie thoracique normale.",
    ),
    (
        "Mammographie bilatérale",
        "MG",
        "Incidences face et oblique externe bilatérales.",
        ("Seins de densité de type B.", "Absence de masse ou de foyer de microcalcifications."),
        "Mammographie classée ACR 1.",
    ),
)


@dataclass(frozen=True)
class Sample:
    """One document of the corpus: ``expected`` is None for a normal report."""

    name: str
    format: str  # pdf, hl7, cda, image
    data: bytes
    expected: Reason | None = None
    ins: str = ""


# -- values and printing ------------------------------------------------------------------------


def _value(rng: random.Random, a: Analyte) -> float:
    span = a.high - a.low
    if rng.random() < 0.2:  # outside the range, as a fifth of real results are
        value = (
            a.high + span * rng.uniform(0.05, 0.6)
            if rng.random() < 0.6
            else max(a.low - span * rng.uniform(0.05, 0.3), a.low * 0.5)
        )
    else:
        value = a.low + span * rng.uniform(0.1, 0.9)
    return round(value, a.decimals)


def _fr(value: float, decimals: int) -> str:
    """A number as French reports print it: decimal comma, thousands separated by a space."""
    text = f"{value:,.{decimals}f}".replace(",", " ").replace(".", ",")
    return text


def _scaled(a: Analyte, printed: Printed) -> Callable[[float], str]:
    """How a value is printed in another unit: about as many significant digits."""
    decimals = max(0, a.decimals - round(math.log10(printed.factor)))
    return lambda v: _fr(v * printed.factor, decimals)


def result_row(r: Result, printed: Printed, layout: int) -> str:
    """One printed result row in one of five layouts seen on French lab reports."""
    a = r.analyte
    show = _scaled(a, printed)
    value, low, high = show(r.value), show(a.low), show(a.high)
    flag = "" if r.flag == "N" else r.flag
    unit = printed.unit
    if layout == 0:  # "Hémoglobine : 13,5 (H) g/dL (12,0-16,5)"
        return f"{a.name} : {value}{f' ({flag})' if flag else ''} {unit} ({low}-{high})".replace("  ", " ")
    if layout == 1:  # dotted leaders, spaced range, flag last
        return f"{a.name} {'.' * max(3, 34 - len(a.name))} {value} {unit}    {low} - {high}  {flag}".rstrip()
    if layout == 2:  # a table exported with column separators
        return f"{a.name} | {value} | {unit} | {low} - {high} | {flag or ''}".rstrip(" |")
    if layout == 3:
        return f"{a.name}   {value}{' *' if flag else ''} {unit}   [{low} - {high}]"  # flag as a star
    # Cells placed one by one at their column (the text layer gives one cell per line).
    return CELL.join((a.name, value, unit, f"{low} - {high}", flag))


CELL = "\x1f"  # separates the cells of a row drawn cell by cell
COLUMNS = (40, 230, 300, 380, 480)


def _pdf(lines: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=1)
    width, height = A4
    y = height - 56
    for style, text in lines:
        if y < 50:
            c.showPage()
            y = height - 56
        c.setFont("Helvetica-Bold" if style != "body" else "Helvetica", 13 if style != "body" else 9)
        for x, cell in zip(COLUMNS if CELL in text else COLUMNS[:1], text.split(CELL), strict=False):
            if cell:
                c.drawString(x, y, cell)
        y -= 18 if style != "body" else 12
    c.showPage()
    c.save()
    return buf.getvalue()


def _header(report: Report, *, print_birth: bool = True) -> list[tuple[str, str]]:
    p, patient = report.producer, report.patient
    lines = [
        ("head", p.name),
        ("body", p.address),
        ("body", f"Tél. {p.phone}"),
        ("body", f"FINESS : {p.finess}"),
        ("body", ""),
        ("body", f"Patient : {patient.family_name} {patient.given_name}"),
    ]
    if print_birth:
        lines.append(("body", f"Né(e) le {patient.birth_date:%d/%m/%Y}   Sexe : {patient.sex}"))
    lines += [
        ("body", formats.ins_print(patient.ins, ("INS :", "spaced"))),
        ("body", ""),
        ("title", report.title),
        ("body", ""),
    ]
    return lines


def biology_pdf(
    report: Report,
    rng: random.Random,
    *,
    printed: dict[str, Printed] | None = None,
    layout: int | None = None,
) -> bytes:
    layout = rng.randrange(LAYOUTS) if layout is None else layout
    lines = _header(report)
    lines.append(("body", f"Prélèvement du {report.date:%d/%m/%Y} à {report.time:%H:%M}"))
    lines.append(("body", "Analyse | Résultat | Unité | Valeurs de référence"))
    panel = None
    for r in report.results:
        if r.analyte.panel != panel:
            panel = r.analyte.panel
            lines.append(("body", panel.upper()))
        choice = (printed or {}).get(r.analyte.name) or rng.choice(PRINTED[(r.analyte.name, r.analyte.loinc)])
        lines.append(("body", result_row(r, choice, layout)))
    lines += [
        ("body", ""),
        ("body", "Résultats contrôlés et validés par le biologiste."),
        ("body", f"Compte rendu validé le {report.date:%d/%m/%Y}"),
        ("body", f"{report.author.display_name} ({report.author.specialty})"),
        ("body", f"RPPS : {report.author.rpps}"),
    ]
    return _pdf(lines)


def biology_scan(report: Report, rng: random.Random) -> bytes:
    """The report printed with the units labs print and scanned (PNG, 300 dpi): its text is OCR's."""
    results = []
    for r in report.results:
        printed = rng.choice([p for p in PRINTED[(r.analyte.name, r.analyte.loinc)] if p.factor == 1])
        results.append(replace(r, analyte=replace(r.analyte, printed_unit=printed.unit)))
    page = formats.scan_page(
        replace(report, results=tuple(results)),
        ins_line=formats.ins_print(report.patient.ins, ("INS :", "spaced")),
    )
    return formats.png(page)


def imaging_pdf(report: Report, *, print_birth: bool = True) -> bytes:
    lines = _header(report, print_birth=print_birth)
    lines.append(("body", f"Examen réalisé le {report.date:%d/%m/%Y}"))
    for heading, body in report.sections:
        if len(body) == 1:
            lines.append(("body", f"{heading} : {body[0]}"))
        else:
            lines.append(("body", f"{heading} :"))
            lines.extend(("body", line) for line in body)
    lines += [
        ("body", ""),
        ("body", f"{report.author.display_name} ({report.author.specialty})"),
        ("body", f"RPPS : {report.author.rpps}"),
    ]
    return _pdf(lines)


# -- reports ------------------------------------------------------------------------------------


class _World:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.patients = make_patients(self.rng, 24, reference=REFERENCE_DAY)
        self.labs = [
            with_professionals(p, self.rng)
            for p in DEFAULT_PRODUCERS
            if p.kind in (ProducerKind.LAB, ProducerKind.HOSPITAL)
        ]
        self.radiology = [
            with_professionals(p, self.rng) for p in DEFAULT_PRODUCERS if p.kind is ProducerKind.RADIOLOGY
        ]
        self.seq = 0

    def order(self, date: dt.date) -> str:
        self.seq += 1
        return f"{date:%y%m%d}{self.seq:05d}"

    def day(self, patient: Patient) -> dt.date:
        earliest = max(patient.birth_date + dt.timedelta(days=30), REFERENCE_DAY - dt.timedelta(days=900))
        return earliest + dt.timedelta(days=self.rng.randrange(max(1, (REFERENCE_DAY - earliest).days)))

    def biology(self, patient: Patient | None = None, date: dt.date | None = None) -> Report:
        rng = self.rng
        patient = patient or rng.choice(self.patients)
        producer = rng.choice(self.labs)
        date = date or self.day(patient)
        panels = sorted({a.panel for a, _ in ANALYTES})
        chosen = set(rng.sample(panels, rng.randrange(2, 5)))
        results = tuple(Result(a, _value(rng, a)) for a, _ in ANALYTES if a.panel in chosen)
        return Report(
            doc_class=DocClass.BIOLOGY,
            type_code=BIOLOGY_CODE,
            title="Compte rendu d'examens biologiques",
            date=date,
            time=dt.time(8, 30),
            patient=patient,
            producer=producer,
            author=rng.choice(producer.professionals),
            order_number=self.order(date),
            results=results,
            sections=(("Commentaire", ("Résultats contrôlés et validés par le biologiste.",)),),
        )

    def imaging(
        self,
        patient: Patient | None = None,
        date: dt.date | None = None,
        dose_value: Callable[[Dose], float] | None = None,
    ) -> Report:
        rng = self.rng
        patient = patient or rng.choice(self.patients)
        producer = rng.choice(self.radiology)
        date = date or self.day(patient)
        title, modality, technique, findings, conclusion = rng.choice(EXAMS)
        doses = tuple(
            f"{d.label} : {_fr(dose_value(d) if dose_value else rng.uniform(d.low, d.high), 1)} {d.unit}"
            for d in DOSES[modality]
        )
        return Report(
            doc_class=DocClass.IMAGING,
            type_code=IMAGING_CODE,
            title="Compte rendu d'imagerie médicale",
            date=date,
            time=dt.time(10, 15),
            patient=patient,
            producer=producer,
            author=rng.choice(producer.professionals),
            order_number=self.order(date),
            sections=(
                ("Examen", (title,)),
                ("Technique", (technique,)),
                ("Dosimétrie", doses),
                ("Résultats", findings),
                ("Conclusion", (f"Conclusion : {conclusion}",)),
            ),
        )

    def hl7(self, report: Report) -> bytes:
        return formats.hl7_message(
            report,
            control_id=f"Q{self.seq:08d}",
            ipp=f"9{self.seq:06d}",
            ins=report.patient.ins,
            sent_at=dt.datetime.combine(report.date, dt.time(20, 0)),
        ).encode(formats.hl7_encoding(report.producer.hl7_charset))

    def cda(self, report: Report) -> bytes:
        return formats.cda_document(
            report,
            doc_id=f"{report.order_number}-V1",
            set_id=f"S{report.order_number}",
            version=1,
            ins=report.patient.ins,
            ipp=f"9{self.seq:06d}",
        )


def normal_corpus(*, per_format: int = 40, scans: int = 0, seed: int = 7) -> list[Sample]:
    """Normal reports: biology as PDF, HL7 and CDA; imaging (with dose indicators) as PDF and
    CDA; ``scans`` biology reports scanned (read by OCR)."""
    w = _World(seed)
    out: list[Sample] = []
    for i in range(scans):
        r = w.biology()
        out.append(Sample(f"scan-{i:03d}.png", "image", biology_scan(r, w.rng), ins=r.patient.ins))
    for i in range(per_format):
        for fmt in ("pdf", "hl7", "cda"):
            r = w.biology()
            data = (
                biology_pdf(r, w.rng, layout=i % LAYOUTS)
                if fmt == "pdf"
                else w.hl7(r)
                if fmt == "hl7"
                else w.cda(r)
            )
            out.append(Sample(f"bio-{i:03d}.{fmt}", fmt, data, ins=r.patient.ins))
        r = w.imaging()
        out.append(Sample(f"img-{i:03d}.pdf", "pdf", imaging_pdf(r), ins=r.patient.ins))
        if i % 2 == 0:
            r = w.imaging()
            out.append(Sample(f"img-{i:03d}.cda", "cda", w.cda(r), ins=r.patient.ins))
    return out


def _spoil(report: Report, name: str, change: Callable[[Analyte, float], tuple[Analyte, float]]) -> Report:
    """``report`` with its result(s) named ``name`` changed (added when the panel lacks it)."""
    base = next(a for a, _ in ANALYTES if a.name == name)
    results = [r for r in report.results if r.analyte.name != name]
    analyte, value = change(base, round((base.low + base.high) / 2, base.decimals))
    return replace(report, results=(*results, Result(analyte, value)))


# Each defect: (name, expected reason, how the analyte changes, how the printed unit reads).
DEFECTS: tuple[tuple[str, Reason, str, Callable[[Analyte, float], tuple[Analyte, float]]], ...] = (
    (
        "creatinine-pmol",
        Reason.IMPLAUSIBLE_UNIT,
        "Créatinine",  # µ read as p
        lambda a, v: (replace(a, ucum="pmol/L", printed_unit="pmol/L"), v),
    ),
    (
        "ferritine-pg",
        Reason.IMPLAUSIBLE_UNIT,
        "Ferritine",  # µg/L read as pg/L
        lambda a, v: (replace(a, ucum="pg/L", printed_unit="pg/L"), v),
    ),
    (
        "creatinine-mmol",
        Reason.IMPLAUSIBLE_UNIT,
        "Créatinine",  # µ read as m
        lambda a, v: (replace(a, ucum="mmol/L", printed_unit="mmol/L"), v),
    ),
    (
        "leucocytes-mmol",
        Reason.IMPLAUSIBLE_UNIT,
        "Leucocytes",  # a unit of the wrong kind
        lambda a, v: (replace(a, ucum="mmol/L", printed_unit="mmol/L"), v),
    ),
    (
        "hemoglobine-x10",
        Reason.IMPLAUSIBLE_VALUE,
        "Hémoglobine",  # a g/L value under g/dL
        lambda a, v: (a, round(v * 10, 0)),
    ),
    ("glucose-negative", Reason.NEGATIVE_VALUE, "Glycémie à jeun", lambda a, v: (a, -v)),
)


def defect_corpus(*, seed: int = 11) -> list[Sample]:
    """Defective reports, each defect in every format, with the reason it must be rejected for."""
    w = _World(seed)
    out: list[Sample] = []
    for name, reason, analyte, change in DEFECTS:
        for fmt in ("pdf", "hl7", "cda"):
            r = _spoil(w.biology(), analyte, change)
            if fmt == "pdf":
                spoiled = next(x.analyte for x in r.results if x.analyte.name == analyte)
                printed = {analyte: Printed(spoiled.printed_unit)}
                data = biology_pdf(r, w.rng, printed=printed, layout=w.rng.randrange(LAYOUTS))
            else:
                data = w.hl7(r) if fmt == "hl7" else w.cda(r)
            out.append(Sample(f"{name}.{fmt}", fmt, data, reason, ins=r.patient.ins))
    # An exam before the birth: back-filled PDFs (with and without a printed birth date),
    # an HL7 message and a CDA document.
    adults = [p for p in w.patients if p.birth_date.year < 2000]
    for fmt in ("pdf", "pdf-no-birth", "hl7", "cda"):
        patient = w.rng.choice(adults)
        before = patient.birth_date - dt.timedelta(days=w.rng.randrange(400, 3000))
        if fmt.startswith("pdf"):
            r = w.imaging(patient, before)
            data = imaging_pdf(r, print_birth=fmt == "pdf")
        else:
            r = w.biology(patient, before)
            data = w.hl7(r) if fmt == "hl7" else w.cda(r)
        out.append(
            Sample(f"before-birth.{fmt}", fmt.split("-")[0], data, Reason.IMPLAUSIBLE_DATE, ins=patient.ins)
        )
    # A negative dose indicator printed in an imaging report.
    r = w.imaging(dose_value=lambda d: -d.high / 2)
    out.append(Sample("negative-dose.pdf", "pdf", imaging_pdf(r), Reason.NEGATIVE_VALUE, ins=r.patient.ins))
    return out


_EXT = {"pdf": "pdf", "hl7": "hl7", "cda": "xml", "image": "png"}


def write(samples: list[Sample], root: Path) -> list[Path]:
    """Write ``samples`` under ``root/<producer folder>``; returns the paths in order."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in samples:
        path = root / f"{s.name.rsplit('.', 1)[0]}.{s.format}.{_EXT[s.format]}"
        path.write_bytes(s.data)
        paths.append(path)
    return paths


def ingest_corpus(samples: list[Sample], root: Path) -> list[tuple[Sample, Outcome]]:
    """Run ``samples`` through ``carnet ingest``'s code path; each sample with its outcome."""
    from pipeline.ingest import ingest_sources
    from pipeline.settings import Settings

    paths = write(samples, root / "feed" / "corpus")
    summary = ingest_sources([str(root / "feed")], Settings(data_dir=root / "carnet"))
    by_source = {o.source.split("#")[0]: o for o in summary.outcomes}
    return [(s, by_source[str(p)]) for s, p in zip(samples, paths, strict=True)]


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "quality-corpus")
    write(normal_corpus(), out / "normal")
    write(defect_corpus(), out / "defects")
    print(f"wrote {out}/normal and {out}/defects")
