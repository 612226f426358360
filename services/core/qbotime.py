"""QBO timestamps: one parser for every variant Intuit sends.

`2015-10-01T16:54:59-07:00` (Data API), `2015-10-05T14:42:19-0700` and
`2016-10-05T03:09:04.000Z` (classic webhooks), `2025-09-10T21:31:25.179851517Z`
(CloudEvents, nanoseconds), and epoch milliseconds (the `time` of some 401 envelopes).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

__all__ = ["parse_qbo_time", "parse_qbo_time_or_none"]

_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)$"
)


def parse_qbo_time(value: str | int | float) -> datetime:
    """An aware datetime from a QBO timestamp; ValueError for anything without an offset.

    Accepts `2015-10-01T16:54:59-07:00`, `2015-10-05T14:42:19-0700`, `2016-10-05T03:09:04.000Z`,
    fractions of any length (nanoseconds are cut to microseconds), and epoch milliseconds
    (the number some 401 envelopes carry as `time`).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a QBO time: {value!r}")
    if isinstance(value, (int, float, Decimal)):
        return datetime.fromtimestamp(float(value) / 1000.0, tz=timezone.utc)
    match = _TIME.match(str(value).strip())
    if not match:
        raise ValueError(f"not a QBO time with an offset: {str(value)[:60]!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if offset in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad UTC offset in QBO time: {value!r}")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
                    micro, tzinfo=tz)


def parse_qbo_time_or_none(value: Any) -> datetime | None:
    """Like parse_qbo_time, but None for a missing or unparseable value; datetimes pass through."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if value is None or value == "":
        return None
    try:
        return parse_qbo_time(value)
    except ValueError:
        return None
