"""Intuit's metered calls (SPEC section 12): the one writer and reader of `quickbooks.api_usage`.

One row per (realm, UTC day, kind, service) with the number of Data API calls made; processes
add their counts in batches (`add_usage`: one statement for everything counted since the last
flush). `usage_report` is what `qbsync usage`, `status`, the governor and the metrics read:
month to date per realm and kind, and a month-end projection from the recent daily rate.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import psycopg

__all__ = ["KINDS", "UsageRow", "RealmUsage", "UsageReport", "add_usage", "usage_report", "month_bounds",
           "RECENT_DAYS"]

KINDS = ("query", "read", "cdc", "report", "companyinfo")
RECENT_DAYS = 7  # the projection's daily rate: the mean of the last RECENT_DAYS days (today included)


@dataclass(frozen=True)
class UsageRow:
    realm_id: str
    day: date
    kind: str
    service: str
    calls: int


def add_usage(conn: psycopg.Connection, rows: Iterable[UsageRow]) -> None:
    """Add counted calls (in the caller's transaction; one statement for the whole batch)."""
    batch = [r for r in rows if r.calls > 0]
    if not batch:
        return
    conn.execute(
        "INSERT INTO quickbooks.api_usage AS u (realm_id, day, kind, service, calls)"
        " SELECT * FROM unnest(%s::text[], %s::date[], %s::text[], %s::text[], %s::bigint[])"
        " ON CONFLICT (realm_id, day, kind, service) DO UPDATE SET calls = u.calls + EXCLUDED.calls",
        ([r.realm_id for r in batch], [r.day for r in batch], [r.kind for r in batch],
         [r.service for r in batch], [r.calls for r in batch]))


def month_bounds(month: date) -> tuple[date, date]:
    """The first day of `month` and the first day of the next month."""
    first = month.replace(day=1)
    days = calendar.monthrange(first.year, first.month)[1]
    return first, first + timedelta(days=days)


@dataclass
class RealmUsage:
    realm_id: str
    company_name: str | None = None
    calls: int = 0
    projected: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class UsageReport:
    """Month to date and projected, per realm and in total, against the monthly limit."""

    month: str                      # YYYY-MM
    calls: int
    projected: int
    limit: int
    reserve_percent: float
    by_kind: dict[str, int]
    realms: list[RealmUsage]
    complete: bool                  # the month is over: the projection is the count

    @property
    def left(self) -> int:
        return max(0, self.limit - self.calls)

    @property
    def governed(self) -> bool:
        """Less than the reserve is left: syncs slow down to protect the app (SPEC section 12)."""
        return self.left < self.limit * self.reserve_percent / 100

    def as_json(self) -> dict:
        return {"month": self.month, "calls": self.calls, "limit": self.limit, "projected": self.projected,
                "governed": self.governed, "by_kind": self.by_kind,
                "realms": [{"realm_id": r.realm_id, "company_name": r.company_name, "calls": r.calls,
                            "projected": r.projected, "by_kind": r.by_kind} for r in self.realms]}


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), timezone.utc)


def usage_report(conn: psycopg.Connection, *, limit: int, reserve_percent: float, now: datetime | None = None,
                 month: date | None = None) -> UsageReport:
    """Usage of `month` (default: this UTC month). The projection adds, for the time left in the
    month, the mean rate of the last RECENT_DAYS days up to now (fewer early in the month)."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    today = now.date()
    first, after = month_bounds(month or today)
    rows = conn.execute(
        "SELECT u.realm_id, c.name, u.day, u.kind, sum(u.calls)::bigint FROM quickbooks.api_usage u"
        " LEFT JOIN quickbooks.companies c ON c.id = u.realm_id"
        " WHERE u.day >= %s AND u.day < %s GROUP BY u.realm_id, c.name, u.day, u.kind", (first, after)).fetchall()
    complete = now >= _midnight(after)
    last_day = min(today, after - timedelta(days=1))
    recent_start = max(first, last_day - timedelta(days=RECENT_DAYS - 1))
    window_days = (min(now, _midnight(after)) - _midnight(recent_start)).total_seconds() / 86400
    remaining_days = max(0.0, (_midnight(after) - now).total_seconds() / 86400)
    realms: dict[str, RealmUsage] = {}
    by_kind: dict[str, int] = {}
    recent: dict[str, int] = {}
    for realm_id, name, day, kind, calls in rows:
        usage = realms.setdefault(realm_id, RealmUsage(realm_id, name))
        usage.calls += calls
        usage.by_kind[kind] = usage.by_kind.get(kind, 0) + calls
        by_kind[kind] = by_kind.get(kind, 0) + calls
        if day >= recent_start:
            recent[realm_id] = recent.get(realm_id, 0) + calls
    for usage in realms.values():
        rate = recent.get(usage.realm_id, 0) / window_days if window_days > 0 else 0.0
        usage.projected = usage.calls + round(rate * remaining_days)
    ordered = sorted(realms.values(), key=lambda r: (-r.calls, r.realm_id))
    return UsageReport(month=first.strftime("%Y-%m"), calls=sum(r.calls for r in ordered),
                       projected=sum(r.projected for r in ordered), limit=limit, reserve_percent=reserve_percent,
                       by_kind=by_kind, realms=ordered, complete=complete)
