"""HL7 timestamps (v2 TS/DTM and the CDA ``TS`` data type share one syntax)."""

from __future__ import annotations

import datetime as dt
import re

_TS = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2})?(?:\.\d+)?)?([+-]\d{4})?")


def parse_ts(value: str | None) -> dt.datetime | None:
    """``YYYYMMDD[HHMM[SS[.S]]][+zzzz]`` as a datetime; None when absent, invalid or less
    precise than a day. Aware when the value carries its offset."""
    match = _TS.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    tz = None
    if offset:
        delta = dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        tz = dt.timezone(-delta if offset[0] == "-" else delta)
    try:
        return dt.datetime(
            int(year), int(month), int(day),
            int(hour or 0), int(minute or 0), int(second or 0), tzinfo=tz,
        )  # fmt: skip
    except ValueError:
        return None
