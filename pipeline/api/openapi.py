"""The API's OpenAPI document, committed as ``schemas/openapi.json``.

Regenerate after changing a route or a response model::

    .venv/bin/python -m pipeline.api.openapi

``tests/api/test_openapi.py`` fails while the committed document is out of date.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipeline.api.app import create_app
from pipeline.settings import ApiSettings, Settings

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    """The document FastAPI derives from the routes (built on a throwaway data folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        # The placeholder only satisfies the start-up check: nothing is signed or verified.
        app = create_app(
            Settings(data_dir=Path(tmp), master_key="A" * 43 + "="),
            config=ApiSettings(jwt_key="openapi-generation-only-" + "0" * 16),
        )
        try:
            return app.openapi()
        finally:
            app.state.services.close()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    SCHEMA_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
