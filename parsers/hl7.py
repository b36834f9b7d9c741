"""HL7 v2 parser: lab results and document messages, one ``ParsedDocument`` per message.

Messages read (``DOCUMENT_MESSAGES``): ORU^R01, and the MDM events of the ANS CI-SIS
profile "Transmission de documents CDA en HL7 v2" that carry a document or withdraw one.
Any other message (ACK, ADT, QRY, local Z messages) gives a ``ParsedDocument`` with a
blocking ``unsupported_message`` problem naming its type, and so does a message MSH-11
says is a training or debugging one (``T``, ``D``): a test system's, filed nowhere.

A file may hold several messages, with ``\\r``, ``\\n`` or ``\\r\\n`` between segments, MLLP
framing and FHS/BHS/BTS/FTS batch envelopes (dropped); a file in UTF-16, with or without a
byte order mark, is read as its UTF-8 transcription. Each message is decoded on its own,
as its MSH-18 says (``8859/1`` and its usual spellings read as Windows-1252, ``8859/15``,
UTF-8), unless its bytes can only be something else (``decode_message``). How the
ER7 text is split, why hl7apy is used only for the header and segment vocabulary, and
which segments are accepted (any HL7 v2 version's, Z-segments) is explained in
``parsers/hl7_segments.py``.

What is read, per message:

* MSH-9 / MSH-10: ``message_type`` / ``message_control_id``; MSH-4 sending facility: a
  9-digit universal id (HD.2) or namespace id (HD.1) is the ``producer_finess``, a
  non-numeric namespace id the ``producer_name``.
* PID-3 repetitions (IHE PAM FR): ``PatientIdentifier(CX.1, authority = CX.4 universal id
  or namespace, kind = CX.5)``; an INS OID authority without CX.5 gets kind ``INS``; the
  name of a test or demonstration INS namespace is the authority even beside an OID.
  Nothing is validated here (``pipeline/identity.py`` does it), except that a message
  whose PID segments (a repeated PATIENT_RESULT group) name different patients is a
  blocking ``identity_conflict``: one message is one document, of one patient. A PID-32
  saying the identity is not qualified (``PROV``, ``RECUP``, ``FICT``…) is a blocking
  ``missing_ins``: its INS may not reference health data. PID-5 (the legal name
  ``L`` first), PID-7, PID-8: demographics.
* OBR-24: a diagnostic service section of imaging (``RAD``, ``CT``, ``US``…) in every OBR
  makes the message an imaging report (``type_code`` 18748-4) when nothing else types it.
* OBR / TXA: ``title`` is OBR-4's text when the message has one OBR (several OBRs: the
  generic biology title, each OBR-4 heading its section of ``text``), else the document
  type's text; ``document_date`` OBR-7, else TXA-4, else the earliest SPM-17 or OBX-14,
  else MSH-7; author: the first of
  OBR-32, OBR-16, ORC-12 and PRT-5 (author participation first) whose id is an RPPS.
* OBX: one ``LabResult`` each, except results withdrawn (OBX-11 D, W), visibility
  observations (an OBX whose OBX-3 is a ``Visibility`` value, e.g. ``MASQUE_PS``, with
  value Y/YES/TRUE/1/O/OUI sets that flag), the profile's instructions (``DESTDMP``,
  ``ACK_RECEPTION``…), and ED observations.
* OBX of type ED: the document itself. Its Base64 is decoded (blanks and line breaks
  dropped) and parsed by the embedded-document registry (the same CDA, PDF and image
  parsers as for files), an RTF, HTML or plain-text report as a CDA's non-XML body is;
  data sent unencoded (ED.4 ``A``) or in ``Hex`` is read too. That document's text,
  results, visibility, patient ids, type code, title, date, author and setId are the
  message's (PID-3 comes first in ``patient_ids``, so an embedded INS that disagrees is
  an identity conflict). An ED split
  over consecutive OBX of the same OBX-3 (a LIS limiting its field length) is joined back
  into one document: parts without the ED's header whatever their OBX-4, parts repeating
  it under the same OBX-4. OBX-3 is the document type code when the embedded document has
  none, if it is a document type (``pipeline/type_codes.py``) or the ED is all the message
  holds: beside results, an ED coded as an analyte is an attachment (a tracing) that does
  not type the report. An unreadable embedded
  document is a warning when results stand beside it, else it blocks the message.
* Identity of the document: ``producer_document_id`` is the embedded CDA's setId, else
  TXA-12 (unique document number, as ``root^extension``), else OBR-3 filler order
  number (ORC-3 when OBR-3 is empty), else none (MSH-10 names a transmission, not the
  document: a resend has its own); the other ids go to ``document_ids``. TXA-13 (parent
  document) goes to ``refers_to``: what a replacement replaces (not in an addendum,
  MDM^T06, whose parent stays valid), with the parents the embedded CDA names
  (relatedDocument RPLC). ``content_fingerprint`` hashes the message
  without its envelope (MSH-7, MSH-10…) and the times a message is stamped with when built
  again (EVN-2, ORC-9, OBR-22): a message sent again is a duplicate of the first.
* Replacement and deletion (the profile's OBX-11 on the document's OBX: F original, C
  replacement, D deletion): ``withdraw`` is set by MDM^T11, OBX-11 ``D`` or TXA-19
  ``CA`` or ``UN`` (unavailable for patient care), and in a lab report carrying no
  document by ``D`` or ``W`` on every result or by OBR-25 ``X`` (order cancelled) on every
  OBR; an obsolete document (TXA-19 ``OB``) comes before every other version (0);
  ``version`` is the embedded CDA's versionNumber, else 2 when an OBR-25 result
  status or the OBX-11 of a result or of the document is ``C`` (a correction shares OBR-3
  with the report it replaces), 0 when every OBR-25 says the report is not final
  (preliminary, partial) or TXA-17 says the document is a draft (dictated, in progress,
  incomplete): it comes before the final.
* ``text``: the title, one line per result (``Hémoglobine (718-7) : 13.5 g/dL [12.0-16.0]
  N``), NTE comments where they stand, then the embedded documents' text.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from parsers.base import ParserChooser
from parsers.embedded import EmbeddedReader, decode_base64, opens_a_document
from parsers.hl7_segments import (
    BOM,
    RawMessage,
    Segment,
    Separators,
    check_segment_name,
    count_messages,
    decode_message,
    iter_messages,
    parse_date,
    parse_ts,
    utf16_codec,
)
from pipeline.errors import EncryptedDocumentError, ParserError
from pipeline.identifiers import INS_OIDS, is_finess, is_test_ins, rpps_of
from pipeline.model import (
    Format,
    LabResult,
    ParsedDocument,
    PatientDemographics,
    PatientIdentifier,
    Problem,
    Reason,
    Visibility,
)
from pipeline.type_codes import TYPE_CODES

log = logging.getLogger(__name__)

DEFAULT_TITLE = "Compte rendu d'examens biologiques"
# INS-NIR (production), INS-NIA, and the test / demonstration NIR namespaces.
_HEAD = re.compile(rb"(?:MSH|FHS|BHS)[^A-Za-z0-9\s]")
_VISIBILITY = {v.value: v for v in Visibility}
_YES = frozenset({"Y", "YES", "TRUE", "1", "O", "OUI"})
# Document-level OBX of the national profile that are instructions, not observations:
# recipients (DMP, MSSanté) and the receipts the producer asks for.
_PROFILE_FLAGS = frozenset(
    {"DESTDMP", "DESTMSSANTEPS", "DESTMSSANTEPAT", "ACK_RECEPTION", "ACK_LECTURE", "MODIF_CONF_CODE"}
)
LOINC = "2.16.840.1.113883.6.1"
# OBX-11 (HL7 table 0085) of a result the producer took back: D deleted, W posted as wrong
# (e.g. sent for the wrong patient). Neither is a result of this patient's.
_WITHDRAWN_RESULT = frozenset({"D", "W"})
# ... and X: the result cannot be obtained (its order cancelled).
_NO_RESULT = _WITHDRAWN_RESULT | {"X"}
# TXA-19 document availability (HL7 table 0273) of a document no one may use for care: CA
# deleted, UN unavailable for patient care (withdrawn until sent again available, AV). OB,
# obsolete, is a version another replaced: not withdrawn (that would take its replacement
# out with the series) but never after another version (``_report_version``).
_UNAVAILABLE = frozenset({"CA", "UN"})
_REQUIRED_MSH = {9: "MSH-9 message type", 10: "MSH-10 control id", 12: "MSH-12 version"}
# Messages that carry a document: lab results, and the document-management events of the
# national profile "Transmission de documents CDA en HL7 v2" that come with the document
# or withdraw one (T11). Anything else (ACK, ADT, QRY, local Z messages) is
# ``unsupported_message``, named in the rejection.
DOCUMENT_MESSAGES = frozenset({"ORU^R01", "MDM^T02", "MDM^T04", "MDM^T06", "MDM^T08", "MDM^T10", "MDM^T11"})


class Hl7Parser:
    """Parser for HL7 v2 ORU^R01 files (single messages, MLLP streams, batches).

    Failures: a file with no readable message raises ``ParserError``. When a file holds
    several messages and only some are broken (no MSH, an MSH without MSH-9/10/12, bad
    separators, a segment hl7apy does not know), the good ones are returned as usual and
    each broken one as a ``ParsedDocument`` with empty text and a blocking
    ``Problem(PARSE_ERROR)`` in ``warnings``, which the pipeline turns into a rejection of
    that message alone. An unreadable embedded PDF is a non-blocking warning: the
    structured results still stand.
    """

    name = "hl7v2"

    def __init__(self, embedded: ParserChooser) -> None:
        # The parsers for documents carried in OBX ED (CDA, PDF…): the registry's own
        # (``parsers.registry.document_registry``), so a CDA in an HL7 message is read
        # exactly as the same CDA dropped as a file. Handed in, not imported: the registry
        # imports this module.
        self.embedded = embedded

    def score(self, head: bytes) -> int:
        """100 when the file starts (after MLLP start byte, BOM, blanks) with MSH/FHS/BHS,
        in an ASCII-compatible encoding or in UTF-16."""
        if utf16_codec(head):
            return 100
        start = head.lstrip(b"\x0b \t\r\n")
        if start.startswith(BOM):
            start = start[len(BOM) :].lstrip(b"\x0b \t\r\n")
        return 100 if _HEAD.match(start) else 0

    def parse(self, data: bytes, *, source: str) -> list[ParsedDocument]:
        return list(self.iter_documents(data, source=source))

    def count_documents(self, data: bytes) -> int:
        return count_messages(data)

    def iter_documents(self, data: bytes, *, source: str) -> Iterator[ParsedDocument]:
        """``parse``, one message at a time: a message is split, read and handed on before
        the next is looked at. Broken messages are held back only until a readable one
        comes (a file with none raises ``ParserError``, as ``parse`` does)."""
        held: list[ParsedDocument] = []  # broken messages while no message was readable
        failures: list[str] = []
        readable = False
        for part, raw in enumerate(iter_messages(data), start=1):
            try:
                doc = read_message(raw, source=source, part=part, embedded=self.embedded)
            except ParserError as exc:
                log.info("HL7 message %s#%d unreadable: %s", source, part, exc.message)
                broken = _broken(raw, source, part, exc.message)
                if readable:
                    yield broken
                else:
                    failures.append(exc.message)
                    held.append(broken)
                continue
            if not readable:
                readable = True
                yield from held
                held.clear()
                failures.clear()
            yield doc
        if readable:
            return
        if not failures:
            raise ParserError("no HL7 message in file", source=source)
        if len(failures) == 1:
            raise ParserError(failures[0], source=source)
        listed = "; ".join(f"message {n}: {m}" for n, m in enumerate(failures, start=1))
        raise ParserError(f"no readable HL7 message: {listed}", source=source)


def _broken(raw: RawMessage, source: str, part: int, message: str) -> ParsedDocument:
    control_id = None
    first = raw.segments[0]
    if not raw.headless and len(first) > 3:
        fields = first.split(first[3:4])
        control_id = fields[9].decode("latin-1").strip() or None if len(fields) > 9 else None
    return ParsedDocument(
        source=source, part=part, format=Format.HL7V2, content=raw.content,
        message_control_id=control_id,
        warnings=(Problem(code=Reason.PARSE_ERROR, message=f"HL7 message {part}: {message}"),),
    )  # fmt: skip


def read_message(raw: RawMessage, *, source: str, part: int, embedded: ParserChooser) -> ParsedDocument:
    """One message's ``ParsedDocument``; ``ParserError`` when it cannot be read."""
    if raw.headless:
        name = raw.segments[0][:3].decode("latin-1")
        raise ParserError(f"segments before any MSH (starts with {name!r})", source=source)
    if raw.truncated:
        raise ParserError(
            "the file ends inside this message, its batch (FHS/BHS) or MLLP frame never closed"
            " (no BTS/FTS, no end byte): a transfer cut short may have truncated it (a value, a"
            " result); send it again whole, its batch or frame closed",
            source=source,
        )
    content = raw.content
    warnings: list[Problem] = []
    text, charset, misdeclared = decode_message(content, raw.segments[0])
    if misdeclared:
        warnings.append(Problem(code=Reason.PARSE_ERROR, blocking=False, message=misdeclared))
    lines = text.split("\r")
    seps = Separators.from_msh(lines[0], source=source)
    msh = Segment(lines[0], seps, charset)
    _check_msh(msh, source)
    message_type = _message_type(msh)
    if message_type not in DOCUMENT_MESSAGES:
        return _not_a_document(msh, message_type, source, part, content)
    processing = msh.value(11)
    if processing not in _PRODUCTION:
        return _not_production(msh, message_type, processing, source, part, content)
    segments = []
    for line in lines:
        check_segment_name(line, seps, source=source)
        segments.append(Segment(line, seps, charset))
    doc = _Reader(segments, source, warnings, embedded).document(part, content)
    return doc.model_copy(update={"content_fingerprint": content_fingerprint(lines, seps)})


