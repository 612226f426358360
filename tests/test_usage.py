"""Intuit's metered calls (SPEC section 12): counted per realm, day, kind and service by whichever
process made them, written in batches, and reported by `qbsync usage` with a projection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

from support import wait_for
from support.console import TcpToUnixProxy
from support.realms import connect_realm, data_calls, ok

from db.connection import Database
from db.usage import UsageRow, add_usage, usage_report
from services.core.qbotime import parse_qbo_time
from services.intuit.usage import METER, UsageMeter
from services.sync.apply import process_inbox
from services.sync.engine import sync_realm
from services.tokens.vault import refresh_realm
from services.webhook.inbox import InboxEvent, store_events

QBSYNC = str(Path(sys.executable).parent / "qbsync")


def ledger_counts(db, realm: str) -> dict[str, int]:
    with db.transaction() as conn:
        rows = conn.execute("SELECT kind, sum(calls)::int FROM quickbooks.api_usage WHERE realm_id = %s GROUP BY kind",
                            (realm,)).fetchall()
    return dict(rows)


def by_service(db, realm: str) -> dict[str, int]:
    with db.transaction() as conn:
        return dict(conn.execute("SELECT service, sum(calls)::int FROM quickbooks.api_usage WHERE realm_id = %s"
                                 " GROUP BY service", (realm,)).fetchall())


def test_the_ledger_counts_what_the_emulator_saw(db, settings, emulator) -> None:
    """A full sync, a CDC pass, an inbox batch read by id and an OAuth refresh: the recorded
    calls per kind equal the emulator's own per-realm request counts (OAuth is not metered)."""
    realm = connect_realm(db, settings, emulator, customers=6, items=3, invoices=8, estimates=2)
    with db.transaction() as conn:  # `token add` read CompanyInfo before the emulator's counters were reset
        conn.execute("DELETE FROM quickbooks.api_usage WHERE realm_id = %s AND service = 'cli'", (realm,))
    assert ok(sync_realm(db, settings, realm))
    emulator.admin.mutate(realm, "Invoice", "update", id=emulator.admin.entities(realm, "Invoice")[0]["Id"])
    assert ok(sync_realm(db, settings, realm))
    customer = emulator.admin.mutate(realm, "Customer", "update",
                                     id=emulator.admin.entities(realm, "Customer")[0]["Id"])
    when = customer["MetaData"]["LastUpdatedTime"]
    with db.transaction() as conn:
        store_events(conn, [InboxEvent(format="cloudevents", event_id=str(uuid.uuid4()), realm_id=realm,
                                       entity="Customer", entity_id=customer["Id"], operation="Update",
                                       occurred_at=parse_qbo_time(when), deleted_id=None, payload={}, raw_time=when)])
    assert process_inbox(db, settings).processed == 1
    refresh_realm(db, settings, realm, force=True, reason="console")
    assert METER.pending(db) == 0  # every client recorded its calls when it closed
    seen = {k: v for k, v in data_calls(emulator, realm).items() if v}
    assert seen["query"] > 0 and seen["cdc"] == 1 and seen["read"] == 1 and seen["companyinfo"] == 1
    assert ledger_counts(db, realm) == seen
    assert emulator.admin.request_counts(realm)["token:refresh_token"] >= 1
    services = by_service(db, realm)
    assert services["inbox"] == 1 and services["sync"] == sum(seen.values()) - 1


def test_a_flush_while_the_database_is_away_keeps_the_counts(db, database_url: str, caplog) -> None:
    """The database goes away (its port closed), comes back on the same port: nothing lost, nothing
    twice; right after a failed write the meter does not try again (a closing client never waits)."""
    proxy = TcpToUnixProxy(database_url)
    proxy.start()
    through = Database(proxy.url + "?connect_timeout=2", max_size=1)
    meter = UsageMeter(retry_after_s=2.0)
    try:
        meter.count(through, "9130000000000001", "query", "sync")
        assert meter.flush(through) is True
        proxy.stop()
        for _ in range(3):
            meter.count(through, "9130000000000001", "query", "sync")
        assert meter.flush(through) is False and meter.pending() == 3
        tries = sum("could not record" in r.getMessage() for r in caplog.records)
        assert meter.flush(through) is False  # within retry_after_s: not even tried
        assert sum("could not record" in r.getMessage() for r in caplog.records) == tries == 1
        proxy.start()
        meter.count(through, "9130000000000001", "cdc", "sync")
        assert wait_for(lambda: meter.flush(through), timeout=30, details=lambda: f"pending {meter.pending()}")
        assert meter.pending() == 0 and meter.flush(through) is True
    finally:
        through.close()
        proxy.stop()
    assert ledger_counts(db, "9130000000000001") == {"query": 4, "cdc": 1}


