"""Patient identity: the INS is the only patient key, and a document is never filed
under a guessed patient.

The INS (identifiant national de santé) is the 13-character NIR plus a 2-digit key
``97 - (NIR mod 97)``, with Corsican departments 2A→19 and 2B→18 for the computation.
``stdnum.fr.nir`` (python-stdnum) implements exactly that check; we use it rather than
our own arithmetic.

Order of evidence: structured identifiers first (HL7 PID-3, CDA recordTarget), then
identifiers printed in the text. When both exist and disagree, the document is rejected
(``identity_conflict``) instead of picking one.

A printed number counts only after a label, in any whitespace a text layer or OCR gives
(see ``_GAP`` and ``_plausible_layout``), and its label says whose it is
(``PrintedRole``): the patient's (INS, NIR, N° SS, bénéficiaire, patient) or the insured
person's (assuré, ouvrant droit, N° d'assuré, immatriculation). On a child's report the
insured parent's number is set aside, never a conflict; a document printing only the
insured person's number is ``missing_ins``; two different numbers both the patient's stay
``identity_conflict``. A number OCR misread (letters for digits) is never corrected.

A document a patient adds to their own record (``identify_in_record``) may name no one and
be filed there; it may not name anyone else, by a printed INS, a key-less NIR, or a valid
INS whose label was lost.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from stdnum.exceptions import ValidationError
from stdnum.fr import nir

from pipeline.classification import fold
from pipeline.errors import InvalidPatientId
from pipeline.identifiers import FINESS, INS_OIDS, INS_TEST_KINDS, RPPS, is_test_ins
from pipeline.model import IdentitySource, ParsedDocument, PatientIdentifier, Problem, Reason

# Test and demonstration kinds too: erasure finds the documents refused for naming one.
INS_KINDS = frozenset({"INS", "INS-NIR", "INS-C", "NIR", "INS-NIA", *INS_TEST_KINDS})

# What may stand between the characters of a printed INS: any run of whitespace (spaces,
# U+00A0 and U+202F as PDF text layers write them, other Unicode spaces, tabs) holding at
# most one line break (never a blank line), plus the zero-width characters some generators
# insert, and an optional dot, dash or slash ("2-84-05-75-123-456-72", as some software
# prints it). ``_plausible_layout`` then checks where the line breaks
# fall. Possessive quantifiers keep the match linear on hostile input.
_H = r"(?:[^\S\r\n]|[\u200b-\u200d\u2060\ufeff])*+"
_GAP = rf"{_H}(?:(?:\r\n|[\r\n]){_H})?(?:[.\-\u2013/]{_H})?"
# The NIR and key in that spacing: "2 84 05 75 123 456 78", "284057512345678",
# "2 84 05 2A 123 456 - 78", "1 67 01 53 130 889  66". Groups: sex, year, month,
# department (2 chars incl. 2A/2B), commune (3), order (3), key (2).
# The key may stand apart, after a dash, a slash or the word "clé" ("… 456  Clé : 78").
_KEY_SEPARATOR = rf"(?:(?:[-\u2013/]|cl[eé]{_H}:?){_GAP})?"
_PRINTED_NIR = re.compile(
    rf"(?<![0-9A-Za-z])[1-478](?:{_GAP}[0-9]){{4}}{_GAP}(?:2[AB]|[0-9]{_GAP}[0-9])"
    rf"(?:{_GAP}[0-9]){{6}}{_GAP}{_KEY_SEPARATOR}[0-9]{_GAP}[0-9](?![0-9])",
    re.IGNORECASE,
)
# The same number as OCR misreads it on a scan or a photo: letters it takes digits for (O
# and D for 0, l, I and | for 1, Z for 2, S for 5, G and b for 6, T for 7, B for 8, g and q
# for 9). Such a number is never corrected into an INS (that would be a guess): it is an
# INS that cannot be read (``_unreadable``), which no document is filed under.
_MISREAD_DIGITS = "OoDQlIi|!ZzSsGbTBgq"
_D = rf"[0-9{re.escape(_MISREAD_DIGITS)}]"
_MISREAD_NIR = re.compile(
    rf"(?<![0-9A-Za-z]){_D}(?:{_GAP}{_D}){{4}}{_GAP}(?:[2Zz][AB]|{_D}{_GAP}{_D})"
    rf"(?:{_GAP}{_D}){{6}}{_GAP}{_KEY_SEPARATOR}{_D}{_GAP}{_D}(?![0-9A-Za-z])"
)
# A misread changes a few digits: a run with fewer real ones is words, not a number.
_MIN_DIGITS_READ = 11
# The 13-character NIR with no key after it (a social-security number printed alone).
_KEYLESS_NIR = re.compile(
    rf"(?<![0-9A-Za-z])[1-478](?:{_GAP}[0-9]){{4}}{_GAP}(?:2[AB]|[0-9]{_GAP}[0-9])"
    rf"(?:{_GAP}[0-9]){{6}}(?![0-9A-Za-z])(?!{_GAP}{_KEY_SEPARATOR}[0-9]{_GAP}[0-9])",
    re.IGNORECASE,
)
# Labels that announce a person's identifier in printed text (accent-folded, lower case):
# the patient's (INS, NIR, N° SS…) and the insured person's (N° assuré, immatriculation).
# OCR reads the I of INS and NIR as l or 1 as readily as in the number: "lNS", "N1R".
_LABEL = re.compile(
    r"\b(?:[il1]ns(?:-n[il1]r|-c)?|n[il1]r|(?:n[°o]?|numero)\s*(?:de\s+)?s(?:\.|ecurite)?\s*s(?:\.|ociale)?|"
    r"(?:n[°o]|numero)\s*(?:de\s+)?secu|identifiant\s+national\s+de\s+sante|"
    r"matricule\s+ins|(?:n[°o]|numero)\s*(?:d['\u2019]\s*)?assure|immatriculation)\b\s*[:.]?"
)
# "INS" (identifiant national de santé) is by definition the identifier of the person the
# document is about.
_INS_LABEL = re.compile(
    r"\b(?:[il1]ns(?:-n[il1]r|-c)?|matricule\s+ins|identifiant\s+national\s+de\s+sante)\b\s*[:.]?\s*$"
)
# Words that say whose number follows (accent-folded): the insured person's in the noun
# forms that label it ("Assuré :", "de l'assuré", "N° d'assuré", "assuré social",
# "ouvrant droit", the Assurance Maladie's "immatriculation"; never the verb "assure"),
# or the patient's (bénéficiaire, ayant droit, patient).
_INSURED_WORDS = re.compile(
    r"\bassuree?s?\s*(?:\(e\)\s*)?:|^[^\S\n]*assuree?s?(?:\(e\))?[^\S\n]*$|"
    r"\b(?:l['\u2019]\s*|(?:n[°o]|numero)\s*(?:d['\u2019]\s*)?)assure|"
    r"\bassuree?s?\s+(?:social|principal)|\bouvrant[- ]droits?\b|\bimmatriculation\b",
    re.MULTILINE,
)
_INSURED_AFTER = re.compile(r"\s*[(\[]\s*(?:assure|ouvrant[- ]droit)")
_PATIENT_WORDS = re.compile(r"\bbeneficiaire\b|\bayant[- ]droits?\b|\bpatiente?s?\b")
# How far before a number its label may stand (whitespace runs counted as one space),
# and how far back a block heading ("Assuré", "Bénéficiaire") still applies.
_LABEL_WINDOW = 40
_ROLE_WINDOW = 160

_RPPS_TEXT = re.compile(rf"\bRPPS\s*(?:n°|no|:)?\s*[:.]?\s*({RPPS})\b", re.IGNORECASE)
_FINESS_TEXT = re.compile(rf"\bFINESS\s*(?:n°|no|:)?\s*[:.]?\s*({FINESS})\b", re.IGNORECASE)


def normalize_ins(value: str) -> str:
    """Remove whitespace (any kind), zero-width characters, dots, dashes and slashes;
    upper-case (2a → 2A)."""
    return re.sub(r"[\s\u200b-\u200d\u2060\ufeff.\-\u2013/]", "", value).upper()


def _compact(printed: str) -> str:
    """A printed number's characters as printed (case kept): ``normalize_ins`` without
    the key's separator word either."""
    return re.sub(r"[\s\u200b-\u200d\u2060\ufeff.\-\u2013/:]|cl[eé]", "", printed, flags=re.IGNORECASE)