# MSH fields that a sender changes when it sends the same message again: date/time of
# message (7), control id (10), sequence number (13), continuation pointer (14), and the
# character set (18), since the fingerprint is of the decoded text.
_ENVELOPE_MSH = (7, 10, 13, 14, 18)
# The times a system stamps a message with when it builds it again, though it says nothing
# new: EVN-2 recorded date/time, ORC-9 date/time of the transaction, OBR-22 date/time of the
# report or of its last status change. A correction changes these too, but never only these:
# its values, OBR-25 or OBX-11 change, and they stay in the fingerprint.
_RESTAMPED = {"EVN": (2,), "ORC": (9,), "OBR": (22,)}


def content_fingerprint(lines: list[str], seps: Separators) -> str:
    """SHA-256 of what a message says, leaving out its transmission envelope: the MSH
    fields of ``_ENVELOPE_MSH``, the times of ``_RESTAMPED`` and trailing empty fields. Batch
    headers, MLLP framing, line endings and the byte encoding are gone already
    (``iter_messages``, ``decode_message``). A message sent again (a resend after a missing
    ACK, a replayed interface queue) has the fingerprint of the first; a correction (a
    value, OBR-25, OBX-11 changed) has its own."""
    digest = hashlib.sha256()
    for n, line in enumerate(lines):
        fields = line.split(seps.field)
        if n == 0:  # MSH-1 is the separator itself: MSH-n is fields[n - 1]
            for k in _ENVELOPE_MSH:
                if k - 1 < len(fields):
                    fields[k - 1] = ""
        for k in _RESTAMPED.get(fields[0], ()):
            if k < len(fields):
                fields[k] = ""
        while len(fields) > 1 and not fields[-1]:
            fields.pop()
        digest.update(seps.field.join(fields).encode())
        digest.update(b"\r")
    return digest.hexdigest()


