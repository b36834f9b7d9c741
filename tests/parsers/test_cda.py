"""The CDA R2 parser on the synthetic samples of ``tests/samples/cda`` (see make_samples.py)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from pathlib import Path

import pytest
from pypdf import PdfWriter

from parsers.base import SNIFF_BYTES, Parser
from parsers.cda import MAX_DEPTH, CdaParser, parse_ts
from parsers.registry import default_registry
from pipeline.classification import classify_document
from pipeline.errors import EncryptedDocumentError, ParserError
from pipeline.model import (
    DocClass,
    Format,
    LabResult,
    ParsedDocument,
    PatientDemographics,
    PatientIdentifier,
    Reason,
    Visibility,
)
from pipeline.quality.checks import check_results
from tests.sample_scripts import assert_samples_match_their_generator, load_script

CDA = Path(__file__).parents[1] / "samples" / "cda"
INS_OID = "1.2.250.1.213.1.4.8"
LOINC = "2.16.840.1.113883.6.1"
CET = dt.timezone(dt.timedelta(hours=1))

CR_IMG_TEXT = "\n".join(
    [
        "Demande d'examen",
        "Toux persistante depuis trois semaines.",
        "Technique",
        "Radiographie thoracique de face et de profil,",
        "en inspiration.",
        "Résultat",
        "Pas d'opacité parenchymateuse.",
        "Cul-de-sac pleuraux libres. Silhouette cardiaque normale.",
        "Conclusion",
        "Radiographie thoracique normale.",
    ]
)


def sample(name: str) -> bytes:
    return (CDA / name).read_bytes()


def parse_one(data: bytes, source: str = "test.xml") -> ParsedDocument:
    docs = CdaParser().parse(data, source=source)
    assert len(docs) == 1
    return docs[0]


def score(data: bytes) -> int:
    return CdaParser().score(data[:SNIFF_BYTES])


def ins_key_ok(ins: str) -> bool:
    nir = int(ins[:13].upper().replace("2A", "19").replace("2B", "18"))
    return int(ins[13:]) == 97 - nir % 97


def with_body(text_element: str) -> bytes:
    """The PDF sample with its ``nonXMLBody/text`` replaced."""
    data = sample("cr-pdf.xml").decode()
    return re.sub(r"<text mediaType.*?</text>", lambda _: text_element, data, flags=re.S).encode()


# --- sniffing ----------------------------------------------------------------------------


def test_is_a_parser() -> None:
    assert isinstance(CdaParser(), Parser)
    assert CdaParser().name == "cda"


@pytest.mark.parametrize(
    "name",
    [
        "cr-bio.xml",
        "cr-bio-v2.xml",
        "cr-img.xml",  # stylesheet PI and comment before the root
        "cr-pdf.xml",
        "cr-masque-ps.xml",  # prefixed namespace
        "cr-ipp-only.xml",
        "malformed.xml",  # the root is a CDA: parse, not sniffing, rejects it
        "xxe.xml",  # DOCTYPE before the root
        "billion-laughs.xml",
    ],
)
def test_scores_clinical_documents(name: str) -> None:
    assert score(sample(name)) == 100


@pytest.mark.parametrize(
    "head",
    [
        b"\xef\xbb\xbf  \n<?xml version='1.0'?><!-- a\n comment --><ClinicalDocument xmlns='urn:hl7-org:v3'>",
        b"<v3:ClinicalDocument xmlns:xsi='x' xmlns:v3=\"urn:hl7-org:v3\"\n>",
        '<?xml version="1.0" encoding="UTF-16"?><ClinicalDocument xmlns="urn:hl7-org:v3">'.encode("utf-16"),
    ],
)
def test_scores_variants_of_the_prolog(head: bytes) -> None:
    assert score(head) == 100


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"%PDF-1.7\n",
        b"MSH|^~\\&|LAB|FAC|CARNET|DMP|20240312||ORU^R01|1|P|2.5\r",
        b'<?xml version="1.0"?><Bundle xmlns="http://hl7.org/fhir"/>',
        b'<?xml version="1.0"?><ClinicalDocument/>',  # no HL7 v3 namespace
        b'<ClinicalDocument xmlns="urn:hl7-org:v2"/>',
        b'<v3:ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:v3="urn:other"/>',
        b'<ClinicalDocumentX xmlns="urn:hl7-org:v3"/>',
        b'<!-- <ClinicalDocument xmlns="urn:hl7-org:v3"> --><html/>',
    ],
)
def test_other_content_scores_zero(head: bytes) -> None:
    assert score(head) == 0


def test_non_cda_sample_scores_zero() -> None:
    assert score(sample("not-cda.xml")) == 0


# --- CR-BIO ------------------------------------------------------------------------------


def test_cr_bio_header() -> None:
    data = sample("cr-bio.xml")
    doc = parse_one(data, "lab/cr-bio.xml")

    assert doc.source == "lab/cr-bio.xml"
    assert doc.part is None
    assert doc.format is Format.CDA
    assert doc.content == data
    assert doc.patient_ids == (
        PatientIdentifier(value="284037512345640", authority=INS_OID, kind="INS"),
        PatientIdentifier(value="IPP000123", authority="1.2.250.1.999.1.1.2", kind="IPP"),
    )
    assert ins_key_ok(doc.patient_ids[0].value)
    # The birth name (qualifier BR) wins over the married name written before it.
    assert doc.demographics == PatientDemographics(
        family_name="Martin", given_name="Claire", birth_date=dt.date(1984, 3, 21), sex="F"
    )
    assert doc.type_code == "11502-2"
    assert doc.type_code_system == LOINC
    assert doc.title == "Compte rendu d'examens de biologie médicale"
    # The exam (serviceEvent low, 12 March) and not the signature (effectiveTime) is the date.
    assert doc.document_date == dt.date(2024, 3, 12)
    assert doc.producer_document_id == "1.2.250.1.999.3^CRBIO-2024-0042"  # the setId
    assert doc.version == 1
    assert doc.author_rpps == "10001234567"
    assert doc.author_name == "Alice Biologiste"
    assert doc.producer_finess == "750000001"
    assert doc.producer_name == "Laboratoire Exemple Paris"
    assert doc.visibility == ()
    assert doc.page_count == 0
    assert doc.warnings == ()
    assert doc.message_type is None


def test_cr_bio_narrative_text() -> None:
    doc = parse_one(sample("cr-bio.xml"))
    assert doc.text == "\n".join(
        [
            "Hématologie",
            "Hémogramme",
            "Analyse | Résultat | Unité | Valeurs de référence",
            "Hémoglobine | 13,2 | g/dL | 12 - 16",
            "Leucocytes | 11,8 | 10^9/L | 4 - 10",
            "Hyperleucocytose modérée.",
            "Biochimie",
            "Glucose à jeun : 5,4 mmol/L (3,9 - 5,8)",
            "Aspect du sérum : limpide",
            "Groupe sanguin : A Rh+",
            "Validé par le Dr Alice Biologiste.",
        ]
    )


def test_narrative_content_marked_deleted_is_not_text() -> None:
    """CDA narrative revision marks: content revised="delete" is not rendered, so it is
    neither searchable nor shown; inserted content is."""
    data = sample("cr-bio.xml").replace(
        b"<paragraph>Hyperleucocytose mod\xc3\xa9r\xc3\xa9e.</paragraph>",
        '<paragraph>Hyperleucocytose <content revised="delete">sévère, leucémie</content>'
        '<content revised="insert">modérée</content>.</paragraph>'.encode(),
    )
    text = parse_one(data).text
    assert "Hyperleucocytose modérée." in text.splitlines()
    assert "leucémie" not in text and "sévère" not in text


def test_cr_bio_lab_results() -> None:
    doc = parse_one(sample("cr-bio.xml"))
    battery_time = dt.datetime(2024, 3, 12, 8, 15, tzinfo=CET)
    chemistry_day = dt.datetime(2024, 3, 12)
    assert doc.results == (
        LabResult(
            analyte="Hémoglobine",
            loinc="718-7",
            value="13.2",
            numeric_value=13.2,
            value_type="NM",
            unit="g/dL",
            reference_range="12-16",
            abnormal_flag="N",
            observed_at=battery_time,  # from its organizer
        ),
        LabResult(
            analyte="Leucocytes",
            loinc="6690-2",
            value="11.8",
            numeric_value=11.8,
            value_type="NM",
            unit="10*9/L",
            reference_range="4-10",
            abnormal_flag="H",
            observed_at=dt.datetime(2024, 3, 12, 8, 20, tzinfo=CET),  # its own time
        ),
        LabResult(
            analyte="Glucose",
            loinc="2345-7",
            value="5.4",
            numeric_value=5.4,
            value_type="NM",
            unit="mmol/L",
            reference_range="3.9-5.8",
            observed_at=chemistry_day,
        ),
        LabResult(
            analyte="Aspect du sérum",
            loinc="5767-9",
            value="Limpide",
            value_type="ST",
            observed_at=chemistry_day,
        ),
        LabResult(
            analyte="Groupe sanguin ABO et Rhésus",
            loinc="882-1",
            value="A Rh+",
            value_type="CE",
            observed_at=chemistry_day,
        ),
    )


@pytest.mark.parametrize(
    ("value", "number"),
    [("13.2", 13.2), ("1.32e1", 13.2), ("-4", -4.0),
     ("NaN", None), ("INF", None), ("-INF", None), ("1e400", None), ("1_3.2", None), ("13,2", None)],
)  # fmt: skip
def test_a_pq_value_is_a_number_only_when_a_finite_real(value: str, number: float | None) -> None:
    """float() reads "NaN", "INF", "1_3.2": such a value must stay "not a number" (which the
    quality gate rejects), never become a NaN or infinite result."""
    data = sample("cr-bio.xml").replace(b'value="13.2"', f'value="{value}"'.encode())
    result = parse_one(data).results[0]
    assert (result.value, result.numeric_value) == (value, number)


HB_VALUE = b'<value xsi:type="PQ" value="13.2" unit="g/dL"/>'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # A value withheld for a stated reason (not done, haemolysed sample): no value, no type.
        (b'<value xsi:type="PQ" nullFlavor="NA"/>', (None, None, None, None)),
        (b'<value xsi:type="PQ" nullFlavor="UNK" unit="g/dL"/>', (None, None, None, None)),
        (b'<value nullFlavor="NI"/>', (None, None, None, None)),
        # Below or above a limit: the unit is the bound's, whichever bound is given.
        (b'<value xsi:type="IVL_PQ"><high value="5" unit="mg/L" inclusive="false"/></value>',
         ("<5", None, "ST", "mg/L")),
        (b'<value xsi:type="IVL_PQ"><low value="90" unit="mL/min"/></value>', (">90", None, "ST", "mL/min")),
        # A ratio (a titre, an INR written as a ratio): numerator/denominator.
        (b'<value xsi:type="RTO_INT_INT"><numerator value="1"/><denominator value="160"/></value>',
         ("1/160", None, "ST", None)),
        (b'<value xsi:type="RTO"><numerator xsi:type="INT" value="1"/>'
         b'<denominator xsi:type="INT" value="64"/></value>',
         ("1/64", None, "ST", None)),
    ],
)  # fmt: skip
def test_values_without_a_plain_number(value: bytes, expected: tuple[object, ...]) -> None:
    data = sample("cr-bio.xml").replace(HB_VALUE, value)
    result = parse_one(data).results[0]
    assert (result.value, result.numeric_value, result.value_type, result.unit) == expected


@pytest.mark.parametrize(
    "attributes",
    [
        # Not an event: a goal (HbA1c below 7 %), a request, an intent, a proposal.
        b'moodCode="GOL"', b'moodCode="RQO"', b'moodCode="INT"', b'moodCode="PRP"',
        # A negated observation says the value was not found.
        b'moodCode="EVN" negationInd="true"',
    ],
)  # fmt: skip
def test_an_observation_that_did_not_happen_as_stated_is_no_result(attributes: bytes) -> None:
    data = sample("cr-bio.xml")
    tag = b'<observation classCode="OBS" moodCode="EVN">'  # the haemoglobin's, the first
    data = data.replace(tag, b'<observation classCode="OBS" %s>' % attributes, 1)
    analytes = [r.analyte for r in parse_one(data).results]
    assert "Hémoglobine" not in analytes and "Leucocytes" in analytes


@pytest.mark.parametrize(
    ("code", "value"),
    [
        # IHE PCC problem entry: "this condition is present" (ICD-10 E11, type 2 diabetes).
        (b"ASSERTION", b'<value xsi:type="CD" code="E11" codeSystem="2.16.840.1.113883.6.3"/>'),
        # IHE PCC allergy entry: a drug allergy, its agent.
        (b"DALG", b'<value xsi:type="CD" code="J01CA04" codeSystem="2.16.840.1.113883.6.73"/>'),
    ],
)
def test_a_problem_or_allergy_asserted_is_no_result(code: bytes, value: bytes) -> None:
    # Coded in HL7 ActCode (ASSERTION, the intolerance types): a statement that a condition
    # holds, as a synthesis lists them, not a measurement.
    entry = (
        b'<entry><act classCode="ACT" moodCode="EVN"><entryRelationship typeCode="SUBJ">'
        b'<observation classCode="OBS" moodCode="EVN"><code code="%s" codeSystem="2.16.840.1.113883.5.4"/>'
        b"%s</observation></entryRelationship></act></entry>" % (code, value)
    )
    data = sample("cr-bio.xml")
    first = data.index(b"<entry")
    analytes = [r.analyte for r in parse_one(data[:first] + entry + data[first:]).results]
    assert code.decode() not in analytes and "Hémoglobine" in analytes


def test_the_reason_of_a_prescribed_medication_is_no_result() -> None:
    # The indication of a prescription line (IHE PCC: entryRelationship RSON of a
    # substanceAdministration INT) is the intent's, though its own mood is EVN.
    line = (
        b'<entry><substanceAdministration classCode="SBADM" moodCode="INT">'
        b'<consumable><manufacturedProduct><manufacturedMaterial><code code="3400935955838"'
        b' codeSystem="1.2.250.1.213.2.3.1" displayName="AMOXICILLINE 1 g"/></manufacturedMaterial>'
        b"</manufacturedProduct></consumable>"
        b'<entryRelationship typeCode="RSON"><observation classCode="OBS" moodCode="EVN">'
        b'<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        b'<value xsi:type="CD" code="J15.9" codeSystem="2.16.840.1.113883.6.3"'
        b' displayName="Pneumopathie"/></observation></entryRelationship>'
        b"</substanceAdministration></entry>"
    )
    data = sample("cr-bio.xml")
    first = data.index(b"<entry")
    data = data[:first] + line + data[first:]
    analytes = [r.analyte for r in parse_one(data).results]
    assert "ASSERTION" not in analytes and "Hémoglobine" in analytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'<value value="13.2" unit="g/dL"/>', ("13.2", 13.2, "NM", "g/dL")),
        (b'<value code="10828004" codeSystem="2.16.840.1.113883.6.96" displayName="Positif"/>',
         ("Positif", None, "CE", None)),
        (b'<value value="positif"/>', ("positif", None, "ST", None)),
        (b"<value>Limpide</value>", ("Limpide", None, "ST", None)),
    ],
)  # fmt: skip
def test_a_value_without_its_xsi_type_is_read_by_its_attributes(
    value: bytes, expected: tuple[object, ...]
) -> None:
    """The schema wants xsi:type on an observation's value; a producer leaving it out still
    gives a quantity (value and unit) or a code, which must keep its unit and number."""
    result = parse_one(sample("cr-bio.xml").replace(HB_VALUE, value)).results[0]
    assert (result.value, result.numeric_value, result.value_type, result.unit) == expected


def test_a_result_withheld_by_a_null_flavor_is_not_an_invalid_result() -> None:
    """A lab report with one analyte not done is a normal report: the gate must not reject it
    as a numeric result whose value is not a number."""
    data = sample("cr-bio.xml").replace(HB_VALUE, b'<value xsi:type="PQ" nullFlavor="NA"/>')
    assert check_results(parse_one(data).results) == []


def test_version_2_shares_the_series_of_version_1() -> None:
    v1 = parse_one(sample("cr-bio.xml"))
    v2 = parse_one(sample("cr-bio-v2.xml"))
    assert v2.producer_document_id == v1.producer_document_id
    assert (v1.version, v2.version) == (1, 2)
    assert v2.content != v1.content
    assert v2.results[0].numeric_value == 12.9
    assert "Hémoglobine | 12,9 | g/dL | 12 - 16" in v2.text
    assert v2.patient_ids == v1.patient_ids


@pytest.mark.parametrize(
    ("number", "version"),
    [(b"7", 7), (b"2147483647", 2147483647), (b"20240312170000", None), (b"-1", None), (b"\xd9\xa3", None)],
)
def test_a_version_number_beyond_any_count_is_no_version(number: bytes, version: int | None) -> None:
    """A timestamp used as versionNumber: the embedded index kept it, Elasticsearch (a 32-bit
    integer field) refused the document (index_error); versions are then ordered by date."""
    tag = b'<versionNumber value="' + number + b'"/>'
    data = sample("cr-bio.xml").replace(b'<versionNumber value="1"/>', tag)
    assert parse_one(data).version == version


def test_without_set_id_the_document_id_is_used() -> None:
    data = sample("cr-bio.xml").replace(b'<setId root="1.2.250.1.999.3" extension="CRBIO-2024-0042"/>', b"")
    assert parse_one(data).producer_document_id == "1.2.250.1.999.2^CRBIO-2024-0042-V1"
    root_only = data.replace(b' extension="CRBIO-2024-0042-V1"', b"")
    assert parse_one(root_only).producer_document_id == "1.2.250.1.999.2"


SET_ID = b'<setId root="1.2.250.1.999.3" extension="CRBIO-2024-0042"/>'


def replacement_of(parent_id: bytes, *, own_id: bytes = b"CRBIO-2024-0042-V2", set_id: bytes = b"") -> bytes:
    """The CR-BIO sample as a version 2 replacing the document ``parent_id`` (RPLC)."""
    related = (
        b'<relatedDocument typeCode="RPLC"><parentDocument>'
        b'<id root="1.2.250.1.999.2" extension="' + parent_id + b'"/>'
        b"</parentDocument></relatedDocument>"
    )
    return (
        sample("cr-bio.xml")
        .replace(SET_ID, set_id)
        .replace(b'extension="CRBIO-2024-0042-V1"', b'extension="' + own_id + b'"')
        .replace(b'<versionNumber value="1"/>', b'<versionNumber value="2"/>')
        .replace(b"<component>\n    <structuredBody>", related + b"<component>\n    <structuredBody>")
    )


def test_a_replacement_names_its_parent_document() -> None:
    """relatedDocument RPLC names the replaced document by its id: the series a replacement
    joins when the producer kept no setId (optional until the CI-SIS made it mandatory) or
    gave a new one; the document's own id is one the next replacement may name."""
    doc = parse_one(replacement_of(b"CRBIO-2024-0042-V1"))
    assert doc.refers_to == ("1.2.250.1.999.2^CRBIO-2024-0042-V1",)
    assert doc.producer_document_id == "1.2.250.1.999.2^CRBIO-2024-0042-V2"  # no setId: its id
    with_set = parse_one(replacement_of(b"CRBIO-2024-0042-V1", set_id=SET_ID))
    assert with_set.producer_document_id == "1.2.250.1.999.3^CRBIO-2024-0042"
    assert with_set.document_ids == ("1.2.250.1.999.2^CRBIO-2024-0042-V2",)
    # An addendum (APND) or a transformation (XFRM) replaces nothing.
    addendum = replacement_of(b"CRBIO-2024-0042-V1").replace(b'typeCode="RPLC"', b'typeCode="APND"')
    assert parse_one(addendum).refers_to == ()
    # Under its parent's setId, an addendum is still named by its own id only.
    shared = parse_one(
        replacement_of(b"CRBIO-2024-0042-V1", own_id=b"CRBIO-2024-0042-ADD1", set_id=SET_ID).replace(
            b'typeCode="RPLC"', b'typeCode="APND"'
        )
    )
    assert (shared.producer_document_id, shared.document_ids) == ("1.2.250.1.999.2^CRBIO-2024-0042-ADD1", ())
    original = parse_one(sample("cr-bio.xml"))
    assert (original.refers_to, original.document_ids) == ((), ("1.2.250.1.999.2^CRBIO-2024-0042-V1",))


