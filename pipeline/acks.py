"""What a producer gets back in its batch: the ``_report.json`` and one HL7 ACK per message.

``write_acknowledgements`` writes both through ``Feed.write``, after the batch is processed;
``build_acknowledgements`` returns them unwritten, so the ingest can record its decision in
the ledger first and write the very same files again after a crash.
``amend_acknowledgements`` rewrites them after a replay filed documents the batch rejected
(their entries' ``replayed_at``, their ACKs ``AA``).

The report (``BatchReport``, JSON Schema ``schemas/batch-report.schema.json``) has one
entry per document found in the batch: one per PDF, image or CDA file, one per HL7
message. ``file`` is the file's name relative to the batch (never a server path),
``position`` the message's rank in an HL7 file (1-based), ``message_control_id`` its
MSH-10 and ``ack`` the name of its ACK file. Reasons carry the code, its meaning and what
to do in the report language (``CARNET_REPORT_LANG``, French by default; see
``pipeline.texts``) and the pipeline's technical ``detail``.

Every HL7 message gets an answer. One whose control id can be read (even from a header
Carnet otherwise refuses) gets an ACK ``_ack/<control id>.hl7``: MSA ``AA`` accepted,
indexed, replaced, withdrawn at the producer's request or a duplicate; ``AE`` rejected
for its content (fix and resend);
``AR`` refused before its content was looked at (unreadable header) or for a reason the
producer cannot fix (Carnet's index refused it: resend later). The header echoes the
sender (MSH-3/4 into MSH-5/6), its processing id and character set; one ERR per reason
with the HL7 table 0357 code that matches it (ERR-3), Carnet's code (ERR-5), the
technical detail (ERR-7) and the meaning and action for a person (ERR-8). A message with
no readable control id (segments before any MSH) has no ACK: its report entry names the
file and the position. Characters other than letters, digits, ``.``, ``_`` and ``-`` in
a control id become ``_``, and one longer than 112 characters is cut to its first 95,
then ``_`` and 16 hex digits of its SHA-256; MSA-2 gives at most its first 199 characters
(as escaped; HL7's longest ST), with an ERR warning (102, ``MSH^1^10``) saying the report
gives it whole, so the ACK stays valid HL7; a control id met
again in the same batch gets ``-2``, ``-3``… in report order, so every entry's ``ack``
names its own file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from parsers.hl7_segments import Separators, split_messages
from pipeline.errors import ParserError, SourceError
from pipeline.feeds import ACK_DIR, REPORT, BatchRef, Feed, printable_name
from pipeline.model import Format, Frozen, Outcome, Problem, Reason, Status, count_rejects
from pipeline.texts import DEFAULT_LANGUAGE, language, reason_text, status_text

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SEPARATORS = "|^~\\&"
# MSA-3 (v2.5) is 80 characters long; ERR-8 user message is free text, kept readable.
MSA_TEXT_MAX = 80
# MSA-2 (ST) at its longest: 199 characters, as HL7 allows MSH-10 from v2.7 on (v2.5 says
# 20, which UUID-bearing senders exceed; Carnet accepts theirs, so answers them at 199).
MSA_CONTROL_ID_MAX = 199
# What a cut MSA-2 says to the producer (ERR-8), in the report language.
_CUT_CONTROL_ID = {
    "fr": "Identifiant de message (MSH-10) de plus de {limit} caractères : MSA-2 en donne le début, "
    "le rapport _report.json le donne en entier. Raccourcir MSH-10.",
    "en": "Message control id (MSH-10) longer than {limit} characters: MSA-2 gives its beginning, "
    "_report.json gives it whole. Shorten MSH-10.",
}
# Longest ACK file name base: MSH-10 is 20 characters in v2.5 (199 in v2.7+).
ACK_NAME_MAX = 112
_MESSAGE_HEAD = re.compile(rb"^[\x0b\s\xef\xbb\xbf]*(?:MSH|FHS|BHS)[^A-Za-z0-9\s]")

# HL7 table 0357 (message error condition codes) used in ERR-3.
HL7_ERROR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "207": "Application internal error",
}
# Which 0357 condition each Carnet reason is. Reasons that are not about the message's
# content (transport, Carnet's own failures, batch verdicts) are 207.
HL7_ERROR_CODE: dict[str, str] = {
    "unsupported_format": "200",
    "unsupported_message": "200",
    "parse_error": "100",
    "encrypted_document": "102",
    "empty_document": "101",
    "missing_ins": "101",
    "invalid_ins_key": "102",
    "identity_conflict": "204",
    "identity_mismatch": "204",
    "unreadable_scan": "102",
    "missing_date": "101",
    "implausible_date": "102",
    "implausible_unit": "103",
    "implausible_value": "102",
    "negative_value": "102",
    "invalid_result": "102",
    "unknown_producer": "103",
    "unknown_document": "204",  # unknown key identifier: the document to delete
    "manifest_mismatch": "207",
    "index_error": "207",
    "low_ocr_confidence": "102",
    "short_text": "101",
    "unknown_document_type": "103",
    "malformed_identifier": "102",
    "batch_threshold": "207",
    "account_closed": "207",
    "opposition": "207",
    "unsafe_path": "207",
    "unreadable_file": "207",
    "text_truncated": "207",  # Carnet's own limit, not a fault of the message
}
# Where in the message the patient identity lives (ERR-2, segment^sequence^field).
_IDENTITY_LOCATION = "PID^1^3"
_IDENTITY_REASONS = frozenset({"missing_ins", "invalid_ins_key", "identity_conflict", "identity_mismatch"})
# Reasons for which the message itself is not at fault: the producer should resend it.
# ... or the patient's account is closed or they opposed the record (the ERR segment says
# which; do not resend until the patient reopens it).
_REFUSED = frozenset({Reason.INDEX_ERROR, Reason.ACCOUNT_CLOSED, Reason.OPPOSITION})
# Header refusals (unsupported message type or version): AR in HL7's original mode.
_HEADER_ERRORS = frozenset({"200", "203"})


def hl7_error_code(problem: Problem) -> str:
    """The HL7 table 0357 code (ERR-3) for one of Carnet's reasons."""
    if problem.code is Reason.PARSE_ERROR:
        # One code for many structural failures: tell the header's apart.
        if "unsupported HL7 version" in problem.message:
            return "203"
        if "MSH without" in problem.message:
            return "101"
    return HL7_ERROR_CODE.get(problem.code.value, "207")


