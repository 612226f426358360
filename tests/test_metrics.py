"""Prometheus metrics (SPEC section 12): `/metrics` on loopback parses with prometheus_client's own
parser and carries every series with the database's values; a scrape reads the database at most
once a minute (fake clock); a database outage serves the last snapshot with database_up 0; no token
value or client secret is ever in the body; off when METRICS_PORT is unset."""

from __future__ import annotations

import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from support import free_port
from support.console import ACCESS_TOKEN, REAUTH_REALM, REFRESH_TOKEN, Supervisord, TcpToUnixProxy, insert_console_realm
from support.realms import create_realm_with_tokens, ok

from db.connection import Database
from db.errorlog import record_error
from services.emulator import EMULATOR_CLIENT_SECRET
from services.intuit.usage import METER
from services.ops.metrics import CACHE_SECONDS, start_metrics
from services.sync.engine import sync_realm
from services.tokens.vault import refresh_realm
from services.webhook.inbox import InboxEvent, store_events

EVERY_SERIES = (
    "token_access_seconds_left", "token_refresh_days_left", "token_needs_reauth", "last_success_timestamp_seconds",
    "cursor_lag_seconds", "inbox_backlog", "inbox_oldest_pending_seconds", "api_calls_month", "api_calls_projected",
    "api_calls_month_total", "api_calls_projected_total", "api_call_limit", "errors", "metrics_database_up",
    "metrics_snapshot_age_seconds")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short path (unix sockets allow ~100 chars) for the supervisord socket; empty: none there."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="qbsm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scrape:
    """One GET /metrics, parsed by prometheus_client's parser."""

    def __init__(self, server) -> None:
        response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        self.text = response.text
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in self.families.values() for s in f.samples}

    def value(self, series: str, /, **labels: str) -> float:
        """The sample of qbsync_<series> with exactly these labels (KeyError when absent)."""
        return self.samples[(f"qbsync_{series}", tuple(sorted(labels.items())))]

    def labelled(self, series: str, label: str, /, **labels: str) -> dict[str, float]:
        """{value of `label`: sample} of the samples of qbsync_<series> that carry `labels`."""
        return {dict(key)[label]: v for (n, key), v in self.samples.items()
                if n == f"qbsync_{series}" and all(dict(key).get(k) == w for k, w in labels.items())}


def metrics_settings(settings, work_dir: Path):
    return replace(settings, metrics_port=0, work_dir=work_dir)


def pending_event(realm: str, entity_id: str) -> InboxEvent:
    when = datetime.now(timezone.utc)
    return InboxEvent(format="cloudevents", event_id=str(uuid.uuid4()), realm_id=realm, entity="Customer",
                      entity_id=entity_id, operation="Update", occurred_at=when, deleted_id=None, payload={},
                      raw_time=when.isoformat())


