"""CDA R2 parser: French CI-SIS clinical documents (CR-BIO lab reports, CR-IMG imaging reports).

Reads a ``ClinicalDocument`` (namespace ``urn:hl7-org:v3``) into one ``ParsedDocument``:
patient identifiers and demographics from ``recordTarget``, type and title from ``code`` /
``title``, author RPPS and producer FINESS from ``author`` / ``custodian``, the narrative of
every section as text, structured lab results from ``entry`` observations, and the text of an
embedded document (``nonXMLBody``: a PDF read with its text layer and OCR for scanned
pages, an image OCR'd, plain text; see ``parsers/embedded.py``). The XML is parsed with
defusedxml and DTDs are refused outright: a CDA never needs one, so XXE and
entity-expansion attempts are parse errors.

The XML is read as a stream (``iterparse``), so that a big document is not held twice:
each section's narrative is turned into lines child by child as the parse reaches it,
and each ``entry`` into lab results when it closes; both are then dropped from the tree,
which keeps only the header and the sections' skeleton (see ``_StreamedDocument``).

The ``ClinicalDocument`` may be the root, or sit inside a wrapper: an *auto-presentable*
document (the CI-SIS way of shipping a CDA with its own rendering: the root is an
``xsl:stylesheet`` holding the ``ClinicalDocument``), an enveloping XML signature, or any
other element, as long as the file holds exactly one ``ClinicalDocument``.

Conventions chosen here (the pipeline relies on them):

* ``producer_document_id`` is the **setId** (``root^extension``) when the document has one,
  else its ``id``: every version of a document shares its setId, so version 2 replaces
  version 1 in the patient's record; ``version`` carries ``versionNumber``. The ``id`` is
  kept in ``document_ids`` too, and ``refers_to`` holds the ids (and setIds) that
  ``relatedDocument typeCode="RPLC"`` names: a replacement finds its parent by them when
  the producer kept no setId (optional before the CI-SIS made it mandatory) or gave a new one.
  An addendum (``relatedDocument typeCode="APND"``) is named by its ``id`` alone: it adds to
  its parent, and its setId (often the parent's, reused) must not make it the next version.
* ``visibility``: ``confidentialityCode`` N/R/V say nothing on their own; a flag is set only
  when the code of a header ``confidentialityCode`` (every one, not only the first), or one
  of its ``translation`` codes, is a ``Visibility`` value (the DMP vocabulary, e.g.
  ``MASQUE_PS``).
* ``type_code``: the ``code`` of the document when it is LOINC or a national type
  (TRE_A05), else its first LOINC or national ``translation``, else the code as given.
* ``document_date`` is the exam date (``documentationOf/serviceEvent/effectiveTime/low``)
  when given, else the document's creation date (``ClinicalDocument/effectiveTime``); an
  act later than the creation date is planned, not done, and does not date the document.
* ``producer_finess`` comes from the author's organisation first and the custodian second:
  the custodian may be a hosting service rather than the lab or radiology practice.
"""

from __future__ import annotations

import codecs
import datetime as dt
import io
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_etree
from defusedxml import DefusedXmlException

from parsers.embedded import EmbeddedReader, EmbeddedText, decode_base64, sniff_media_type
from parsers.timestamps import parse_ts
from pipeline.errors import ParserError
from pipeline.identifiers import INS_NIR_OID, RPPS_OID, STRUCTURE_OID, finess_of, is_test_ins, rpps_of
from pipeline.model import (
    Format,
    LabResult,
    ParsedDocument,
    PatientDemographics,
    PatientIdentifier,
    Reason,
    Visibility,
)
from pipeline.type_codes import TYPE_CODE_SYSTEMS

if TYPE_CHECKING:
    from parsers.ocr import TesseractOcr

log = logging.getLogger(__name__)

NS = "urn:hl7-org:v3"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
LOINC_OID = "2.16.840.1.113883.6.1"

_ID_KINDS = {INS_NIR_OID: "INS"}

XSLT_NS = "http://www.w3.org/1999/XSL/Transform"
XMLDSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
# Roots that wrap a CDA in the CI-SIS: auto-presentable documents, enveloping signatures.
_WRAPPER_ROOTS = frozenset({(XSLT_NS, "stylesheet"), (XSLT_NS, "transform"), (XMLDSIG_NS, "Signature")})

