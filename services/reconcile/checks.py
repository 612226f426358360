"""`qbsync reconcile [--realm-id R] [--repair] [--json]`: the synced copy against QuickBooks' own
figures (SPEC section 11), and the daily reconciliation the sync worker runs.

For a realm, after a sync brings it up to the moment (its watermark: the CDC cursor):
- counts: QBO's COUNT of every synced entity (name lists with `Active IN (true,false)`) against
  the live local rows — one metered call per entity;
- books: QBO's TrialBalance as of the watermark's date against the trial balance qbsync derives
  from the synced ledger (db/books.py, docs/POSTING_RULES.md), per account (debits minus credits);
- aging: AgedReceivables' and AgedPayables' grand totals against the open balances of the synced
  invoices and bills — three report calls in all.
Every result is a `quickbooks.reconciliations` row (ok | drift | error); each report used is kept
with its rows. `--repair` lists the entities whose counts differ in full (deletions reconciled)
and checks again. Exit 0 when everything matches, 1 on a drift, 2 on an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from db.books import open_balances, trial_balance
from db.connection import Database, scalar
from db.reconcile import CheckResult, new_run_id, record_checks, store_report
from services.core.config import Settings
from services.core.errors import DatabaseUnavailable, QBSyncError, describe
from services.model.entities import ENTITIES, ENTITY_NAMES
from services.reconcile.reports import ReportRow, combine, fetch, flatten
from services.sync.engine import sync_realm
from services.tokens.vault import client_for

__all__ = ["Reconciliation", "reconcile_realm", "reconcile_if_due", "cmd_reconcile", "EXIT_CODES"]

log = logging.getLogger("qbsync.reconcile")

EXIT_CODES = {"ok": 0, "drift": 1, "error": 2}
COUNTED = tuple(name for name in ENTITY_NAMES if not ENTITIES[name].company)
CENT = Decimal("0.01")


@dataclass
class Reconciliation:
    realm_id: str
    as_of: date | None = None
    results: list[CheckResult] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    api_calls: int = 0

    @property
    def status(self) -> str:
        states = {r.status for r in self.results}
        return "error" if "error" in states else "drift" if "drift" in states else "ok"

    def drifts(self) -> list[CheckResult]:
        return [r for r in self.results if r.status != "ok"]

    def as_json(self) -> dict[str, Any]:
        def num(value: Decimal | None) -> str | None:
            return None if value is None else str(value)
        return {"realm_id": self.realm_id, "as_of": self.as_of.isoformat() if self.as_of else None,
                "status": self.status, "repaired": self.repaired, "api_calls": self.api_calls,
                "checks": len(self.results),
                "drifts": [{"check": r.check, "subject": r.subject, "status": r.status, "expected": num(r.expected),
                            "actual": num(r.actual), "difference": num(r.difference), "detail": r.detail}
                           for r in self.drifts()]}


def _fiscal_year_start(conn: Any, realm_id: str, as_of: date) -> date:
    """The first day of the fiscal year holding `as_of` (CompanyInfo.FiscalYearStartMonth, else January)."""
    month_name = scalar(conn, "SELECT raw ->> 'FiscalYearStartMonth' FROM quickbooks.companies WHERE id = %s",
                        (realm_id,))
    months = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
              "october", "november", "december"]
    month = months.index(month_name.lower()) + 1 if isinstance(month_name, str) and month_name.lower() in months else 1
    year = as_of.year if as_of.month >= month else as_of.year - 1
    return date(year, month, 1)


def _watermark(db: Database, realm_id: str) -> date:
    """The date the synced copy is complete to: the oldest CDC cursor of the realm (UTC date)."""
    with db.transaction() as conn:
        cursor = scalar(conn, "SELECT min(cursor) FROM quickbooks.sync_state WHERE realm_id = %s AND entity = ANY(%s)",
                        (realm_id, [n for n in COUNTED if ENTITIES[n].cdc_supported]))
    return (cursor or datetime.now(timezone.utc)).astimezone(timezone.utc).date()


def _counts(db: Database, factory: Callable[[], Any], realm_id: str, entities: tuple[str, ...],
            workers: int) -> tuple[list[CheckResult], int]:
    """QBO's COUNT of each entity against its live local rows, `workers` clients side by side (the
    realm's request budget still holds); (results in `entities` order, API calls made)."""
    def count_group(group: tuple[str, ...]) -> tuple[dict[str, CheckResult], int]:
        results = {}
        with factory() as client:
            for name in group:
                spec = ENTITIES[name]
                qbo = client.count(name, spec.query_where())
                with db.transaction() as conn:
                    local = scalar(conn, spec.live_count_sql, {"realm": realm_id})
                status = "ok" if qbo == local else "drift"
                detail = None if status == "ok" else f"QuickBooks has {qbo} {name} rows, the copy {local}"
                results[name] = CheckResult("count", name, status, Decimal(qbo), Decimal(local), detail)
            return results, getattr(client, "api_calls", 0)

    groups = [entities[i::workers] for i in range(max(1, min(workers, len(entities))))]
    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="reconcile-count") as pool:
        done = list(pool.map(count_group, groups))
    by_name = {name: result for results, _ in done for name, result in results.items()}
    return [by_name[name] for name in entities], sum(calls for _, calls in done)


