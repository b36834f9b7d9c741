"""Results printed in text become ``LabResult``s; dates, phones, identifiers and addresses never do."""

from __future__ import annotations

import pytest

from pipeline.observations import extract_observations, read_row


def row(line: str) -> list[tuple[str, str | None, float | None, str | None, str | None, str | None]]:
    return [
        (r.analyte, r.value, r.numeric_value, r.unit, r.reference_range, r.abnormal_flag)
        for r in read_row(line)
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Hémoglobine : 13,5 g/dL (12,0-16,5)", ("Hémoglobine", "13,5", 13.5, "g/dL", "12.0-16.5", None)),
        ("Hémoglobine : 17,2 (H) g/dL (12,0-16,5)", ("Hémoglobine", "17,2", 17.2, "g/dL", "12.0-16.5", "H")),
        (
            "Leucocytes ........ 7,25 G/L    4,00 - 10,00",
            ("Leucocytes", "7,25", 7.25, "G/L", "4.00 - 10.00", None),
        ),
        ("Plaquettes | 250 | G/L | 150 - 400", ("Plaquettes", "250", 250.0, "G/L", "150 - 400", None)),
        (
            "Plaquettes\t250 000\t/mm3\t(150 000-400 000)",
            ("Plaquettes", "250 000", 250000.0, "/mm3", "150000-400000", None),
        ),
        ("Créatinine 80 µmol/L (45–104) H", ("Créatinine", "80", 80.0, "µmol/L", "45–104", "H")),
        ("Leucocytes 7,2 x10E3/µL 4,0-10,0 *", ("Leucocytes", "7,2", 7.2, "x10E3/µL", "4.0-10.0", "*")),
        ("Leucocytes 7,2 10^9/L [4,0 - 10,0]", ("Leucocytes", "7,2", 7.2, "10^9/L", "4.0 - 10.0", None)),
        ("25-OH vitamine D 30 ng/mL (30-100)", ("25-OH vitamine D", "30", 30.0, "ng/mL", "30-100", None)),
        (
            "DFG estimé (CKD-EPI) > 90 mL/min/1,73m²",
            ("DFG estimé (CKD-EPI)", ">90", None, "mL/min/1,73m²", None, None),
        ),
        ("PDL : 412 mGy.cm", ("PDL", "412", 412.0, "mGy.cm", None, None)),
        ("CTDIvol = 8,1 mGy", ("CTDIvol", "8,1", 8.1, "mGy", None, None)),
        ("Dosimétrie : PDL : 412 mGy.cm", ("PDL", "412", 412.0, "mGy.cm", None, None)),
        ("Glucose 7,2 H (3,9-5,8)", ("Glucose", "7,2", 7.2, None, "3.9-5.8", "H")),
        ("INR 1,1 (0,8-1,2)", ("INR", "1,1", 1.1, None, "0.8-1.2", None)),
        ("Créatinine : -12 µmol/L (45-104)", ("Créatinine", "-12", -12.0, "µmol/L", "45-104", None)),
        (
            "Hématies 4,85 T/L (4,20-5,40) 4,9 (12/01/2025)",  # an earlier result in the last column
            ("Hématies", "4,85", 4.85, "T/L", "4.20-5.40", None),
        ),
        ("Créatinine\u00a0: 80\u202fµmol/L (45-104)", ("Créatinine", "80", 80.0, "µmol/L", "45-104", None)),
    ],
)
def test_result_rows(line: str, expected: tuple[object, ...]) -> None:
    assert row(line) == [expected]


