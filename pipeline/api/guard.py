"""What every route goes through: the caller's token, the access decision, the audit entry.

A route never looks at the index before ``decision``/``managing`` said yes, and every
refusal is the same bare 403 (or 404 for a document outside the decision), whether or
not the patient or the document exists. Every refusal is audited, single-document ones
included (``readable``), without the 404 becoming a tell.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from pipeline.access import AccessDecision, AccessRules, Principal, Role, may_see
from pipeline.api.auth import InvalidToken, TokenVerifier
from pipeline.api.schemas import INS_PATTERN
from pipeline.audit import AuditLog
from pipeline.crypto import EncryptedStore
from pipeline.index import DocumentIndex
from pipeline.model import DocumentRecord
from pipeline.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="The portal's signed token (JWT)")


@dataclass
class Services:
    """The backends one app holds open for all its requests."""

    settings: Settings
    index: DocumentIndex
    store: EncryptedStore
    rules: AccessRules
    audit: AuditLog
    verifier: TokenVerifier
    clock: Callable[[], dt.datetime]

    state: Engine | None = None  # the engine ``rules`` and ``audit`` share, when the app opened it

    def close(self) -> None:
        self.rules.close()
        self.audit.close()
        if self.state is not None:
            self.state.dispose()
        self.store.close()
        self.index.close()

    def record(
        self,
        who: Principal,
        action: str,
        patient_id: str,
        *,
        doc_ids: Sequence[str] = (),
        reason: str | None = None,
    ) -> None:
        self.audit.append(
            actor=who.subject,
            actor_name=who.name,
            role=who.role.value,
            action=action,
            patient_id=patient_id,
            doc_ids=doc_ids,
            reason=reason,
            at=self.clock(),
        )


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, from ``Authorization: Bearer <jwt>``; 401 for anything less."""
    unauthorised = HTTPException(
        status_code=401, detail="authentication required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorised
    svc = services(request)
    try:
        return svc.verifier.principal(credentials.credentials)
    except InvalidToken as exc:
        if exc.signed_subject is not None:
            # Signed, yet unusable: a refusal like any other, in the record's history.
            ins = request.path_params.get("ins")
            svc.audit.append(
                actor=exc.signed_subject,
                role="unknown",
                action="denied",
                patient_id=ins if isinstance(ins, str) and re.fullmatch(INS_PATTERN, ins) else None,
                reason=f"invalid_token_claims: {exc}",
                at=svc.clock(),
            )
        raise unauthorised from None


Caller = Annotated[Principal, Depends(principal)]
Svc = Annotated[Services, Depends(services)]

FORBIDDEN = HTTPException(status_code=403, detail="access denied")
NOT_FOUND = HTTPException(status_code=404, detail="not found")


def decision(svc: Services, who: Principal, patient_id: str) -> AccessDecision:
    """The caller's access to the record; a refusal is audited (the patient sees attempts)."""
    d = svc.rules.decide(who, patient_id, svc.clock())
    if not d.allowed:
        svc.record(who, "denied", patient_id, reason=d.via)
        raise FORBIDDEN
    return d


def readable(
    svc: Services, who: Principal, d: AccessDecision, patient_id: str, doc_id: str, action: str
) -> DocumentRecord:
    """The document if it is within ``d``; else the refusal is audited and the answer is
    the same 404 as for a document that does not exist.

    A refused existing document is audited with its id (the record's owner may see who
    tried it; ``/history`` withholds ids its reader may not see); a made-up id is audited
    without it, so invented ids never enter the patient's history.
    """
    record = svc.index.get(patient_id, doc_id)
    # One reason for both refusals, the answer the caller got: the history withholds the id
    # of a document its reader may not see, and a reason of its own would still tell it
    # from a made-up id. The audit log itself tells them apart by the id.
    reason = f"{action}: not found"
    # A document its producer withdrew is no one's to read any more (it stays stored).
    if record is None or record.withdrawn_at is not None:
        svc.record(who, "denied", patient_id, reason=reason)
        raise NOT_FOUND
    if not may_see(record, d):
        svc.record(who, "denied", patient_id, doc_ids=[doc_id], reason=reason)
        raise NOT_FOUND
    return record


def managing(svc: Services, who: Principal, patient_id: str) -> AccessDecision:
    """Only the patient, or a minor's legal representative, manages the record."""
    d = svc.rules.decide(who, patient_id, svc.clock())
    if not d.allowed or who.role not in (Role.PATIENT, Role.REPRESENTATIVE):
        svc.record(who, "denied", patient_id, reason=d.via if not d.allowed else "not_a_manager")
        raise FORBIDDEN
    return d


def uploading(svc: Services, who: Principal, patient_id: str) -> AccessDecision:
    """Who may add documents to the record: the patient, a minor's representative, a caregiver
    whose delegation includes uploads (``AccessDecision.may_upload``)."""
    d = svc.rules.decide(who, patient_id, svc.clock())
    if not d.may_upload:
        svc.record(who, "denied", patient_id, reason=d.via if not d.allowed else "upload_not_delegated")
        raise FORBIDDEN
    return d