def is_valid_ins(value: str) -> bool:
    """True when ``value`` is a 15-character INS with a correct key."""
    compact = normalize_ins(value)
    # stdnum reads full-width digits ("１") as ASCII ones, and the compact form is what
    # the document is filed under: only ASCII is an INS.
    if len(compact) != 15 or not compact.isascii():
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
    evidence: IdentitySource | None = None


def _is_ins_identifier(ident: PatientIdentifier) -> bool:
    if ident.authority and ident.authority in INS_OIDS:
        return True
    return bool(ident.kind and ident.kind.upper() in INS_KINDS)


# Where the printed groups end, counted in characters of the NIR: 1 | 84 | 05 | 75 | 123 | 456.
_GROUP_ENDS = frozenset({1, 3, 5, 7, 10, 13})


def _plausible_layout(printed: str) -> bool:
    """One line break anywhere (the key or a group wrapped onto the next line); more only
    when every line holds whole groups, as text layers give groups drawn one by one. Digits
    that run across several lines in other ways are a column of numbers, not an INS."""
    lines = printed.splitlines()
    if len(lines) <= 2:
        return True
    count = 0
    for line in lines[:-1]:
        count += len(_compact(line))
        if count not in _GROUP_ENDS:
            return False
    return True


class PrintedRole(StrEnum):
    """Whose number a printed INS is, as its label says."""

    PATIENT = "patient"  # INS, NIR, N° SS, or qualified bénéficiaire / patient
    INSURED = "insured"  # the insured person's: assuré, ouvrant droit, immatriculation


