"""The GX quality gate: one check at a time, a mixed batch, and Data Docs without patient data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from stdnum.fr import nir

from pipeline.keywrap import MASTER_KEY_FILE
from pipeline.model import DocClass, PatientDemographics, Reason
from pipeline.quality import (
    BATCH_THRESHOLD,
    DATA_DOCS_PREFIX,
    MALFORMED_IDENTIFIER,
    UNKNOWN_DOCUMENT_TYPE,
    BatchThresholds,
    GateItem,
    GateResult,
    QualityGate,
    publish_data_docs,
)
from pipeline.settings import Settings
from tests.quality.conftest import DEMOGRAPHICS, INS, TODAY, creatinine, make_record

KNOWN = frozenset({"labo-biolyon", "radio-nantes"})


@pytest.fixture(scope="module", params=["here", "worker"])
def gate(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> QualityGate:
    """One gate (one GX context) for the module: building it is the slow part. Every test
    runs with GX in this process and in the GX worker (``start``): same verdicts."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("gate"))
    gate = QualityGate(settings, known_producers=KNOWN, today=TODAY)
    if request.param == "worker":
        gate.start()
    return gate


def run_one(
    gate: QualityGate, demographics: PatientDemographics | None = DEMOGRAPHICS, **changes: object
) -> GateResult:
    item = GateItem(record=make_record("doc-1", **changes), demographics=demographics)
    return gate.validate([item], batch_label="test")


def codes(result: GateResult, doc_id: str = "doc-1") -> list[tuple[Reason, bool]]:
    return [(p.code, p.blocking) for p in result.problems.get(doc_id, ())]


def test_good_document_passes(gate: QualityGate) -> None:
    result = run_one(gate)
    assert result.problems == {}
    assert result.batch_flags == ()
    assert result.data_docs_index is None


def test_sex_disagreeing_with_ins_is_identity_mismatch(gate: QualityGate) -> None:
    male = DEMOGRAPHICS.model_copy(update={"sex": "M"})
    assert codes(run_one(gate, male)) == [(Reason.IDENTITY_MISMATCH, True)]


def test_birth_month_disagreeing_with_ins_is_identity_mismatch(gate: QualityGate) -> None:
    born = DEMOGRAPHICS.model_copy(update={"birth_date": dt.date(1984, 9, 17)})
    assert codes(run_one(gate, born)) == [(Reason.IDENTITY_MISMATCH, True)]


def test_special_nir_month_is_not_compared() -> None:
    # Month 30 (registration without a known month) is legitimate: only the year is compared.
    body = "2843075123456"
    ins = body + nir.calc_check_digits(body)
    from pipeline.quality import identity_facts

    facts = identity_facts(ins, DEMOGRAPHICS)
    assert facts == identity_facts(INS, DEMOGRAPHICS)
    assert facts.birth_consistent is True and facts.sex_consistent is True
    assert (
        identity_facts(
            ins, DEMOGRAPHICS.model_copy(update={"birth_date": dt.date(1985, 5, 17)})
        ).birth_consistent
        is False
    )


def test_no_demographics_means_no_identity_verdict(gate: QualityGate) -> None:
    assert run_one(gate, None).problems == {}


def test_date_before_birth_is_blocking(gate: QualityGate) -> None:
    assert codes(run_one(gate, document_date=dt.date(1983, 1, 1))) == [(Reason.IMPLAUSIBLE_DATE, True)]
    assert "born 1984-05-17" in run_one(gate, document_date=dt.date(1983, 1, 1)).problems["doc-1"][0].message


def test_dates_known_before_identification_are_not_checked_again(gate: QualityGate) -> None:
    # A missing or future date is check_document's: the gate does not repeat it.
    for date in (None, TODAY + dt.timedelta(days=3)):
        assert run_one(gate, None, document_date=date).problems == {}


def test_pmol_creatinine_is_implausible_unit(gate: QualityGate) -> None:
    result = run_one(gate, results=(creatinine(unit="pmol/L"),))
    assert codes(result) == [(Reason.IMPLAUSIBLE_UNIT, True)]
    assert "pmol/L" in result.problems["doc-1"][0].message


