#!/usr/bin/env python
"""Run a Carnet DAG once with ``dag.test()`` against a local SQLite Airflow home.

    python scripts/run_dag.py --feed <folder>            # ingest a folder feed
    python scripts/run_dag.py --feed s3://bucket/feed --airflow-home /tmp/af

The Airflow home is ``--airflow-home``, else ``$AIRFLOW_HOME``, else
``<CARNET_DATA_DIR or ./.carnet>/airflow``; ``--throwaway`` uses a temporary one that is
deleted afterwards. ``airflow db migrate`` runs only when the home was never migrated
by this Airflow version. The DAG's tasks run in this process, so ``CARNET_*`` variables
set here reach them. Exit status: 0 when the run succeeded, 1 when it failed, 2 on a
usage error. The run's summary (the ``summarize`` task's return value) is printed as
JSON on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO / "dags"
DEFAULT_DAG = "carnet_ingest"

log = logging.getLogger("run_dag")


def airflow_env(home: Path, *, log_level: str = "WARNING") -> dict[str, str]:
    """The variables that point Airflow at ``home`` (SQLite) and Carnet's dags folder."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": log_level,
        "AIRFLOW__LOGGING__FAB_LOGGING_LEVEL": "ERROR",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    }


def _migrated_marker(home: Path) -> Path:
    from importlib.metadata import version

    return home / f".carnet-migrated-{version('apache-airflow')}"


def ensure_migrated(home: Path) -> bool:
    """Run ``airflow db migrate`` on ``home`` unless it was done already; True if it ran."""
    marker = _migrated_marker(home)
    if marker.exists() and (home / "airflow.db").exists():
        return False
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **airflow_env(home)}
    started = time.monotonic()
    # A subprocess, so that the migration's logging setup stays out of this process.
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise RuntimeError(f"airflow db migrate failed in {home} (exit {done.returncode})")
    marker.touch()
    log.info("migrated Airflow database in %s (%.1f s)", home, time.monotonic() - started)
    return True


def load_dag(dag_id: str) -> Any:
    """The DAG ``dag_id`` from Carnet's dags folder; import errors are raised.

    Loaded as Airflow's DAG processor and task runner load a bundle: the dags folder on
    ``sys.path``, so that tasks import the module beside them (``carnet_settings``).
    """
    from airflow.models.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(DAGS_FOLDER), bundle_path=DAGS_FOLDER)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    if dag_id not in bag.dags:
        raise RuntimeError(f"no DAG {dag_id!r} in {DAGS_FOLDER} (found {sorted(bag.dags)})")
    return bag.dags[dag_id]


def task_return_value(dag_run: Any, task_id: str) -> Any:
    """What ``task_id`` returned in ``dag_run`` (None if it did not run)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id,
                dag_ids=dag_run.dag_id,
                task_ids=task_id,
                key="return_value",
                map_indexes=-1,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def run_dag(dag_id: str, conf: dict[str, Any], *, retries: int | None = None) -> Any:
    """Run one DAG run in-process with ``dag.test``; return the finished DagRun.

    Airflow must already be configured (``airflow_env``) before this is called.
    ``retries`` overrides every task's retries (a local run should fail fast rather than
    sleep through retry delays).
    """
    dag = load_dag(dag_id)
    if retries is not None:
        for t in dag.tasks:
            t.retries = retries
    return dag.test(run_conf=conf)


def _quiet_warnings() -> None:
    """Hide Airflow's and SQLAlchemy's deprecation chatter: it is not about Carnet."""
    import airflow  # noqa: F401  (it installs its own warning filters on import; ours go first)

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="airflow")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what is written to fd 1 during the block to stderr: Airflow logs to stdout,
    which should carry only the summary."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--feed", help="feed root: a folder or s3://bucket/prefix")
    p.add_argument("--dag", default=DEFAULT_DAG, help="DAG id (default %(default)s)")
    p.add_argument("--conf", default="{}", help="extra run conf as JSON")
    p.add_argument("--airflow-home", type=Path, help="Airflow home to use (and keep)")
    p.add_argument(
        "--throwaway", action="store_true", help="use a temporary Airflow home, deleted afterwards"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        help="retries per task for this run (default %(default)s; -1: the DAG's)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show Airflow's own logs")
    return p.parse_args(argv)


def _default_home() -> Path:
    if home := os.environ.get("AIRFLOW_HOME"):
        return Path(home)
    return Path(os.environ.get("CARNET_DATA_DIR", ".carnet")) / "airflow"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("run_dag: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        conf = json.loads(args.conf)
    except json.JSONDecodeError as exc:
        log.error("--conf is not JSON: %s", exc)
        return 2
    if args.feed:
        feed = args.feed
        if "://" not in feed:
            if not Path(feed).is_dir():
                log.error("feed folder %s does not exist", feed)
                return 2
            feed = str(Path(feed).resolve())
        conf["feed_url"] = feed

    tmp = tempfile.mkdtemp(prefix="carnet-airflow-") if args.throwaway else None
    home = Path(tmp) if tmp else (args.airflow_home or _default_home())
    home = home.resolve()
    try:
        os.environ.update(airflow_env(home, log_level="INFO" if args.verbose else "WARNING"))
        if not args.verbose:
            _quiet_warnings()
        ensure_migrated(home)
        started = time.monotonic()
        with _stdout_to_stderr():
            dag_run = run_dag(args.dag, conf, retries=None if args.retries < 0 else args.retries)
        state = str(dag_run.state)
        log.info("DAG %s run %s: %s in %.1f s", args.dag, dag_run.run_id, state, time.monotonic() - started)
        summary = task_return_value(dag_run, "summarize")
        if summary is not None:
            print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0 if state == "success" else 1
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
