"""JSON text and timestamps the way Intuit writes them.

- Money is `Decimal` end to end: `dumps`/`dumpb` write a Decimal as a JSON number with exactly
  its digits (`100.00`, never `100.0` or a float; orjson, with the Decimal's text spliced in as a
  fragment), `loads` reads numbers with a fraction back as Decimal, so a parse/serialize round
  trip keeps every digit.
- Timestamps carry the company's local offset, daylight saving included, as Intuit writes them:
  the emulator's companies live in US Pacific time (`America/Los_Angeles`, like the recorded
  samples), so `2026-11-21T09:14:16-08:00` in winter and `2026-07-14T09:14:16-07:00` in summer.
"""

from __future__ import annotations

import functools
import json
import re
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson

__all__ = ["COMPANY_TZ", "dumps", "dumpb", "loads", "fmt_ts", "fmt_time_ms", "fmt_utc_ms", "fmt_date",
           "parse_ts", "money"]

COMPANY_TZ = ZoneInfo("America/Los_Angeles")
_CENT = Decimal("0.01")
_ZERO = Decimal("0.00")
_OFFSETS: dict[int, tuple[int, str]] = {}  # UTC hour -> (offset seconds, "-08:00"); DST moves on the hour
_DAYS: dict[int, str] = {}  # local day number -> "2026-11-21"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumpb(obj: Any) -> bytes:
    """Compact UTF-8 JSON bytes (no spaces, text kept as is) with every Decimal digit for digit."""
    return orjson.dumps(obj, default=_default)


def dumps(obj: Any) -> str:
    """`dumpb` as text."""
    return dumpb(obj).decode()


def loads(text: str | bytes) -> Any:
    """Parse JSON with numbers that have a fraction or exponent as Decimal (never float)."""
    return json.loads(text, parse_float=Decimal)


def money(value: Any) -> Decimal:
    """`value` as a Decimal with exactly two places (half-up, like a ledger; never `-0.00`)."""
    if type(value) is not Decimal:
        value = Decimal(str(value))
    return value.quantize(_CENT, rounding="ROUND_HALF_UP") or _ZERO


def _local(ts: float) -> tuple[str, int, str]:
    """(company-local date text, seconds into that day, offset text) of an epoch time; cached
    per hour and per day, since generating a big company formats hundreds of thousands."""
    whole = int(ts)
    hour = whole // 3600
    offset = _OFFSETS.get(hour)
    if offset is None:
        delta = datetime.fromtimestamp(hour * 3600, COMPANY_TZ).utcoffset()
        secs = int(delta.total_seconds()) if delta is not None else 0
        offset = _OFFSETS[hour] = (secs, f"{'-' if secs < 0 else '+'}{abs(secs) // 3600:02d}:{abs(secs) % 3600 // 60:02d}")
    day, rem = divmod(whole + offset[0], 86400)
    text = _DAYS.get(day)
    if text is None:
        text = _DAYS[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
    return text, rem, offset[1]


@functools.cache
def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def fmt_ts(ts: float) -> str:
    """Epoch seconds as Intuit's MetaData style: `2026-11-21T09:14:16-08:00` (whole seconds,
    the offset in force at that instant)."""
    day, seconds, offset = _local(ts)
    return day + _clock(seconds) + offset


def fmt_time_ms(ts: float) -> str:
    """Epoch seconds as a response `time`: `2026-11-21T09:14:16.123-08:00`."""
    stamp = datetime.fromtimestamp(ts, COMPANY_TZ)
    return stamp.isoformat(timespec="milliseconds")


def fmt_utc_ms(ts: float) -> str:
    """Epoch seconds as webhook UTC time with milliseconds: `2026-11-21T17:14:16.000Z`."""
    stamp = datetime.fromtimestamp(ts, timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def fmt_date(ts: float) -> str:
    """The company-local calendar date of an epoch time: `2026-11-21`."""
    return _local(ts)[0]


def parse_ts(text: str) -> float:
    """Parse an ISO 8601 date or date-time (`Z`, `+hh:mm`, `-hhmm`, a `+` decoded as a space,
    or no offset = company time) into epoch seconds. Raises ValueError on anything else."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty date-time")
    # a '+' that was not URL-encoded arrives as a space: "2026-11-21T09:14:16 08:00"
    raw = re.sub(r" (\d{2}:?\d{2})$", r"+\1", raw)
    raw = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", raw) if "T" in raw else raw
    if len(raw) == 10:
        day = date.fromisoformat(raw)
        return datetime(day.year, day.month, day.day, tzinfo=COMPANY_TZ).timestamp()
    stamp = datetime.fromisoformat(raw)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=COMPANY_TZ)
    return stamp.timestamp()
