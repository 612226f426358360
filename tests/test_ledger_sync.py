"""The whole ledger (SPEC section 10) synced from the emulator's coherent company, exactly.

A full load, then every kind of change QBO makes to the new entities (update, delete, void,
inactivate, merge) exact after one `sync --once`; a quiet hour costs one call; the entities
outside Intuit's CDC exact after their sweep; a burst over CDC's shared 1,000-object cap across
entities complete; webhooks for the new entities applied through the inbox.
"""

from __future__ import annotations

import uuid

import pytest
from support.realms import CDC_SYNCED, SYNCED, assert_exact, connect_realm, data_calls, ok

from services.core.qbotime import parse_qbo_time
from services.model.entities import ENTITIES
from services.sync.apply import process_inbox
from services.sync.engine import RealmSync, sync_realm
from services.webhook.inbox import InboxEvent, store_events

SIZES = {"customers": 12, "items": 6, "invoices": 30, "estimates": 4, "seed": 1212}
SWEPT = [n for n in SYNCED if ENTITIES[n].swept]


@pytest.fixture
def ledger(db, settings, emulator) -> str:
    """A small complete ledger company, fully loaded once."""
    realm = connect_realm(db, settings, emulator, **SIZES)
    assert ok(sync_realm(db, settings, realm))
    emulator.admin.reset_counts()
    return realm


def live(emulator, realm: str, entity: str, **where: object) -> list[dict]:
    return [o for o in emulator.admin.entities(realm, entity)
            if all(o.get(k) == v for k, v in where.items())]


def runs(db, realm: str) -> dict[str, tuple[str, str]]:
    """The last run per entity: (kind, status)."""
    with db.transaction() as conn:
        return {e: (k, s) for e, k, s in conn.execute(
            "SELECT DISTINCT ON (entity) entity, kind, status FROM quickbooks.sync_runs WHERE realm_id = %s"
            " ORDER BY entity, id DESC", (realm,))}


def test_a_full_load_of_the_ledger_is_exact_with_one_listing_per_entity(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, **SIZES)
    for entity in SYNCED:
        assert emulator.admin.entities(realm, entity), f"the emulator's company has no {entity}"
    outcomes = sync_realm(db, settings, realm)
    assert ok(outcomes) and {o.kind for o in outcomes} == {"full"} and len(outcomes) == len(ENTITIES)
    assert_exact(db, emulator, realm)
    # every listing fits one page: one query per entity, CompanyInfo read once
    assert data_calls(emulator, realm) == {"query": len(SYNCED), "cdc": 0, "read": 0, "companyinfo": 1}
    with db.transaction() as conn:
        linked = conn.execute("SELECT count(*) FROM quickbooks.linked_txns WHERE realm_id = %s", (realm,)).fetchone()
        paid = conn.execute(
            "SELECT count(*) FROM quickbooks.invoices i JOIN quickbooks.linked_txns l ON l.realm_id = i.realm_id"
            " AND l.entity = 'Payment' AND l.linked_txn_type = 'Invoice' AND l.linked_txn_id = i.id"
            " WHERE i.realm_id = %s AND i.balance < i.total_amt", (realm,)).fetchone()
    assert linked[0] > 0 and paid[0] > 0


def test_a_quiet_hour_costs_one_call_for_every_cdc_entity(db, settings, emulator, ledger) -> None:
    outcomes = sync_realm(db, settings, ledger)
    assert ok(outcomes) and sorted(o.entity for o in outcomes) == sorted(CDC_SYNCED)
    assert data_calls(emulator, ledger) == {"query": 0, "cdc": 1, "read": 0, "companyinfo": 0}
    assert emulator.admin.request_counts(ledger)["cdc"] == 1


