"""Erasure of a patient's account: every trace of their documents goes, the account is
closed, and a receipt says what.

Removed: the patient's documents from the index (and every byte of them from its files:
see each backend's ``delete_patient``), their stored objects (the ones encrypted under
their key, the ones their documents point to, the raw inputs of the quarantine records
that name them, the raw inputs linked to them whoever's key they are under: a batch of
several patients' messages), those quarantine records (found by the patient id, or by any
INS the document names, structured or printed), their grants, blocks, delegations,
representatives, break-the-glass openings and birth date, their data key (so any backup
copy of their objects is unreadable), and in the ledger their ids, source paths and
content hashes (counts stay). The account is closed: a tombstone holding a keyed hash of
the INS (not the INS) makes ingestion refuse later documents (``account_closed``) until an
operator reopens it at the patient's request.

A raw input of several patients (an HL7 batch) is kept under a key of its own and shredded
whole, that key with it, by the erasure of any of them (``shared_inputs`` in the receipt:
those not under the erased patient's key), so no key left opens a backup copy of it. The
others' documents stay readable and searchable, each message's own bytes being kept apart
under its patient's key; what they lose is the file they came in (a replay of one of their
quarantined messages from it).
Objects stored before the links were recorded (revision 0007) are found only by their
owner, their documents or their quarantine records; a batch stored under its first
patient's key before inputs of several patients got keys of their own is deleted by
another one's erasure, but its backup copies open with the first patient's key until it
is filed again (``share``).

The audit log keeps its entries (who accessed the record, never contents): it is
append-only by design; the erasure is appended to it and its head anchored outside it,
and the receipt prints that head.

``erase_patient_from`` is the one erasure: ``carnet erase`` (``erase_patient``) and
``DELETE /patients/{ins}`` both call it.
"""

from __future__ import annotations

import datetime as dt
import logging

from pipeline.access import AccessRules
from pipeline.audit import AuditHead, AuditLog, open_audit_log
from pipeline.crypto import patient_ref, patient_ref_key
from pipeline.identity import named_ins
from pipeline.index import DocumentIndex, open_index
from pipeline.ledger import Ledger
from pipeline.model import Frozen, Reason, SearchQuery
from pipeline.settings import Settings
from pipeline.store import DocumentStore, KeyedStore, QuarantineRecord

log = logging.getLogger(__name__)

_PAGE = 100


class ErasureReceipt(Frozen):
    """What an erasure removed, and when."""

    patient_id: str
    erased_at: dt.datetime
    actor: str
    documents: int
    doc_ids: tuple[str, ...]
    objects: int
    # Of ``objects``: raw inputs of several patients (under a key of their own, or, kept
    # before, under another patient's), shredded all the same (see the module docstring).
    shared_inputs: int = 0
    quarantine_records: int
    access_rules: int
    ledger_outcomes: int
    key_destroyed: bool
    account_closed: bool
    audit_seq: int
    audit_head: AuditHead | None  # as anchored outside the log, for the patient to keep


def _indexed_content(index: DocumentIndex, patient_id: str) -> set[str]:
    """Content hashes of every document of the patient, superseded and withdrawn included."""
    shas: set[str] = set()
    offset = 0
    while True:
        result = index.search(
            SearchQuery(
                patient_id=patient_id,
                include_superseded=True,
                include_withdrawn=True,
                limit=_PAGE,
                offset=offset,
            )
        )
        for hit in result.hits:
            record = index.get(patient_id, hit.doc_id)
            if record is not None:
                shas.add(record.content_sha256)
        offset += len(result.hits)
        if not result.hits or offset >= result.total:
            return shas


def _named_in_content(store: DocumentStore, q: QuarantineRecord, patient_id: str) -> bool:
    """Whether a quarantined input names the patient (records kept before their
    ``patient_refs`` were): parsed again from its stored bytes."""
    from parsers.registry import ParserOptions, default_registry

    try:
        data = store.get(q.content_sha256)
    except KeyError:
        return False
    parser = default_registry(ParserOptions()).choose(data)
    if parser is None:
        return False
    try:
        docs = parser.parse(data, source=q.source)
    except Exception:  # noqa: BLE001 — the parser boundary: an unparsable record names nobody we can find
        log.warning("quarantine record %s could not be parsed to look for the patient", q.quarantine_id)
        return False
    return any(patient_id in named_ins(d) for d in docs)


def _names_patient(store: DocumentStore, q: QuarantineRecord, patient_id: str, ref: str) -> bool:
    if q.patient_id == patient_id:
        return True
    if q.patient_refs is not None:
        return ref in q.patient_refs
    return _named_in_content(store, q, patient_id)


