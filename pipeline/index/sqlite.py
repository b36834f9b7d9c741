"""The embedded index: one SQLite file, a ``documents`` table and an FTS5 table.

``documents`` holds one row per document (the record as JSON plus the columns
filters need); ``documents_fts`` shares its rowid and holds *analysed* tokens
(:mod:`pipeline.analysis`) in four columns: ``pat`` (the single token ``p`` + INS),
``title``, ``meta`` (analytes, LOINC codes, type, producer, author) and ``body``;
``document_parents`` lists the documents each one replaces (``refers_to``).

Search semantics (the contract tests hold the Elasticsearch backend to the same):

* every query term must match (AND), in the title, meta or body;
* the last term also matches as a prefix when it has at least
  ``PREFIX_MIN_CHARS`` characters (type-ahead: ``hémog`` finds ``hémoglobine``);
* text that holds no searchable word (``*``, ``"``, stop words only) finds nothing;
  no text (None or blank) lists the patient's documents, newest first;
* documents without a date are left out by ``since`` / ``until``.

Speed (target: < 10 ms p95 at 100k documents) comes from three choices, each
measured: the patient is scoped *inside* MATCH (``pat:"p…" AND {…}:(…)``), so
FTS5 seeks within the patient's short doclist instead of filtering every match
afterwards; the prefix term is expanded to exact terms from the ``terms`` table
rather than FTS5's ``*``; and BM25 is computed in Python over the patient's few
matched rows with cached document frequencies rather than by ``bm25()``, which
re-counts every term's documents index-wide on each query.

Every term is quoted, so user text never reaches FTS5 query syntax, and rows are
joined back to ``documents`` on ``patient_id`` as well, so no read can return
another patient's document.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.analysis import analyze, analyze_query
from pipeline.errors import BackendUnavailable
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
    names_any,
    patient_token,
    reader_versions,
    unseen_successors,
)
from pipeline.index.base import snippet_fields as _snippet
from pipeline.model import (
    DocClass,
    DocumentRecord,
    SearchHit,
    SearchOrder,
    SearchQuery,
    SearchResult,
    Visibility,
)
from pipeline.state.wal import enable_wal

log = logging.getLogger(__name__)

# A prefix matching more index terms than this is left to FTS5's own (slower) prefix query.
PREFIX_MAX_TERMS = 64
_VISIBILITY_BITS = {flag: 1 << i for i, flag in enumerate(Visibility)}
# A withdrawn document is one more bit of the ``visibility`` mask: the searches that filter
# on visibility flags already exclude it, and existing databases need no new column.
WITHDRAWN_BIT = 1 << 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    series_id TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    doc_class TEXT NOT NULL,
    type_code TEXT,
    document_date TEXT,
    superseded_by TEXT,
    visibility INTEGER NOT NULL DEFAULT 0,
    title TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_patient_date
    ON documents (patient_id, document_date DESC);
CREATE INDEX IF NOT EXISTS documents_patient_sha ON documents (patient_id, content_sha256);
CREATE INDEX IF NOT EXISTS documents_patient_series ON documents (patient_id, series_id);
-- Which document names which parent as the one it replaces (``refers_to``): a parent
-- filed after its replacement finds it in one indexed lookup (``find_replacements``).
CREATE TABLE IF NOT EXISTS document_parents (
    doc_id TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    producer TEXT NOT NULL,
    PRIMARY KEY (doc_id, parent_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS document_parents_named
    ON document_parents (patient_id, producer, parent_id);
CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5(
    pat, title, meta, body,
    tokenize = "unicode61 remove_diacritics 0 tokenchars '-'"
);
CREATE VIRTUAL TABLE IF NOT EXISTS documents_vocab USING fts5vocab(documents_fts, row);
-- Every token ever indexed, to expand a prefix into exact terms (see _match_expression).
CREATE TABLE IF NOT EXISTS terms (term TEXT PRIMARY KEY) WITHOUT ROWID;
"""
# Ranking is BM25 computed here on the few rows of one patient, not FTS5's bm25(): bm25()
# counts each term's documents over the whole index (~3 ms at 100k documents), every
# patient's, hidden ones included, and a score so weighed tells its reader whether other
# records hold a word. Document frequencies are counted among the documents the query may
# return (the patient's, within the reader's decision): see ``_score``.
# When a document was filed and when its record last changed, in UTC to the millisecond
# (as Elasticsearch's date fields hold them), from the record's JSON: its patient's few rows
# are filtered, no column needed.
_INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%f"
_FILED = f"strftime('{_INSTANT_FORMAT}', json_extract(d.record, '$.ingested_at'))"
_UPDATED = (
    f"strftime('{_INSTANT_FORMAT}', coalesce(json_extract(d.record, '$.updated_at'),"
    " json_extract(d.record, '$.ingested_at')))"
)