def test_every_kind_of_change_to_the_new_entities_is_exact_after_one_sync(db, settings, emulator, ledger) -> None:
    admin = emulator.admin

    def first(entity: str, **where: object) -> str:
        return live(emulator, ledger, entity, **where)[0]["Id"]

    for entity in CDC_SYNCED:
        admin.mutate(ledger, entity, "create")
        admin.mutate(ledger, entity, "update", id=first(entity))
    for entity in ("Bill", "JournalEntry", "Purchase", "VendorCredit", "PurchaseOrder", "Deposit", "Transfer",
                   "CreditMemo", "SalesReceipt", "RefundReceipt"):
        admin.mutate(ledger, entity, "delete", id=live(emulator, ledger, entity)[-1]["Id"])
    for entity in ("Payment", "SalesReceipt", "BillPayment", "CreditMemo", "Purchase", "RefundReceipt", "Transfer"):
        admin.mutate(ledger, entity, "void", id=first(entity))
    for entity in ("Vendor", "Employee", "Class", "Department", "Term", "PaymentMethod", "Account"):
        admin.mutate(ledger, entity, "inactivate", id=live(emulator, ledger, entity, Active=True)[-1]["Id"])
    merged = {}
    for entity in ("Vendor", "Account", "Class", "Employee"):
        pair = live(emulator, ledger, entity, Active=True)[:2]
        admin.mutate(ledger, entity, "merge", id=pair[1]["Id"], merge_into=pair[0]["Id"])
        merged[entity] = (pair[1]["Id"], pair[0]["Id"])
    admin.reset_counts()
    outcomes = sync_realm(db, settings, ledger)
    assert ok(outcomes) and {o.kind for o in outcomes} == {"cdc"}
    assert data_calls(emulator, ledger)["cdc"] == 1
    # the swept entities (a merged Employee's TimeActivity re-pointed) wait for their daily sweep
    assert_exact(db, emulator, ledger, entities=CDC_SYNCED)
    with db.transaction() as conn:  # CDC shows a merged-away row as deleted (only a webhook names the survivor)
        for entity, (gone, _into) in merged.items():
            row = conn.execute(f"SELECT deleted_at IS NOT NULL FROM {ENTITIES[entity].qualified_table}"
                               " WHERE realm_id = %s AND id = %s", (ledger, gone)).fetchone()
            assert row == (True,), entity


def test_the_entities_outside_cdc_are_exact_after_their_sweep(db, settings, emulator, ledger) -> None:
    admin = emulator.admin
    activity = live(emulator, ledger, "TimeActivity")
    admin.mutate(ledger, "TimeActivity", "delete", id=activity[0]["Id"])
    admin.mutate(ledger, "TimeActivity", "update", id=activity[1]["Id"])
    admin.mutate(ledger, "TimeActivity", "create")
    admin.mutate(ledger, "TaxRate", "update", id=live(emulator, ledger, "TaxRate")[0]["Id"])
    admin.mutate(ledger, "TaxCode", "inactivate", id=live(emulator, ledger, "TaxCode", Active=True)[-1]["Id"])
    # within the day: CDC only (and it is never asked for these)
    assert ok(sync_realm(db, settings, ledger))
    assert data_calls(emulator, ledger) == {"query": 0, "cdc": 1, "read": 0, "companyinfo": 0}
    with db.transaction() as conn:  # a day passes for the sweep
        conn.execute("UPDATE quickbooks.sync_state SET last_full_sync_at = last_full_sync_at - interval '25 hours'"
                     " WHERE realm_id = %s", (ledger,))
    admin.reset_counts()
    outcomes = sync_realm(db, settings, ledger)
    assert ok(outcomes)
    assert sorted(o.entity for o in outcomes if o.kind == "sweep") == sorted(SWEPT)
    assert data_calls(emulator, ledger) == {"query": len(SWEPT), "cdc": 1, "read": 0, "companyinfo": 0}
    assert_exact(db, emulator, ledger)
    assert runs(db, ledger)["TimeActivity"] == ("sweep", "success")
    with db.transaction() as conn:
        deleted = conn.execute("SELECT deleted_at IS NOT NULL FROM quickbooks.time_activities"
                               " WHERE realm_id = %s AND id = %s", (ledger, activity[0]["Id"])).fetchone()
    assert deleted == (True,)


@pytest.mark.slow
def test_a_burst_over_the_shared_cdc_cap_across_entities_is_complete(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=40, items=10, invoices=500, estimates=10, seed=77)
    assert ok(sync_realm(db, settings, realm))
    admin = emulator.admin
    changed = 0
    for entity, n in (("Invoice", 450), ("Payment", 350), ("Bill", 200), ("Purchase", 100)):
        for obj in live(emulator, realm, entity)[:n]:
            admin.mutate(realm, entity, "update", id=obj["Id"])
            changed += 1
    assert changed > 1000  # one CDC call cannot hold them all
    admin.reset_counts()
    outcomes = sync_realm(db, settings, realm)
    assert ok(outcomes)
    assert_exact(db, emulator, realm)
    assert data_calls(emulator, realm)["cdc"] >= 2


