"""Patient identity: the INS is the only patient key, and a document is never filed
under a guessed patient.

The INS (identifiant national de santé) is the 13-character NIR plus a 2-digit key
``97 - (NIR mod 97)``, with Corsican departments 2A→19 and 2B→18 for the computation.
``stdnum.fr.nir`` (python-stdnum) implements exactly that check; we use it rather than
our own arithmetic.

Order of evidence: structured identifiers first (HL7 PID-3, CDA recordTarget), then
identifiers printed in the text. When both exist and disagree, the document is rejected
(``identity_conflict``) instead of picking one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stdnum.exceptions import ValidationError
from stdnum.fr import nir

from pipeline.errors import InvalidPatientId
from pipeline.model import ParsedDocument, PatientIdentifier, Problem, Reason

# OIDs of the INS namespaces: INS-NIR (production), then the INS-NIA and test NIR OIDs.
INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10",
                      "1.2.250.1.213.1.4.11"})
INS_KINDS = frozenset({"INS", "INS-NIR", "INS-C", "NIR", "INS-NIA"})

# A NIR printed with any common spacing: "2 84 05 75 123 456 78", "284057512345678",
# "2 84 05 2A 123 456 - 78". Groups: sex, year, month, department (2 chars incl. 2A/2B),
# commune (3), order (3), key (2).
_PRINTED_NIR = re.compile(
    r"(?<![0-9A-Za-z])[1-478](?:[ .]?\d){4}[ .]?(?:2[AB]|\d[ .]?\d)(?:[ .]?\d){6}"
    r"[ .]?(?:[-\u2013/][ .]?)?\d[ .]?\d(?![0-9])",
    re.IGNORECASE,
)
# Labels that announce a patient identifier in printed text.
_LABEL = re.compile(r"\b(?:INS(?:-NIR|-C)?|NIR|N°\s*(?:de\s+)?S(?:\.|écurité)?\s*S(?:\.|ociale)?|"
                    r"No?\s*SS|Matricule\s+INS)\b\s*[:.]?", re.IGNORECASE)

_RPPS_TEXT = re.compile(r"\bRPPS\s*(?:n°|no|:)?\s*[:.]?\s*(\d{11})\b", re.IGNORECASE)
_FINESS_TEXT = re.compile(r"\bFINESS\s*(?:n°|no|:)?\s*[:.]?\s*(\d{9}|2[AB]\d{7})\b", re.IGNORECASE)


def normalize_ins(value: str) -> str:
    """Remove spaces, dots and dashes; upper-case (2a → 2A)."""
    return re.sub(r"[\s.\-–/]", "", value).upper()


def is_valid_ins(value: str) -> bool:
    """True when ``value`` is a 15-character INS with a correct key."""
    compact = normalize_ins(value)
    if len(compact) != 15:
        return False
    try:
        nir.validate(compact)
    except ValidationError:
        return False
    return True


def require_ins(value: str) -> str:
    """Return the compact INS or raise ``InvalidPatientId`` (for ids given by callers)."""
    compact = normalize_ins(value)
    if not is_valid_ins(compact):
        raise InvalidPatientId(
            f"{value!r} is not a valid INS (15 characters: 13-character NIR and 2-digit key)"
        )
    return compact


@dataclass(frozen=True)
class IdentityResult:
    """The patient a document belongs to, or the problems that prevent filing it."""

    patient_id: str | None
    problems: tuple[Problem, ...] = ()
    evidence: str | None = None  # "structured" or "printed"


def _is_ins_identifier(ident: PatientIdentifier) -> bool:
    if ident.authority and ident.authority in INS_OIDS:
        return True
    return bool(ident.kind and ident.kind.upper() in INS_KINDS)


def find_printed_ins(text: str) -> list[str]:
    """Candidate INS printed in ``text`` (compact form, in order, de-duplicated).

    A 15-character run is a candidate only when a label (INS, NIR, N° SS…) stands shortly
    before it: unlabelled digit runs (phone numbers, order numbers) are never taken for
    patient identifiers.
    """
    found: list[str] = []
    for m in _PRINTED_NIR.finditer(text):
        candidate = normalize_ins(m.group(0))
        window = text[max(0, m.start() - 40) : m.start()]
        labelled = _LABEL.search(window) is not None
        if not labelled:
            continue
        if candidate not in found:
            found.append(candidate)
    return found


def identify_patient(doc: ParsedDocument) -> IdentityResult:
    """Decide which patient ``doc`` belongs to from its structured and printed identifiers."""
    structured = [normalize_ins(i.value) for i in doc.patient_ids if _is_ins_identifier(i)]
    structured = list(dict.fromkeys(s for s in structured if s))
    printed = find_printed_ins(doc.text)

    valid_structured = [s for s in structured if is_valid_ins(s)]
    valid_printed = [p for p in printed if is_valid_ins(p)]

    if len(set(valid_structured)) > 1:
        return IdentityResult(None, (Problem(code=Reason.IDENTITY_CONFLICT,
            message=f"the source gives {len(set(valid_structured))} different INS"),))
    if valid_structured:
        ins = valid_structured[0]
        others = [p for p in valid_printed if p != ins]
        if others:
            return IdentityResult(None, (Problem(code=Reason.IDENTITY_CONFLICT,
                message="structured INS and INS printed in the document disagree"),))
        return IdentityResult(ins, evidence="structured")
    if structured:
        # A structured INS with a bad key is never overridden by printed text.
        return IdentityResult(None, (Problem(code=Reason.INVALID_INS_KEY,
            message="the INS given in the structured patient identifier fails its key check"),))
    if len(set(valid_printed)) > 1:
        return IdentityResult(None, (Problem(code=Reason.IDENTITY_CONFLICT,
            message="the document prints several different INS"),))
    if valid_printed:
        return IdentityResult(valid_printed[0], evidence="printed")
    if printed:
        return IdentityResult(None, (Problem(code=Reason.INVALID_INS_KEY,
            message="the INS printed in the document fails its key check"),))
    return IdentityResult(None, (Problem(code=Reason.MISSING_INS,
        message="no INS found in structured fields or in the text"),))


def find_rpps(text: str) -> str | None:
    """The author's RPPS number (11 digits) printed after an ``RPPS`` label."""
    m = _RPPS_TEXT.search(text)
    return m.group(1) if m else None


def find_finess(text: str) -> str | None:
    """The producer's FINESS number (9 characters) printed after a ``FINESS`` label."""
    m = _FINESS_TEXT.search(text)
    return m.group(1).upper() if m else None