# The XML prolog that may precede the root element: declaration / PIs, comments, DOCTYPE.
_PROLOG_ITEM = re.compile(r"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\]\s*)?>)", re.S)
_START_TAG = re.compile(r"<(?:([A-Za-z_][\w.-]*):)?([A-Za-z_][\w.-]*)(?=[\s/>])([^>]*)")
_XMLNS = re.compile(r"\bxmlns(?::([A-Za-z_][\w.-]*))?\s*=\s*([\"'])([^\"'<>]*)\2")
# Markup that can hold text looking like a start tag without being one.
_NOT_MARKUP = re.compile(r"<!--.*?(?:-->|$)|<!\[CDATA\[.*?(?:\]\]>|$)|<\?.*?(?:\?>|$)", re.S)


class CdaParser:
    """Parser for HL7 CDA R2 documents (plain, auto-presentable or signed)."""

    name = "cda"
    # Wrappers put the ClinicalDocument a few KB in: an auto-presentable document's
    # stylesheet, a signature's certificate and XAdES properties. The sniff stays textual
    # and bounded.
    sniff_bytes = 65536

    def __init__(self, *, ocr: TesseractOcr | None = None, min_text_chars_per_page: int = 20) -> None:
        # OCR is for scanned PDFs and images in a nonXMLBody; without an engine given, a
        # default French one is built the first time such a document comes.
        self.embedded = EmbeddedReader(ocr=ocr, min_text_chars_per_page=min_text_chars_per_page)

    def score(self, head: bytes) -> int:
        """100 when the root element is ``ClinicalDocument`` in the HL7 v3 namespace; 90
        when ``head`` (up to ``sniff_bytes``) shows one inside another root
        (auto-presentable, signed); 50 when the root is an XSLT stylesheet or a signature
        that declares the HL7 v3 namespace (its ``ClinicalDocument`` further on); else 0."""
        return _sniff(head)

    def parse(self, data: bytes, *, source: str) -> list[ParsedDocument]:
        doc = _read_document(_stream_xml(data, source), data, source, self.embedded)
        log.debug(
            "CDA %s: type %s, %d patient ids, %d results, %d text chars",
            source, doc.type_code, len(doc.patient_ids), len(doc.results), len(doc.text),
        )  # fmt: skip
        return [doc]


def _head_text(head: bytes) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="ignore")
    if len(head) >= 2 and (head[0] == 0) != (head[1] == 0):
        # UTF-16 without a BOM (XML 1.0 appendix F): markup starts with an ASCII character,
        # so one of its two bytes is NUL; which one gives the byte order. expat reads it so.
        return head.decode("utf-16-be" if head[0] == 0 else "utf-16-le", errors="ignore")
    # Tag names are ASCII; latin-1 never fails and keeps byte offsets.
    return head.removeprefix(b"\xef\xbb\xbf").decode("latin-1")


def _namespaces(attributes: str) -> dict[str, str]:
    """Namespace declarations in a start tag's attributes: prefix ('' = default) -> URI."""
    return {prefix or "": uri for prefix, _, uri in _XMLNS.findall(attributes)}


def _sniff(head: bytes) -> int:
    text = _head_text(head)
    pos = 0
    while match := _PROLOG_ITEM.match(text, pos):
        pos = match.end()
    root = _START_TAG.match(text, len(text) - len(text[pos:].lstrip()))
    if root is None:
        return 0
    prefix, local, attributes = root.groups()
    declared = _namespaces(attributes)
    if local == "ClinicalDocument":
        return 100 if declared.get(prefix or "") == NS else 0
    # A wrapper: look for a ClinicalDocument start tag further in the head, its prefix
    # bound to the HL7 v3 namespace by the declarations seen so far (one linear, textual
    # pass; the parse decides for sure). Comments, CDATA and PIs are blanked first.
    rest = _NOT_MARKUP.sub(lambda m: " " * len(m.group(0)), text[root.end() :])
    scope = dict(declared)
    for tag in _START_TAG.finditer(rest):
        tag_prefix, tag_local, tag_attributes = tag.groups()
        scope.update(_namespaces(tag_attributes))
        if tag_local == "ClinicalDocument" and scope.get(tag_prefix or "") == NS:
            return 90
    if (declared.get(prefix or ""), local) in _WRAPPER_ROOTS and NS in declared.values():
        return 50
    return 0