def test_metrics_carry_every_series_with_the_database_values_and_read_it_once_a_minute(
        db, settings, emulator, short_dir) -> None:
    realm, _ = create_realm_with_tokens(db, settings, emulator, customers=3, items=2, invoices=2, estimates=1)
    assert ok(sync_realm(db, settings, realm))
    refresh_realm(db, settings, realm, force=True, reason="console")  # stores the refresh token's expiry
    assert METER.pending(db) == 0
    now = datetime.now(timezone.utc)
    with db.transaction() as conn:
        insert_console_realm(conn, now, REAUTH_REALM, "Reauth Co", status="needs_reauth", entities=("Invoice",))
        store_events(conn, [pending_event(realm, "1")])
        record_error(conn, "sync", "metrics test: one error", realm_id=realm)
        conn.execute("INSERT INTO quickbooks.errors (at, service, message) VALUES (now() - interval '25 hours',"
                     " 'webhook', 'older than the 24 h window')")
        expires_at, refresh_at = conn.execute(
            "SELECT expires_at, least(refresh_token_expires_at, refresh_token_hard_expires_at)"
            " FROM quickbooks.tokens WHERE realm_id = %s", (realm,)).fetchone()
        states = {e: (s, c) for e, s, c in conn.execute(
            "SELECT entity, last_success_at, cursor FROM quickbooks.sync_state WHERE realm_id = %s", (realm,))}
        received = conn.execute("SELECT received_at FROM quickbooks.webhook_inbox WHERE realm_id = %s",
                                (realm,)).fetchone()[0]
        month_calls = dict(conn.execute(
            "SELECT realm_id, sum(calls)::bigint FROM quickbooks.api_usage"
            " WHERE day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date GROUP BY realm_id").fetchall())
    assert refresh_at is not None and len(states) > 20 and month_calls[realm] > 0

    clock = FakeClock()
    server = start_metrics(db, metrics_settings(settings, short_dir), clock=clock)
    try:
        assert server.db_reads == 0  # nothing is read until the first scrape
        before = datetime.now(timezone.utc)
        first = Scrape(server)
        after = datetime.now(timezone.utc)
        assert server.db_reads == 1
        assert {f"qbsync_{name}" for name in EVERY_SERIES} <= set(first.families)
        assert {"qbsync_process_up", "qbsync_process_uptime_seconds"} <= set(first.families)  # no supervisord here
        assert first.labelled("process_up", "name") == {}

        def left(moment: datetime, scrape_time: datetime) -> float:
            return (moment - scrape_time).total_seconds()

        # the database's now() lies between `before` and `after`
        access = first.value("token_access_seconds_left", realm_id=realm)
        assert left(expires_at, after) - 0.01 <= access <= left(expires_at, before) + 0.01
        days = first.value("token_refresh_days_left", realm_id=realm)
        assert left(refresh_at, after) / 86400 - 1e-6 <= days <= left(refresh_at, before) / 86400 + 1e-6
        assert first.value("token_needs_reauth", realm_id=realm) == 0
        assert first.value("token_needs_reauth", realm_id=REAUTH_REALM) == 1

        assert first.labelled("last_success_timestamp_seconds", "entity", realm_id=realm) == pytest.approx(
            {e: s.timestamp() for e, (s, _c) in states.items()})
        lags = first.labelled("cursor_lag_seconds", "entity", realm_id=realm)
        assert set(lags) == set(states)
        for entity, (_s, cursor) in states.items():
            # one `now` for every series: lag + seconds left is exactly expires_at - cursor
            assert lags[entity] + access == pytest.approx((expires_at - cursor).total_seconds(), abs=1e-3)
            assert -left(cursor, before) - 0.01 <= lags[entity] <= -left(cursor, after) + 0.01

        assert first.value("inbox_backlog", realm_id=realm) == 1
        assert first.value("inbox_backlog", realm_id=REAUTH_REALM) == 0
        entity, cursor = next(iter(lags)), states[next(iter(lags))][1]
        # now - received_at, with the same now: lag - (received_at - cursor)
        assert first.value("inbox_oldest_pending_seconds", realm_id=realm) == pytest.approx(
            lags[entity] - (received - cursor).total_seconds(), abs=1e-3)

        assert first.labelled("api_calls_month", "realm_id") == {r: float(c) for r, c in month_calls.items()}
        projected = first.labelled("api_calls_projected", "realm_id")
        assert set(projected) == set(month_calls) and projected[realm] >= month_calls[realm]
        assert first.value("api_calls_month_total") == sum(month_calls.values())
        assert first.value("api_calls_projected_total") == sum(projected.values())
        assert first.value("api_call_limit") == settings.monthly_call_limit

        assert first.labelled("errors", "service") == {"tokenup": 0, "sync": 1, "webhook": 0}
        assert first.value("metrics_database_up") == 1 and first.value("metrics_snapshot_age_seconds") == 0

        with emulator.state.lock:
            issued = [*emulator.state.access_tokens, *emulator.state.refresh_tokens]
        secrets = [*issued, EMULATOR_CLIENT_SECRET, ACCESS_TOKEN, REFRESH_TOKEN]
        assert len(issued) >= 2
        assert [s[:6] + "..." for s in secrets if s in first.text] == []

        # within the minute: the cached snapshot, its times moved on by the clock, no database read
        with db.transaction() as conn:
            store_events(conn, [pending_event(realm, "2")])
        clock.now += 30
        second = Scrape(server)
        assert server.db_reads == 1
        assert second.value("inbox_backlog", realm_id=realm) == 1
        assert second.value("metrics_snapshot_age_seconds") == 30
        assert second.value("token_access_seconds_left", realm_id=realm) == pytest.approx(access - 30, abs=1e-3)
        assert second.value("cursor_lag_seconds", realm_id=realm, entity=entity) == pytest.approx(
            lags[entity] + 30, abs=1e-3)
        clock.now += CACHE_SECONDS - 30 - 0.5
        assert Scrape(server).value("inbox_backlog", realm_id=realm) == 1 and server.db_reads == 1

        # past the minute: one new read
        clock.now += 1.5
        third = Scrape(server)
        assert server.db_reads == 2
        assert third.value("inbox_backlog", realm_id=realm) == 2
        assert third.value("metrics_snapshot_age_seconds") == 0
        Scrape(server)
        assert server.db_reads == 2
    finally:
        server.close()


