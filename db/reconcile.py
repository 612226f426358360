"""The one writer of `quickbooks.reconciliations`, `quickbooks.reports` and `quickbooks.report_rows`
(SPEC section 11), and the reader of the latest result per realm (status, console, metrics)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from db.connection import scalar
from db.upserts import dump_raw

__all__ = ["CheckResult", "new_run_id", "record_checks", "store_report", "latest_results"]


@dataclass(frozen=True)
class CheckResult:
    check: str                   # count | trial_balance | aging | run
    subject: str                 # an entity, an account id, receivable/payable, or the realm
    status: str                  # ok | drift | error
    expected: Decimal | None = None   # QBO's figure
    actual: Decimal | None = None     # the synced copy's
    detail: str | None = None

    @property
    def difference(self) -> Decimal | None:
        if self.expected is None or self.actual is None:
            return None
        return self.actual - self.expected


def new_run_id(conn: psycopg.Connection) -> int:
    return int(scalar(conn, "SELECT nextval('quickbooks.reconciliation_runs')"))


KEEP_DAYS = 90  # older results (and reports) of a realm are deleted when it is checked again


def record_checks(conn: psycopg.Connection, run_id: int, realm_id: str, results: Sequence[CheckResult]) -> None:
    """Store one reconciliation's results; drop the realm's results and reports older than KEEP_DAYS."""
    conn.execute("DELETE FROM quickbooks.reconciliations WHERE realm_id = %s AND checked_at < now() - %s",
                 (realm_id, timedelta(days=KEEP_DAYS)))
    conn.execute("DELETE FROM quickbooks.reports WHERE realm_id = %s AND fetched_at < now() - %s",
                 (realm_id, timedelta(days=KEEP_DAYS)))
    with conn.cursor() as cur:
        cur.executemany(
            'INSERT INTO quickbooks.reconciliations (run_id, realm_id, "check", subject, expected, actual, status,'
            " detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(run_id, realm_id, r.check, r.subject, r.expected, r.actual, r.status, r.detail) for r in results])


def store_report(conn: psycopg.Connection, realm_id: str, report: str, start: date | None, end: date | None,
                 method: str | None, params: dict[str, str], body: dict, rows: Iterable[Any]) -> int:
    """Keep one fetched report (raw) and its flattened rows (`services.reconcile.reports.ReportRow`)."""
    report_id = int(scalar(
        conn, "INSERT INTO quickbooks.reports (realm_id, report, period_start, period_end, accounting_method,"
        " params, raw) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) RETURNING id",
        (realm_id, report, start, end, method, Jsonb(params), dump_raw(body))))
    with conn.cursor() as cur:
        cur.executemany(
            'INSERT INTO quickbooks.report_rows (report_id, position, realm_id, report, period_start, period_end,'
            ' accounting_method, account_id, account_name, row_path, row_type, "column", value)'
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(report_id, i, realm_id, report, start, end, method, r.account_id, r.account_name, list(r.path),
              r.row_type, r.column, r.value) for i, r in enumerate(rows)])
    return report_id


def latest_results(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Per realm, its last reconciliation: checked_at, status (error > drift > ok) and the drifts
    (check, subject, expected, actual, difference, detail), the errors first."""
    rows = conn.execute(
        "WITH last AS (SELECT DISTINCT ON (realm_id) realm_id, run_id FROM quickbooks.reconciliations"
        " ORDER BY realm_id, checked_at DESC, run_id DESC)"
        ' SELECT r.realm_id, r.checked_at, r."check", r.subject, r.expected, r.actual, r.status, r.detail'
        " FROM quickbooks.reconciliations r JOIN last USING (realm_id, run_id) ORDER BY r.realm_id, r.id").fetchall()
    out: dict[str, dict[str, Any]] = {}
    for realm_id, checked_at, check, subject, expected, actual, status, detail in rows:
        entry = out.setdefault(realm_id, {"checked_at": checked_at, "status": "ok", "drifts": []})
        entry["checked_at"] = max(entry["checked_at"], checked_at)
        if status == "ok":
            continue
        if status == "error" or entry["status"] == "ok":
            entry["status"] = status if entry["status"] != "error" else "error"
        difference = actual - expected if expected is not None and actual is not None else None
        entry["drifts"].append({"check": check, "subject": subject, "status": status,
                                "expected": expected, "actual": actual, "difference": difference, "detail": detail})
    for entry in out.values():
        entry["drifts"].sort(key=lambda d: d["status"] != "error")
    return out
