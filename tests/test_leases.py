"""The pieces behind many sync processes and quiet workers (SPEC sections 12, 13), on a real
PostgreSQL: realm leases (take, share, give back, expire, take over, lose), wake-up datagrams
that wait for their transaction, and the governor of Intuit's metered calls."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import date, timedelta

from support import wait_for
from support.realms import connect_realm, data_calls

from services.core.worker import Stop
from services.intuit.client import parse_qbo_time
from services.sync.leases import Leases, acquire_lease
from services.sync.wake import WakeListener, pending_xids, register_worker, wake_workers
from services.sync.worker import SyncWorker, sync_once
from services.webhook.inbox import InboxEvent, store_events

REALM = "9130000000000555"
LEASE = timedelta(seconds=30)


def _lease(db, realm: str = REALM) -> tuple | None:
    with db.transaction() as conn:
        return conn.execute("SELECT holder, work, expires_at > now() FROM quickbooks.realm_leases WHERE realm_id = %s",
                            (realm,)).fetchone()


def test_a_lease_is_one_holders_until_it_expires_then_taken_over_and_recorded(db) -> None:
    with db.transaction() as conn:
        assert acquire_lease(conn, REALM, "a:1", "schedule", LEASE)
        assert not acquire_lease(conn, REALM, "b:2", "schedule", LEASE)  # current: refused
        assert acquire_lease(conn, REALM, "a:1", "inbox", LEASE)          # its holder renews it
        conn.execute("INSERT INTO quickbooks.api_requests (realm_id, started_at, lease_until)"
                     " VALUES (%s, now() - interval '10 seconds', now() + interval '3 minutes')", (REALM,))
        conn.execute("UPDATE quickbooks.realm_leases SET expires_at = now() - interval '1 second'")
    with db.transaction() as conn:
        assert acquire_lease(conn, REALM, "b:2", "schedule", LEASE)       # expired: taken over
        takeovers = conn.execute("SELECT realm_id, from_holder, to_holder FROM quickbooks.lease_takeovers").fetchall()
        in_flight = conn.execute("SELECT count(*) FROM quickbooks.api_requests WHERE finished_at IS NULL").fetchone()
    assert takeovers == [(REALM, "a:1", "b:2")]
    assert in_flight == (0,)  # the dead holder's request slot no longer fills the realm's concurrency
    assert _lease(db) == ("b:2", "schedule", True)


def test_jobs_of_one_process_share_a_lease_the_last_gives_it_back_and_a_stale_job_takes_nothing(db) -> None:
    leases = Leases(db, "host:100", lease_seconds=30)
    try:
        first = leases.take(REALM, "schedule")
        second = leases.take(REALM, "inbox")
        assert first is second is not None
        assert _lease(db)[0] == "host:100"
        assert Leases(db, "other:200", lease_seconds=30).take(REALM, "schedule") is None
        leases.give_back(first, "schedule")
        assert _lease(db) is not None  # the inbox job still works the realm
        leases.give_back(second, "inbox")
        assert _lease(db) is None
        # work another process already did: the due check fails in the take's transaction, no row stays
        assert leases.take(REALM, "schedule", lambda conn, realm: False) is None
        assert _lease(db) is None and leases.held() == []
    finally:
        leases.close()


def test_a_lease_lost_to_a_takeover_stops_its_work_at_the_next_renewal(db) -> None:
    leases = Leases(db, "stalled:1", lease_seconds=30)
    stop = Stop()
    try:
        holding = leases.take(REALM, "schedule")
        realm_stop = leases.stop_for(holding, stop)
        assert leases.renew() == [] and not realm_stop.requested
        with db.transaction() as conn:  # it stalled past its lease; another process took the realm
            conn.execute("UPDATE quickbooks.realm_leases SET expires_at = now() - interval '1 second'")
            assert acquire_lease(conn, REALM, "healthy:2", "schedule", LEASE)
        assert leases.renew() == [REALM]
        assert realm_stop.requested and not stop.requested
        leases.give_back(holding, "schedule")
        assert _lease(db)[0] == "healthy:2"  # giving back a lost lease leaves the new holder's row alone
    finally:
        leases.close()


def test_a_wake_up_names_its_transaction_which_stays_pending_until_commit(db) -> None:
    listener = WakeListener().start()
    got: list[str] = []
    arrived = threading.Event()
    listener.on_wake(lambda xid: (got.append(xid), arrived.set()))
    try:
        with db.transaction() as conn:
            register_worker(conn, "w:1", *listener.address)
        with db.transaction() as conn:
            conn.execute("SELECT 1")
            assert wake_workers(conn) == 1
            assert arrived.wait(5)
            with db.transaction() as other:
                assert pending_xids(other, got) == got  # not committed yet: the worker must look again
        with db.transaction() as conn:
            assert pending_xids(conn, got) == []
        assert got[0].isdigit()
    finally:
        listener.close()


def _govern(db, settings, calls: int) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.api_usage (realm_id, day, kind, service, calls) VALUES"
                     " ('9130000000000999', %s, 'query', 'sync', %s)", (date.today(), calls))


def test_the_governor_stretches_the_schedule_to_a_day(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=3, items=2, invoices=2, estimates=1)
    sync_once(db, settings, realm_id=realm)
    with db.transaction() as conn:  # its hourly run fell due two hours ago
        conn.execute("UPDATE quickbooks.sync_state SET next_run_at = now() - interval '2 hours'")
    settings = replace(settings, monthly_call_limit=1000, call_reserve_percent=5.0)
    worker = SyncWorker(db, settings, Stop())
    try:
        assert worker._look().schedule == [realm]
        _govern(db, settings, 960)  # 40 of 1,000 left: under 5 %
        worker._governor_read_at = float("-inf")
        assert worker._look().schedule == []  # due again only a day after its last run
        assert worker._governed
        with db.transaction() as conn:
            conn.execute("UPDATE quickbooks.sync_state SET next_run_at = now() - interval '23 hours 1 minute'")
        assert worker._look().schedule == [realm]
    finally:
        worker.leases.close()
        worker.listener.close()


def test_the_governor_applies_a_single_webhook_through_cdc(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=3, items=2, invoices=2, estimates=1)
    sync_once(db, settings, realm_id=realm)
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.sync_state SET next_run_at = now() + interval '1 hour'")
        conn.execute("INSERT INTO quickbooks.reconciliations (run_id, realm_id, \"check\", subject, status)"
                     " VALUES (1, %s, 'count', 'Invoice', 'ok')", (realm,))
    settings = replace(settings, monthly_call_limit=1000, call_reserve_percent=5.0)
    _govern(db, settings, 990)
    stop = Stop()
    worker = SyncWorker(db, settings, stop)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker._governed, 10, "the governor")
        emulator.admin.reset_counts()
        customer = emulator.admin.entities(realm, "Customer")[0]
        served = emulator.admin.mutate(realm, "Customer", "update", id=customer["Id"])
        when = served["MetaData"]["LastUpdatedTime"]
        with db.transaction() as conn:
            store_events(conn, [InboxEvent("cloudevents", str(uuid.uuid4()), realm, "Customer", served["Id"],
                                           "Update", parse_qbo_time(when), None, {}, when)])

        def applied() -> bool:
            with db.transaction() as conn:
                return conn.execute("SELECT sync_token FROM quickbooks.customers WHERE realm_id = %s AND id = %s",
                                    (realm, served["Id"])).fetchone() == (served["SyncToken"],)
        wait_for(applied, 15, "the webhook applied")
        calls = data_calls(emulator, realm)
        assert calls["cdc"] == 1 and calls["read"] == 0, calls  # ungoverned, one id is one read
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_ungoverned_a_single_webhook_is_one_read(db, settings, emulator) -> None:
    from services.sync.apply import process_inbox

    realm = connect_realm(db, settings, emulator, customers=3, items=2, invoices=2, estimates=1)
    sync_once(db, settings, realm_id=realm)
    emulator.admin.reset_counts()
    served = emulator.admin.mutate(realm, "Customer", "update", id=emulator.admin.entities(realm, "Customer")[0]["Id"])
    when = served["MetaData"]["LastUpdatedTime"]
    with db.transaction() as conn:
        store_events(conn, [InboxEvent("classic", str(uuid.uuid4()), realm, "Customer", served["Id"], "Update",
                                       parse_qbo_time(when), None, {}, when)])
    assert process_inbox(db, settings, realms=["9130000000000000"]).claimed == 0  # another realm's only
    assert process_inbox(db, settings, realms=[realm]).processed == 1
    calls = data_calls(emulator, realm)
    assert calls["read"] == 1 and calls["cdc"] == 0, calls
