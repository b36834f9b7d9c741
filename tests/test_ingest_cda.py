"""CDA R2 as French producers send it to the DMP, through the whole pipeline: versions and
replacements of a document (setId, versionNumber, relatedDocument)."""

from __future__ import annotations

import base64
import itertools
import os
from pathlib import Path

import pytest

from pipeline.ingest.run import Pipeline
from pipeline.ingest.stages import InputFile
from pipeline.model import DocumentRecord, Outcome, SearchHit, SearchQuery, Status
from pipeline.settings import Settings
from tests.parsers.test_cda import SET_ID, replacement_of, sample

INS = "284037512345640"  # the samples' patient


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "carnet", master_key=base64.b64encode(os.urandom(32)).decode())


def _three_versions(*, parent_set_id: bool, second_version: bytes = b"2") -> list[tuple[str, bytes]]:
    """v1 (with or without a setId), v2 naming v1, v3 naming v2 (RPLC, no setId)."""
    original = sample("cr-bio.xml") if parent_set_id else sample("cr-bio.xml").replace(SET_ID, b"")
    second = (
        replacement_of(b"CRBIO-2024-0042-V1")
        .replace(b'value="13.2"', b'value="12.9"')
        .replace(b'<versionNumber value="2"/>', b'<versionNumber value="' + second_version + b'"/>')
    )
    third = replacement_of(b"CRBIO-2024-0042-V2", own_id=b"CRBIO-2024-0042-V3").replace(
        b'<versionNumber value="2"/>', b'<versionNumber value="3"/>'
    )
    return [("v1.xml", original), ("v2.xml", second), ("v3.xml", third)]


def _ingest(
    settings: Settings, inputs: list[tuple[str, bytes]], *, one_run: bool
) -> tuple[list[Outcome], list[SearchHit], list[SearchHit], list[DocumentRecord | None]]:
    """``inputs`` from producer "labo", in one run or a run each: (outcomes, live hits, every
    hit, each outcome's record) for the samples' patient, as the last run left them."""
    outcomes: list[Outcome] = []
    for batch in [inputs] if one_run else [[i] for i in inputs]:
        with Pipeline(settings) as pipe:
            pipe.start_run("ingest", "test", exclusive=True)
            for source, data in batch:
                pipe.process(InputFile(data=data, source=source, producer="labo"))
            pipe.flush()
            outcomes += pipe.outcomes
            index = pipe.index
            live = index.search(SearchQuery(patient_id=INS)).hits
            every = index.search(SearchQuery(patient_id=INS, include_superseded=True)).hits
            records = [index.get(INS, o.doc_id or "") for o in outcomes]
    return outcomes, list(live), list(every), records


@pytest.mark.parametrize("one_run", [True, False])
@pytest.mark.parametrize("parent_set_id", [False, True])
def test_a_cda_replacement_naming_its_parent_takes_its_place(
    tmp_path: Path, one_run: bool, parent_set_id: bool
) -> None:
    """A CDA replaces the document its relatedDocument RPLC names even without the same
    setId (none at all, as before the CI-SIS made it mandatory, or a new one): the parent
    leaves default searches, and a third version naming the second joins the same series."""
    inputs = _three_versions(parent_set_id=parent_set_id)
    outcomes, live, every, _ = _ingest(_settings(tmp_path), inputs, one_run=one_run)
    assert [o.status for o in outcomes] == [Status.INDEXED, Status.REPLACED, Status.REPLACED]
    assert [h.doc_id for h in live] == [outcomes[2].doc_id]
    assert len(every) == 3


@pytest.mark.parametrize("one_run", [True, False])
@pytest.mark.parametrize("parent_set_id", [False, True])
@pytest.mark.parametrize("replacement_version", [b"2", b"1"])
def test_a_parent_filed_after_its_replacement_arrives_superseded(
    tmp_path: Path, one_run: bool, parent_set_id: bool, replacement_version: bytes
) -> None:
    """The same versions in the reverse order (a replacement delivered before the document
    it replaces, in one run or in earlier ones): each parent joins its replacement's series
    already superseded, as a late older version does ("indexed"), so that searches return
    the newest only. The replacement naming it decides, not version numbers (one no higher
    than the parent's)."""
    inputs = _three_versions(parent_set_id=parent_set_id, second_version=replacement_version)[::-1]
    outcomes, live, every, records = _ingest(_settings(tmp_path), inputs, one_run=one_run)
    assert [o.status for o in outcomes] == [Status.INDEXED] * 3
    newest = outcomes[0].doc_id
    assert [h.doc_id for h in live] == [newest]
    assert len(every) == 3
    assert [(r.superseded_by, r.series_id) for r in records if r] == [
        (None, records[0].series_id),  # type: ignore[union-attr]
        (newest, records[0].series_id),  # type: ignore[union-attr]
        (newest, records[0].series_id),  # type: ignore[union-attr]
    ]