def _check_msh(msh: Segment, source: str) -> None:
    for n, what in _REQUIRED_MSH.items():
        if not msh.value(n):
            raise ParserError(f"MSH without {what}", source=source)
    version = msh.value(12)
    if not version.startswith("2."):
        raise ParserError(f"unsupported HL7 version {version!r}", source=source)


def _message_type(msh: Segment) -> str:
    """MSH-9 as ``code^event`` (the message structure, MSH-9.3, left out)."""
    return "^".join(c for c in (msh.value(9, 1), msh.value(9, 2)) if c)


def _not_a_document(
    msh: Segment, message_type: str, source: str, part: int, content: bytes
) -> ParsedDocument:
    """A readable message that carries no document (ACK, ADT, queries, local Z messages)."""
    known = ", ".join(sorted(DOCUMENT_MESSAGES))
    return ParsedDocument(
        source=source, part=part, format=Format.HL7V2, content=content,
        message_type=message_type, message_control_id=msh.value(10),
        warnings=(Problem(code=Reason.UNSUPPORTED_MESSAGE, message=(
            f"HL7 message {part} is {message_type}, not a document message"
            f" (Carnet reads {known})")),),
    )  # fmt: skip


# MSH-11 processing ids (HL7 table 0103) of a message from production: P, or none given
# (senders that leave the field out). T (training) and D (debugging) are test systems'.
_PRODUCTION = frozenset({"P", ""})


