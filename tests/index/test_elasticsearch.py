"""Elasticsearch-specific behaviour beyond the shared contract: template and alias,
routing by patient, refused documents, reindexing behind the alias, unreachable nodes."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from elastic_transport import ConnectionError as NodeConnectionError
from elasticsearch import BadRequestError

from pipeline.errors import BackendUnavailable
from pipeline.index import Supersede
from pipeline.index import elasticsearch as elasticsearch_index
from pipeline.index.base import KEYWORD_MAX_CHARS
from pipeline.index.elasticsearch import TOKEN_FIELDS, ElasticsearchIndex, load_schema
from pipeline.model import DocumentRecord, LabResult, SearchQuery
from tests.conftest import require_service
from tests.index.conftest import PATIENT_A, PATIENT_B, make_record


@pytest.fixture
def es_url() -> str:
    return require_service(
        "Elasticsearch",
        os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
        "scripts/elasticsearch.sh start",
    )


@pytest.fixture
def es_index(es_url: str) -> Iterator[ElasticsearchIndex]:
    index = ElasticsearchIndex(es_url, alias=f"carnet-test-{uuid4().hex[:8]}")
    try:
        yield index
    finally:
        index.drop()
        index.close()


def test_mapping_covers_every_record_field() -> None:
    """A field added to the model must be mapped (the mapping is strict)."""
    properties = load_schema()["mappings"]["properties"]
    assert set(properties) - set(TOKEN_FIELDS) == set(DocumentRecord.model_fields)
    assert set(properties["results"]["properties"]) == set(LabResult.model_fields)


def test_unreachable_node_raises_backend_unavailable_with_the_url() -> None:
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
        ElasticsearchIndex(url, alias="carnet-unreachable")


@pytest.mark.elasticsearch
def test_template_and_alias_are_created_idempotently(es_url: str, es_index: ElasticsearchIndex) -> None:
    es_index.upsert([make_record("d1", text="Glucose")])
    again = ElasticsearchIndex(es_url, alias=es_index.alias)
    try:
        assert again.indices() == es_index.indices() == [f"{es_index.alias}-v1"]
        assert again.count() == 1
        assert again.get(PATIENT_A, "d1") is not None
    finally:
        again.close()
    client = es_index.client
    template = client.indices.get_index_template(name=es_index.template_name)
    patterns = template["index_templates"][0]["index_template"]["index_patterns"]
    assert patterns == [f"{es_index.alias}-v*"]
    mapping = client.indices.get_mapping(index=es_index.alias)[f"{es_index.alias}-v1"]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert mapping["properties"]["results"]["type"] == "nested"
    assert mapping["properties"]["body_tokens"]["analyzer"] == "whitespace"


@pytest.mark.elasticsearch
def test_documents_are_routed_by_patient(es_index: ElasticsearchIndex) -> None:
    es_index.upsert(
        [
            make_record("a1", text="Glucose"),
            make_record("b1", patient_id=PATIENT_B, text="Glucose"),
        ]
    )
    client = es_index.client
    stored = client.get(index=es_index.alias, id="a1", routing=PATIENT_A)
    assert stored["_routing"] == PATIENT_A
    assert client.get(index=es_index.alias, id="b1", routing=PATIENT_B)["_routing"] == PATIENT_B
    # Routing is required by the mapping: a write without it is refused by the cluster.
    with pytest.raises(BadRequestError, match="routing"):
        client.index(index=es_index.alias, id="x", document={"doc_id": "x"})
    # Token fields are indexed but not kept in _source (rebuilt from the record).
    assert not set(TOKEN_FIELDS) & set(stored["_source"])


@pytest.mark.elasticsearch
def test_documents_the_cluster_refuses_come_back_as_failures(
    es_index: ElasticsearchIndex,
) -> None:
    good = make_record("good", text="Hémoglobine 13")
    # A date the mapping cannot parse (pydantic bypassed, as a buggy producer path might).
    bad_date = make_record("bad-date", text="Glucose").model_construct(
        **{**make_record("bad-date").__dict__, "document_date": "le 3 mars"}
    )
    # _id is limited to 512 bytes, and the cluster fails a whole bulk request for one.
    too_long_id = make_record("x" * 600, text="Glucose")
    with pytest.warns(UserWarning, match="document_date"):  # pydantic, serialising bad_date
        failures = es_index.upsert([good, bad_date, too_long_id])

    by_id = {f.doc_id: f.message for f in failures}
    assert set(by_id) == {"bad-date", "x" * 600}
    assert "document_date" in by_id["bad-date"]
    assert "512 bytes" in by_id["x" * 600]
    assert es_index.count() == 1
    assert es_index.get(PATIENT_A, "good") == good


@pytest.mark.elasticsearch
def test_reindex_swaps_the_alias_and_search_still_works(es_index: ElasticsearchIndex) -> None:
    records = [
        make_record(f"a{i}", text=f"Hémoglobine {i}", document_date=dt.date(2024, 1, 1 + i))
        for i in range(30)
    ] + [make_record("b1", patient_id=PATIENT_B, text="Zolpidem")]
    assert es_index.upsert(records) == []
    es_index.supersede(PATIENT_A, "a0", "a1")
    before = es_index.search(SearchQuery(patient_id=PATIENT_A, text="hemoglobines", limit=50))

    old = es_index.reindex_to(f"{es_index.alias}-v2")

    assert old == [f"{es_index.alias}-v1"]
    assert es_index.indices() == [f"{es_index.alias}-v2"]
    assert es_index.count() == 31
    after = es_index.search(SearchQuery(patient_id=PATIENT_A, text="hemoglobines", limit=50))
    assert after.total == before.total == 29
    assert [h.doc_id for h in after.hits] == [h.doc_id for h in before.hits]
    assert es_index.get(PATIENT_A, "a0").superseded_by == "a1"  # type: ignore[union-attr]
    assert es_index.search(SearchQuery(patient_id=PATIENT_A, text="zolpidem")).total == 0
    stored = es_index.client.get(index=es_index.alias, id="b1", routing=PATIENT_B)
    assert stored["_index"] == f"{es_index.alias}-v2" and stored["_routing"] == PATIENT_B
    # Writes go to the new index too.
    es_index.upsert([make_record("new", text="Ferritine")])
    assert es_index.search(SearchQuery(patient_id=PATIENT_A, text="ferritine")).total == 1
    es_index.client.indices.delete(index=old)


@pytest.mark.elasticsearch
def test_an_older_mapping_gets_new_fields_on_open(es_url: str, es_index: ElasticsearchIndex) -> None:
    client = es_index.client
    client.indices.put_mapping(index=es_index.alias, meta={"version": 0})
    ElasticsearchIndex(es_url, alias=es_index.alias).close()
    mapping = client.indices.get_mapping(index=es_index.alias)[f"{es_index.alias}-v1"]["mappings"]
    assert mapping["_meta"]["version"] == load_schema()["mappings"]["_meta"]["version"]


def _keywords(properties: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, field in properties.items():
        if field.get("type") == "keyword":
            yield path + name, field
        yield from _keywords(field.get("properties", {}), f"{path}{name}.")


def test_every_keyword_field_has_a_cap_under_the_term_limit() -> None:
    """A keyword value over 32,766 bytes fails its whole document unless ``ignore_above``
    keeps it out of the terms; the lookups of both backends stop at the same length."""
    keywords = dict(_keywords(load_schema()["mappings"]["properties"]))
    assert "results.loinc" in keywords
    uncapped = [n for n, f in keywords.items() if not 0 < f.get("ignore_above", 0) <= KEYWORD_MAX_CHARS]
    assert uncapped == []
    assert KEYWORD_MAX_CHARS * 4 <= 32_766  # 4 bytes a character at most in UTF-8


@pytest.mark.elasticsearch
def test_an_index_of_uncapped_keywords_gets_the_caps_on_open(es_url: str) -> None:
    alias = f"carnet-test-{uuid4().hex[:8]}"
    probe = ElasticsearchIndex(es_url, alias=f"{alias}-probe")
    client = probe.client
    older = load_schema()
    older["mappings"]["_meta"]["version"] = 4
    for _, field in _keywords(older["mappings"]["properties"]):
        if field.get("ignore_above") == KEYWORD_MAX_CHARS:
            del field["ignore_above"]  # the mapping of version 4
    index = None
    try:
        client.indices.create(index=f"{alias}-v1", **older, aliases={alias: {"is_write_index": True}})
        index = ElasticsearchIndex(es_url, alias=alias)
        record = make_record("doc-huge", text="hémoglobine", producer_document_id="X" * 40_000)
        assert index.upsert([record]) == []
        assert index.get(PATIENT_A, "doc-huge") == record
    finally:
        if index is not None:
            index.close()
        client.indices.delete(index=f"{alias}-v1", ignore_unavailable=True)
        client.options(ignore_status=404).indices.delete_index_template(name=alias)
        probe.drop()
        probe.close()


@pytest.mark.elasticsearch
def test_an_incompatible_mapping_is_reported_on_open(es_url: str, caplog: pytest.LogCaptureFixture) -> None:
    alias = f"carnet-test-{uuid4().hex[:8]}"
    probe = ElasticsearchIndex(es_url, alias=f"{alias}-probe")
    client = probe.client
    try:
        client.indices.create(
            index=f"{alias}-v1",
            mappings={"_meta": {"version": 0}, "properties": {"doc_id": {"type": "text"}}},
            aliases={alias: {}},
        )
        with caplog.at_level(logging.WARNING):
            ElasticsearchIndex(es_url, alias=alias).close()
        assert "mapping version 0" in caplog.text and "reindex_to" in caplog.text
    finally:
        client.indices.delete(index=f"{alias}-v1", ignore_unavailable=True)
        client.indices.delete_index_template(name=alias)
        probe.drop()
        probe.close()


def _refused_by_the_cluster(doc_id: str, **fields: object) -> DocumentRecord:
    """A record whose date the mapping cannot parse (pydantic bypassed)."""
    record = make_record(doc_id, **fields)  # type: ignore[arg-type]
    return record.model_construct(**{**record.__dict__, "document_date": "le 3 mars"})


@pytest.mark.elasticsearch
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_a_new_version_the_cluster_refuses_leaves_its_old_version_unsuperseded(
    es_index: ElasticsearchIndex,
) -> None:
    assert es_index.apply([make_record("v1", series_id="s", text="Ferritine 20")], []) == []
    supersede = Supersede(patient_id=PATIENT_A, doc_id="v1", by_doc_id="v2")
    failures = es_index.apply([_refused_by_the_cluster("v2", series_id="s")], [supersede])
    assert [f.doc_id for f in failures] == ["v2"] and "document_date" in failures[0].message
    assert es_index.get(PATIENT_A, "v1").superseded_by is None  # type: ignore[union-attr]
    # The old version in the same flush: written, then its mark taken back.
    same_flush = [
        make_record("w1", series_id="t", text="Ferritine 30"),
        _refused_by_the_cluster("w2", series_id="t"),
    ]
    supersede = Supersede(patient_id=PATIENT_A, doc_id="w1", by_doc_id="w2")
    assert [f.doc_id for f in es_index.apply(same_flush, [supersede])] == ["w2"]
    assert es_index.get(PATIENT_A, "w1").superseded_by is None  # type: ignore[union-attr]
    hits = es_index.search(SearchQuery(patient_id=PATIENT_A, text="ferritine")).hits
    assert sorted(h.doc_id for h in hits) == ["v1", "w1"]


@pytest.mark.elasticsearch
def test_a_nan_result_is_refused_by_the_cluster_and_the_rest_indexed(es_index: ElasticsearchIndex) -> None:
    # pydantic would write null; the document goes as json.dumps writes it (NaN), and
    # the cluster refuses it, as it always has.
    nan = make_record(
        "nan", results=(LabResult(analyte="Ferritine", value="NaN", numeric_value=float("nan")),)
    )
    failures = es_index.apply([nan, make_record("good", text="Ferritine")], [])
    assert [f.doc_id for f in failures] == ["nan"] and "NaN" in failures[0].message
    assert es_index.count() == 1


@pytest.mark.elasticsearch
def test_a_flush_of_many_bulk_requests_is_written_whole(
    es_index: ElasticsearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(elasticsearch_index, "BULK_CHUNK", 3)
    old = [make_record(f"v{i}", series_id=f"s{i}", text=f"Ferritine {i}") for i in range(10)]
    assert es_index.apply(old, []) == []
    new = [make_record(f"w{i}", series_id=f"s{i}", text=f"Ferritine {i}") for i in range(10)]
    supersedes = [Supersede(patient_id=PATIENT_A, doc_id=f"v{i}", by_doc_id=f"w{i}") for i in range(0, 10, 2)]
    for _ in range(2):  # and a rerun, whose creates all meet their documents
        assert es_index.apply([*new, make_record("x", text="Glycémie")], supersedes) == []
        assert es_index.count() == 21
        hits = es_index.search(SearchQuery(patient_id=PATIENT_A, text="ferritine", limit=50)).hits
        assert sorted(h.doc_id for h in hits) == sorted(
            [*(f"w{i}" for i in range(10)), *(f"v{i}" for i in range(1, 10, 2))]
        )


@pytest.mark.elasticsearch
def test_a_bulk_request_failing_mid_flush_stops_the_flush(
    es_index: ElasticsearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(elasticsearch_index, "BULK_CHUNK", 2)
    real = elasticsearch_index.helpers.streaming_bulk
    sent: list[int] = []

    def failing_second(*args: Any, **kwargs: Any) -> Any:
        sent.append(len(sent) + 1)
        if len(sent) == 2:
            raise NodeConnectionError("connection reset by the node")
        return real(*args, **kwargs)

    monkeypatch.setattr(elasticsearch_index.helpers, "streaming_bulk", failing_second)
    with pytest.raises(BackendUnavailable, match="bulk request failed"):
        es_index.apply([make_record(f"d{i}", text="Ferritine") for i in range(10)], [])
    # The third chunk, queued while the second was being sent, was never sent.
    assert sent == [1, 2]
    assert es_index.count() <= 2
