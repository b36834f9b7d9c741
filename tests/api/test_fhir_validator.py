"""The FHIR API's resources against the FHIR R4 specification, with the HL7 validation engine.

The HL7 validator CLI jar is not published on Maven Central and its R4 core package comes
from the FHIR package server, which this machine cannot reach. The same engine
(``org.hl7.fhir.validation``) is on Maven Central inside HAPI FHIR's validator, with the
R4 4.0.1 core definitions (``hapi-fhir-validation-resources-r4``): ``tests/fhir_validator/``
resolves it with Maven and runs it offline in one JVM over every kind of resource served.
A resource known to be invalid is validated too, so the check can fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.api.fhir_resources import INS_SYSTEM
from pipeline.model import Contributor, DocClass, Format, IdentitySource, Visibility
from tests.api.conftest import Api, make_ins, patient

pytestmark = pytest.mark.slow

VALIDATOR = Path(__file__).resolve().parents[1] / "fhir_validator"
A = make_ins(401)


def _tools() -> tuple[str, str]:
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if not (java and mvn):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("java and mvn are needed for the FHIR validator")
        pytest.skip("java and mvn are needed for the FHIR validator")
    return java, mvn


def _classpath(mvn: str, out: Path) -> str:
    target = out / "classpath.txt"
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(VALIDATOR / "pom.xml"),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={target}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return target.read_text().strip()


def _served_resources(api: Api) -> dict[str, object]:
    api.file(
        A,
        "hb",
        text="Hémoglobine",
        title="Bilan sanguin",
        document_date=dt.date(2024, 3, 1),
        content=b"%PDF-1.4 bilan",
        format=Format.PDF,
        author_rpps="10101234567",
        author_name="Dr Biologiste",
        type_label="Compte rendu de biologie",
    )
    api.file(
        A,
        "photo",
        doc_class=DocClass.PRESCRIPTION,
        content=b"\x89PNG\r\n\x1a\n...",
        format=Format.IMAGE,
        document_date=None,
        visibility=(Visibility.MASQUE_PS,),
    )
    api.file(
        A,
        "upload",
        doc_class=DocClass.OTHER,
        type_code=None,
        format=Format.IMAGE,
        content=b"\xff\xd8\xff photo",
        contributed_by=Contributor(role="patient", subject=A, name="Ana"),
        identity_source=IdentitySource.DECLARED_BY_PATIENT,
    )
    api.file(A, "v1", series_id="s", type_code=None)
    api.file(A, "v2", series_id="s")
    api.index.supersede(A, "v1", "v2")
    me = api.as_(patient(A))
    # An ignored parameter (_sort) adds the warning entry (search mode outcome) to check too.
    search = {
        "patient.identifier": f"{INS_SYSTEM}|{A}",
        "status": "current,superseded",
        "_count": "2",
        "_sort": "-_lastUpdated",
    }
    return {
        "bundle": api.http.get("/fhir/DocumentReference", headers=me, params=search).json(),
        "bundle-empty": api.http.get(
            "/fhir/DocumentReference", headers=me, params={"patient.identifier": A, "date": "1990"}
        ).json(),
        "document": api.http.get(f"/fhir/DocumentReference/{A}-hb", headers=me).json(),
        "superseded": api.http.get(f"/fhir/DocumentReference/{A}-v1", headers=me).json(),
        "replacing": api.http.get(f"/fhir/DocumentReference/{A}-v2", headers=me).json(),
        "photo": api.http.get(f"/fhir/DocumentReference/{A}-photo", headers=me).json(),
        "upload": api.http.get(f"/fhir/DocumentReference/{A}-upload", headers=me).json(),
        "binary": api.http.get(
            f"/fhir/Binary/{A}-hb", headers={**me, "Accept": "application/fhir+json"}
        ).json(),
        "capability": api.http.get("/fhir/metadata").json(),
        "outcome-400": api.http.get("/fhir/DocumentReference", headers=me).json(),
        "outcome-401": api.http.get("/fhir/DocumentReference").json(),
        "outcome-403": api.http.get(
            "/fhir/DocumentReference", headers=me, params={"patient.identifier": make_ins(402)}
        ).json(),
        "outcome-404": api.http.get(f"/fhir/DocumentReference/{A}-absent", headers=me).json(),
    }


def test_served_resources_are_valid_fhir_r4(api: Api, tmp_path: Path) -> None:
    java, mvn = _tools()
    classpath = _classpath(mvn, tmp_path)
    resources = _served_resources(api)
    # A control the engine must reject: an unknown status code and no content.
    resources["control-invalid"] = {"resourceType": "DocumentReference", "status": "bogus", "content": []}
    files = []
    for name, body in resources.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(body), encoding="utf-8")
        files.append(str(path))
    done = subprocess.run(
        [java, "-cp", classpath, str(VALIDATOR / "Validate.java"), *files],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        file, severity, location, message = (line.split("\t") + ["", "", ""])[:4]
        if severity in ("ERROR", "FATAL"):
            errors.setdefault(Path(file).stem, []).append(f"{location}: {message}")
    assert set(errors) == {"control-invalid"}, (errors, done.stderr[-2000:])
    assert any("bogus" in e for e in errors["control-invalid"])