def _order_by(order: SearchOrder) -> str:
    """The ORDER BY of a listing: undated documents last either way, ties by doc id."""
    direction = "DESC" if order.descending else "ASC"
    if order.by_filing:
        return f"{_FILED} {direction}, d.doc_id"
    return f"d.document_date IS NULL, d.document_date {direction}, d.doc_id"


def _instant(at: dt.datetime) -> str:
    """``at`` as ``_FILED`` and ``_UPDATED`` write instants (a naive one is taken as UTC)."""
    utc = at.replace(tzinfo=at.tzinfo or dt.UTC).astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


_COLUMN_WEIGHTS = (4.0, 2.0, 1.0)  # title, meta, body: a title hit counts most
_K1, _B = 1.2, 0.75
_KNOWN_TERMS_SIZE = 500_000


def _existing_versions(rows: Sequence[Sequence[Any]]) -> list[ExistingVersion]:
    """``(doc_id, series_id, content_sha256, superseded_by, visibility)`` rows as versions."""
    return [
        ExistingVersion(
            doc_id=d, series_id=s, content_sha256=h, superseded_by=b, withdrawn=bool(mask & WITHDRAWN_BIT)
        )
        for d, s, h, b, mask in rows
    ]


def _fts_row(record: DocumentRecord, pat: str) -> tuple[str, str, str, str]:
    return (
        pat,
        " ".join(analyze(record.title)),
        " ".join(analyze(meta_text(record))),
        " ".join(analyze(record.text)),
    )


def _visibility_mask(flags: Iterable[Visibility], *, withdrawn: bool = False) -> int:
    mask = WITHDRAWN_BIT if withdrawn else 0
    for flag in flags:
        mask |= _VISIBILITY_BITS[Visibility(flag)]
    return mask


def _mask(record: DocumentRecord) -> int:
    return _visibility_mask(record.visibility, withdrawn=record.withdrawn_at is not None)


def _match_expression(
    pat: str, tokens: list[str], *, prefix_terms: list[str] | None = None, native_prefix: bool = False
) -> str:
    """An FTS5 query: the patient token AND every term, each one quoted.

    The last term may match as a prefix: either as the OR of ``prefix_terms`` (the
    index terms it starts), which FTS5 answers by seeking within the patient's
    documents, or with ``native_prefix`` as FTS5's ``"tok"*``, which merges the
    doclists of every matching term over the whole index first (~2 ms at 100k).
    """
    terms = [f'"{t}"' for t in tokens]  # tokens never contain '"' (see pipeline.analysis)
    if prefix_terms:
        terms[-1] = "(" + " OR ".join(f'"{t}"' for t in prefix_terms) + ")"
    elif native_prefix:
        terms[-1] += "*"
    return f'pat:"{pat}" AND {{title meta body}}:({" AND ".join(terms)})'


def _bm25(
    rows: list[tuple[int, str, str, str]],
    tokens: list[str],
    prefix: str | None,
    df: dict[str, int],
    n_docs: int,
) -> dict[int, float]:
    """BM25 over the title/meta/body token columns of the matched rows (higher is better).

    Document length is normalised against the mean of the matched rows: the ranking
    is only ever among one patient's documents.
    """
    columns = {row_id: [c.split() for c in cols] for row_id, *cols in rows}
    lengths = {row_id: sum(len(c) for c in cols) for row_id, cols in columns.items()}
    mean_length = max(1.0, sum(lengths.values()) / max(1, len(lengths)))
    weight = {t: idf(n_docs, df[t]) for t in tokens}
    scores: dict[int, float] = {}
    for row_id, cols in columns.items():
        norm = _K1 * (1 - _B + _B * lengths[row_id] / mean_length)
        score = 0.0
        for token in tokens:
            if token == prefix:
                counts = [sum(1 for w in col if w.startswith(token)) for col in cols]
            else:
                counts = [col.count(token) for col in cols]
            tf = sum(w * c for w, c in zip(_COLUMN_WEIGHTS, counts, strict=True))
            score += weight[token] * tf * (_K1 + 1) / (tf + norm)
        scores[row_id] = round(score, 6)
    return scores


