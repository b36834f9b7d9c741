"""Crafted records for the quality tests: one good biology report and ways to spoil it."""

from __future__ import annotations

import datetime as dt

import pytest
from stdnum.fr import nir

from generator.people import finess, rpps
from pipeline.model import DocClass, DocumentRecord, Format, LabResult, PatientDemographics

TODAY = dt.date(2025, 6, 1)
# A woman born in May 1984: sex digit 2, year 84, month 05.
NIR13 = "2840575123456"
INS = NIR13 + nir.calc_check_digits(NIR13)
DEMOGRAPHICS = PatientDemographics(
    family_name="Martin", given_name="Claire", birth_date=dt.date(1984, 5, 17), sex="F"
)
TEXT = (
    "Laboratoire BioLyon. Compte rendu d'examens biologiques. Créatinine 80 µmol/L "
    "(45-104). Hémoglobine 13,5 g/dL (12-16,5). Validé par le biologiste."
)


def creatinine(**changes: object) -> LabResult:
    base = LabResult(
        analyte="Créatinine",
        loinc="14682-9",
        value="80",
        numeric_value=80.0,
        value_type="NM",
        unit="umol/L",
        reference_range="45-104",
        abnormal_flag="N",
    )
    return base.model_copy(update=changes)


def make_record(doc_id: str = "doc-good", **changes: object) -> DocumentRecord:
    base = DocumentRecord(
        doc_id=doc_id,
        series_id=doc_id,
        patient_id=INS,
        doc_class=DocClass.BIOLOGY,
        type_code="11502-2",
        classification_rule="hl7.message_type",
        classification_confidence=1.0,
        title="CR de biologie",
        document_date=dt.date(2025, 3, 14),
        producer="labo-biolyon",
        producer_finess=finess("69", 412031),
        author_rpps=rpps(1234),
        source=f"in/{doc_id}.hl7",
        format=Format.HL7V2,
        content_sha256="0" * 64,
        text=TEXT,
        results=(
            creatinine(),
            LabResult(
                analyte="Hémoglobine",
                loinc="718-7",
                value="13.5",
                numeric_value=13.5,
                value_type="NM",
                unit="g/dL",
                reference_range="12-16.5",
                abnormal_flag="N",
            ),
        ),
        page_count=1,
        ingested_at=dt.datetime(2025, 6, 1, tzinfo=dt.UTC),
    )
    return base.model_copy(update=changes)


@pytest.fixture
def good_record() -> DocumentRecord:
    return make_record()
