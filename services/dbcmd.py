"""`qbsync db upgrade`."""

from __future__ import annotations

import argparse

from db.connection import connect, resolve_database_url
from db.migrate import upgrade
from services.config import Settings

__all__ = ["cmd_db_upgrade"]


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations and say which (or that there were none)."""
    with connect(resolve_database_url(settings)) as conn:
        applied = upgrade(conn)
    if applied:
        print(f"qbsync: schema upgraded: applied {', '.join(applied)}")
    else:
        print("qbsync: schema is up to date")
    return 0


