"""Every cell of the confidentiality table (docs/access-rules.md), through real HTTP, on
both index backends.

Each cell gets its own patient holding the same five documents; the cell's set-up goes
through the API as the patient (or professional) would do it, then the asker's view is
checked three ways: the search listing, ``GET`` of each document and its download.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.access import Principal
from pipeline.model import DocClass, Visibility
from tests.api.conftest import (
    NOW,
    Api,
    caregiver,
    make_ins,
    patient,
    professional,
    representative,
    running_api,
)

DOCS: dict[str, tuple[DocClass, tuple[Visibility, ...]]] = {
    "plain": (DocClass.BIOLOGY, ()),
    "inv-patient": (DocClass.BIOLOGY, (Visibility.INVISIBLE_PATIENT,)),
    "masked": (DocClass.IMAGING, (Visibility.MASQUE_PS,)),
    "inv-rep": (DocClass.PRESCRIPTION, (Visibility.INVISIBLE_REPRESENTANTS_LEGAUX,)),
    "rx": (DocClass.PRESCRIPTION, ()),
}
ALL = frozenset(DOCS)
PRO, OTHER_PRO = professional("10101234567"), professional("10109999999")
AIDANT, PARENT = caregiver("aidant-1"), representative("parent-1")

Step = Callable[[Api, str], None]


def ok(response: object) -> None:
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]


def grant(a: Api, ins: str) -> None:
    ok(a.put(patient(ins), f"/patients/{ins}/authorisations/{PRO.subject}"))


def revoke(a: Api, ins: str) -> None:
    ok(a.delete(patient(ins), f"/patients/{ins}/authorisations/{PRO.subject}"))


def block(a: Api, ins: str) -> None:
    ok(a.put(patient(ins), f"/patients/{ins}/blocks/{PRO.subject}"))


def break_glass(a: Api, ins: str) -> None:
    ok(a.post(PRO, f"/patients/{ins}/break-glass", json={"reason": "urgence vitale, patient inconscient"}))


def break_glass_refused(a: Api, ins: str) -> None:
    r = a.post(PRO, f"/patients/{ins}/break-glass", json={"reason": "urgence vitale"})
    assert r.status_code == 403


def later(hours: float) -> Step:
    def step(a: Api, ins: str) -> None:
        a.clock.now = NOW + dt.timedelta(hours=hours)

    return step


def delegate(classes: list[str] | None) -> Step:
    def step(a: Api, ins: str) -> None:
        ok(a.put(patient(ins), f"/patients/{ins}/delegations/{AIDANT.subject}", json={"classes": classes}))

    return step


def revoke_delegation(a: Api, ins: str) -> None:
    ok(a.delete(patient(ins), f"/patients/{ins}/delegations/{AIDANT.subject}"))


def add_parent(a: Api, ins: str) -> None:
    ok(a.put(patient(ins), f"/patients/{ins}/representatives/{PARENT.subject}", json={}))


def born_on(birth: dt.date) -> Step:
    """The identity traits of the minor's documents give their birth day (as ingestion does)."""

    def step(a: Api, ins: str) -> None:
        assert a.services.rules.record_birth_date(ins, birth, a.clock())

    return step


def parent_delegates(classes: list[str] | None) -> Step:
    def step(a: Api, ins: str) -> None:
        ok(a.put(PARENT, f"/patients/{ins}/delegations/{AIDANT.subject}", json={"classes": classes}))

    return step


def parent_grants(a: Api, ins: str) -> None:
    ok(a.put(PARENT, f"/patients/{ins}/authorisations/{PRO.subject}"))


def remove_parent(a: Api, ins: str) -> None:
    ok(a.delete(patient(ins), f"/patients/{ins}/representatives/{PARENT.subject}"))


def on(day: dt.date) -> Step:
    def step(a: Api, ins: str) -> None:
        a.clock.now = dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)

    return step


def release(name: str) -> Step:
    def step(a: Api, ins: str) -> None:
        ok(a.post(PRO, f"/patients/{ins}/documents/{name}-{ins}/release"))

    return step


def hide(name: str, *, by: Callable[[str], Principal] = patient) -> Step:
    def step(a: Api, ins: str) -> None:
        ok(a.put(by(ins), f"/patients/{ins}/documents/{name}-{ins}/hidden"))

    return step


def unhide(name: str) -> Step:
    def step(a: Api, ins: str) -> None:
        ok(a.delete(patient(ins), f"/patients/{ins}/documents/{name}-{ins}/hidden"))

    return step


OWNER = "owner"  # the asker is the cell's own patient
OTHER_PATIENT = patient(make_ins(999))
MINOR_BIRTH = dt.date(2012, 3, 14)
MINOR = "1203"  # the INS of a minor born in March 2012
MINOR_TRAITS = (born_on(MINOR_BIRTH), add_parent)


