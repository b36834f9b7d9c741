"""The contract every index backend must meet, written against the protocol only.

Each test runs once per backend (see ``conftest.index``). Writes must be visible
to reads as soon as they return: the Elasticsearch backend refreshes before
``upsert``/``supersede``/``set_visibility``/``delete`` return, so no test sleeps
or polls.

Search semantics held here: every query term must match (AND) in title, text,
analytes, LOINC codes, type or producer; the last term also matches as a prefix
when it has at least 3 characters; text without any searchable word finds
nothing; no text lists the patient's documents newest first (undated last);
``since``/``until`` leave undated documents out; snippets are plain text with the offsets of
the matching words (brackets in a document stay text).
"""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.index import DocumentIndex, IndexFailure, Supersede
from pipeline.index.base import KEYWORD_MAX_CHARS
from pipeline.model import DocClass, LabResult, SearchOrder, SearchQuery, SearchResult, Visibility
from tests.index.conftest import PATIENT_A, PATIENT_B, PATIENT_C, make_record

HB_TEXT = (
    "Compte rendu de biologie. Numération formule sanguine : Hémoglobine 13,5 g/dL "
    "(718-7), hématocrite 41 %. Glucose à jeun 5,1 mmol/L. Conclusion : pas d'anémie."
)


def search(index: DocumentIndex, text: str | None = None, **kw: object) -> SearchResult:
    return index.search(SearchQuery(patient_id=kw.pop("patient_id", PATIENT_A), text=text, **kw))


def ids(result: SearchResult) -> list[str]:
    return [hit.doc_id for hit in result.hits]


# -- writes and reads ----------------------------------------------------------------------


def test_upsert_then_get_round_trips_the_record(index: DocumentIndex) -> None:
    record = make_record(
        "doc-1",
        text=HB_TEXT,
        results=(LabResult(analyte="Hémoglobine", loinc="718-7", value="13.5", unit="g/dL"),),
        visibility=(Visibility.MASQUE_PS,),
        content_size=2048,
        content_sha1="a9" * 20,
    )
    assert index.upsert([record]) == []
    assert index.get(PATIENT_A, "doc-1") == record
    assert index.count() == 1
    assert index.list_ids() == [(PATIENT_A, "doc-1", record.content_sha256)]


def test_keyword_values_past_the_term_limit_are_kept_and_the_document_found_by_text(
    index: DocumentIndex,
) -> None:
    # Over 32 KB in every field a producer fills with a code or an identifier: Elasticsearch
    # refused the whole document (index_error) where the embedded index took it. Both keep
    # it whole and find it by its text; neither matches a value past KEYWORD_MAX_CHARS.
    huge, wide = "X" * 40_000, "é" * 17_000  # 40,000 bytes; 34,000 bytes in 17,000 characters
    at_limit = "é" * KEYWORD_MAX_CHARS
    record = make_record(
        "doc-huge",
        text=HB_TEXT,
        type_code=huge,
        producer_finess=wide,
        producer_document_id=huge,
        document_ids=(wide, at_limit, "short-id"),
        author_rpps=huge,
        results=(LabResult(analyte="Hémoglobine", loinc=huge, value="13.5", unit=wide, abnormal_flag=huge),),
    )
    assert index.upsert([record]) == []
    assert index.get(PATIENT_A, "doc-huge") == record
    assert ids(search(index, "hémoglobine")) == ["doc-huge"]
    assert index.find_by_document_ids(PATIENT_A, "labo-test", [huge, wide]) == []
    for name in ("short-id", at_limit):
        assert [v.doc_id for v in index.find_by_document_ids(PATIENT_A, "labo-test", [huge, name])] == [
            "doc-huge"
        ]
    assert search(index, type_code=huge).total == 0


def test_get_never_returns_another_patients_document(index: DocumentIndex) -> None:
    index.upsert([make_record("doc-b", patient_id=PATIENT_B, text=HB_TEXT)])
    assert index.get(PATIENT_A, "doc-b") is None
    assert index.get(PATIENT_B, "doc-b") is not None
    assert index.get(PATIENT_A, "missing") is None


def test_re_upsert_is_idempotent_and_replaces_the_searchable_content(
    index: DocumentIndex,
) -> None:
    index.upsert([make_record("doc-1", text="Ferritine basse")])
    index.upsert([make_record("doc-1", text="Ferritine basse")])
    assert index.count() == 1
    index.upsert([make_record("doc-1", text="Vitamine B12 normale")])
    assert index.count() == 1
    assert search(index, "ferritine").total == 0
    assert ids(search(index, "vitamine")) == ["doc-1"]
    assert index.get(PATIENT_A, "doc-1").text == "Vitamine B12 normale"  # type: ignore[union-attr]


def test_refused_records_come_back_as_failures_and_the_rest_is_indexed(
    index: DocumentIndex,
) -> None:
    good = make_record("good", text=HB_TEXT)
    bad = make_record("bad", patient_id="12345", text=HB_TEXT)
    failures = index.upsert([good, bad])
    assert [f.doc_id for f in failures] == ["bad"]
    assert all(isinstance(f, IndexFailure) and f.message for f in failures)
    assert index.count() == 1
    assert index.get(PATIENT_A, "good") == good


