"""Reading HL7 v2 ER7 text: message framing, separators, field access, escapes, timestamps.

Why not hl7apy's element tree for every field: building it costs about 1.6 ms per segment
here (``parse_segment``), 20+ ms per ORU message, so even one PID per message caps a core
below 1,000 messages/s. hl7apy stays the authority on what it is cheap at: the MSH header
(``get_message_info`` reads and checks the separators, the structure and the version) and
the segment vocabulary; fields are then split here with the message's own separators.

Segment vocabulary: every segment id of every HL7 v2 version hl7apy ships (2.1 to 2.8.2),
not only v2.5's: national profiles built on v2.5 borrow later segments (the French
document-transmission profile adds ``PRT``, from v2.7) and senders on v2.6+ send theirs.
Z-segments are local by definition. Both are accepted and skipped unless a reader wants
them; only an id that no version defines (a corrupted or lower-case segment) breaks the
message.
``tests/parsers/test_hl7.py`` checks that this reading agrees with hl7apy's full parse.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hl7apy.consts import MLLP_ENCODING_CHARS
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import get_message_info

from parsers.timestamps import parse_ts
from pipeline.errors import ParserError

HL7_VERSION = "2.5"
BOM = b"\xef\xbb\xbf"
BATCH_SEGMENTS = frozenset({b"FHS", b"BHS", b"BTS", b"FTS"})


# Segment ids of every HL7 v2 version hl7apy ships (its libraries' ``SEGMENTS``), written
# out: loading the twelve libraries to read them cost ~0.1 s of CPU in every process that
# read HL7. ``tests/parsers/test_hl7.py`` checks the list against hl7apy's.
KNOWN_SEGMENTS = frozenset(
    """
    ABS ACC ADD ADJ AFF AIG AIL AIP AIS AL1 APR ARQ ARV AUT BHS BLC BLG BPO BPX BTS BTX
    BUI CDM CDO CER CM0 CM1 CM2 CNS CON CSP CSR CSS CTD CTI DB1 DG1 DMI DON DPS DRG DSC
    DSP ECD ECR EDU EQL EQP EQU ERQ ERR EVN FAC FHS FT1 FTS GOL GP1 GP2 GT1 IAM IAR IIM
    ILT IN1 IN2 IN3 INV IPC IPR ISD ITM IVC IVT LAN LCC LCH LDP LOC LRL MCP MFA MFE MFI
    MRG MSA MSH NCK NDS NK1 NPU NSC NST NTE OBR OBX ODS ODT OM1 OM2 OM3 OM4 OM5 OM6 OM7
    OMC ORC ORG ORO OVR PAC PCE PCR PD1 PDA PDC PEO PES PID PKG PM1 PMT PR1 PRA PRB PRC
    PRD PRT PSG PSH PSL PSS PTH PV1 PV2 PYE QAK QID QPD QRD QRF QRI RCP RDF RDT REL RF1
    RFI RGS RMI ROL RQ1 RQD RX1 RXA RXC RXD RXE RXG RXO RXR RXV SAC SCD SCH SCP SDD SFT
    SGH SGT SHP SID SLT SPM SPR STF STZ TCC TCD TQ1 TQ2 TXA UAC UB1 UB2 URD URS VAR VND
    VTQ
    """.split()
)


_MLLP_START = MLLP_ENCODING_CHARS.SB.encode()
_MLLP_END = MLLP_ENCODING_CHARS.EB.encode()
# Blanks around a segment, and the padding some transfers leave after the last one: NUL
# bytes, a DOS end-of-file mark (Ctrl-Z).
_PADDING = b" \t\r\n\x0b\x0c\x00\x1a"
# A line of the file: what lies between line ends (\r, \n, \r\n) and MLLP framing bytes.
_LINE = re.compile(b"[^\r\n" + re.escape(_MLLP_START + _MLLP_END) + b"]+")
# MSH-18 values (HL7 table 0211), and the spellings senders use for them ("ISO-8859-1",
# "UTF8", DICOM's "ISO_IR 100"), compared upper-case without blanks or punctuation, and the
# codec that reads them. ISO-8859-1 is read as Windows-1252 (``LATIN``): its bytes 0x80-0x9F
# are control characters no text holds, and senders labelled 8859/1 write "œ", "’", "€" there.
LATIN = "cp1252"
_CHARSETS = {
    **dict.fromkeys(["88591", "ISO88591", "ISOIR100", "LATIN1", "WINDOWS1252", "CP1252"], LATIN),
    **dict.fromkeys(["885915", "ISO885915", "LATIN9"], "iso-8859-15"),
    # ASCII is a subset of UTF-8: read leniently.
    **dict.fromkeys(["UNICODEUTF8", "UTF8", "UNICODE", "ASCII", "USASCII"], "utf-8"),
}
_SINGLE_BYTE = frozenset({LATIN, "iso-8859-15"})


@dataclass(frozen=True, slots=True)
class RawMessage:
    """The segments of one message as bytes (``headless`` when no MSH opened it;
    ``truncated`` when the file ends inside it, see ``iter_messages``)."""

    segments: tuple[bytes, ...]
    headless: bool = False
    truncated: bool = False

    @property
    def content(self) -> bytes:
        return b"\r".join(self.segments)


# A file in UTF-16 (Windows interface engines' "Unicode"), with or without its byte order
# mark: the NUL beside each letter of the first segment id gives the byte order.
_IDS_16 = b"|".join(b"\x00".join(name[i : i + 1] for i in range(3)) for name in (b"MSH", b"FHS", b"BHS"))
_UTF16 = {
    "utf-16-le": re.compile(rb"(?:\xff\xfe)?(?:[\x0b\r\n \t]\x00)*(?:" + _IDS_16 + rb")\x00"),
    "utf-16-be": re.compile(rb"(?:\xfe\xff)?(?:\x00[\x0b\r\n \t])*\x00(?:" + _IDS_16 + rb")"),
}


def utf16_codec(head: bytes) -> str | None:
    """The UTF-16 codec of an HL7 file starting with ``head``, or None when it is not UTF-16."""
    return next((codec for codec, start in _UTF16.items() if start.match(head)), None)


def as_utf8(data: bytes) -> bytes:
    """``data`` in UTF-8 when it is UTF-16 HL7 (each message is then read as UTF-8), else as is."""
    codec = utf16_codec(data[:64])
    if codec is None:
        return data
    try:
        return data.decode(codec).removeprefix("\ufeff").encode()
    except UnicodeDecodeError as exc:
        raise ParserError(f"the file starts as {codec} HL7 but is not valid {codec}: {exc}") from exc


def split_messages(data: bytes) -> list[RawMessage]:
    """Every message of ``data`` (see ``iter_messages``) in one list."""
    return list(iter_messages(data))


def iter_messages(data: bytes) -> Iterator[RawMessage]:
    """Cut a file into messages, one at a time: MLLP frames, any line ending, batch
    envelopes dropped. Lines are found in place, so neither a normalised copy of the file
    nor the list of all its segments is ever held.

    Every MSH opens a message. Segments found before the first MSH (or after a batch
    trailer) that are not envelope segments form a ``headless`` message, reported broken.
    Lines that continue an OBX's Base64 data cut by raw line breaks are joined back to it.
    The last message is ``truncated`` when the file ends inside a batch (FHS/BHS without
    its BTS/FTS) or an MLLP frame (no end byte): a file read while still being written, or
    cut in transit, whose last segment may stop mid-value ("13.5" read as "13").
    """
    data = as_utf8(data)
    unclosed_frame = data.rfind(_MLLP_START) > data.rfind(_MLLP_END)
    open_batch = False
    # hl7apy only splits on \r: every other line end (and MLLP framing) ends a segment too.
    current: list[bytes] | None = None
    # The last segment is an OBX whose Base64 data a raw line break cut (MIME-style lines
    # of 76 characters, unescaped): the lines that follow are the rest of that field.
    open_base64 = False
    for line in _LINE.finditer(data):
        # A BOM opens the file, or each message of files concatenated (``cat *.hl7``).
        segment = line.group().strip(_PADDING).removeprefix(BOM).lstrip(_PADDING)
        if not segment:
            continue
        if open_base64 and current and not _segment_start(segment, current[0][3:4]):
            rest = _BASE64_RUN.match(segment)
            if rest:
                current[-1] += segment
                open_base64 = rest.end() == len(segment)
                continue
        open_base64 = False
        name = segment[:3]
        if name in BATCH_SEGMENTS:
            if current:
                yield _raw_message(current)
            current = None
            open_batch = name in {b"FHS", b"BHS"}
            continue
        if name == b"MSH" or current is None:
            if current:
                yield _raw_message(current)
            current = []
        current.append(segment)
        open_base64 = name == b"OBX" and _BASE64_OPEN.search(segment) is not None
    if current:
        yield _raw_message(current, truncated=open_batch or unclosed_frame)


# An ED's data as its last field, still open at the end of a line: "...^Base64^JVBERi0x".
_BASE64_OPEN = re.compile(rb"\^base64\^[A-Za-z0-9+/=]*\Z", re.IGNORECASE)
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/=]+")
_SEGMENT_ID = re.compile(rb"[A-Z][A-Z0-9]{2}")


def _segment_start(line: bytes, field_separator: bytes) -> bool:
    """Whether ``line`` opens a segment: an id then the field separator, or alone a known
    id (the last line of wrapped Base64 may be three capitals: "QUJ")."""
    if _SEGMENT_ID.match(line) is None:
        return False
    if line[3:4] == field_separator:
        return True
    return len(line) == 3 and (line.decode("ascii") in KNOWN_SEGMENTS or line[:1] == b"Z")


def count_messages(data: bytes) -> int:
    """About how many messages ``data`` holds, without cutting it: the MSH segments that
    start a line (a wrapped Base64 line starting with "MSH" counts too)."""
    codec = utf16_codec(data[:64])
    if codec:  # an estimate: a character that does not decode counts for nothing
        data = data.decode(codec, errors="replace").encode()
    ends = (b"\r", b"\n", _MLLP_START)
    return data.startswith(b"MSH") + sum(data.count(end + b"MSH") for end in ends) + data.count(BOM + b"MSH")


def _raw_message(segments: list[bytes], *, truncated: bool = False) -> RawMessage:
    return RawMessage(tuple(segments), headless=segments[0][:3] != b"MSH", truncated=truncated)


def declared_charset(msh: bytes) -> str:
    """MSH-18 as the message writes it (its first repetition), or ``""``."""
    if len(msh) < 4:
        return ""
    fields = msh.split(msh[3:4])
    if len(fields) < 18:
        return ""
    return fields[17].split(b"~")[0].strip().decode("ascii", "replace")


def charset_of(msh: bytes) -> str | None:
    """The codec MSH-18 asks for, or None when it says nothing (or something unknown)."""
    return _CHARSETS.get(re.sub(r"[^0-9A-Z]", "", declared_charset(msh).upper()))


def decode_message(content: bytes, msh: bytes) -> tuple[str, str, str | None]:
    """(text, codec, why it is not the codec MSH-18 names, if so) of one message.

    The bytes overrule the label when they can only be something else: UTF-8 labelled
    8859/1 (an interface engine re-encoded it and kept the header), and text that is not
    UTF-8 labelled UTF-8 or not labelled at all (Windows/Latin-1, as most French senders).
    """
    declared = declared_charset(msh)
    codec = charset_of(msh)
    said = f"MSH-18 declares {declared!r}" if declared else "MSH-18 declares no character set"
    if codec in _SINGLE_BYTE:
        if not content.isascii():
            try:
                return content.decode("utf-8"), "utf-8", f"{said} but the message is UTF-8: read as UTF-8"
            except UnicodeDecodeError:
                pass
        return _decode_latin(content, codec), codec, None
    try:
        return content.decode("utf-8"), "utf-8", None
    except UnicodeDecodeError:
        why = f"{said} but the message is not valid UTF-8: read as ISO-8859-1 (Windows-1252)"
        return _decode_latin(content, LATIN), LATIN, why


def _decode_latin(content: bytes, codec: str | None) -> str:
    try:
        return content.decode(codec or LATIN)
    except UnicodeDecodeError:  # the five bytes Windows-1252 leaves undefined
        return content.decode("iso-8859-1")


@dataclass(frozen=True, slots=True)
class Separators:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str

    @classmethod
    def from_msh(cls, msh: str, *, source: str) -> Separators:
        """The separators MSH-1/MSH-2 declare, checked by hl7apy."""
        try:
            chars, _structure, _version = get_message_info(_without_truncation(msh))
        except (HL7apyException, IndexError, ValueError) as exc:
            raise ParserError(f"unreadable MSH: {exc}", source=source) from exc
        return cls(
            chars["FIELD"], chars["COMPONENT"], chars["REPETITION"], chars["ESCAPE"],
            chars["SUBCOMPONENT"],
        )  # fmt: skip


def _without_truncation(msh: str) -> str:
    """MSH without a fifth encoding character (v2.7's truncation character, ``#``):
    senders built on v2.7+ libraries write ``^~\\&#`` in messages of the v2.5 profile too,
    which hl7apy refuses for a v2.5 message. It truncates nothing Carnet reads."""
    # "MSH" + field separator + encoding characters + field separator.
    if len(msh) > 9 and msh[9] == msh[3] and msh[8] != msh[3]:
        return msh[:8] + msh[9:]
    return msh


def check_segment_name(segment: str, seps: Separators, *, source: str) -> str:
    """The segment id, if some HL7 v2 version (or the Z- convention) defines it."""
    name = segment[:3]
    if len(segment) > 3 and segment[3] != seps.field:
        raise ParserError(f"malformed segment {segment[:12]!r}", source=source)
    if name not in KNOWN_SEGMENTS and not (name[:1] == "Z" and name.isalnum() and name.isupper()):
        raise ParserError(f"unknown segment {name!r} (in no HL7 v2 version up to 2.8.2)", source=source)
    return name


class Segment:
    """Field access on one segment; ``field(n)`` is SEG-n as in the HL7 tables."""

    __slots__ = ("name", "seps", "fields", "_unescape")

    def __init__(self, text: str, seps: Separators, charset: str) -> None:
        self.seps = seps
        fields = text.split(seps.field)
        if fields[0] == "MSH":  # MSH-1 is the field separator itself
            fields.insert(1, seps.field)
        self.name = fields[0]
        self.fields = fields
        self._unescape = unescaper(seps, charset)

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def repetitions(self, n: int) -> list[str]:
        raw = self.raw(n)
        return raw.split(self.seps.repetition) if raw else []

    def components(self, n: int, rep: int = 0) -> list[str]:
        """Components of repetition ``rep`` of field ``n``, still escaped."""
        reps = self.repetitions(n)
        return reps[rep].split(self.seps.component) if rep < len(reps) else []

    def value(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """Component ``comp``, subcomponent ``sub`` of field ``n`` (1-based), unescaped."""
        # The parser's most called function (~75 times a message): written out, each level
        # split only when it holds its separator or a later part is asked for.
        fields = self.fields
        if n >= len(fields) or not (raw := fields[n]):
            return ""
        seps = self.seps
        if rep or seps.repetition in raw:
            reps = raw.split(seps.repetition)
            if rep >= len(reps):
                return ""
            raw = reps[rep]
        if comp > 1 or seps.component in raw:
            comps = raw.split(seps.component)
            if comp > len(comps):
                return ""
            raw = comps[comp - 1]
        if sub > 1 or seps.subcomponent in raw:
            subs = raw.split(seps.subcomponent)
            if sub > len(subs):
                return ""
            raw = subs[sub - 1]
        return self._unescape(raw).strip()

    def part(self, repetition: str, comp: int = 1, sub: int = 1) -> str:
        """Component ``comp``, subcomponent ``sub`` of one field repetition, unescaped."""
        comps = repetition.split(self.seps.component)
        if comp > len(comps):
            return ""
        subs = comps[comp - 1].split(self.seps.subcomponent)
        return self._unescape(subs[sub - 1]).strip() if sub <= len(subs) else ""

    def text(self, raw: str) -> str:
        """A whole text value (TX/FT/ST) unescaped, formatting escapes turned into lines, and
        line ends escaped in hexadecimal (``\\X0D0A\\``, as Windows systems write them) too."""
        value = self._unescape(raw)
        return value.replace("\r\n", "\n").replace("\r", "\n") if "\r" in value else value


def unescaper(seps: Separators, charset: str) -> Callable[[str], str]:
    """The function that resolves HL7 escape sequences for these separators."""
    return _unescaper(seps.field, seps.component, seps.repetition, seps.escape,
                      seps.subcomponent, charset)  # fmt: skip


@functools.lru_cache(maxsize=32)
def _unescaper(
    field: str, component: str, repetition: str, escape: str, subcomponent: str, charset: str
) -> Callable[[str], str]:
    simple = {"F": field, "S": component, "T": subcomponent, "R": repetition, "E": escape,
              ".br": "\n", ".sp": "\n", "H": "", "N": ""}  # fmt: skip
    esc = re.escape(escape)
    pattern = re.compile(f"{esc}([^{esc}\r]*){esc}")

    def resolve(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in simple:
            return simple[code]
        if code[:1] == "X" and len(code) % 2 == 1:
            try:
                raw = bytes.fromhex(code[1:])
            except ValueError:
                return match.group(0)
            try:
                return raw.decode(charset)
            except UnicodeDecodeError:  # a Latin-1 byte escaped in a UTF-8 message
                return _decode_latin(raw, LATIN)
        # "\.sp 2\" skips lines and ".ce" ends the line (centring the next): one line break
        # in the text; ".sk 4" skips spaces to the right: one space, so words stay apart.
        if code[:3] in {".sp", ".ce"}:
            return "\n"
        if code[:3] == ".sk":
            return " "
        if code[:1] in {"C", "M"} or code[:3] in {".in", ".ti", ".fi", ".nf"}:
            return ""  # character-set switches and layout hints (at a line's start): nothing to show
        return match.group(0)

    def unescape(value: str) -> str:
        return pattern.sub(resolve, value) if escape in value else value

    return unescape


def parse_date(value: str) -> dt.date | None:
    ts = parse_ts(value)
    return ts.date() if ts else None