# --- CR-IMG ------------------------------------------------------------------------------


def test_cr_img() -> None:
    doc = parse_one(sample("cr-img.xml"))
    assert doc.patient_ids == (PatientIdentifier(value="172032A04501227", authority=INS_OID, kind="INS"),)
    assert ins_key_ok(doc.patient_ids[0].value)
    assert doc.demographics == PatientDemographics(
        family_name="Santoni", given_name="Paul", birth_date=dt.date(1972, 3, 15), sex="M"
    )
    assert (doc.type_code, doc.type_code_system) == ("18748-4", LOINC)
    assert doc.title == "Compte rendu d'imagerie médicale"
    # Exam on the 4th, report signed on the 5th: the exam date is the document's date.
    assert doc.document_date == dt.date(2024, 4, 4)
    assert doc.producer_document_id == "1.2.250.1.999.4^IMG-77"
    assert doc.version is None
    assert (doc.author_rpps, doc.author_name) == ("10009876543", "Marc Radiologue")
    assert (doc.producer_finess, doc.producer_name) == ("2A0000123", "Cabinet de radiologie Exemple")
    assert doc.results == ()
    assert doc.visibility == ()
    assert doc.text == CR_IMG_TEXT


def test_creation_date_when_there_is_no_service_event() -> None:
    data = re.sub(rb"<documentationOf>.*?</documentationOf>", b"", sample("cr-img.xml"), flags=re.S)
    assert parse_one(data).document_date == dt.date(2024, 4, 5)