def test_find_versions_by_content_hash_and_by_series(index: DocumentIndex) -> None:
    original = make_record("v1", series_id="s-1", content="same bytes")
    same_bytes = make_record("copy", series_id="s-2", content="same bytes")
    new_version = make_record("v2", series_id="s-1", content="new bytes")
    unrelated = make_record("other", series_id="s-3", content="other bytes")
    elsewhere = make_record("b-copy", patient_id=PATIENT_B, series_id="s-1", content="same bytes")
    index.upsert([original, same_bytes, new_version, unrelated, elsewhere])

    by_hash = index.find_versions(PATIENT_A, content_sha256=original.content_sha256, series_id="x")
    assert sorted(v.doc_id for v in by_hash) == ["copy", "v1"]
    by_series = index.find_versions(PATIENT_A, content_sha256="0" * 64, series_id="s-1")
    assert sorted(v.doc_id for v in by_series) == ["v1", "v2"]
    both = index.find_versions(PATIENT_A, content_sha256=original.content_sha256, series_id="s-1")
    assert sorted(v.doc_id for v in both) == ["copy", "v1", "v2"]
    found = {v.doc_id: v for v in both}
    assert found["v2"].series_id == "s-1"
    assert found["v2"].content_sha256 == new_version.content_sha256
    assert found["v2"].superseded_by is None
    assert index.find_versions(PATIENT_C, content_sha256=original.content_sha256, series_id="s-1") == []


def test_supersede_hides_the_old_version_from_default_search(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record("v1", series_id="s", text="Hémoglobine 12"),
            make_record("v2", series_id="s", text="Hémoglobine 13"),
        ]
    )
    index.supersede(PATIENT_A, "v1", "v2")

    assert ids(search(index, "hémoglobine")) == ["v2"]
    assert ids(search(index)) == ["v2"]
    assert sorted(ids(search(index, "hémoglobine", include_superseded=True))) == ["v1", "v2"]
    assert ids(search(index, superseded_only=True)) == ["v1"]
    assert ids(search(index, "hémoglobine", superseded_only=True)) == ["v1"]
    old = index.get(PATIENT_A, "v1")
    assert old is not None and old.superseded_by == "v2"
    versions = index.find_versions(PATIENT_A, content_sha256="0" * 64, series_id="s")
    assert {v.doc_id: v.superseded_by for v in versions} == {"v1": "v2", "v2": None}


def test_rebuild_keeps_every_document_its_version_chain_and_its_search(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record("v1", series_id="s", text="Hémoglobine 12"),
            make_record("v2", series_id="s", text="Hémoglobine 13"),
            make_record("b1", patient_id=PATIENT_B, text="Hémoglobine 14"),
        ]
    )
    index.supersede(PATIENT_A, "v1", "v2")

    done = index.rebuild("v9")

    previous: list[str] = done.get("previous", [])  # type: ignore[assignment]
    for name in previous:  # Elasticsearch keeps the old index, for checking
        index.client.indices.delete(index=name)  # type: ignore[attr-defined]
    assert done["documents"] == index.count() == 3
    assert ids(search(index, "hémoglobine")) == ["v2"]
    assert ids(search(index, "hemoglobine", patient_id=PATIENT_B)) == ["b1"]
    old = index.get(PATIENT_A, "v1")
    assert old is not None and old.superseded_by == "v2"


# -- one flush: apply ------------------------------------------------------------------------


def _chain(index: DocumentIndex, *doc_ids: str) -> dict[str, str | None]:
    records = {d: index.get(PATIENT_A, d) for d in doc_ids}
    return {d: r.superseded_by if r else "missing" for d, r in records.items()}


def test_apply_writes_a_flush_and_supersedes_stored_versions(index: DocumentIndex) -> None:
    assert index.apply([make_record("v1", series_id="s", text="Ferritine 20")], []) == []
    flush = [
        make_record("v2", series_id="s", text="Ferritine 35"),
        make_record("other", text="Glycémie 5,1"),
        make_record("b1", patient_id=PATIENT_B, text="Ferritine 40"),
    ]
    assert index.apply(flush, [Supersede(patient_id=PATIENT_A, doc_id="v1", by_doc_id="v2")]) == []
    assert ids(search(index, "ferritine")) == ["v2"]
    assert sorted(ids(search(index))) == ["other", "v2"]
    assert ids(search(index, "ferritine", patient_id=PATIENT_B)) == ["b1"]
    assert _chain(index, "v1", "v2", "other") == {"v1": "v2", "v2": None, "other": None}
    assert index.get(PATIENT_A, "v2") == flush[0]


def test_apply_supersedes_an_old_version_written_in_the_same_flush(index: DocumentIndex) -> None:
    flush = [make_record("v1", series_id="s", text="Ferritine 20"), make_record("v2", series_id="s")]
    assert index.apply(flush, [Supersede(patient_id=PATIENT_A, doc_id="v1", by_doc_id="v2")]) == []
    assert _chain(index, "v1", "v2") == {"v1": "v2", "v2": None}
    assert ids(search(index, "ferritine")) == []


def test_apply_again_changes_nothing_and_a_version_chain_never_goes_back(index: DocumentIndex) -> None:
    first = [make_record("v1", series_id="s", text="Ferritine 20"), make_record("x", text="Glycémie")]
    second = (
        [make_record("v2", series_id="s", text="Ferritine 35")],
        [Supersede(patient_id=PATIENT_A, doc_id="v1", by_doc_id="v2")],
    )
    assert index.apply(first, []) == []
    assert index.apply(*second) == []
    before = (index.list_ids(), ids(search(index, "ferritine")), _chain(index, "v1", "v2", "x"))
    # A rerun of both flushes (the journal replays what it cannot know finished): v1,
    # sent again as it was first written, stays superseded.
    assert index.apply(first, []) == []
    assert index.apply(*second) == []
    assert (index.list_ids(), ids(search(index, "ferritine")), _chain(index, "v1", "v2", "x")) == before
    assert before[1:] == (["v2"], {"v1": "v2", "v2": None, "x": None})
    # Sent again with new content, it is rewritten, and still superseded.
    assert index.apply([make_record("v1", series_id="s", text="Ferritine 21")], []) == []
    assert index.get(PATIENT_A, "v1").text == "Ferritine 21"  # type: ignore[union-attr]
    assert _chain(index, "v1") == {"v1": "v2"}


