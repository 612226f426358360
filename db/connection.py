"""Connections: the URL (Neon, any PostgreSQL, or the embedded default) and a pool.

Neon's pooled endpoint is PgBouncer in transaction mode, so qbsync keeps no session state
between transactions: server-side prepared statements are off (`prepare_threshold=None`)
and every lock is transaction-scoped (`pg_advisory_xact_lock`, `FOR UPDATE`). Neon suspends
idle compute and drops connections; the pool checks each connection before handing it out
and `Database.transaction` retries a connection failure that happens before any work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from services.errors import DatabaseUnavailable

__all__ = ["Database", "resolve_database_url", "connect", "open_database"]

log = logging.getLogger("qbsync.db")
CONNECT_TIMEOUT_S = 10


def resolve_database_url(settings, *, announce: bool = True) -> str:  # noqa: ANN001
    """DATABASE_URL, or the embedded server under ./var/pg (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from db.embedded import ensure_embedded

    return ensure_embedded(settings.embedded_pg_dir, announce=announce)


def _kwargs() -> dict:
    return {"prepare_threshold": None, "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "qbsync"}


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """One connection, outside any pool (CLI one-shots, migrations, tests)."""
    try:
        return psycopg.connect(url, autocommit=autocommit, **_kwargs())
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Database:
    """A small connection pool with one way in: `with db.transaction() as conn:`."""

    def __init__(self, url: str, *, max_size: int = 8, name: str = "qbsync",
                 timeout: float = CONNECT_TIMEOUT_S + 5) -> None:
        """`timeout`: the longest `transaction()` waits for a connection before
        DatabaseUnavailable (the webhook receiver keeps it under Intuit's 3 s)."""
        self.url = url
        self._pool = ConnectionPool(
            url, min_size=0, max_size=max_size, kwargs=_kwargs(), open=True, name=name,
            check=ConnectionPool.check_connection, timeout=timeout,
            reconnect_timeout=0,
        )

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection inside a transaction: committed on success, rolled back on error.

        A connection that cannot be had raises DatabaseUnavailable (callers retry later).
        """
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_first_line(exc)}") from None
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"PostgreSQL connection failed: {_first_line(exc)}") from None

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


def open_database(settings, *, announce: bool = True, max_size: int = 8,  # noqa: ANN001
                  timeout: float = CONNECT_TIMEOUT_S + 5) -> Database:
    """The pool for this process: DATABASE_URL or the embedded default."""
    return Database(resolve_database_url(settings, announce=announce), max_size=max_size,
                    timeout=timeout)