def with_service_time(effective_time: bytes) -> bytes:
    """The CR-IMG sample (written 2024-04-05) with its serviceEvent timed by ``effective_time``."""
    return re.sub(
        rb"(<serviceEvent[^>]*>).*?(</serviceEvent>)",
        lambda m: m.group(1) + effective_time + m.group(2),
        sample("cr-img.xml"),
        flags=re.S,
    )


@pytest.mark.parametrize(
    ("service", "date"),
    [
        # An act planned after the document was written is not an exam done: a prescribed
        # treatment's period, an appointment. Dated when written, not refused as from the future.
        (b'<effectiveTime><low value="20270115"/><high value="20270415"/></effectiveTime>',
         dt.date(2024, 4, 5)),
        (b'<effectiveTime value="202701151000+0100"/>', dt.date(2024, 4, 5)),
        # An exam whose end alone is known is dated by its end.
        (b'<effectiveTime><low nullFlavor="UNK"/><high value="20240403"/></effectiveTime>',
         dt.date(2024, 4, 3)),
    ],
)  # fmt: skip
def test_the_service_event_dates_a_document_it_does_not_postdate(service: bytes, date: dt.date) -> None:
    assert parse_one(with_service_time(service)).document_date == date


def test_a_creation_time_in_utc_dates_the_document() -> None:
    data = re.sub(rb"<documentationOf>.*?</documentationOf>", b"", sample("cr-img.xml"), flags=re.S)
    data = data.replace(b'value="20240405183000+0200"', b'value="20240405163000Z"')
    assert parse_one(data).document_date == dt.date(2024, 4, 5)