class _Narrative:
    """The lines of one section's narrative block (``section/text``), read a child at a
    time while the parse goes on: a child is read once its tail is known (when the next
    child starts or the block ends), then removed, so one child at most is held."""

    def __init__(self, elem: Element) -> None:
        self.elem = elem
        self.lines: list[str] = []
        self.pending: list[str] = []
        self.started = False
        self.closed: list[Element] = []  # children ended, not read yet

    def child_starts(self) -> None:
        """A child starts: the block's own text and the previous children's tails are known."""
        self._read_closed()

    def child_ends(self, child: Element) -> None:
        self.closed.append(child)

    def end(self) -> None:
        self._read_closed()
        _flush(self.lines, self.pending)

    def _read_closed(self) -> None:
        if not self.started:
            self.pending.append(self.elem.text or "")
            self.started = True
        for child in self.closed:
            _narrative_child(child, self.lines, self.pending)
            self.elem.remove(child)
        self.closed.clear()


@dataclass
class _StreamedDocument:
    """A CDA read by ``_stream_xml``: the ``ClinicalDocument`` without its narratives and
    entries, which were read on the way (lines by narrative element, results in order)."""

    root: Element
    narratives: dict[int, list[str]] = field(default_factory=dict)  # id(section/text) -> lines
    results: list[LabResult] = field(default_factory=list)

    def narrative_lines(self, text: Element) -> list[str]:
        return self.narratives[id(text)]  # every section/text was read on the way


# Elements deeper than this make the file a parse error. A CI-SIS CDA nests some 20 deep
# (sections in sections, organizers, reference ranges, narrative tables); the readers of
# narratives, sections and entries recurse once or twice per level, so a hostile nesting
# thousands deep would otherwise end in a RecursionError instead of a clear rejection.
MAX_DEPTH = 128
_CLINICAL_DOCUMENT = f"{{{NS}}}ClinicalDocument"
_ENTRY = f"{{{NS}}}entry"
_SECTION = f"{{{NS}}}section"
_TEXT = f"{{{NS}}}text"


