from __future__ import annotations

import datetime as dt

from pipeline.model import (
    DocClass,
    DocumentRecord,
    Format,
    LabResult,
    Outcome,
    Problem,
    Reason,
    Status,
    Visibility,
)
from pipeline.schema import SCHEMAS, render, schemas


def record() -> DocumentRecord:
    return DocumentRecord(
        doc_id="d1",
        series_id="s1",
        patient_id="284057512345672",
        doc_class=DocClass.BIOLOGY,
        type_code="11502-2",
        classification_rule="hl7.message_type",
        classification_confidence=1.0,
        title="Bilan",
        document_date=dt.date(2025, 11, 5),
        producer="labo",
        source="a.hl7#1",
        format=Format.HL7V2,
        content_sha256="0" * 64,
        text="Hémoglobine 13,5 g/dL",
        results=(
            LabResult(
                analyte="Hémoglobine",
                loinc="718-7",
                value="13.5",
                numeric_value=13.5,
                unit="g/dL",
                reference_range="12-16",
                abnormal_flag="N",
            ),
        ),
        visibility=(Visibility.MASQUE_PS,),
        warnings=(Problem(code=Reason.MISSING_DATE, message="m", blocking=False),),
        ingested_at=dt.datetime(2025, 11, 6, tzinfo=dt.UTC),
    )


def test_document_record_json_round_trip() -> None:
    r = record()
    assert DocumentRecord.model_validate_json(r.model_dump_json()) == r


def test_outcome_report_line() -> None:
    o = Outcome(
        source="f.pdf", status=Status.REJECTED, reasons=(Problem(code=Reason.MISSING_INS, message="no INS"),)
    )
    line = o.report_line()
    assert line["reasons"] == ["missing_ins: no INS"] and line["doc_id"] is None


def test_committed_json_schemas_are_up_to_date() -> None:
    for name, schema in schemas().items():
        assert (SCHEMAS / name).read_text(encoding="utf-8") == render(schema), (
            f"schemas/{name} is stale: run python -m pipeline.schema"
        )


def test_a_problem_message_quoting_what_a_producer_sent_is_bounded() -> None:
    from pipeline.model import PROBLEM_MESSAGE_MAX

    analyte = "Hémoglobine " * 2_000  # an analyte name as long as a producer cares to make it
    long = Problem(
        code=Reason.INVALID_RESULT, message=f"{analyte}: numeric result (NM) whose value is not a number"
    )
    assert len(long.message) == PROBLEM_MESSAGE_MAX and long.message.endswith("…")
    assert long.message.startswith("Hémoglobine Hémoglobine")
    short = Problem(code=Reason.INVALID_RESULT, message="Hémoglobine: not a number")
    assert short.message == "Hémoglobine: not a number"
