"""One result at a time: misread units, unit slips against the printed range, negative values."""

from __future__ import annotations

import pytest

from pipeline.model import LabResult, Reason
from pipeline.quality import check_results


def result(
    analyte: str,
    value: str,
    unit: str | None,
    reference_range: str | None = None,
    loinc: str | None = None,
    flag: str | None = None,
) -> LabResult:
    return LabResult(
        analyte=analyte,
        loinc=loinc,
        value=value,
        value_type="NM",
        unit=unit,
        numeric_value=float(value.replace(",", ".")),
        reference_range=reference_range,
        abnormal_flag=flag,
    )


BLOCKING_SLIP = [(Reason.IMPLAUSIBLE_VALUE, True)]


def codes(*results: LabResult) -> list[tuple[Reason, bool]]:
    return [(p.code, p.blocking) for p in check_results(results)]


@pytest.mark.parametrize(
    "normal",
    [
        result("Créatinine", "80", "µmol/L", "45-104"),
        result("Créatinine", "0,08", "mmol/L"),
        result("Créatinine", "9,0", "mg/L", "7-12"),
        result("Hémoglobine", "13,5", "g/dL", "12-16"),
        result("Hémoglobine", "135", "g/L", "120-160"),
        result("CRP", "48", "mg/L", "0-5", flag="H"),
        result("ALAT", "1250", "UI/L", "7-40", flag="H"),
        result("Ferritine", "850", "µg/L", "30-300", flag="H"),
        result("Vitamine B12", "320", "pmol/L", "145-569"),
        result("T4 libre", "14,2", "pmol/L", "9-19"),
        result("Leucocytes", "7,2", "G/L", "4-10"),
        result("Leucocytes urinaires", "5000", "/mL", "< 10000"),
        result("Créatinine urinaire", "8,5", "mmol/L", "5-20"),
        result("Polynucléaires neutrophiles", "62", "%"),
        result("TCMH", "29,5", "pg", "27-32"),
        result("DFG (CKD-EPI)", "92", "mL/min/1,73m²", "> 60"),
        result("PDL", "412", "mGy.cm"),
        result("CTDIvol", "8,1", "mGy"),
        result("Excès de base", "-2,1", "mmol/L"),
        result("Chromogranine A", "4500", "ng/mL", "< 100", flag="H"),
        result("D-dimères", "4500", "ng/mL", "0-500", flag="H"),
    ],
)
def test_normal_results_have_no_blocking_finding(normal: LabResult) -> None:
    assert not [c for c in codes(normal) if c[1]]


@pytest.mark.parametrize(
    "misread",
    [
        result("Créatinine", "80", "pmol/L", "45-104"),  # µ read as p: a million times off
        result("Créatinine", "80", "mmol/L", "45-104"),  # µ read as m: a thousand times off
        result("Ferritine", "120", "pg/L", "30-300"),
        result("Ferritine", "120", "ng/L", "30-300"),  # what tesseract makes of a DejaVu "µg/L"
    ],
)
def test_known_misreadings_are_implausible_units(misread: LabResult) -> None:
    found = check_results((misread,))
    assert [(p.code, p.blocking) for p in found] == [(Reason.IMPLAUSIBLE_UNIT, True)]
    assert "µ misread" in found[0].message


def test_wrong_kind_is_blocking_and_invalid_ucum_only_a_warning() -> None:
    assert codes(result("Leucocytes", "7,2", "mmol/L")) == [(Reason.IMPLAUSIBLE_UNIT, True)]
    assert codes(result("Créatinine", "80", "micromoles par litre")) == [(Reason.IMPLAUSIBLE_UNIT, False)]


def test_unit_slip_beside_its_reference_range_is_implausible_value() -> None:
    # A g/L value under a g/dL unit, range printed in g/L.
    assert codes(result("Hémoglobine", "135", "g/dL", "120-160")) == BLOCKING_SLIP
    # A value ten times off its own range.
    assert codes(result("Hémoglobine", "135", "g/dL", "12-16", flag="H")) == BLOCKING_SLIP
    assert codes(result("Sodium", "1400", "mmol/L", "135-145", flag="H")) == BLOCKING_SLIP
    # No printed range to confirm the slip: only a warning.
    assert codes(result("Hémoglobine", "135", "g/dL")) == [(Reason.IMPLAUSIBLE_VALUE, False)]


@pytest.mark.parametrize(
    "negative",
    [
        result("Glucose", "-5,2", "mmol/L"),
        result("Leucocytes", "-3", "G/L"),
        result("Ferritine", "-12", "µg/L"),
        result("Chromogranine A", "-20", "ng/mL"),
        result("Polynucléaires neutrophiles", "-4", "%"),
    ],
)
def test_negative_concentrations_and_counts(negative: LabResult) -> None:
    assert (Reason.NEGATIVE_VALUE, True) in codes(negative)


def test_a_misread_unit_in_ocr_text_is_a_warning() -> None:
    # The scan says µmol/L: OCR's misreading is Carnet's, the report is right.
    found = check_results((result("Créatinine", "80", "pmol/L", "45-104"),), ocr=True)
    assert [(p.code, p.blocking) for p in found] == [(Reason.IMPLAUSIBLE_UNIT, False)]
    assert "OCR read" in found[0].message
    # A wrong kind stays blocking whatever read it.
    wrong_kind = check_results((result("Leucocytes", "7,2", "mmol/L"),), ocr=True)
    assert [(p.code, p.blocking) for p in wrong_kind] == [(Reason.IMPLAUSIBLE_UNIT, True)]


@pytest.mark.parametrize("value", [None, ""])
def test_an_nm_result_without_a_value_is_not_invalid(value: str | None) -> None:
    # HL7 OBX-11 X: the lab could not obtain the result (haemolysed sample…), OBX-5 empty.
    not_obtained = LabResult(analyte="Glucose", loinc="2345-7", value=value, value_type="NM",
                             unit="mmol/L", reference_range="3.9-5.8")  # fmt: skip
    assert codes(not_obtained) == []
    assert codes(not_obtained.model_copy(update={"value": "hémolysé"})) == [(Reason.INVALID_RESULT, True)]


def test_a_range_with_thousands_grouped_by_a_space_is_read() -> None:
    platelets = LabResult(analyte="Plaquettes", loinc="777-3", value="250 000", numeric_value=250000.0,
                          value_type="NM", unit="/mm3", reference_range="150 000-400 000",
                          abnormal_flag="N")  # fmt: skip
    assert codes(platelets) == []
    assert codes(platelets.model_copy(update={"reference_range": "150\u202f000 - 400\u202f000"})) == []
