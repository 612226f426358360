"""`qbsync db upgrade`."""

from __future__ import annotations

import argparse

import psycopg

from db.connection import connect, resolve_database_url
from db.migrate import upgrade
from services.core.config import Settings
from services.core.errors import DatabaseUnavailable, describe

__all__ = ["cmd_db_upgrade"]


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations and say which (or that there were none).

    All pending migrations apply in one transaction: a database that goes away midway leaves
    the schema as it was, reported in one line (exit 1)."""
    try:
        with connect(resolve_database_url(settings)) as conn:
            applied = upgrade(conn)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"schema upgrade interrupted, nothing applied: {describe(exc, name=False)}") from None
    if applied:
        print(f"qbsync: schema upgraded: applied {', '.join(applied)}")
    else:
        print("qbsync: schema is up to date")
    return 0
