"""Synthetic people and organisations: patients with a consistent INS, professionals with
an RPPS number, producers with a FINESS number. Everything is made up from a seeded
``random.Random``; nothing here identifies a real person.

The INS is the 13-character NIR (sex, birth year, birth month, department, commune,
order) followed by its key ``97 - (NIR mod 97)``, Corsican departments 2A/2B counting as
19/18 for the computation.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field, replace
from enum import StrEnum

FAMILY_NAMES = (
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "PETIT",
    "DURAND",
    "LEROY",
    "MOREAU",
    "SIMON",
    "LAURENT",
    "LEFEBVRE",
    "MICHEL",
    "GARCIA",
    "DAVID",
    "BERTRAND",
    "ROUX",
    "VINCENT",
    "FOURNIER",
    "MOREL",
    "GIRARD",
    "ANDRE",
    "MERCIER",
    "DUPONT",
    "LAMBERT",
    "BONNET",
    "FRANCOIS",
    "MARTINEZ",
    "LEGRAND",
    "GARNIER",
    "FAURE",
    "ROUSSEAU",
    "BLANC",
    "GUERIN",
    "MULLER",
    "HENRY",
    "ROUSSEL",
    "NICOLAS",
    "PERRIN",
    "MORIN",
    "MATHIEU",
    "CLEMENT",
    "GAUTHIER",
    "DUMONT",
    "LOPEZ",
    "FONTAINE",
    "CHEVALIER",
    "ROBIN",
    "MASSON",
    "SANTONI",
    "CASANOVA",
)
CORSICAN_FAMILY_NAMES = ("SANTONI", "CASANOVA", "PIETRI", "ALBERTINI", "LUCIANI", "FILIPPI")
FEMALE_NAMES = (
    "Marie",
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Inès",
    "Sarah",
    "Julie",
    "Claire",
    "Sophie",
    "Nathalie",
    "Isabelle",
    "Élodie",
    "Aurélie",
    "Émilie",
    "Anne",
    "Hélène",
    "Lucie",
    "Margaux",
    "Louise",
    "Jeanne",
    "Françoise",
    "Monique",
    "Catherine",
    "Valérie",
    "Sandrine",
    "Zoé",
)
MALE_NAMES = (
    "Jean",
    "Pierre",
    "Michel",
    "Philippe",
    "Alain",
    "Nicolas",
    "Julien",
    "Thomas",
    "Lucas",
    "Hugo",
    "Louis",
    "Gabriel",
    "Antoine",
    "François",
    "Éric",
    "Laurent",
    "Olivier",
    "Sébastien",
    "Mathieu",
    "Baptiste",
    "Théo",
    "Jérôme",
    "Bernard",
    "André",
    "Paul",
    "Maxime",
    "Noé",
)
# Mainland departments (two digits); Corsica is handled apart (2A, 2B).
DEPARTMENTS = (
    "01",
    "06",
    "13",
    "14",
    "21",
    "29",
    "31",
    "33",
    "34",
    "35",
    "38",
    "44",
    "45",
    "49",
    "54",
    "57",
    "59",
    "62",
    "63",
    "67",
    "69",
    "72",
    "75",
    "76",
    "77",
    "78",
    "83",
    "84",
    "91",
    "92",
    "93",
    "94",
)


def nir_key(nir13: str) -> str:
    """The 2-digit INS key of a 13-character NIR (2A→19, 2B→18 for the computation)."""
    digits = nir13.upper().replace("2A", "19").replace("2B", "18")
    return f"{97 - int(digits) % 97:02d}"


def wrong_key(nir13: str) -> str:
    """A 2-digit key that is *not* the right one for ``nir13`` (for rejected samples)."""
    right = int(nir_key(nir13))
    return f"{right + 1 if right < 97 else right - 1:02d}"


def luhn_digit(body: str) -> str:
    """The Luhn check digit of a digit string (used by RPPS and FINESS numbers)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        n = int(ch)
        if i % 2 == 0:  # doubled positions, counted from the check digit's left neighbour
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return str((10 - total % 10) % 10)


def format_ins(ins: str, style: str) -> str:
    """The INS as printed on paper, in one of the styles producers use.

    ``spaced``: ``2 84 05 75 123 456 78``; ``compact``: ``284057512345678``;
    ``dashed``: ``2 84 05 75 123 456 - 78``; ``wide-key``: ``2 84 05 75 123 456  78`` (two
    spaces before the key); ``nbsp``: the groups joined by no-break spaces (U+00A0), as
    word processors keep a number on one line.
    """
    groups = (ins[0], ins[1:3], ins[3:5], ins[5:7], ins[7:10], ins[10:13])
    if style == "spaced":
        return " ".join(groups) + " " + ins[13:]
    if style == "wide-key":
        return " ".join(groups) + "  " + ins[13:]
    if style == "nbsp":
        return "\u00a0".join((*groups, ins[13:]))
    if style == "compact":
        return ins
    if style == "dashed":
        return " ".join(groups) + " - " + ins[13:]
    raise ValueError(f"unknown INS print style {style!r}")


# Label and style pairs seen on French reports.
INS_PRINTS = (
    ("INS :", "spaced"),
    ("N° SS :", "compact"),
    ("NIR", "dashed"),
    ("INS :", "wide-key"),
    ("N° SS :", "nbsp"),
)


@dataclass(frozen=True)
class Patient:
    family_name: str
    given_name: str
    sex: str  # "M" or "F"
    birth_date: dt.date
    department: str  # birth department, "2A"/"2B" for Corsica
    nir: str  # 13 characters
    city: str = ""

    @property
    def ins(self) -> str:
        return self.nir + nir_key(self.nir)

    @property
    def bad_ins(self) -> str:
        """The same NIR with a wrong key."""
        return self.nir + wrong_key(self.nir)

    @property
    def display_name(self) -> str:
        return f"{self.family_name} {self.given_name}"

    def age_on(self, day: dt.date) -> int:
        years = day.year - self.birth_date.year
        return years - ((day.month, day.day) < (self.birth_date.month, self.birth_date.day))


