"""Prometheus metrics (SPEC section 12): `GET /metrics` on 127.0.0.1:METRICS_PORT, off when unset.

Served by one process per install, tokenup (it runs once per install, unlike `sync`, which may
run as several processes): `start_metrics` starts the listener in a daemon thread of the calling
process. The body is the Prometheus text exposition written by `prometheus_client`, from a
custom collector on a registry of its own (not the process-wide default registry).

Caching: a scrape reads the database at most once every CACHE_SECONDS (6 minutes: longer than
Neon's 5 idle minutes, so a scraper every minute still lets the compute suspend between reads).
Every read is ONE
short read-only transaction (a statement timeout, nothing held open between reads); supervisord's
process states are read on the same refresh, never per scrape. Between reads a scrape serves the
cached snapshot; values that are "now minus a time" (seconds left, lag, age, uptime) are worked
out at scrape time from the snapshot's times, so they keep moving without touching the database.
When the database cannot be read the last snapshot is served with `qbsync_metrics_database_up 0`
(and the read is tried again only after another CACHE_SECONDS), never a traceback.

Series (gauges; names prefixed `qbsync_`, per realm labelled `realm_id`):
    token_access_seconds_left, token_refresh_days_left, token_needs_reauth          per realm
    last_success_timestamp_seconds, cursor_lag_seconds                              per realm, entity
    inbox_backlog, inbox_oldest_pending_seconds                                     per realm
    api_calls_month, api_calls_projected                                            per realm
    api_calls_month_total, api_calls_projected_total, api_call_limit                whole app
    errors{service}                                  rows in quickbooks.errors in the last 24 h
    process_up{name,state}, process_uptime_seconds{name}                            from supervisord
    metrics_database_up, metrics_snapshot_age_seconds                               this endpoint
No token value is ever selected: only token status and expiry times are read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from db.connection import Database, scalar
from db.usage import UsageReport, usage_report
from services.core.config import Settings
from services.core.errors import DatabaseUnavailable, describe
from services.ops.supervisor_rpc import PROGRAMS, process_states

__all__ = ["CACHE_SECONDS", "HOST", "MetricsServer", "MetricsSource", "start_metrics"]

log = logging.getLogger("qbsync.metrics")

CACHE_SECONDS = 360.0  # SPEC section 12: at most once a minute; section 13: quiet means quiet
HOST = "127.0.0.1"  # loopback only: the endpoint has no authentication
ERROR_WINDOW = timedelta(hours=24)
STATEMENT_TIMEOUT_MS = 5000  # a slow database fails the read (last snapshot served), not the scrape

# Everything one refresh reads, in one read-only transaction. Token values are never selected.
_TOKENS = """
    SELECT realm_id, status, expires_at, least(refresh_token_expires_at, refresh_token_hard_expires_at)
      FROM quickbooks.tokens
     WHERE status <> 'disconnected'
     ORDER BY realm_id"""
_ENTITIES = """
    SELECT realm_id, entity, last_success_at, cursor
      FROM quickbooks.sync_state
     ORDER BY realm_id, entity"""
_INBOX = """
    SELECT realm_id, count(*), min(received_at)
      FROM quickbooks.webhook_inbox
     WHERE status = 'pending'
     GROUP BY realm_id"""
_ERRORS = """
    SELECT service, count(*)
      FROM quickbooks.errors
     WHERE at > now() - %s
     GROUP BY service"""


@dataclass(frozen=True)
class _DatabaseSnapshot:
    """What one successful read found; `now` is the database's time of the read."""

    now: datetime
    read_at: float                                             # the clock's time of the read
    tokens: list[tuple[str, str, datetime | None, datetime | None]]
    entities: list[tuple[str, str, datetime | None, datetime | None]]
    inbox: dict[str, tuple[int, datetime]]
    usage: UsageReport
    errors: dict[str, int]


