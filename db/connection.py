"""Connections: the URL (Neon, any PostgreSQL, or the embedded default) and a pool.

Neon's pooled endpoint is PgBouncer in transaction mode, so qbsync keeps no session state
between transactions: server-side prepared statements are off (`prepare_threshold=None`)
and every lock is transaction-scoped (`pg_advisory_xact_lock`, `FOR UPDATE`). Neon suspends
idle compute and drops every connection; `Database.transaction` checks each pooled connection
with a round trip before handing it out and discards a dead one at once (no back-off between
them), so the first transaction after a suspend or a server restart gets a fresh connection
instead of waiting out the pool's back-off and failing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from services.core.config import Settings
from services.core.errors import DatabaseUnavailable, describe

__all__ = ["Database", "resolve_database_url", "connect", "open_database", "one", "scalar"]

log = logging.getLogger("qbsync.db")
CONNECT_TIMEOUT_S = 10
WAIT_SLICE_S = 0.25  # how often a caller waiting for a connection looks whether connecting failed


def resolve_database_url(settings: Settings, *, announce: bool = True) -> str:
    """DATABASE_URL, or the embedded server under ./var/pg (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from db.embedded import ensure_embedded

    return ensure_embedded(settings.embedded_pg_dir, announce=announce)


def _kwargs(application_name: str = "qbsync") -> dict:
    # TCP keepalives: a peer that vanished without closing (a network path gone) is noticed
    # within ~1 min on an idle connection instead of the kernel's 2 h (ignored on unix sockets).
    return {"prepare_threshold": None, "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": application_name, "keepalives": 1, "keepalives_idle": 30,
            "keepalives_interval": 10, "keepalives_count": 3}


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """One connection, outside any pool (CLI one-shots, migrations, tests)."""
    try:
        return psycopg.connect(url, autocommit=autocommit, **_kwargs())
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {describe(exc, name=False)}") from None


def one(conn: psycopg.Connection, query: str, params: Any = None) -> tuple[Any, ...]:
    """The one row a statement always returns (an aggregate, `RETURNING`, `SELECT now()`)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LookupError(f"no row from: {query.split()[0]} ...")
    return row


def scalar(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    """The first column of the one row a statement always returns."""
    return one(conn, query, params)[0]


class _DriverLogLines(logging.Filter):
    """psycopg's and psycopg_pool's own log records as one line each (libpq's messages carry a
    second, tab-indented hint line, which would break the one-record-per-line worker logs), and
    without psycopg_pool's warning per dead connection handed back: after a Neon suspend that is
    one line per pooled connection for an expected event; `Database` logs its own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("discarding closed connection"):
            return False
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        if "\n" in text:
            record.msg, record.args = " ".join(text.split()), None
        return True


for _name in ("psycopg", "psycopg.pool"):
    logging.getLogger(_name).addFilter(_DriverLogLines())


def _check(conn: psycopg.Connection) -> None:
    """One round trip outside any transaction; raises psycopg.Error if the connection is dead."""
    ConnectionPool.check_connection(conn)


class Database:
    """A small connection pool with one way in: `with db.transaction() as conn:`."""

    def __init__(self, url: str, *, max_size: int = 8, name: str = "qbsync",
                 timeout: float = CONNECT_TIMEOUT_S + 5, min_size: int = 0,
                 application_name: str = "qbsync") -> None:
        """`timeout`: the longest `transaction()` waits for a connection before
        DatabaseUnavailable (the webhook receiver keeps it under Intuit's 3 s).
        `min_size`: connections kept open even when idle (0: opened on demand).
        `application_name`: what pg_stat_activity shows ("qbsync-sync" for the sync worker...)."""
        self.url = url
        self._max_size = max_size
        self._timeout = timeout
        self._last_connect_error: str | None = None
        self._last_connect_failure = float("-inf")  # time.monotonic() of the last failed attempt
        self._pool = ConnectionPool(
            url, min_size=min_size, max_size=max_size, kwargs=_kwargs(application_name), open=True, name=name,
            timeout=timeout, reconnect_timeout=0, connection_class=self._connection_class(),
        )

    def _connection_class(self) -> type[psycopg.Connection]:
        """psycopg.Connection that remembers why the last connection attempt failed, so a pool
        timeout says *why* (refused, TLS required, bad password) instead of only "timed out"."""
        database = self

        class _Connection(psycopg.Connection):
            @classmethod
            def connect(cls, *args: object, **kwargs: object) -> psycopg.Connection:  # type: ignore[override]
                try:
                    conn = super().connect(*args, **kwargs)  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    database._last_connect_error = describe(exc, name=False)
                    database._last_connect_failure = time.monotonic()
                    raise
                database._last_connect_error = None
                return conn

        return _Connection

    def _getconn(self) -> psycopg.Connection:
        """A pooled connection within `timeout`; DatabaseUnavailable as soon as an attempt to
        open one fails while waiting (the pool makes one attempt, so waiting longer would only
        delay the error: an outage is reported in one connect time, not after `timeout`)."""
        started = time.monotonic()
        deadline = started + self._timeout
        while True:
            try:
                return self._pool.getconn(timeout=max(0.01, min(WAIT_SLICE_S, deadline - time.monotonic())))
            except PoolTimeout:
                if self._last_connect_failure >= started and self._last_connect_error:
                    raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {self._last_connect_error}") from None
                if time.monotonic() >= deadline:
                    raise

    def _live_connection(self) -> psycopg.Connection:
        """A pooled connection that has just answered a round trip.

        Dead connections (Neon suspended the compute, the server restarted, an administrator
        terminated the backend) are handed back at once, one after the other, so after every
        pooled connection died together the caller still gets a fresh one in one connect time.
        """
        dropped = 0
        for _ in range(self._max_size + 1):
            conn = self._getconn()
            try:
                _check(conn)
            except psycopg.Error:
                dropped += 1
                self._pool.putconn(conn)  # broken: the pool closes it and replaces it
                continue
            if dropped:
                log.info("PostgreSQL had closed %d idle connection(s) (server restart or Neon suspend);"
                         " reconnected", dropped)
            return conn
        raise DatabaseUnavailable(f"PostgreSQL closed {dropped} connections in a row")

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection inside a transaction: committed on success, rolled back on error.

        The connection has just answered a round trip (a connection PostgreSQL dropped while it
        was idle is replaced, invisibly to the caller). A connection that cannot be had, or one
        that fails during the block, raises DatabaseUnavailable with the reason on one line
        (callers retry later; the block's work was rolled back).
        """
        try:
            conn = self._live_connection()
        except PoolTimeout as exc:
            reason = self._last_connect_error or describe(exc, name=False)
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {reason}") from None
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {describe(exc, name=False)}") from None
        try:
            with conn:  # commit on success, rollback on error; a pooled connection stays open
                yield conn
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"PostgreSQL connection failed: {describe(exc, name=False)}") from None
        finally:
            self._pool.putconn(conn)

    def wait_until_available(self, timeout_s: float) -> bool:
        """Poll until a trivial query works or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.transaction() as conn:
                    conn.execute("SELECT 1")
                return True
            except DatabaseUnavailable:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.5)

    def close(self) -> None:
        self._pool.close()


def open_database(settings: Settings, *, announce: bool = True, max_size: int = 8,
                  timeout: float = CONNECT_TIMEOUT_S + 5, service: str | None = None) -> Database:
    """The pool for this process: DATABASE_URL or the embedded default. `service` names the
    process in pg_stat_activity (application_name qbsync-<service>)."""
    return Database(resolve_database_url(settings, announce=announce), max_size=max_size,
                    timeout=timeout, application_name=f"qbsync-{service}" if service else "qbsync")