# -- the report ------------------------------------------------------------------------------


class ReportReason(Frozen):
    """A reason code as a producer reads it."""

    code: Reason
    blocking: bool  # false: a warning, the document was still accepted
    message: str  # what the code means, in the report language
    action: str  # what the producer should do, in the report language
    detail: str  # the pipeline's own message (technical, English)


class ReportEntry(Frozen):
    """One document of the batch: a file, or one message of an HL7 file."""

    file: str  # relative to the batch, as the producer named it
    position: int | None = None  # rank of the message in an HL7 file, 1-based
    source: str  # ``file`` or ``file#position``
    message_control_id: str | None = None  # HL7 MSH-10
    ack: str | None = None  # the ACK written for this message, relative to the batch
    ack_code: str | None = None  # AA, AE or AR
    status: Status
    status_text: str
    doc_id: str | None = None
    reasons: tuple[ReportReason, ...] = ()
    # When ``carnet replay`` decided this document again (after its rejection's cause was
    # fixed): status, reasons and ACK are the replay's. None: as the batch decided it.
    replayed_at: dt.datetime | None = None


class BatchReport(Frozen):
    """``_report.json``: what became of every document of one batch."""

    producer: str
    batch: str
    processed_at: dt.datetime
    language: str
    documents: int
    accepted: int  # indexed
    duplicate: int
    replaced: int
    withdrawn: int  # deletion requests applied
    rejected: int
    by_status: dict[str, int]
    rejected_by_reason: dict[str, int]
    files: tuple[ReportEntry, ...]


# -- reading the producer's header ------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What an ACK echoes from the original message's MSH (fields as ER7 text)."""

    control_id: str | None
    sending_application: str = ""
    sending_facility: str = ""
    event: str = ""
    processing_id: str = "P"
    charset: str | None = None  # MSH-18 as declared, when Carnet can answer in it
    valid: bool = True  # hl7apy accepts the separators and the structure