@dataclass(frozen=True)
class Cell:
    id: str
    steps: tuple[Step, ...]
    asker: Principal | str
    sees: frozenset[str] | None  # None: denied outright (403)
    born: str = "8505"  # YYMM of the patient's INS


CELLS = [
    # patient
    Cell("patient-sees-all-but-invisible-patient", (), OWNER, ALL - {"inv-patient"}),
    Cell("patient-other-record-denied", (), OTHER_PATIENT, None),
    Cell("patient-sees-released-result", (grant, release("inv-patient")), OWNER, ALL),
    # professional
    Cell("professional-unauthorised-denied", (), PRO, None),
    Cell("professional-authorised-sees-all-but-masked", (grant,), PRO, ALL - {"masked"}),
    Cell("professional-other-rpps-denied", (grant,), OTHER_PRO, None),
    Cell("professional-revoked-denied", (grant, revoke), PRO, None),
    Cell("professional-blocked-denied", (grant, block), PRO, None),
    Cell("professional-hidden-by-patient", (grant, hide("plain")), PRO, ALL - {"masked", "plain"}),
    Cell(
        "professional-unhidden-by-patient",
        (grant, hide("plain"), unhide("plain"), unhide("masked")),
        PRO,
        ALL,
    ),
    # break-the-glass
    Cell("break-glass-sees-all-but-masked", (break_glass,), PRO, ALL - {"masked"}),
    Cell("break-glass-still-open-at-3h59", (break_glass, later(3.98)), PRO, ALL - {"masked"}),
    Cell("break-glass-expired-after-4h", (break_glass, later(4.01)), PRO, None),
    Cell("break-glass-blocked-stays-blocked", (block, break_glass_refused), PRO, None),
    # caregiver
    Cell("caregiver-without-delegation-denied", (), AIDANT, None),
    Cell(
        "caregiver-delegated-prescriptions",
        (delegate(["prescription"]),),
        AIDANT,
        frozenset({"inv-rep", "rx"}),
    ),
    Cell("caregiver-delegated-all", (delegate(None),), AIDANT, ALL - {"inv-patient"}),
    Cell("caregiver-revoked-denied", (delegate(None), revoke_delegation), AIDANT, None),
    # legal representatives of a minor
    Cell("representative-of-minor", MINOR_TRAITS, PARENT, ALL - {"inv-rep", "inv-patient"}, MINOR),
    Cell(
        "representative-day-before-18",
        (*MINOR_TRAITS, on(dt.date(2030, 3, 13))),
        PARENT,
        ALL - {"inv-rep", "inv-patient"},
        MINOR,
    ),
    Cell("representative-ends-at-18", (*MINOR_TRAITS, on(dt.date(2030, 3, 14))), PARENT, None, MINOR),
    # Without a trait giving the day, the first of the INS's month counts: never later.
    Cell(
        "representative-ends-at-18-ins-month-only", (add_parent, on(dt.date(2030, 3, 1))), PARENT, None, MINOR
    ),
    Cell("representative-of-an-adult-denied", (add_parent,), PARENT, None),
    Cell("representative-unknown-denied", (), representative("parent-2"), None, MINOR),
    Cell(
        "representative-hides-from-professionals",
        (*MINOR_TRAITS, grant, hide("plain", by=lambda _: PARENT)),
        PRO,
        ALL - {"masked", "plain"},
        MINOR,
    ),
    # what a representative delegates stays under the representatives' restrictions
    Cell(
        "caregiver-of-representative-never-sees-hidden-from-representatives",
        (*MINOR_TRAITS, parent_delegates(None)),
        AIDANT,
        ALL - {"inv-rep", "inv-patient"},
        MINOR,
    ),
    Cell(
        "caregiver-of-representative-ends-with-the-representative",
        (*MINOR_TRAITS, parent_delegates(None), remove_parent),
        AIDANT,
        None,
        MINOR,
    ),
    Cell(
        "professional-of-representative-never-sees-hidden-from-representatives",
        (*MINOR_TRAITS, parent_grants),
        PRO,
        ALL - {"masked", "inv-rep"},
        MINOR,
    ),
    Cell(
        "professional-of-representative-ends-with-the-representative",
        (*MINOR_TRAITS, parent_grants, remove_parent),
        PRO,
        None,
        MINOR,
    ),
    Cell(
        "caregiver-of-minor-ends-at-18",
        (*MINOR_TRAITS, delegate(None), on(dt.date(2030, 3, 14))),
        AIDANT,
        None,
        MINOR,
    ),
    Cell(
        "caregiver-of-minor-day-before-18",
        (*MINOR_TRAITS, delegate(None), on(dt.date(2030, 3, 13))),
        AIDANT,
        ALL - {"inv-patient"},
        MINOR,
    ),
]