def _not_production(
    msh: Segment, message_type: str, processing: str, source: str, part: int, content: bytes
) -> ParsedDocument:
    """A message MSH-11 says comes from a training or debugging system: its patients may be
    real people's identities used for tests, so it is refused on its header (HL7 v2.5
    2.9.2: a processing id the receiver does not run is rejected, AR) and filed nowhere."""
    return ParsedDocument(
        source=source, part=part, format=Format.HL7V2, content=content,
        message_type=message_type, message_control_id=msh.value(10),
        warnings=(Problem(code=Reason.UNSUPPORTED_MESSAGE, message=(
            f"HL7 message {part} has MSH-11 processing id {processing!r} (training or debugging),"
            " not P (production): a test system's message is filed nowhere")),),
    )  # fmt: skip


@dataclass
class _Reader:
    """Assembles one message's document from its segments, in order."""

    segments: list[Segment]
    source: str
    warnings: list[Problem]
    embedded_parsers: ParserChooser
    lines: list[str] = field(default_factory=list)
    results: list[LabResult] = field(default_factory=list)
    visibility: list[Visibility] = field(default_factory=list)
    embedded: list[ParsedDocument] = field(default_factory=list)
    # OBX-11 and OBX-3 (code, text) of the OBX that carries the document (F / C / D).
    document_status: str = ""
    document_code: tuple[str | None, str] = (None, "")
    ed_failures: list[Problem] = field(default_factory=list)
    # OBX-11 of every result OBX (not ED, visibility or profile instruction), kept or not.
    result_statuses: list[str] = field(default_factory=list)
    carries_document: bool = False  # an OBX of type ED
    # The data of the OBX that continue an ED's (``_join_split_eds``), by the OBX they continue.
    ed_parts: dict[Segment, list[str]] = field(default_factory=dict)

    def document(self, part: int, content: bytes) -> ParsedDocument:
        msh = self.segments[0]
        message_type = _message_type(msh)
        pid, txa = self._first("PID"), self._first("TXA")
        # An ORU^R01 may repeat its PATIENT_RESULT group, one PID each: results of several
        # patients in one message, which is one document filed under one patient. Every
        # PID's ids are kept (so the rejected message is found by each patient's erasure).
        pids = [tuple(_patient_ids(p)) for p in self._all("PID")]
        if not _one_patient(pids):
            self.warnings.append(Problem(code=Reason.IDENTITY_CONFLICT, message=(
                f"the message holds {len(pids)} PID segments naming different patients (PID-3):"
                " one patient per message")))  # fmt: skip
        unqualified = sorted({c for p in self._all("PID") for c in _identity_statuses(p)} & _UNQUALIFIED)
        if unqualified:
            self.warnings.append(Problem(code=Reason.MISSING_INS, message=(
                f"PID-32 says the patient's identity is not qualified ({', '.join(unqualified)}):"
                " only a qualified identity's INS may reference health data (RNIV)")))  # fmt: skip
        obrs = [s for s in self.segments if s.name == "OBR"]
        for seg in self._join_split_eds(self.segments[1:]):
            self._read_body(seg, several_obr=len(obrs) > 1)
        withdraw = self._withdraws(message_type, txa, obrs)
        self._settle_ed_failures(withdraw=withdraw)
        first_obr = obrs[0] if obrs else None
        inner = self.embedded[0] if self.embedded else ParsedDocument(source="", format=Format.HL7V2)
        # The document's OBX-3 types the message when it is a document type, or when the ED
        # is all the message holds; beside results it may be an attachment to one of them
        # (a tracing coded as its analyte), which says nothing of the report's type.
        ed_code = self.document_code[0]
        types = ed_code is not None and (ed_code in TYPE_CODES or not self.results)
        code, code_text = self.document_code if types else _txa_type(txa)
        code = code or _section_type(obrs)
        title = (inner.title or (_ce_text(obrs[0], 4) if len(obrs) == 1 else "") or code_text
                 or DEFAULT_TITLE)  # fmt: skip
        document_date = (
            inner.document_date
            or (parse_date(first_obr.value(7)) if first_obr else None)
            or (parse_date(txa.value(4)) if txa else None)
            or self._collected_on()
            or parse_date(msh.value(7))
        )
        finess, producer_name = _producer(msh)
        rpps, author = _author(obrs, self._first("ORC"), self._all("PRT"))
        own_ids = _own_ids(txa, first_obr, self._first("ORC"))
        document_id = inner.producer_document_id or next(iter(own_ids), None)
        code_display = (code_text or None) if code else None
        return ParsedDocument(
            source=self.source, part=part, format=Format.HL7V2, content=content, title=title,
            text="\n".join([title, *self.lines, *(d.text for d in self.embedded if d.text)]),
            patient_ids=tuple(dict.fromkeys(i for ids in pids for i in ids))
            + tuple(i for d in self.embedded for i in d.patient_ids),
            demographics=(_demographics(pid) if pid else None) or inner.demographics,
            message_type=message_type, message_control_id=msh.value(10),
            type_code=inner.type_code or code,
            type_code_system=inner.type_code_system if inner.type_code else (LOINC if code else None),
            type_code_display=inner.type_code_display if inner.type_code else code_display,
            document_date=document_date,
            author_rpps=inner.author_rpps or rpps, author_name=inner.author_name or author,
            producer_finess=finess or inner.producer_finess,
            producer_name=producer_name or inner.producer_name,
            producer_document_id=document_id,
            version=inner.version or _report_version(obrs, self.statuses(), txa),
            document_ids=tuple(i for i in own_ids if i != document_id),
            refers_to=_replaced_ids(message_type, txa, inner),
            withdraw=withdraw,
            results=tuple(self.results) + tuple(r for d in self.embedded for r in d.results),
            visibility=tuple(dict.fromkeys(
                [*self.visibility, *(v for d in self.embedded for v in d.visibility)])),
            page_count=sum(d.page_count for d in self.embedded),
            ocr_pages=sum(d.ocr_pages for d in self.embedded),
            ocr_confidence=inner.ocr_confidence,
            warnings=tuple(self.warnings) + tuple(w for d in self.embedded for w in d.warnings),
        )  # fmt: skip

    def statuses(self) -> list[str]:
        """OBX-11 of the results and of the document's OBX."""
        return [*self.result_statuses, self.document_status]

    def _collected_on(self) -> dt.date | None:
        """The earliest specimen collection (SPM-17) or observation (OBX-14) date: what the
        report is of when OBR-7 is empty; MSH-7 is only when it was sent, days later maybe."""
        dates = [d for d in (parse_date(s.value(17)) for s in self._all("SPM")) if d]
        dates += [r.observed_at.date() for r in self.results if r.observed_at]
        return min(dates, default=None)

    def _first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def _all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def _withdraws(self, message_type: str, txa: Segment | None, obrs: list[Segment]) -> bool:
        """A deletion request: MDM^T11, a document OBX with status D, TXA-19 deleted or
        unavailable for patient care, or a lab report (no document OBX) every result of
        which is deleted (OBX-11 D or W), or whose order is cancelled in every OBR."""
        results_deleted = (not self.carries_document and bool(self.result_statuses)
                           and all(s in _WITHDRAWN_RESULT for s in self.result_statuses))  # fmt: skip
        # OBR-25 X (table 0123): no results available, order cancelled. The results a
        # preliminary report of the order announced will never come: it leaves searches.
        cancelled = (not self.carries_document and bool(obrs) and all(o.value(25) == "X" for o in obrs)
                     and all(s in _NO_RESULT for s in self.result_statuses))  # fmt: skip
        return (message_type == "MDM^T11" or self.document_status == "D" or results_deleted or cancelled
                or (txa is not None and txa.value(19) in _UNAVAILABLE))  # fmt: skip

    def _settle_ed_failures(self, *, withdraw: bool) -> None:
        """An unreadable embedded document blocks the message unless results stand beside it
        or the message withdraws a document: a deletion names its target by its ids (TXA-12,
        OBR-3), and senders often leave the document's OBX-5 empty in it."""
        blocking = not self.results and not self.embedded and not withdraw
        for problem in self.ed_failures:
            self.warnings.append(problem.model_copy(update={"blocking": blocking}))

    def _join_split_eds(self, body: list[Segment]) -> list[Segment]:
        """``body`` without the OBX that continue an ED, their data kept in ``ed_parts``. A LIS
        whose fields are limited in length splits a PDF's Base64 over consecutive OBX of the
        same OBX-3 (``_ed_continuation``); an OBX whose data opens a document of its own is
        the next document, not the rest of the one before."""
        kept: list[Segment] = []
        opened: Segment | None = None  # the ED that the next OBX may continue
        for seg in body:
            data = _ed_continuation(opened, seg) if opened else None
            if opened and data is not None and not self._opens_a_document(opened, data):
                self.ed_parts.setdefault(opened, []).append(data)
                continue
            kept.append(seg)
            opened = seg if seg.name == "OBX" and seg.value(2) == "ED" else None
        return kept

    def _opens_a_document(self, ed_obx: Segment, data: str) -> bool:
        """Whether ``data``, in the encoding ``ed_obx`` declares, starts with a document's
        magic (PDF, image, CDA, RTF, HTML)."""
        head = "".join(data[:_SNIFF_CHARS].split())
        if _ed_header(ed_obx)[2] == "base64":
            try:
                raw = base64.b64decode(head[: len(head) - len(head) % 4], validate=True)
            except (binascii.Error, ValueError):  # no Base64 alone: a part cut mid-quantum
                return False
        else:
            raw = head.encode()
        return self.embedded_parsers.choose(raw) is not None or opens_a_document(raw)

    def _read_body(self, seg: Segment, *, several_obr: bool) -> None:
        if seg.name == "OBX":
            self._read_obx(seg)
        elif seg.name == "NTE":
            comment = "\n".join(seg.text(r) for r in seg.repetitions(3)).strip()
            if comment:
                self.lines.append(comment)
        elif seg.name == "OBR" and several_obr:
            heading = _ce_text(seg, 4)
            if heading:
                self.lines.append(heading)

    def _read_obx(self, seg: Segment) -> None:
        value_type = seg.value(2)
        code = seg.value(3, 1)
        if code in _VISIBILITY:
            if seg.value(5).upper() in _YES:
                self.visibility.append(_VISIBILITY[code])
            return
        if code in _PROFILE_FLAGS:
            return  # recipients and receipts the producer asks for: not observations
        if value_type == "ED":
            self._read_ed(seg)
            return
        self.result_statuses.append(seg.value(11))
        if seg.value(11) in _WITHDRAWN_RESULT:
            return
        analyte = _ce_text(seg, 3) or code
        if not analyte:
            self.warnings.append(Problem(
                code=Reason.INVALID_RESULT, blocking=False,
                message=f"OBX {seg.value(1) or '?'} has no observation identifier (OBX-3)",
            ))  # fmt: skip
            return
        value, number = _obx_value(seg, value_type)
        result = LabResult(
            analyte=analyte, loinc=_loinc(seg), value=value or None, numeric_value=number,
            value_type=value_type or None, unit=seg.value(6, 1) or seg.value(6, 2) or None,
            reference_range=seg.value(7) or None, abnormal_flag=seg.value(8) or None,
            observed_at=parse_ts(seg.value(14)),
        )  # fmt: skip
        self.results.append(result)
        self.lines.append(_render(result))

    def _read_ed(self, seg: Segment) -> None:
        """An OBX of type ED: the document itself (CDA, PDF…), parsed as what it is."""
        ed = seg.repetitions(5)[0] if seg.repetitions(5) else ""
        kind, subtype, encoding = _ed_header(seg)
        declared = subtype.upper() or "document"
        self.carries_document = True
        if not self.document_status:
            self.document_status = seg.value(11)
            self.document_code = (_loinc(seg), _ce_text(seg, 3))
        try:
            chunks = [_ed_data(seg, ed), *self.ed_parts.get(seg, ())]
            what = f"embedded {declared}"
            media = _ed_media_type(kind, subtype)
            if encoding == "base64":
                # Line breaks or blanks inside the Base64 are the sender's wrapping: dropped.
                payload = _decode_parts(chunks, source=self.source, what=what)
            elif encoding == "hex":
                payload = _decode_hex("".join(chunks), source=self.source, what=what)
            elif encoding == "a" or (not encoding and kind == "text"):
                # HL7 table 0299 "A": the text itself, decoded with the message already.
                payload = "".join(chunks).encode()
                media = f"{media or 'text/plain'}; charset=utf-8"
            else:
                raise ParserError(f"{what} encoding {encoding!r} is not Base64, Hex or A (none)")
            source = f"{self.source} OBX {seg.value(1)}"
            parser = self.embedded_parsers.choose(payload)
            if parser is None:
                self.embedded.append(_text_document(payload, media, source))
                return
            declared = "PDF" if parser.name == "pdf" else parser.name.upper()
            self.embedded.extend(parser.parse(payload, source=source))
        except ParserError as exc:
            reason = (Reason.ENCRYPTED_DOCUMENT if isinstance(exc, EncryptedDocumentError)
                      else Reason.PARSE_ERROR)  # fmt: skip
            self.ed_failures.append(
                Problem(code=reason, blocking=False, message=f"embedded {declared} unreadable: {exc.message}")
            )