# The XML declaration after blanks, and its encoding; what Python's codecs call the Latin
# encodings French producers declare.
_DECLARATION = re.compile(rb"[ \t\r\n]*(<\?xml[ \t\r\n][^?>]*\?>)")
_ENCODING = re.compile(rb"""(\bencoding\s*=\s*)(["'])([A-Za-z][\w.:-]*)\2""")
_LATIN = frozenset({"latin-1", "iso8859-1", "iso8859-15", "cp1252"})
_UTF8_BOM = b"\xef\xbb\xbf"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _xml_input(data: bytes, *, not_utf8: bool = False) -> bytes | None:
    """What expat is to read instead of ``data`` when its prolog misleads it, else None.

    The bytes decide where the declaration cannot be right: a UTF-8 BOM, or bytes that are
    UTF-8 and not ASCII under a Latin declaration (an interface re-encoding, never Latin
    text: an accented letter there is one byte, invalid as UTF-8), are UTF-8; with
    ``not_utf8`` (the parse failed), bytes declared or defaulting to UTF-8 that are not
    UTF-8 are read as Windows-1252, French producers' other encoding. A spelling of UTF-8
    expat does not know (``UTF8``) is written out, and blanks before the declaration (a
    template's) are dropped. UTF-16 (its BOM) is left to expat.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4]:
        return None  # UTF-16 or UTF-32: expat reads them by their BOM
    bom = data.startswith(_UTF8_BOM)
    rest = data[len(_UTF8_BOM) :] if bom else data
    declaration = _DECLARATION.match(rest)
    label = _ENCODING.search(declaration.group(1)) if declaration else None
    try:
        declared = codecs.lookup(label.group(3).decode("ascii")).name if label else "utf-8"
    except LookupError:
        return None  # refused by expat, with its reason
    if declared != "utf-8" and (bom or (declared in _LATIN and not rest.isascii() and _is_utf8(rest))):
        encoding = "UTF-8"
    elif not_utf8 and declared == "utf-8" and not _is_utf8(rest):
        encoding = "windows-1252"
    elif declared == "utf-8" and label is not None and label.group(3).upper() != b"UTF-8":
        encoding = "UTF-8"
    elif declaration is not None and declaration.start(1) > 0:
        encoding = None  # only the blanks to drop
    else:
        return None
    if declaration is None:
        return b'<?xml version="1.0" encoding="' + (encoding or "UTF-8").encode() + b'"?>' + rest
    text = declaration.group(1)
    if encoding is not None:
        name = b'"' + encoding.encode() + b'"'
        text = (
            _ENCODING.sub(lambda m: m.group(1) + name, text)
            if label
            else text[:-2] + b" encoding=" + name + b"?>"
        )
    return text + rest[declaration.end() :]


def _stream_xml(data: bytes, source: str) -> _StreamedDocument:
    """Parse ``data`` into a ``_StreamedDocument``, read in the encoding its bytes are in
    (``_xml_input``): as declared, unless the bytes say otherwise."""
    try:
        return _parse_xml(_xml_input(data) or data, source)
    except ParserError:
        again = _xml_input(data, not_utf8=True)
        if again is None:
            raise
        return _parse_xml(again, source)  # its error, if any, is about the text, not a byte


def _parse_xml(data: bytes, source: str) -> _StreamedDocument:
    """Parse ``data`` (defusedxml, no DTD) into a ``_StreamedDocument``.

    Results come out as ``ClinicalDocument.iter('entry')`` would give them (entries in
    document order, each one's observations without its nested entries'), and each
    narrative's lines as ``_narrative_lines`` would read the whole element.
    """
    # Open elements, each with its reader when it is a section's narrative block.
    stack: list[tuple[Element, _Narrative | None]] = [(Element("document"), None)]
    documents: list[Element] = []
    in_document = 0  # ClinicalDocument elements open
    narratives: list[_Narrative] = []
    open_narratives = 0
    entry_slots: list[list[LabResult]] = []  # one per entry, in the order entries start
    open_entries: list[int] = []
    root: Element | None = None
    try:
        for event, elem in safe_etree.iterparse(io.BytesIO(data), ("start", "end"), forbid_dtd=True):
            if event == "start":
                if len(stack) > MAX_DEPTH:  # the stack holds a placeholder root, then elements
                    raise ParserError(f"XML nested more than {MAX_DEPTH} elements deep", source=source)
                parent, reading = stack[-1]
                if reading is not None:
                    reading.child_starts()
                own = None
                tag = elem.tag
                if tag == _CLINICAL_DOCUMENT:
                    documents.append(elem)
                    in_document += 1
                elif tag == _ENTRY and in_document:
                    entry_slots.append([])
                    open_entries.append(len(entry_slots) - 1)
                elif tag == _TEXT and parent.tag == _SECTION:
                    own = _Narrative(elem)
                    narratives.append(own)
                    open_narratives += 1
                stack.append((elem, own))
                continue
            _, own = stack.pop()
            if own is not None:
                own.end()
                open_narratives -= 1
            tag = elem.tag
            if tag == _CLINICAL_DOCUMENT:
                in_document -= 1
            elif tag == _ENTRY and in_document:
                entry_slots[open_entries.pop()] = list(_entry_results(elem, None))
                # Read: dropped, unless a narrative still has to read its content as text.
                if not open_narratives:
                    elem.clear()
            reading = stack[-1][1]
            if reading is not None:
                reading.child_ends(elem)
            if len(stack) == 1:
                root = elem
    except (ParseError, DefusedXmlException) as exc:
        raise ParserError(f"unreadable CDA XML: {exc}", source=source) from exc
    except LookupError as exc:  # the XML declaration names an encoding Python does not know
        raise ParserError(f"unreadable CDA XML: {exc}", source=source) from exc
    if root is None:  # iterparse raises on a document without an element; kept for mypy
        raise ParserError("unreadable CDA XML: no element", source=source)
    document = _clinical_document(root, documents, source)
    return _StreamedDocument(
        root=document,
        narratives={id(n.elem): n.lines for n in narratives},
        results=[result for slot in entry_slots for result in slot],
    )


def _clinical_document(root: Element, found: list[Element], source: str) -> Element:
    """The ``ClinicalDocument``: the root, or the one element of that name in a wrapper
    (``found``: every ``ClinicalDocument`` element, in document order)."""
    if root.tag == _CLINICAL_DOCUMENT:
        return root
    if len(found) == 1:
        return found[0]
    if not found:
        raise ParserError(
            f"root element is {root.tag}, not a CDA ClinicalDocument, and holds none", source=source
        )
    raise ParserError(
        f"{root.tag} holds {len(found)} CDA ClinicalDocuments; one document per file", source=source
    )


def _read_document(
    streamed: _StreamedDocument, data: bytes, source: str, embedded: EmbeddedReader
) -> ParsedDocument:
    root = streamed.root
    body = _body(streamed, source, embedded)
    code = _find(root, "code")
    type_code, type_system, type_display = _type_code(code)
    rpps, author_name = _author(root)
    finess, producer_name = _producer(root)
    version = _attr(_find(root, "versionNumber"), "value")
    own_id, set_id = _ii(_find(root, "id")), _ii(_find(root, "setId"))
    if _is_addendum(root):
        # An addendum is a document of its own beside its parent, which stays current (CDA
        # R2 RelatedDocument, as MDM^T06): it is named by its id, never by a setId, which
        # producers reuse from the parent and which would make it the parent's next version.
        set_id = None
    return ParsedDocument(
        source=source,
        format=Format.CDA,
        content=data,
        text=body.text,
        title=_squash(_text(_find(root, "title"))) or _attr(code, "displayName"),
        patient_ids=tuple(_patient_ids(root)),
        demographics=_demographics(root),
        type_code=type_code,
        type_code_system=type_system,
        type_code_display=type_display,
        document_date=_document_date(root),
        author_rpps=rpps,
        author_name=author_name,
        producer_finess=finess,
        producer_name=producer_name,
        producer_document_id=set_id or own_id,
        version=_version(version),
        document_ids=(own_id,) if own_id and set_id and own_id != set_id else (),
        refers_to=_replaced_documents(root),
        results=tuple(streamed.results),
        visibility=_visibility(root),
        page_count=body.page_count,
        ocr_pages=body.ocr_pages,
        ocr_confidence=body.ocr_confidence,
        warnings=body.warnings,
    )


# --- small XML helpers -------------------------------------------------------------------


def _q(path: str) -> str:
    """``a/b`` -> ``{urn:hl7-org:v3}a/{urn:hl7-org:v3}b`` for ElementTree paths."""
    return "/".join(f"{{{NS}}}{step}" for step in path.split("/"))


def _find(elem: Element | None, path: str) -> Element | None:
    return None if elem is None else elem.find(_q(path))


def _findall(elem: Element | None, path: str) -> list[Element]:
    return [] if elem is None else elem.findall(_q(path))


def _attr(elem: Element | None, name: str) -> str | None:
    value = None if elem is None else elem.get(name)
    return value.strip() or None if value else None


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(elem: Element | None) -> str:
    return "" if elem is None else "".join(elem.itertext())


def _squash(text: str) -> str:
    return " ".join(text.split())


def _ii(elem: Element | None) -> str | None:
    """An HL7 instance identifier as ``root^extension`` (or ``root`` alone)."""
    root, extension = _attr(elem, "root"), _attr(elem, "extension")
    if root is None:
        return extension
    return f"{root}^{extension}" if extension else root


def _person_name(name: Element | None) -> str | None:
    if name is None:
        return None
    parts = [_squash(_text(p)) for p in (*_findall(name, "given"), *_findall(name, "family"))]
    return " ".join(p for p in parts if p) or _squash(_text(name)) or None


# --- header ------------------------------------------------------------------------------


def _patient_ids(root: Element) -> Iterator[PatientIdentifier]:
    for elem in _findall(root, "recordTarget/patientRole/id"):
        value, authority = _attr(elem, "extension"), _attr(elem, "root")
        if value is None:  # a bare root or a nullFlavor identifies no one
            continue
        kind = _ID_KINDS.get(authority or "")
        name = _attr(elem, "assigningAuthorityName")
        if kind is None and "IPP" in (name or "").upper():
            kind = "IPP"
        if is_test_ins(name, name):
            # A test system configured with the production OID still names its namespace.
            authority = name
        yield PatientIdentifier(value=value, authority=authority, kind=kind)


def _demographics(root: Element) -> PatientDemographics | None:
    patient = _find(root, "recordTarget/patientRole/patient")
    if patient is None:
        return None
    name = _find(patient, "name")
    families = _findall(name, "family")
    # The birth name (qualifier BR) is the one identity checks compare with.
    birth = [f for f in families if "BR" in (f.get("qualifier") or "").split()]
    family = (birth or families)[0] if families else None
    born = parse_ts(_attr(_find(patient, "birthTime"), "value"))
    return PatientDemographics(
        family_name=_squash(_text(family)) or None,
        given_name=_squash(_text(_find(name, "given"))) or None,
        birth_date=born.date() if born else None,
        sex=_attr(_find(patient, "administrativeGenderCode"), "code"),
    )


def _document_date(root: Element) -> dt.date | None:
    """The exam's date, unless the act comes after the document was written (a planned
    act: a prescribed treatment's period, an appointment); else the creation date."""
    stamp = parse_ts(_attr(_find(root, "effectiveTime"), "value"))
    created = stamp.date() if stamp else None
    for event in _findall(root, "documentationOf/serviceEvent"):
        when = _find(event, "effectiveTime")
        exam = parse_ts(
            _attr(_find(when, "low"), "value") or _attr(when, "value") or _attr(_find(when, "high"), "value")
        )
        if exam and (created is None or exam.date() <= created):
            return exam.date()
    return created


