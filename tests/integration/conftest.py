"""Helpers for the integration tests that run real Airflow services: a free port, a
REST client with a JWT from ``/auth/token`` (simple auth manager, all admins), and the
rule that such a test fails in CI (``CI=true``) when it cannot run, and skips elsewhere."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest


def unavailable(reason: str) -> None:
    """Fail in CI, skip elsewhere: CI must run every integration test."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"integration test cannot run in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AirflowApi:
    base: str
    token: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def wait_ready(self, deadline: float, alive: Any = None) -> None:
        """Wait for the API server, then take a token."""
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise AssertionError("the Airflow services exited while starting")
            try:
                r = httpx.get(f"{self.base}/auth/token", timeout=5)
                if r.status_code in (200, 201):
                    self.token = r.json()["access_token"]
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise AssertionError(f"Airflow API at {self.base} not ready in time")

    def get(self, path: str) -> httpx.Response:
        # Reads are idempotent: on a loaded 2-core machine the API server (one of several
        # Airflow processes) can stall past a timeout, so a read is tried again once.
        for attempt in range(3):
            try:
                return httpx.get(f"{self.base}/api/v2{path}", headers=self._headers(), timeout=60)
            except httpx.TimeoutException:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.base}/api/v2{path}", json=body, headers=self._headers(), timeout=60)

    def wait_dag(self, dag_id: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.get(f"/dags/{dag_id}").status_code == 200:
                return
            time.sleep(2)
        raise AssertionError(f"DAG {dag_id} not parsed in time")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        r = self.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        assert r.status_code in (200, 201), r.text
        return str(r.json()["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str, deadline: float) -> str:
        state = "?"
        while time.monotonic() < deadline:
            state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(3)
        raise AssertionError(f"run {run_id} of {dag_id} still {state} at the deadline")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        r = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        assert r.status_code == 200, r.text
        return list(r.json()["task_instances"])