@dataclass(frozen=True)
class PrintedIns:
    """An INS printed in a document's text (compact form) and whose it is."""

    value: str
    role: PrintedRole


def find_printed_identifiers(text: str) -> list[PrintedIns]:
    """Every labelled INS printed in ``text``, in order, with the role its label gives.

    A 15-character run is a candidate only when a label (INS, NIR, N° SS, N° assuré…)
    stands shortly before it: unlabelled digit runs (phone numbers, order numbers) are
    never taken for identifiers. See ``_role`` for how the insured person's number is
    told from the patient's.
    """
    found: list[PrintedIns] = []
    for number, role in _labelled(text, _PRINTED_NIR):
        printed = PrintedIns(_compact(number).upper(), role)
        if printed not in found:
            found.append(printed)
    return found


def _labelled(text: str, pattern: re.Pattern[str]) -> Iterator[tuple[str, PrintedRole]]:
    """The numbers ``pattern`` finds in ``text`` after a label (as printed), with the role
    the label gives."""
    previous_end = 0
    for m in pattern.finditer(text):
        if not _plausible_layout(m.group(0)):
            continue
        before = fold(" ".join(text[max(0, m.start() - 4 * _LABEL_WINDOW) : m.start()].split()))
        # A space stands for the whitespace run just before the number, as in the text.
        label_window = before + (" " if m.start() and text[m.start() - 1].isspace() else "")
        label_window = label_window[-_LABEL_WINDOW:]
        if _LABEL.search(label_window) is None:
            previous_end = m.end()
            continue
        role = _role(text, m.start(), m.end(), previous_end, label_window)
        previous_end = m.end()
        yield m.group(0), role


def _unreadable(text: str) -> list[str]:
    """The patient's INS printed in ``text`` with letters where digits should be (as
    printed, compact): OCR's misreadings, never corrected."""
    found: list[str] = []
    for number, role in _labelled(text, _MISREAD_NIR):
        value = _compact(number)
        digits = sum(c.isdigit() for c in value)
        if role is PrintedRole.PATIENT and _misread(value) and digits >= _MIN_DIGITS_READ:
            found.append(value)
    return list(dict.fromkeys(found))


