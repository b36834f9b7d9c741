"""Alembic migrations of the state database (run by ``pipeline.state.upgrade``)."""
