"""The sync engine against the emulator and real PostgreSQL: exact end states, every path.

`assert_exact` (support/realms.py) compares every SPEC section 8 column, every line by position
and `raw` with what the emulator serves (parsed with Decimal), and the set of deleted rows with
the emulator's deletions.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
import requests
from support.realms import SYNCED, assert_exact, connect_realm, data_calls, ok, served_versions, snapshot

from db.connection import Database
from services.core.errors import DatabaseUnavailable
from services.intuit.client import QBOClient
from services.model.entities import ENTITY_NAMES
from services.sync.engine import sync_realm
from services.tokens.vault import client_for


@pytest.mark.slow
def test_full_sync_of_a_generated_company_is_exact(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=120, items=15, invoices=1150, estimates=40,
                          company_name="Crème d'Olive")
    invoices = emulator.admin.entities(realm, "Invoice")
    customers = emulator.admin.entities(realm, "Customer")
    assert any(i.get("PrivateNote") == "Voided" for i in invoices)  # the company has what we claim
    assert any(c.get("Active") is False for c in customers)
    assert any(any(ord(ch) > 127 for ch in c["DisplayName"]) for c in customers)
    outcomes = sync_realm(db, settings, realm, trigger="cli")
    assert ok(outcomes), [(o.entity, o.error) for o in outcomes]
    assert_exact(db, emulator, realm)
    with db.transaction() as conn:
        runs = conn.execute("SELECT entity, kind, trigger, status, rows_fetched, rows_upserted, api_calls"
                            " FROM quickbooks.sync_runs WHERE realm_id = %s ORDER BY id", (realm,)).fetchall()
        state = dict(conn.execute("SELECT entity, row_count FROM quickbooks.sync_state WHERE realm_id = %s"
                                  " AND cursor IS NOT NULL", (realm,)).fetchall())
    assert [r[0] for r in runs] == list(ENTITY_NAMES)
    assert all(r[1] == "full" and r[2] == "cli" and r[3] == "success" for r in runs)
    invoice_run = next(r for r in runs if r[0] == "Invoice")
    assert invoice_run[4] == invoice_run[5] == 1150
    assert sum(r[6] for r in runs) == sum(data_calls(emulator, realm).values())
    assert state == {name: len(emulator.admin.entities(realm, name)) for name in SYNCED} | {"CompanyInfo": 1}
    assert (state["Customer"], state["Item"], state["Estimate"], state["Invoice"]) == (120, 15, 40, 1150)


def test_incremental_changes_exactly_the_changed_rows(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=40, items=10, invoices=60, estimates=10)
    assert ok(sync_realm(db, settings, realm))
    before_db, before_qbo = snapshot(db, realm), served_versions(emulator, realm)
    admin = emulator.admin
    open_invoices = [i for i in admin.entities(realm, "Invoice") if i.get("PrivateNote") != "Voided"]
    customers = [c for c in admin.entities(realm, "Customer") if c.get("Active")]
    admin.mutate(realm, "Invoice", "create")
    admin.mutate(realm, "Invoice", "update", id=open_invoices[0]["Id"])
    admin.mutate(realm, "Invoice", "delete", id=open_invoices[1]["Id"])
    admin.mutate(realm, "Invoice", "void", id=open_invoices[2]["Id"])
    admin.mutate(realm, "Estimate", "update", id=admin.entities(realm, "Estimate")[0]["Id"])
    admin.mutate(realm, "Customer", "update", id=customers[0]["Id"], fields={"DisplayName": "Zoë O'Brien & Søn"})
    admin.mutate(realm, "Customer", "merge", id=customers[1]["Id"], merge_into=customers[2]["Id"])
    admin.mutate(realm, "Item", "inactivate", id=admin.entities(realm, "Item")[0]["Id"])
    admin.reset_counts()
    outcomes = sync_realm(db, settings, realm)
    assert ok(outcomes) and {o.kind for o in outcomes} == {"cdc"}
    assert data_calls(emulator, realm) == {"query": 0, "cdc": 1, "read": 0, "companyinfo": 0}
    assert_exact(db, emulator, realm)
    after_db, after_qbo = snapshot(db, realm), served_versions(emulator, realm)
    changed_qbo = {k for k in after_qbo if before_qbo.get(k) != after_qbo[k]}
    changed_db = {k for k in after_db if before_db.get(k) != after_db[k]}
    assert len(changed_qbo) >= 8 and changed_db == changed_qbo
    # nothing changed since: exactly one CDC request for the realm, no rows touched
    admin.reset_counts()
    assert ok(sync_realm(db, settings, realm))
    assert data_calls(emulator, realm) == {"query": 0, "cdc": 1, "read": 0, "companyinfo": 0}
    assert snapshot(db, realm) == after_db


@pytest.mark.slow
def test_more_than_1000_changes_since_the_last_run_miss_nothing(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=30, items=1100, invoices=40, estimates=5)
    assert ok(sync_realm(db, settings, realm))
    admin = emulator.admin
    items = admin.entities(realm, "Item")
    for item in items[:1050]:  # Item alone exceeds the cap: windowed query path (in-process: fast)
        emulator.state.mutate(realm, "Item", "update", id=item["Id"])
    invoices = admin.entities(realm, "Invoice")
    admin.mutate(realm, "Invoice", "delete", id=invoices[0]["Id"])
    admin.mutate(realm, "Invoice", "update", id=invoices[1]["Id"])
    admin.mutate(realm, "Customer", "create")
    outcomes = sync_realm(db, settings, realm)
    assert ok(outcomes), [(o.entity, o.error) for o in outcomes]
    kinds = {o.entity: o.kind for o in outcomes}
    assert kinds["Item"] == "window" and kinds["Invoice"] == "cdc"
    assert_exact(db, emulator, realm)
    # a burst of deletes+updates on a delete-capable entity: listing + reconciliation
    for invoice in admin.entities(realm, "Invoice")[:20]:
        admin.mutate(realm, "Invoice", "delete", id=invoice["Id"])
    for item in items[:1000]:
        emulator.state.mutate(realm, "Item", "update", id=item["Id"])
    assert ok(sync_realm(db, settings, realm))
    assert_exact(db, emulator, realm)


@pytest.mark.parametrize("days", [31, 29.5], ids=["cdc-refuses-it", "inside-the-margin"])
def test_a_cursor_a_month_old_by_intuits_clock_is_still_exact_including_deletes(
        db, settings, emulator, days: float) -> None:
    """Only the emulator's clock moves (ours and the database's do not): at 31 days CDC answers
    400 "older than fixed days", at 29.5 it answers but the cursor is inside the day of margin.
    Either way every entity catches up with a window, deletes and merges reconciled."""
    realm = connect_realm(db, settings, emulator, customers=30, items=10, invoices=50, estimates=10)
    assert ok(sync_realm(db, settings, realm))
    admin = emulator.admin
    invoices = admin.entities(realm, "Invoice")
    admin.mutate(realm, "Invoice", "delete", id=invoices[3]["Id"])
    admin.mutate(realm, "Invoice", "update", id=invoices[4]["Id"])
    admin.mutate(realm, "Estimate", "delete", id=admin.entities(realm, "Estimate")[0]["Id"])
    customers = admin.entities(realm, "Customer")
    admin.mutate(realm, "Customer", "merge", id=customers[5]["Id"], merge_into=customers[6]["Id"])
    admin.advance_clock(days * 86400)
    admin.mutate(realm, "Item", "update", id=admin.entities(realm, "Item")[0]["Id"])
    admin.mutate(realm, "Invoice", "create")
    admin.reset_counts()
    outcomes = sync_realm(db, settings, realm)
    assert ok(outcomes), [(o.entity, o.error) for o in outcomes]
    assert {o.kind for o in outcomes if o.entity != "CompanyInfo"} == {"window"}
    counts = admin.request_counts(realm)  # a month on, the access token has expired: one 401 + refresh
    assert counts.get("cdc", 0) == 1 + counts.get("token:refresh_token", 0) == 2  # then windows, no retry loop
    with db.transaction() as conn:
        errors = conn.execute("SELECT count(*) FROM quickbooks.errors WHERE realm_id = %s", (realm,)).fetchone()[0]
    assert errors == 0  # a refused CDC is a route, not a failure
    assert_exact(db, emulator, realm)
    admin.reset_counts()
    assert ok(sync_realm(db, settings, realm))  # back on CDC
    assert data_calls(emulator, realm)["cdc"] == 1


@pytest.mark.slow
def test_random_429_and_503_give_the_same_exact_end_state(db, settings, emulator, caplog) -> None:
    caplog.set_level("WARNING", logger="qbsync.qbo")
    realm = connect_realm(db, settings, emulator, customers=60, items=10, invoices=2100, estimates=20)
    emulator.admin.configure(fail_rate_429=0.1, fail_rate_503=0.1, seed=7)
    try:
        assert ok(sync_realm(db, settings, realm))
        invoices = emulator.admin.entities(realm, "Invoice")
        emulator.admin.mutate(realm, "Invoice", "delete", id=invoices[10]["Id"])
        emulator.admin.mutate(realm, "Invoice", "void", id=invoices[11]["Id"])
        emulator.admin.mutate(realm, "Customer", "create")
        for _ in range(3):
            assert ok(sync_realm(db, settings, realm))
        counts = emulator.admin.request_counts(realm)
    finally:
        emulator.admin.configure(fail_rate_429=0.0, fail_rate_503=0.0)
    assert counts["throttled"] >= 1  # XML 429s happened and were retried
    assert any("ServerError" in r.getMessage() for r in caplog.records)  # and 503s
    assert_exact(db, emulator, realm)


@pytest.mark.slow
def test_access_token_expiring_between_pages_costs_exactly_one_refresh(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=20, items=5, invoices=3500, estimates=5)
    pages = {"n": 0}
    lock = threading.Lock()

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if "/query" in response.url and response.status_code == 200:
            with lock:
                pages["n"] += 1
                if pages["n"] == 2:
                    emulator.admin.expire_access_tokens(realm)

    def factory() -> QBOClient:  # concurrent pages, each client with a hooked session
        session = requests.Session()
        session.hooks["response"].append(hook)
        return client_for(db, settings, realm, session=session)

    outcomes = sync_realm(db, settings, realm, entities=["Invoice"], client_factory=factory)
    assert ok(outcomes), [(o.entity, o.error) for o in outcomes]
    assert pages["n"] >= 4
    assert emulator.admin.request_counts(realm)["token:refresh_token"] == 1
    with db.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM quickbooks.invoices").fetchone()[0] == 3500


def test_a_realm_needing_reauth_is_skipped_with_a_reason(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=3, estimates=1)
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.tokens SET status = 'needs_reauth', last_error = 'invalid_grant'"
                     " WHERE realm_id = %s", (realm,))
    outcomes = sync_realm(db, settings, realm)
    assert {o.status for o in outcomes} == {"skipped"} and len(outcomes) == len(ENTITY_NAMES)
    assert sum(data_calls(emulator, realm).values()) == 0
    with db.transaction() as conn:
        runs = conn.execute("SELECT status, error FROM quickbooks.sync_runs WHERE realm_id = %s", (realm,)).fetchall()
        errors = conn.execute("SELECT count(*) FROM quickbooks.errors WHERE service = 'sync' AND realm_id = %s",
                              (realm,)).fetchone()[0]
    assert all(s == "skipped" and e for s, e in runs) and errors >= 1


def test_one_failing_entity_does_not_stop_the_others_nor_move_its_cursor(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=10, items=5, invoices=10, estimates=3)
    assert ok(sync_realm(db, settings, realm))
    with db.transaction() as conn:
        cursor_before = conn.execute("SELECT cursor FROM quickbooks.sync_state WHERE realm_id = %s"
                                     " AND entity = 'Item'", (realm,)).fetchone()[0]
        conn.execute("ALTER TABLE quickbooks.items RENAME COLUMN sku TO sku_broken")
    emulator.admin.mutate(realm, "Item", "update", id=emulator.admin.entities(realm, "Item")[0]["Id"])
    emulator.admin.mutate(realm, "Customer", "create")
    outcomes = {o.entity: o for o in sync_realm(db, settings, realm)}
    assert outcomes["Item"].status == "failed" and "sku" in (outcomes["Item"].error or "")
    assert outcomes["Customer"].status == "success" and outcomes["Customer"].rows_upserted == 1
    with db.transaction() as conn:
        assert conn.execute("SELECT cursor, last_run_status FROM quickbooks.sync_state WHERE realm_id = %s"
                            " AND entity = 'Item'", (realm,)).fetchone() == (cursor_before, "failed")
        assert conn.execute("SELECT count(*) FROM quickbooks.errors WHERE service = 'sync' AND entity = 'Item'"
                            ).fetchone()[0] == 1
        conn.execute("ALTER TABLE quickbooks.items RENAME COLUMN sku_broken TO sku")
    assert ok(sync_realm(db, settings, realm))
    assert_exact(db, emulator, realm)


def test_full_resync_reconciles_rows_missing_from_the_listing(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=10, items=5, invoices=20, estimates=3)
    assert ok(sync_realm(db, settings, realm))
    with db.transaction() as conn:  # a row QBO does not have (e.g. a delete whose CDC event was lost)
        conn.execute("INSERT INTO quickbooks.invoices (realm_id, id, qbo_updated_at) VALUES (%s, '99999',"
                     " now() - interval '1 day')", (realm,))
    outcomes = sync_realm(db, settings, realm, full=True)
    assert ok(outcomes) and {o.kind for o in outcomes} == {"full"}
    with db.transaction() as conn:
        assert conn.execute("SELECT deleted_at IS NOT NULL FROM quickbooks.invoices WHERE id = '99999'"
                            ).fetchone() == (True,)
        conn.execute("DELETE FROM quickbooks.invoices WHERE id = '99999'")
    assert_exact(db, emulator, realm)


@pytest.mark.slow
def test_a_database_outage_mid_run_raises_and_never_moves_the_cursor(settings, emulator, pg_server,
                                                                    database_url) -> None:
    db = Database(database_url, max_size=8, timeout=2)  # fail fast while PostgreSQL is away
    try:
        _outage_scenario(db, settings, emulator, pg_server)
    finally:
        db.close()


def _outage_scenario(db, settings, emulator, pg_server) -> None:
    realm = connect_realm(db, settings, emulator, customers=10, items=5, invoices=3200, estimates=3)
    with db.transaction() as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
    pages = {"n": 0}

    def outage(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if "/query" in response.url and "Invoice" in response.url:
            pages["n"] += 1
            if pages["n"] == 2:  # PostgreSQL goes away while the Invoice listing is running
                with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
                    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                  " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))

    def factory() -> QBOClient:
        session = requests.Session()
        session.hooks["response"].append(outage)
        return client_for(db, settings, realm, session=session)

    with pytest.raises(DatabaseUnavailable):
        sync_realm(db, settings, realm, entities=["Invoice"], client_factory=factory)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert db.wait_until_available(10)
    with db.transaction() as conn:
        assert conn.execute("SELECT cursor FROM quickbooks.sync_state WHERE realm_id = %s AND entity = 'Invoice'",
                            (realm,)).fetchone() in (None, (None,))
    assert ok(sync_realm(db, settings, realm))  # retried later: completes, exact
    assert_exact(db, emulator, realm)


def _recording_factory(db, settings, realm: str, log: list[tuple[str, int]]):
    """Clients whose every query is recorded as (statement, body bytes)."""
    from urllib.parse import parse_qs, urlsplit

    lock = threading.Lock()

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if "/query" in response.url and response.status_code == 200:
            statement = parse_qs(urlsplit(response.url).query)["query"][0]
            with lock:
                log.append((statement, len(response.content)))

    def factory() -> QBOClient:
        session = requests.Session()
        session.hooks["response"].append(hook)
        return client_for(db, settings, realm, session=session)
    return factory


@pytest.mark.slow
def test_a_burst_over_the_cdc_cap_costs_a_window_not_a_full_listing(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=20, items=5, invoices=8000, estimates=3)
    full_log: list[tuple[str, int]] = []
    assert ok(sync_realm(db, settings, realm, client_factory=_recording_factory(db, settings, realm, full_log)))
    full_log = [(s, n) for s, n in full_log if " FROM Invoice" in s]  # the Invoice listing's cost
    full_calls, full_bytes = len(full_log), sum(n for _, n in full_log)
    state = emulator.state
    invoices = emulator.admin.entities(realm, "Invoice")
    # 1. deletes first, then 1,050 updates: CDC (oldest first) still shows the deletes, and the
    #    count check proves nothing else vanished: a window and one COUNT, no id listing
    for invoice in invoices[:4]:
        state.mutate(realm, "Invoice", "delete", id=invoice["Id"])
    for invoice in invoices[10:1060]:
        state.mutate(realm, "Invoice", "update", id=invoice["Id"])
    emulator.admin.advance_clock(60)  # the next window starts after this burst (by a minute)
    emulator.admin.reset_counts()
    log: list[tuple[str, int]] = []
    (outcome,) = sync_realm(db, settings, realm, entities=["Invoice"],
                            client_factory=_recording_factory(db, settings, realm, log))
    assert outcome.status == "success" and outcome.kind == "window", outcome.error
    assert outcome.rows_deleted == 4
    assert not any(s.startswith("SELECT Id") for s, _ in log)  # no reconciliation needed
    assert all("LastUpdatedTime" in s for s, _ in log)  # every query is windowed
    assert data_calls(emulator, realm)["query"] == len(log) <= full_calls // 2
    assert sum(n for _, n in log) < full_bytes / 4
    assert_exact(db, emulator, realm, ("Invoice",))  # only invoices were synced (deletes touched payments)
    # 2. 1,050 updates, then deletes the capped CDC cannot show: the counts differ, so the
    #    deletes are found by an id-only listing; still a fraction of a full listing's bytes
    emulator.admin.advance_clock(120)  # the first burst is older than this window
    for invoice in invoices[1100:2150]:
        state.mutate(realm, "Invoice", "update", id=invoice["Id"])
    for invoice in invoices[7000:7003]:
        state.mutate(realm, "Invoice", "delete", id=invoice["Id"])
    state.mutate(realm, "Invoice", "create")
    log.clear()
    (outcome,) = sync_realm(db, settings, realm, entities=["Invoice"],
                            client_factory=_recording_factory(db, settings, realm, log))
    assert outcome.status == "success" and outcome.kind == "window", outcome.error
    assert outcome.rows_deleted == 3
    id_pages = [n for s, n in log if s.startswith("SELECT Id FROM Invoice")]
    object_pages = [n for s, n in log if s.startswith("SELECT * FROM Invoice")]
    assert id_pages and all("LastUpdatedTime" in s for s, _ in log if s.startswith("SELECT * "))
    assert len(object_pages) == 2 and sum(n for _, n in log) < full_bytes / 4
    assert_exact(db, emulator, realm, ("Invoice",))
    assert ok(sync_realm(db, settings, realm))
    emulator.admin.reset_counts()
    assert ok(sync_realm(db, settings, realm))  # back on one CDC call
    assert data_calls(emulator, realm) == {"query": 0, "cdc": 1, "read": 0, "companyinfo": 0}
    assert_exact(db, emulator, realm, ("Invoice",))


def test_a_refresh_token_rejected_during_a_sync_is_recorded_by_sync(db, settings, emulator) -> None:
    """The sync's refresh goes through the one token path, and its failure is labelled `sync`."""
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=3, estimates=1)
    emulator.admin.expire_access_tokens(realm)
    emulator.admin.invalidate_refresh_tokens(realm)
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.tokens SET expires_at = now() - interval '1 minute' WHERE realm_id = %s",
                     (realm,))
    outcomes = sync_realm(db, settings, realm)
    assert not any(o.status == "success" for o in outcomes)
    with db.transaction() as conn:
        status = conn.execute("SELECT status FROM quickbooks.tokens WHERE realm_id = %s", (realm,)).fetchone()[0]
        services_seen = {r[0] for r in conn.execute(
            "SELECT service FROM quickbooks.errors WHERE realm_id = %s AND message ILIKE '%%invalid_grant%%'",
            (realm,))}
    assert status == "needs_reauth"
    assert services_seen == {"sync"}