@pytest.mark.parametrize("one_run", [True, False])
@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_three_versions_in_any_order_leave_the_newest_live(
    tmp_path: Path, one_run: bool, order: tuple[int, ...]
) -> None:
    """Whatever the order of arrival: the middle version coming last stands between two
    chains (its parent live, its replacement live) and takes both out but the newest."""
    versions = _three_versions(parent_set_id=False)
    outcomes, live, every, _ = _ingest(_settings(tmp_path), [versions[i] for i in order], one_run=one_run)
    newest = outcomes[order.index(2)].doc_id
    assert {o.status for o in outcomes} <= {Status.INDEXED, Status.REPLACED}
    assert [h.doc_id for h in live] == [newest]
    assert len(every) == 3


def _addendum(*, name_parent_set: bool) -> bytes:
    """An addendum (APND) to the CR-BIO v1 reusing its parent's setId, as some producers
    do, naming the parent by its id (and its setId when ``name_parent_set``)."""
    data = replacement_of(b"CRBIO-2024-0042-V1", own_id=b"CRBIO-2024-0042-ADD1", set_id=SET_ID)
    data = data.replace(b'typeCode="RPLC"', b'typeCode="APND"').replace(b'value="13.2"', b'value="12.9"')
    if name_parent_set:
        data = data.replace(b"</parentDocument>", SET_ID + b"</parentDocument>")
    return data.replace(b'<versionNumber value="2"/>', b'<versionNumber value="1"/>')


@pytest.mark.parametrize("one_run", [True, False])
@pytest.mark.parametrize("addendum_first", [False, True])
@pytest.mark.parametrize("name_parent_set", [False, True])
def test_a_cda_addendum_sharing_its_parents_set_id_adds_to_it(
    tmp_path: Path, one_run: bool, addendum_first: bool, name_parent_set: bool
) -> None:
    """An addendum (relatedDocument APND) is a document of its own beside its parent, which
    stays current (CDA R2, as MDM^T06): even under its parent's setId it supersedes nothing
    and is superseded by nothing, whichever comes first; a replacement of the parent then
    replaces the parent only."""
    inputs = [("v1.xml", sample("cr-bio.xml")), ("add.xml", _addendum(name_parent_set=name_parent_set))]
    inputs = inputs[::-1] if addendum_first else inputs
    replacement = replacement_of(b"CRBIO-2024-0042-V1", set_id=SET_ID)
    inputs.append(("v2.xml", replacement.replace(b'value="13.2"', b'value="13.0"')))
    outcomes, live, every, _ = _ingest(_settings(tmp_path), inputs, one_run=one_run)
    assert [o.status for o in outcomes] == [Status.INDEXED, Status.INDEXED, Status.REPLACED]
    addendum = outcomes[0 if addendum_first else 1].doc_id
    assert sorted(h.doc_id for h in live) == sorted([addendum, outcomes[2].doc_id])
    assert len(every) == 3


def test_a_lab_report_with_entries_and_a_one_line_narrative_is_filed(tmp_path: Path) -> None:
    """Its entries are its content: indexed with a short_text warning, not refused as empty."""
    import re

    data = re.sub(
        rb"<component>\s*<structuredBody>.*</structuredBody>\s*</component>",
        b"<component><structuredBody><component><section><title>Biochimie</title><text>Glucose 5,4 mmol/L"
        b'</text><entry><observation classCode="OBS" moodCode="EVN"><code code="2345-7" codeSystem='
        b'"2.16.840.1.113883.6.1" displayName="Glucose"/><value xsi:type="PQ" value="5.4" unit="mmol/L"/>'
        b"</observation></entry></section></component></structuredBody></component>",
        sample("cr-bio.xml"),
        flags=re.S,
    )
    with Pipeline(_settings(tmp_path)) as pipe:
        pipe.start_run("ingest", "test", exclusive=True)
        pipe.process(InputFile(data=data, source="glucose.xml", producer="labo"))
        pipe.flush()
        [outcome] = pipe.outcomes
    assert outcome.status is Status.INDEXED
    assert "short_text" in [r.code.value for r in outcome.reasons]  # a warning