def test_no_date_at_all() -> None:
    data = re.sub(rb"<documentationOf>.*?</documentationOf>", b"", sample("cr-img.xml"), flags=re.S)
    data = data.replace(b'<effectiveTime value="20240405183000+0200"/>', b"")
    assert parse_one(data).document_date is None


# --- visibility --------------------------------------------------------------------------


def test_masque_ps_translation_with_prefixed_namespace() -> None:
    doc = parse_one(sample("cr-masque-ps.xml"))
    assert doc.visibility == (Visibility.MASQUE_PS,)
    # The prefixed document reads exactly like its default-namespace twin.
    assert doc.producer_document_id == "1.2.250.1.999.4^IMG-78"
    assert doc.text == CR_IMG_TEXT
    assert doc.patient_ids[0].value == "172032A04501227"
    assert doc.author_rpps == "10009876543"


@pytest.mark.parametrize(
    ("confidentiality", "expected"),
    [
        (b'<confidentialityCode code="R" codeSystem="2.16.840.1.113883.5.25"/>', ()),
        (b'<confidentialityCode code="V" codeSystem="2.16.840.1.113883.5.25"/>', ()),
        (b'<confidentialityCode code="INVISIBLE_PATIENT"/>', (Visibility.INVISIBLE_PATIENT,)),
        (
            b'<confidentialityCode code="R"><translation code="INVISIBLE_REPRESENTANTS_LEGAUX"/>'
            b'<translation code="INVISIBLE_PATIENT"/></confidentialityCode>',
            (Visibility.INVISIBLE_PATIENT, Visibility.INVISIBLE_REPRESENTANTS_LEGAUX),
        ),
        # Each flag in its own confidentialityCode after the HL7 one (N/R/V first, as the
        # header requires it): every one counts, not only the first.
        (
            b'<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>'
            b'<confidentialityCode code="MASQUE_PS" codeSystem="1.2.250.1.213.1.1.4.13"/>'
            b'<confidentialityCode code="N"><translation code="INVISIBLE_PATIENT"/></confidentialityCode>',
            (Visibility.INVISIBLE_PATIENT, Visibility.MASQUE_PS),
        ),
        # A translation of a translation (data types R1 allow it) is the same concept.
        (
            b'<confidentialityCode code="N"><translation code="R">'
            b'<translation code="INVISIBLE_REPRESENTANTS_LEGAUX"/></translation></confidentialityCode>',
            (Visibility.INVISIBLE_REPRESENTANTS_LEGAUX,),
        ),
    ],
)
def test_confidentiality_codes(confidentiality: bytes, expected: tuple[Visibility, ...]) -> None:
    normal = b'<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>'
    data = sample("cr-img.xml")
    assert normal in data
    assert parse_one(data.replace(normal, confidentiality)).visibility == expected


def test_confidentiality_of_a_section_is_not_the_documents() -> None:
    """A section's own confidentialityCode qualifies that section only: it neither hides
    nor masks the whole document."""
    data = sample("cr-img.xml").replace(b"<section>", b'<section><confidentialityCode code="MASQUE_PS"/>', 1)
    assert b'<section><confidentialityCode code="MASQUE_PS"/>' in data
    assert parse_one(data).visibility == ()


# --- identity ----------------------------------------------------------------------------


def test_ipp_only() -> None:
    doc = parse_one(sample("cr-ipp-only.xml"))
    assert doc.patient_ids == (
        PatientIdentifier(value="IPP000123", authority="1.2.250.1.999.1.1.2", kind="IPP"),
    )
    assert doc.producer_document_id == "1.2.250.1.999.2^IPP-1"
    assert doc.version is None
    assert len(doc.results) == 5


def test_an_ins_its_authority_names_a_test_namespace_is_no_real_patients() -> None:
    # A test system configured with the production OID still names its namespace.
    from pipeline.identity import identify_patient

    data = sample("cr-bio.xml").replace(
        b'root="1.2.250.1.213.1.4.8"', b'root="1.2.250.1.213.1.4.8" assigningAuthorityName="INS-NIR-TEST"', 1
    )
    assert b"INS-NIR-TEST" in data
    result = identify_patient(parse_one(data))
    assert result.patient_id is None and [p.code for p in result.problems] == [Reason.MISSING_INS]


def test_ids_without_extension_are_skipped() -> None:
    data = sample("cr-img.xml").replace(
        b'<id root="1.2.250.1.213.1.4.8" extension="172032A04501227"/>',
        b'<id nullFlavor="UNK"/><id root="1.2.250.1.999.7" extension="D-1"/>',
    )
    assert parse_one(data).patient_ids == (
        PatientIdentifier(value="D-1", authority="1.2.250.1.999.7", kind=None),
    )


def test_author_without_rpps() -> None:
    data = sample("cr-img.xml").replace(
        b'<id root="1.2.250.1.71.4.2.1" extension="810009876543"/>',
        b'<id root="1.2.250.1.71.4.2.1" extension="012345678"/>',  # an ADELI number
    )
    doc = parse_one(data)
    assert (doc.author_rpps, doc.author_name) == (None, "Marc Radiologue")


def test_the_authors_rpps_among_several_ids() -> None:
    # assignedAuthor/id is 1..*: a laboratory's own id for the biologist may come first.
    national = b'<id root="1.2.250.1.71.4.2.1" extension="810001234567"/>'
    local = b'<id root="1.2.250.1.999.7.8" extension="BIO-42"/>'
    data = sample("cr-bio.xml").replace(national, local + national)
    assert data.count(b"BIO-42") == 1
    assert parse_one(data).author_rpps == "10001234567"


def test_custodian_finess_when_the_author_has_none() -> None:
    data = sample("cr-bio.xml").replace(
        b'<id root="1.2.250.1.71.4.2.2" extension="1750000001"/>\n        <name>Laboratoire',
        b"<name>Laboratoire",
        1,
    )
    data = data.replace(b"1750000001", b"1750000099")
    doc = parse_one(data)
    assert (doc.producer_finess, doc.producer_name) == ("750000099", "Laboratoire Exemple Paris")


# --- embedded PDF ------------------------------------------------------------------------


def test_non_xml_body_pdf() -> None:
    doc = parse_one(sample("cr-pdf.xml"))
    assert doc.text == "\n".join(
        [
            "Laboratoire Exemple Lyon",
            "Compte rendu de biologie medicale",
            "Patient : DURAND Henri",
            "Hemoglobine glyquee HbA1c : 6,9 %",
        ]
    )
    assert (doc.page_count, doc.ocr_pages, doc.ocr_confidence) == (1, 0, None)  # a text layer: no OCR
    assert doc.title == "CR d'examens biologiques"  # no <title>: code/@displayName
    assert doc.document_date == dt.date(2024, 2, 20)
    assert doc.patient_ids == (PatientIdentifier(value="155086912332145", authority=INS_OID, kind="INS"),)
    assert ins_key_ok(doc.patient_ids[0].value)
    assert (doc.author_rpps, doc.producer_finess) == ("10005555555", "690000002")
    assert doc.producer_document_id == "1.2.250.1.999.5^PDF-9"
    assert doc.results == ()


def test_non_xml_body_plain_text() -> None:
    body = base64.b64encode("Première ligne\n\n  seconde   ligne ".encode()).decode()
    doc = parse_one(with_body(f'<text mediaType="text/plain" representation="B64">{body}</text>'))
    assert doc.text == "Première ligne\nseconde ligne"
    assert doc.warnings == ()


