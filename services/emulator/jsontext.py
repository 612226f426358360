"""JSON text and timestamps the way Intuit writes them.

- Money is `Decimal` end to end: `dumps` writes a Decimal as a JSON number with exactly its
  digits (`100.00`, never `100.0` or a float), `loads` reads numbers with a fraction back as
  Decimal, so a parse/serialize round trip keeps every digit.
- Timestamps carry the company's local offset, daylight saving included, as Intuit writes them:
  the emulator's companies live in US Pacific time (`America/Los_Angeles`, like the recorded
  samples), so `2026-11-21T09:14:16-08:00` in winter and `2026-07-14T09:14:16-07:00` in summer.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["COMPANY_TZ", "dumps", "loads", "fmt_ts", "fmt_time_ms", "fmt_utc_ms", "fmt_date",
           "parse_ts", "money"]

COMPANY_TZ = ZoneInfo("America/Los_Angeles")
_DEC_MARK = "\x00"
_DEC_RE = re.compile(r'"\\u0000(-?[0-9]+(?:\.[0-9]+)?(?:E[-+]?[0-9]+)?)"')
_CENT = Decimal("0.01")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _DEC_MARK + str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(obj: Any) -> str:
    """Compact JSON (no spaces, UTF-8 text kept as is) with every Decimal written digit for digit."""
    text = json.dumps(obj, default=_default, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text:
        text = _DEC_RE.sub(r"\1", text)
    return text


def loads(text: str | bytes) -> Any:
    """Parse JSON with numbers that have a fraction or exponent as Decimal (never float)."""
    return json.loads(text, parse_float=Decimal)


def money(value: Any) -> Decimal:
    """`value` as a Decimal with exactly two places (half-up, like a ledger)."""
    return Decimal(str(value)).quantize(_CENT, rounding="ROUND_HALF_UP")


def fmt_ts(ts: float) -> str:
    """Epoch seconds as Intuit's MetaData style: `2026-11-21T09:14:16-08:00` (whole seconds,
    the offset in force at that instant)."""
    return datetime.fromtimestamp(int(ts), COMPANY_TZ).isoformat()


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
    return datetime.fromtimestamp(ts, COMPANY_TZ).date().isoformat()


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