def test_apply_leaves_the_old_version_of_a_refused_new_version_alone(index: DocumentIndex) -> None:
    assert index.apply([make_record("v1", series_id="s", text="Ferritine 20")], []) == []
    refused = make_record("v2", patient_id="12345", series_id="s")
    failures = index.apply([refused], [Supersede(patient_id=PATIENT_A, doc_id="v1", by_doc_id="v2")])
    assert [f.doc_id for f in failures] == ["v2"]
    assert _chain(index, "v1") == {"v1": None}
    assert ids(search(index, "ferritine")) == ["v1"]


def test_apply_of_a_supersede_alone_and_of_a_missing_old_version(index: DocumentIndex) -> None:
    assert index.apply([make_record("v1", series_id="s"), make_record("v2", series_id="s")], []) == []
    assert index.apply([], [Supersede(patient_id=PATIENT_A, doc_id="v1", by_doc_id="v2")]) == []
    assert index.apply([], [Supersede(patient_id=PATIENT_A, doc_id="gone", by_doc_id="v2")]) == []
    assert _chain(index, "v1", "v2", "gone") == {"v1": "v2", "v2": None, "gone": "missing"}


def test_supersede_cannot_touch_another_patients_document(index: DocumentIndex) -> None:
    index.upsert([make_record("b1", patient_id=PATIENT_B, text="Hémoglobine")])
    index.supersede(PATIENT_A, "b1", "x")
    assert index.get(PATIENT_B, "b1").superseded_by is None  # type: ignore[union-attr]


def test_withdraw_takes_a_document_out_of_every_search_but_keeps_it(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record("v1", series_id="s", text="Hémoglobine 12"),
            make_record("v2", series_id="s", text="Hémoglobine 13"),
            make_record("other", text="Hémoglobine 14"),
        ]
    )
    index.supersede(PATIENT_A, "v1", "v2")
    at = dt.datetime(2024, 7, 1, 9, 0, tzinfo=dt.UTC)
    assert index.withdraw(PATIENT_A, "v1", at) and index.withdraw(PATIENT_A, "v2", at)

    assert ids(search(index, "hémoglobine")) == ["other"]
    assert ids(search(index, include_superseded=True)) == ["other"]
    masked = search(index, include_superseded=True, exclude_visibility=(Visibility.MASQUE_PS,))
    assert ids(masked) == ["other"]
    everything = search(index, include_superseded=True, include_withdrawn=True)
    assert sorted(ids(everything)) == ["other", "v1", "v2"]  # what account erasure reads
    kept = index.get(PATIENT_A, "v2")
    assert kept is not None and kept.withdrawn_at == at and kept.text == "Hémoglobine 13"
    versions = index.find_versions(PATIENT_A, content_sha256="0" * 64, series_id="s")
    assert {v.doc_id: v.withdrawn for v in versions} == {"v1": True, "v2": True}
    assert not index.withdraw(PATIENT_B, "v2", at)  # another patient's id changes nothing
    assert not index.withdraw(PATIENT_A, "missing", at)


def test_find_by_document_ids_matches_a_producers_ids(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record(
                "d1", producer="hopital", producer_document_id="SET-1", document_ids=("DOC-1-V1", "FILLER-9")
            ),
            make_record("d2", producer="labo", producer_document_id="DOC-1-V1"),
            make_record("d3", patient_id=PATIENT_B, producer="hopital", producer_document_id="SET-1"),
        ]
    )
    found = index.find_by_document_ids(PATIENT_A, "hopital", ["DOC-1-V1"])
    assert [v.doc_id for v in found] == ["d1"]  # not labo's d2, not patient B's d3
    assert [v.doc_id for v in index.find_by_document_ids(PATIENT_A, "hopital", ["SET-1"])] == ["d1"]
    assert index.find_by_document_ids(PATIENT_A, "hopital", ["NOPE"]) == []
    assert index.find_by_document_ids(PATIENT_A, "hopital", []) == []


def test_find_replacements_finds_the_documents_naming_a_parent(index: DocumentIndex) -> None:
    at = dt.datetime(2024, 6, 2, tzinfo=dt.UTC)
    index.upsert(
        [
            make_record("r1", producer="hopital", producer_document_id="DOC-2", refers_to=("DOC-1", "SET-0")),
            make_record("r2", producer="labo", refers_to=("DOC-1",)),
            make_record("r3", patient_id=PATIENT_B, producer="hopital", refers_to=("DOC-1",)),
            make_record("r4", producer="hopital", refers_to=("DOC-7",)),
        ]
    )
    found = index.find_replacements(PATIENT_A, "hopital", ["DOC-1"])
    assert [(v.doc_id, v.series_id) for v in found] == [("r1", "series-r1")]  # not labo's, not B's
    assert [v.doc_id for v in index.find_replacements(PATIENT_A, "hopital", ["SET-0", "DOC-7"])] == [
        "r1",
        "r4",
    ]
    assert index.find_replacements(PATIENT_A, "hopital", ["DOC-2"]) == []  # its own id, not a parent
    assert index.find_replacements(PATIENT_A, "hopital", []) == []
    assert index.withdraw(PATIENT_A, "r1", at)
    assert index.find_replacements(PATIENT_A, "hopital", ["DOC-1"])[0].withdrawn
    assert index.delete(PATIENT_A, "r1")
    assert index.find_replacements(PATIENT_A, "hopital", ["DOC-1"]) == []
    assert index.delete_patient(PATIENT_A) == ["r2", "r4"]
    assert index.find_replacements(PATIENT_A, "hopital", ["DOC-7"]) == []
    assert [v.doc_id for v in index.find_replacements(PATIENT_B, "hopital", ["DOC-1"])] == ["r3"]


