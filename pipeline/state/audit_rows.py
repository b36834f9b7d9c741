"""How an audit entry sits in the ``audit_entries`` table (``pipeline.audit``), shared
by the chain and by the import of ``audit.jsonl`` files (``pipeline.state.imports``).

A row holds exactly the fields the entry's MAC covers, so the fields rebuilt from it are
the ones that were MACed, whichever storage held them before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

GENESIS = "0" * 64  # the previous MAC of the first entry
HEAD_ROW = 1
# The fields an entry may carry (as MACed); "v" and "actor_name" only when set.
_COLUMNS = (
    "v",
    "seq",
    "at",
    "actor",
    "actor_name",
    "role",
    "action",
    "patient_id",
    "doc_ids",
    "reason",
    "prev_hash",
)


def entry_row(fields: dict[str, object], mac: str) -> dict[str, object]:
    """The table row of an entry: its fields as they were MACed, the list as JSON."""
    row = {name: fields.get(name) for name in _COLUMNS}
    row["doc_ids"] = json.dumps(fields.get("doc_ids", []), ensure_ascii=False)
    return {**row, "hash": mac}


def entry_fields(row: Mapping[str, Any]) -> dict[str, object]:
    """An entry's fields back from its row, exactly as they were MACed (keys left out
    when they were: "v" of legacy entries, "actor_name" when there was none)."""
    fields = {name: row[name] for name in _COLUMNS}
    fields["doc_ids"] = json.loads(str(row["doc_ids"]))
    for optional in ("v", "actor_name"):
        if fields[optional] is None:
            del fields[optional]
    return fields
