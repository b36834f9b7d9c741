"""Airflow for the DAG tests: one throwaway ``AIRFLOW_HOME`` (SQLite) per session.

Airflow reads its configuration when it is first imported, so the environment is set
here, at collection time, before any test module imports ``airflow``. Set
``CARNET_TEST_AIRFLOW_HOME`` to reuse an already migrated home between sessions.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_run_dag() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_dag", REPO / "scripts" / "run_dag.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_dag = _load_run_dag()

if os.environ.get("CARNET_TEST_AIRFLOW_HOME"):
    AIRFLOW_HOME = Path(os.environ["CARNET_TEST_AIRFLOW_HOME"]).resolve()
else:
    AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="carnet-airflow-test-"))
    atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
os.environ.update(run_dag.airflow_env(AIRFLOW_HOME))
# The dags folder on sys.path, as Airflow puts a DAG bundle's: tests import the module the
# tasks import their settings from (carnet_settings).
if str(run_dag.DAGS_FOLDER) not in sys.path:
    sys.path.append(str(run_dag.DAGS_FOLDER))


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's Airflow home, migrated (once) and ready for ``dag.test``."""
    run_dag.ensure_migrated(AIRFLOW_HOME)
    return AIRFLOW_HOME


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def carnet_log_records() -> Iterator[list[logging.LogRecord]]:
    """The records of Carnet's loggers (``pipeline.*``, ``carnet.*``) during the test.

    Attached to those loggers, not to the root: ``dag.test`` reconfigures Airflow's
    logging (root handlers included) when a run starts, which pytest's caplog and capfd
    do not survive from one run to the next in one session.
    """
    keep = _Keep()
    loggers = [logging.getLogger(name) for name in ("pipeline", "carnet")]
    for lg in loggers:
        lg.addHandler(keep)
    try:
        yield keep.records
    finally:
        for lg in loggers:
            lg.removeHandler(keep)