# Base64 characters enough for the first kilobyte of a document: what sniffing looks at.
_SNIFF_CHARS = 1368


def _ed_header(seg: Segment) -> tuple[str, str, str]:
    """An ED's type of data, subtype and encoding, lower-cased."""
    ed = seg.repetitions(5)[0] if seg.repetitions(5) else ""
    return seg.part(ed, 2).lower(), seg.part(ed, 3).lower(), seg.part(ed, 4).lower()


def _ed_continuation(first: Segment, seg: Segment) -> str | None:
    """The data ``seg`` adds to the ED that ``first`` opens when it is a part of it, else
    None: an OBX of type ED with the same OBX-3 code, whose ED names no type, subtype or
    encoding (its data alone, in ED.5 or as the whole field), or names the same ones under
    the same OBX-4 sub-id. A part without a header cannot be read alone, whatever OBX-4 it
    has (a LIS sets OBX-4 on the first part only, or numbers the parts); a part with one
    under another sub-id is another document of the same type."""
    if seg.name != "OBX" or seg.value(2) != "ED" or seg.value(3, 1) != first.value(3, 1):
        return None
    reps = seg.repetitions(5)
    if not reps:
        return None
    if seg.seps.component not in reps[0]:
        return seg.text(reps[0]).strip()
    header = _ed_header(seg)
    if any(header) and (header != _ed_header(first) or seg.value(4) != first.value(4)):
        return None
    return _ed_data(seg, reps[0])