def test_versions_and_replacements_at_once_answer_as_each_lookup_alone(index: DocumentIndex) -> None:
    original = make_record("v1", producer="hopital", producer_document_id="DOC-1", series_id="s-1")
    index.upsert(
        [
            original,
            make_record("v2", producer="hopital", series_id="s-1", refers_to=("DOC-1",)),
            make_record("r1", producer="hopital", series_id="s-9", refers_to=("DOC-5", "SET-5")),
            make_record("r2", producer="labo", refers_to=("DOC-5",)),
        ]
    )
    for sha, series, ids in [
        (original.content_sha256, "s-1", ["DOC-5"]),
        ("0" * 64, "s-1", ["DOC-1", "SET-5"]),
        ("0" * 64, "none", ["NOPE"]),
        (original.content_sha256, "none", []),
        ("0" * 64, "s-9", ["x" * 40_000]),  # a value no lookup matches (over the keyword cap)
    ]:
        both = index.find_versions_and_replacements(
            PATIENT_A, content_sha256=sha, series_id=series, producer="hopital", document_ids=ids
        )
        assert both == (
            index.find_versions(PATIENT_A, content_sha256=sha, series_id=series),
            index.find_replacements(PATIENT_A, "hopital", ids),
        )
    versions, replacements = index.find_versions_and_replacements(
        PATIENT_A, content_sha256="0" * 64, series_id="s-1", producer="hopital", document_ids=["DOC-5"]
    )
    assert ([v.doc_id for v in versions], [v.doc_id for v in replacements]) == (["v1", "v2"], ["r1"])
    assert index.find_versions_and_replacements(
        PATIENT_C, content_sha256="0" * 64, series_id="s-1", producer="hopital", document_ids=["DOC-5"]
    ) == ([], [])


def test_set_visibility_and_exclude_visibility(index: DocumentIndex) -> None:
    index.upsert([make_record("d1", text="Glucose"), make_record("d2", text="Glucose")])
    assert index.set_visibility(PATIENT_A, "d1", [Visibility.INVISIBLE_PATIENT])
    assert not index.set_visibility(PATIENT_A, "missing", [Visibility.MASQUE_PS])
    assert not index.set_visibility(PATIENT_B, "d1", [Visibility.MASQUE_PS])

    assert index.get(PATIENT_A, "d1").visibility == (Visibility.INVISIBLE_PATIENT,)  # type: ignore[union-attr]
    hidden = (Visibility.INVISIBLE_PATIENT,)
    assert ids(search(index, "glucose", exclude_visibility=hidden)) == ["d2"]
    assert search(index, exclude_visibility=hidden).total == 1
    assert search(index, "glucose", exclude_visibility=(Visibility.MASQUE_PS,)).total == 2
    assert search(index, "glucose").total == 2

    assert index.set_visibility(PATIENT_A, "d1", [])
    assert search(index, "glucose", exclude_visibility=hidden).total == 2


def test_delete_one_document(index: DocumentIndex) -> None:
    index.upsert([make_record("d1", text="Glucose"), make_record("d2", text="Glucose")])
    assert not index.delete(PATIENT_B, "d1")
    assert index.delete(PATIENT_A, "d1")
    assert not index.delete(PATIENT_A, "d1")
    assert index.get(PATIENT_A, "d1") is None
    assert ids(search(index, "glucose")) == ["d2"]
    assert index.count() == 1


def test_delete_patient_removes_only_that_patient(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record("a1", text="Glucose"),
            make_record("a2", text="Glucose"),
            make_record("b1", patient_id=PATIENT_B, text="Glucose"),
        ]
    )
    assert sorted(index.delete_patient(PATIENT_A)) == ["a1", "a2"]
    assert search(index, "glucose").total == 0
    assert search(index).total == 0
    assert index.get(PATIENT_A, "a1") is None
    assert [doc for _, doc, _ in index.list_ids()] == ["b1"]
    assert ids(search(index, "glucose", patient_id=PATIENT_B)) == ["b1"]
    assert index.delete_patient(PATIENT_A) == []


# -- French matching -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["hémoglobine", "hemoglobine", "Hémoglobines", "HEMOGLOBINE", "l'hémoglobine"]
)
def test_accents_case_and_plurals_match(index: DocumentIndex, query: str) -> None:
    index.upsert([make_record("hb", text=HB_TEXT), make_record("other", text="Radio du thorax")])
    assert ids(search(index, query)) == ["hb"]


def test_accented_query_finds_unaccented_text(index: DocumentIndex) -> None:
    index.upsert([make_record("cr", text="Creatinine 80 umol/L"), make_record("x", text="TSH")])
    assert ids(search(index, "créatinine")) == ["cr"]
    assert ids(search(index, "CRÉATININES")) == ["cr"]


