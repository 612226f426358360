"""`qbsync usage [--json] [--month YYYY-MM]`: Intuit's metered calls (SPEC section 12).

Month to date per realm and in total, the month-end projection, the split by kind, against
QBO_MONTHLY_CALL_LIMIT; says when the governor is on (less than QBO_CALL_RESERVE_PERCENT of the
limit left: scheduled syncs once a day, webhooks applied through CDC). Read from
`quickbooks.api_usage` (db/usage.py), which every process that calls Intuit fills.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from db.usage import KINDS, UsageReport, usage_report
from services.core.config import Settings
from services.core.errors import DatabaseUnavailable, describe

__all__ = ["cmd_usage", "render_usage"]


def _percent(n: int, of: int) -> str:
    return f"{100 * n / of:.1f} %" if of else "-"


def render_usage(report: UsageReport, out: TextIO) -> None:
    print(f"Intuit metered calls {report.month}: {report.calls:,} of {report.limit:,} ({_percent(report.calls, report.limit)})"
          f"{'' if report.complete else f', projected {report.projected:,} ({_percent(report.projected, report.limit)})'}",
          file=out)
    if report.governed:
        print(f"  ! under {report.reserve_percent:g} % of the limit left: scheduled syncs run once a day and "
              "webhooks are applied through CDC", file=out)
    kinds = [k for k in KINDS if report.by_kind.get(k)] + sorted(set(report.by_kind) - set(KINDS))
    if kinds:
        print("  by kind: " + "  ".join(f"{k} {report.by_kind[k]:,}" for k in kinds), file=out)
    if not report.realms:
        print("  no calls recorded this month", file=out)
    for realm in report.realms:
        name = " ".join((realm.company_name or "(unnamed)").split())[:30]
        print(f"  {name:<30} {realm.realm_id:<20} {realm.calls:>10,} calls  projected {realm.projected:>10,}", file=out)


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from db.connection import connect, resolve_database_url

    url = resolve_database_url(settings, announce=False)
    try:
        with connect(url) as conn:
            report = usage_report(conn, limit=settings.monthly_call_limit,
                                  reserve_percent=settings.call_reserve_percent, month=args.month)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL query failed: {describe(exc, name=False)}") from None
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(), ensure_ascii=False) + "\n")
    else:
        render_usage(report, sys.stdout)
    return 0