def test_non_numeric_nm_result_is_invalid(gate: QualityGate) -> None:
    bad = creatinine(value="quatre-vingts", numeric_value=None, abnormal_flag=None)
    assert codes(run_one(gate, results=(bad,))) == [(Reason.INVALID_RESULT, True)]


def test_range_and_flag_problems_are_warnings(gate: QualityGate) -> None:
    high_but_normal = creatinine(value="180", numeric_value=180.0, abnormal_flag="N")
    bad_range = creatinine(reference_range="104-45", abnormal_flag=None)
    assert codes(run_one(gate, results=(high_but_normal, bad_range))) == [
        (Reason.INVALID_RESULT, False),
        (Reason.INVALID_RESULT, False),
    ]
    assert (
        run_one(gate, results=(creatinine(value="180", numeric_value=180.0, abnormal_flag="H"),)).problems
        == {}
    )


def test_text_is_not_checked_again(gate: QualityGate) -> None:
    # An unreadable scan is check_document's (before identification), not the gate's.
    result = run_one(
        gate, format="pdf", text="  ", ocr_pages=1, page_count=1, ocr_confidence=12.0, results=()
    )
    assert result.problems == {}


def test_unknown_producer_is_held(gate: QualityGate) -> None:
    assert codes(run_one(gate, producer="labo-inconnu")) == [(Reason.UNKNOWN_PRODUCER, True)]


def test_malformed_identifiers_and_unknown_type_are_warnings(gate: QualityGate) -> None:
    result = run_one(gate, producer_finess="69412", author_rpps="10000012340", type_code="99999-9")
    assert codes(result) == [
        (UNKNOWN_DOCUMENT_TYPE, False),
        (MALFORMED_IDENTIFIER, False),
        (MALFORMED_IDENTIFIER, False),
    ]


def test_a_loinc_radiology_code_known_by_its_name_is_an_allowed_type(gate: QualityGate) -> None:
    """A code classification filed under imaging by its LOINC radiology name (CT Chest) is
    no unknown type; the same code without that name still is."""
    imaging = dict(doc_class=DocClass.IMAGING, type_code="24627-2", results=())
    assert codes(run_one(gate, **imaging, type_label="CT Chest")) == []
    assert codes(run_one(gate, **imaging | {"doc_class": DocClass.OTHER})) == [(UNKNOWN_DOCUMENT_TYPE, False)]


def test_mixed_batch(gate: QualityGate) -> None:
    male = DEMOGRAPHICS.model_copy(update={"sex": "M"})
    items = [
        GateItem(record=make_record("good-1"), demographics=DEMOGRAPHICS),
        GateItem(record=make_record("good-2", document_date=dt.date(2024, 1, 2)), demographics=DEMOGRAPHICS),
        GateItem(record=make_record("good-3"), demographics=None),
        GateItem(record=make_record("wrong-sex"), demographics=male),
        GateItem(record=make_record("unborn", document_date=dt.date(1980, 1, 1)), demographics=DEMOGRAPHICS),
        GateItem(record=make_record("pmol", results=(creatinine(unit="pmol/L"),)), demographics=DEMOGRAPHICS),
        GateItem(record=make_record("no-finess", producer_finess="69412"), demographics=DEMOGRAPHICS),
        GateItem(record=make_record("scan", ocr_pages=1, ocr_confidence=55.0), demographics=DEMOGRAPHICS),
    ]
    result = gate.validate(
        items,
        batch_label="labo-biolyon/2025-06-01",
        outcome_counts={"indexed": 8, "rejected": 1, "duplicate": 1},
    )
    assert {d: [(p.code, p.blocking) for p in ps] for d, ps in result.problems.items()} == {
        "wrong-sex": [(Reason.IDENTITY_MISMATCH, True)],
        "unborn": [(Reason.IMPLAUSIBLE_DATE, True)],
        "pmol": [(Reason.IMPLAUSIBLE_UNIT, True)],
        "no-finess": [(MALFORMED_IDENTIFIER, False)],
    }
    assert result.rejected() == {"wrong-sex", "unborn", "pmol"}
    # 1 rejected before the gate + 3 by it, out of 10: 40% is under the default 50%.
    assert result.batch_flags == ()
    strict = QualityGate(
        gate.settings,
        known_producers=KNOWN,
        today=TODAY,
        thresholds={
            "labo-biolyon": BatchThresholds(
                max_reject_rate=0.2, max_ocr_share=0.1, max_duplicate_share=0.05, min_documents=50
            )
        },
    )
    flagged = strict.validate(
        items,
        batch_label="labo-biolyon/2025-06-01",
        outcome_counts={"indexed": 8, "rejected": 1, "duplicate": 1},
    )
    assert flagged.problems == result.problems
    messages = [f.message for f in flagged.batch_flags]
    assert all(f.code is BATCH_THRESHOLD and not f.blocking for f in flagged.batch_flags)
    assert any("reject rate 40%" in m for m in messages)
    assert any("OCR share 12%" in m for m in messages)
    assert any("duplicate share 10%" in m for m in messages)
    assert any("fewer than the usual 50" in m for m in messages)