def test_loinc_code_is_one_searchable_token(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record("in-text", text=HB_TEXT),
            make_record(
                "in-results",
                text="Bilan rénal",
                results=(LabResult(analyte="Créatinine", loinc="2160-0"),),
            ),
            make_record("neither", text="Résultat 718 puis 7 et 2160 puis 0"),
        ]
    )
    assert ids(search(index, "718-7")) == ["in-text"]
    assert ids(search(index, "2160-0")) == ["in-results"]


def test_title_analytes_and_producer_are_searchable(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record(
                "d1",
                title="Bilan martial",
                text="Voir résultats",
                results=(LabResult(analyte="Ferritine", loinc="2276-4"),),
                producer="labo-cerballiance",
            ),
            make_record("d2", title="Autre", text="Voir résultats", producer="labo-biogroup"),
        ]
    )
    assert ids(search(index, "martial")) == ["d1"]
    assert ids(search(index, "ferritine")) == ["d1"]
    assert ids(search(index, "cerballiance")) == ["d1"]


def test_all_terms_must_match(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record("both", text="Hémoglobine et glucose"),
            make_record("hb", text="Hémoglobine seule"),
            make_record("glu", text="Glucose seul"),
        ]
    )
    assert ids(search(index, "hémoglobine glucose")) == ["both"]
    assert sorted(ids(search(index, "hémoglobine"))) == ["both", "hb"]


def test_last_term_matches_as_a_prefix(index: DocumentIndex) -> None:
    index.upsert([make_record("hb", text=HB_TEXT), make_record("x", text="Radio du thorax")])
    assert ids(search(index, "hémog")) == ["hb"]
    assert ids(search(index, "glucose hémato")) == ["hb"]


def test_text_without_searchable_words_finds_nothing(index: DocumentIndex) -> None:
    index.upsert([make_record("hb", text=HB_TEXT)])
    for text in ["*", '"', "()", "le la les", "-"]:
        assert search(index, text).total == 0, text
    for blank in [None, "", "   "]:
        assert ids(search(index, blank)) == ["hb"], blank


# -- filters, ordering, paging ---------------------------------------------------------------


@pytest.fixture
def three_classes(index: DocumentIndex) -> DocumentIndex:
    index.upsert(
        [
            make_record("bio", text="Glucose", document_date=dt.date(2023, 1, 10)),
            make_record(
                "img",
                doc_class=DocClass.IMAGING,
                text="Glucose ? non : scanner",
                document_date=dt.date(2024, 2, 20),
            ),
            make_record(
                "rx",
                doc_class=DocClass.PRESCRIPTION,
                text="Glucose lecteur",
                document_date=dt.date(2024, 5, 5),
            ),
            make_record("undated", doc_class=DocClass.OTHER, text="Glucose", document_date=None),
        ]
    )
    return index


def test_filter_by_class_and_type_code(three_classes: DocumentIndex) -> None:
    index = three_classes
    assert ids(search(index, "glucose", doc_class=DocClass.IMAGING)) == ["img"]
    assert ids(search(index, doc_class=DocClass.PRESCRIPTION)) == ["rx"]
    assert ids(search(index, "glucose", type_code="11502-2")) == ["bio"]
    assert search(index, "glucose", type_code="00000-0").total == 0


def test_filter_by_doc_id(three_classes: DocumentIndex) -> None:
    index = three_classes
    assert ids(search(index, doc_id="img")) == ["img"]
    assert ids(search(index, "glucose", doc_id="rx", since=dt.date(2024, 1, 1))) == ["rx"]
    assert search(index, doc_id="rx", doc_class=DocClass.IMAGING).total == 0
    assert search(index, doc_id="absent").total == 0


def test_filter_by_allowed_classes(three_classes: DocumentIndex) -> None:
    index = three_classes
    allowed = (DocClass.BIOLOGY, DocClass.PRESCRIPTION)
    assert sorted(ids(search(index, "glucose", allowed_classes=allowed))) == ["bio", "rx"]
    assert search(index, "glucose", allowed_classes=()).total == 0
    assert search(index, allowed_classes=()).total == 0


def test_filter_by_date_range(three_classes: DocumentIndex) -> None:
    index = three_classes
    assert sorted(ids(search(index, "glucose", since=dt.date(2024, 1, 1)))) == ["img", "rx"]
    assert ids(search(index, "glucose", until=dt.date(2023, 12, 31))) == ["bio"]
    in_range = search(index, since=dt.date(2024, 2, 20), until=dt.date(2024, 2, 20))
    assert ids(in_range) == ["img"]


def test_filter_by_filing_instant_to_the_millisecond(index: DocumentIndex) -> None:
    noon = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
    index.upsert(
        [
            make_record("early", ingested_at=noon),
            make_record("late", ingested_at=noon + dt.timedelta(milliseconds=1)),
            # The same instant in another zone.
            make_record("paris", ingested_at=noon.astimezone(dt.timezone(dt.timedelta(hours=2)))),
        ]
    )
    assert sorted(ids(search(index, filed_from=noon))) == ["early", "late", "paris"]
    assert sorted(ids(search(index, filed_before=noon + dt.timedelta(milliseconds=1)))) == ["early", "paris"]
    assert ids(search(index, filed_from=noon + dt.timedelta(microseconds=1000))) == ["late"]
    assert search(index, filed_from=noon, filed_before=noon).total == 0