def _misread(value: str) -> list[str]:
    """The letters standing for digits in a compact printed number (the A or B of
    Corsica's department is none)."""
    return [c for i, c in enumerate(value) if not c.isdigit() and not (i == 6 and c in "AB")]


def _keyless(text: str) -> list[str]:
    """The patient's NIR printed without its key (13 characters, compact)."""
    numbers = _labelled(text, _KEYLESS_NIR)
    return list(dict.fromkeys(_compact(n).upper() for n, role in numbers if role is PrintedRole.PATIENT))


def _role(text: str, start: int, end: int, previous_end: int, label_window: str) -> PrintedRole:
    """Whose number the one at ``text[start:end]`` is.

    1. Words attached to it decide: on the label's line before the number ("Assuré :
       DUPONT Marc, N° SS", "NIR de l'assuré", "Bénéficiaire … INS"), or a qualifier right
       after it ("… 66 (ouvrant droit)"); the last one before the number wins.
    2. Else a plain INS label is the patient's: the INS identifies the person the
       document is about.
    3. Else a block heading since the previous number ("Assuré" then lines of name and
       N° SS) decides when only one kind of heading is there; when both kinds or none are,
       the number counts as the patient's, so that two different ones are a conflict and
       never a guess.
    """
    after = fold(text[end : end + 24].split("\n", 1)[0])
    if _INSURED_AFTER.match(after):
        return PrintedRole.INSURED
    line_start = text.rfind("\n", 0, start) + 1
    line = fold(text[max(line_start, previous_end) : start])
    if _LABEL.search(line) is None:  # label on the line above: "INS :" then the number
        line_start = text.rfind("\n", 0, max(line_start - 1, 0)) + 1
        line = fold(text[max(line_start, previous_end) : start])
    attached = _last_role_word(line)
    if attached is not None:
        return attached
    if _INS_LABEL.search(label_window):
        return PrintedRole.PATIENT
    block = fold(text[max(previous_end, start - _ROLE_WINDOW) : start])
    kinds = {role for role, pattern in _ROLE_WORDS if pattern.search(block)}
    return kinds.pop() if len(kinds) == 1 else PrintedRole.PATIENT


_ROLE_WORDS = ((PrintedRole.INSURED, _INSURED_WORDS), (PrintedRole.PATIENT, _PATIENT_WORDS))


def _last_role_word(text: str) -> PrintedRole | None:
    """The role named last in ``text``, or None."""
    last: tuple[int, PrintedRole] | None = None
    for role, pattern in _ROLE_WORDS:
        for m in pattern.finditer(text):
            if last is None or m.start() > last[0]:
                last = (m.start(), role)
    return last[1] if last else None


def find_printed_ins(text: str) -> list[str]:
    """The patient's candidate INS printed in ``text`` (compact, in order, de-duplicated);
    numbers labelled as the insured person's are left out."""
    values = (p.value for p in find_printed_identifiers(text) if p.role is PrintedRole.PATIENT)
    return list(dict.fromkeys(values))


