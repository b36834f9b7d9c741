"""Schema-driven fuzzing of the live API (schemathesis over ``schemas/openapi.json``).

Every operation gets generated requests, sent over real HTTP as patient A, as a
professional A authorised, and with no token. Whatever the input: no 5xx, responses
match the document, unauthenticated calls get 401, and nothing of patient B (their INS,
document ids, text, bytes) ever comes back. Bounded: a few examples per operation.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pipeline.api.openapi import SCHEMA_PATH
from pipeline.model import Visibility
from tests.api.conftest import Api, make_ins, patient, professional, running_api

A, B = make_ins(11), make_ins(12)
PRO = professional()
B_MARKER = "MARQUEURB"
B_DOCS = ("b-secret", "b-other")

# Hypothesis caches what it learns under .hypothesis/ in the working tree: not in the repo.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "carnet-hypothesis")

schema = schemathesis.openapi.from_dict(json.loads(SCHEMA_PATH.read_text()))
# Erasing A mid-run would only shrink what is fuzzed; erasure has its own tests.
schema = schema.exclude(method="DELETE", path="/patients/{ins}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    with running_api(data_dir) as api:
        api.file(A, "a-doc", text="Hémoglobine 13,5 g/dL")
        api.file(A, "a-masked", text="Compte rendu masqué", visibility=(Visibility.MASQUE_PS,))
        for doc_id in B_DOCS:
            api.file(B, doc_id, text=f"{B_MARKER} données de B", content=f"%PDF {B_MARKER} {doc_id}".encode())
        assert api.put(patient(A), f"/patients/{A}/authorisations/{PRO.subject}").status_code == 200
        yield api


def _leaks(response: httpx.Response) -> list[str]:
    body = response.content.decode("utf-8", "replace")
    return [m for m in (B, B_MARKER, *B_DOCS) if m in body]


@schema.parametrize()
@settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_no_cross_patient_data(case: schemathesis.Case, live: Api) -> None:
    # Aim half the calls at A's own record (where there is data to leak), with B's document
    # ids tried inside it.
    if "ins" in (case.path_parameters or {}):
        case.path_parameters["ins"] = A
        if "doc_id" in case.path_parameters and len(case.path_parameters["doc_id"]) % 2:
            case.path_parameters["doc_id"] = B_DOCS[0]
    checks = [response_schema_conformance, status_code_conformance, content_type_conformance]
    for who in (patient(A), PRO):
        response = case.call(base_url=live.url, headers=live.as_(who))
        assert response.status_code < 500, response.text
        case.validate_response(response, checks=checks)
        assert not _leaks(response), response.text
    anonymous = case.call(base_url=live.url)
    assert not _leaks(anonymous)
    if case.method.upper() != case.operation.method.upper():
        assert anonymous.status_code == 405  # schemathesis tries undocumented methods too
    elif anonymous.status_code not in (400, 422):  # malformed input is refused before the token is read
        assert anonymous.status_code == 401, (case.method, case.formatted_path)