def _national_id(elem: Element | None, oid: str) -> str | None:
    """The id's extension when its root is ``oid``."""
    return _attr(elem, "extension") if _attr(elem, "root") == oid else None


def _author(root: Element) -> tuple[str | None, str | None]:
    """(RPPS, name) of the first author with an RPPS, else (None, first author's name).
    An author may have several ids (a practice's own before the national one): any is read."""
    authors = _findall(root, "author/assignedAuthor")
    for author in authors:
        nationals = (_national_id(elem, RPPS_OID) for elem in _findall(author, "id"))
        rpps = next((r for r in (rpps_of(n) for n in nationals if n) if r), None)
        if rpps:
            return rpps, _person_name(_find(author, "assignedPerson/name"))
    names = (_person_name(_find(a, "assignedPerson/name")) for a in authors)
    return None, next((n for n in names if n), None)


def _producer(root: Element) -> tuple[str | None, str | None]:
    """(FINESS, name) of the producing organisation (see the module docstring)."""
    orgs = [
        *_findall(root, "author/assignedAuthor/representedOrganization"),
        *_findall(root, "custodian/assignedCustodian/representedCustodianOrganization"),
    ]
    for org in orgs:
        for elem in _findall(org, "id"):
            national = _national_id(elem, STRUCTURE_OID)
            finess = finess_of(national) if national else None
            if finess:
                return finess, _squash(_text(_find(org, "name"))) or None
    names = (_squash(_text(_find(org, "name"))) for org in orgs)
    return None, next((n for n in names if n), None)


