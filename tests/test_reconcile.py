"""`qbsync reconcile` (SPEC section 11) against the emulator, whose reports its own bookkeeping
computes: a clean copy reconciles; a vanished invoice is a count drift that `--repair` fixes; a
report that disagrees by 12.34 on one account names that account and that amount; a transaction
of every posting type moves the derived trial balance exactly as QBO's does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from support.realms import SYNCED, connect_realm, data_calls, ok

from db.books import POSTING_TYPES, trial_balance
from db.readmodel import health, status_snapshot
from services.reconcile.checks import reconcile_if_due, reconcile_realm
from services.reconcile.reports import combine, fetch, flatten
from services.sync.engine import sync_realm
from services.tokens.vault import client_for

QBSYNC = str(Path(sys.executable).parent / "qbsync")
SIZES = {"customers": 12, "items": 6, "invoices": 30, "estimates": 3, "seed": 4242, "sales_tax": True}


@pytest.fixture
def synced(db, settings, emulator) -> str:
    realm = connect_realm(db, settings, emulator, **SIZES)
    assert ok(sync_realm(db, settings, realm))
    emulator.admin.reset_counts()
    return realm


def qbo_trial_balance(settings, db, realm: str, as_of: date) -> dict[str, Decimal]:
    """QBO's (the emulator's) TrialBalance as debits minus credits per account."""
    with client_for(db, settings, realm) as client:
        (part,) = fetch(client, "TrialBalance", date(as_of.year, 1, 1), as_of)
    out: dict[str, Decimal] = {}
    for row in flatten(part.body):
        if row.row_type == "data" and row.value is not None and row.account_id:
            sign = 1 if row.column == "Debit" else -1
            out[row.account_id] = out.get(row.account_id, Decimal(0)) + sign * row.value
    return out


def derived(db, realm: str, as_of: date) -> dict[str, Decimal]:
    with db.transaction() as conn:
        return {b.account_id: b.net for b in trial_balance(conn, realm, as_of, date(as_of.year, 1, 1))}


def test_a_clean_copy_reconciles_with_one_count_per_entity_and_three_reports(db, settings, emulator, synced) -> None:
    outcome = reconcile_realm(db, settings, synced, sync_first=False)
    assert outcome.status == "ok", outcome.drifts()
    checks = {r.check for r in outcome.results}
    assert checks == {"count", "trial_balance", "aging"}
    assert sum(r.check == "count" for r in outcome.results) == len(SYNCED)
    calls = data_calls(emulator, synced)
    assert calls["query"] == len(SYNCED) and emulator.admin.request_counts(synced)["report"] == 3
    with db.transaction() as conn:
        stored = conn.execute('SELECT count(*), count(*) FILTER (WHERE status = \'ok\') FROM quickbooks.reconciliations'
                              " WHERE realm_id = %s", (synced,)).fetchone()
        reports = dict(conn.execute("SELECT report, count(*) FROM quickbooks.report_rows WHERE realm_id = %s"
                                    " GROUP BY report", (synced,)).fetchall())
    assert stored[0] == stored[1] == len(outcome.results)
    assert set(reports) == {"TrialBalance", "AgedReceivables", "AgedPayables"} and all(reports.values())


def test_the_worker_reconciles_each_realm_once_per_interval(db, settings, emulator, synced) -> None:
    first = reconcile_if_due(db, settings, synced)
    assert first is not None and first.realm_id == synced and first.status == "ok"
    emulator.admin.reset_counts()
    assert reconcile_if_due(db, settings, synced) is None  # within RECONCILE_INTERVAL_HOURS: nothing, not a call
    assert sum(emulator.admin.request_counts(synced).values()) == 0
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.reconciliations SET checked_at = checked_at - interval '25 hours'")
    again = reconcile_if_due(db, settings, synced)
    assert again is not None and again.realm_id == synced


def test_a_vanished_invoice_is_a_count_drift_that_repair_fixes(db, settings, emulator, synced) -> None:
    invoice = emulator.admin.entities(synced, "Invoice")[3]
    emulator.admin.vanish(synced, "Invoice", invoice["Id"])
    assert ok(sync_realm(db, settings, synced))  # no tombstone, no webhook: CDC cannot see it
    outcome = reconcile_realm(db, settings, synced, sync_first=False)
    assert outcome.status == "drift"
    drift = next(r for r in outcome.drifts() if r.check == "count")
    assert (drift.subject, drift.expected, drift.actual) == ("Invoice", drift.actual - 1, drift.actual)
    repaired = reconcile_realm(db, settings, synced, repair=True, sync_first=False)
    assert repaired.repaired == ["Invoice"] and not [r for r in repaired.drifts() if r.check == "count"]
    with db.transaction() as conn:
        assert conn.execute("SELECT deleted_at IS NOT NULL FROM quickbooks.invoices WHERE realm_id = %s AND id = %s",
                            (synced, invoice["Id"])).fetchone() == (True,)
    # the invoice's postings are gone from QBO's books too: the trial balance agrees again
    assert repaired.status == "ok", repaired.drifts()


def test_a_report_that_disagrees_by_12_34_names_the_account_and_the_amount(db, settings, emulator, synced) -> None:
    account = next(a for a in emulator.admin.entities(synced, "Account") if a["Name"].startswith("Checking"))
    emulator.admin.configure(report_adjustments=[{"report": "TrialBalance", "account_id": account["Id"],
                                                  "amount": "12.34"}])
    outcome = reconcile_realm(db, settings, synced, sync_first=False)
    assert outcome.status == "drift"
    (drift,) = outcome.drifts()
    assert (drift.check, drift.subject, drift.actual - drift.expected) == ("trial_balance", account["Id"],
                                                                          Decimal("-12.34"))
    assert "Checking" in drift.detail and "-12.34" in drift.detail
    # status shows it: a warning naming the account and the amount
    with db.transaction() as conn:
        snapshot = status_snapshot(conn)
    books = next(r for r in snapshot["realms"] if r["realm_id"] == synced)["reconciliation"]
    assert books["status"] == "drift" and books["drifts"][0]["difference"] == "-12.34"
    code, reasons = health(snapshot, [])
    assert code >= 1 and any("copy differs from QuickBooks" in r and "Checking" in r for r in reasons)


def test_a_failed_reconciliation_is_critical_in_status(db, settings, emulator, synced) -> None:
    emulator.admin.configure(report_cell_limit=1)  # a TrialBalance "too large" even as of one day
    outcome = reconcile_realm(db, settings, synced, sync_first=False)
    assert outcome.status == "error" and outcome.results[-1].check == "run"
    assert "cannot be split by period" in outcome.results[-1].detail
    with db.transaction() as conn:
        code, reasons = health(status_snapshot(conn), [])
    assert code == 2 and any("reconciliation failed" in r for r in reasons)


def test_every_posting_type_moves_the_derived_trial_balance_as_qbo_does(db, settings, emulator, synced) -> None:
    as_of = date.today() + timedelta(days=2)
    before_qbo, before_ours = qbo_trial_balance(settings, db, synced, as_of), derived(db, synced, as_of)
    assert before_qbo == before_ours
    for entity in POSTING_TYPES:
        emulator.admin.mutate(synced, entity, "create")
    assert ok(sync_realm(db, settings, synced))
    after_qbo, after_ours = qbo_trial_balance(settings, db, synced, as_of), derived(db, synced, as_of)
    accounts = set(before_qbo) | set(after_qbo) | set(after_ours)
    moved_qbo = {a: after_qbo.get(a, 0) - before_qbo.get(a, 0) for a in accounts}
    moved_ours = {a: after_ours.get(a, 0) - before_ours.get(a, 0) for a in accounts}
    assert {a: v for a, v in moved_qbo.items() if v} == {a: v for a, v in moved_ours.items() if v}
    assert any(moved_qbo.values()) and sum(after_ours.values()) == 0


def test_a_report_too_large_is_fetched_in_shorter_periods(db, settings, emulator, synced) -> None:
    today = date.today()
    with client_for(db, settings, synced) as client:
        (whole,) = fetch(client, "ProfitAndLoss", today - timedelta(days=40), today)
        emulator.admin.configure(report_cell_limit=cells(whole.body) - 1)  # the whole period is one too many
        parts = fetch(client, "ProfitAndLoss", today - timedelta(days=40), today)
    assert len(parts) > 1 and parts[0].start == today - timedelta(days=40) and parts[-1].end == today
    net = [r for r in combine([flatten(p.body) for p in parts]) if r.path == ("NetIncome",) and r.row_type == "summary"]
    whole_net = [r for r in flatten(whole.body) if r.path == ("NetIncome",) and r.row_type == "summary"]
    assert [r.value for r in net] == [r.value for r in whole_net]


def cells(body: dict) -> int:
    """ColData cells in a report's rows (what Intuit's 400,000-cell limit counts)."""
    def walk(rows: list[dict]) -> int:
        n = 0
        for row in rows:
            n += len(row.get("ColData", [])) + len((row.get("Header") or {}).get("ColData", []))
            n += len((row.get("Summary") or {}).get("ColData", [])) + walk((row.get("Rows") or {}).get("Row", []))
        return n
    return walk(body["Rows"]["Row"])


def test_qbsync_reconcile_exit_codes_and_json(db, qbsync_env, emulator, synced, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([QBSYNC, "reconcile", "--realm-id", synced, *args], env={**os.environ, **qbsync_env},
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)

    clean = run("--json")
    assert clean.returncode == 0, clean.stderr
    body = json.loads(clean.stdout)
    assert body["realms"][0]["status"] == "ok" and body["realms"][0]["drifts"] == []
    emulator.admin.vanish(synced, "Invoice", emulator.admin.entities(synced, "Invoice")[0]["Id"])
    drift = run()
    assert drift.returncode == 1 and "Invoice" in drift.stdout and "DRIFT" in drift.stdout
    assert run("--repair").returncode == 0