def test_non_xml_body_of_another_type_is_unsupported_format() -> None:
    """The body is the whole document: one Carnet cannot read is refused for that reason
    (unsupported_format, naming the type), not reported as an empty document."""
    body = base64.b64encode(b"\xd0\xcf\x11\xe0 a Word 97 file").decode()
    doc = parse_one(with_body(f'<text mediaType="application/msword" representation="B64">{body}</text>'))
    assert doc.text == ""
    assert [(w.code, w.blocking) for w in doc.warnings] == [(Reason.UNSUPPORTED_FORMAT, True)]
    assert "application/msword" in doc.warnings[0].message


def test_non_xml_body_broken_image() -> None:
    with pytest.raises(ParserError, match="image") as info:
        parse_one(with_body('<text mediaType="image/jpeg" representation="B64">/9j/</text>'))
    assert info.value.__cause__ is not None


def test_non_xml_body_bad_base64() -> None:
    data = with_body('<text mediaType="application/pdf" representation="B64">#!not base64</text>')
    with pytest.raises(ParserError, match="base64") as info:
        parse_one(data)
    assert info.value.__cause__ is not None


def test_non_xml_body_broken_pdf() -> None:
    body = base64.b64encode(b"%PDF-1.4\nthis is not a PDF\n%%EOF\n").decode()
    data = with_body(f'<text mediaType="application/pdf" representation="B64">{body}</text>')
    with pytest.raises(ParserError, match="PDF") as info:
        parse_one(data, "broken.xml")
    assert info.value.context == {"source": "broken.xml"}
    assert info.value.__cause__ is not None


def test_non_xml_body_encrypted_pdf() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt(user_password="secret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    body = base64.b64encode(out.getvalue()).decode()
    data = with_body(f'<text mediaType="application/pdf" representation="B64">{body}</text>')
    with pytest.raises(EncryptedDocumentError):
        parse_one(data)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("malformed.xml", "mismatched tag"),
        ("not-cda.xml", "not a CDA ClinicalDocument"),
        ("xxe.xml", "DTDForbidden"),
        ("billion-laughs.xml", "DTDForbidden"),
    ],
)
def test_bad_inputs_raise_parser_error(name: str, match: str) -> None:
    with pytest.raises(ParserError, match=match) as info:
        CdaParser().parse(sample(name), source=name)
    assert info.value.context == {"source": name}
    assert info.value.__cause__ is not None or name == "not-cda.xml"
    assert "root:" not in str(info.value)  # /etc/passwd was not read


