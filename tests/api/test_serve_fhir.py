"""End to end as it runs for real: ``carnet ingest`` files a producer's PDF, ``carnet serve``
runs in its own process, a patient adds a photo through the API, and an app reads both
through ``/fhir`` with fhirpy."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.searchset import Raw

from pipeline.api.auth import issue_token
from pipeline.api.fhir_resources import INS_SYSTEM
from tests.api.conftest import TEST_JWT_KEY, patient
from tests.api.test_upload import PRESCRIPTION, photo
from tests.samples.make_pdf_image_samples import PATIENT_INS

pytestmark = [pytest.mark.tesseract, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "samples" / "pdf" / "biology_text.pdf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def carnet(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {
        **os.environ,
        "CARNET_DATA_DIR": str(tmp_path / "carnet"),
        "CARNET_API_JWT_KEY": TEST_JWT_KEY,
        "CARNET_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for name in ("CARNET_INDEX_URL", "CARNET_STORE_URL", "CARNET_KMS_KEY_ID"):
        env.pop(name, None)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/fhir/metadata", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            assert time.monotonic() < deadline, "carnet serve did not start"
            time.sleep(0.2)
        yield url, env
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_app_reads_through_carnet_serve_what_a_producer_and_the_patient_filed(
    carnet: tuple[str, dict[str, str]],
) -> None:
    url, env = carnet
    ingested = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", str(SAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    token = issue_token(TEST_JWT_KEY, patient(PATIENT_INS))
    bearer = {"Authorization": f"Bearer {token}"}
    added = httpx.post(
        f"{url}/patients/{PATIENT_INS}/documents",
        headers=bearer,
        files={"file": ("ordonnance.png", photo(PRESCRIPTION), "image/png")},
        timeout=120,
    )
    assert added.status_code == 200 and added.json()["files"][0]["status"] == "indexed", added.text

    fhir = SyncFHIRClient(f"{url}/fhir", authorization=f"Bearer {token}")
    found = (
        fhir.resources("DocumentReference")
        .search(Raw(**{"patient.identifier": f"{INS_SYSTEM}|{PATIENT_INS}"}))
        .fetch_all()
    )
    by_category = {r["category"][0]["coding"][0]["code"]: r for r in found}
    assert set(by_category) == {"biology", "prescription"}
    report, upload = by_category["biology"], by_category["prescription"]
    assert upload["author"][0]["identifier"]["value"] == PATIENT_INS
    # The producer's PDF comes back byte for byte through its attachment URL.
    pdf = httpx.get(report["content"][0]["attachment"]["url"], headers=bearer)
    assert pdf.status_code == 200 and pdf.content == SAMPLE.read_bytes()
    assert pdf.headers["content-type"] == "application/pdf"
    # Read one by id as an app would after a search.
    again = fhir.reference("DocumentReference", upload["id"]).to_resource()
    assert again["content"][0]["attachment"]["contentType"] == "image/png"
