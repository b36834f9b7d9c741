"""The ``index`` fixture: every contract test runs against each backend.

``sqlite`` is a throwaway file; ``elasticsearch`` needs a node
(``scripts/elasticsearch.sh start``, URL from ``CARNET_TEST_ES_URL``) and uses a
fresh alias per test, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from pipeline.index import DocumentIndex, open_index
from pipeline.model import DocClass, DocumentRecord, Format, LabResult

# Valid INS values (NIR + key 97 - NIR mod 97), one per test patient.
PATIENT_A = "185057800608491"
PATIENT_B = "279126902300169"
PATIENT_C = "160022A12345646"

TYPE_BY_CLASS = {
    DocClass.BIOLOGY: "11502-2",
    DocClass.IMAGING: "18748-4",
    DocClass.PRESCRIPTION: "57833-6",
    DocClass.OTHER: None,
}


def make_record(
    doc_id: str,
    *,
    patient_id: str = PATIENT_A,
    text: str = "",
    title: str | None = None,
    doc_class: DocClass = DocClass.BIOLOGY,
    document_date: dt.date | None = dt.date(2024, 3, 1),
    series_id: str | None = None,
    content: str | None = None,
    results: tuple[LabResult, ...] = (),
    **fields: Any,
) -> DocumentRecord:
    """A filed document with sensible defaults; ``content`` seeds the content hash."""
    sha = hashlib.sha256((content if content is not None else f"{doc_id}:{text}").encode())
    return DocumentRecord(
        doc_id=doc_id,
        series_id=series_id or f"series-{doc_id}",
        patient_id=patient_id,
        doc_class=doc_class,
        type_code=fields.pop("type_code", TYPE_BY_CLASS[doc_class]),
        type_label=fields.pop("type_label", None),
        classification_rule="test",
        classification_confidence=1.0,
        title=title if title is not None else f"Document {doc_id}",
        document_date=document_date,
        producer=fields.pop("producer", "labo-test"),
        source=f"tests/{doc_id}.txt",
        format=fields.pop("format", Format.HL7V2),
        content_sha256=sha.hexdigest(),
        text=text,
        results=results,
        ingested_at=fields.pop("ingested_at", dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)),
        **fields,
    )


@pytest.fixture
def record_factory() -> Any:
    return make_record


def _sqlite(tmp_path: Path) -> Iterator[DocumentIndex]:
    index = open_index(f"sqlite:///{tmp_path / 'index.db'}")
    yield index
    index.close()


def _elasticsearch() -> Iterator[DocumentIndex]:
    from tests.conftest import require_service

    url = require_service(
        "Elasticsearch",
        os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
        "scripts/elasticsearch.sh start",
    )
    index = open_index(url, alias=f"carnet-test-{uuid4().hex[:8]}")
    try:
        yield index
    finally:
        drop = getattr(index, "drop", None)
        if callable(drop):
            drop()
        index.close()


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocumentIndex]:
    if request.param == "sqlite":
        yield from _sqlite(tmp_path)
    else:
        yield from _elasticsearch()
