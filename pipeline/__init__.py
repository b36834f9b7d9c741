"""Carnet: ingest, identify, classify, check, keep and index personal health documents."""
