"""Erasure of a patient's account: every trace of their documents goes, and a receipt says what.

Removed: the patient's documents from the index, their stored objects (the ones encrypted
under their key, the ones their documents point to, the raw inputs of their quarantine
records), those quarantine records, their grants, blocks, delegations, representatives
and break-the-glass openings, and their data key (so any backup copy of their objects is
unreadable). The audit log keeps its entries (who accessed the record, never contents):
it is append-only by design, and the erasure itself is appended to it.
"""

from __future__ import annotations

import datetime as dt
import logging

from pipeline.access import AccessRules, access_db_path
from pipeline.audit import AuditLog, audit_log_path
from pipeline.index import DocumentIndex, open_index
from pipeline.ledger import Ledger
from pipeline.model import Frozen, SearchQuery
from pipeline.settings import Settings
from pipeline.store import DocumentStore

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
    quarantine_records: int
    access_rules: int
    key_destroyed: bool
    audit_seq: int


def _indexed_content(index: DocumentIndex, patient_id: str) -> set[str]:
    """Content hashes of every document of the patient, superseded and withdrawn included."""
    shas: set[str] = set()
    offset = 0
    while True:
        result = index.search(SearchQuery(patient_id=patient_id, include_superseded=True,
                                          include_withdrawn=True,
                                          limit=_PAGE, offset=offset))
        for hit in result.hits:
            record = index.get(patient_id, hit.doc_id)
            if record is not None:
                shas.add(record.content_sha256)
        offset += len(result.hits)
        if not result.hits or offset >= result.total:
            return shas


def erase_patient_from(
    patient_id: str, *, index: DocumentIndex, store: DocumentStore, rules: AccessRules,
    audit: AuditLog, actor: str, role: str = "operator", now: dt.datetime | None = None,
) -> ErasureReceipt:
    """Erase with already opened backends (the API holds them open)."""
    at = now or dt.datetime.now(dt.UTC)
    shas = _indexed_content(index, patient_id)

    quarantined = [q for q in store.list_quarantine() if q.patient_id == patient_id]
    for q in quarantined:
        shas.add(q.content_sha256)
        store.remove_quarantine(q.quarantine_id)

    owner_of = getattr(store, "owner_of", None)
    objects_of = getattr(store, "objects_of", None)
    if callable(objects_of):
        shas.update(objects_of(patient_id))
    removed_objects = 0
    for sha in sorted(shas):
        owner = owner_of(sha) if callable(owner_of) else None
        if owner is not None and owner != patient_id:
            # The same bytes were filed for someone else first: they are that person's too.
            log.warning("object %s is also another patient's; kept", sha)
            continue
        removed_objects += store.delete(sha)

    doc_ids = sorted(index.delete_patient(patient_id))
    rules_removed = rules.forget_patient(patient_id)
    destroy = getattr(store, "destroy_patient_key", None)
    key_destroyed = bool(destroy(patient_id)) if callable(destroy) else False

    entry = audit.append(actor=actor, role=role, action="erase", patient_id=patient_id,
                         doc_ids=doc_ids, reason="account erasure", at=at)
    log.info("erased a patient's record: %d documents, %d objects, %d quarantine records",
             len(doc_ids), removed_objects, len(quarantined))
    return ErasureReceipt(
        patient_id=patient_id, erased_at=at, actor=actor, documents=len(doc_ids),
        doc_ids=tuple(doc_ids), objects=removed_objects, quarantine_records=len(quarantined),
        access_rules=rules_removed, key_destroyed=key_destroyed, audit_seq=entry.seq,
    )


def erase_patient(settings: Settings, patient_id: str, *, actor: str,
                  role: str = "operator") -> ErasureReceipt:
    """Erase ``patient_id`` from this install (index, encrypted store, quarantine, rules, key)."""
    from pipeline.crypto import open_encrypted_store

    index = open_index(settings.effective_index_url, alias=settings.es_index_alias)
    store = open_encrypted_store(settings)
    rules = AccessRules(access_db_path(settings.data_dir))
    try:
        receipt = erase_patient_from(patient_id, index=index, store=store, rules=rules,
                                     audit=AuditLog(audit_log_path(settings.data_dir)),
                                     actor=actor, role=role)
        ledger = Ledger(settings.ledger_path)
        try:
            ledger.forget_patient(patient_id)
        finally:
            ledger.close()
        return receipt
    finally:
        rules.close()
        store.close()
        index.close()
