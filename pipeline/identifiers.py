"""French health identifiers, each defined once: the INS namespaces (OIDs), the FINESS of a
structure and the RPPS of a health professional, their shapes and their national-id forms.

Read by the parsers (HL7 PID-3, MSH-4, authors; CDA ids), the identity stage (numbers
printed in text), the feeds file, the quality checks, the FHIR API and the generator.
A leaf module: it imports nothing of Carnet's.
"""

from __future__ import annotations

import re

from stdnum import luhn

# The INS namespaces: INS-NIR and INS-NIA (real people), then the INSi test and
# demonstration ones, whose identities are fictitious: an INS qualified so is an INS, and
# never a patient whose record a document may go to.
INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_TEST_OIDS = frozenset({"1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"})
INS_OIDS = frozenset({INS_NIR_OID, "1.2.250.1.213.1.4.9", *INS_TEST_OIDS})
# The same test and demonstration identities as their type says them (HL7 v2 CX.5, FR Core's
# identifier types) or their namespace is named (ASIP-SANTE-INS-NIR-TEST, -DEMO).
INS_TEST_KINDS = frozenset({"INS-NIR-TEST", "INS-NIR-DEMO"})
_TEST_NAMESPACE = re.compile(r"\bINS\b.*[-_ ](?:TEST|DEMO)", re.IGNORECASE)
# National ids (ANS): a professional's is "8" + RPPS, a structure's "1" + FINESS.
RPPS_OID = "1.2.250.1.71.4.2.1"
STRUCTURE_OID = "1.2.250.1.71.4.2.2"

# FINESS: 9 characters, the department first (2A/2B for Corsica), a Luhn key last.
FINESS = r"(?:\d{9}|2[AB]\d{7})"
# RPPS: 11 digits, a Luhn key last.
RPPS = r"\d{11}"
_FINESS = re.compile(FINESS)


def is_test_ins(authority: str | None, kind: str | None) -> bool:
    """Whether a patient identifier is an INS of the test or demonstration namespaces, by
    any of the three ways a sender says it: the OID, the type, the namespace's name."""
    if authority and (authority in INS_TEST_OIDS or _TEST_NAMESPACE.search(authority)):
        return True
    return bool(kind and kind.upper() in INS_TEST_KINDS)


def is_finess(value: str) -> bool:
    """Whether ``value`` has the shape of a FINESS (its key is not checked)."""
    return _FINESS.fullmatch(value) is not None


def _national(value: str, prefix: str, length: int) -> str | None:
    if len(value) == length + 1 and value.startswith(prefix):
        return value[1:]
    return value if len(value) == length else None


def rpps_of(national_id: str) -> str | None:
    """The RPPS in a professional's id: 11 digits, bare or as the national id ("8" + RPPS)."""
    rpps = _national(national_id, "8", 11)
    return rpps if rpps and rpps.isdigit() else None


def finess_of(national_id: str) -> str | None:
    """The FINESS in an id its OID says is a structure's: bare or as the national id
    ("1" + FINESS). Any 9 characters are taken, so that ``finess_ok`` can report a
    malformed one rather than lose it."""
    return _national(national_id, "1", 9)


def finess_ok(finess: str | None) -> bool | None:
    """FINESS well formed: its shape, and its Luhn key when all digits; None when absent."""
    if not finess:
        return None
    if not is_finess(finess):
        return False
    return luhn.is_valid(finess) if finess.isdigit() else True


def rpps_ok(rpps: str | None) -> bool | None:
    """RPPS well formed: 11 digits with a Luhn key; None when absent."""
    if not rpps:
        return None
    return re.fullmatch(RPPS, rpps) is not None and luhn.is_valid(rpps)
