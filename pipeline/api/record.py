"""Routes over the record itself: access history, who may see it, break-the-glass, erasure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.exceptions import RequestValidationError

from pipeline.access import ACCOUNT_CLOSED, BirthDateMismatch, Grant, Role, visible_ids
from pipeline.api.guard import FORBIDDEN, Caller, Svc, decision, managing
from pipeline.api.schemas import (
    ERRORS,
    INS_PATTERN,
    PERSON_PATTERN,
    RPPS_PATTERN,
    BreakGlassOpened,
    BreakGlassRequest,
    DelegationRequest,
    Done,
    HistoryEntry,
    RepresentativeRequest,
)
from pipeline.crypto import patient_ref, patient_ref_key
from pipeline.erasure import ErasureReceipt, erase_patient_from
from pipeline.ledger import Ledger
from pipeline.model import Reason, Visibility

router = APIRouter(prefix="/patients/{ins}", responses=ERRORS)

Ins = Annotated[str, Path(pattern=INS_PATTERN, description="The patient's INS")]
Rpps = Annotated[str, Path(pattern=RPPS_PATTERN, description="The professional's RPPS number")]
Person = Annotated[str, Path(pattern=PERSON_PATTERN, description="A caregiver's or representative's id")]


@router.get(
    "/history",
    response_model=list[HistoryEntry],
    tags=["record"],
    summary="Who accessed the record, newest first",
)
def access_history(
    ins: Ins,
    who: Caller,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[HistoryEntry]:
    d = managing(svc, who, ins)
    entries = svc.audit.for_patient(ins)[::-1]
    shown = visible_ids(svc.index, d, ins, [i for e in entries for i in e.doc_ids])
    # An access to documents the reader may not see is left out whole: kept without its ids,
    # it still said who read something hidden, and when. A refusal stays (without the id),
    # as one of a made-up id does: they must read the same.
    kept = [e for e in entries if e.action == "denied" or not e.doc_ids or shown.intersection(e.doc_ids)]
    # A break-the-glass reason is typed freely by the professional: it may say what a minor
    # hid from their parents. Who reads under the representatives' restrictions sees that
    # the emergency access happened, by whom and when, not its reason.
    withhold = Visibility.INVISIBLE_REPRESENTANTS_LEGAUX in d.exclude_visibility
    return [
        HistoryEntry.of(e, shown, reason=None if withhold and e.action == "break_glass" else e.reason)
        for e in kept[offset : offset + limit]
    ]


# -- professionals: authorisations and blocks ---------------------------------------------------


@router.get(
    "/authorisations",
    response_model=list[Grant],
    tags=["authorisations"],
    summary="Authorised and blocked professionals",
)
def list_authorisations(ins: Ins, who: Caller, svc: Svc) -> list[Grant]:
    managing(svc, who, ins)
    return svc.rules.authorisations(ins)


@router.put(
    "/authorisations/{rpps}", response_model=Done, tags=["authorisations"], summary="Authorise a professional"
)
def grant_authorisation(ins: Ins, rpps: Rpps, who: Caller, svc: Svc) -> Done:
    managing(svc, who, ins)
    svc.rules.authorise(ins, rpps, svc.clock(), by=who)
    svc.record(who, "grant", ins, reason=f"authorise professional {rpps}")
    return Done(changed=True)


@router.delete(
    "/authorisations/{rpps}",
    response_model=Done,
    tags=["authorisations"],
    summary="Revoke a professional's authorisation",
)
def revoke_authorisation(ins: Ins, rpps: Rpps, who: Caller, svc: Svc) -> Done:
    managing(svc, who, ins)
    changed = svc.rules.revoke_authorisation(ins, rpps, svc.clock())
    svc.record(who, "revoke", ins, reason=f"revoke professional {rpps}")
    return Done(changed=changed)


@router.put(
    "/blocks/{rpps}",
    response_model=Done,
    tags=["authorisations"],
    summary="Block a professional (no access at all, not even in an emergency)",
)
def block_professional(ins: Ins, rpps: Rpps, who: Caller, svc: Svc) -> Done:
    managing(svc, who, ins)
    svc.rules.block(ins, rpps, svc.clock())
    svc.record(who, "grant", ins, reason=f"block professional {rpps}")
    return Done(changed=True)


@router.delete("/blocks/{rpps}", response_model=Done, tags=["authorisations"], summary="Lift a block")
def unblock_professional(ins: Ins, rpps: Rpps, who: Caller, svc: Svc) -> Done:
    managing(svc, who, ins)
    changed = svc.rules.unblock(ins, rpps)
    svc.record(who, "revoke", ins, reason=f"unblock professional {rpps}")
    return Done(changed=changed)


# -- caregivers and representatives --------------------------------------------------------------


@router.get(
    "/delegations",
    response_model=list[Grant],
    tags=["delegations"],
    summary="Caregivers and what they were delegated",
)
def list_delegations(ins: Ins, who: Caller, svc: Svc) -> list[Grant]:
    managing(svc, who, ins)
    return svc.rules.delegations(ins)


@router.put(
    "/delegations/{caregiver_id}",
    response_model=Done,
    tags=["delegations"],
    summary="Delegate all documents, or chosen classes, to a caregiver",
)
def delegate(ins: Ins, caregiver_id: Person, body: DelegationRequest, who: Caller, svc: Svc) -> Done:
    managing(svc, who, ins)
    svc.rules.delegate(ins, caregiver_id, body.classes, svc.clock(), by=who, upload=body.upload)
    what = "all classes" if body.classes is None else ",".join(c.value for c in body.classes)
    what += ", uploads" if body.upload else ""
    svc.record(who, "grant", ins, reason=f"delegate to caregiver {caregiver_id}: {what}")
    return Done(changed=True)


@router.delete(
    "/delegations/{caregiver_id}",
    response_model=Done,
    tags=["delegations"],
    summary="Revoke a caregiver's delegation",
)
def revoke_delegation(ins: Ins, caregiver_id: Person, who: Caller, svc: Svc) -> Done:
    managing(svc, who, ins)
    changed = svc.rules.revoke_delegation(ins, caregiver_id, svc.clock())
    svc.record(who, "revoke", ins, reason=f"revoke caregiver {caregiver_id}")
    return Done(changed=changed)


@router.get(
    "/representatives",
    response_model=list[Grant],
    tags=["representatives"],
    summary="A minor's legal representatives (until the minor is 18)",
)
def list_representatives(ins: Ins, who: Caller, svc: Svc) -> list[Grant]:
    managing(svc, who, ins)
    return svc.rules.representatives(ins, svc.clock())


@router.put(
    "/representatives/{person_id}",
    response_model=Done,
    tags=["representatives"],
    summary="Register a legal representative",
)
def add_representative(
    ins: Ins, person_id: Person, body: RepresentativeRequest, who: Caller, svc: Svc
) -> Done:
    managing(svc, who, ins)
    try:
        svc.rules.add_representative(ins, person_id, svc.clock(), body.patient_birth_date)
    except BirthDateMismatch as exc:
        svc.record(who, "denied", ins, reason="birth_date_contradicts_record")
        raise RequestValidationError(
            [{"loc": ("body", "patient_birth_date"), "msg": str(exc), "type": "value_error"}]
        ) from None
    svc.record(who, "grant", ins, reason=f"representative {person_id}")
    return Done(changed=True)


@router.delete(
    "/representatives/{person_id}",
    response_model=Done,
    tags=["representatives"],
    summary="Remove a legal representative",
)
def remove_representative(ins: Ins, person_id: Person, who: Caller, svc: Svc) -> Done:
    managing(svc, who, ins)
    changed = svc.rules.remove_representative(ins, person_id)
    svc.record(who, "revoke", ins, reason=f"remove representative {person_id}")
    return Done(changed=changed)


# -- emergencies and erasure ---------------------------------------------------------------------


@router.post(
    "/break-glass",
    response_model=BreakGlassOpened,
    tags=["record"],
    summary="Emergency access by a professional, with a reason (time-limited, audited)",
)
def break_glass(ins: Ins, body: BreakGlassRequest, who: Caller, svc: Svc) -> BreakGlassOpened:
    if who.role is not Role.PROFESSIONAL:
        svc.record(who, "denied", ins, reason="break_glass_needs_professional")
        raise FORBIDDEN
    now = svc.clock()
    # Nothing is opened for a blocked professional. A closed account is opened as any INS
    # is (``AccessRules.open_break_glass``), showing nothing: refused, it told any
    # professional who had erased their account.
    if (refused := svc.rules.decide(who, ins, now).via) == "blocked":
        svc.record(who, "denied", ins, reason=refused)
        raise FORBIDDEN
    # Audited before it is opened: an audit log that cannot be written refuses the opening
    # (answered 503), never leaves one running that no entry explains. The reason verbatim,
    # but on an erased account: typed freely, it may name the patient, whom nobody reads.
    closed = svc.rules.closure(patient_ref(patient_ref_key(svc.settings), ins)) is Reason.ACCOUNT_CLOSED
    svc.record(who, "break_glass", ins, reason=ACCOUNT_CLOSED if closed else body.reason)
    expires = svc.rules.open_break_glass(ins, who.subject, body.reason, now)
    decision(svc, who, ins)  # the opening must grant access, or nothing was opened
    return BreakGlassOpened(patient_id=ins, expires_at=expires)


@router.delete(
    "",
    response_model=ErasureReceipt,
    tags=["record"],
    summary="Erase the patient's account and every document (patient only)",
)
def erase_record(ins: Ins, who: Caller, svc: Svc) -> ErasureReceipt:
    if who.role is not Role.PATIENT or who.subject != ins:
        svc.record(who, "denied", ins, reason="erasure_needs_the_patient")
        raise FORBIDDEN
    ledger = Ledger(svc.settings)
    try:
        return erase_patient_from(
            ins,
            index=svc.index,
            store=svc.store,
            rules=svc.rules,
            audit=svc.audit,
            ledger=ledger,
            ref_key=patient_ref_key(svc.settings),
            actor=who.subject,
            role=who.role.value,
            now=svc.clock(),
        )
    finally:
        ledger.close()