def _kept(db: Database, realm_id: str, name: str, parts: list[Any]) -> list[ReportRow]:
    """Store every part of a report; the rows of all parts (summed over periods when split)."""
    flat = [flatten(part.body) for part in parts]
    with db.transaction() as conn:
        for part, rows in zip(parts, flat):
            store_report(conn, realm_id, name, part.start, part.end, part.params.get("accounting_method"),
                         part.params, part.body, rows)
    return flat[0] if len(flat) == 1 else combine(flat)


def _books(db: Database, client: Any, realm_id: str, as_of: date) -> list[CheckResult]:
    with db.transaction() as conn:
        fy_start = _fiscal_year_start(conn, realm_id, as_of)
        derived = {b.account_id: b for b in trial_balance(conn, realm_id, as_of, fy_start)}
    rows = _kept(db, realm_id, "TrialBalance", fetch(client, "TrialBalance", fy_start, as_of))
    qbo: dict[str | None, Decimal] = {}
    names: dict[str | None, str | None] = {}
    for row in rows:
        if row.row_type != "data" or row.value is None:
            continue
        sign = 1 if row.column.lower().startswith("debit") else -1 if row.column.lower().startswith("credit") else 0
        qbo[row.account_id] = qbo.get(row.account_id, Decimal(0)) + sign * row.value
        names[row.account_id] = row.account_name
    results = []
    for account in sorted(set(qbo) | set(derived), key=lambda a: (a is None, a or "")):
        expected = qbo.get(account, Decimal(0))
        ours = derived.get(account)
        actual = ours.net if ours else Decimal(0)
        name = names.get(account) or (ours.name if ours else None) or "(no account)"
        ok = abs(actual - expected) < CENT
        detail = None if ok else (f"{name}: QuickBooks {expected:,.2f}, derived from the copy {actual:,.2f},"
                                  f" difference {actual - expected:,.2f}")
        results.append(CheckResult("trial_balance", account or "(none)", "ok" if ok else "drift",
                                   expected, actual, detail))
    return results


def _grand_total(rows: list[ReportRow]) -> Decimal:
    totals = [r.value for r in rows if r.row_type == "summary" and r.column.lower() == "total"
              and r.value is not None and r.path[:1] in (("GrandTotal",), ("TOTAL",))]
    if totals:
        return totals[-1]
    return sum((r.value for r in rows if r.row_type == "data" and r.column.lower() == "total" and r.value is not None),
               Decimal(0))


def _aging(db: Database, client: Any, realm_id: str, as_of: date) -> list[CheckResult]:
    with db.transaction() as conn:
        local = open_balances(conn, realm_id, as_of)
    results = []
    for report, side in (("AgedReceivables", "receivable"), ("AgedPayables", "payable")):
        parts = fetch(client, report, as_of, as_of, report_date=as_of.isoformat())
        expected = _grand_total(_kept(db, realm_id, report, parts))
        actual = local[side]
        ok = abs(actual - expected) < CENT
        detail = None if ok else (f"{report} total {expected:,.2f}, open {side} balances in the copy {actual:,.2f},"
                                  f" difference {actual - expected:,.2f}")
        results.append(CheckResult("aging", side, "ok" if ok else "drift", expected, actual, detail))
    return results


def _every_check(db: Database, settings: Settings, client: Any, factory: Callable[[], Any], realm_id: str,
                 as_of: date) -> tuple[list[CheckResult], int]:
    """Every check of one realm; (results, API calls of the COUNT clients)."""
    counts, calls = _counts(db, factory, realm_id, COUNTED, max(1, settings.max_concurrency))
    return counts + _books(db, client, realm_id, as_of) + _aging(db, client, realm_id, as_of), calls