def test_runs_that_keep_results_for_data_docs_reach_the_same_verdicts(gate: QualityGate) -> None:
    """Without Data Docs the suites run for verdicts first and again only for the checks
    that failed; with them, GX's validation definitions run whole: the same rows fail."""
    male = DEMOGRAPHICS.model_copy(update={"sex": "M"})
    items = [
        GateItem(record=make_record("good"), demographics=DEMOGRAPHICS),
        GateItem(record=make_record("wrong-sex"), demographics=male),
        GateItem(record=make_record("unborn", document_date=dt.date(1980, 1, 1)), demographics=male),
        GateItem(
            record=make_record(
                "units",
                results=(creatinine(unit="pmol/L"), creatinine(), creatinine(value="x", numeric_value=None)),
            ),
            demographics=DEMOGRAPHICS,
        ),
        GateItem(record=make_record("no-finess", producer_finess="69412"), demographics=DEMOGRAPHICS),
    ]
    light = gate.validate(items, batch_label="b")
    with QualityGate(gate.settings, known_producers=KNOWN, build_data_docs=True, today=TODAY) as kept:
        assert kept.validate(items, batch_label="b").problems == light.problems
    assert set(light.problems) == {"wrong-sex", "unborn", "units", "no-finess"}
    assert {p.code for p in light.problems["unborn"]} == {Reason.IDENTITY_MISMATCH, Reason.IMPLAUSIBLE_DATE}
    assert Reason.IMPLAUSIBLE_UNIT in {p.code for p in light.problems["units"]}


def _people(n: int) -> list[tuple[str, PatientDemographics]]:
    names = [("Lefebvre", "Amélie"), ("Nguyen", "Thomas"), ("Moreau", "Inès"), ("Garnier", "Louis")]
    out = []
    for i in range(n):
        sex = "1" if i % 2 else "2"
        body = f"{sex}{70 + i:02d}{(i % 12) + 1:02d}69{123 + i:03d}{400 + i:03d}"
        family, given = names[i % len(names)]
        out.append(
            (
                body + nir.calc_check_digits(body),
                PatientDemographics(
                    family_name=family,
                    given_name=given,
                    sex="M" if i % 2 else "F",
                    birth_date=dt.date(1970 + i, (i % 12) + 1, 3),
                ),
            )
        )
    return out


