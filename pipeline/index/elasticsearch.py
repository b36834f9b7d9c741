"""The production index: Elasticsearch, behind the same protocol as the embedded one.

Layout: an index template and a concrete index ``<alias>-v1`` built from
``schemas/elasticsearch/documents.json``; every read and write goes through the alias,
so :meth:`ElasticsearchIndex.reindex_to` can fill a new index and swap the alias in
one atomic step. Documents are routed by patient (``routing=patient_id``) so that a
patient's reads touch one shard, and every read is also filtered on ``patient_id`` here,
never left to callers.

Search gives the same answers as :mod:`pipeline.index.sqlite`: the record's title,
meta (analytes, LOINC codes, type, producer, author) and body are indexed as the tokens
of :func:`pipeline.analysis.analyze` in whitespace-analysed fields, and queries are the
tokens of :func:`pipeline.analysis.analyze_query` as ``term`` clauses (the last one also
as a ``prefix`` when long enough), all of which must match. User text never reaches a
query parser. Snippets come from the same :func:`pipeline.analysis.highlight`.
The analysis stays in the client, though it is two thirds of the client's CPU per
document written (bench_es_bulk): the node's analyzers cannot give the same tokens (the
minimal distribution below has no asciifolding, elision or stemmer filters, and no
analyzer has the plural rule, the one-token LOINC codes or the ligatures of
:mod:`pipeline.analysis`), and both backends must find the same documents.

The node used in tests is Elastic's minimal distribution (no analysis-common, painless or
reindex modules), so nothing here needs scripts, ``*_by_query`` or the reindex API.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

import elasticsearch
from elastic_transport import HttpHeaders, TransportError
from elasticsearch import ApiError, Elasticsearch, NotFoundError, helpers
from pydantic import BaseModel

from pipeline.analysis import analyze, analyze_query
from pipeline.errors import BackendUnavailable, ConfigurationError
from pipeline.index.base import (
    PREFIX_MIN_CHARS,
    Checkpoint,
    ExistingVersion,
    IndexFailure,
    Supersede,
    changed,
    idf,
    matchable,
    meta_text,
    patient_token,
    reader_versions,
    unseen_successors,
)
from pipeline.index.base import snippet_fields as _snippet
from pipeline.model import (
    DocClass,
    DocumentRecord,
    LabResult,
    SearchHit,
    SearchOrder,
    SearchQuery,
    SearchResult,
    Visibility,
)

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "elasticsearch" / "documents.json"
TOKEN_FIELDS = ("title_tokens", "meta_tokens", "body_tokens")
# Field weights, as the SQLite backend's bm25 column weights (title 4, meta 2, body 1).
_BOOSTS = {"title_tokens": 4.0, "meta_tokens": 2.0, "body_tokens": 1.0}
_HIT_SOURCE = ["doc_id", "doc_class", "type_code", "title", "document_date", "text"]
# The client's major version matches the server's (the pinned elasticsearch 8.x client
# speaks to 8.x nodes, which is what the Maven Central integ-test distribution provides).
SUPPORTED_MAJOR = int(elasticsearch.__versionstr__.split(".")[0])
MAX_ID_BYTES = 512  # Elasticsearch's limit on _id
MAX_RESULT_WINDOW = 10_000  # Elasticsearch's default index.max_result_window
# Longer prefixes are refused by the cluster (index.max_regex_length); no real word is
# that long, so such a last term is matched exactly instead.
MAX_PREFIX_CHARS = 1000
# Bulk requests of up to this many documents or bytes (well under the node's 100 MB
# limit): a default flush (500 records and its supersedes) goes in one. Splitting it, so
# that the client prepares one request while the node indexes another (see _bulk),
# measured no faster on the 2-core machine where they share the cores (two requests
# 3,690 docs/s, one 3,740, load 2.9) and cost both sides ~5 % more CPU; larger flushes,
# reindex_to and big upserts do overlap.
BULK_CHUNK = 1000
BULK_MAX_BYTES = 20 * 2**20
# Erasure waits this long for deleted documents to be merged away (see _expunge).
EXPUNGE_TIMEOUT_S = 120.0
EXPUNGE_POLL_S = 3.0
# Statuses that say the cluster, not the document, is the problem: the batch is retried
# by the caller instead of the document being quarantined.
_INFRA_STATUSES = frozenset({429, 500, 502, 503, 504})


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """The index settings and mappings kept in ``schemas/elasticsearch``."""
    schema = json.loads(path.read_text(encoding="utf-8"))
    return {"settings": schema["settings"], "mappings": schema["mappings"]}


def _server_major(url: str) -> int:
    """The major version of the node at ``url`` (plain JSON requests, no compat headers).

    Asks for the local node's info first: ``GET /`` lives in a module that minimal
    distributions leave out (a 405 there would also mark the node failed for a second).
    """
    probe = Elasticsearch(url, request_timeout=10)
    headers = HttpHeaders({"accept": "application/json"})
    try:
        response = probe.transport.perform_request(
            "GET", "/_nodes/_local?filter_path=nodes.*.version", headers=headers, max_retries=0
        )
        if response.meta.status == 200:
            version = next(iter(response.body["nodes"].values()))["version"]
        else:  # e.g. serverless, where /_nodes does not exist
            response = probe.transport.perform_request("GET", "/", headers=headers, max_retries=0)
            version = response.body["version"]["number"]
        return int(str(version).split(".")[0])
    except TransportError as exc:
        raise BackendUnavailable(f"Elasticsearch unreachable: {exc}", index=url) from exc
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise BackendUnavailable(
            f"not an Elasticsearch node (no version in its answer: HTTP {response.meta.status})",
            index=url,
        ) from exc
    finally:
        probe.close()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reachable(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a lost connection, a timeout or a node answering 5xx (shutting down, no master)
    into :class:`BackendUnavailable` (run stops).

    API errors (HTTP 4xx) are not translated: they are bugs here, not an outage.
    """

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except TransportError as exc:
            url = getattr(args[0], "url", None)
            raise BackendUnavailable(f"Elasticsearch unreachable: {exc}", index=url) from exc
        except ApiError as exc:
            if exc.meta.status < 500:
                raise
            url = getattr(args[0], "url", None)
            raise BackendUnavailable(f"Elasticsearch failed: {exc}", index=url) from exc

    return wrapper