def erase_patient_from(
    patient_id: str,
    *,
    index: DocumentIndex,
    store: KeyedStore,
    rules: AccessRules,
    audit: AuditLog,
    ledger: Ledger,
    ref_key: bytes,
    actor: str,
    role: str = "operator",
    now: dt.datetime | None = None,
) -> ErasureReceipt:
    """Erase with already opened backends (the API holds them open; the CLI opens them)."""
    at = now or dt.datetime.now(dt.UTC)
    ref = patient_ref(ref_key, patient_id)
    # Closed first: every route refuses the record from here on, so an erasure that fails
    # midway (a backend down) leaves it closed, not readable half-erased; asked again, it
    # completes (``DELETE /patients/{ins}`` and ``carnet erase`` do not ask the decision).
    rules.close_account(ref, Reason.ACCOUNT_CLOSED, at)
    shas = _indexed_content(index, patient_id)

    quarantined = [q for q in store.list_quarantine() if _names_patient(store, q, patient_id, ref)]
    for q in quarantined:
        shas.add(q.content_sha256)
        store.remove_quarantine(q.quarantine_id)

    shas.update(store.objects_of(patient_id))
    # Inputs known to hold the patient's data, whoever's key they are under: linked to them
    # at ingestion, or quarantined naming them (a record kept before the links, a message
    # refused unidentified in a batch of other patients'; nothing else links those).
    linked = set(store.linked_to(patient_id)) | {q.content_sha256 for q in quarantined}
    shas.update(linked)
    removed_objects = shared = 0
    holding = index.patients_holding(sorted(shas))
    for sha in sorted(shas):
        owner = store.owner_of(sha)
        if owner is not None and owner != patient_id and sha not in linked:
            # The same bytes were filed for someone else first: they are that person's too.
            log.warning("object %s is also another patient's; kept", sha)
            continue
        others = sorted(holding.get(sha, set()) - {patient_id})
        if owner == patient_id and others and sha not in linked:
            # Filed for this patient first, and the same bytes for someone else too: theirs
            # now, under their key. Shredded with this patient's key, another's document (an
            # upload, a producer's file sent for both) lost its file, which told them that
            # someone holding the same bytes had erased their account.
            store.hand_over(sha, others[0])
            continue
        if sha in linked and owner != patient_id:
            # An input holding this patient's data not under their key (a batch of several
            # patients, under a key of its own): shredded, its row and key with it; the
            # others' documents are kept apart from it.
            shared += 1
        removed_objects += store.delete(sha)
    store.unlink_patient(patient_id)  # links to objects never stored (a failed run) too

    doc_ids = sorted(index.delete_patient(patient_id))
    rules_removed = rules.forget_patient(patient_id)
    key_destroyed = store.destroy_patient_key(patient_id)
    ledger_rows = ledger.forget_patient(patient_id, shas)

    entry = audit.append(
        actor=actor,
        role=role,
        action="erase",
        patient_id=patient_id,
        doc_ids=doc_ids,
        reason="account erasure",
        at=at,
    )
    head = audit.anchor()
    rules.purge_old_versions()
    log.info(
        "erased a patient's record: %d documents, %d objects (%d inputs shared with others), "
        "%d quarantine records",
        len(doc_ids),
        removed_objects,
        shared,
        len(quarantined),
    )
    return ErasureReceipt(
        patient_id=patient_id,
        erased_at=at,
        actor=actor,
        documents=len(doc_ids),
        doc_ids=tuple(doc_ids),
        objects=removed_objects,
        shared_inputs=shared,
        quarantine_records=len(quarantined),
        access_rules=rules_removed,
        ledger_outcomes=ledger_rows,
        key_destroyed=key_destroyed,
        account_closed=True,
        audit_seq=entry.seq,
        audit_head=head,
    )


def erase_patient(
    settings: Settings, patient_id: str, *, actor: str, role: str = "operator"
) -> ErasureReceipt:
    """Erase ``patient_id`` from this install (index, store, quarantine, rules, ledger, key)."""
    from pipeline.crypto import open_encrypted_store

    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    store = open_encrypted_store(settings)
    rules = AccessRules(settings)
    audit = open_audit_log(settings)
    ledger = Ledger(settings)
    try:
        return erase_patient_from(
            patient_id,
            index=index,
            store=store,
            rules=rules,
            audit=audit,
            ledger=ledger,
            ref_key=patient_ref_key(settings),
            actor=actor,
            role=role,
        )
    finally:
        ledger.close()
        audit.close()
        rules.close()
        store.close()
        index.close()