@dataclass
class _State:
    database: _DatabaseSnapshot | None = None
    database_up: bool = False
    processes: list[dict[str, Any]] = field(default_factory=list)
    processes_read_at: float = 0.0
    attempted_at: float | None = None                          # the clock's time of the last read attempt


class MetricsSource(Collector):
    """The collector: yields metric families from a snapshot re-read when older than `cache_seconds`.

    Thread-safe: concurrent scrapes share one refresh. `db_reads` counts read attempts.
    """

    def __init__(self, db: Database, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
                 cache_seconds: float = CACHE_SECONDS) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._state = _State()
        self.db_reads = 0

    def collect(self) -> Iterator[Metric]:
        """The families of the current snapshot (refreshed first if it is due)."""
        with self._lock:
            now = self._clock()
            if self._state.attempted_at is None or now - self._state.attempted_at >= self._cache_seconds:
                self._refresh(now)
            state = self._state
        yield from _families(state, now)

    def _refresh(self, now: float) -> None:
        self._state.attempted_at = now
        self._state.processes = process_states(self._settings.supervisor_socket)
        self._state.processes_read_at = now
        self.db_reads += 1
        try:
            self._state.database = self._read(now)
            self._state.database_up = True
        except (DatabaseUnavailable, psycopg.Error) as exc:
            self._state.database_up = False
            log.warning("metrics: cannot read the database, serving the last snapshot: %s",
                        describe(exc, name=False))

    def _read(self, read_at: float) -> _DatabaseSnapshot:
        with self._db.transaction() as conn:
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            db_now: datetime = scalar(conn, "SELECT now()")
            tokens = conn.execute(_TOKENS).fetchall()
            entities = conn.execute(_ENTITIES).fetchall()
            inbox = {r[0]: (int(r[1]), r[2]) for r in conn.execute(_INBOX)}
            errors = {r[0]: int(r[1]) for r in conn.execute(_ERRORS, (ERROR_WINDOW,))}
            usage = usage_report(conn, limit=self._settings.monthly_call_limit,
                                 reserve_percent=self._settings.call_reserve_percent, now=db_now)
        return _DatabaseSnapshot(now=db_now, read_at=read_at, tokens=tokens, entities=entities, inbox=inbox,
                                 usage=usage, errors=errors)


def _gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"qbsync_{name}", documentation, labels=labels)