def _tokens(record: DocumentRecord) -> dict[str, str]:
    """The record's analysed token fields (what the cluster indexes for search)."""
    return {
        "title_tokens": " ".join(analyze(record.title)),
        "meta_tokens": " ".join(analyze(meta_text(record))),
        "body_tokens": " ".join(analyze(record.text)),
    }


def _source(record: DocumentRecord) -> dict[str, Any]:
    """The stored document: the record as JSON plus its analysed tokens."""
    source: dict[str, Any] = record.model_dump(mode="json")
    source.update(_tokens(record))
    return source


def _floats(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(
        name for name, field in model.model_fields.items() if field.annotation in (float, float | None)
    )


_RECORD_FLOATS = _floats(DocumentRecord)
_RESULT_FLOATS = _floats(LabResult)


def _all_finite(record: DocumentRecord) -> bool:
    values = [getattr(record, name) for name in _RECORD_FLOATS]
    values += [getattr(result, name) for result in record.results for name in _RESULT_FLOATS]
    return all(v is None or math.isfinite(v) for v in values)


def _source_json(record: DocumentRecord) -> bytes | dict[str, Any]:
    """:func:`_source` as the bulk body's line, the record serialised by pydantic (a quarter
    of the client's ``json.dumps`` of the same dict), the tokens appended.

    A record holding a NaN or an infinity stays a dict: pydantic would write ``null``, where
    ``json.dumps`` writes ``NaN``, which the cluster refuses as it always has.
    """
    if not _all_finite(record):
        return _source(record)
    tokens = json.dumps(_tokens(record), ensure_ascii=False, separators=(",", ":")).encode()
    return record.__pydantic_serializer__.to_json(record)[:-1] + b"," + tokens[1:]


_VERSION_FIELDS = ("doc_id", "series_id", "content_sha256", "superseded_by", "withdrawn_at")


def _same_content_or_series(content_sha256: str, series_id: str) -> dict[str, Any]:
    should = [{"term": {"content_sha256": content_sha256}}, {"term": {"series_id": series_id}}]
    return {"bool": {"should": should, "minimum_should_match": 1}}


def _naming_as_parent(producer: str, ids: Sequence[str]) -> dict[str, Any]:
    return {"bool": {"filter": [{"term": {"producer": producer}}, {"terms": {"refers_to": list(ids)}}]}}


def _versions_search(patient_id: str, query: dict[str, Any]) -> dict[str, Any]:
    """The search body of a versions lookup: ``query`` (a bool query) among this patient's
    documents, only the fields an ``ExistingVersion`` holds."""
    query["bool"].setdefault("filter", []).insert(0, {"term": {"patient_id": patient_id}})
    return {
        "query": query,
        "_source": {"includes": list(_VERSION_FIELDS)},
        "sort": [{"doc_id": "asc"}],
        "size": MAX_RESULT_WINDOW,
    }


def _versions(response: Mapping[str, Any]) -> list[ExistingVersion]:
    return [
        ExistingVersion(
            doc_id=s["doc_id"],
            series_id=s["series_id"],
            content_sha256=s["content_sha256"],
            superseded_by=s.get("superseded_by"),
            withdrawn=s.get("withdrawn_at") is not None,
        )
        for s in (hit["_source"] for hit in response["hits"]["hits"])
    ]


def _record(source: Mapping[str, Any]) -> DocumentRecord:
    return DocumentRecord.model_validate({k: v for k, v in source.items() if k not in TOKEN_FIELDS})


class _BulkResult(NamedTuple):
    """What the cluster refused, and the ``create`` actions it refused as already there."""

    failures: list[IndexFailure]
    existing: set[str]


def _error_message(error: object) -> str:
    if isinstance(error, Mapping):
        reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, Mapping):
            reason += f" (caused by {cause.get('type')}: {cause.get('reason')})"
        return reason
    return str(error)


