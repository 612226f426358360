"""Versioned SQL migrations (db/migrations/NNNN_name.sql), applied in order.

Idempotent and safe to run concurrently: everything happens in one transaction that first
takes a transaction-scoped advisory lock (works behind PgBouncer), so a second runner waits
and then finds nothing left to apply.
"""

from __future__ import annotations

from importlib import resources

import psycopg

from db.connection import scalar

__all__ = ["upgrade", "available_migrations", "applied_migrations"]

_LOCK_KEY = 0x71B5_0001  # arbitrary, constant: "qbsync migrations"


def available_migrations() -> list[tuple[str, str]]:
    """(version, sql) for every file in db/migrations, sorted by version."""
    folder = resources.files("db") / "migrations"
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(out)


def applied_migrations(conn: psycopg.Connection) -> set[str]:
    exists = scalar(conn, "SELECT to_regclass('quickbooks.schema_migrations')")
    if exists is None:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM quickbooks.schema_migrations")}


def upgrade(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations; return the versions applied by this call."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS quickbooks")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS quickbooks.schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = applied_migrations(conn)
        for version, sql in available_migrations():
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO quickbooks.schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
    return applied_now
