"""The one errors table every service writes and the console reads."""

from __future__ import annotations

import logging

import psycopg

from db.connection import Database
from services.core.logs import redact

__all__ = ["record_error"]

log = logging.getLogger("qbsync.errors")


def record_error(conn: psycopg.Connection, service: str, message: str, *, realm_id: str | None = None,
                 entity: str | None = None, code: str | None = None, intuit_tid: str | None = None) -> None:
    """Insert one redacted error row in the caller's transaction."""
    conn.execute(
        "INSERT INTO quickbooks.errors (service, realm_id, entity, code, intuit_tid, message)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (service, realm_id, entity, code, intuit_tid, redact(message)[:4000]),
    )


def record_error_safely(db: Database, service: str, message: str, **kw: str | None) -> None:
    """Record an error in its own transaction; if the database is down, log it instead."""
    from services.core.errors import DatabaseUnavailable

    try:
        with db.transaction() as conn:
            record_error(conn, service, message, **kw)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        log.warning("could not record error (%s): %s", type(exc).__name__, redact(message))