@pytest.mark.parametrize(
    ("anchor", "opening", "closing"),
    [
        (b"<paragraph>", b"<content>", b"</content>"),  # inline narrative markup
        (b"<section>", b"<component><section>", b"</section></component>"),  # subsections
        (b"<organizer", b"<component><organizer>", b"</organizer></component>"),  # entries
    ],
)
def test_nesting_beyond_the_depth_limit_is_a_parser_error(
    anchor: bytes, opening: bytes, closing: bytes
) -> None:
    """Each reader recurses per level: thousands of levels were a RecursionError (and its
    traceback on stderr), not a rejection; within the limit the document still reads."""
    data = sample("cr-bio.xml")
    assert anchor in data

    def nested(levels: int) -> bytes:
        return data.replace(anchor, opening * levels + closing * levels + anchor, 1)

    assert parse_one(nested((MAX_DEPTH - 20) // 2)).results
    with pytest.raises(ParserError, match=f"more than {MAX_DEPTH} elements deep"):
        parse_one(nested(3000))


def test_an_unknown_declared_encoding_is_a_parser_error() -> None:
    data = sample("cr-bio.xml").replace(b'encoding="UTF-8"', b'encoding="UTF-1e4008"', 1)
    assert b"UTF-1e4008" in data
    with pytest.raises(ParserError, match="unknown encoding"):
        parse_one(data)


def _encoded(declaration: str, encoding: str, *, bom: bytes = b"", before: str = "") -> bytes:
    """The CR-BIO sample with an accented, cp1252-only title, in ``encoding`` behind ``declaration``."""
    text = sample("cr-bio.xml").decode().replace("Compte rendu d'examens", "Compte rendu d\u2019examens")
    body = text.split("?>", 1)[1]
    return bom + (before + declaration + body).encode(encoding)


UTF8_DECLARED = '<?xml version="1.0" encoding="UTF-8"?>'
LATIN1_DECLARED = '<?xml version="1.0" encoding="ISO-8859-1"?>'


@pytest.mark.parametrize(
    "data",
    [
        # A UTF-8 BOM says what the bytes are, whatever the declaration.
        _encoded(LATIN1_DECLARED, "utf-8", bom=b"\xef\xbb\xbf"),
        # Declared Latin, written UTF-8 (an interface re-encoding): the bytes cannot be Latin text.
        _encoded(LATIN1_DECLARED, "utf-8"),
        _encoded('<?xml version="1.0" encoding="windows-1252"?>', "utf-8"),
        # Declared (or by default) UTF-8, written in Windows-1252: not UTF-8, so read as French
        # producers' other encoding.
        _encoded(UTF8_DECLARED, "cp1252"),
        _encoded("", "cp1252"),
        _encoded('<?xml version="1.0"?>', "cp1252"),
        # A spelling of UTF-8 expat does not know by that name.
        _encoded('<?xml version="1.0" encoding="UTF8"?>', "utf-8"),
        _encoded("<?xml version='1.0' encoding='utf8' standalone='yes'?>", "utf-8"),
        # Blank lines before the declaration (a template's), after a BOM or not.
        _encoded(UTF8_DECLARED, "utf-8", before="\n\r\n  "),
        _encoded(UTF8_DECLARED, "utf-8", bom=b"\xef\xbb\xbf", before="\n"),
        # What was read right already stays so.
        _encoded(LATIN1_DECLARED.replace("ISO-8859-1", "windows-1252"), "cp1252"),
        _encoded(UTF8_DECLARED, "utf-8"),
    ],
)
def test_the_bytes_decide_an_encoding_the_declaration_gets_wrong(data: bytes) -> None:
    doc = parse_one(data)
    assert doc.title == "Compte rendu d\u2019examens de biologie médicale"
    assert doc.text.startswith("Hématologie\nHémogramme\nAnalyse | Résultat")


def test_malformed_xml_stays_a_parse_error_in_any_encoding() -> None:
    broken = _encoded(UTF8_DECLARED, "cp1252").replace(b"</title>", b"</titl>", 1)
    with pytest.raises(ParserError, match="mismatched tag"):
        parse_one(broken)
    with pytest.raises(ParserError, match="mismatched tag"):
        parse_one(_encoded(UTF8_DECLARED, "utf-8").replace(b"</title>", b"</titl>", 1))


def test_entities_without_external_reference_are_refused() -> None:
    data = (
        b'<?xml version="1.0"?><!DOCTYPE ClinicalDocument [<!ENTITY x "expanded">]>'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&x;</title></ClinicalDocument>'
    )
    with pytest.raises(ParserError):
        parse_one(data)


def test_minimal_document() -> None:
    doc = parse_one(b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>')
    assert doc.model_dump(exclude={"source", "content", "format"}) == ParsedDocument(
        source="x", format=Format.CDA
    ).model_dump(exclude={"source", "content", "format"})


# --- timestamps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240312", dt.datetime(2024, 3, 12)),
        ("202403120815", dt.datetime(2024, 3, 12, 8, 15)),
        (
            "20240312081530.123-0430",
            dt.datetime(2024, 3, 12, 8, 15, 30, tzinfo=dt.timezone(-dt.timedelta(hours=4, minutes=30))),
        ),
        ("20240312081530+0100", dt.datetime(2024, 3, 12, 8, 15, 30, tzinfo=CET)),
        # ISO 8601's UTC mark, which some CDA producers write instead of +0000.
        ("20240312101500Z", dt.datetime(2024, 3, 12, 10, 15, tzinfo=dt.UTC)),
        ("20240312101500.250Z", dt.datetime(2024, 3, 12, 10, 15, tzinfo=dt.UTC)),
        ("202403121015Z", dt.datetime(2024, 3, 12, 10, 15, tzinfo=dt.UTC)),
        ("20240312101500+0000Z", None),
        # Offsets no clock has: invalid, like a bad date (they crashed the whole file).
        ("20240312081530+2400", None),
        ("20240312081530-9999", None),
        ("20240312081530+0160", None),
        ("202403", None),  # less precise than a day
        ("20241345", None),
        ("2024-03-12", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_ts(value: str | None, expected: dt.datetime | None) -> None:
    assert parse_ts(value) == expected


# --- samples -----------------------------------------------------------------------------


def test_samples_match_their_generator(tmp_path: Path) -> None:
    assert_samples_match_their_generator(CDA, "*.xml", tmp_path)


# --- CDA as published: wrappers (auto-presentable, signed) ---------------------------------


SAMPLES = load_script(CDA / "make_samples.py")


def unwrapped_fields(doc: ParsedDocument) -> dict[str, object]:
    return doc.model_dump(exclude={"content", "source"})


def _strip_prolog(xml: str) -> str:
    return xml[xml.index("<ClinicalDocument") :]


def _wrappers() -> dict[str, object]:
    """Every way the CI-SIS ships a CDA inside another root, as functions of a bare CDA."""
    m = SAMPLES
    return {
        "xsl, data first": lambda cda: m.auto_presentable(cda, templates_first=False),  # type: ignore[attr-defined]
        "xsl, stylesheet first": lambda cda: m.auto_presentable(cda, templates_first=True),  # type: ignore[attr-defined]
        "xsl, prefixed document": lambda cda: m.auto_presentable(  # type: ignore[attr-defined]
            m.prefixed(cda, "c").replace(' xmlns:c="urn:hl7-org:v3"', ""), templates_first=False
        ),  # type: ignore[attr-defined]
        "xmldsig enveloping": lambda cda: (
            '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/>'
            f"<ds:SignatureValue>AA==</ds:SignatureValue><ds:Object>{cda}</ds:Object></ds:Signature>"
        ),
        "any envelope": lambda cda: (
            f"<envelope xmlns='urn:example:transport'><payload>{cda}</payload></envelope>"
        ),
    }


@pytest.mark.parametrize("wrapper", list(_wrappers()))
@pytest.mark.parametrize(
    "name",
    [
        "cr-bio.xml",
        "cr-img.xml",
        "cr-pdf.xml",
        "remb.xml",
        "presc-kine-text.xml",
        "vital-signs.xml",
        "cr-imagerie.xml",
    ],
)
def test_a_wrapped_document_reads_as_the_bare_one(name: str, wrapper: str) -> None:
    bare = sample(name).decode()
    cda = _strip_prolog(bare)
    if wrapper == "xsl, prefixed document":
        cda = re.sub(r"<!--.*?-->\s*", "", cda, flags=re.S)  # the prefixing helper needs no comments
    wrapped_text: str = _wrappers()[wrapper](cda)  # type: ignore[operator]
    if not wrapped_text.startswith("<?xml"):
        wrapped_text = '<?xml version="1.0" encoding="UTF-8"?>\n' + wrapped_text
    wrapped = wrapped_text.encode()
    assert CdaParser().score(wrapped[:SNIFF_BYTES]) > 0
    assert default_registry().choose(wrapped).name == "cda"  # type: ignore[union-attr]
    assert unwrapped_fields(parse_one(wrapped)) == unwrapped_fields(parse_one(bare.encode()))


@pytest.mark.parametrize(
    ("name", "in_4k"), [("cr-bio-auto.xml", 90), ("cr-img-auto.xml", 50), ("cr-signed.xml", 90)]
)
def test_published_wrappers_are_sniffed(name: str, in_4k: int) -> None:
    data = sample(name)
    assert score(data) == in_4k  # the first 4 KB: the stylesheet-first document starts later
    assert CdaParser().score(data[: CdaParser.sniff_bytes]) == 90  # what the registry shows it
    assert default_registry().choose(data).name == "cda"  # type: ignore[union-attr]


def test_a_document_deep_in_its_wrapper_is_found_within_the_sniff_window() -> None:
    # An enveloping XAdES signature: certificate and signed properties before the document,
    # and the HL7 namespace declared on the ClinicalDocument only.
    cda = _strip_prolog(sample("cr-img.xml").decode())
    certificate = "".join(f"<ds:X509Certificate>{'MIIB' * 400}</ds:X509Certificate>" for _ in range(4))
    data = (
        '<?xml version="1.0" encoding="UTF-8"?><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
        f"<ds:SignedInfo/><ds:SignatureValue>AA==</ds:SignatureValue><ds:KeyInfo><ds:X509Data>{certificate}"
        f"</ds:X509Data></ds:KeyInfo><ds:Object>{cda}</ds:Object></ds:Signature>"
    ).encode()
    assert data.index(b"<ClinicalDocument") > 6000
    assert score(data) == 0  # nothing in the first 4 KB says CDA...
    assert default_registry().choose(data).name == "cda"  # type: ignore[union-attr]  # ...the window does
    assert parse_one(data).patient_ids == parse_one(sample("cr-img.xml")).patient_ids


@pytest.mark.parametrize(
    "hostile",
    [
        b"<root>" + b"<ClinicalDocument " * 4000,
        b"<root>" + b'<a xmlns="' * 8000,
        b"<root>" + b"<!--" * 16000,
        b"<xsl:stylesheet " + b"xmlns:a='x' " * 5000,
    ],
)
def test_sniffing_is_linear_on_hostile_heads(hostile: bytes) -> None:
    import time

    started = time.process_time()
    CdaParser().score(hostile[: CdaParser.sniff_bytes])
    assert time.process_time() - started < 1.0


def test_auto_presentable_cr_bio() -> None:
    doc = parse_one(sample("cr-bio-auto.xml"))
    assert doc.patient_ids == (PatientIdentifier(value="291106912304591", authority=INS_OID, kind="INS"),)
    assert (doc.type_code, doc.type_code_system) == ("11502-2", LOINC)
    assert [(r.loinc, r.value, r.unit) for r in doc.results] == [
        ("718-7", "13.6", "g/dL"),
        ("777-3", "251", "10*9/L"),
    ]
    assert "Hémoglobine | 13,6 | g/dL | 12 - 16" in doc.text
    assert "xsl" not in doc.text and "Compte rendu d'examens biologiques" not in doc.text  # no label table
    assert doc.content == sample("cr-bio-auto.xml")  # the raw bytes are the whole file


@pytest.mark.parametrize(
    "head",
    [
        # A stylesheet that renders CDA but carries none, without the HL7 namespace.
        b'<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"/>',
        # Inside a wrapper, in a comment or CDATA only.
        b'<root><!-- <ClinicalDocument xmlns="urn:hl7-org:v3"> --></root>',
        b'<root><![CDATA[<ClinicalDocument xmlns="urn:hl7-org:v3">]]></root>',
        b'<root><c:ClinicalDocument xmlns:c="urn:other"/></root>',
        b'<root xmlns:c="urn:hl7-org:v3"><ClinicalDocument/></root>',  # default namespace is not HL7
        b'<html><body>ClinicalDocument xmlns="urn:hl7-org:v3"</body></html>',
        # A wrapper kind the CI-SIS uses, declaring another namespace only.
        b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:x="urn:hl7-org:v2"/>',
    ],
)
def test_wrappers_without_a_cda_score_zero(head: bytes) -> None:
    assert score(head) == 0


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("declared", [True, False])
def test_utf16_without_a_bom_is_sniffed_and_read(encoding: str, declared: bool) -> None:
    # XML 1.0 appendix F: without a BOM, the NUL byte beside the first "<" tells UTF-16
    # and its byte order; expat reads it so, and the sniff must too.
    text = sample("cr-bio.xml").decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    if not declared:
        text = text.split("?>", 1)[1].lstrip()
    data = text.encode(encoding)
    assert not data.startswith((b"\xff\xfe", b"\xfe\xff"))
    assert score(data) == 100
    assert isinstance(default_registry().choose(data), CdaParser)
    assert parse_one(data).patient_ids == parse_one(sample("cr-bio.xml")).patient_ids


def test_auto_presentable_in_utf16_is_sniffed() -> None:
    text = sample("cr-bio-auto.xml").decode()
    data = text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert score(data) == 90
    assert parse_one(data).patient_ids == parse_one(sample("cr-bio-auto.xml")).patient_ids


@pytest.mark.parametrize(
    ("data", "match"),
    [
        # A rendering stylesheet that declares the HL7 namespace but holds no document.
        (
            b'<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
            b'xmlns:n1="urn:hl7-org:v3"><xsl:template match="n1:ClinicalDocument"/></xsl:stylesheet>',
            "holds none",
        ),
        (
            b'<root><ClinicalDocument xmlns="urn:hl7-org:v3"/>'
            b'<ClinicalDocument xmlns="urn:hl7-org:v3"/></root>',
            "2 CDA ClinicalDocuments",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE xsl:stylesheet [<!ENTITY x "y">]><xsl:stylesheet '
            b'xmlns:xsl="http://www.w3.org/1999/XSL/Transform"><ClinicalDocument xmlns="urn:hl7-org:v3">'
            b"<title>&x;</title></ClinicalDocument></xsl:stylesheet>",
            "DTDForbidden",
        ),
    ],
)
def test_bad_wrappers_are_parse_errors(data: bytes, match: str) -> None:
    with pytest.raises(ParserError, match=match) as info:
        CdaParser().parse(data, source="w.xml")
    assert info.value.context == {"source": "w.xml"}


def test_billion_laughs_inside_a_wrapper_is_refused_fast() -> None:
    laughs = sample("billion-laughs.xml").decode()
    wrapped = (
        laughs.replace("<!DOCTYPE ClinicalDocument", "<!DOCTYPE xsl:stylesheet")
        .replace(
            SAMPLES.ROOT_OPEN,  # type: ignore[attr-defined]
            '<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform">' + SAMPLES.ROOT_OPEN,  # type: ignore[attr-defined]
        )
        .replace("</ClinicalDocument>", "</ClinicalDocument></xsl:stylesheet>")
    )
    with pytest.raises(ParserError, match="DTDForbidden"):
        CdaParser().parse(wrapped.encode(), source="laughs.xml")


# --- CDA as published: level 1 bodies ----------------------------------------------------


@pytest.mark.tesseract
def test_non_xml_body_scanned_pdf_is_ocr_read() -> None:
    doc = parse_one(sample("cr-pdf-scan.xml"))
    assert (doc.page_count, doc.ocr_pages) == (1, 1)
    assert doc.ocr_confidence is not None and doc.ocr_confidence > 70
    assert "Compte rendu d'examens biologiques" in doc.text
    assert re.search(r"Plaquettes : 230 G/L", doc.text)
    # The printed INS agrees with the structured one, so identity accepts the document.
    from pipeline.identity import identify_patient

    assert identify_patient(doc).patient_id == doc.patient_ids[0].value


@pytest.mark.tesseract
def test_non_xml_body_scanned_image_is_ocr_read() -> None:
    doc = parse_one(sample("presc-png.xml"))
    assert (doc.page_count, doc.ocr_pages) == (1, 1)
    assert "pansement quotidien" in doc.text
    assert (doc.type_code, doc.type_code_system) == ("57832-8", LOINC)


def test_non_xml_body_text_layer_pdf_without_representation_attribute() -> None:
    doc = parse_one(sample("cr-pdf-text-layer.xml"))
    assert (doc.page_count, doc.ocr_pages) == (1, 0)
    assert "Leucocytes : 7,2 G/L (4,0 - 10,0)" in doc.text


def test_non_xml_body_inline_plain_text() -> None:
    doc = parse_one(sample("presc-kine-text.xml"))
    assert doc.text.splitlines()[1] == (
        "Quinze séances de rééducation du genou droit, deux à trois fois par semaine."
    )
    assert (doc.type_code, doc.type_code_system) == ("PRESC-KINE", "1.2.250.1.213.1.1.4.12")


@pytest.mark.parametrize("separator", ["\n", "\r\n", "\r\n        ", " ", "\t", "\n\n"])
def test_base64_line_breaks_and_indentation_are_ignored(separator: str) -> None:
    pdf = SAMPLES.report_pdf()  # type: ignore[attr-defined]
    encoded = base64.b64encode(pdf).decode()
    body = separator.join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
    doc = parse_one(
        with_body(
            f'<text mediaType="application/pdf" representation="B64">{separator}{body}{separator}</text>'
        )
    )
    assert doc.text == parse_one(sample("cr-pdf.xml")).text


@pytest.mark.parametrize(
    ("text_element", "match"),
    [
        ('<text mediaType="application/pdf" representation="B64">JVBERi0xLjQK*AAA</text>', "base64"),
        ('<text mediaType="application/pdf" representation="B64">JVBERi0xLjQ</text>', "base64"),  # padding
        ('<text mediaType="application/pdf" representation="B64">JVBERi é0xLjQK</text>', "base64"),
        ('<text mediaType="application/pdf" representation="B64">  </text>', "empty"),
        ('<text mediaType="application/pdf"><reference value="cr.pdf"/></text>', "external file"),
        (
            '<text mediaType="application/pdf" representation="B64" compression="DF">eJwDAAAAAAE=</text>',
            "compressed",
        ),
        ('<text mediaType="application/pdf" representation="B64">SGVsbG8=</text>', "not a PDF"),
    ],
)
def test_bad_non_xml_bodies_are_clear_parse_errors(text_element: str, match: str) -> None:
    with pytest.raises(ParserError, match=match):
        parse_one(with_body(text_element))


def test_the_published_bad_base64_sample_is_a_parse_error() -> None:
    with pytest.raises(ParserError, match="nonXMLBody is not valid base64"):
        parse_one(sample("cr-pdf-bad-base64.xml"))


def test_non_xml_body_of_generic_type_is_sniffed() -> None:
    body = base64.b64encode(SAMPLES.report_pdf()).decode()  # type: ignore[attr-defined]
    element = f'<text mediaType="application/octet-stream" representation="B64">{body}</text>'
    doc = parse_one(with_body(element))
    assert "Hemoglobine glyquee HbA1c : 6,9 %" in doc.text


def test_non_xml_body_without_media_type_is_read_as_what_it_holds() -> None:
    """mediaType left out (text/plain by CDA's default) over a base64 PDF: the PDF's text,
    never its bytes indexed as if they were the report's words."""
    body = base64.b64encode(SAMPLES.report_pdf()).decode()  # type: ignore[attr-defined]
    doc = parse_one(with_body(f'<text representation="B64">{body}</text>'))
    assert "Hemoglobine glyquee HbA1c : 6,9 %" in doc.text
    assert "%PDF" not in doc.text and "endobj" not in doc.text
    text = base64.b64encode("Compte rendu : résultats normaux.".encode()).decode()
    assert parse_one(with_body(f'<text representation="B64">{text}</text>')).text == (
        "Compte rendu : résultats normaux."
    )


def test_non_xml_body_declared_text_holding_a_pdf_is_a_parse_error() -> None:
    body = base64.b64encode(SAMPLES.report_pdf()).decode()  # type: ignore[attr-defined]
    with pytest.raises(ParserError, match="text/plain.*PDF"):
        parse_one(with_body(f'<text mediaType="text/plain" representation="B64">{body}</text>'))


def test_non_xml_body_rtf() -> None:
    doc = parse_one(sample("cr-img-rtf.xml"))
    assert doc.text.splitlines() == [
        "Compte rendu de radiographie du genou droit",
        "Indication : gonalgie droite après chute.",
        "Technique : clichés de face et de profil en charge.",
        "Résultat : pas de fracture, interligne fémoro-tibial conservé.",
        "Conclusion : radiographie du genou droit normale.",
    ]
    assert "Arial" not in doc.text and "Secrétariat" not in doc.text  # tables and info dropped


@pytest.mark.parametrize(
    "element",
    [
        # Inline (no base64), an RTF media type spelled the other way, a generic type.
        "<text mediaType=\"text/rtf\">{{\\rtf1\\ansi R\\'e9sultat n\\'e9gatif\\par}}</text>",
        '<text mediaType="application/rtf" representation="B64">{b64}</text>',
        '<text mediaType="application/octet-stream" representation="B64">{b64}</text>',
    ],
)
def test_non_xml_body_rtf_variants(element: str) -> None:
    b64 = base64.b64encode(b"{\\rtf1\\ansi R\\'e9sultat n\\'e9gatif\\par}").decode()
    doc = parse_one(with_body(element.format(b64=b64)))
    assert doc.text == "Résultat négatif"


def test_non_xml_body_that_is_not_rtf_is_a_parse_error() -> None:
    body = base64.b64encode(b"Compte rendu en texte brut").decode()
    with pytest.raises(ParserError, match="RTF"):
        parse_one(with_body(f'<text mediaType="text/rtf" representation="B64">{body}</text>'))


def test_non_xml_body_plain_text_in_latin1() -> None:
    body = base64.b64encode("Résultat : négatif".encode("cp1252")).decode()
    doc = parse_one(with_body(f'<text mediaType="text/plain" representation="B64">{body}</text>'))
    assert doc.text == "Résultat : négatif"


# --- CDA as published: the document's type code -----------------------------------------


def with_code(code_element: str) -> bytes:
    return (
        sample("remb.xml")
        .decode()
        .replace(
            '<code code="REMB" codeSystem="1.2.250.1.213.1.1.4.12" displayName="Données de remboursement"/>',
            code_element,
        )
        .encode()
    )


@pytest.mark.parametrize(
    ("code_element", "expected"),
    [
        ('<code code="REMB" codeSystem="1.2.250.1.213.1.1.4.12"/>', ("REMB", "1.2.250.1.213.1.1.4.12")),
        # A local code with a LOINC or national translation: the translation is the type.
        (
            '<code code="CR-42" codeSystem="1.2.250.1.999.77"><translation code="18748-4" '
            'codeSystem="2.16.840.1.113883.6.1"/></code>',
            ("18748-4", LOINC),
        ),
        (
            '<code code="CR-42" codeSystem="1.2.250.1.999.77"><translation code="SYNTH" '
            'codeSystem="1.2.250.1.213.1.1.4.12"/></code>',
            ("SYNTH", "1.2.250.1.213.1.1.4.12"),
        ),
        # Only a local code: kept as given.
        ('<code code="CR-42" codeSystem="1.2.250.1.999.77"/>', ("CR-42", "1.2.250.1.999.77")),
        ('<code nullFlavor="UNK"/>', (None, None)),
    ],
)
def test_type_code_prefers_loinc_and_national_codes(
    code_element: str, expected: tuple[str | None, str | None]
) -> None:
    doc = parse_one(with_code(code_element))
    assert (doc.type_code, doc.type_code_system) == expected


# --- a big document, read as a stream ----------------------------------------------------

_NARRATIVE_PIECES = (
    "<paragraph>Glycémie <content styleCode='Bold'>5,2</content> mmol/L, tail</paragraph> loose ",
    "<list><item>un<br/>deux</item>"
    "<item>10<sup>9</sup>/L <renderMultiMedia referencedObject='x'/>fin</item></list>",
    "<table><tbody><tr><td>Hb</td><td><content>13,5</content> g/dL</td></tr>"
    "<tr><th/><td/></tr></tbody></table>",
    "text <!-- a comment --> between <linkHtml href='#a'>a link</linkHtml> blocks<br/>",
)
_ENTRY_XML = (
    "<entry><organizer classCode='CLUSTER' moodCode='EVN'><effectiveTime value='20240104'/>"
    "<component><observation classCode='OBS' moodCode='EVN'>"
    "<code code='718-7' codeSystem='2.16.840.1.113883.6.1' displayName='Hémoglobine {n}'/>"
    "<value xsi:type='PQ' value='{n}.5' unit='g/dL'/></observation></component>"
    "<entry><observation classCode='OBS' moodCode='EVN'><code code='1' displayName='nested {n}'/>"
    "<value xsi:type='ST'>v{n}</value></observation></entry></organizer></entry>"
)


def _big_cda(sections: int, repeat: int) -> bytes:
    """A CDA whose narratives and entries span many of iterparse's reading chunks."""
    body = []
    for n in range(sections):
        narrative = "".join(_NARRATIVE_PIECES[(n + i) % 4] for i in range(repeat))
        nested = (
            f"<component><section><title>Sous-section {n}</title>"
            f"<text>{narrative}</text></section></component>"
        )
        body.append(
            f"<component><section><title>Section {n}</title><text>head {narrative}</text>"
            f"{_ENTRY_XML.format(n=n)}{nested}</section></component>"
        )
    text = sample("cr-bio.xml").decode()
    start = text.index("<structuredBody>") + len("<structuredBody>")
    end = text.index("</structuredBody>")
    return (text[:start] + "".join(body) + text[end:]).encode()


def test_streamed_parse_reads_as_the_whole_tree() -> None:
    """Narratives and entries read while parsing (children dropped as they are read) give
    what the whole tree gives, across iterparse's chunk boundaries."""
    import defusedxml.ElementTree as safe_etree

    from parsers.cda import _entry_results, _findall, _narrative_lines, _q, _section_lines, _StreamedDocument

    data = _big_cda(sections=12, repeat=400)
    assert len(data) > 50 * 16 * 1024  # iterparse reads 16 KB at a time
    doc = parse_one(data)

    root = safe_etree.fromstring(data, forbid_dtd=True)
    whole = _StreamedDocument(root=root)
    for text in root.iter(_q("text")):
        whole.narratives[id(text)] = _narrative_lines(text)
    lines: list[str] = []
    for section in _findall(root, "component/structuredBody/component/section"):
        _section_lines(section, whole, lines)
    results = [r for entry in root.iter(_q("entry")) for r in _entry_results(entry, None)]

    assert doc.text == "\n".join(lines)
    assert doc.results == tuple(results)
    assert [r.analyte for r in doc.results[:4]] == ["Hémoglobine 0", "nested 0", "Hémoglobine 1", "nested 1"]


def test_streamed_parse_holds_far_less_than_the_document() -> None:
    """Python's peak while parsing a 1.5 MB CDA stays under 4 × its size (holding the whole
    tree took 11 ×; the text and its lines need under 2 ×). Not timed: tracemalloc counts
    the same allocations on every run."""
    import tracemalloc

    data = _big_cda(sections=4, repeat=2000)
    tracemalloc.start()
    try:
        doc = parse_one(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(doc.text) > 300_000
    assert peak < 4 * len(data), (peak, len(data))


def test_the_name_of_the_type_code_is_kept_with_it() -> None:
    """A LOINC radiology code the national table lacks is known by its name (CT Chest)."""
    data = sample("cr-img.xml").replace(
        b'code="18748-4" codeSystem="2.16.840.1.113883.6.1" displayName="CR d\'imagerie m\xc3\xa9dicale"',
        b'code="24627-2" codeSystem="2.16.840.1.113883.6.1" displayName="CT Chest"',
    )
    doc = parse_one(data)
    assert (doc.type_code, doc.type_code_display) == ("24627-2", "CT Chest")
    assert classify_document(doc).doc_class is DocClass.IMAGING
