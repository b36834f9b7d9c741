"""Index backends behind one protocol: embedded SQLite FTS5 (default) and Elasticsearch."""

from __future__ import annotations

from pipeline.errors import ConfigurationError
from pipeline.index.base import Checkpoint, DocumentIndex, ExistingVersion, IndexFailure, Supersede

__all__ = ["Checkpoint", "DocumentIndex", "ExistingVersion", "IndexFailure", "Supersede", "open_index"]


def open_index(url: str, *, alias: str = "carnet-documents") -> DocumentIndex:
    """Open the index named by ``url``: ``sqlite:///path.db`` or ``http(s)://host:9200``."""
    if url.startswith("sqlite:///"):
        from pipeline.index.sqlite import SqliteIndex

        return SqliteIndex(url.removeprefix("sqlite:///"))
    if url.startswith(("http://", "https://")):
        from pipeline.index.elasticsearch import ElasticsearchIndex

        return ElasticsearchIndex(url, alias=alias)
    raise ConfigurationError(f"unsupported index URL {url!r} (want sqlite:/// or http(s)://)")