class ElasticsearchIndex:
    """The Elasticsearch :class:`~pipeline.index.base.DocumentIndex`, reached through ``alias``."""

    def __init__(self, url: str, alias: str = "carnet-documents", *, timeout_s: float = 30.0) -> None:
        if not alias or alias != alias.lower() or any(c in alias for c in ' "*\\/<>|,?#:'):
            raise ConfigurationError(f"invalid Elasticsearch alias {alias!r}")
        self.url = url
        self.alias = alias
        self.server_major = _server_major(url)
        if self.server_major != SUPPORTED_MAJOR:
            raise BackendUnavailable(
                f"Elasticsearch {self.server_major}.x found; this Carnet uses the "
                f"{SUPPORTED_MAJOR}.x client (the client's major version must match the server's)",
                index=url,
            )
        self._es = Elasticsearch(
            url,
            request_timeout=timeout_s,
            max_retries=3,
            retry_on_timeout=True,
        )
        self._schema = load_schema()
        try:
            self._ensure_index()
        except (ApiError, TransportError) as exc:
            self._es.close()
            raise BackendUnavailable(f"cannot set up index {alias}: {exc}", index=url) from exc

    # -- set-up ---------------------------------------------------------------------------

    @property
    def client(self) -> Elasticsearch:
        """The underlying client (admin tasks and tests; reads should go through the alias)."""
        return self._es

    @property
    def template_name(self) -> str:
        return self.alias

    def _ensure_index(self) -> None:
        """Install the template and, when the alias is missing, ``<alias>-v1`` behind it."""
        self._es.indices.put_index_template(
            name=self.template_name,
            index_patterns=[f"{self.alias}-v*"],
            template=self._schema,
            priority=100,
            meta={"managed_by": "carnet", "alias": self.alias},
        )
        if self._es.indices.exists_alias(name=self.alias):
            self._check_mapping_version()
            return
        first = f"{self.alias}-v1"
        try:
            self._es.indices.create(index=first, aliases={self.alias: {"is_write_index": True}})
            log.info("created index %s behind alias %s", first, self.alias)
        except ApiError as exc:
            # Another process created it between our check and our call: fine.
            if exc.error != "resource_already_exists_exception":
                raise
            if not self._es.indices.exists_alias(name=self.alias):
                self._es.indices.put_alias(index=first, name=self.alias)

    def _check_mapping_version(self) -> None:
        """Bring older indices behind the alias up to ``schemas/elasticsearch``.

        New fields are added in place; a change the cluster refuses (a field's type)
        is logged: it takes :meth:`reindex_to`.
        """
        wanted = self._schema["mappings"].get("_meta", {}).get("version")
        for name, body in self._es.indices.get_mapping(index=self.alias).body.items():
            found = body["mappings"].get("_meta", {}).get("version")
            if found == wanted:
                continue
            try:
                self._es.indices.put_mapping(index=name, **self._schema["mappings"])
                log.info("index %s mapping updated from version %s to %s", name, found, wanted)
            except ApiError as exc:
                log.warning(
                    "index %s has mapping version %s, schema has %s, and cannot be updated "
                    "in place (%s): run reindex_to()",
                    name,
                    found,
                    wanted,
                    exc.message,
                )

    def indices(self) -> list[str]:
        """The concrete indices behind the alias."""
        try:
            return sorted(self._es.indices.get_alias(name=self.alias).body)
        except NotFoundError:
            return []

    def rebuild(self, version: str) -> dict[str, object]:
        """Copy into ``<alias>-<version>`` and move the alias there (``reindex_to``)."""
        new = f"{self.alias}-{version}"
        old = self.reindex_to(new)
        return {"backend": "elasticsearch", "new_index": new, "previous": old, "documents": self.count()}

    @_reachable
    def reindex_to(self, new_index: str) -> list[str]:
        """Copy every document into ``new_index`` (re-analysed), then swap the alias to it.

        Readers see the old index until the one atomic alias update. Writes made during
        the copy land in the old index only: pause ingestion while this runs. Returns the
        indices that were behind the alias (kept: delete them once the new one is checked).
        """
        old = self.indices()
        if new_index in old:
            raise ConfigurationError(f"{new_index} is already behind alias {self.alias}")
        self._es.indices.create(index=new_index, **self._schema)
        actions = (
            self._action(_record(hit["_source"]), index=new_index)
            for hit in helpers.scan(self._es, index=self.alias, query={"query": {"match_all": {}}})
        )
        failures = self._bulk(actions).failures
        if failures:
            raise BackendUnavailable(
                f"reindex into {new_index} refused {len(failures)} documents "
                f"(first: {failures[0].doc_id}: {failures[0].message}); alias left on {old}",
                index=self.url,
            )
        self._es.indices.refresh(index=new_index)
        swap: list[dict[str, Any]] = [{"remove": {"index": name, "alias": self.alias}} for name in old]
        swap.append({"add": {"index": new_index, "alias": self.alias, "is_write_index": True}})
        self._es.indices.update_aliases(actions=swap)
        log.info("alias %s moved from %s to %s", self.alias, old, new_index)
        return old

    @_reachable
    def drop(self) -> None:
        """Delete the alias's indices and template (tests, decommissioning)."""
        for name in self.indices():
            self._es.indices.delete(index=name, ignore_unavailable=True)
        try:
            self._es.indices.delete_index_template(name=self.template_name)
        except NotFoundError:
            pass

    # -- writes ---------------------------------------------------------------------------

    def _action(
        self, record: DocumentRecord, *, index: str | None = None, op: str = "index"
    ) -> dict[str, Any]:
        return {
            "_op_type": op,
            "_index": index or self.alias,
            "_id": record.doc_id,
            "_routing": record.patient_id,
            "_source": _source_json(record),
        }

    def _bulk(
        self, actions: Iterable[dict[str, Any]], sender: ThreadPoolExecutor | None = None
    ) -> _BulkResult:
        """Send ``actions`` in chunks (429s retried with backoff); per-document refusals.

        ``actions`` may be a generator: it is read here, a chunk at a time, while the
        previous chunk is on its way in ``sender``'s thread (one request in flight; that
        thread mostly waits on the socket), so the client analyses and serialises the next
        chunk while the node indexes this one, and holds at most two chunks.
        """
        result = _BulkResult([], set())
        overloaded: list[str] = []

        def send(chunk: list[dict[str, Any]]) -> list[tuple[bool, dict[str, Any]]]:
            return list(
                helpers.streaming_bulk(
                    self._es,
                    chunk,
                    chunk_size=len(chunk),
                    max_chunk_bytes=BULK_MAX_BYTES,
                    raise_on_error=False,
                    max_retries=3,
                    initial_backoff=1,
                    max_backoff=30,
                )
            )

        def collect(items: list[tuple[bool, dict[str, Any]]]) -> None:
            for ok, item in items:
                if ok:
                    continue
                op, answer = next(iter(item.items()))
                doc_id, status = str(answer.get("_id")), int(answer.get("status", 0))
                if status in _INFRA_STATUSES:
                    overloaded.append(doc_id)
                elif op == "create" and status == 409:
                    result.existing.add(doc_id)
                else:
                    message = _error_message(answer.get("error"))
                    result.failures.append(IndexFailure(doc_id=doc_id, message=message))

        own = sender is None
        sender = sender or ThreadPoolExecutor(max_workers=1, thread_name_prefix="carnet-bulk")
        in_flight: deque[Future[list[tuple[bool, dict[str, Any]]]]] = deque()
        try:
            pending = iter(actions)
            while chunk := list(itertools.islice(pending, BULK_CHUNK)):
                in_flight.append(sender.submit(send, chunk))
                if len(in_flight) > 1:
                    collect(in_flight.popleft().result())
            while in_flight:
                collect(in_flight.popleft().result())
        except (ApiError, TransportError) as exc:
            raise BackendUnavailable(f"Elasticsearch bulk request failed: {exc}", index=self.url) from exc
        finally:
            # After a failed request nothing more is sent: the chunk queued is dropped, the
            # one being sent waited for, so no write lands after this method has returned.
            for future in in_flight:
                future.cancel()
            wait(in_flight)
            if own:
                sender.shutdown()
        if overloaded:
            raise BackendUnavailable(
                f"cluster refused {len(overloaded)} documents as overloaded after retries "
                f"(first {overloaded[0]}); retry the batch",
                index=self.url,
            )
        return result

    @_reachable
    def upsert(self, records: Sequence[DocumentRecord]) -> list[IndexFailure]:
        failures, valid = self._valid(records)
        if valid:
            failures += self._bulk(self._actions(valid, failures)).failures
            # Visible to reads before we return (one refresh per batch, not per document).
            self._refresh()
        return failures

    @_reachable
    def apply(
        self,
        records: Sequence[DocumentRecord],
        supersedes: Sequence[Supersede],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> list[IndexFailure]:
        """New versions and the supersede of the old ones in the same bulk request (a flush
        of more than ``BULK_CHUNK`` records: the supersedes in its last one), then one refresh.

        A version chain never goes back: a record whose stored document is already
        superseded keeps that mark. Rather than reading every record's stored document
        first, a record is sent as ``create``: one already there answers 409 (a rerun, a
        document ingested again), and only those are read and written again, keeping the
        mark. The old versions to mark are read while the first chunks are analysed.

        A bulk request is not a transaction: a node dying halfway leaves part of it
        applied, which is why the caller journals the flush and a rerun sends it again.
        """
        failures, valid = self._valid(records)
        refused = {f.doc_id for f in failures}
        wanted = {s.doc_id: s for s in supersedes if s.by_doc_id not in refused}
        by_id = {r.doc_id: r for r in valid}
        targets: dict[str, tuple[dict[str, Any], int, int]] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="carnet-bulk") as sender:
            # The old versions as stored (those in this flush too: what to put back if their
            # new version is refused), read first in the sender's queue: before any chunk of
            # this flush is written, while the first one is being prepared.
            read = sender.submit(self._mget, [(s.patient_id, s.doc_id) for s in wanted.values()])

            def actions() -> Iterator[dict[str, Any]]:
                for record in valid:
                    if record.doc_id in wanted:  # the old version is in this flush too
                        marked = self._marked(record, wanted[record.doc_id].by_doc_id, read.result())
                        yield from self._actions([marked], failures)
                    elif record.superseded_by is not None:
                        yield from self._actions([record], failures)
                    else:
                        yield from self._actions([record], failures, op="create")
                # The supersedes come last, once every new version has been serialised
                # (one refused here leaves its old one alone).
                unsent = {f.doc_id for f in failures}
                current = read.result()
                for s in wanted.values():
                    if s.doc_id in by_id or s.by_doc_id in unsent:
                        continue
                    found = current.get(s.doc_id)
                    if found is None:
                        log.warning("supersede: no document %s for this patient", s.doc_id)
                        continue
                    targets[s.doc_id] = found
                    old = changed(_record(found[0]), {"superseded_by": s.by_doc_id})
                    yield {**self._action(old), "if_seq_no": found[1], "if_primary_term": found[2]}

            sent = self._bulk(actions(), sender) if valid or wanted else _BulkResult([], set())
            bulk_failures = sent.failures
            if sent.existing:
                again = [by_id[d] for d in sorted(sent.existing)]
                stored = self._mget(
                    [(r.patient_id, r.doc_id) for r in again], source=["superseded_by", "updated_at"]
                )
                again = [  # the mark of the version that replaced it kept, and when
                    r.model_copy(
                        update={
                            "superseded_by": stored[r.doc_id][0].get("superseded_by"),
                            "updated_at": _instant(stored[r.doc_id][0].get("updated_at")),
                        }
                    )
                    if r.doc_id in stored
                    else r
                    for r in again
                ]
                bulk_failures += self._bulk(self._actions(again, failures), sender).failures
        refused = {f.doc_id for f in failures}
        lost_race = [f for f in bulk_failures if f.doc_id in targets]
        failures += [f for f in bulk_failures if f.doc_id not in targets]
        for f in lost_race:  # the old version changed since it was read (visibility…): again
            s = wanted[f.doc_id]
            self._update(s.patient_id, s.doc_id, {"superseded_by": s.by_doc_id})
        # A new version the cluster refused must not leave its predecessor hidden.
        current = read.result()
        for f in failures:
            for s in wanted.values():
                if s.by_doc_id == f.doc_id and s.doc_id not in refused:
                    previous = current.get(s.doc_id)
                    self._update(
                        s.patient_id,
                        s.doc_id,
                        {"superseded_by": previous[0].get("superseded_by") if previous else None},
                    )
        if checkpoint:
            checkpoint("after_index_write")
        if valid or targets:
            self._refresh()  # once per flush: what it wrote is searchable when it returns
        if checkpoint and supersedes:
            checkpoint("after_supersede")
        return failures

    @staticmethod
    def _marked(
        record: DocumentRecord, by_doc_id: str, stored: dict[str, tuple[dict[str, Any], int, int]]
    ) -> DocumentRecord:
        """``record`` superseded by ``by_doc_id``: when it is stored so already (a rerun), as
        stored, its ``updated_at`` kept; else stamped now."""
        found = stored.get(record.doc_id)
        if found is not None and found[0].get("superseded_by") == by_doc_id:
            updated_at = _instant(found[0].get("updated_at"))
            return record.model_copy(update={"superseded_by": by_doc_id, "updated_at": updated_at})
        return changed(record, {"superseded_by": by_doc_id})

    def _mget(
        self, keys: list[tuple[str, str]], *, source: list[str] | None = None
    ) -> dict[str, tuple[dict[str, Any], int, int]]:
        """doc id → (source, seq_no, primary_term) of the ``(patient, doc id)`` found
        (``source``: only these fields of it)."""
        keys = [(p, d) for p, d in keys if patient_token(p) is not None and d]
        if not keys:
            return {}
        fields = None if source is None else ["patient_id", *source]
        response = self._es.mget(
            index=self.alias,
            docs=[{"_id": d, "routing": p} for p, d in keys],
            source_includes=fields,
        )
        found: dict[str, tuple[dict[str, Any], int, int]] = {}
        for (patient, doc_id), doc in zip(keys, response["docs"], strict=True):
            if doc.get("found") and doc["_source"].get("patient_id") == patient:
                found[doc_id] = (doc["_source"], doc["_seq_no"], doc["_primary_term"])
        return found

    def _valid(self, records: Sequence[DocumentRecord]) -> tuple[list[IndexFailure], list[DocumentRecord]]:
        """Records the cluster would refuse (checked here) and the others."""
        failures: list[IndexFailure] = []
        valid: list[DocumentRecord] = []
        for record in records:
            if patient_token(record.patient_id) is None:
                message = f"patient id {record.patient_id!r} is not a 15-character INS"
                failures.append(IndexFailure(doc_id=record.doc_id, message=message))
            elif not record.doc_id:
                failures.append(IndexFailure(doc_id=record.doc_id, message="empty doc_id"))
            elif len(record.doc_id.encode()) > MAX_ID_BYTES:
                # Checked here: the cluster fails the whole bulk request for one such id.
                message = f"doc_id is longer than {MAX_ID_BYTES} bytes"
                failures.append(IndexFailure(doc_id=record.doc_id, message=message))
            else:
                valid.append(record)
        return failures, valid

    def _actions(
        self, records: Sequence[DocumentRecord], failures: list[IndexFailure], *, op: str = "index"
    ) -> Iterator[dict[str, Any]]:
        """Each record's bulk action, built as the bulk helper asks for it; the records
        that cannot be serialised go to ``failures`` instead."""
        for record in records:
            try:
                action = self._action(record, op=op)
            except ValueError as exc:  # a record pydantic cannot serialise
                failures.append(IndexFailure(doc_id=record.doc_id, message=str(exc)))
                continue
            yield action

    def _refresh(self) -> None:
        try:
            self._es.indices.refresh(index=self.alias)
        except (ApiError, TransportError) as exc:
            raise BackendUnavailable(f"refresh failed: {exc}", index=self.url) from exc

    def _fetch(self, patient_id: str, doc_id: str) -> tuple[dict[str, Any], int, int] | None:
        """(source, seq_no, primary_term) of this patient's document, or None."""
        if patient_token(patient_id) is None or not doc_id:
            return None
        try:
            response = self._es.get(index=self.alias, id=doc_id, routing=patient_id)
        except NotFoundError:
            return None
        source = response["_source"]
        if source.get("patient_id") != patient_id:
            return None
        return source, response["_seq_no"], response["_primary_term"]

    def _update(self, patient_id: str, doc_id: str, changes: dict[str, Any]) -> bool:
        """Rewrite one stored record with ``changes``; False if this patient has no such doc.

        A whole-document write, not a partial ``update``: the token fields are left out of
        ``_source``, so an update merged from ``_source`` would drop them.
        """
        found = self._fetch(patient_id, doc_id)
        if found is None:
            return False
        source, seq_no, primary_term = found
        record = changed(_record(source), changes)
        # Conditional on the version read, so a concurrent re-upsert is not overwritten.
        self._es.index(
            index=self.alias,
            id=doc_id,
            routing=patient_id,
            document=_source(record),
            if_seq_no=seq_no,
            if_primary_term=primary_term,
            refresh=True,
        )
        return True

    @_reachable
    def supersede(self, patient_id: str, doc_id: str, by_doc_id: str) -> None:
        if not self._update(patient_id, doc_id, {"superseded_by": by_doc_id}):
            log.warning("supersede: no document %s for this patient", doc_id)

    @_reachable
    def withdraw(self, patient_id: str, doc_id: str, at: dt.datetime) -> bool:
        return self._update(patient_id, doc_id, {"withdrawn_at": at})

    @_reachable
    def set_visibility(self, patient_id: str, doc_id: str, visibility: Sequence[Visibility]) -> bool:
        flags = tuple(dict.fromkeys(Visibility(v) for v in visibility))
        return self._update(patient_id, doc_id, {"visibility": flags})

    @_reachable
    def delete(self, patient_id: str, doc_id: str) -> bool:
        found = self._fetch(patient_id, doc_id)
        if found is None:
            return False
        try:
            self._es.delete(index=self.alias, id=doc_id, routing=patient_id, refresh=True)
        except NotFoundError:
            return False
        return True

    @_reachable
    def delete_patient(self, patient_id: str) -> list[str]:
        if patient_token(patient_id) is None:
            return []
        doc_ids = [
            hit["_id"]
            for hit in helpers.scan(
                self._es,
                index=self.alias,
                routing=patient_id,
                query={"query": {"bool": {"filter": [{"term": {"patient_id": patient_id}}]}}},
                _source=False,
            )
        ]
        actions = [
            {"_op_type": "delete", "_index": self.alias, "_id": d, "_routing": patient_id} for d in doc_ids
        ]
        deleted: list[str] = []
        for ok, item in helpers.streaming_bulk(
            self._es, actions, chunk_size=BULK_CHUNK, raise_on_error=False, max_retries=3
        ):
            result = item["delete"]
            if ok:
                deleted.append(result["_id"])
            elif result.get("status") != 404:
                raise BackendUnavailable(
                    f"could not delete {result['_id']}: {_error_message(result.get('error'))}",
                    index=self.url,
                )
        if actions:
            self._refresh()
            self._expunge()
        return sorted(deleted)

    def _expunge(self, timeout_s: float = EXPUNGE_TIMEOUT_S) -> bool:
        """Erasure: a delete only marks documents; flush, then merge away the segments'
        deleted documents so their source and terms leave the shard's files.

        Soft-deleted documents stay while a shard's retention lease covers them; the lease
        moves past them at its next sync (30 s by default), so the merge is retried until
        no deleted document is left or ``timeout_s`` passes. Returns whether it got there.
        """
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                self._es.indices.flush(index=self.alias, force=True, wait_if_ongoing=True)
                self._es.indices.forcemerge(index=self.alias, only_expunge_deletes=True)
                stats = self._es.indices.stats(index=self.alias, metric="docs")
                if int(stats["_all"]["primaries"]["docs"]["deleted"]) == 0:
                    return True
                if time.monotonic() > deadline:
                    log.error(
                        "deleted documents still in %s after %.0f s: run a force merge later",
                        self.alias,
                        timeout_s,
                    )
                    return False
                time.sleep(EXPUNGE_POLL_S)
        except (ApiError, TransportError) as exc:
            raise BackendUnavailable(f"expunge of deleted documents failed: {exc}", index=self.url) from exc

    # -- reads ----------------------------------------------------------------------------

    @_reachable
    def get(self, patient_id: str, doc_id: str) -> DocumentRecord | None:
        found = self._fetch(patient_id, doc_id)
        return None if found is None else _record(found[0])

    def _versions_where(self, patient_id: str, query: dict[str, Any]) -> list[ExistingVersion]:
        """The versions ``query`` (a bool query) finds among this patient's documents."""
        body = _versions_search(patient_id, query)
        response = self._es.search(
            index=self.alias,
            routing=patient_id,
            query=body["query"],
            source_includes=list(_VERSION_FIELDS),
            sort=body["sort"],
            size=body["size"],
        )
        return _versions(response.body)

    @_reachable
    def find_versions(self, patient_id: str, *, content_sha256: str, series_id: str) -> list[ExistingVersion]:
        if patient_token(patient_id) is None:
            return []
        return self._versions_where(patient_id, _same_content_or_series(content_sha256, series_id))

    @_reachable
    def find_by_document_ids(
        self, patient_id: str, producer: str, document_ids: Sequence[str]
    ) -> list[ExistingVersion]:
        ids = [i for i in document_ids if matchable(i)]  # a longer term is a 400 here
        if patient_token(patient_id) is None or not ids:
            return []
        query = {
            "bool": {
                "filter": [{"term": {"producer": producer}}],
                "should": [{"terms": {"producer_document_id": ids}}, {"terms": {"document_ids": ids}}],
                "minimum_should_match": 1,
            }
        }
        return self._versions_where(patient_id, query)

    @_reachable
    def find_replacements(
        self, patient_id: str, producer: str, document_ids: Sequence[str]
    ) -> list[ExistingVersion]:
        ids = [i for i in document_ids if matchable(i)]
        if patient_token(patient_id) is None or not ids:
            return []
        return self._versions_where(patient_id, _naming_as_parent(producer, ids))

    @_reachable
    def find_versions_and_replacements(
        self,
        patient_id: str,
        *,
        content_sha256: str,
        series_id: str,
        producer: str,
        document_ids: Sequence[str],
    ) -> tuple[list[ExistingVersion], list[ExistingVersion]]:
        ids = [i for i in document_ids if matchable(i)]
        if patient_token(patient_id) is None:
            return [], []
        if not ids:
            return self.find_versions(patient_id, content_sha256=content_sha256, series_id=series_id), []
        # One _msearch: the two lookups cost one round trip to the cluster, not two (a
        # document with ids of its own asks both before it is filed: most of a lab feed).
        header = {"index": self.alias, "routing": patient_id}
        queries = [_same_content_or_series(content_sha256, series_id), _naming_as_parent(producer, ids)]
        response = self._es.msearch(
            searches=[part for q in queries for part in (header, _versions_search(patient_id, q))]
        )
        answers = response.body["responses"]
        for answer in answers:
            if "error" in answer:  # as ``_reachable`` takes the search API's errors
                status = int(answer.get("status", 500))
                if status >= 500:
                    raise BackendUnavailable(f"Elasticsearch failed: {answer['error']}", index=self.url)
                raise RuntimeError(f"Elasticsearch refused a versions lookup ({status}): {answer['error']}")
        return _versions(answers[0]), _versions(answers[1])

    @_reachable
    def list_ids(self) -> list[tuple[str, str, str]]:
        rows = [
            (hit["_source"]["patient_id"], hit["_source"]["doc_id"], hit["_source"]["content_sha256"])
            for hit in helpers.scan(
                self._es,
                index=self.alias,
                query={"query": {"match_all": {}}},
                _source=["patient_id", "doc_id", "content_sha256"],
            )
        ]
        return sorted(rows)

    @_reachable
    def patients_holding(self, content_sha256s: Sequence[str]) -> dict[str, set[str]]:
        held: dict[str, set[str]] = {}
        wanted = sorted({s for s in content_sha256s if matchable(s)})
        for i in range(0, len(wanted), 1000):
            for hit in helpers.scan(
                self._es,
                index=self.alias,
                query={"query": {"terms": {"content_sha256": wanted[i : i + 1000]}}},
                _source=["patient_id", "content_sha256"],
            ):
                source = hit["_source"]
                held.setdefault(source["content_sha256"], set()).add(source["patient_id"])
        return held

    @_reachable
    def count(self) -> int:
        return int(self._es.count(index=self.alias)["count"])

    @_reachable
    def search(self, query: SearchQuery) -> SearchResult:
        if patient_token(query.patient_id) is None or query.limit < 0 or query.offset < 0:
            return SearchResult(total=0, hits=())
        text = (query.text or "").strip()
        tokens = analyze_query(text) if text else []
        if text and not tokens:
            return SearchResult(total=0, hits=())
        prefix = tokens[-1] if tokens and len(tokens[-1]) >= PREFIX_MIN_CHARS else None
        size = max(0, min(query.limit, MAX_RESULT_WINDOW - query.offset))
        filters = self._filters(query)
        weights = self._weights(query.patient_id, filters, tokens, prefix)
        body: dict[str, Any] = {
            "query": {"bool": {"filter": filters, "must": _must(tokens, prefix, weights)}},
            "track_total_hits": True,
            "from": min(query.offset, MAX_RESULT_WINDOW),
            "size": size,
            "_source": _HIT_SOURCE,
        }
        order = query.order or SearchOrder.PERIOD_DESC
        direction = "desc" if order.descending else "asc"
        by = (
            {"ingested_at": direction}
            if order.by_filing
            else {"document_date": {"order": direction, "missing": "_last"}}
        )
        # Best first when there are words and no order was asked for; ties by doc id.
        body["sort"] = [
            *([{"_score": "desc"}] if tokens and query.order is None else []),
            by,
            {"doc_id": "asc"},
        ]
        response = self._es.search(index=self.alias, routing=query.patient_id, **body)
        hits = []
        for hit in response["hits"]["hits"]:
            source = hit["_source"]
            date = source.get("document_date")
            hits.append(
                SearchHit(
                    doc_id=source["doc_id"],
                    doc_class=DocClass(source["doc_class"]),
                    type_code=source.get("type_code"),
                    title=source["title"],
                    date=dt.date.fromisoformat(date) if date else None,
                    score=float(hit.get("_score") or 0.0) if tokens else 0.0,
                    **_snippet(source.get("text") or source["title"], tokens, prefix, source["title"]),
                )
            )
        return SearchResult(total=int(response["hits"]["total"]["value"]), hits=tuple(hits))

    def _weights(
        self, patient_id: str, filters: list[dict[str, Any]], tokens: list[str], prefix: str | None
    ) -> list[float]:
        """Each token's weight, BM25's idf counted among the documents this search may
        return (``filters``: the patient, the reader's decision), never over the shard,
        whose every patient's documents, hidden ones too, would show in the scores. One
        word needs none: every hit holds it."""
        if len(tokens) < 2:
            return [1.0] * len(tokens)
        response = self._es.search(
            index=self.alias,
            routing=patient_id,
            query={"bool": {"filter": filters}},
            size=0,
            track_total_hits=True,
            aggs={f"t{i}": {"filter": _any_field(t, i, tokens, prefix)} for i, t in enumerate(tokens)},
        )
        n = int(response["hits"]["total"]["value"])
        frequencies = [int(response["aggregations"][f"t{i}"]["doc_count"]) for i in range(len(tokens))]
        return [idf(n, df) for df in frequencies]

    def _filters(self, query: SearchQuery) -> list[dict[str, Any]]:
        filters: list[dict[str, Any]] = [{"term": {"patient_id": query.patient_id}}]
        unseen = sorted(self._unseen_successors(query)) if reader_versions(query) else []
        # Replaced by a version the reader may not see: current for them.
        current = [{"terms": {"superseded_by": unseen}}] if unseen else []
        replaced = {"exists": {"field": "superseded_by"}}
        if query.superseded_only:
            filters.append({"bool": {"filter": [replaced], "must_not": current}})
        elif not query.include_superseded:
            never_replaced = {"bool": {"must_not": [replaced]}}
            filters.append({"bool": {"should": [never_replaced, *current], "minimum_should_match": 1}})
        if not query.include_withdrawn:
            filters.append({"bool": {"must_not": [{"exists": {"field": "withdrawn_at"}}]}})
        if query.doc_class is not None:
            filters.append({"term": {"doc_class": query.doc_class.value}})
        if query.allowed_classes is not None:
            allowed = [DocClass(c).value for c in query.allowed_classes]
            filters.append({"terms": {"doc_class": allowed}})
        if query.type_code is not None:
            filters.append(
                {"term": {"type_code": query.type_code}} if matchable(query.type_code) else {"match_none": {}}
            )
        if query.doc_id is not None:
            filters.append({"term": {"doc_id": query.doc_id}})
        if query.since is not None or query.until is not None:
            bounds = {}
            if query.since is not None:
                bounds["gte"] = query.since.isoformat()
            if query.until is not None:
                bounds["lte"] = query.until.isoformat()
            filters.append({"range": {"document_date": bounds}})
        if query.filed_from is not None or query.filed_before is not None:
            filters.append({"range": {"ingested_at": _instant_range(query.filed_from, query.filed_before)}})
        if query.updated_from is not None or query.updated_before is not None:
            within = _instant_range(query.updated_from, query.updated_before)
            # The last change, else the filing (updated_at is set by the first change); a
            # version current for its reader (``current``) is as filed for them.
            filed = {"range": {"ingested_at": within}}
            changed = {"bool": {"filter": [{"range": {"updated_at": within}}], "must_not": current}}
            as_filed = {"bool": {"must_not": [{"exists": {"field": "updated_at"}}], "filter": [filed]}}
            for_reader = [{"bool": {"filter": [*current, filed]}}] if current else []
            filters.append({"bool": {"should": [changed, as_filed, *for_reader], "minimum_should_match": 1}})
        if query.exclude_visibility:
            hidden = [Visibility(v).value for v in query.exclude_visibility]
            filters.append({"bool": {"must_not": [{"terms": {"visibility": hidden}}]}})
        return filters

    def _unseen_successors(self, query: SearchQuery) -> frozenset[str]:
        """The patient's documents ``query``'s reader may not see whose own newer versions
        they may not see either (``unseen_successors``), read page by page."""
        hidden: list[dict[str, Any]] = []
        if query.exclude_visibility:
            hidden.append({"terms": {"visibility": [Visibility(v).value for v in query.exclude_visibility]}})
        if query.allowed_classes is not None:
            allowed = [DocClass(c).value for c in query.allowed_classes]
            hidden.append({"bool": {"must_not": [{"terms": {"doc_class": allowed}}]}})
        where = {
            "bool": {
                "filter": [{"term": {"patient_id": query.patient_id}}],
                "should": hidden,
                "minimum_should_match": 1,
            }
        }
        successors: dict[str, str | None] = {}
        after: list[Any] | None = None
        while True:
            page = self._es.search(
                index=self.alias,
                routing=query.patient_id,
                query=where,
                source_includes=["doc_id", "superseded_by"],
                sort=[{"doc_id": "asc"}],
                size=MAX_RESULT_WINDOW,
                search_after=after,
            )["hits"]["hits"]
            successors.update((h["_source"]["doc_id"], h["_source"].get("superseded_by")) for h in page)
            if len(page) < MAX_RESULT_WINDOW:
                return unseen_successors(successors)
            after = page[-1]["sort"]

    def close(self) -> None:
        self._es.close()

    def __repr__(self) -> str:
        return f"ElasticsearchIndex({self.url!r}, alias={self.alias!r})"


