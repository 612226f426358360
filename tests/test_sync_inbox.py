"""Webhook inbox application: events become the current QBO state in Postgres, once each."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

from support.realms import CDC_SYNCED, assert_exact, connect_realm, data_calls, ok

from services.intuit.client import parse_qbo_time
from services.sync.apply import process_inbox
from services.sync.engine import sync_realm
from services.webhook.inbox import InboxEvent, store_events


def event(realm: str, entity: str, ident: str, op: str, when: str | None, deleted_id: str | None = None) -> InboxEvent:
    return InboxEvent(format="cloudevents", event_id=str(uuid.uuid4()), realm_id=realm, entity=entity,
                      entity_id=str(ident), operation=op,
                      occurred_at=parse_qbo_time(when) if when else None, deleted_id=deleted_id,
                      payload={"test": True}, raw_time=when)


def store(db, events: list[InboxEvent]) -> None:
    with db.transaction() as conn:
        store_events(conn, events)


def statuses(db, realm: str) -> list[tuple]:
    with db.transaction() as conn:
        return conn.execute("SELECT status, count(*) FROM quickbooks.webhook_inbox WHERE realm_id = %s"
                            " GROUP BY status ORDER BY status", (realm,)).fetchall()


def test_create_update_delete_void_merge_events_are_applied_once(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=20, items=5, invoices=20, estimates=3)
    assert ok(sync_realm(db, settings, realm))
    admin = emulator.admin
    invoices = [i for i in admin.entities(realm, "Invoice") if i.get("PrivateNote") != "Voided"]
    customers = [c for c in admin.entities(realm, "Customer") if c.get("Active")]
    created = admin.mutate(realm, "Invoice", "create")
    updated = admin.mutate(realm, "Customer", "update", id=customers[0]["Id"], fields={"DisplayName": "Ærø Bäckerei"})
    deleted = admin.mutate(realm, "Invoice", "delete", id=invoices[0]["Id"])
    voided = admin.mutate(realm, "Invoice", "void", id=invoices[1]["Id"])
    survivor = admin.mutate(realm, "Customer", "merge", id=customers[1]["Id"], merge_into=customers[2]["Id"])
    t = lambda obj: obj["MetaData"]["LastUpdatedTime"]  # noqa: E731
    events = [
        event(realm, "Invoice", created["Id"], "Create", t(created)),
        event(realm, "Customer", updated["Id"], "Update", t(updated)),
        event(realm, "Customer", updated["Id"], "Update", t(updated)),  # a duplicate delivery
        event(realm, "Invoice", deleted["Id"], "Delete", t(deleted)),
        event(realm, "Invoice", voided["Id"], "Void", t(voided)),
        event(realm, "Customer", survivor["Id"], "Merge", t(survivor), deleted_id=customers[1]["Id"]),
        event(realm, "Budget", "7", "Create", t(created)),  # not synced: ignored
    ]
    store(db, events)
    admin.reset_counts()
    stats = process_inbox(db, settings)
    assert stats.processed == 6 and stats.failed == 0
    assert data_calls(emulator, realm) == {"query": 0, "cdc": 1, "read": 0, "companyinfo": 0}
    assert statuses(db, realm) == [("ignored", 1), ("processed", 6)]
    assert_exact(db, emulator, realm, CDC_SYNCED)  # also checks sync_state.row_count
    with db.transaction() as conn:
        runs = conn.execute("SELECT entity, kind, trigger, status, rows_upserted, rows_deleted, api_calls"
                            " FROM quickbooks.sync_runs WHERE realm_id = %s AND kind = 'webhook' ORDER BY entity",
                            (realm,)).fetchall()
    # the one CDC call also brought what these changes touched (the merged customer's payments...)
    by_entity = {r[0]: r for r in runs}
    assert {"Customer", "Invoice"} <= set(by_entity) and {r[1:4] for r in runs} == {("webhook", "webhook", "success")}
    assert by_entity["Invoice"][4] >= 2 and by_entity["Invoice"][5] == 1 and sum(r[6] for r in runs) == 1
    with db.transaction() as conn:
        assert conn.execute("SELECT merged_into, deleted_at IS NOT NULL FROM quickbooks.customers"
                            " WHERE realm_id = %s AND id = %s", (realm, customers[1]["Id"])).fetchone() == \
            (customers[2]["Id"], True)
        assert conn.execute("SELECT total_amt FROM quickbooks.invoices WHERE id = %s", (voided["Id"],)
                            ).fetchone() == (Decimal("0"),)
    admin.reset_counts()
    assert process_inbox(db, settings).claimed == 0  # processed once
    assert sum(data_calls(emulator, realm).values()) == 0


def test_a_single_delete_is_confirmed_by_read_before_marking(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=10, items=5, invoices=10, estimates=3)
    assert ok(sync_realm(db, settings, realm))
    invoices = emulator.admin.entities(realm, "Invoice")
    gone = emulator.admin.mutate(realm, "Invoice", "delete", id=invoices[0]["Id"])
    # a "Delete" for an invoice that still exists (spurious) must not delete it
    store(db, [event(realm, "Invoice", gone["Id"], "Delete", None)])
    store(db, [event(realm, "Invoice", invoices[1]["Id"], "Delete", None)])
    emulator.admin.reset_counts()
    assert process_inbox(db, settings).processed == 2
    assert data_calls(emulator, realm)["read"] == 2
    with db.transaction() as conn:
        rows = dict(conn.execute("SELECT id, deleted_at IS NOT NULL FROM quickbooks.invoices WHERE id = ANY(%s)",
                                 ([invoices[0]["Id"], invoices[1]["Id"]],)).fetchall())
    assert rows == {invoices[0]["Id"]: True, invoices[1]["Id"]: False}
    # (the deleted invoice's payment, now unapplied, comes with the next CDC: these events carry no time)
    assert_exact(db, emulator, realm, ("Invoice",))


def test_failures_are_retried_with_backoff_and_recorded(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=3, estimates=1)
    store(db, [event(realm, "Customer", "1", "Update", None)])
    emulator.admin.configure(fail_rate_503=1.0)
    try:
        stats = process_inbox(db, settings)
    finally:
        emulator.admin.configure(fail_rate_503=0.0)
    assert stats.retried == 1
    with db.transaction() as conn:
        row = conn.execute("SELECT status, attempts, next_attempt_at > now(), last_error FROM quickbooks.webhook_inbox"
                           " WHERE realm_id = %s", (realm,)).fetchone()
        errors = conn.execute("SELECT count(*) FROM quickbooks.errors WHERE service = 'sync' AND realm_id = %s",
                              (realm,)).fetchone()[0]
        assert row[:3] == ("pending", 1, True)
        assert "ServerError" in row[3] or "503" in row[3]
        assert errors == 1
        conn.execute("UPDATE quickbooks.webhook_inbox SET next_attempt_at = now()")
    assert process_inbox(db, settings).processed == 1  # the retry succeeds
    assert statuses(db, realm) == [("processed", 1)]


def test_events_for_a_realm_without_usable_tokens_fail_with_the_reason(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=3, estimates=1)
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.tokens SET status = 'needs_reauth' WHERE realm_id = %s", (realm,))
    store(db, [event(realm, "Customer", "1", "Update", datetime.now(timezone.utc).isoformat())])
    assert process_inbox(db, settings).failed == 1
    with db.transaction() as conn:
        status, error = conn.execute("SELECT status, last_error FROM quickbooks.webhook_inbox").fetchone()
    assert status == "failed" and realm in error and "reconnect" in error.lower()
    assert sum(data_calls(emulator, realm).values()) == 0