_serials = itertools.count(1)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)]
)
def table_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One live API per backend for the whole table (each cell has its own patient)."""
    data_dir: Path = tmp_path_factory.mktemp(f"rules-{request.param}")
    with running_api(data_dir, request.param) as a:
        yield a


def prepare(a: Api, cell: Cell, ins: str) -> Principal:
    """File the table's documents for ``ins``, run the cell's set-up; return who asks."""
    a.clock.now = NOW
    for name, (doc_class, flags) in DOCS.items():
        a.file(ins, f"{name}-{ins}", doc_class=doc_class, visibility=flags, text=f"compte rendu {name}")
    for step in cell.steps:
        step(a, ins)
    asker = patient(ins) if cell.asker == OWNER else cell.asker
    assert isinstance(asker, Principal)
    return asker


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_rules_table(table_api: Api, cell: Cell) -> None:
    a = table_api
    ins = make_ins(next(_serials), cell.born)
    asker = prepare(a, cell, ins)

    listing = a.get(asker, f"/patients/{ins}/documents", params={"limit": 100})
    if cell.sees is None:
        assert listing.status_code == 403 and "hits" not in listing.text
        for name in DOCS:
            for suffix in ("", "/file"):
                r = a.get(asker, f"/patients/{ins}/documents/{name}-{ins}{suffix}")
                assert r.status_code == 403 and ins not in r.text
        return
    assert listing.status_code == 200, listing.text
    seen = {h["doc_id"].removesuffix(f"-{ins}") for h in listing.json()["hits"]}
    assert seen == cell.sees
    assert listing.json()["total"] == len(cell.sees)
    for name in DOCS:
        meta = a.get(asker, f"/patients/{ins}/documents/{name}-{ins}")
        raw = a.get(asker, f"/patients/{ins}/documents/{name}-{ins}/file")
        if name in cell.sees:
            assert meta.status_code == 200 and meta.json()["doc_id"] == f"{name}-{ins}"
            assert raw.status_code == 200
            assert raw.content == f"%PDF-1.4 raw {name}-{ins} compte rendu {name}".encode()
        else:
            # Outside the decision is exactly like absent: same status, same body.
            absent = a.get(asker, f"/patients/{ins}/documents/absent-{ins}")
            assert meta.status_code == raw.status_code == absent.status_code == 404
            assert meta.json() == raw.json() == absent.json()
    # The text search and the class filter are held to the same filters.
    found = a.get(asker, f"/patients/{ins}/documents", params={"q": "compte rendu", "limit": 100}).json()
    assert {h["doc_id"].removesuffix(f"-{ins}") for h in found["hits"]} == cell.sees
    imaging = a.get(asker, f"/patients/{ins}/documents", params={"class": "imaging"}).json()
    assert {h["doc_id"].removesuffix(f"-{ins}") for h in imaging["hits"]} == cell.sees & {"masked"}


def test_a_declared_birth_date_never_moves_the_end_of_representation(table_api: Api) -> None:
    a = table_api
    a.clock.now = NOW
    ins = make_ins(next(_serials), MINOR)
    born_on(MINOR_BIRTH)(a, ins)
    a.file(ins, f"plain-{ins}", text="compte rendu")
    for declared in ("1990-03-14", "2012-04-14", "2012-03-20"):  # other year, month, day
        r = a.put(
            PARENT, f"/patients/{ins}/representatives/{PARENT.subject}", json={"patient_birth_date": declared}
        )
        assert r.status_code == 403  # not (yet) a representative: cannot manage the record
        r = a.put(
            patient(ins),
            f"/patients/{ins}/representatives/{PARENT.subject}",
            json={"patient_birth_date": declared},
        )
        assert r.status_code == 422 and "contradicts" in r.json()["detail"][0]["msg"], r.text
    ok(
        a.put(
            patient(ins),
            f"/patients/{ins}/representatives/{PARENT.subject}",
            json={"patient_birth_date": MINOR_BIRTH.isoformat()},
        )
    )
    # Once a representative, re-registering themselves with a made-up date is refused too.
    r = a.put(
        PARENT, f"/patients/{ins}/representatives/{PARENT.subject}", json={"patient_birth_date": "1990-01-01"}
    )
    assert r.status_code == 422
    reps = a.get(PARENT, f"/patients/{ins}/representatives").json()
    assert [x["until"][:10] for x in reps] == ["2030-03-14"]
    on(dt.date(2030, 3, 14))(a, ins)
    assert a.get(PARENT, f"/patients/{ins}/documents").status_code == 403