def test_metrics_are_off_when_metrics_port_is_unset(db, settings) -> None:
    assert settings.metrics_port is None  # the suite's environment has no METRICS_PORT
    assert start_metrics(db, settings) is None


def test_the_endpoint_listens_on_loopback_only_and_serves_only_metrics(db, settings, short_dir) -> None:
    server = start_metrics(db, metrics_settings(settings, short_dir), clock=FakeClock())
    try:
        assert server.port > 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
        # a wildcard (0.0.0.0) listener would accept this too; one bound to 127.0.0.1 refuses it
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", server.port), timeout=5).close()
        other = requests.get(f"http://127.0.0.1:{server.port}/", timeout=10)
        assert other.status_code == 404
        assert server.db_reads == 0  # a wrong path reads nothing
    finally:
        server.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)


def test_a_database_outage_serves_the_last_snapshot_with_database_up_0(db, database_url, settings,
                                                                        short_dir) -> None:
    with db.transaction() as conn:
        insert_console_realm(conn, datetime.now(timezone.utc), REAUTH_REALM, "Reauth Co", status="needs_reauth",
                             entities=("Invoice",))
        store_events(conn, [pending_event(REAUTH_REALM, "7")])
    proxy = TcpToUnixProxy(database_url)
    proxy.start()
    through = Database(proxy.url + "?connect_timeout=2", max_size=1)
    clock = FakeClock()
    server = start_metrics(through, metrics_settings(settings, short_dir), clock=clock)
    try:
        up = Scrape(server)
        assert up.value("metrics_database_up") == 1 and up.value("inbox_backlog", realm_id=REAUTH_REALM) == 1
        proxy.stop()
        clock.now += CACHE_SECONDS + 1
        down = Scrape(server)
        assert server.db_reads == 2
        assert down.value("metrics_database_up") == 0
        assert down.value("inbox_backlog", realm_id=REAUTH_REALM) == 1  # the last snapshot
        assert down.value("metrics_snapshot_age_seconds") == CACHE_SECONDS + 1
        assert "Traceback" not in down.text
        clock.now += 10
        assert Scrape(server).value("metrics_database_up") == 0 and server.db_reads == 2  # no retry per scrape
        proxy.start()
        clock.now += CACHE_SECONDS
        back = Scrape(server)
        assert server.db_reads == 3 and back.value("metrics_database_up") == 1
        assert back.value("metrics_snapshot_age_seconds") == 0
    finally:
        server.close()
        through.close()
        proxy.stop()


def test_a_database_never_reached_serves_database_up_0_and_no_snapshot(settings, short_dir) -> None:
    nowhere = Database(f"postgresql://qbsync:pw-secret-123@127.0.0.1:{free_port()}/qbsync?connect_timeout=2",
                       max_size=1)
    server = start_metrics(nowhere, metrics_settings(settings, short_dir), clock=FakeClock())
    try:
        scrape = Scrape(server)
        assert scrape.value("metrics_database_up") == 0 and server.db_reads == 1
        assert "qbsync_metrics_snapshot_age_seconds" not in scrape.families
        assert "pw-secret-123" not in scrape.text
    finally:
        server.close()
        nowhere.close()


@pytest.mark.slow
def test_process_series_come_from_supervisord(db, settings, short_dir) -> None:
    sup = Supervisord(short_dir)
    try:
        sup.wait_states({"tokenup": "RUNNING", "sync": "RUNNING", "webhook": "FATAL"})
        clock = FakeClock()
        server = start_metrics(db, metrics_settings(settings, short_dir), clock=clock)
        try:
            first = Scrape(server)
            assert first.labelled("process_up", "state") == {"RUNNING": 1, "FATAL": 0}
            assert first.labelled("process_up", "name") == {"tokenup": 1, "sync": 1, "webhook": 0}
            uptime = first.labelled("process_uptime_seconds", "name")
            assert uptime["webhook"] == 0 and uptime["tokenup"] >= 0
            clock.now += 20  # cached: supervisord is not asked again, uptime moves on with the clock
            second = Scrape(server)
            assert second.value("process_uptime_seconds", name="tokenup") == uptime["tokenup"] + 20
            assert server.db_reads == 1
        finally:
            server.close()
    finally:
        sup.stop()