_CODECS = {"8859/1": "iso-8859-1", "8859/15": "iso-8859-15", "UNICODE UTF-8": "utf-8"}


def read_header(msh: bytes) -> Header:
    """The fields an ACK needs, read tolerantly (a header Carnet refuses still has some)."""
    text = msh.decode("latin-1")
    if not text.startswith("MSH") or len(text) < 4:
        return Header(control_id=None, valid=False)
    fsep = text[3]
    comp = text[4] if len(text) > 4 and text[4] not in (fsep, "\r") else "^"
    fields = text.split(fsep)
    fields.insert(1, fsep)  # MSH-1 is the separator itself

    def field(n: int) -> list[str]:
        raw = fields[n] if n < len(fields) else ""
        return raw.split(comp)

    standard = text[3:8] == _SEPARATORS

    def hd(n: int) -> str:  # HD: up to 3 components, re-encoded with Carnet's separators
        return "^".join(c if standard else _escape(c) for c in field(n)[:3]).rstrip("^")

    try:
        Separators.from_msh(text.split("\r")[0], source="ack")
        valid = True
    except ParserError:
        valid = False
    declared = field(18)[0].split("~")[0].strip().upper()
    control = field(10)[0].strip()
    return Header(
        control_id=control or None,
        sending_application=hd(3),
        sending_facility=hd(4),
        event=_escape(field(9)[1].strip()) if len(field(9)) > 1 else "",
        processing_id=_escape(field(11)[0].strip()) or "P",
        charset=declared if declared in _CODECS else None,
        valid=valid,
    )


def message_headers(data: bytes) -> list[Header | None]:
    """Per message of an HL7 file (in order), its header; None for a message without MSH."""
    return [None if raw.headless else read_header(raw.segments[0]) for raw in split_messages(data)]


def looks_like_hl7(data: bytes) -> bool:
    return bool(_MESSAGE_HEAD.match(data[:64]))


# -- building an ACK -------------------------------------------------------------------------


def ack_code(outcome: Outcome, header: Header | None = None) -> str:
    """``AA``, ``AE`` or ``AR`` for one message's outcome."""
    if outcome.status is not Status.REJECTED:
        return "AA"
    header_refused = any(
        hl7_error_code(r) in _HEADER_ERRORS or (r.code is Reason.PARSE_ERROR and "MSH" in r.message)
        for r in outcome.reasons
        if r.blocking
    )
    if (
        any(r.code in _REFUSED for r in outcome.reasons)
        or header_refused
        or (header is not None and not header.valid)
    ):
        return "AR"
    return "AE"


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters of ``|^~\\&``; line breaks become spaces."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("~", "\\R\\").replace("&", "\\T\\").replace("\r", " ").replace("\n", " ")


def clip(text: str, limit: int) -> str:
    """``text`` escaped, at most ``limit`` characters, cut at a word boundary with ``…``."""
    if len(_escape(text)) <= limit:
        return _escape(text)
    words = text.split()
    while words and len(_escape(" ".join(words))) + 1 > limit:
        words.pop()
    return _escape(" ".join(words)) + "…" if words else _escape(text[: limit - 1]) + "…"