class SqliteIndex:
    """The embedded :class:`~pipeline.index.base.DocumentIndex` (one file, WAL mode)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            enable_wal(self._db, wait_s=30.0)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA cache_size = -65536")  # 64 MiB
            # Deleted content is overwritten with zeros, not left in free pages (erasure).
            self._db.execute("PRAGMA secure_delete = ON")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise BackendUnavailable(f"cannot open SQLite index: {exc}", index=str(path)) from exc
        # One connection shared by threads (Airflow task, API workers): calls take turns.
        self._lock = threading.RLock()
        self._known_terms: set[str] = set()  # terms this process has already recorded
        self._backfill_terms()

    def _backfill_terms(self) -> None:
        """Fill ``terms`` for an index written before it existed (one slow pass)."""
        with self._write():
            if self._db.execute("SELECT 1 FROM terms LIMIT 1").fetchone() is None:
                self._db.execute(
                    "INSERT OR IGNORE INTO terms (term)"
                    " SELECT term FROM documents_vocab WHERE term NOT GLOB 'p*'"
                    " OR length(term) != 16"
                )

    # -- writes --------------------------------------------------------------------------

    def upsert(self, records: Sequence[DocumentRecord]) -> list[IndexFailure]:
        failures, rows = self._rows(records)
        if rows:
            with self._write():
                new_terms = self._write_rows(rows)
                self._write_parents(records, failures)
            self._remember_terms(new_terms)
        return failures

    def apply(
        self,
        records: Sequence[DocumentRecord],
        supersedes: Sequence[Supersede],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> list[IndexFailure]:
        failures, rows = self._rows(records)
        refused = {f.doc_id for f in failures}
        new_terms: set[str] = set()
        with self._write():
            if rows:
                # A document superseded meanwhile (by a later run) stays superseded.
                ids = [values[0] for values, _ in rows]
                already = {
                    doc_id: (by, updated)
                    for doc_id, by, updated in self._db.execute(
                        f"SELECT doc_id, superseded_by, json_extract(record, '$.updated_at') FROM documents"
                        f" WHERE superseded_by IS NOT NULL AND doc_id IN ({', '.join('?' * len(ids))})",
                        ids,
                    ).fetchall()
                }
                if already:
                    rows = [self._keep_superseded(values, fts, already) for values, fts in rows]
                new_terms = self._write_rows(rows)
                self._write_parents(records, failures)
            if checkpoint:
                checkpoint("after_index_write")
            for s in supersedes:
                if s.by_doc_id not in refused and not self._update_in_transaction(
                    s.patient_id, s.doc_id, superseded_by=s.by_doc_id
                ):
                    log.warning("supersede: no document %s for this patient", s.doc_id)
            if checkpoint and supersedes:
                checkpoint("after_supersede")
        self._remember_terms(new_terms)
        return failures

    @staticmethod
    def _keep_superseded(
        values: tuple[object, ...],
        fts: tuple[str, str, str, str],
        already: dict[str, tuple[str, str | None]],
    ) -> tuple[tuple[object, ...], tuple[str, str, str, str]]:
        """A row written again keeps the mark of the version that replaced it, and when."""
        doc_id = str(values[0])
        if doc_id not in already or values[7] is not None:
            return values, fts
        by, updated = already[doc_id]
        record = DocumentRecord.model_validate_json(str(values[10]))
        updated_at = dt.datetime.fromisoformat(updated) if updated else None
        record = record.model_copy(update={"superseded_by": by, "updated_at": updated_at})
        return (*values[:7], by, *values[8:10], record.model_dump_json()), fts

    def _rows(
        self, records: Sequence[DocumentRecord]
    ) -> tuple[list[IndexFailure], list[tuple[tuple[object, ...], tuple[str, str, str, str]]]]:
        """The records refused, and the (documents row, FTS row) of the others."""
        failures: list[IndexFailure] = []
        rows: list[tuple[tuple[object, ...], tuple[str, str, str, str]]] = []
        for record in records:
            pat = patient_token(record.patient_id)
            if pat is None:
                failures.append(
                    IndexFailure(
                        doc_id=record.doc_id,
                        message=f"patient id {record.patient_id!r} is not a 15-character INS",
                    )
                )
                continue
            if not record.doc_id:
                failures.append(IndexFailure(doc_id=record.doc_id, message="empty doc_id"))
                continue
            doc_row = (
                record.doc_id,
                record.patient_id,
                record.series_id,
                record.content_sha256,
                record.doc_class.value,
                record.type_code,
                record.document_date.isoformat() if record.document_date else None,
                record.superseded_by,
                _mask(record),
                record.title,
                record.model_dump_json(),
            )
            rows.append((doc_row, _fts_row(record, pat)))
        return failures, rows

    def _write_rows(self, rows: list[tuple[tuple[object, ...], tuple[str, str, str, str]]]) -> set[str]:
        """Upsert rows inside the caller's transaction; return the terms not known yet."""
        # Each row's old FTS row out and its new one in, as two executemany for all the
        # rows: by rowid, the last row written for a document wins (as one by one).
        fts_rows: dict[int, tuple[str, str, str, str]] = {}
        for doc_values, fts_row in rows:
            (row_id,) = self._db.execute(
                """
                INSERT INTO documents (doc_id, patient_id, series_id, content_sha256,
                    doc_class, type_code, document_date, superseded_by, visibility,
                    title, record)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (doc_id) DO UPDATE SET
                    patient_id = excluded.patient_id, series_id = excluded.series_id,
                    content_sha256 = excluded.content_sha256,
                    doc_class = excluded.doc_class, type_code = excluded.type_code,
                    document_date = excluded.document_date,
                    superseded_by = excluded.superseded_by,
                    visibility = excluded.visibility, title = excluded.title,
                    record = excluded.record
                RETURNING id
                """,
                doc_values,
            ).fetchone()
            fts_rows[row_id] = fts_row
        self._db.executemany("DELETE FROM documents_fts WHERE rowid = ?", [(i,) for i in fts_rows])
        self._db.executemany(
            "INSERT INTO documents_fts (rowid, pat, title, meta, body) VALUES (?, ?, ?, ?, ?)",
            [(i, *fts_row) for i, fts_row in fts_rows.items()],
        )
        new_terms = {t for _, fts_row in rows for col in fts_row[1:] for t in col.split()}
        new_terms -= self._known_terms
        self._db.executemany("INSERT OR IGNORE INTO terms (term) VALUES (?)", [(t,) for t in new_terms])
        return new_terms

    def _write_parents(self, records: Sequence[DocumentRecord], failures: Sequence[IndexFailure]) -> None:
        """Each written record's ``document_parents`` rows, inside the caller's transaction."""
        refused = {f.doc_id for f in failures}
        written = [r for r in records if r.doc_id not in refused]
        self._db.executemany("DELETE FROM document_parents WHERE doc_id = ?", [(r.doc_id,) for r in written])
        self._db.executemany(
            "INSERT OR IGNORE INTO document_parents (doc_id, parent_id, patient_id, producer)"
            " VALUES (?, ?, ?, ?)",
            [(r.doc_id, parent, r.patient_id, r.producer) for r in written for parent in r.refers_to],
        )

    def _remember_terms(self, new_terms: set[str]) -> None:
        if len(self._known_terms) + len(new_terms) > _KNOWN_TERMS_SIZE:
            self._known_terms.clear()
        self._known_terms |= new_terms

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, rolled back on error; SQLite errors become BackendUnavailable."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                message = f"SQLite index write failed: {exc}"
                raise BackendUnavailable(message, index=str(self.path)) from exc

    def _update_record(self, patient_id: str, doc_id: str, **changes: object) -> bool:
        """Rewrite one stored record (its JSON and the matching columns); False if absent."""
        with self._write():
            return self._update_in_transaction(patient_id, doc_id, **changes)

    def _update_in_transaction(self, patient_id: str, doc_id: str, **changes: object) -> bool:
        row = self._db.execute(
            "SELECT record FROM documents WHERE patient_id = ? AND doc_id = ?",
            (patient_id, doc_id),
        ).fetchone()
        if row is None:
            return False
        record = changed(DocumentRecord.model_validate_json(row[0]), changes)
        self._db.execute(
            "UPDATE documents SET superseded_by = ?, visibility = ?, record = ?"
            " WHERE patient_id = ? AND doc_id = ?",
            (
                record.superseded_by,
                _mask(record),
                record.model_dump_json(),
                patient_id,
                doc_id,
            ),
        )
        return True

    def supersede(self, patient_id: str, doc_id: str, by_doc_id: str) -> None:
        if not self._update_record(patient_id, doc_id, superseded_by=by_doc_id):
            log.warning("supersede: no document %s for this patient", doc_id)

    def withdraw(self, patient_id: str, doc_id: str, at: dt.datetime) -> bool:
        return self._update_record(patient_id, doc_id, withdrawn_at=at)

    def set_visibility(self, patient_id: str, doc_id: str, visibility: Sequence[Visibility]) -> bool:
        flags = tuple(dict.fromkeys(Visibility(v) for v in visibility))
        return self._update_record(patient_id, doc_id, visibility=flags)

    def delete(self, patient_id: str, doc_id: str) -> bool:
        with self._write():
            row = self._db.execute(
                "DELETE FROM documents WHERE patient_id = ? AND doc_id = ? RETURNING id",
                (patient_id, doc_id),
            ).fetchone()
            if row is not None:
                self._db.execute("DELETE FROM documents_fts WHERE rowid = ?", row)
                self._db.execute("DELETE FROM document_parents WHERE doc_id = ?", (doc_id,))
        return row is not None

    def delete_patient(self, patient_id: str) -> list[str]:
        with self._write():
            rows = self._db.execute(
                "DELETE FROM documents WHERE patient_id = ? RETURNING id, doc_id", (patient_id,)
            ).fetchall()
            self._db.executemany(
                "DELETE FROM documents_fts WHERE rowid = ?", [(row_id,) for row_id, _ in rows]
            )
            self._db.execute("DELETE FROM document_parents WHERE patient_id = ?", (patient_id,))
        if rows:
            self._expunge()
        return sorted(doc_id for _, doc_id in rows)

    def _expunge(self) -> None:
        """Leave no byte of deleted documents in the files (erasure).

        An FTS5 delete only adds tombstones: the tokens (INS, words, stems) stay in the old
        segments until they are merged, so the segments are merged into one; the ``terms``
        table loses the words no document holds any more; VACUUM rewrites the file without
        free pages, and the WAL is checkpointed and truncated.
        """
        with self._lock:
            try:
                self._db.execute("INSERT INTO documents_fts (documents_fts) VALUES ('optimize')")
                self._db.execute("DELETE FROM terms WHERE term NOT IN (SELECT term FROM documents_vocab)")
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"SQLite index expunge failed: {exc}", index=str(self.path)) from exc
            self._known_terms.clear()

    # -- reads ---------------------------------------------------------------------------

    def get(self, patient_id: str, doc_id: str) -> DocumentRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record FROM documents WHERE patient_id = ? AND doc_id = ?",
                (patient_id, doc_id),
            ).fetchone()
        return None if row is None else DocumentRecord.model_validate_json(row[0])

    def find_versions(self, patient_id: str, *, content_sha256: str, series_id: str) -> list[ExistingVersion]:
        with self._lock:
            rows = self._db.execute(
                """
                SELECT doc_id, series_id, content_sha256, superseded_by, visibility FROM documents
                WHERE patient_id = ?1 AND content_sha256 = ?2
                UNION
                SELECT doc_id, series_id, content_sha256, superseded_by, visibility FROM documents
                WHERE patient_id = ?1 AND series_id = ?3
                ORDER BY doc_id
                """,
                (patient_id, content_sha256, series_id),
            ).fetchall()
        return _existing_versions(rows)

    def find_by_document_ids(
        self, patient_id: str, producer: str, document_ids: Sequence[str]
    ) -> list[ExistingVersion]:
        # Deletions and replacements naming a parent are rare: reading the patient's records
        # is cheaper than keeping an identifier table in step with every upsert.
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM documents WHERE patient_id = ? ORDER BY doc_id", (patient_id,)
            ).fetchall()
        records = (DocumentRecord.model_validate_json(r[0]) for r in rows)
        return [
            ExistingVersion(
                doc_id=r.doc_id,
                series_id=r.series_id,
                content_sha256=r.content_sha256,
                superseded_by=r.superseded_by,
                withdrawn=r.withdrawn_at is not None,
            )
            for r in records
            if names_any(r, producer, document_ids)
        ]

    def find_replacements(
        self, patient_id: str, producer: str, document_ids: Sequence[str]
    ) -> list[ExistingVersion]:
        ids = [i for i in dict.fromkeys(document_ids) if matchable(i)]
        if not ids:
            return []
        with self._lock:
            rows = self._db.execute(
                f"""
                SELECT DISTINCT d.doc_id, d.series_id, d.content_sha256, d.superseded_by, d.visibility
                FROM document_parents p
                JOIN documents d ON d.doc_id = p.doc_id AND d.patient_id = p.patient_id
                WHERE p.patient_id = ? AND p.producer = ? AND p.parent_id IN ({", ".join("?" * len(ids))})
                ORDER BY d.doc_id
                """,
                (patient_id, producer, *ids),
            ).fetchall()
        return _existing_versions(rows)

    def find_versions_and_replacements(
        self,
        patient_id: str,
        *,
        content_sha256: str,
        series_id: str,
        producer: str,
        document_ids: Sequence[str],
    ) -> tuple[list[ExistingVersion], list[ExistingVersion]]:
        return (
            self.find_versions(patient_id, content_sha256=content_sha256, series_id=series_id),
            self.find_replacements(patient_id, producer, document_ids),
        )

    def list_ids(self) -> list[tuple[str, str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT patient_id, doc_id, content_sha256 FROM documents ORDER BY patient_id, doc_id"
            ).fetchall()
        return [(p, d, h) for p, d, h in rows]

    def patients_holding(self, content_sha256s: Sequence[str]) -> dict[str, set[str]]:
        held: dict[str, set[str]] = {}
        wanted = sorted(set(content_sha256s))
        with self._lock:
            for i in range(0, len(wanted), 500):  # well under SQLite's parameter limit
                chunk = wanted[i : i + 500]
                for sha, patient in self._db.execute(
                    f"SELECT DISTINCT content_sha256, patient_id FROM documents"
                    f" WHERE content_sha256 IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ):
                    held.setdefault(sha, set()).add(patient)
        return held

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM documents").fetchone()
        return int(n)

    def search(self, query: SearchQuery) -> SearchResult:
        pat = patient_token(query.patient_id)
        if pat is None or query.limit < 0 or query.offset < 0:
            return SearchResult(total=0, hits=())
        where, params = self._filters(query)
        text = (query.text or "").strip()
        if not text:
            return self._list_newest(query, where, params)
        tokens = analyze_query(text)
        if not tokens:
            return SearchResult(total=0, hits=())
        # Type-ahead: the last term also matches longer words when it is long enough
        # (a shorter prefix would expand to too many index terms).
        prefix = tokens[-1] if len(tokens[-1]) >= PREFIX_MIN_CHARS else None
        expansion: list[str] | None = None
        if prefix is None:
            match = _match_expression(pat, tokens)
        else:
            expansion = self._expand(prefix)
            if expansion is not None and not expansion:
                return SearchResult(total=0, hits=())  # no index term starts so
            match = _match_expression(pat, tokens, prefix_terms=expansion, native_prefix=expansion is None)
        sql = f"""
            WITH m AS MATERIALIZED (
                SELECT rowid AS id, title, meta, body FROM documents_fts
                WHERE documents_fts MATCH ?
            )
            SELECT d.id, m.title, m.meta, m.body, d.document_date, d.doc_id, {_FILED}
            FROM m CROSS JOIN documents d ON d.id = m.id
            WHERE {where}
        """
        with self._lock:
            try:
                rows = self._db.execute(sql, (match, *params)).fetchall()
            except sqlite3.OperationalError as exc:
                # Tokens are quoted words: a syntax error here is a bug, not user input.
                log.error("FTS5 rejected %r: %s", match, exc)
                raise
            scores = self._score(rows, tokens, prefix, (pat, where, params, expansion))
            # Best first; ties newest first (undated last), then by doc_id. An order asked
            # for replaces the score (stable sorts: the last key sorted is the first).
            rows.sort(key=lambda r: r[5])
            order = query.order or SearchOrder.PERIOD_DESC
            if order.by_filing:
                rows.sort(key=lambda r: r[6], reverse=order.descending)
            else:
                rows.sort(key=lambda r: r[4] or "", reverse=order.descending)
                rows.sort(key=lambda r: r[4] is None)
            if query.order is None:
                rows.sort(key=lambda r: scores[r[0]], reverse=True)
            page = [(r[0], scores[r[0]]) for r in rows[query.offset : query.offset + query.limit]]
            hits = self._hits(page, tokens, prefix)
        return SearchResult(total=len(rows), hits=tuple(hits))

    def _expand(self, prefix: str) -> list[str] | None:
        """The index terms starting with ``prefix``; None when there are too many."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        with self._lock:
            rows = self._db.execute(
                "SELECT term FROM terms WHERE term >= ? AND term < ? ORDER BY term LIMIT ?",
                (prefix, upper, PREFIX_MAX_TERMS + 1),
            ).fetchall()
        return None if len(rows) > PREFIX_MAX_TERMS else [t for (t,) in rows]

    def _score(
        self,
        rows: list[tuple[int, str, str, str, str | None, str]],
        tokens: list[str],
        prefix: str | None,
        scope: tuple[str, str, list[object], list[str] | None],
    ) -> dict[int, float]:
        """BM25 of the matched rows, each word weighed by how many of the documents the
        query may return hold it (``scope``: the patient token, the query's filters and the
        prefix's expansion), never the whole index: a score weighed by every patient's
        documents, hidden ones included, told a reader whether other records hold a word."""
        if not rows:
            return {}
        pat, where, params, expansion = scope
        (n_docs,) = self._db.execute(f"SELECT count(*) FROM documents d WHERE {where}", params).fetchone()
        df: dict[str, int] = {}
        for token in tokens:
            if len(tokens) == 1:  # every matched row holds it
                df[token] = len(rows)
                continue
            is_prefix = token == prefix
            match = _match_expression(
                pat,
                [token],
                prefix_terms=expansion if is_prefix else None,
                native_prefix=is_prefix and expansion is None,
            )
            (df[token],) = self._db.execute(
                f"""SELECT count(*) FROM documents_fts m CROSS JOIN documents d ON d.id = m.rowid
                WHERE documents_fts MATCH ? AND {where}""",
                (match, *params),
            ).fetchone()
        return _bm25([r[:4] for r in rows], tokens, prefix, df, max(n_docs, len(rows)))

    def _filters(self, query: SearchQuery) -> tuple[str, list[object]]:
        clauses = ["d.patient_id = ?"]
        params: list[object] = [query.patient_id]
        unseen = sorted(self._unseen_successors(query)) if reader_versions(query) else []
        current = f"d.superseded_by IN ({', '.join('?' * len(unseen))})" if unseen else "0"
        if query.superseded_only:
            clauses.append(f"d.superseded_by IS NOT NULL AND NOT ({current})")
            params += unseen
        elif not query.include_superseded:
            clauses.append(f"(d.superseded_by IS NULL OR {current})")
            params += unseen
        if not query.include_withdrawn:
            clauses.append(f"(d.visibility & {WITHDRAWN_BIT}) = 0")
        if query.doc_class is not None:
            clauses.append("d.doc_class = ?")
            params.append(query.doc_class.value)
        if query.allowed_classes is not None:
            allowed = [DocClass(c).value for c in query.allowed_classes]
            clauses.append(f"d.doc_class IN ({', '.join('?' * len(allowed))})" if allowed else "0")
            params += allowed
        if query.type_code is not None:
            clauses.append("d.type_code = ?" if matchable(query.type_code) else "0")
            params += [query.type_code] if matchable(query.type_code) else []
        if query.doc_id is not None:
            clauses.append("d.doc_id = ?")
            params.append(query.doc_id)
        if query.since is not None:
            clauses.append("d.document_date >= ?")
            params.append(query.since.isoformat())
        if query.until is not None:
            clauses.append("d.document_date <= ?")
            params.append(query.until.isoformat())
        # Current for its reader (``unseen``), a version is as filed for them.
        updated = f"(CASE WHEN {current} THEN {_FILED} ELSE {_UPDATED} END)" if unseen else _UPDATED
        for column, column_params, low, high in (
            (_FILED, [], query.filed_from, query.filed_before),
            (updated, unseen, query.updated_from, query.updated_before),
        ):
            if low is not None:
                clauses.append(f"{column} >= ?")
                params += [*column_params, _instant(low)]
            if high is not None:
                clauses.append(f"{column} < ?")
                params += [*column_params, _instant(high)]
        if query.exclude_visibility:
            clauses.append("(d.visibility & ?) = 0")
            params.append(_visibility_mask(query.exclude_visibility))
        return " AND ".join(clauses), params

    def _unseen_successors(self, query: SearchQuery) -> frozenset[str]:
        """The newer versions of this patient's documents that ``query``'s reader may not see
        and whose own newer versions they may not see either (``unseen_successors``)."""
        hidden: list[str] = []
        params: list[object] = []
        if query.exclude_visibility:
            hidden.append("(n.visibility & ?) != 0")
            params.append(_visibility_mask(query.exclude_visibility))
        if query.allowed_classes is not None:
            allowed = [DocClass(c).value for c in query.allowed_classes]
            hidden.append(f"n.doc_class NOT IN ({', '.join('?' * len(allowed))})" if allowed else "1")
            params += allowed
        with self._lock:
            rows = self._db.execute(
                f"""
                SELECT n.doc_id, n.superseded_by FROM documents n
                WHERE n.patient_id = ? AND ({" OR ".join(hidden)}) AND n.doc_id IN (
                    SELECT superseded_by FROM documents WHERE patient_id = ? AND superseded_by IS NOT NULL
                )
                """,
                (query.patient_id, *params, query.patient_id),
            ).fetchall()
        return unseen_successors(dict(rows))

    def _list_newest(self, query: SearchQuery, where: str, params: list[object]) -> SearchResult:
        with self._lock:
            (total,) = self._db.execute(f"SELECT count(*) FROM documents d WHERE {where}", params).fetchone()
            page = self._db.execute(
                f"""
                SELECT d.id, 0.0 FROM documents d WHERE {where}
                ORDER BY {_order_by(query.order or SearchOrder.PERIOD_DESC)}
                LIMIT ? OFFSET ?
                """,
                (*params, query.limit, query.offset),
            ).fetchall()
            hits = self._hits(page, [], None)
        return SearchResult(total=int(total), hits=tuple(hits))

    def _hits(self, page: list[tuple[int, float]], tokens: list[str], prefix: str | None) -> list[SearchHit]:
        if not page:
            return []
        ids = [row_id for row_id, _ in page]
        rows = self._db.execute(
            f"""
            SELECT id, doc_id, doc_class, type_code, title, document_date,
                   json_extract(record, '$.text')
            FROM documents WHERE id IN ({", ".join("?" * len(ids))})
            """,
            ids,
        ).fetchall()
        by_id = {row[0]: row for row in rows}
        hits = []
        for row_id, score in page:
            _, doc_id, doc_class, type_code, title, date, body = by_id[row_id]
            hits.append(
                SearchHit(
                    doc_id=doc_id,
                    doc_class=DocClass(doc_class),
                    type_code=type_code,
                    title=title,
                    date=dt.date.fromisoformat(date) if date else None,
                    score=float(score),
                    **_snippet(body or title, tokens, prefix, title),
                )
            )
        return hits

    def optimize(self) -> None:
        """Merge the FTS5 segments (after a bulk load)."""
        with self._lock:
            self._db.execute("INSERT INTO documents_fts (documents_fts) VALUES ('optimize')")

    def rebuild(self, version: str) -> dict[str, object]:
        """Optimise in place (one SQLite file: nothing to copy, no alias to move)."""
        self.optimize()
        return {"backend": "sqlite", "optimized": True, "documents": self.count()}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteIndex({str(self.path)!r})"