def event(realm: str, entity: str, obj: dict, op: str, deleted_id: str | None = None) -> InboxEvent:
    when = obj["MetaData"]["LastUpdatedTime"]
    return InboxEvent(format="cloudevents", event_id=str(uuid.uuid4()), realm_id=realm, entity=entity,
                      entity_id=str(obj["Id"]), operation=op, occurred_at=parse_qbo_time(when),
                      deleted_id=deleted_id, payload={"test": True}, raw_time=when)


def test_webhooks_for_the_new_entities_go_through_the_inbox(db, settings, emulator, ledger) -> None:
    admin = emulator.admin
    payment = admin.mutate(ledger, "Payment", "create")
    bill = live(emulator, ledger, "Bill")[-1]
    deleted_bill = admin.mutate(ledger, "Bill", "delete", id=bill["Id"])
    voided = admin.mutate(ledger, "BillPayment", "void", id=live(emulator, ledger, "BillPayment")[0]["Id"])
    vendors = live(emulator, ledger, "Vendor", Active=True)
    survivor = admin.mutate(ledger, "Vendor", "merge", id=vendors[1]["Id"], merge_into=vendors[0]["Id"])
    activity = live(emulator, ledger, "TimeActivity")[0]
    gone_activity = admin.mutate(ledger, "TimeActivity", "delete", id=activity["Id"])
    with db.transaction() as conn:
        store_events(conn, [
            event(ledger, "Payment", payment, "Create"),
            event(ledger, "Bill", deleted_bill, "Delete"),
            event(ledger, "BillPayment", voided, "Void"),
            event(ledger, "Vendor", survivor, "Merge", deleted_id=vendors[1]["Id"]),
            event(ledger, "TimeActivity", gone_activity, "Delete"),
        ])
    admin.reset_counts()
    stats = process_inbox(db, settings)
    assert stats.processed == 5 and stats.failed == 0
    calls = data_calls(emulator, ledger)
    assert calls["cdc"] == 1 and calls["read"] == 1  # TimeActivity is outside CDC: read by id
    entities = ("Payment", "Invoice", "Bill", "BillPayment", "Vendor", "TimeActivity")
    assert_exact(db, emulator, ledger, entities=entities)
    with db.transaction() as conn:
        assert conn.execute("SELECT merged_into FROM quickbooks.vendors WHERE realm_id = %s AND id = %s",
                            (ledger, vendors[1]["Id"])).fetchone() == (vendors[0]["Id"],)


def test_a_full_resync_reconciles_every_entity(db, settings, emulator, ledger) -> None:
    """`sync --full` lists every entity again; rows QBO no longer has (no tombstone seen) get deleted_at."""
    with db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.bills (realm_id, id, qbo_updated_at) VALUES (%s, 'ghost', now() -"
                     " interval '40 days')", (ledger,))
    outcomes = RealmSync(db, settings, ledger, trigger="cli").run(full=True)
    assert ok(outcomes) and len(outcomes) == len(ENTITIES) and {o.kind for o in outcomes} == {"full"}
    with db.transaction() as conn:
        ghost = conn.execute("DELETE FROM quickbooks.bills WHERE realm_id = %s AND id = 'ghost'"
                             " RETURNING deleted_at IS NOT NULL", (ledger,)).fetchone()
    assert ghost == (True,)
    assert_exact(db, emulator, ledger)


def test_a_bulk_listing_refreshes_the_planners_statistics(db, settings, emulator, monkeypatch) -> None:
    """A listing that wrote ANALYZE_AFTER_ROWS rows analyzes its tables (reconciliation's joins need
    the statistics before autovacuum comes round); smaller ones leave it to autovacuum."""
    import services.sync.engine as engine

    monkeypatch.setattr(engine, "ANALYZE_AFTER_ROWS", 25)  # the emulator's 30 invoices: over; 12 customers: under
    realm = connect_realm(db, settings, emulator, **SIZES)
    assert ok(sync_realm(db, settings, realm))
    with db.transaction() as conn:
        analyzed = dict(conn.execute(
            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE schemaname = 'quickbooks'"
            " AND relname IN ('invoices', 'invoice_line_items', 'linked_txns', 'customers')").fetchall())
    assert analyzed == {"invoices": True, "invoice_line_items": True, "linked_txns": True, "customers": False}
