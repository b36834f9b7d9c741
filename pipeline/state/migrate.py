"""Schema migrations of the state database (Alembic, revisions in ``migrations/versions``).

- ``upgrade``: bring a database to the newest revision (``carnet db upgrade``);
- ``ensure_current``: what opening the state does. The embedded SQLite database is
  upgraded on the spot (one owner, nothing to coordinate: the demo and the tests need no
  extra step). A PostgreSQL database is only checked: changing a schema that every
  worker and API replica shares is an operator's step, taken once, before the new
  version starts (older workers still running would meet tables they do not know).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = "pipeline.state:migrations"
VERSION_TABLE = "alembic_version"  # Alembic's default, where it keeps a database's revision
# One key for every process that migrates a PostgreSQL database (pg_advisory_xact_lock).
MIGRATION_LOCK = int.from_bytes(hashlib.sha256(b"carnet:state:migrate").digest()[:8], "big", signed=True)


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.attributes["connection"] = connection
    return cfg


# The newest revision this version ships, written out: every process opening the state
# checks it, and reading Alembic's scripts to find it cost 0.08 s of CPU each time.
# ``tests/state/test_migrations.py`` holds it to the scripts' head.
HEAD_REVISION = "0009"


def head_revision() -> str:
    """The newest revision this version of Carnet ships."""
    return HEAD_REVISION


def scripts_head() -> str | None:
    """The head of the revision scripts, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(versions) > 1:  # branches: Carnet's history has none
        raise ConfigurationError(f"the state database is at several revisions at once: {sorted(versions)}")
    return versions[0] if versions else None


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the database to ``revision`` in one transaction; return the revision reached."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes upgrading at once: the second waits, then finds nothing to do.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        command.upgrade(_config(conn), revision)
    return current_revision(engine)


def ensure_current(engine: Engine) -> None:
    """Make sure the schema is the one this code expects (see the module docstring)."""
    current = current_revision(engine)
    if current == head_revision():
        return
    if engine.dialect.name == "sqlite":
        upgrade(engine)
        return
    where = engine.url.render_as_string(hide_password=True)
    raise ConfigurationError(
        f"the state database {where} is at schema revision {current or 'none (empty)'}, this "
        f"Carnet needs {head_revision()}: run `carnet db upgrade` (once, before starting workers)"
    )