def identify_patient(doc: ParsedDocument) -> IdentityResult:
    """Decide which patient ``doc`` belongs to from its structured and printed identifiers."""
    fictitious = sorted(
        {i.authority or i.kind or "" for i in doc.patient_ids if is_test_ins(i.authority, i.kind)}
    )
    if fictitious:
        # A test system's message reaching production: its INS may be a real person's
        # number, and the document is nobody's. Printed text does not override it either.
        return IdentityResult(
            None,
            (
                Problem(
                    code=Reason.MISSING_INS,
                    message=f"the patient's INS is qualified by the INSi test or demonstration "
                    f"namespace ({', '.join(fictitious)}): a fictitious identity, filed in no record",
                ),
            ),
        )
    structured = [normalize_ins(i.value) for i in doc.patient_ids if _is_ins_identifier(i)]
    structured = list(dict.fromkeys(s for s in structured if s))
    identifiers = find_printed_identifiers(doc.text)
    printed = list(dict.fromkeys(p.value for p in identifiers if p.role is PrintedRole.PATIENT))

    valid_structured = [s for s in structured if is_valid_ins(s)]
    valid_printed = [p for p in printed if is_valid_ins(p)]

    if len(set(valid_structured)) > 1:
        return IdentityResult(
            None,
            (
                Problem(
                    code=Reason.IDENTITY_CONFLICT,
                    message=f"the source gives {len(set(valid_structured))} different INS",
                ),
            ),
        )
    unread_other = _another_unread(doc.text, valid_structured[:1] or valid_printed[:1], printed)
    if unread_other is not None:
        return IdentityResult(None, (unread_other,))
    if valid_structured:
        ins = valid_structured[0]
        others = [p for p in valid_printed if p != ins]
        if others:
            return IdentityResult(
                None,
                (
                    Problem(
                        code=Reason.IDENTITY_CONFLICT,
                        message="structured INS and INS printed in the document disagree",
                    ),
                ),
            )
        return IdentityResult(ins, evidence=IdentitySource.STRUCTURED)
    if structured:
        # A structured INS with a bad key is never overridden by printed text.
        return IdentityResult(
            None,
            (
                Problem(
                    code=Reason.INVALID_INS_KEY,
                    message="the INS given in the structured patient identifier fails its key check",
                ),
            ),
        )
    if len(set(valid_printed)) > 1:
        return IdentityResult(
            None,
            (Problem(code=Reason.IDENTITY_CONFLICT, message="the document prints several different INS"),),
        )
    if valid_printed:
        return IdentityResult(valid_printed[0], evidence=IdentitySource.PRINTED)
    if printed:
        return IdentityResult(
            None,
            (
                Problem(
                    code=Reason.INVALID_INS_KEY, message="the INS printed in the document fails its key check"
                ),
            ),
        )
    unreadable = _unreadable(doc.text)
    if unreadable:
        misread = sorted({c for value in unreadable for c in _misread(value)})
        return IdentityResult(
            None,
            (
                Problem(
                    code=Reason.INVALID_INS_KEY,
                    message="the INS printed in the document cannot be read: "
                    f"{', '.join(map(repr, misread))} where digits should be (a scan or photo misread?); "
                    "it is never corrected into a number: a sharper scan or photo, or the INS given "
                    "in a structured field, is needed",
                ),
            ),
        )
    if identifiers:
        # The insured person (a parent, for a child's document) need not be the patient.
        return IdentityResult(
            None,
            (
                Problem(
                    code=Reason.MISSING_INS,
                    message="only the insured person's number (assuré, ouvrant droit) is printed, "
                    "and it need not be the patient's",
                ),
            ),
        )
    if _keyless(doc.text):
        return IdentityResult(
            None,
            (
                Problem(
                    code=Reason.MISSING_INS,
                    message="a NIR is printed without its key: it is no INS, and is not checked",
                ),
            ),
        )
    return IdentityResult(
        None, (Problem(code=Reason.MISSING_INS, message="no INS found in structured fields or in the text"),)
    )


# OCR's letters for digits (``_MISREAD_DIGITS``), each with the digit it stands for.
_MISREAD_AS = {
    **dict.fromkeys("OoDQ", "0"), **dict.fromkeys("lIi|!", "1"), **dict.fromkeys("Zz", "2"),
    **dict.fromkeys("Ss", "5"), **dict.fromkeys("Gb", "6"), "T": "7", "B": "8", **dict.fromkeys("gq", "9"),
}  # fmt: skip


def _misreadings(printed: str, ins: str) -> int:
    """How many characters of ``printed`` (compact) differ from ``ins``, a letter OCR takes
    for the digit ``ins`` has there counting as the same."""
    return sum(1 for p, i in zip(printed, ins, strict=True) if p.upper() != i and _MISREAD_AS.get(p) != i)


def _another_unread(text: str, identified: list[str], printed: list[str]) -> Problem | None:
    """The conflict of a document whose INS is ``identified`` (one) that prints, as the
    patient's, another number it cannot read (letters for digits, or a wrong key).

    One character away from the INS it is that INS misread (a header or footer copy: two
    people's INS differ in two characters at least, the key changing with any digit of the
    NIR); further, it may be another patient's, as in two reports merged into one PDF.
    """
    if not identified:
        return None
    unread = [p for p in printed if not is_valid_ins(p)] + _unreadable(text)
    if any(len(p) == len(identified[0]) and _misreadings(p, identified[0]) > 1 for p in unread):
        return Problem(
            code=Reason.IDENTITY_CONFLICT,
            message="besides its INS, the document prints as the patient's another one that cannot be "
            "read (letters for digits, or a wrong key) and is not that INS misread: it may name "
            "another patient",
        )
    return None


