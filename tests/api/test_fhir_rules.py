"""Every cell of the confidentiality table (docs/access-rules.md) through the FHIR API, on
both index backends: the same cells and set-up as ``test_rules.py``, the asker's view read
as an app would (``DocumentReference`` search, read, and ``Binary``).
"""

from __future__ import annotations

import itertools

import pytest

from pipeline.api.fhir_resources import FHIR_JSON, INS_SYSTEM
from tests.api.conftest import Api, make_ins
from tests.api.test_rules import CELLS, DOCS, Cell, prepare, table_api  # noqa: F401 — the fixture

_serials = itertools.count(700)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_rules_table_through_fhir(table_api: Api, cell: Cell) -> None:  # noqa: F811
    a = table_api
    ins = make_ins(next(_serials), cell.born)
    asker = prepare(a, cell, ins)

    def search(**params: str) -> tuple[int, dict[str, object]]:
        r = a.get(
            asker,
            "/fhir/DocumentReference",
            params={"patient.identifier": f"{INS_SYSTEM}|{ins}", "_count": "100", **params},
        )
        assert r.headers["content-type"].startswith(FHIR_JSON)
        return r.status_code, r.json()

    status, bundle = search()
    if cell.sees is None:
        assert status == 403 and bundle["resourceType"] == "OperationOutcome"
        for name in DOCS:
            for kind in ("DocumentReference", "Binary"):
                r = a.get(asker, f"/fhir/{kind}/{ins}-{name}-{ins}")
                assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
        return
    assert status == 200, bundle

    def names(b: dict[str, object]) -> set[str]:
        entries = b.get("entry") or []
        assert isinstance(entries, list)
        return {e["resource"]["id"].removeprefix(f"{ins}-").removesuffix(f"-{ins}") for e in entries}

    assert names(bundle) == cell.sees and bundle["total"] == len(cell.sees)
    for name in DOCS:
        ref = a.get(asker, f"/fhir/DocumentReference/{ins}-{name}-{ins}")
        raw = a.get(asker, f"/fhir/Binary/{ins}-{name}-{ins}")
        if name in cell.sees:
            assert ref.status_code == 200 and ref.json()["identifier"][0]["value"] == f"{name}-{ins}"
            assert raw.status_code == 200
            assert raw.content == f"%PDF-1.4 raw {name}-{ins} compte rendu {name}".encode()
        else:
            absent = a.get(asker, f"/fhir/DocumentReference/{ins}-absent-{ins}")
            assert ref.status_code == raw.status_code == absent.status_code == 404
            assert ref.json() == raw.json() == absent.json()
    # The class filter is held to the same filters.
    _, imaging = search(category="imaging")
    assert names(imaging) == cell.sees & {"masked"}