def test_a_change_stamps_updated_at_and_the_last_change_is_searchable(index: DocumentIndex) -> None:
    filed = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
    index.upsert([make_record("v1", series_id="s"), make_record("v2", series_id="s"), make_record("d")])
    assert index.get(PATIENT_A, "d").updated_at is None  # type: ignore[union-attr]
    before = dt.datetime.now(dt.UTC)
    assert index.set_visibility(PATIENT_A, "d", [Visibility.MASQUE_PS])
    index.apply([], [Supersede(patient_id=PATIENT_A, doc_id="v1", by_doc_id="v2")])
    stamped = {d: index.get(PATIENT_A, d).updated_at for d in ("d", "v1")}  # type: ignore[union-attr]
    assert all(at is not None and at >= before - dt.timedelta(milliseconds=1) for at in stamped.values())
    # What changes nothing stamps nothing, and a record written again keeps its mark's time.
    assert index.set_visibility(PATIENT_A, "d", [Visibility.MASQUE_PS])
    again = Supersede(patient_id=PATIENT_A, doc_id="v1", by_doc_id="v2")
    index.apply([make_record("v1", series_id="s")], [again])
    assert {d: index.get(PATIENT_A, d).updated_at for d in ("d", "v1")} == stamped  # type: ignore[union-attr]
    # _lastUpdated: the last change, else the filing.
    changed = search(index, updated_from=before - dt.timedelta(milliseconds=1), include_superseded=True)
    assert sorted(ids(changed)) == ["d", "v1"]
    as_filed = search(index, updated_before=filed + dt.timedelta(seconds=1), include_superseded=True)
    assert ids(as_filed) == ["v2"]


@pytest.mark.parametrize("text", [None, "glucose"])
def test_an_order_asked_for_lists_by_clinical_date_or_filing(index: DocumentIndex, text: str | None) -> None:
    noon = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
    index.upsert(
        [  # filed in the order old, undated, new: not the clinical dates' order
            make_record("new", text="Glucose", document_date=dt.date(2024, 5, 1), ingested_at=noon),
            make_record(
                "old",
                text="Glucose glucose glucose",
                document_date=dt.date(2020, 1, 1),
                ingested_at=noon - dt.timedelta(days=2),
            ),
            make_record(
                "undated", text="Glucose", document_date=None, ingested_at=noon - dt.timedelta(days=1)
            ),
            make_record("tie", text="Glucose", document_date=dt.date(2024, 5, 1), ingested_at=noon),
        ]
    )
    expected = {
        SearchOrder.PERIOD_DESC: ["new", "tie", "old", "undated"],
        SearchOrder.PERIOD_ASC: ["old", "new", "tie", "undated"],
        SearchOrder.FILED_DESC: ["new", "tie", "undated", "old"],
        SearchOrder.FILED_ASC: ["old", "undated", "new", "tie"],
    }
    for order, ids_in_order in expected.items():
        assert ids(search(index, text, order=order)) == ids_in_order, order
        page = search(index, text, order=order, limit=2, offset=1)
        assert (ids(page), page.total) == (ids_in_order[1:3], 4)


def test_without_text_newest_first_undated_last(three_classes: DocumentIndex) -> None:
    result = search(three_classes)
    assert ids(result) == ["rx", "img", "bio", "undated"]
    assert result.total == 4
    assert result.hits[0].date == dt.date(2024, 5, 5)
    assert result.hits[0].doc_class is DocClass.PRESCRIPTION
    assert result.hits[0].type_code == "57833-6"
    assert result.hits[3].date is None


def test_more_relevant_first(index: DocumentIndex) -> None:
    filler = " ".join(["Compte rendu d'examen sans particularité."] * 20)
    index.upsert(
        [
            make_record("weak", text=f"{filler} Ferritine à contrôler.", document_date=dt.date(2024, 6, 1)),
            make_record(
                "strong",
                title="Ferritine",
                text="Ferritine 12 µg/L, ferritine basse : carence martiale.",
                document_date=dt.date(2020, 1, 1),
            ),
        ]
    )
    result = search(index, "ferritine")
    assert ids(result) == ["strong", "weak"]
    assert result.hits[0].score > result.hits[1].score


def test_relevance_says_nothing_of_other_patients_documents(index: DocumentIndex) -> None:
    """A word's weight is counted among the documents the search may return, never the
    whole index: otherwise a patient searching a rare word of their own documents would
    read in the scores, or in their order, whether other records hold it (a surname, a
    diagnosis), hidden ones included."""
    index.upsert(
        [
            make_record("mine-1", text="Compte rendu zygomorphesque. Hémoglobine normale."),
            make_record("mine-2", text="Hémoglobine basse, ferritine, zygomorphesque zygomorphesque."),
            make_record("mine-3", title="Hémoglobine", text="Hémoglobine stable."),
        ]
    )

    def scores() -> list[tuple[str, float]]:
        hits = search(index, "zygomorphesque hémoglobine").hits
        return [(h.doc_id, round(h.score, 6)) for h in hits]

    before = scores()
    assert [d for d, _ in before] and all(s > 0 for _, s in before)
    index.upsert(
        [
            make_record(
                f"theirs-{n}",
                patient_id=PATIENT_B,
                text="zygomorphesque",
                visibility=(Visibility.INVISIBLE_PATIENT,),
            )
            for n in range(30)
        ]
        + [make_record(f"other-{n}", patient_id=PATIENT_C, text="Hémoglobine") for n in range(30)]
    )
    assert scores() == before