def _ed_data(seg: Segment, ed: str) -> str:
    """An ED's data (ED.5), unescaped: everything after its fourth component separator, since
    HTML or text sent unencoded ("A") often holds the separators unescaped (``&nbsp;``)."""
    return seg.text(seg.seps.component.join(ed.split(seg.seps.component)[4:])).strip()


def _decode_hex(data: str, *, source: str, what: str) -> bytes:
    try:
        return bytes.fromhex("".join(data.split()))
    except ValueError as exc:
        raise ParserError(f"{what} is not valid hexadecimal: {exc}", source=source) from exc


def _decode_parts(parts: list[str], *, source: str, what: str) -> bytes:
    """The Base64 of an ED's parts decoded as one; or part by part when each part was
    encoded on its own (padding inside the joined text)."""
    try:
        return decode_base64("".join(parts), source=source, what=what)
    except ParserError:
        if len(parts) == 1:
            raise
        return b"".join(
            decode_base64(p, source=source, what=f"{what} part {n}") for n, p in enumerate(parts, start=1)
        )


def _ed_media_type(kind: str, subtype: str) -> str:
    """The media type an ED's type of data (HL7 table 0191) and subtype (0291) name, for the
    documents the registry's parsers do not read: RTF, HTML and plain text, as hospital
    systems send their reports ("^TEXT^RTF^Base64^…"). ``""`` lets the bytes say (magic)."""
    sub = subtype.lower()
    if sub == "rtf":
        return "text/rtf"
    if sub in {"html", "htm", "xhtml"}:
        return "text/html"
    if sub in {"plain", "txt", "text"} or (kind.upper() == "TEXT" and not sub):
        return "text/plain"
    return ""


def _text_document(payload: bytes, media: str, source: str) -> ParsedDocument:
    """An ED holding an RTF or plain-text report, read as a CDA's non-XML body is."""
    read = EmbeddedReader().read(payload, media, source=source)
    if not read.text:
        raise ParserError("embedded document is not a PDF, image, CDA, RTF, HTML or text document")
    return ParsedDocument(source=source, format=Format.HL7V2, text=read.text, warnings=read.warnings)


