"""The JSON Schema of the document record, kept in ``schemas/`` for the index and the API.

The schema is generated from the pydantic model (the single source of truth); a test
checks that the committed file is up to date (``python -m pipeline.schema`` rewrites it).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.acks import BatchReport
from pipeline.model import DocumentRecord, Outcome

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def schemas() -> dict[str, dict[str, object]]:
    """File name → JSON Schema for each committed schema."""
    return {
        "document-record.schema.json": DocumentRecord.model_json_schema(),
        "outcome.schema.json": Outcome.model_json_schema(),
        "batch-report.schema.json": BatchReport.model_json_schema(),
    }


def render(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write_schemas(folder: Path = SCHEMAS) -> None:
    for name, schema in schemas().items():
        (folder / name).write_text(render(schema), encoding="utf-8")


if __name__ == "__main__":
    write_schemas()