def build_ack(
    outcome: Outcome, header: Header, *, at: dt.datetime, lang: str = DEFAULT_LANGUAGE, ack_id_seed: str = ""
) -> bytes:
    """The ACK message for one HL7 message's outcome (segments ended by CR), encoded."""
    code = ack_code(outcome, header)
    control_id = header.control_id or outcome.message_control_id or ""
    ack_id = (
        "ACK" + hashlib.sha256(f"{ack_id_seed}\x1f{outcome.source}\x1f{control_id}".encode()).hexdigest()[:16]
    )
    if code == "AA":
        text = status_text(outcome.status, lang)
    else:
        blocking = [p for p in outcome.reasons if p.blocking] or list(outcome.reasons)
        text = reason_text(blocking[0].code, lang).meaning if blocking else status_text(outcome.status, lang)
    codec = _CODECS.get(header.charset or "", "utf-8")
    charset = header.charset or "UNICODE UTF-8"
    event = header.event or "R01"
    segments = [
        f"MSH|{_SEPARATORS[1:]}|CARNET|CARNET|{header.sending_application}"
        f"|{header.sending_facility}|{at:%Y%m%d%H%M%S}+0000||ACK^{event}^ACK|{ack_id}"
        f"|{header.processing_id}|2.5||||||{charset}",
        f"MSA|{code}|{msa_control_id(control_id)}|{clip(text, MSA_TEXT_MAX)}",
    ]
    if msa_control_id(control_id) != _escape(control_id):
        detail = f"MSH-10 has {len(control_id)} characters, past HL7's {MSA_CONTROL_ID_MAX}: MSA-2 cut"
        user = _CUT_CONTROL_ID[language(lang)].format(limit=MSA_CONTROL_ID_MAX)
        # ERR-5 (Carnet's code) empty: no reason of Carnet's, the outcome stands as decided.
        fields = ["ERR", "", "MSH^1^10", f"102^{HL7_ERROR_TEXT['102']}^HL70357", "W", "", ""]
        segments.append("|".join([*fields, clip(detail, 2048), clip(user, 250)]))
    for p in outcome.reasons:
        hl7_code = hl7_error_code(p)
        meaning, action = reason_text(p.code, lang)
        location = _IDENTITY_LOCATION if p.code.value in _IDENTITY_REASONS else ""
        user = f"{meaning}. {action}" if action else meaning
        segments.append(
            "|".join(
                [
                    "ERR",
                    "",
                    location,
                    f"{hl7_code}^{HL7_ERROR_TEXT[hl7_code]}^HL70357",
                    "E" if p.blocking else "W",
                    f"{p.code.value}^{clip(meaning, 199)}^CARNET",
                    "",
                    clip(p.message, 2048),
                    clip(user, 250),
                ]
            )
        )
    return ("\r".join(segments) + "\r").encode(codec, "replace")


def msa_control_id(control_id: str) -> str:
    """MSA-2 for a control id: escaped, cut to its longest beginning that fits HL7's
    199 characters without splitting an escape sequence (the report keeps it whole)."""
    out = ""
    for char in control_id:
        escaped = _escape(char)
        if len(out) + len(escaped) > MSA_CONTROL_ID_MAX:
            break
        out += escaped
    return out