def _type_code(code: Element | None) -> tuple[str | None, str | None, str | None]:
    """(code, system, display name) of the document type: LOINC or national first,
    translations included."""
    candidates = [code, *_findall(code, "translation")]
    chosen = next(
        (e for e in candidates if _attr(e, "code") and _attr(e, "codeSystem") in TYPE_CODE_SYSTEMS), code
    )
    return _attr(chosen, "code"), _attr(chosen, "codeSystem"), _attr(chosen, "displayName")


# The largest version number a record keeps: Elasticsearch holds it as a 32-bit integer,
# and a document carrying a larger one (a timestamp used as a version) would fail there.
MAX_VERSION = 2**31 - 1


def _version(value: str | None) -> int | None:
    """``versionNumber`` as a count; a number no count reaches (a timestamp) is none, and the
    versions are then ordered by their dates."""
    number = int(value) if value and value.isascii() and value.isdigit() else None
    return number if number is not None and number <= MAX_VERSION else None


def _replaced_documents(root: Element) -> tuple[str, ...]:
    """The ids (and setIds) of the documents this one replaces (``relatedDocument`` RPLC)."""
    ids = (
        _ii(elem)
        for related in _findall(root, "relatedDocument")
        if _attr(related, "typeCode") == "RPLC"
        for elem in (*_findall(related, "parentDocument/id"), *_findall(related, "parentDocument/setId"))
    )
    return tuple(dict.fromkeys(i for i in ids if i))


def _is_addendum(root: Element) -> bool:
    """Whether the document is an addendum to another (``relatedDocument`` APND)."""
    return any(_attr(related, "typeCode") == "APND" for related in _findall(root, "relatedDocument"))


def _visibility(root: Element) -> tuple[Visibility, ...]:
    """The flags of every header ``confidentialityCode`` and of its translations at any
    depth: producers put a DMP flag beside the HL7 N/R/V in a translation or in a
    confidentialityCode of its own, and reading the first one alone would show a masked
    document. A section's own code qualifies that section, not the document."""
    codes = {
        _attr(e, "code")
        for conf in _findall(root, "confidentialityCode")
        for e in (conf, *conf.iter(f"{{{NS}}}translation"))
    }
    return tuple(v for v in Visibility if v.value in codes)


# --- body --------------------------------------------------------------------------------


def _body(streamed: _StreamedDocument, source: str, embedded: EmbeddedReader) -> EmbeddedText:
    """The document's text: the sections' narrative, or what the nonXMLBody holds."""
    body = _find(streamed.root, "component/nonXMLBody/text")
    if body is not None:
        return _non_xml_body(body, source, embedded)
    lines: list[str] = []
    for section in _findall(streamed.root, "component/structuredBody/component/section"):
        _section_lines(section, streamed, lines)
    return EmbeddedText(text="\n".join(lines))


def _section_lines(section: Element, streamed: _StreamedDocument, lines: list[str]) -> None:
    """Append the lines of ``section`` (title, narrative, subsections) to ``lines``."""
    title = _squash(_text(_find(section, "title")))
    if title:
        lines.append(title)
    text = _find(section, "text")
    if text is not None:
        lines.extend(streamed.narrative_lines(text))
    for child in _findall(section, "component/section"):
        _section_lines(child, streamed, lines)