@dataclass(frozen=True)
class Professional:
    title: str  # "Dr"
    given_name: str
    family_name: str
    rpps: str  # 11 digits
    specialty: str

    @property
    def display_name(self) -> str:
        return f"{self.title} {self.given_name} {self.family_name}"


class ProducerKind(StrEnum):
    LAB = "lab"
    RADIOLOGY = "radiology"
    GP = "gp"
    HOSPITAL = "hospital"


@dataclass(frozen=True)
class Producer:
    """One producer of the feed: its folder name is ``producer_id``."""

    producer_id: str
    name: str
    kind: ProducerKind
    finess: str
    city: str
    address: str
    phone: str
    specialty: str  # of its professionals
    hl7_charset: str = "UNICODE UTF-8"  # MSH-18 for labs sending HL7
    uses_manifest: bool = False
    oid: str = "1.2.250.1.999.1"  # the producer's own OID root (IPP, document ids)
    professionals: tuple[Professional, ...] = field(default=())


def finess(department: str, serial: int) -> str:
    """A FINESS-shaped number: department, 6-digit serial, Luhn check digit."""
    body = f"{department}{serial:06d}"
    return body + luhn_digit(body)


def rpps(serial: int) -> str:
    """An RPPS-shaped number: ``10``, 8-digit serial, Luhn check digit (11 digits)."""
    body = f"10{serial:08d}"
    return body + luhn_digit(body)


DEFAULT_PRODUCERS: tuple[Producer, ...] = (
    Producer(
        "labo-biolyon",
        "Laboratoire BioLyon Confluence",
        ProducerKind.LAB,
        finess("69", 412031),
        "Lyon",
        "12 cours Charlemagne, 69002 Lyon",
        "04 78 37 12 40",
        "Biologie médicale",
        hl7_charset="UNICODE UTF-8",
        oid="1.2.250.1.999.1.11",
    ),
    Producer(
        "labo-oceane",
        "Laboratoire Océane Biologie",
        ProducerKind.LAB,
        finess("44", 203357),
        "Nantes",
        "8 quai de la Fosse, 44000 Nantes",
        "02 40 73 55 18",
        "Biologie médicale",
        hl7_charset="8859/1",
        uses_manifest=True,
        oid="1.2.250.1.999.1.12",
    ),
    Producer(
        "imagerie-du-parc",
        "Centre d'imagerie médicale du Parc",
        ProducerKind.RADIOLOGY,
        finess("13", 318840),
        "Marseille",
        "45 avenue du Prado, 13008 Marseille",
        "04 91 22 64 10",
        "Radiologie",
        oid="1.2.250.1.999.1.13",
    ),
    Producer(
        "cabinet-des-tilleuls",
        "Cabinet médical des Tilleuls",
        ProducerKind.GP,
        finess("35", 104572),
        "Rennes",
        "3 rue des Tilleuls, 35000 Rennes",
        "02 99 30 41 27",
        "Médecine générale",
        oid="1.2.250.1.999.1.14",
    ),
    Producer(
        "ch-val-de-loire",
        "Centre hospitalier du Val de Loire",
        ProducerKind.HOSPITAL,
        finess("37", 100049),
        "Tours",
        "2 boulevard Tonnellé, 37000 Tours",
        "02 47 47 47 47",
        "Biologie médicale",
        oid="1.2.250.1.999.1.15",
    ),
)


def with_professionals(producer: Producer, rng: random.Random, count: int = 2) -> Producer:
    """``producer`` with ``count`` made-up professionals of its specialty."""
    if producer.professionals:
        return producer
    pros = []
    for _ in range(count):
        female = rng.random() < 0.5
        pros.append(
            Professional(
                title="Dr",
                given_name=rng.choice(FEMALE_NAMES if female else MALE_NAMES),
                family_name=rng.choice(FAMILY_NAMES).capitalize(),
                rpps=rpps(rng.randrange(10_000_000, 99_999_999)),
                specialty=producer.specialty,
            )
        )
    return replace(producer, professionals=tuple(pros))


def make_patients(rng: random.Random, count: int, *, reference: dt.date) -> list[Patient]:
    """``count`` patients with unique valid INS: two minors and Corsican births included."""
    patients: list[Patient] = []
    seen: set[str] = set()
    minors = min(2, max(0, count - 1))
    for i in range(count):
        sex = "F" if rng.random() < 0.52 else "M"
        if i < minors:
            birth = reference - dt.timedelta(days=rng.randrange(4 * 365, 16 * 365))
        else:
            birth = dt.date(rng.randrange(1938, 2003), 1, 1) + dt.timedelta(days=rng.randrange(365))
        if i in (2, 3) and count > 3:
            department = "2A" if i == 2 else "2B"
            family = rng.choice(CORSICAN_FAMILY_NAMES)
        else:
            department = rng.choice(DEPARTMENTS)
            family = rng.choice(FAMILY_NAMES)
        given = rng.choice(FEMALE_NAMES if sex == "F" else MALE_NAMES)
        while True:
            nir = (
                f"{1 if sex == 'M' else 2}{birth.year % 100:02d}{birth.month:02d}{department}"
                f"{rng.randrange(1, 990):03d}{rng.randrange(1, 999):03d}"
            )
            if nir not in seen:
                break
        seen.add(nir)
        patients.append(
            Patient(
                family_name=family,
                given_name=given,
                sex=sex,
                birth_date=birth,
                department=department,
                nir=nir,
            )
        )
    return patients
