"""Opening the state database for the modules that keep shared state in it (access
rules, keyring, audit chain): an engine with its schema current and, on the embedded
SQLite default, the files of earlier versions imported (``pipeline.state.imports``)."""

from __future__ import annotations

from sqlalchemy import Engine

from pipeline.settings import Settings


def engine_of(state: Settings | Engine) -> tuple[Engine, bool]:
    """The engine for ``state`` and whether the caller owns it: opened here from settings
    (the caller disposes of it), or the caller's own engine (left to the caller)."""
    if isinstance(state, Engine):
        return state, False
    return open_state(state), True


def open_state(settings: Settings) -> Engine:
    """An engine on this install's state database, its schema current; the caller disposes of it."""
    from pipeline.state.engine import open_engine
    from pipeline.state.migrate import ensure_current

    engine = open_engine(settings)
    try:
        ensure_current(engine)
        if engine.dialect.name == "sqlite" and not settings.state.url:
            # The embedded default upgrades itself, files of earlier versions included.
            from pipeline.state.imports import import_legacy_files

            import_legacy_files(settings.data_dir, engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
