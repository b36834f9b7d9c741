"""HL7 v2 acknowledgements (ACK) for the HL7 messages of a batch.

One ACK per message, written as ``_ack/<message control id>.hl7`` in the batch through
``Feed.write``: MSH, MSA (``AA`` accepted, indexed or a duplicate of what Carnet holds;
``AE`` rejected for its content, e.g. no valid INS; ``AR`` refused for a reason the
producer cannot fix in the message, e.g. the index refused it: send it again later) with
the original message control id, and an ERR segment per reason for ``AE``/``AR``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence

from pipeline.feeds import ACK_DIR, BatchRef, Feed
from pipeline.model import Format, Outcome, Reason, Status

# Reasons for which the message itself is not at fault: the producer should resend it.
_REFUSED = frozenset({Reason.INDEX_ERROR})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def ack_code(outcome: Outcome) -> str:
    """``AA``, ``AE`` or ``AR`` for one document's outcome."""
    if outcome.status is not Status.REJECTED:
        return "AA"
    if any(r.code in _REFUSED for r in outcome.reasons):
        return "AR"
    return "AE"


def _escape(text: str) -> str:
    """HL7 escape sequences for the delimiters of ``|^~\\&``."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    return out.replace("~", "\\R\\").replace("&", "\\T\\").replace("\r", " ").replace("\n", " ")


def build_ack(outcome: Outcome, *, receiving_facility: str, at: dt.datetime) -> str:
    """The ACK message for one HL7 message's outcome (segments separated by CR)."""
    control_id = outcome.message_control_id or ""
    code = ack_code(outcome)
    ack_id = "ACK" + hashlib.sha256(f"{outcome.source}\x1f{control_id}".encode()).hexdigest()[:16]
    text = ("accepted" if code == "AA" else
            "; ".join(p.render() for p in outcome.reasons) or outcome.status.value)
    segments = [
        f"MSH|^~\\&|CARNET|CARNET|{_escape(receiving_facility)}||{at:%Y%m%d%H%M%S}||ACK^R01^ACK"
        f"|{ack_id}|P|2.5",
        f"MSA|{code}|{_escape(control_id)}|{_escape(text)[:80]}",
    ]
    if code != "AA":
        # ERR-3 (HL7 table 0357) is too coarse for producers: it says 207 "application
        # error"; Carnet's own reason code and message go in ERR-5 (application error code).
        for p in outcome.reasons:
            segments.append(f"ERR|||207^Application internal error^HL70357|E"
                            f"|{p.code.value}^{_escape(p.message)[:200]}")
    return "\r".join(segments) + "\r"


def ack_file_name(outcome: Outcome) -> str:
    control_id = _UNSAFE.sub("_", outcome.message_control_id or "unknown")
    part = outcome.source.rsplit("#", 1)[1] if "#" in outcome.source else "1"
    # The control id alone may repeat across files of a careless producer: keep the part.
    return f"{ACK_DIR}/{control_id}.hl7" if part == "1" else f"{ACK_DIR}/{control_id}-{part}.hl7"


def write_hl7_acks(feed: Feed, batch: BatchRef, outcomes: Sequence[Outcome]) -> list[str]:
    """Write one ACK per HL7 message of the batch; return the names written."""
    at = dt.datetime.now(dt.UTC)
    written: list[str] = []
    for o in outcomes:
        if o.format is not Format.HL7V2 or not o.message_control_id:
            continue
        name = ack_file_name(o)
        feed.write(batch, name, build_ack(o, receiving_facility=batch.producer, at=at).encode())
        written.append(name)
    return written