# OBR-25 result statuses (HL7 table 0123) of a report not final yet: some results
# available (A), preliminary (P), not verified (R), in the lab (I), scheduled (S), order
# received (O).
_NOT_FINAL = frozenset({"A", "P", "R", "I", "S", "O"})


# TXA-17 document completion statuses (HL7 table 0271) of a draft: dictated, in progress,
# incomplete. Documented, pre-authenticated, authenticated and legally authenticated are not.
_DRAFT = frozenset({"DI", "IP", "IN"})


def _report_version(obrs: list[Segment], result_statuses: list[str], txa: Segment | None) -> int | None:
    """The report's place among the versions of its order (OBR-3) or document (TXA-12),
    from OBR-25, the OBX-11 of its results and document, and TXA-17: 0 when not final yet
    (a preliminary report, a draft), 2 when corrected (OBR-25 C, a result C: many LIS mark
    the corrected result alone and leave OBR-25 F, or the document's OBX C, the profile's
    replacement), else None (an original, 1). A preliminary report or a draft, or the
    original sent again, arriving after the final one or the correction (files sorted by
    name, a replayed queue) must not replace it."""
    statuses = {o.value(25) for o in obrs} - {""}
    if txa is not None and txa.value(19) == "OB":
        return 0
    if "C" in statuses or "C" in result_statuses:
        return 2
    draft = txa is not None and txa.value(17).upper() in _DRAFT
    return 0 if draft or (statuses and statuses <= _NOT_FINAL) else None


# OBR-24 diagnostic service sections (HL7 table 0074) of imaging, and the DICOM modality
# codes radiology systems put there (none is a code of table 0074 for something else).
_IMAGING_SECTIONS = frozenset(
    {"RAD", "RX", "CT", "NMR", "NMS", "RUS", "OUS", "VUS", "CUS", "XRC",
     "MR", "US", "MG", "DX", "CR", "XA", "RF", "PET"}
)  # fmt: skip
IMAGING_REPORT = "18748-4"  # LOINC "Diagnostic imaging study": the national CR d'imagerie


def _section_type(obrs: list[Segment]) -> str | None:
    """The document type OBR-24 says when every OBR is an imaging section's: a radiology
    system's ORU^R01 is an imaging report, not a lab's."""
    sections = {o.value(24).upper() for o in obrs}
    return IMAGING_REPORT if sections and sections <= _IMAGING_SECTIONS else None


def _txa_type(txa: Segment | None) -> tuple[str | None, str]:
    """TXA-2 document type: (LOINC code or None, its text)."""
    if txa is None:
        return None, ""
    return (txa.value(2, 1) or None) if _is_loinc(txa.value(2, 3)) else None, _ce_text(txa, 2)


def _ei(seg: Segment, n: int, rep: int = 0) -> str:
    """An EI (entity id ^ namespace ^ universal id) as ``root^extension``, like a CDA id."""
    ident, root = seg.value(n, 1, rep=rep), seg.value(n, 3, rep=rep) or seg.value(n, 2, rep=rep)
    if not ident:
        return ""
    return f"{root}^{ident}" if root else ident


def _own_ids(txa: Segment | None, obr: Segment | None, orc: Segment | None) -> tuple[str, ...]:
    """This version's identifiers: TXA-12 unique document number, then the filler order
    number: OBR-3, else ORC-3, the same number (HL7 v2.5 4.5.1.3), which some LIS fill alone."""
    filler = (obr.value(3) if obr else "") or (orc.value(3) if orc else "")
    ids = [_ei(txa, 12) if txa else "", filler]
    return tuple(dict.fromkeys(i for i in ids if i))


def _parent_ids(txa: Segment | None) -> tuple[str, ...]:
    """TXA-13 parent document number(s): the document a replacement replaces."""
    if txa is None:
        return ()
    return tuple(i for i in (_ei(txa, 13, rep) for rep in range(len(txa.repetitions(13)))) if i)


# MDM events whose TXA-13 names the document this one is an addendum to: the parent stays
# valid beside it (HL7 v2.5 chapter 9; a CDA says so with relatedDocument APND).
_ADDENDA = frozenset({"MDM^T05", "MDM^T06"})


def _replaced_ids(message_type: str, txa: Segment | None, inner: ParsedDocument) -> tuple[str, ...]:
    """The ids of the documents this one replaces: TXA-13 unless the message is an addendum,
    and those its embedded CDA names (relatedDocument RPLC), which are all an ORU^R01 or a
    producer that keeps no TXA-13 gives when the new version has a new setId."""
    parents = () if message_type in _ADDENDA else _parent_ids(txa)
    return tuple(dict.fromkeys([*parents, *inner.refers_to]))


def _ce_text(seg: Segment, n: int) -> str:
    """A CE/CWE's text: CE.2, else the alternate text CE.5."""
    return seg.value(n, 2) or seg.value(n, 5)


def _loinc(seg: Segment) -> str | None:
    if _is_loinc(seg.value(3, 3)):
        return seg.value(3, 1) or None
    if _is_loinc(seg.value(3, 6)):
        return seg.value(3, 4) or None
    return None


# CE.3 / CE.6 naming LOINC: "LN" (HL7 table 0396), as senders also write it ("ln",
# "LOINC") or as its OID (v2.7+ CWE.14 style, put in CE.3 by some).
_LOINC_SYSTEMS = frozenset({"LN", "LOINC", LOINC})


def _is_loinc(system: str) -> bool:
    return system.upper() in _LOINC_SYSTEMS