@pytest.mark.parametrize("where", ["here", "worker"])
def test_data_docs_hold_no_patient_data(tmp_path: Path, where: str) -> None:
    settings = Settings(data_dir=tmp_path / "carnet")
    people = _people(4)
    items = []
    for n, (ins, demo) in enumerate(people):
        # Person 0 is given the wrong sex so that failures (and their rows) are rendered too.
        shown = demo.model_copy(update={"sex": "M"}) if n == 0 else demo
        record = make_record(
            f"doc-{n}",
            patient_id=ins,
            results=(
                creatinine(
                    unit="pmol/L" if n == 1 else "umol/L",
                    value="987.65",
                    numeric_value=987.65,
                    abnormal_flag="N",
                ),
            ),
        )
        items.append(GateItem(record=record, demographics=shown))
    with QualityGate(settings, known_producers=KNOWN, build_data_docs=True, today=TODAY) as gate:
        if where == "worker":
            gate.start()
        result = gate.validate(items, batch_label="labo-biolyon/batch-7")
        assert result.rejected() == {"doc-0", "doc-1"}
        assert result.data_docs_index and result.data_docs_index.endswith("index.html")
        assert gate.data_docs_site is not None
        url = publish_data_docs(settings, gate.data_docs_site, "run-1")
        rendered = gate.data_docs_site
    # Rendered in a temporary folder (gone with the gate), published beside the store's
    # objects; nothing of it, and no key or salt file, in the data folder.
    assert not rendered.exists()
    store_root = Path(settings.effective_store_url.removeprefix("file://"))
    site = store_root / DATA_DOCS_PREFIX
    assert url == (site / "index-run-1.html").as_uri()
    assert (site / "index.html").read_bytes() == (site / "index-run-1.html").read_bytes()
    assert not [
        p
        for p in settings.data_dir.rglob("*")
        if p.is_file() and store_root not in p.parents and p.name != MASTER_KEY_FILE
    ]
    pages = [p for p in site.rglob("*") if p.suffix in (".html", ".json")]
    assert any("validations" in p.parts for p in pages), "validation pages were not rendered"
    secrets = (
        {ins for ins, _ in people}
        | {d.family_name for _, d in people if d.family_name}
        | {d.given_name for _, d in people if d.given_name}
        | {"987.65"}
    )
    # (A decimal value: a bare "173" also occurs by chance in timestamps and run ids.)
    for page in pages:
        text = page.read_text(encoding="utf-8", errors="replace")
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, f"{page.relative_to(site)} contains {leaked}"
    # The pages still say which checks failed, so they are useful to a data engineer.
    validation_pages = "".join(p.read_text(encoding="utf-8") for p in pages if "validations" in p.parts)
    assert "sex_consistent" in validation_pages and "unit_plausible" in validation_pages


def test_negative_value_and_unit_slip_are_blocking(gate: QualityGate) -> None:
    negative = creatinine(value="-80", numeric_value=-80.0, abnormal_flag="L")
    assert codes(run_one(gate, results=(negative,))) == [(Reason.NEGATIVE_VALUE, True)]
    from pipeline.model import LabResult

    slipped = LabResult(
        analyte="Hémoglobine",
        loinc="718-7",
        value="135",
        numeric_value=135.0,
        value_type="NM",
        unit="g/dL",
        reference_range="120-160",
        abnormal_flag="N",
    )
    assert codes(run_one(gate, results=(slipped,))) == [(Reason.IMPLAUSIBLE_VALUE, True)]


def test_exam_before_the_birth_the_ins_encodes_is_blocking(gate: QualityGate) -> None:
    # A back-filled PDF: no structured birth date, only the INS (born May 1984).
    pdf = dict(format="pdf", results=())
    assert codes(run_one(gate, None, document_date=dt.date(1984, 4, 30), **pdf)) == [
        (Reason.IMPLAUSIBLE_DATE, True)
    ]
    assert run_one(gate, None, document_date=dt.date(1984, 5, 2), **pdf).problems == {}
    # The printed birth date, when it agrees with the INS, is more precise than the month.
    printed = "Né(e) le 17/05/1984. " + make_record().text
    assert codes(run_one(gate, None, document_date=dt.date(1984, 5, 2), text=printed, **pdf)) == [
        (Reason.IMPLAUSIBLE_DATE, True)
    ]


def test_the_gx_process_ends_cleanly_once_its_pipe_is_closed() -> None:
    # It skips the interpreter's teardown of GX's objects (``os._exit``), with exit code 0.
    from pipeline.quality.gate import _GxWorker

    worker = _GxWorker()
    worker.call("ready", 0)
    worker.stop()
    assert worker._process.exitcode == 0


def test_a_gate_in_the_gx_process_that_validated_nothing_closes_without_asking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run whose inputs were all duplicates or rejected: closing must not wait for GX's import.
    from pipeline.quality.gate import _GxWorker

    gate = QualityGate(Settings(data_dir=tmp_path))
    gate.start()

    def no_call(self: _GxWorker, *request: object) -> None:
        raise AssertionError(f"asked the GX process {request}")

    monkeypatch.setattr(_GxWorker, "call", no_call)
    gate.close()
