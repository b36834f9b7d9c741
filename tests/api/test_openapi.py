"""The committed OpenAPI document is the one the code produces."""

from __future__ import annotations

from pipeline.api.openapi import SCHEMA_PATH, openapi_document, render


def test_committed_openapi_document_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        "schemas/openapi.json is stale: run .venv/bin/python -m pipeline.api.openapi"
    )


def test_every_route_but_the_page_needs_the_bearer_token() -> None:
    doc = openapi_document()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    operations = [op for path in doc["paths"].values() for op in path.values()]
    assert len(operations) >= 20
    assert all(op.get("security") == [{"HTTPBearer": []}] for op in operations)
