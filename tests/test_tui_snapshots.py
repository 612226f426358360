"""80x24 snapshots of the console (pytest-textual-snapshot) with frozen time and seeded data.

Regenerate after an intended visual change: `.venv/bin/python -m pytest tests/test_tui_snapshots.py
--snapshot-update`, then look at the SVGs under tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import time_machine
from support.console import console_settings, insert_console_realm, pilot_wait_for, seed_console_state

from db.connection import Database
from tui.app import QBSyncApp

FROZEN = datetime(2026, 11, 22, 14, 5, 0, tzinfo=timezone.utc)
SIZE = (80, 24)
FAILING_REALM = "9130357000000003"


async def _first_poll(app: QBSyncApp, pilot: Any) -> None:
    await pilot_wait_for(pilot, lambda: app.polls >= 1, "the first poll", 15)
    await pilot.pause()


def _app(db: Database, database_url: str, tmp_path: Any, *, failing: bool = False) -> QBSyncApp:
    """The seeded console; with `failing`, a third company (listed last) whose Bill sync failed."""
    with db.transaction() as conn:
        seed_console_state(conn, FROZEN)
        if failing:
            insert_console_realm(conn, FROZEN, FAILING_REALM, "Zed Failing Ltd", run_entity="Bill",
                                 run_status="failed", run_error="FatalQBOError: 6240 Duplicate Document Number")
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