# Narrative block elements: each starts a line of its own.
_BLOCKS = {"paragraph", "item", "list", "caption", "table", "thead", "tbody", "tfoot", "footnote"}


def _narrative_lines(elem: Element) -> list[str]:
    """The narrative block as lines: one per paragraph / list item, table rows as `a | b`."""
    lines: list[str] = []
    pending: list[str] = []
    _walk(elem, lines, pending)
    _flush(lines, pending)
    return lines


def _flush(lines: list[str], pending: list[str]) -> None:
    line = _squash("".join(pending))
    pending.clear()
    if line:
        lines.append(line)


def _walk(node: Element, lines: list[str], pending: list[str]) -> None:
    pending.append(node.text or "")
    for child in node:
        _narrative_child(child, lines, pending)


def _narrative_child(child: Element, lines: list[str], pending: list[str]) -> None:
    """One child of a narrative element, its tail included."""
    tag = _local(child.tag)
    if tag == "tr":
        _flush(lines, pending)
        cells = [" ".join(_narrative_lines(c)) for c in child if _local(c.tag) in {"td", "th"}]
        if any(cells):
            lines.append(" | ".join(cells))
    elif tag == "br":
        _flush(lines, pending)
    elif tag in _BLOCKS:
        _flush(lines, pending)
        _walk(child, lines, pending)
        _flush(lines, pending)
    elif tag == "content" and child.get("revised") == "delete":
        pass  # a revision mark: deleted text is not rendered, so not the document's words
    elif tag != "renderMultiMedia":  # inline markup: content, sub, sup, linkHtml…
        if tag == "sup":  # 10<sup>9</sup>/L must not read as 109/L
            pending.append("^")
        _walk(child, lines, pending)
    pending.append(child.tail or "")


def _non_xml_body(body: Element, source: str, embedded: EmbeddedReader) -> EmbeddedText:
    """A level-1 body: base64 (``representation="B64"``) or inline text of ``mediaType``."""
    media_type = _attr(body, "mediaType")
    declared = media_type or "text/plain"  # the CDA default for ED
    if _find(body, "reference") is not None and not _text(body).strip():
        raise ParserError("nonXMLBody refers to an external file instead of carrying it", source=source)
    if _attr(body, "compression"):
        raise ParserError(
            f"nonXMLBody compressed ({_attr(body, 'compression')}) is not supported", source=source
        )
    binary = not declared.lower().startswith("text/")
    if _attr(body, "representation") == "B64" or binary:
        # A binary type cannot be carried as text: base64 even when representation is missing.
        payload = decode_base64(_text(body), source=source, what="nonXMLBody")
        body.text = None  # the base64 text, up to 4/3 of the payload, is not needed any more
        if not payload:
            raise ParserError("nonXMLBody is empty", source=source)
        if media_type is None:  # left out over base64: the bytes say what they are
            declared = sniff_media_type(payload) or declared
    else:
        payload = _text(body).encode("utf-8")
        declared = f"{declared.split(';')[0]}; charset=utf-8"  # XML text is already decoded
    read = embedded.read(payload, declared, source=source)
    # The body is the whole document: one of a type Carnet cannot read is refused for that
    # reason, naming the type, rather than reported as an empty document.
    unread = tuple(
        w.model_copy(update={"blocking": True}) if w.code is Reason.UNSUPPORTED_FORMAT else w
        for w in read.warnings
    )
    return replace(read, warnings=unread)


# --- lab results -------------------------------------------------------------------------


def _entry_results(node: Element, inherited: dt.datetime | None) -> Iterator[LabResult]:
    """Observations under ``node``; an observation without a time takes its organizer's.

    Only what happened is a result: an act of another mood than ``EVN`` (a goal, a
    request, an intent) is left out with all it holds, since its observations (a
    prescription line's indication, a goal's target) are the intent's, and a negated
    observation (``negationInd``: the value was not found) is none either."""
    for child in node:
        tag = _local(child.tag)
        if tag == "entry":  # nested entries are visited by ``_results`` itself
            continue
        if (_attr(child, "moodCode") or "EVN") != "EVN":
            continue
        when = inherited
        if tag in {"organizer", "observation", "act"}:
            time = _find(child, "effectiveTime")
            when = parse_ts(_attr(time, "value") or _attr(_find(time, "low"), "value")) or when
        if tag == "observation" and _attr(child, "negationInd") != "true":
            result = _lab_result(child, when)
            if result is not None:
                yield result
        if tag not in {"referenceRange", "value", "code"}:
            yield from _entry_results(child, when)