def _families(state: _State, clock_now: float) -> Iterator[Metric]:
    up = _gauge("metrics_database_up", "1 when the last database read worked, 0 when it failed")
    up.add_metric([], 1.0 if state.database_up else 0.0)
    yield up
    yield from _process_families(state.processes, clock_now - state.processes_read_at)
    snap = state.database
    if snap is None:
        return
    elapsed = max(0.0, clock_now - snap.read_at)
    now = snap.now + timedelta(seconds=elapsed)  # the database's time, moved on by the clock

    age = _gauge("metrics_snapshot_age_seconds", "seconds since the database was last read")
    age.add_metric([], elapsed)
    yield age

    access = _gauge("token_access_seconds_left", "seconds until the access token expires", ["realm_id"])
    refresh = _gauge("token_refresh_days_left",
                     "days until the refresh token expires (idle expiry or 5-year cap, the earlier)", ["realm_id"])
    reauth = _gauge("token_needs_reauth", "1 when the company must reconnect (qbsync connect)", ["realm_id"])
    for realm_id, status, access_at, refresh_at in snap.tokens:
        if access_at is not None:
            access.add_metric([realm_id], (access_at - now).total_seconds())
        if refresh_at is not None:
            refresh.add_metric([realm_id], (refresh_at - now).total_seconds() / 86400)
        reauth.add_metric([realm_id], 1.0 if status == "needs_reauth" else 0.0)
    yield from (access, refresh, reauth)

    success = _gauge("last_success_timestamp_seconds", "unix time of the last successful sync",
                     ["realm_id", "entity"])
    lag = _gauge("cursor_lag_seconds", "seconds between now and the sync/CDC cursor", ["realm_id", "entity"])
    for realm_id, entity, last_success, cursor in snap.entities:
        if last_success is not None:
            success.add_metric([realm_id, entity], last_success.timestamp())
        if cursor is not None:
            lag.add_metric([realm_id, entity], (now - cursor).total_seconds())
    yield from (success, lag)

    backlog = _gauge("inbox_backlog", "pending webhook events in the inbox", ["realm_id"])
    oldest = _gauge("inbox_oldest_pending_seconds", "age of the oldest pending webhook event", ["realm_id"])
    for realm_id in sorted({t[0] for t in snap.tokens} | set(snap.inbox)):
        pending, received = snap.inbox.get(realm_id, (0, None))
        backlog.add_metric([realm_id], float(pending))
        if received is not None:
            oldest.add_metric([realm_id], (now - received).total_seconds())
    yield from (backlog, oldest)

    usage = snap.usage
    month = _gauge("api_calls_month", "Intuit metered calls this UTC month", ["realm_id"])
    projected = _gauge("api_calls_projected", "metered calls projected for the month end", ["realm_id"])
    for realm in usage.realms:
        month.add_metric([realm.realm_id], float(realm.calls))
        projected.add_metric([realm.realm_id], float(realm.projected))
    yield from (month, projected)
    for name, documentation, value in (
            ("api_calls_month_total", "metered calls this UTC month, every realm", usage.calls),
            ("api_calls_projected_total", "metered calls projected for the month end, every realm", usage.projected),
            ("api_call_limit", "the app's monthly metered-call limit (QBO_MONTHLY_CALL_LIMIT)", usage.limit)):
        gauge = _gauge(name, documentation)
        gauge.add_metric([], float(value))
        yield gauge

    errors = _gauge("errors", "errors recorded in quickbooks.errors in the last 24 h", ["service"])
    for service in sorted(set(PROGRAMS) | set(snap.errors)):
        errors.add_metric([service], float(snap.errors.get(service, 0)))
    yield errors


def _process_families(processes: list[dict[str, Any]], elapsed: float) -> Iterator[Metric]:
    up = _gauge("process_up", "1 when supervisord reports the program RUNNING (state: its state name)",
                ["name", "state"])
    uptime = _gauge("process_uptime_seconds", "seconds since a RUNNING program started (0 otherwise)", ["name"])
    for proc in processes:
        running = proc["state"] == "RUNNING"
        up.add_metric([proc["name"], proc["state"]], 1.0 if running else 0.0)
        uptime.add_metric([proc["name"]], float(proc["uptime_s"]) + max(0.0, elapsed) if running else 0.0)
    yield from (up, uptime)


class MetricsServer:
    """A running endpoint: `port` (bound), `db_reads` (database read attempts), `close()`."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread, source: MetricsSource) -> None:
        self._httpd = httpd
        self._thread = thread
        self._source = source
        self.host, self.port = HOST, int(httpd.server_address[1])

    @property
    def db_reads(self) -> int:
        return self._source.db_reads

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=10)
        self._httpd.server_close()


def _handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class _MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._send(404, b"not found: the metrics are at /metrics\n", "text/plain; charset=utf-8")
                return
            self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            log.debug("metrics: %s - %s", self.address_string(), format % args)

    return _MetricsHandler


def start_metrics(db: Database, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
                  cache_seconds: float = CACHE_SECONDS) -> MetricsServer | None:
    """Serve `GET /metrics` on 127.0.0.1:METRICS_PORT in a daemon thread; None when METRICS_PORT is
    unset. Port 0 binds a free port (`.port` says which). Raises OSError when the port is taken.
    Nothing is read until the first scrape."""
    if settings.metrics_port is None:
        return None
    source = MetricsSource(db, settings, clock=clock, cache_seconds=cache_seconds)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(source)
    httpd = ThreadingHTTPServer((HOST, settings.metrics_port), _handler(registry))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="qbsync-metrics", daemon=True)
    thread.start()
    server = MetricsServer(httpd, thread, source)
    log.info("metrics: serving %s", server.url)
    return server