def identify_in_record(doc: ParsedDocument, patient_id: str) -> IdentityResult:
    """The identity of a document its patient (or whoever acts for them) adds to their own
    record ``patient_id``.

    The identity stage still runs: a document naming the record's patient is filed as
    usual; one naming another person is rejected (``identity_conflict``), never filed under
    either; several or malformed INS are rejected as for any producer. A document naming no
    one is filed in the record it was added to: the owner declared it theirs
    (``IdentitySource.DECLARED_BY_PATIENT``, kept on the record), which is not a guess.
    """
    found = identify_patient(doc)
    if found.patient_id is not None and found.patient_id != patient_id:
        return IdentityResult(
            None,
            (
                Problem(
                    code=Reason.IDENTITY_CONFLICT,
                    message="the document names another patient (INS) than the record it is added to",
                ),
            ),
        )
    if found.patient_id is None and all(p.code is Reason.MISSING_INS for p in found.problems):
        unlabelled = _unlabelled_ins(doc.text)
        if any(ins != patient_id for ins in unlabelled):
            return IdentityResult(
                None,
                (
                    Problem(
                        code=Reason.IDENTITY_CONFLICT,
                        message="the document prints an INS (without its label, or with one "
                        "unread) other than the record's it is added to",
                    ),
                ),
            )
        # What was not read (pages past the OCR limit, text past the indexed length,
        # attached files) may name someone else: naming no one in the rest declares nothing.
        unread = [w.message for w in doc.warnings if w.code is Reason.TEXT_TRUNCATED]
        if unread:
            return IdentityResult(
                None,
                (
                    Problem(
                        code=Reason.MISSING_INS,
                        message="no INS in what was read, and the document was not read whole "
                        f"({unread[0]}): it cannot be checked that it names no one else; "
                        "send it in smaller parts",
                    ),
                ),
            )
        # A NIR printed without its key is checked against the record's own.
        if any(nir13 != patient_id[:13] for nir13 in _keyless(doc.text)):
            return IdentityResult(
                None,
                (
                    Problem(
                        code=Reason.IDENTITY_CONFLICT,
                        message="the document names another person (NIR) than the record it is added to",
                    ),
                ),
            )
        return IdentityResult(patient_id, evidence=IdentitySource.DECLARED_BY_PATIENT)
    return found


def _unlabelled_ins(text: str) -> list[str]:
    """Valid INS printed in ``text`` with no label, or a label lost to OCR or layout, not
    set aside as the insured person's. They identify no one (an unlabelled number may be
    anything), but a document a patient adds to their record must not name someone else."""
    insured = {p.value for p in find_printed_identifiers(text) if p.role is PrintedRole.INSURED}
    numbers = (m.group(0) for m in _PRINTED_NIR.finditer(text))
    found = (_compact(n).upper() for n in numbers if _plausible_layout(n))
    return list(dict.fromkeys(ins for ins in found if is_valid_ins(ins) and ins not in insured))


def named_ins(doc: ParsedDocument) -> list[str]:
    """Every INS-shaped identifier ``doc`` names, structured or printed, valid or not
    (what erasure must find a quarantined document by)."""
    structured = [normalize_ins(i.value) for i in doc.patient_ids if _is_ins_identifier(i)]
    return list(dict.fromkeys([s for s in structured if s] + find_printed_ins(doc.text)))


def find_rpps(text: str) -> str | None:
    """The author's RPPS number (11 digits) printed after an ``RPPS`` label."""
    m = _RPPS_TEXT.search(text)
    return m.group(1) if m else None


def find_finess(text: str) -> str | None:
    """The producer's FINESS number (9 characters) printed after a ``FINESS`` label."""
    m = _FINESS_TEXT.search(text)
    return m.group(1).upper() if m else None