def test_the_meter_writes_at_most_once_a_minute_while_calls_keep_coming(db) -> None:
    clock = [0.0]
    meter = UsageMeter(clock=lambda: clock[0])
    for second in range(0, 120, 5):  # a call every 5 s for 2 minutes
        clock[0] = float(second)
        meter.count(db, "9130000000000002", "query", "sync")
        meter.maybe_flush(db)
    with db.transaction() as conn:
        written = conn.execute("SELECT calls FROM quickbooks.api_usage WHERE realm_id = '9130000000000002'").fetchone()
    assert written == (13,) and meter.pending() == 11  # one flush at 60 s (calls 0-60 s); the rest waits


def test_month_to_date_and_projection(db) -> None:
    with db.transaction() as conn:
        add_usage(conn, [UsageRow("A", date(2026, 11, 30), "query", "sync", 999),  # last month
                         UsageRow("A", date(2026, 12, 1), "query", "sync", 1000),
                         UsageRow("A", date(2026, 12, 2), "cdc", "sync", 500),
                         UsageRow("A", date(2026, 12, 2), "cdc", "inbox", 500),
                         UsageRow("B", date(2026, 12, 2), "read", "inbox", 100)])
        noon = datetime(2026, 12, 2, 12, tzinfo=timezone.utc)  # 1.5 days into a 31-day month
        report = usage_report(conn, limit=100_000, reserve_percent=5, now=noon)
        november = usage_report(conn, limit=100_000, reserve_percent=5, now=noon, month=date(2026, 11, 1))
    assert (report.month, report.calls, report.by_kind) == ("2026-12", 2100, {"query": 1000, "cdc": 1000, "read": 100})
    a, b = report.realms
    assert (a.realm_id, a.calls, b.realm_id, b.calls) == ("A", 2000, "B", 100)
    # the rate over the 1.5 days so far, for the 29.5 days left
    assert a.projected == 2000 + round(2000 / 1.5 * 29.5) and b.projected == 100 + round(100 / 1.5 * 29.5)
    assert report.projected == a.projected + b.projected and not report.governed
    assert (november.calls, november.projected, november.complete) == (999, 999, True)
    with db.transaction() as conn:
        add_usage(conn, [UsageRow("B", date(2026, 12, 2), "read", "inbox", 95_000)])
        assert usage_report(conn, limit=100_000, reserve_percent=5, now=noon).governed  # 2,900 left < 5,000


def test_qbsync_usage_prints_the_month_and_json(db, database_url: str) -> None:
    today = datetime.now(timezone.utc).date()
    with db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.companies (id, name, environment) VALUES ('C1', 'Ærø Bakery', 'production')")
        add_usage(conn, [UsageRow("C1", today, "query", "sync", 1234), UsageRow("C1", today, "cdc", "sync", 10)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL"))}
    env.update({"DATABASE_URL": database_url, "QBO_MONTHLY_CALL_LIMIT": "10000"})
    text = subprocess.run([QBSYNC, "usage"], env=env, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert f"Intuit metered calls {today:%Y-%m}: 1,244 of 10,000 (12.4 %)" in text.stdout
    assert "query 1,234" in text.stdout and "Ærø Bakery" in text.stdout
    out = subprocess.run([QBSYNC, "usage", "--json"], env=env, capture_output=True, text=True, timeout=60)
    body = json.loads(out.stdout)
    assert (body["calls"], body["limit"], body["by_kind"]) == (1244, 10000, {"query": 1234, "cdc": 10})
    assert body["realms"][0]["realm_id"] == "C1" and body["projected"] >= 1244
    bad = subprocess.run([QBSYNC, "usage", "--month", "December"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "must look like 2026-12" in bad.stderr

