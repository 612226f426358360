"""80x24 snapshots of the console (pytest-textual-snapshot) with frozen time and seeded data.

Regenerate after an intended visual change: `.venv/bin/python -m pytest tests/test_tui_snapshots.py
--snapshot-update`, then look at the SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import time_machine
from support.console import HEALTHY_REALM, console_settings, insert_console_realm, pilot_wait_for, seed_console_state

from db.connection import Database
from tui.app import QBSyncApp

FROZEN = datetime(2026, 11, 22, 14, 5, 0, tzinfo=timezone.utc)
SIZE = (80, 24)
FAILING_REALM = "9130357000000003"


async def _first_poll(app: QBSyncApp, pilot: Any) -> None:
    await pilot_wait_for(pilot, lambda: app.polls >= 1, "the first poll", 15)
    await pilot.pause()


def _app(db: Database, database_url: str, tmp_path: Any, *, failing: bool = False) -> QBSyncApp:
    """The seeded console: the month's metered calls at 21 % of the limit (projected), the first
    company worked by a sync process that took its lease over from a dead one 30 minutes ago;
    with `failing`, a third company (listed last) whose Bill sync failed, and the calls past 80 %."""
    with db.transaction() as conn:
        seed_console_state(conn, FROZEN)
        conn.execute("INSERT INTO quickbooks.realm_leases (realm_id, holder, work, acquired_at, renewed_at,"
                     " expires_at) VALUES (%s, 'vps1:4242/w1', 'schedule', %s, %s, %s)",
                     (HEALTHY_REALM, FROZEN - timedelta(minutes=30), FROZEN - timedelta(seconds=10),
                      FROZEN + timedelta(seconds=110)))
        conn.execute("INSERT INTO quickbooks.lease_takeovers (at, realm_id, from_holder, to_holder, expired_at)"
                     " VALUES (%s, %s, 'vps2:977/w3', 'vps1:4242/w1', %s)",
                     (FROZEN - timedelta(minutes=30), HEALTHY_REALM, FROZEN - timedelta(minutes=31)))
        calls = [(date(2026, 11, 3), 60_000), (date(2026, 11, 20), 12_000), (date(2026, 11, 22), 3_400)]
        if failing:
            insert_console_realm(conn, FROZEN, FAILING_REALM, "Zed Failing Ltd", run_entity="Bill",
                                 run_status="failed", run_error="FatalQBOError: 6240 Duplicate Document Number")
            calls = [(day, n * 9 // 2) for day, n in calls]
        for day, n in calls:
            conn.execute("INSERT INTO quickbooks.api_usage (realm_id, day, kind, service, calls)"
                         " VALUES (%s, %s, 'cdc', 'sync', %s)", (HEALTHY_REALM, day, n))
    return QBSyncApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock",
                     poll_interval_s=3600)


def test_snapshot_overview(snap_compare, db, database_url, tmp_path) -> None:
    app = _app(db, database_url, tmp_path)

    async def ready(pilot: Any) -> None:
        await _first_poll(app, pilot)

    with time_machine.travel(FROZEN, tick=False):
        assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_needs_reauth_selected(snap_compare, db, database_url, tmp_path) -> None:
    app = _app(db, database_url, tmp_path)

    async def ready(pilot: Any) -> None:
        await _first_poll(app, pilot)
        await pilot.press("down")
        await pilot.pause()

    with time_machine.travel(FROZEN, tick=False):
        assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_failed_entity_on_the_overview(snap_compare, db, database_url, tmp_path) -> None:
    app = _app(db, database_url, tmp_path, failing=True)

    async def ready(pilot: Any) -> None:
        await _first_poll(app, pilot)
        await pilot.press("down", "down")
        await pilot_wait_for(pilot, lambda: app.selected_realm == FAILING_REALM, "the failing company")
        await pilot.pause()

    with time_machine.travel(FROZEN, tick=False):
        assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_entity_details(snap_compare, db, database_url, tmp_path) -> None:
    """`d` on the failing company: every entity, opened at the failed one's group, its error below."""
    app = _app(db, database_url, tmp_path, failing=True)

    async def ready(pilot: Any) -> None:
        await _first_poll(app, pilot)
        await pilot.press("down", "down")
        await pilot_wait_for(pilot, lambda: app.selected_realm == FAILING_REALM, "the failing company")
        await pilot.press("d")
        await pilot_wait_for(pilot, lambda: app.screen.query("#entity-detail")
                             and "FatalQBOError" in str(app.screen.query_one("#entity-detail").content),
                             "the detail open on Bill")
        await pilot.pause()

    with time_machine.travel(FROZEN, tick=False):
        assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_error_details(snap_compare, db, database_url, tmp_path) -> None:
    app = _app(db, database_url, tmp_path)

    async def ready(pilot: Any) -> None:
        await _first_poll(app, pilot)
        app.query_one("#errors").focus()
        await pilot.press("down", "e")
        await pilot.pause()

    with time_machine.travel(FROZEN, tick=False):
        assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_database_unreachable(snap_compare, tmp_path) -> None:
    down = Database("postgresql://postgres@127.0.0.1:9/qbsync", max_size=1)
    settings = console_settings("postgresql://postgres@127.0.0.1:9/qbsync", tmp_path)
    app = QBSyncApp(down, settings, supervisor_socket=tmp_path / "none.sock", poll_interval_s=3600)

    async def ready(pilot: Any) -> None:
        await _first_poll(app, pilot)

    try:
        with time_machine.travel(FROZEN, tick=False):
            assert snap_compare(app, terminal_size=SIZE, run_before=ready)
    finally:
        down.close()