# HL7 ActCode: an observation coded in it (ASSERTION, the intolerance types ALG, DALG…) states
# that a condition holds, as IHE PCC problem and allergy entries do: no measured result.
ACT_CODE_OID = "2.16.840.1.113883.5.4"


def _lab_result(obs: Element, observed_at: dt.datetime | None) -> LabResult | None:
    code, value = _find(obs, "code"), _find(obs, "value")
    if code is None or value is None or _attr(code, "codeSystem") == ACT_CODE_OID:
        return None
    loinc = _attr(code, "code") if _attr(code, "codeSystem") == LOINC_OID else None
    for tr in _findall(code, "translation"):
        if loinc is None and _attr(tr, "codeSystem") == LOINC_OID:
            loinc = _attr(tr, "code")
    analyte = _attr(code, "displayName") or _squash(_text(_find(code, "originalText"))) or _attr(code, "code")
    if analyte is None:
        return None
    text, numeric, value_type, unit = _value(value)
    return LabResult(
        analyte=analyte,
        loinc=loinc,
        value=text,
        numeric_value=numeric,
        value_type=value_type,
        unit=unit,
        reference_range=_reference_range(obs),
        abnormal_flag=_attr(_find(obs, "interpretationCode"), "code"),
        observed_at=observed_at,
    )


# An HL7 v3 REAL literal: decimal or scientific. Python's float() also reads "NaN", "INF"
# and "1_3": none is a number, and an exponent past a double's range is not one either.
_REAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _number(text: str | None) -> float | None:
    number = float(text) if text and _REAL.fullmatch(text) else None
    return number if number is not None and math.isfinite(number) else None


def _value(value: Element) -> tuple[str | None, float | None, str | None, str | None]:
    """(text, number, HL7 v2 value type, unit) of an observation value, by its xsi:type."""
    xsi = (value.get(XSI_TYPE) or "").rsplit(":", 1)[-1]
    if not xsi:  # left out (the schema requires it): the attributes show a quantity or a code
        quantity = _attr(value, "unit") and _number(_attr(value, "value")) is not None
        xsi = "PQ" if quantity else "CD" if _attr(value, "code") else ""
    empty = _attr(value, "value") is None and not len(value) and not (value.text or "").strip()
    if empty and _attr(value, "nullFlavor"):
        # No value, for the reason the nullFlavor gives (not done, sample unfit…): nothing
        # to type, rather than a number missing from a numeric result.
        return None, None, None, None
    if xsi in {"PQ", "INT", "REAL"}:
        number = _attr(value, "value")
        return number, _number(number), "NM", _attr(value, "unit") if xsi == "PQ" else None
    if xsi in {"CD", "CE", "CV", "CO", "CS"}:
        # Coded values are mapped to the HL7 v2 coded type, CE, as OBX-2 would carry them.
        label = _attr(value, "displayName") or _squash(_text(_find(value, "originalText")))
        return label or _attr(value, "code"), None, "CE", None
    if xsi == "IVL_PQ":  # below or above a limit ("<5"): the unit is either bound's
        unit = _attr(_find(value, "low"), "unit") or _attr(_find(value, "high"), "unit")
        return _interval(value), None, "ST", unit
    if xsi.startswith("RTO"):  # a ratio (a titre): numerator/denominator
        numerator = _attr(_find(value, "numerator"), "value")
        denominator = _attr(_find(value, "denominator"), "value")
        return (f"{numerator}/{denominator}" if numerator and denominator else None), None, "ST", None
    if xsi in {"TS", "BL"}:
        return _attr(value, "value"), None, xsi, None
    return _squash(_text(value)) or _attr(value, "value"), None, "ST", None


def _interval(ivl: Element) -> str | None:
    """An IVL_PQ as HL7 v2 writes ranges: ``low-high``, ``>low`` or ``<high``."""
    low = _attr(_find(ivl, "low"), "value")
    high = _attr(_find(ivl, "high"), "value")
    if low and high:
        return f"{low}-{high}"
    if low:
        return f">{low}"
    return f"<{high}" if high else None


def _reference_range(obs: Element) -> str | None:
    for rng in _findall(obs, "referenceRange/observationRange"):
        value = _find(rng, "value")
        found = _interval(value) if value is not None else None
        if found := found or _squash(_text(_find(rng, "text"))):
            return found
    return None