def _instant(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _instant_range(low: dt.datetime | None, high: dt.datetime | None) -> dict[str, str]:
    """A range query's bounds, from inclusive and before exclusive (a naive instant is UTC)."""
    bounds = {}
    for name, at in (("gte", low), ("lt", high)):
        if at is not None:
            bounds[name] = at.replace(tzinfo=at.tzinfo or dt.UTC).isoformat()
    return bounds


def _match_kind(i: int, tokens: list[str], prefix: str | None) -> str:
    last = i == len(tokens) - 1
    return "prefix" if last and prefix is not None and len(prefix) <= MAX_PREFIX_CHARS else "term"


def _any_field(token: str, i: int, tokens: list[str], prefix: str | None) -> dict[str, Any]:
    """Token ``i`` of ``tokens`` in any token field."""
    kind = _match_kind(i, tokens, prefix)
    return {"bool": {"should": [{kind: {field: token}} for field in _BOOSTS], "minimum_should_match": 1}}


def _must(tokens: list[str], prefix: str | None, weights: list[float]) -> list[dict[str, Any]]:
    """One clause per token, each matching in any token field (all clauses required),
    scored by the field's boost times the token's weight: constant per field, so that no
    statistic of the shard (other patients' documents) enters the score."""
    clauses = []
    for i, (token, weight) in enumerate(zip(tokens, weights, strict=True)):
        kind = _match_kind(i, tokens, prefix)
        should = [
            {"constant_score": {"filter": {kind: {field: token}}, "boost": boost * weight}}
            for field, boost in _BOOSTS.items()
        ]
        clauses.append({"bool": {"should": should, "minimum_should_match": 1}})
    return clauses