def test_a_value_printed_in_two_units_gives_two_results_without_a_range() -> None:
    assert row("Créatinine 9,0 mg/L 80 µmol/L (45-104)") == [
        ("Créatinine", "9,0", 9.0, "mg/L", None, None),
        ("Créatinine", "80", 80.0, "µmol/L", None, None),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "Tél. 04 72 12 34 56",
        "Tel : 04.72.12.34.56",
        "Prélèvement du 12/03/2025 à 08:30",
        "Né(e) le 17/05/1984   Sexe : F",
        "INS : 2 84 05 75 123 456 78",
        "RPPS : 10001234567",
        "FINESS : 690001234",
        "12 rue de la République 69002 Lyon",
        "Laboratoire BioLyon, 12 avenue Jean Jaurès",
        "69002 Lyon",
        "Compte rendu validé le 14/03/2025",
        "Coupes de 1 mm",
        "Acquisition hélicoïdale, coupes de 1 mm.",
        "Dossier n° 250312 00451",
        "Page 1 / 2",
        "Édité le 14/03/2025 à 10:12",
        "Résidence Les Pins 3",
        "Âge : 41 ans",
        "Toux persistante depuis 3 semaines",
        "Analyse | Résultat | Unité | Valeurs de référence",
    ],
)
def test_lines_that_are_not_results(line: str) -> None:
    assert read_row(line) == []


def test_a_whole_report() -> None:
    text = "\n".join(
        [
            "Laboratoire BioLyon",
            "12 avenue Jean Jaurès, 69007 Lyon",
            "Tél. 04 72 00 00 00",
            "Patient : MARTIN Claire",
            "Né(e) le 17/05/1984",
            "INS : 2 84 05 75 123 456 78",
            "Prélèvement du 12/03/2025 à 08:30",
            "HÉMOGRAMME",
            "Hémoglobine : 13,5 g/dL (12,0-16,5)",
            "Leucocytes : 7,25 G/L (4,00-10,00)",
            "BILAN RÉNAL",
            "Créatinine : 80 µmol/L (45-104)",
            "Compte rendu validé le 14/03/2025",
        ]
    )
    assert [(r.analyte, r.unit) for r in extract_observations(text)] == [
        ("Hémoglobine", "g/dL"),
        ("Leucocytes", "G/L"),
        ("Créatinine", "µmol/L"),
    ]


def test_a_table_drawn_cell_by_cell() -> None:
    # What a PDF text layer gives for a table whose cells are placed one by one.
    text = "\n".join(
        [
            "Analyse",
            "Résultat",
            "Unité",
            "Valeurs de référence",
            "Hémoglobine",
            "13,5",
            "g/dL",
            "12,0 - 16,5",
            "Leucocytes",
            "11,2",
            "G/L",
            "4,0 - 10,0",
            "H",
            "INR",
            "1,05",
            "0,80 - 1,20",
            "25-OH vitamine D",
            "32",
            "ng/mL",
            "30 - 100",
        ]
    )
    assert [
        (r.analyte, r.value, r.unit, r.reference_range, r.abnormal_flag) for r in extract_observations(text)
    ] == [
        ("Hémoglobine", "13,5", "g/dL", "12.0 - 16.5", None),
        ("Leucocytes", "11,2", "G/L", "4.0 - 10.0", "H"),
        ("INR", "1,05", None, "0.80 - 1.20", None),
        ("25-OH vitamine D", "32", "ng/mL", "30 - 100", None),
    ]


def test_cells_that_are_not_results() -> None:
    text = "\n".join(
        [
            "Tél.",
            "04 72 12 34 56",
            "Page",
            "1",
            "Né(e) le",
            "17/05/1984",
            "Âge",
            "41",
            "ans",
            "Dossier",
            "250312",
            "INS",
            "2 84 05 75 123 456 78",
            "Lyon",
            "69002",
            "Code postal",
            "69002",
        ]
    )
    assert extract_observations(text) == ()


@pytest.mark.parametrize("blank", ["\t", " ", "\u00a0"])
def test_reading_is_linear_in_a_long_run_of_blanks(blank: str) -> None:
    """A line's blanks around column separators were collapsed by one "\\s*SEP\\s*"
    substitution, which scans a run of blanks again from each of its positions: 20,000
    tabs in a text layer took 11 s of CPU, 100,000 some five minutes."""
    import time

    text = f"Créatinine{blank * 100_000}80 µmol/L (45-104)\nHémoglobine | 13,5 g/dL"
    started = time.process_time()
    results = extract_observations(text)
    assert time.process_time() - started < 5.0
    assert [r.analyte for r in results] == ["Hémoglobine"]  # the other line is no row