def ack_base_name(control_id: str) -> str:
    """The ACK's file name for a control id (before ``.hl7`` and any ``-2``): its unsafe
    characters replaced; one too long for a file name (filesystems allow 255 bytes) cut,
    with a digest of the whole id so that two long ids sharing a beginning stay apart."""
    base = _UNSAFE.sub("_", control_id) or "_"
    if len(base) <= ACK_NAME_MAX:
        return base
    digest = hashlib.sha256(control_id.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{base[: ACK_NAME_MAX - 17]}_{digest}"


# -- the batch's acknowledgements ----------------------------------------------------------------


@dataclass
class _Located:
    outcome: Outcome
    file: str  # the name in the batch, as the feed reads it
    position: int | None


def _relative_names(feed: Feed, batch: BatchRef) -> dict[str, str]:
    """Source as reports write it (``printable_name``) → the file's own name in the batch."""
    names = set(batch.files) | {e.name for e in batch.manifest or ()}
    return {printable_name(feed.source_uri(batch, n)): n for n in names}


def _locate(outcome: Outcome, names: dict[str, str], batch: BatchRef) -> _Located:
    """The outcome's file relative to the batch, and its message position if any."""
    source, position = outcome.source, None
    head, sep, tail = source.rpartition("#")
    # "cr#1" is message 1 of the file "cr" only when it is a message: a file may be named
    # so itself (an HL7 message's source always ends in "#n", a file's never does).
    if sep and tail.isdigit() and head in names and (outcome.format is Format.HL7V2 or source not in names):
        source, position = head, int(tail)
    name = names.get(source)
    if name is None:
        # Not a file of the batch listing (should not happen): never leak a server path.
        marker = f"{batch.producer}/{batch.batch}/"
        name = source.rsplit(marker, 1)[1] if marker in source else source.rsplit("/", 1)[-1]
    return _Located(outcome, name, position)


def _expand(located: list[_Located], headers: dict[str, list[Header | None]]) -> list[_Located]:
    """A whole HL7 file refused as one (no message readable): one entry per message."""
    out: list[_Located] = []
    for loc in located:
        msgs = headers.get(loc.file)
        if loc.position is not None or not msgs:
            out.append(loc)
            continue
        for n, h in enumerate(msgs, start=1):
            control = h.control_id if h else None
            out.append(
                _Located(
                    loc.outcome.model_copy(
                        update={
                            "source": f"{loc.outcome.source}#{n}",
                            "format": Format.HL7V2,
                            "message_control_id": control,
                        }
                    ),
                    loc.file,
                    n,
                )
            )
    return out


def _reasons(problems: Sequence[Problem], lang: str) -> tuple[ReportReason, ...]:
    out = []
    for p in problems:
        meaning, action = reason_text(p.code, lang)
        out.append(
            ReportReason(code=p.code, blocking=p.blocking, message=meaning, action=action, detail=p.message)
        )
    return tuple(out)


def _report(
    producer: str, batch: str, entries: Sequence[ReportEntry], *, at: dt.datetime, lang: str
) -> BatchReport:
    counts = Counter(e.status.value for e in entries)
    return BatchReport(
        producer=producer,
        batch=batch,
        processed_at=at,
        language=lang,
        documents=len(entries),
        accepted=counts[Status.INDEXED.value],
        duplicate=counts[Status.DUPLICATE.value],
        replaced=counts[Status.REPLACED.value],
        withdrawn=counts[Status.WITHDRAWN.value],
        rejected=counts[Status.REJECTED.value],
        by_status={s.value: counts[s.value] for s in Status},
        rejected_by_reason=count_rejects(
            (r.code for r in e.reasons if r.blocking) for e in entries if e.status is Status.REJECTED
        ),
        files=tuple(entries),
    )


def upload_report(
    outcomes: Sequence[Outcome],
    *,
    producer: str,
    batch: str,
    file: str,
    lang: str = DEFAULT_LANGUAGE,
    at: dt.datetime | None = None,
) -> BatchReport:
    """The acknowledgement of a batch of one uploaded file, as a producer's ``_report.json``
    would say it (no HL7 ACKs: an upload is not an HL7 exchange)."""
    lang = language(lang)
    entries = [
        ReportEntry(
            file=file,
            source=file,
            status=o.status,
            status_text=status_text(o.status, lang),
            doc_id=o.doc_id,
            reasons=_reasons(o.reasons, lang),
        )
        for o in outcomes
    ]
    return _report(producer, batch, entries, at=at or dt.datetime.now(dt.UTC), lang=lang)


def write_acknowledgements(
    feed: Feed,
    batch: BatchRef,
    outcomes: Sequence[Outcome],
    *,
    lang: str = DEFAULT_LANGUAGE,
    at: dt.datetime | None = None,
) -> BatchReport:
    """Write every HL7 message's ACK, then ``_report.json``; return the report."""
    report, files = build_acknowledgements(feed, batch, outcomes, lang=lang, at=at)
    for name, data in files.items():
        feed.write(batch, name, data)
    return report


def build_acknowledgements(
    feed: Feed,
    batch: BatchRef,
    outcomes: Sequence[Outcome],
    *,
    lang: str = DEFAULT_LANGUAGE,
    at: dt.datetime | None = None,
) -> tuple[BatchReport, dict[str, bytes]]:
    """The report and every file to write in the batch (ACKs first, ``_report.json`` last),
    without writing them: a batch's acknowledgement is decided (recorded in the ledger)
    before it is written, so that a rerun writes the same one."""
    files: dict[str, bytes] = {}
    at = at or dt.datetime.now(dt.UTC)
    lang = language(lang)
    names = _relative_names(feed, batch)
    located = [_locate(o, names, batch) for o in outcomes]
    headers: dict[str, list[Header | None]] = {}
    for loc in located:
        o = loc.outcome
        maybe_hl7 = o.format is Format.HL7V2 or (o.format is None and o.status is Status.REJECTED)
        # Only a file found in the batch: a name only its manifest gives is a missing file,
        # and may point anywhere ("../../<other producer>/…").
        if loc.file in headers or not maybe_hl7 or loc.file not in batch.files:
            continue
        try:
            data = feed.read(batch, loc.file)
        except (OSError, KeyError, SourceError):
            # Listed in the manifest but absent, a link never read (unsafe_path) or a file
            # Carnet may not read (unreadable_file):
            # nothing to answer in HL7.
            continue
        if o.format is Format.HL7V2 or looks_like_hl7(data):
            headers[loc.file] = message_headers(data)
    entries = []
    used: Counter[str] = Counter()
    for loc in _expand(located, headers):
        o = loc.outcome
        header = None
        if loc.file in headers and loc.position is not None:
            msgs = headers[loc.file]
            header = msgs[loc.position - 1] if loc.position <= len(msgs) else None
        control_id = (header.control_id if header else None) or o.message_control_id
        ack = code = None
        if control_id and (loc.file in headers or o.format is Format.HL7V2):
            base = ack_base_name(control_id)
            used[base] += 1
            ack = f"{ACK_DIR}/{base}.hl7" if used[base] == 1 else f"{ACK_DIR}/{base}-{used[base]}.hl7"
            header = header or Header(control_id=control_id)
            code = ack_code(o, header)
            files[ack] = build_ack(o, header, at=at, lang=lang, ack_id_seed=batch.key)
        name = printable_name(loc.file)
        entries.append(
            ReportEntry(
                file=name,
                position=loc.position,
                source=name if loc.position is None else f"{name}#{loc.position}",
                message_control_id=control_id,
                ack=ack,
                ack_code=code,
                status=o.status,
                status_text=status_text(o.status, lang),
                doc_id=o.doc_id,
                reasons=_reasons(o.reasons, lang),
            )
        )
    report = _report(printable_name(batch.producer), printable_name(batch.batch), entries, at=at, lang=lang)
    files[REPORT] = report_bytes(report)
    return report, files


def report_bytes(report: BatchReport) -> bytes:
    """``_report.json`` as written: an entry never replayed has no ``replayed_at`` (the
    reports of before it, which producers' tools read, are unchanged)."""
    data = report.model_dump(mode="json")
    for entry in data["files"]:
        if entry["replayed_at"] is None:
            del entry["replayed_at"]
    return json.dumps(data, ensure_ascii=False, indent=2).encode()


def amend_acknowledgements(
    files: Mapping[str, bytes],
    released: Mapping[str, Outcome],
    headers: Mapping[str, Header],
    *,
    batch_key: str,
    at: dt.datetime | None = None,
) -> dict[str, bytes]:
    """A batch's written acknowledgement ``files`` as a replay leaves them: each entry still
    rejected whose ``source`` (relative to the batch) ``released`` names takes its new
    outcome, ``replayed_at`` and, for an HL7 message, a new ACK (``headers``: its MSH, by
    source); the counts follow. Only the files that change are returned (the report last);
    none when no entry does (a report of another delivery, or already amended)."""
    report = BatchReport.model_validate_json(files[REPORT])
    at = at or dt.datetime.now(dt.UTC)
    out: dict[str, bytes] = {}
    entries = []
    for e in report.files:
        o = released.get(e.source)
        if o is None or e.status is not Status.REJECTED or o.status is Status.REJECTED:
            entries.append(e)
            continue
        code = None
        if e.ack is not None:
            header = headers.get(e.source) or Header(control_id=e.message_control_id)
            code = ack_code(o, header)
            out[e.ack] = build_ack(o, header, at=at, lang=report.language, ack_id_seed=batch_key)
        entries.append(
            e.model_copy(
                update={
                    "status": o.status,
                    "status_text": status_text(o.status, report.language),
                    "doc_id": o.doc_id,
                    "reasons": _reasons(o.reasons, report.language),
                    "ack_code": code,
                    "replayed_at": at,
                }
            )
        )
    if entries == list(report.files):
        return {}
    # processed_at stays the batch's: the replay's time is each entry's replayed_at.
    amended = _report(report.producer, report.batch, entries, at=report.processed_at, lang=report.language)
    out[REPORT] = report_bytes(amended)
    return out


def write_hl7_acks(
    feed: Feed, batch: BatchRef, outcomes: Sequence[Outcome], *, lang: str = DEFAULT_LANGUAGE
) -> list[str]:
    """Write the batch's acknowledgements; return the names of the ACK files written."""
    report = write_acknowledgements(feed, batch, outcomes, lang=lang)
    return [e.ack for e in report.files if e.ack]
