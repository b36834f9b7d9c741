"""The state database's tables, as SQLAlchemy Core metadata.

This is the schema the migrations (``pipeline/state/migrations``) build; a test checks
that an empty database upgraded to head matches it exactly. Change a table here and add
a migration in the same commit.

Times are ISO-8601 UTC text and documents JSON text, as the SQLite ledger always kept
them: both dialects store and order them alike.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, LargeBinary, MetaData, Table, Text

# Constraint names fixed by convention, so both dialects and every migration agree.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# -- the run ledger (pipeline.ledger) -----------------------------------------------------

runs = Table(
    "runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("started_at", Text, nullable=False),
    Column("finished_at", Text),
    Column("kind", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("metrics", Text),  # JSON
    Column("reported_at", Text),  # the run's report / acknowledgement was written
    Column("taken_over_by", Text),  # a rerun reported this unreported run's documents
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("run_id", Text, ForeignKey("runs.run_id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("source", Text, nullable=False),
    Column("producer", Text),
    Column("batch", Text),
    Column("status", Text, nullable=False),
    Column("doc_id", Text),
    Column("patient_id", Text),
    Column("reasons", Text, nullable=False),  # JSON list of reason codes
    Column("line", Text, nullable=False),  # JSON: the outcome's report line
    Index("outcomes_by_producer", "producer", "status"),
    Index("outcomes_by_source", "source"),
    Index("outcomes_by_patient", "patient_id"),
)

flushes = Table(  # the write-ahead journal of flushes (see pipeline.ledger)
    "flushes",
    metadata,
    Column("flush_id", Text, primary_key=True),
    Column("run_id", Text, ForeignKey("runs.run_id"), nullable=False),
    Column("index_key", Text, nullable=False),  # the index the writes are for (URL, alias)
    Column("batch", Text),
    # 'intended'; the row is deleted when the flush completes ('done' only in rows written
    # before revision 0005, which deletes them).
    Column("state", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("finished_at", Text),
    Column("writes", Text, nullable=False),  # JSON: what the index must hold
    Column("outcomes", Text, nullable=False),  # JSON: the outcomes to record once it does
    Index("flushes_unfinished", "index_key", "state"),
)

# How many flushes into each index are done, by any process: bumped in the transaction that
# completes a flush (or commits a withdrawal), read twice per flush to tell whether the index
# changed meanwhile (a count over the journal would grow slower with it).
flush_generations = Table(
    "flush_generations",
    metadata,
    Column("index_key", Text, primary_key=True),
    Column("generation", Integer, nullable=False),
)

batches = Table(
    "batches",
    metadata,
    Column("feed_url", Text, primary_key=True),
    Column("batch_key", Text, primary_key=True),
    Column("run_id", Text, nullable=False),
    Column("processed_at", Text, nullable=False),
    Column("summary", Text, nullable=False),  # JSON
    Column("ack", Text),  # JSON {file name: base64 content}
    Column("acked_at", Text),
    # Which delivery of the batch's files was decided (BatchRef.delivery, a fingerprint of
    # the listing): another one under the same key is the producer's new delivery. None:
    # decided before revision 0009.
    Column("delivery", Text),
)

# -- monitoring (pipeline.monitoring): every worker's batches and alerts, for carnet status --

batch_metrics = Table(
    "batch_metrics",
    metadata,
    Column("run_id", Text, primary_key=True),  # one record per processed batch (its run)
    Column("feed", Text, nullable=False),
    Column("producer", Text, nullable=False),
    Column("recorded_at", Text, nullable=False),
    Column("metrics", Text, nullable=False),  # JSON: monitoring.BatchMetrics
    Index("batch_metrics_by_time", "recorded_at"),
    Index("batch_metrics_by_producer", "producer", "recorded_at"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", Text, primary_key=True),  # SHA-256 of the alert's JSON: kept once
    Column("at", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("alert", Text, nullable=False),  # JSON: monitoring.Alert
    Index("alerts_by_time", "at"),
)

# -- the access rules (pipeline.access) ---------------------------------------------------

authorisations = Table(
    "authorisations",
    metadata,
    Column("patient_id", Text, primary_key=True),
    Column("rpps", Text, primary_key=True),
    Column("granted_at", Text, nullable=False),
    Column("revoked_at", Text),
    Column("granted_by", Text),  # the representative who authorised, if one did
    Column("granted_by_role", Text),
)

blocks = Table(
    "blocks",
    metadata,
    Column("patient_id", Text, primary_key=True),
    Column("rpps", Text, primary_key=True),
    Column("blocked_at", Text, nullable=False),
)

delegations = Table(
    "delegations",
    metadata,
    Column("patient_id", Text, primary_key=True),
    Column("caregiver_id", Text, primary_key=True),
    Column("classes", Text),  # JSON list of document classes; NULL: every class
    Column("granted_at", Text, nullable=False),
    Column("revoked_at", Text),
    Column("granted_by", Text),  # the representative who delegated, if one did
    Column("granted_by_role", Text),
    Column("upload", Boolean, nullable=False),
)

representatives = Table(
    "representatives",
    metadata,
    Column("patient_id", Text, primary_key=True),
    Column("person_id", Text, primary_key=True),
    Column("patient_birth_date", Text, nullable=False),  # as known at registration
)

break_glass = Table(
    "break_glass",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", Text, nullable=False),
    Column("rpps", Text, nullable=False),
    Column("reason", Text, nullable=False),  # verbatim
    Column("opened_at", Text, nullable=False),
    Column("expires_at", Text, nullable=False),
    Index("break_glass_by_patient", "patient_id", "rpps"),
)

# Closed accounts and oppositions: a keyed hash of the INS (never the INS) and the reason
# code new documents for it are refused with (account_closed, opposition).
closures = Table(
    "closures",
    metadata,
    Column("patient_ref", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("closed_at", Text, nullable=False),
)

# The birth date identity traits gave (consistent with the INS), for majority.
patient_birth_dates = Table(
    "patient_birth_dates",
    metadata,
    Column("patient_id", Text, primary_key=True),
    Column("birth_date", Text, nullable=False),
    Column("recorded_at", Text, nullable=False),
)

# -- the keyring (pipeline.crypto): data keys only ever stored wrapped ----------------------

keyring_meta = Table(  # the wrapper's kind, the wrapped check key, named keys
    "keyring_meta",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

patient_keys = Table(
    "patient_keys",
    metadata,
    Column("patient_id", Text, primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", Text, nullable=False),
    # Names this key among every key the patient had: a key destroyed, then made again,
    # does not open what the first one encrypted, and the object rows say which they need.
    Column("key_id", Text, nullable=False),
)

keyring_objects = Table(
    "keyring_objects",
    metadata,
    Column("sha256", Text, primary_key=True),  # of the plaintext: the address callers use
    Column("cipher_sha256", Text, nullable=False),  # of the ciphertext: the address in the store
    Column("owner", Text),  # patient id once assigned
    Column("wrapped_key", LargeBinary),  # the object's own key while the owner is unknown
    Column("key_id", Text),  # the owner's key it is encrypted under (patient_keys.key_id)
    Index("keyring_objects_by_owner", "owner"),
)

# The patients whose documents a stored input holds when they are several (an HL7 batch):
# the input is under a key of its own (before, the first one's), and the erasure of any of
# them shreds it with that key (``pipeline.erasure``).
keyring_links = Table(
    "keyring_links",
    metadata,
    Column("sha256", Text, primary_key=True),  # keyring_objects.sha256 (no foreign key:
    Column("patient_id", Text, primary_key=True),  # a link may be written before its object)
    Index("keyring_links_by_patient", "patient_id"),
)

# -- the audit chain (pipeline.audit) ----------------------------------------------------

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("v", Integer),  # the entry's format; NULL: legacy unkeyed entry
    Column("at", Text, nullable=False),  # exactly the text the MAC covers
    Column("actor", Text, nullable=False),
    Column("actor_name", Text),
    Column("role", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("patient_id", Text),
    Column("doc_ids", Text, nullable=False),  # JSON list
    Column("reason", Text),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    Index("audit_entries_by_patient", "patient_id"),
)

# One row (id 1): the chain's last sequence number and MAC. Every append locks it first,
# so appends from any number of processes and hosts extend one chain in turn.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", Text, nullable=False),
)

# -- files of earlier versions copied in (pipeline.state.imports) --------------------------

state_imports = Table(  # one row per file imported: never imported twice
    "state_imports",
    metadata,
    Column("name", Text, primary_key=True),  # access.db, keyring.db, audit.jsonl
    Column("imported_at", Text, nullable=False),
    Column("rows", Integer, nullable=False),
)
