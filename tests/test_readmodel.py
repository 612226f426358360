"""The console's read model (db/readmodel.py): SPEC section 4 shape, health levels, cheap queries."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from support.console import (
    ACCESS_TOKEN,
    HEALTHY_REALM,
    REAUTH_REALM,
    REFRESH_TOKEN,
    insert_console_realm,
    seed_console_state,
)

from db.readmodel import (
    ENTITY_ORDER,
    GROUPS,
    READ_MODEL_QUERIES,
    entity_state,
    group_summaries,
    health,
    status_snapshot,
    sync_request_states,
)
from services.model.entities import ENTITIES
from services.sync.engine import enqueue_sync_request

NOW = datetime(2026, 11, 22, 14, 5, 0, tzinfo=timezone.utc)
TOKEN_KEYS = {"status", "access_expires_at", "refresh_expires_at", "hard_expires_at", "last_refreshed_at",
              "last_error"}
ENTITY_KEYS = {"entity", "last_success_at", "last_run_status", "rows", "last_error"}
ERROR_KEYS = {"at", "service", "realm_id", "entity", "message"}
ENTITY_TABLES = tuple(table for spec in ENTITIES.values() if not spec.company
                      for table in (spec.table, *((spec.line.table,) if spec.line else ())))


def _snapshot(db, now=NOW):
    with db.transaction() as conn:
        return status_snapshot(conn, now)


def test_snapshot_has_every_spec_key_in_order_without_token_values(db) -> None:
    with db.transaction() as conn:
        seed_console_state(conn, NOW)
    snap = _snapshot(db)
    assert [r["realm_id"] for r in snap["realms"]] == [HEALTHY_REALM, REAUTH_REALM]  # by company name
    acme = snap["realms"][0]
    assert acme["company_name"] == "Acme Café & Sons" and acme["environment"] == "production"
    assert TOKEN_KEYS <= set(acme["token"])
    assert acme["token"]["status"] == "active"
    assert datetime.fromisoformat(acme["token"]["access_expires_at"]) == NOW + timedelta(minutes=48)
    assert acme["token"]["access_expires_at"].endswith("+00:00")
    assert [e["entity"] for e in acme["entities"]] == list(ENTITY_ORDER)
    for ent in acme["entities"]:
        assert ENTITY_KEYS <= set(ent)
    assert [e["group"] for e in acme["entities"]] == [ENTITIES[name].group for name in ENTITY_ORDER]
    invoice = next(e for e in acme["entities"] if e["entity"] == "Invoice")
    assert invoice["rows"] == 12873 and invoice["last_run_status"] == "success"
    assert invoice["duration_s"] == 7.5  # from the run named by sync_state.last_run_id
    assert datetime.fromisoformat(invoice["next_run_at"]) == NOW + timedelta(minutes=40)
    assert snap["realms"][1]["token"]["status"] == "needs_reauth"
    assert "invalid_grant" in snap["realms"][1]["token"]["last_error"]
    assert [e["service"] for e in snap["recent_errors"]] == ["tokenup", "sync", "webhook"]  # newest first
    for err in snap["recent_errors"]:
        assert ERROR_KEYS <= set(err)
    text = json.dumps(snap)
    assert ACCESS_TOKEN not in text and REFRESH_TOKEN not in text


def test_realm_without_company_row_and_never_synced_entities(db) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, NOW, "4620816365", None, synced_ago=None)
    (realm,) = _snapshot(db)["realms"]
    assert realm["company_name"] is None and realm["realm_id"] == "4620816365"
    assert [(e["entity"], e["rows"], e["last_success_at"], e["last_run_status"]) for e in realm["entities"]] == [
        (name, 0, None, None) for name in ENTITY_ORDER]
    code, reasons = health(_snapshot(db), [], NOW)
    # One line for the realm, not one per entity: 28 warnings would bury everything else.
    assert code == 1 and reasons == [
        "realm 4620816365: 28 entities never synced: CompanyInfo, Customer, Estimate and 25 more"]


def test_group_summaries_count_states_per_group_and_name_the_failed(db) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, NOW, HEALTHY_REALM, "Acme", run_entity="Bill", run_status="failed",
                             run_error="FatalQBOError: validation",
                             entities=tuple(n for n in ENTITY_ORDER if n not in ("TaxRate", "TaxAgency")))
    (realm,) = _snapshot(db)["realms"]
    summaries = {s.group: s for s in group_summaries(realm)}
    assert list(summaries) == list(GROUPS)
    assert sum(len(s.entities) for s in summaries.values()) == len(ENTITY_ORDER)
    purchases = summaries["Purchases"]
    assert purchases.failed == ("Bill",) and purchases.ok == 5 and purchases.worst == "failed"
    assert purchases.parts() == [("failed", "1 failed: Bill"), ("ok", "5 ok")]
    assert purchases.rows == sum(e["rows"] for e in realm["entities"] if e["group"] == "Purchases")
    assert datetime.fromisoformat(purchases.oldest_success_at) == NOW - timedelta(hours=1, minutes=20)
    lists = summaries["Lists"]
    assert lists.never == ("TaxRate", "TaxAgency") and lists.worst == "never" and lists.oldest_success_at is None
    assert lists.parts() == [("never", "2 never synced"), ("ok", "6 ok")]
    sales = summaries["Sales"]
    assert sales.worst == "ok" and sales.parts() == [("ok", "7 ok")]
    assert datetime.fromisoformat(sales.next_run_at) == NOW + timedelta(minutes=40)
    assert [entity_state(e) for e in realm["entities"]].count("ok") == len(ENTITY_ORDER) - 3


def test_recent_errors_are_the_newest_twenty(db) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.errors (at, service, message) SELECT %s - g * interval '1 minute',"
                     " 'sync', 'error ' || g FROM generate_series(1, 30) g", (NOW,))
    errors = _snapshot(db)["recent_errors"]
    assert [e["message"] for e in errors] == [f"error {g}" for g in range(1, 21)]


def _health(db, **kw):
    processes = kw.pop("processes", [])
    with db.transaction() as conn:
        insert_console_realm(conn, NOW, HEALTHY_REALM, "Acme", **kw)
    return health(_snapshot(db), processes, NOW, sync_interval_minutes=60, token_margin_minutes=10)


def test_health_ok_when_tokens_fresh_and_syncs_recent(db) -> None:
    assert _health(db) == (0, [])


def test_health_warns_on_access_token_inside_margin_not_refreshed(db) -> None:
    code, reasons = _health(db, access_left=timedelta(minutes=4), refreshed_ago=timedelta(minutes=56))
    assert code == 1 and "access token expires in" in reasons[0] and "tokenup" in reasons[0]


def test_health_quiet_when_short_token_was_just_refreshed(db) -> None:
    assert _health(db, access_left=timedelta(minutes=4), refreshed_ago=timedelta(seconds=30))[0] == 0


def test_health_warns_on_refresh_idle_expiry_within_30_days(db) -> None:
    code, reasons = _health(db, refresh_left=timedelta(days=29))
    assert code == 1 and "refresh token idle expiry in 29d" in reasons[0]
    assert "qbsync connect --realm-id " + HEALTHY_REALM in reasons[0]


def test_health_warns_on_hard_expiry(db) -> None:
    code, reasons = _health(db, hard_left=timedelta(days=3))
    assert code == 1 and "hard expiry in 3d" in reasons[0]


def test_health_warns_on_stale_sync(db) -> None:
    """CDC entities are stale after 2 intervals; CompanyInfo and the swept ones, read in full once
    a day, only a day later than that."""
    code, reasons = _health(db, synced_ago=timedelta(minutes=121), access_left=timedelta(minutes=50))
    daily = [n for n in ENTITY_ORDER if ENTITIES[n].cadence]
    assert sorted(daily) == ["CompanyInfo", "TaxAgency", "TaxCode", "TaxRate", "TimeActivity"]
    assert code == 1 and reasons == [
        "Acme: 23 entities last synced up to 2h01m ago (stale): Customer, Estimate, Invoice and 20 more"]


def test_health_warns_on_stale_daily_entities_a_day_later(db) -> None:
    code, reasons = _health(db, synced_ago=timedelta(hours=26, minutes=1), access_left=timedelta(minutes=50))
    assert code == 1 and reasons == [
        "Acme: 28 entities last synced up to 1d ago (stale): CompanyInfo, Customer, Estimate and 25 more"]


def test_health_names_a_single_stale_entity(db) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, NOW, HEALTHY_REALM, "Acme", entities=ENTITY_ORDER[:-1])
        conn.execute("INSERT INTO quickbooks.sync_state (realm_id, entity, last_success_at, last_run_status,"
                     " row_count) VALUES (%s, 'TaxAgency', %s, 'success', 1)",
                     (HEALTHY_REALM, NOW - timedelta(hours=27)))
    assert health(_snapshot(db), [], NOW) == (1, ["Acme: TaxAgency last synced 1d ago (stale)"])
    assert not next(e for e in _snapshot(db, NOW - timedelta(hours=2))["realms"][0]["entities"]
                    if e["entity"] == "TaxAgency")["stale"]


def test_health_critical_on_failed_sync(db) -> None:
    code, reasons = _health(db, run_status="failed", run_error="FatalQBOError: validation\nsecond line")
    assert code == 2 and reasons[0].endswith("Invoice sync failed: FatalQBOError: validation")


def test_health_critical_on_needs_reauth_and_fatal_process(db) -> None:
    code, reasons = _health(db, status="needs_reauth")
    assert code == 2 and "qbsync connect --realm-id " + HEALTHY_REALM in reasons[0]


def test_health_process_states(db) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, NOW, HEALTHY_REALM, "Acme")
    snap = _snapshot(db)
    running = [{"name": n, "state": "RUNNING", "uptime_s": 5} for n in ("tokenup", "sync", "webhook")]
    assert health(snap, running, NOW)[0] == 0
    assert health(snap, running[:2] + [{"name": "webhook", "state": "BACKOFF", "uptime_s": 0}], NOW)[0] == 1
    code, reasons = health(snap, running[:2] + [{"name": "webhook", "state": "FATAL", "uptime_s": 0}], NOW)
    assert code == 2 and "webhook is FATAL" in reasons[0]


def test_health_disconnected_realm_is_not_an_alarm(db) -> None:
    assert _health(db, status="disconnected", synced_ago=None)[0] == 0


def test_no_company_is_a_warning() -> None:
    assert health({"realms": [], "recent_errors": []}, [], NOW) == (1, ["no company connected: run qbsync connect"])


def test_read_model_never_touches_entity_tables(db) -> None:
    """Row counts come from sync_state: no plan scans customers/invoices/... (no count(*))."""
    with db.transaction() as conn:
        for name, sql in READ_MODEL_QUERIES.items():
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, {"limit": 20}))
            for table in ENTITY_TABLES:
                assert f" {table} " not in plan and f".{table} " not in plan, (name, plan)


def test_enqueue_sync_request_and_follow_its_status(db) -> None:
    with db.transaction() as conn:
        rid = enqueue_sync_request(conn, HEALTHY_REALM, requested_by="tui")
    with db.transaction() as conn:
        assert sync_request_states(conn, [rid])[rid]["status"] == "queued"
        conn.execute("UPDATE quickbooks.sync_requests SET status = 'failed', error = 'boom' WHERE id = %s", (rid,))
    with db.transaction() as conn:
        state = sync_request_states(conn, [rid])[rid]
        row = conn.execute("SELECT realm_id, requested_by FROM quickbooks.sync_requests WHERE id = %s",
                           (rid,)).fetchone()
    assert state["status"] == "failed" and state["error"] == "boom"
    assert row == (HEALTHY_REALM, "tui")
