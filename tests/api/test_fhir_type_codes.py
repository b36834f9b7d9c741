"""A document's type in FHIR: LOINC, the national TRE_A05 types, or a producer's own code,
each with its own system (a national type is not a LOINC code)."""

from __future__ import annotations

import datetime as dt

import pytest
from starlette.datastructures import QueryParams

from pipeline.api.fhir import SearchError, parse_search
from pipeline.api.fhir_resources import LOINC, NATIONAL_TYPES, document_reference
from pipeline.model import DocClass, DocumentRecord, Format
from pipeline.type_codes import LOINC_SYSTEM, NATIONAL_TYPE_SYSTEM, TYPE_CODES, type_code_system
from tests.api.conftest import Api, patient

INS = "299057511223384"


def record(type_code: str | None) -> DocumentRecord:
    known = TYPE_CODES.get(type_code or "")
    return DocumentRecord(
        doc_id="d" * 32,
        series_id="s" * 32,
        patient_id=INS,
        doc_class=known[0] if known else DocClass.OTHER,
        type_code=type_code,
        type_label=known[1] if known else None,
        classification_rule="cda.code",
        classification_confidence=1.0,
        title="Document",
        producer="p",
        source="x.xml",
        format=Format.CDA,
        content_sha256="0" * 64,
        ingested_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    )


@pytest.mark.parametrize(
    ("code", "system"),
    [
        ("11502-2", LOINC),
        ("29274-8", LOINC),
        ("99999-9", LOINC),
        ("REMB", NATIONAL_TYPES),
        ("PRESC-KINE", NATIONAL_TYPES),
        ("CR-LOCAL-42", None),
    ],
)
def test_document_reference_type_has_the_codes_own_system(code: str, system: str | None) -> None:
    resource = document_reference(record(code), base_url="http://x/fhir", media_type="text/xml")
    (coding,) = resource.type.coding  # type: ignore[union-attr]
    assert (coding.system, coding.code) == (system, code)


def test_document_reference_without_type() -> None:
    resource = document_reference(record(None), base_url="http://x/fhir", media_type="text/xml")
    assert resource.type is not None and resource.type.coding is None


def test_every_table_code_has_a_system() -> None:
    assert {type_code_system(c) for c in TYPE_CODES} == {LOINC_SYSTEM, NATIONAL_TYPE_SYSTEM}


@pytest.mark.parametrize("value", [f"{NATIONAL_TYPES}|REMB", "REMB", f"{LOINC}|11502-2"])
def test_type_search_accepts_loinc_and_national_systems(value: str) -> None:
    search = parse_search(QueryParams({"patient.identifier": INS, "type": value}))
    assert search.type_code == value.rpartition("|")[2]


def test_type_search_refuses_other_systems() -> None:
    with pytest.raises(SearchError, match="unsupported system"):
        parse_search(QueryParams({"patient.identifier": INS, "type": "urn:oid:1.2.3|REMB"}))


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        (f"{LOINC}|11502-2", True),
        (f"{NATIONAL_TYPES}|REMB", True),
        ("REMB", True),
        # A token's system|code matches codings of that system only: REMB is no LOINC code,
        # 11502-2 no national type, and |code is a code given without a system.
        (f"{LOINC}|REMB", False),
        (f"{NATIONAL_TYPES}|11502-2", False),
        ("|REMB", False),
        ("|CR-LOCAL-42", True),
    ],
)
def test_type_search_matches_the_code_in_its_own_system_only(value: str, matches: bool) -> None:
    search = parse_search(QueryParams({"patient.identifier": INS, "type": value}))
    assert search.matches_nothing is not matches


def test_a_type_in_another_system_finds_nothing_through_the_api(api: Api) -> None:
    api.file(INS, "remb", type_code="REMB", doc_class=DocClass.OTHER)
    for value, found in ((f"{NATIONAL_TYPES}|REMB", 1), (f"{LOINC}|REMB", 0)):
        params = {"patient.identifier": INS, "type": value}
        r = api.get(patient(INS), "/fhir/DocumentReference", params=params)
        assert r.status_code == 200 and r.json()["total"] == found
