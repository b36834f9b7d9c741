"""HL7 timestamps (v2 TS/DTM and the CDA ``TS`` data type share one syntax)."""

from __future__ import annotations

import datetime as dt
import functools
import re

_TS = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2})?(?:\.\d+)?)?([+-]\d{4}|Z)?")


# A lab report repeats its few timestamps on every result: most calls are lookups.
@functools.lru_cache(maxsize=4096)
def parse_ts(value: str | None) -> dt.datetime | None:
    """``YYYYMMDD[HHMM[SS[.S]]][+zzzz|Z]`` as a datetime; None when absent, invalid or less
    precise than a day. Aware when the value carries its offset (``Z``: UTC, as some CDA
    producers write ISO 8601's mark for it)."""
    match = _TS.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        tz = None
        if offset == "Z":
            tz = dt.UTC
        elif offset:
            if int(offset[3:5]) >= 60:
                return None
            delta = dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
            # An offset of 24 hours or more ("+9999") is a ValueError here, as a bad date is.
            tz = dt.timezone(-delta if offset[0] == "-" else delta)
        return dt.datetime(
            int(year), int(month), int(day),
            int(hour or 0), int(minute or 0), int(second or 0), tzinfo=tz,
        )  # fmt: skip
    except ValueError:
        return None