def reconcile_realm(db: Database, settings: Settings, realm_id: str, *, repair: bool = False,
                    client_factory: Callable[[], Any] | None = None, sync_first: bool = True) -> Reconciliation:
    """Check one realm (see the module docstring) and record every result; never raises for QBO
    errors (they are an 'error' result), raises DatabaseUnavailable."""
    outcome = Reconciliation(realm_id)
    factory = client_factory or (lambda: client_for(db, settings, realm_id, service="reconcile"))
    try:
        if sync_first:
            sync_realm(db, settings, realm_id, trigger="reconcile")
        outcome.as_of = _watermark(db, realm_id)
        with factory() as client:
            count_calls = 0
            try:
                outcome.results, count_calls = _every_check(db, settings, client, factory, realm_id, outcome.as_of)
                missing = [r.subject for r in outcome.results if r.check == "count" and r.status == "drift"]
                if repair and missing:
                    sync_realm(db, settings, realm_id, entities=missing, full=True, trigger="reconcile")
                    outcome.repaired = missing
                    outcome.results, again = _every_check(db, settings, client, factory, realm_id, outcome.as_of)
                    count_calls += again
            finally:
                outcome.api_calls = getattr(client, "api_calls", 0) + count_calls
    except DatabaseUnavailable:
        raise
    except QBSyncError as exc:
        outcome.results.append(CheckResult("run", realm_id, "error", detail=exc.one_line()))
    except Exception as exc:  # a failed check is recorded as one (logged with its traceback), never a crash
        log.exception("realm %s: reconciliation failed", realm_id)
        outcome.results.append(CheckResult("run", realm_id, "error", detail=describe(exc, limit=500)))
    with db.transaction() as conn:
        record_checks(conn, new_run_id(conn), realm_id, outcome.results)
    log.info("reconcile realm=%s status=%s checks=%d drifts=%d api_calls=%d", realm_id, outcome.status,
             len(outcome.results), len(outcome.drifts()), outcome.api_calls)
    return outcome


def reconcile_if_due(db: Database, settings: Settings, realm_id: str, stop: Any = None) -> Reconciliation | None:
    """Reconcile the realm if it is active and synced and its last reconciliation is older than
    RECONCILE_INTERVAL_HOURS, without a sync of its own first: the sync worker calls this right
    after the realm's scheduled sync, under the realm's lease. None when not due."""
    if stop is not None and stop.requested:
        return None
    with db.transaction() as conn:
        due = conn.execute(
            "SELECT 1 FROM quickbooks.tokens t"
            " WHERE t.realm_id = %s AND t.status = 'active' AND EXISTS (SELECT 1 FROM quickbooks.sync_state s"
            "   WHERE s.realm_id = t.realm_id AND s.cursor IS NOT NULL)"
            " AND COALESCE((SELECT max(r.checked_at) FROM quickbooks.reconciliations r WHERE r.realm_id = t.realm_id),"
            "   '-infinity') < now() - %s", (realm_id, timedelta(hours=settings.reconcile_interval_hours))).fetchone()
    if due is None:
        return None
    return reconcile_realm(db, settings, realm_id, sync_first=False)


def _render(outcome: Reconciliation) -> str:
    lines = [f"realm {outcome.realm_id} as of {outcome.as_of}: {outcome.status.upper()}"
             f" ({len(outcome.results)} checks, {outcome.api_calls} API calls)"]
    if outcome.repaired:
        lines.append(f"  repaired (listed in full): {', '.join(outcome.repaired)}")
    lines += [f"  {r.status:<5} {r.check:<13} {r.subject:<16} {r.detail or ''}" for r in outcome.drifts()]
    return "\n".join(lines)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """`qbsync reconcile`: every active realm (or --realm-id); exit code of the worst result."""
    from db.connection import open_database
    from services.core.logs import setup_logging

    setup_logging("reconcile", "WARNING")  # stdout is the report (or the JSON); problems still reach stderr
    db = open_database(settings)
    try:
        realms = [args.realm_id] if args.realm_id else _active_realms(db)
        outcomes = [reconcile_realm(db, settings, realm, repair=args.repair) for realm in realms]
    finally:
        db.close()
    if args.json:
        sys.stdout.write(json.dumps({"realms": [o.as_json() for o in outcomes]}, ensure_ascii=False) + "\n")
    else:
        print("\n".join(_render(o) for o in outcomes) or "no company to reconcile")
    return max((EXIT_CODES[o.status] for o in outcomes), default=0)


def _active_realms(db: Database) -> list[str]:
    from services.tokens.vault import active_realms

    with db.transaction() as conn:
        return active_realms(conn)