def test_limit_offset_and_total(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record(f"d{i}", text=f"Glucose mesure {i}", document_date=dt.date(2024, 1, 1 + i))
            for i in range(5)
        ]
    )
    index.upsert([make_record("b", patient_id=PATIENT_B, text="Glucose")])
    for text in ["glucose", None]:
        pages = [search(index, text, limit=2, offset=offset) for offset in (0, 2, 4, 6)]
        assert [p.total for p in pages] == [5, 5, 5, 5]
        assert [len(p.hits) for p in pages] == [2, 2, 1, 0]
        seen = [doc for p in pages for doc in ids(p)]
        assert sorted(seen) == [f"d{i}" for i in range(5)]
    assert ids(search(index, limit=2)) == ["d4", "d3"]


def test_snippet_highlights_the_original_words(index: DocumentIndex) -> None:
    long_intro = "Laboratoire d'analyses médicales, prélèvement au domicile du patient. " * 6
    index.upsert([make_record("hb", text=long_intro + HB_TEXT)])
    hit = search(index, "hemoglobines").hits[0]
    assert [hit.snippet[a:b] for a, b in hit.highlights] == ["Hémoglobine"]
    assert len(hit.snippet) < 300
    prefix_hit = search(index, "glucose hémato").hits[0]
    assert [prefix_hit.snippet[a:b] for a, b in prefix_hit.highlights] == ["hématocrite", "Glucose"]
    assert search(index).hits[0].snippet.startswith("Laboratoire")
    assert search(index).hits[0].highlights == ()


def test_snippet_marks_come_from_matches_never_from_the_text(index: DocumentIndex) -> None:
    text = (
        "Laboratoire du Parc\n12 rue des Lilas, 69000 Lyon\nCompte rendu de biologie\n"
        "Patiente : DURAND Claire  INS : 2 91 02 69 012 345 67\n"
        "Hémoglobine 13.5 g/dL [12.0-16.5] N\nFerritine 45 µg/L [15-150]"
    )
    index.upsert([make_record("lab", title="Compte rendu de biologie", text=text)])
    hit = search(index, "ferritine").hits[0]
    assert "[12.0-16.5]" in hit.snippet or "[15-150]" in hit.snippet, "brackets stay text"
    assert [hit.snippet[a:b] for a, b in hit.highlights] == ["Ferritine"]
    # Without a query: the content, not the letterhead nor the patient's identity line.
    plain = search(index).hits[0]
    assert plain.snippet.startswith("Hémoglobine 13.5 g/dL [12.0-16.5]") and not plain.highlights


def test_search_for_a_patient_without_documents(index: DocumentIndex) -> None:
    index.upsert([make_record("a1", text=HB_TEXT)])
    assert search(index, "hémoglobine", patient_id=PATIENT_C) == SearchResult(total=0, hits=())
    assert search(index, patient_id=PATIENT_C).total == 0


# -- per-patient isolation -----------------------------------------------------------------

CRAFTED_QUERIES = [
    "*",
    "**",
    '"',
    '"hémoglobine',
    '"" OR ""',
    "hémoglobine OR *",
    "hémoglobine OR zolpidem",
    "zolpidem",
    "zolpidem*",
    "zolpi",
    f"patient_id:{PATIENT_B}",
    f"patient_id:{PATIENT_B} OR hémoglobine",
    "patient_id:*",
    f"pat:p{PATIENT_B.lower()}",
    f'pat:"p{PATIENT_B.lower()}"',
    "pat:p2*",
    "pat:* OR body:hémoglobine",
    "{pat title meta body}:zolpidem",
    PATIENT_B,
    f"p{PATIENT_B.lower()}",
    "NEAR(hémoglobine zolpidem)",
    "NEAR(hémoglobine zolpidem, 10)",
    "hémoglobine NOT glucose",
    "(",
    ")",
    "((hémoglobine)",
    "^hémoglobine",
    "hémoglobine AND",
    "- hémoglobine",
    "+zolpidem",
    "' OR 1=1 --",
    "'; DROP TABLE documents; --",
    "\\",
    "hémoglobine " * 1000,
    "x" * 10_000,
    "",
    "\x00\x01\x1f",
    "\ud800 hémoglobine",
    "🧪💊 𝔥é𝔪𝔬 \u200b\u202e ﷽ Ωμέγα 漢字 ٣٤",
    "hémoglobine\nzolpidem\tglucose",
    "_all:* OR _id:*",
    '{"match_all": {}}',
]


@pytest.fixture
def two_patients(index: DocumentIndex) -> DocumentIndex:
    index.upsert(
        [
            make_record("a-hb", text=HB_TEXT),
            make_record("a-glu", text="Glucose 5,0 mmol/L"),
            make_record("b-hb", patient_id=PATIENT_B, text=HB_TEXT + " Zolpidem 10 mg"),
            make_record("b-rx", patient_id=PATIENT_B, text="Ordonnance : zolpidem, hémoglobine"),
        ]
    )
    return index


@pytest.mark.parametrize("text", CRAFTED_QUERIES)
def test_crafted_queries_never_leak_nor_fail(two_patients: DocumentIndex, text: str) -> None:
    result = search(two_patients, text)
    assert set(ids(result)) <= {"a-hb", "a-glu"}
    assert result.total <= 2
    assert all("zolpidem" not in hit.snippet.lower() for hit in result.hits)
    seen_by_b = search(two_patients, text, patient_id=PATIENT_B, include_superseded=True)
    assert set(ids(seen_by_b)) <= {"b-hb", "b-rx"}


