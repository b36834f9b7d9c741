"""Carnet's HTTP API (FastAPI) and the patient page it serves."""

from __future__ import annotations

from pipeline.api.app import create_app

__all__ = ["create_app"]