# HL7 NM: an optional sign, digits, an optional decimal point (a comma from French senders,
# who also group thousands with a space: "150 000" platelets/mm3). Python's float() also
# reads "nan", "inf", "1e400" and "1_000": none is an NM.
_THOUSANDS = "[ \u00a0\u202f]"
_NM = re.compile(rf"[+-]?(?:(?:\d{{1,3}}(?:{_THOUSANDS}\d{{3}})+|\d+)(?:[.,]\d*)?|[.,]\d+)")


def _number(text: str) -> float | None:
    if not _NM.fullmatch(text):
        return None
    return float(re.sub(_THOUSANDS, "", text).replace(",", "."))


def _obx_value(seg: Segment, value_type: str) -> tuple[str, float | None]:
    """(OBX-5 as text, its number when it is one)."""
    reps = seg.repetitions(5)
    if not reps:
        return "", None
    if value_type == "NM":
        value = seg.part(reps[0])
        return value, _number(value)
    if value_type in {"CE", "CWE", "CNE"}:
        return seg.part(reps[0], 2) or seg.part(reps[0], 1), None
    if value_type == "SN":  # comparator ^ num1 ^ separator/suffix ^ num2
        comparator, first, sep, second = (seg.part(reps[0], i) for i in range(1, 5))
        comparator = "" if comparator == "=" else comparator  # "=^5" is exactly 5
        value = f"{comparator}{first}{sep}{second}"
        return value, _number(first) if not (comparator or sep or second) else None
    return "\n".join(seg.text(r) for r in reps).strip(), None


def _render(result: LabResult) -> str:
    line = result.analyte + (f" ({result.loinc})" if result.loinc else "")
    line += f" : {result.value or ''}"
    if result.unit:
        line += f" {result.unit}"
    if result.reference_range:
        line += f" [{result.reference_range}]"
    if result.abnormal_flag:
        line += f" {result.abnormal_flag}"
    return line


def _patient_ids(pid: Segment) -> Iterator[PatientIdentifier]:
    for rep in pid.repetitions(3):
        value = pid.part(rep, 1)
        if not value:
            continue
        namespace, universal = pid.part(rep, 4, 1), pid.part(rep, 4, 2)
        # A test namespace's name outweighs the OID beside it: a test system configured
        # with the production OID is still a test system.
        authority = (namespace if is_test_ins(namespace, None) else universal or namespace) or None
        kind = pid.part(rep, 5) or ("INS" if authority in INS_OIDS else None)
        yield PatientIdentifier(value=value, authority=authority, kind=kind)


# PID-32 identity reliability codes (IHE PAM FR, table 0445 as extended for France) of an
# identity whose INS may not reference health data: provisional, not yet qualified or
# retrieved from INSi unverified, doubtful, fictitious, usurped, invalidated, deactivated.
# A qualified (QUAL) or validated (VALI) identity, or no PID-32 at all, is read as usual.
_UNQUALIFIED = frozenset({"VIDE", "PROV", "RECUP", "DOUT", "FICT", "USUR", "INVA", "DESA"})


def _identity_statuses(pid: Segment) -> set[str]:
    return {pid.part(rep, 1).upper() for rep in pid.repetitions(32)}


def _one_patient(pids: list[tuple[PatientIdentifier, ...]]) -> bool:
    """Whether the PID segments of a message name one patient: each repeats an identifier
    of the first and gives no other value in a namespace they share. A repeated PID may list
    the same ids in another order, or fewer of them (the INS without the IPP)."""

    def by_namespace(ids: tuple[PatientIdentifier, ...]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for i in ids:
            found.setdefault(i.authority or i.kind or "", set()).add(i.value)
        return found

    first = by_namespace(pids[0]) if pids else {}
    for ids in pids[1:]:
        other = by_namespace(ids)
        shared = first.keys() & other.keys()
        if not any(first[n] & other[n] for n in shared) or any(first[n] != other[n] for n in shared):
            return False
    return True


def _demographics(pid: Segment) -> PatientDemographics:
    names = pid.repetitions(5)
    # The legal (birth) name, type L, is the one identity checks compare with.
    name = next((n for n in names if pid.part(n, 7) == "L"), names[0] if names else "")
    return PatientDemographics(
        family_name=pid.part(name, 1) or None, given_name=pid.part(name, 2) or None,
        birth_date=parse_date(pid.value(7)), sex=pid.value(8) or None,
    )  # fmt: skip


def _producer(msh: Segment) -> tuple[str | None, str | None]:
    namespace, universal = msh.value(4, 1), msh.value(4, 2)
    finess = next((v for v in (universal, namespace) if is_finess(v)), None)
    name = namespace if namespace and namespace != finess else None
    return finess, name


def _author(obrs: list[Segment], orc: Segment | None, prts: list[Segment]) -> tuple[str | None, str | None]:
    """(RPPS, name) from OBR-32, OBR-16, ORC-12 then the PRT-5 participants (the French
    profile's author, ``AUT``, first): the first whose id is an RPPS."""
    candidates: list[tuple[str, str, str]] = []
    prts = sorted(prts, key=lambda p: p.value(4, 1) != "AUT")
    for obr in obrs:
        # OBR-32 is an NDL: its first component is a CNN, written as subcomponents.
        candidates.append((obr.value(32, 1, 1), obr.value(32, 1, 3), obr.value(32, 1, 2)))
    for seg, n in [*((obr, 16) for obr in obrs), *([(orc, 12)] if orc else []), *((prt, 5) for prt in prts)]:
        candidates.append((seg.value(n, 1), seg.value(n, 3), seg.value(n, 2)))
    for ident, given, family in candidates:
        rpps = rpps_of(ident)
        if rpps:
            return rpps, " ".join(p for p in (given, family) if p) or None
    return None, None