def test_another_patients_words_are_not_found(two_patients: DocumentIndex) -> None:
    assert search(two_patients, "zolpidem").total == 0
    assert ids(search(two_patients, "hémoglobine")) == ["a-hb"]
    assert sorted(ids(search(two_patients, "hémoglobine", patient_id=PATIENT_B))) == [
        "b-hb",
        "b-rx",
    ]


@pytest.mark.parametrize(
    "patient_id", ["", "*", "%", PATIENT_B[:14] + "*", f"{PATIENT_A} OR 1=1", "p" + PATIENT_A]
)
def test_malformed_patient_ids_see_nothing(two_patients: DocumentIndex, patient_id: str) -> None:
    for text in [None, "hémoglobine", "*"]:
        assert search(two_patients, text, patient_id=patient_id).total == 0
    assert two_patients.get(patient_id, "a-hb") is None
    assert two_patients.find_versions(patient_id, content_sha256="*", series_id="*") == []


def test_prefix_spanning_many_index_terms(index: DocumentIndex) -> None:
    index.upsert([make_record(f"ca-{i}", text=f"Marqueur CA{100 + i}") for i in range(70)])
    assert search(index, "ca1", limit=100).total == 70
    assert sorted(ids(search(index, "marqueur ca10"))) == sorted(f"ca-{i}" for i in range(10))
    assert search(index, "ca99").total == 0


def test_a_version_replaced_by_one_the_reader_may_not_see_is_current_for_them(index: DocumentIndex) -> None:
    masked = (Visibility.MASQUE_PS,)
    index.upsert(
        [
            make_record("v1", series_id="s", text="Hémoglobine 12"),
            make_record("v2", series_id="s", text="Hémoglobine 13", visibility=masked),
            # A chain: its middle version hidden, its newest one not.
            make_record("w1", series_id="w", text="Ferritine 30"),
            make_record("w2", series_id="w", text="Ferritine 31", visibility=masked),
            make_record("w3", series_id="w", text="Ferritine 32"),
            # A correction of another class than the delegation allows.
            make_record("c1", series_id="c", text="Créatinine 80"),
            make_record("c2", series_id="c", text="Créatinine 81", doc_class=DocClass.IMAGING),
        ]
    )
    for old, new in (("v1", "v2"), ("w1", "w2"), ("w2", "w3"), ("c1", "c2")):
        index.supersede(PATIENT_A, old, new)

    # Whoever may see the newer version sees the old one superseded, as before.
    assert sorted(ids(search(index))) == ["c2", "v2", "w3"]
    assert sorted(ids(search(index, superseded_only=True))) == ["c1", "v1", "w1", "w2"]
    # For a reader the newer version is hidden from, the old one is the current one: in
    # the default listing, its total and a search by words; it is not among the superseded.
    assert sorted(ids(search(index, exclude_visibility=masked))) == ["c2", "v1", "w3"]
    assert search(index, exclude_visibility=masked).total == 3
    assert ids(search(index, "hémoglobine", exclude_visibility=masked)) == ["v1"]
    assert sorted(ids(search(index, superseded_only=True, exclude_visibility=masked))) == ["c1", "w1"]
    everything = search(index, include_superseded=True, exclude_visibility=masked)
    assert sorted(ids(everything)) == ["c1", "c2", "v1", "w1", "w3"]
    biology = (DocClass.BIOLOGY,)
    assert sorted(ids(search(index, allowed_classes=biology))) == ["c1", "v2", "w3"]
    assert sorted(ids(search(index, "créatinine", allowed_classes=biology))) == ["c1"]
    assert ids(search(index, superseded_only=True, allowed_classes=biology, doc_id="c1")) == []
    # Once the newest version of the chain is hidden too, its oldest one is current.
    index.set_visibility(PATIENT_A, "w3", masked)
    assert sorted(ids(search(index, exclude_visibility=masked))) == ["c2", "v1", "w1"]
    assert ids(search(index, "ferritine", superseded_only=True, exclude_visibility=masked)) == []


def test_a_version_current_for_its_reader_was_last_updated_when_filed_for_them(index: DocumentIndex) -> None:
    """Its supersede by a version the reader may not see stamped ``updated_at``: a
    ``_lastUpdated`` search found it by that time, telling them when a hidden version came."""
    masked = (Visibility.MASQUE_PS,)
    index.upsert(
        [
            make_record("v1", series_id="s", text="Hémoglobine 12"),
            make_record("v2", series_id="s", text="Hémoglobine 13", visibility=masked),
        ]
    )
    just_before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    index.supersede(PATIENT_A, "v1", "v2")
    filed = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)  # make_record's ingested_at
    for status in ({}, {"include_superseded": True}):
        assert ids(search(index, updated_from=just_before, include_superseded=True)) == ["v1"]
        assert ids(search(index, updated_from=just_before, exclude_visibility=masked, **status)) == []
        as_filed = search(
            index, updated_from=filed, updated_before=just_before, exclude_visibility=masked, **status
        )
        assert ids(as_filed) == ["v1"]


def test_patients_holding_names_every_record_that_holds_a_content(index: DocumentIndex) -> None:
    index.upsert(
        [
            make_record("a1", content="same"),
            make_record("b1", patient_id=PATIENT_B, content="same"),
            make_record("a2", content="only a's"),
        ]
    )
    index.supersede(PATIENT_A, "a1", "a2")
    same, only = (index.get(PATIENT_A, d).content_sha256 for d in ("a1", "a2"))  # type: ignore[union-attr]
    held = index.patients_holding([same, only, "0" * 64])
    assert held == {same: {PATIENT_A, PATIENT_B}, only: {PATIENT_A}}
    assert index.patients_holding([]) == {}
