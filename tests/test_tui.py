"""The Textual console driven by Pilot at 80x24 on a real database (and the real emulator,
supervisord and log files where a key acts on them)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.console import (
    ACCESS_TOKEN,
    HEALTHY_REALM,
    REAUTH_REALM,
    REFRESH_TOKEN,
    Supervisord,
    TcpToUnixProxy,
    console_settings,
    insert_console_realm,
    pilot_wait_for,
    screen_text,
    seed_console_state,
)

from db.connection import Database
from db.readmodel import ENTITY_ORDER, GROUPS, health
from tui.app import LOG_SOURCES, ActionDone, EntitiesScreen, ErrorDetailScreen, LogLines, PollResult, QBSyncApp

SIZE = (80, 24)
FAILING_REALM = "9130357000000003"


def sync_test(fn: Callable[..., Any]) -> Callable[..., None]:
    """Run an async Pilot scenario with asyncio.run (fixtures resolve through functools.wraps)."""
    import functools

    @functools.wraps(fn)
    def runner(*args: Any, **kw: Any) -> None:
        asyncio.run(fn(*args, **kw))

    return runner


class RecordingApp(QBSyncApp):
    """The console, remembering every notification it showed."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.notes: list[tuple[str, str]] = []

    def notify(self, message: str, **kw: Any) -> None:  # type: ignore[override]
        self.notes.append((str(message), str(kw.get("severity", "information"))))
        super().notify(message, **kw)


def cell(app: QBSyncApp, table: str, row: str, column: str) -> str:
    """A cell of the overview (the app's main screen, whatever screen is on top)."""
    return str(app.query_one(f"#{table}").get_cell(row, column))


def detail_cell(app: QBSyncApp, entity: str, column: str) -> str:
    """A cell of the entity detail, which must be the screen on top."""
    assert isinstance(app.screen, EntitiesScreen)
    return str(app.screen.query_one("#entities").get_cell(entity, column))


def line_with(app: QBSyncApp, fragment: str) -> str:
    """The one terminal line showing `fragment` (AssertionError if none does)."""
    lines = [line for line in screen_text(app) if fragment in line]
    assert lines, "\n".join(screen_text(app))
    return lines[0]


def text_of(app: QBSyncApp, selector: str) -> str:
    return str(app.query_one(selector).content)


def noted(app: RecordingApp, fragment: str) -> bool:
    return any(fragment in message for message, _ in app.notes)


@pytest.fixture
def seeded(db: Database) -> datetime:
    now = datetime.now(timezone.utc)
    with db.transaction() as conn:
        seed_console_state(conn, now)
    return now


@pytest.fixture
def with_failure(db: Database, seeded: datetime) -> datetime:
    """The seeded companies plus a third one whose Bill sync failed."""
    with db.transaction() as conn:
        insert_console_realm(conn, seeded, FAILING_REALM, "Zed Failing Ltd", run_entity="Bill", run_status="failed",
                             run_error="FatalQBOError: 6240 Duplicate Document Number Error\nsecond line")
    return seeded


@sync_test
async def test_console_shows_companies_tokens_entities_errors(db, database_url, seeded, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await pilot.pause()
        assert cell(app, "realms", HEALTHY_REALM, "company") == "Acme Café & Sons"
        # Untrusted text is shown literally, never parsed as markup.
        assert cell(app, "realms", REAUTH_REALM, "company") == "O'Brien [bold]Plumbing[/]"
        assert cell(app, "realms", HEALTHY_REALM, "token") == "active"
        assert cell(app, "realms", REAUTH_REALM, "token") == "NEEDS REAUTH"
        assert cell(app, "realms", HEALTHY_REALM, "access")[:2] in ("47", "48")  # mm:ss countdown
        assert cell(app, "realms", HEALTHY_REALM, "refresh") == "in 98d"
        assert cell(app, "realms", REAUTH_REALM, "refresh") == "in 19d"
        assert cell(app, "groups", "Sales", "state") == "7 ok"
        assert cell(app, "groups", "Sales", "rows") == "26,390"  # its seven entities' rows
        assert cell(app, "groups", "Sales", "success") == "20m ago"
        assert cell(app, "groups", "Sales", "next") in ("in 39m", "in 40m")
        assert cell(app, "groups", "Lists", "state") == "8 ok"
        assert "CRITICAL" in text_of(app, "#topbar")
        assert "supervisord not reachable" in text_of(app, "#procs")
        errors = app.query_one("#errors")
        assert errors.row_count == 3
        assert [str(errors.get_row_at(i)[1]) for i in range(3)] == ["tokenup", "sync", "webhook"]
        assert str(errors.get_row_at(1)[2]) == "Acme Café…"  # company name, not the long realm id
        screen_text = app.export_screenshot()
        assert ACCESS_TOKEN not in screen_text and REFRESH_TOKEN not in screen_text


@sync_test
async def test_needs_reauth_is_red_with_the_fix_command(db, database_url, seeded, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await pilot.press("down")
        await pilot_wait_for(pilot, lambda: app.selected_realm == REAUTH_REALM, "selection")
        detail = app.query_one("#detail").content
        assert f"NEEDS REAUTH: run qbsync connect --realm-id {REAUTH_REALM}" in str(detail)
        assert any("red" in str(span.style) for span in detail.spans)
        assert str(app.query_one("#realms").get_cell(REAUTH_REALM, "token").style) == "bold white on red"
        assert cell(app, "groups", "Sales", "success") == "5h00m ago"
        assert cell(app, "groups", "Sales", "state") == "7 stale"
        await pilot.press("r")  # cannot act: says why, calls nothing
        await pilot_wait_for(pilot, lambda: noted(app, f"run qbsync connect --realm-id {REAUTH_REALM}"), "r refusal")


@sync_test
async def test_e_opens_the_full_error_message(db, database_url, seeded, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        app.query_one("#errors").focus()
        await pilot.press("down")  # the second error: the long, markup-looking one
        await pilot.press("e")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, ErrorDetailScreen), "error modal")
        message = str(app.screen.query_one("#error-message").content)
        assert message.startswith("Throttled: 429 Too Many Requests [red]not markup[/red] detail")
        assert message.endswith("END-OF-MESSAGE")
        await pilot.press("escape")
        await pilot_wait_for(pilot, lambda: not isinstance(app.screen, ErrorDetailScreen), "modal closed")


@sync_test
async def test_s_queues_a_sync_request_and_follows_it(db, database_url, seeded, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock",
                       poll_interval_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await pilot.press("s")
        await pilot_wait_for(pilot, lambda: noted(app, "queued"), "queued notification")
        with db.transaction() as conn:
            rows = conn.execute("SELECT id, realm_id, requested_by, status FROM quickbooks.sync_requests").fetchall()
        assert len(rows) == 1 and rows[0][1:] == (HEALTHY_REALM, "tui", "queued")
        request_id = rows[0][0]
        # What the sync worker does with a request: running, then done. The console follows it.
        with db.transaction() as conn:
            conn.execute("UPDATE quickbooks.sync_requests SET status = 'running', started_at = now()"
                         " WHERE id = %s", (request_id,))
        await pilot_wait_for(pilot, lambda: noted(app, f"sync #{request_id} of Acme Café & Sons started"), "start")
        assert f"#{request_id} running" in text_of(app, "#detail")
        with db.transaction() as conn:
            conn.execute("UPDATE quickbooks.sync_requests SET status = 'done', finished_at = now()"
                         " WHERE id = %s", (request_id,))
        await pilot_wait_for(pilot, lambda: noted(app, f"sync #{request_id} of Acme Café & Sons finished"), "finish")
        assert not app.requests


@sync_test
async def test_r_refreshes_the_token_once_at_the_emulator(db, settings, emulator, tmp_path) -> None:
    from services.tokens.vault import add_tokens

    realm = emulator.admin.create_realm(company_name="Console Refresh Co", customers=3, items=2, invoices=2,
                                        estimates=1, seed=7)
    grant = emulator.admin.issue_tokens(realm)
    add_tokens(db, settings, realm, grant["refresh_token"], access_token=grant["access_token"],
               expires_in=int(grant["expires_in"]))
    with db.transaction() as conn:
        before = conn.execute("SELECT last_refreshed_at FROM quickbooks.tokens WHERE realm_id = %s",
                              (realm,)).fetchone()[0]
    emulator.admin.reset_counts()
    app = RecordingApp(db, replace(settings, work_dir=tmp_path), supervisor_socket=tmp_path / "none.sock",
                       poll_interval_s=0.3)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        assert app.selected_realm == realm
        await pilot.press("r")
        await pilot_wait_for(pilot, lambda: noted(app, "token refreshed for Console Refresh Co"), "refresh done", 30)
        await pilot_wait_for(pilot, lambda: app.snapshot["realms"][0]["token"]["last_refreshed_at"] is not None,
                       "refreshed time polled")
    assert emulator.admin.request_counts(realm)["token:refresh_token"] == 1
    with db.transaction() as conn:
        after = conn.execute("SELECT last_refreshed_at FROM quickbooks.tokens WHERE realm_id = %s",
                             (realm,)).fetchone()[0]
    assert after is not None and after != before


@sync_test
async def test_the_books_line_shows_a_drift_and_c_repairs_it(db, settings, emulator, tmp_path) -> None:
    """A vanished invoice: the last reconciliation's drift is on the detail line; `c` reconciles
    with --repair's rules (the invoice re-listed and marked deleted) and the line turns green."""
    from services.reconcile.checks import reconcile_realm
    from services.sync.engine import sync_realm
    from services.tokens.vault import add_tokens

    realm = emulator.admin.create_realm(company_name="Books Co", customers=4, items=2, invoices=6, estimates=1, seed=9)
    grant = emulator.admin.issue_tokens(realm)
    add_tokens(db, settings, realm, grant["refresh_token"], access_token=grant["access_token"],
               expires_in=int(grant["expires_in"]))
    sync_realm(db, settings, realm)
    emulator.admin.vanish(realm, "Invoice", emulator.admin.entities(realm, "Invoice")[0]["Id"])
    assert reconcile_realm(db, settings, realm).status == "drift"
    app = RecordingApp(db, replace(settings, work_dir=tmp_path), supervisor_socket=tmp_path / "none.sock",
                       poll_interval_s=0.3)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        detail = lambda: str(app.query_one("#detail").render())  # noqa: E731
        assert "books DRIFT: QuickBooks has 5 Invoice rows, the copy 6" in detail() and "c to repair" in detail()
        await pilot.press("c")
        await pilot_wait_for(pilot, lambda: noted(app, "Books Co: books ok (0 differences, re-listed Invoice)"),
                             "repair done", 60)
        await pilot_wait_for(pilot, lambda: "books match QuickBooks" in detail(), "green books line")


@sync_test
async def test_keys_that_cannot_act_say_why(db, database_url, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        assert "no company connected" in text_of(app, "#detail")
        for key, why in (("p", "cannot restart sync: supervisord not reachable"),
                         ("r", "cannot refresh the token: no company selected"),
                         ("s", "cannot queue a sync: no company selected"),
                         ("e", "no errors recorded")):
            await pilot.press(key)
            await pilot_wait_for(pilot, lambda why=why: noted(app, why), f"{key} refusal")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM quickbooks.sync_requests").fetchone()[0] == 0


@sync_test
async def test_database_outage_shows_banner_and_recovers(db, database_url, seeded, tmp_path) -> None:
    proxy = TcpToUnixProxy(database_url)
    proxy.start()
    via_proxy = Database(proxy.url, max_size=2)
    try:
        app = RecordingApp(via_proxy, console_settings(database_url, tmp_path),
                           supervisor_socket=tmp_path / "none.sock", poll_interval_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await pilot_wait_for(pilot, lambda: app.polls >= 1 and app.snapshot is not None, "first poll")
            banner = app.query_one("#banner")
            assert not banner.has_class("down") and not banner.display
            proxy.stop()
            await pilot_wait_for(pilot, lambda: app.db_error is not None, "outage noticed")
            await pilot_wait_for(pilot, lambda: banner.has_class("down") and banner.display, "the outage banner")
            assert banner.has_class("down") and banner.display
            assert "DATABASE UNREACHABLE" in str(banner.content)
            assert cell(app, "realms", HEALTHY_REALM, "company") == "Acme Café & Sons"  # last good data stays
            await pilot.press("s")
            await pilot_wait_for(pilot, lambda: noted(app, "cannot queue a sync: database unreachable"), "s refusal")
            polls = app.polls
            proxy.start()  # same port
            await pilot_wait_for(pilot, lambda: app.db_error is None and app.polls > polls, "recovery")
            await pilot_wait_for(pilot, lambda: not banner.has_class("down") and not banner.display, "banner gone")
            assert not banner.has_class("down")
            assert "CRITICAL" in text_of(app, "#topbar")
    finally:
        proxy.stop()
        via_proxy.close()


@sync_test
async def test_log_pane_tails_by_offset_and_l_switches_source(db, database_url, tmp_path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "sync.out.log").write_bytes(b"2026-11-22 14:05 +00:00 INFO sync: first line\n")
    (logs / "sync.err.log").write_bytes(b"2026-11-22 14:05 +00:00 WARNING sync: bad byte \xff here\n")
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")

    def log_text() -> str:
        return "\n".join(strip.text for strip in app.query_one("#log").lines)

    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: "first line" in log_text(), "sync.out.log in the pane")
        with (logs / "sync.out.log").open("ab") as fh:
            fh.write("second line with [bold]markup[/bold] and Café\n".encode())
        await pilot_wait_for(pilot, lambda: "second line" in log_text(), "appended line")
        assert "[bold]markup[/bold]" in log_text() and log_text().count("first line") == 1
        await pilot.press("l")
        assert "log: sync.err.log" in text_of(app, "#loglabel")
        await pilot_wait_for(pilot, lambda: "bad byte \ufffd here" in log_text(), "sync.err.log in the pane")
        assert "first line" not in log_text()
        await pilot.press("l")
        assert "log: tokenup.out.log" in text_of(app, "#loglabel")
        assert "p: restart tokenup" in text_of(app, "#loglabel")


@sync_test
async def test_p_restarts_the_selected_program_through_supervisord(db, database_url) -> None:
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="qbtu", dir="/tmp"))
    sup = Supervisord(work)
    try:
        sup.wait_states({"tokenup": "RUNNING", "sync": "RUNNING", "webhook": "FATAL"})
        pid_before = sup.pid_of("sync")
        app = RecordingApp(db, console_settings(database_url, work), poll_interval_s=0.3)
        assert app.supervisor_socket == sup.socket  # settings.supervisor_socket = ./var/supervisor.sock
        async with app.run_test(size=SIZE) as pilot:
            await pilot_wait_for(pilot, lambda: app.polls >= 1 and app.processes, "processes")
            procs = text_of(app, "#procs")
            assert "tokenup RUNNING" in procs and "sync RUNNING" in procs and "webhook FATAL" in procs
            await pilot.press("p")  # the log source is sync: restart sync
            await pilot_wait_for(pilot, lambda: noted(app, "sync restarted: RUNNING"), "restart", 30)
        assert sup.pid_of("sync") != pid_before
    finally:
        sup.stop()
        shutil.rmtree(work, ignore_errors=True)


@sync_test
async def test_countdown_ticks_between_polls(db, database_url, tmp_path) -> None:
    start = datetime(2026, 11, 22, 14, 0, 0, tzinfo=timezone.utc)
    with db.transaction() as conn:
        insert_console_realm(conn, start, HEALTHY_REALM, "Acme", access_left=timedelta(minutes=10, seconds=30))
    clock = {"now": start}
    app = RecordingApp(db, console_settings(database_url, tmp_path), clock=lambda: clock["now"],
                       supervisor_socket=tmp_path / "none.sock", poll_interval_s=600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        assert cell(app, "realms", HEALTHY_REALM, "access") == "10:30"
        assert str(app.query_one("#realms").get_cell(HEALTHY_REALM, "access").style) == "green"
        clock["now"] = start + timedelta(seconds=45)
        await pilot_wait_for(pilot, lambda: cell(app, "realms", HEALTHY_REALM, "access") == "09:45", "tick")
        assert str(app.query_one("#realms").get_cell(HEALTHY_REALM, "access").style) == "yellow"  # in margin
        clock["now"] = start + timedelta(minutes=11)
        await pilot_wait_for(pilot, lambda: cell(app, "realms", HEALTHY_REALM, "access") == "expired", "expiry")
        assert app.polls == 1  # the countdown moved without polling the database


@sync_test
async def test_s_request_is_consumed_by_the_sync_worker(db, settings, emulator, tmp_path) -> None:
    from services.core.worker import Stop
    from services.sync.worker import SyncWorker
    from services.tokens.vault import add_tokens

    realm = emulator.admin.create_realm(company_name="Queued Sync Ltd", customers=7, items=3, invoices=4,
                                        estimates=2, seed=5)
    grant = emulator.admin.issue_tokens(realm)
    add_tokens(db, settings, realm, grant["refresh_token"], access_token=grant["access_token"],
               expires_in=int(grant["expires_in"]))
    app = RecordingApp(db, replace(settings, work_dir=tmp_path), supervisor_socket=tmp_path / "none.sock",
                       poll_interval_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        assert cell(app, "groups", "Sales", "success") == "never"
        assert cell(app, "groups", "Sales", "state") == "7 never synced"
        await pilot.press("d")  # the detail follows the polls while it is open
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, EntitiesScreen), "the entity detail")
        assert detail_cell(app, "Customer", "success") == "never"
        await pilot.press("s")  # acts on the company of the detail
        await pilot_wait_for(pilot, lambda: noted(app, "queued"), "queued notification")
        stop = Stop()  # the sync worker, woken by the request
        worker = threading.Thread(target=SyncWorker(db, settings, stop).run, daemon=True)
        worker.start()
        try:
            await pilot_wait_for(pilot, lambda: noted(app, "of Queued Sync Ltd finished"), "finish notification", 30)
        finally:
            stop.set()
            await asyncio.to_thread(worker.join, 30)
        assert not worker.is_alive()
        await pilot_wait_for(pilot, lambda: detail_cell(app, "Customer", "rows") == "7", "synced rows shown")
        assert detail_cell(app, "Invoice", "rows") == "4"
        assert detail_cell(app, "Customer", "status") == "success"
        assert detail_cell(app, "Customer", "success").endswith("s ago")
        await pilot.press("escape")
        await pilot_wait_for(pilot, lambda: not isinstance(app.screen, EntitiesScreen), "back to the overview")
        assert cell(app, "groups", "Sales", "state") == "7 ok"
    with db.transaction() as conn:
        assert conn.execute("SELECT status, requested_by FROM quickbooks.sync_requests").fetchall() == [
            ("done", "tui")]


@sync_test
async def test_overview_shows_every_group_and_a_failed_entity_at_80x24_without_scrolling(
        db, database_url, with_failure, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await pilot.press("down", "down")
        await pilot_wait_for(pilot, lambda: app.selected_realm == FAILING_REALM, "the failing company selected")
        await pilot.pause()
        groups = app.query_one("#groups")
        assert [key.value for key in groups.rows] == list(GROUPS)
        assert groups.max_scroll_y == 0 and app.screen.max_scroll_y == 0  # nothing hidden below a scroll
        lines = screen_text(app)
        assert len(lines) == SIZE[1]
        for group in GROUPS:  # every group's row is on the terminal, under the realms
            assert any(line.split()[:1] == [group] for line in lines), "\n".join(lines)
        # The failure is on the overview, named, without opening anything.
        assert "1 failed: Bill · 5 ok" in line_with(app, "Purchases")
        assert "bold red" in str(groups.get_cell("Purchases", "state").spans[0].style)
        assert cell(app, "groups", "Purchases", "success") == "1h20m ago"
        assert "7 ok" in line_with(app, "Sales")
        assert "d Entities" in lines[-1] and "q Quit" in lines[-1]  # the footer is on screen


@sync_test
async def test_d_lists_every_entity_and_scrolling_reaches_the_last(db, database_url, with_failure, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await pilot.press("d")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, EntitiesScreen), "the entity detail")
        await pilot.pause()
        table = app.screen.query_one("#entities")
        assert [key.value for key in table.rows] == list(ENTITY_ORDER)
        assert "Acme Café & Sons · 28 entities: 28 ok" in line_with(app, "28 entities")
        assert detail_cell(app, "Invoice", "rows") == "12,873"
        assert detail_cell(app, "Invoice", "success") == "20m ago"
        assert detail_cell(app, "Invoice", "status") == "success"
        assert detail_cell(app, "Invoice", "took") == "7.5s"
        assert detail_cell(app, "Invoice", "next") in ("in 39m", "in 40m")
        assert not any("TaxAgency" in line for line in screen_text(app))  # 28 rows do not fit in 24 lines
        footer = screen_text(app)[-1]
        assert "esc Back" in footer and "q Quit" in footer
        assert "l Log" not in footer and "p Restart" not in footer and "e Error" not in footer  # not here
        await pilot.press("pagedown", "pagedown")
        await pilot_wait_for(pilot, lambda: table.cursor_row == len(ENTITY_ORDER) - 1, "the cursor on the last row")
        await pilot.pause()
        assert line_with(app, "TaxAgency").split()[:3] == ["TaxAgency", "20m", "ago"]
        assert "TaxAgency: outside Intuit's CDC" in line_with(app, "TaxAgency:")
        await pilot.press("l")  # hidden here: does nothing
        assert "log: sync.out.log" in text_of(app, "#loglabel")
        await pilot.press("escape")
        await pilot_wait_for(pilot, lambda: not isinstance(app.screen, EntitiesScreen), "back to the overview")
        assert any(line.split()[:1] == ["Purchases"] for line in screen_text(app))


@sync_test
async def test_d_opens_on_the_failed_entity_with_its_error(db, database_url, with_failure, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await pilot.press("down", "down")
        await pilot_wait_for(pilot, lambda: app.selected_realm == FAILING_REALM, "the failing company selected")
        await pilot.press("d")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, EntitiesScreen), "the entity detail")
        table = app.screen.query_one("#entities")
        await pilot_wait_for(pilot, lambda: table.cursor_row == ENTITY_ORDER.index("Bill"), "the cursor on Bill")
        await pilot.pause()
        assert detail_cell(app, "Bill", "status") == "failed"
        assert "FatalQBOError: 6240 Duplicate Document Number Error second line" in str(
            app.screen.query_one("#entity-detail").content)
        assert "1 failed: Bill · 27 ok" in line_with(app, "28 entities")
        assert line_with(app, "Vendor").split()[:2] == ["Purchases", "Vendor"]  # its group starts the view


@sync_test
async def test_enter_on_a_group_opens_the_detail_at_that_group(db, database_url, seeded, tmp_path) -> None:
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock")
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        app.query_one("#groups").focus()
        await pilot.press(*["down"] * GROUPS.index("Lists"), "enter")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, EntitiesScreen), "the entity detail")
        table = app.screen.query_one("#entities")
        await pilot_wait_for(pilot, lambda: table.cursor_row == ENTITY_ORDER.index("Class"), "the cursor on Class")
        await pilot.pause()
        assert line_with(app, "Class ").split()[:2] == ["Lists", "Class"]
        assert any("TaxAgency" in line for line in screen_text(app))  # the last group, all of it


@sync_test
async def test_messages_and_timers_arriving_after_quit_are_harmless(db, database_url, seeded, tmp_path) -> None:
    """A log tail, poll or key action that finishes while the console quits must not raise NoMatches."""
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock",
                       poll_interval_s=600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await pilot.press("q")
    assert not app.screen_stack or app._closed  # its widgets are gone
    app.on_log_lines(LogLines(LOG_SOURCES[0], ["late line"]))
    app.on_poll_result(PollResult(None, None, {}, "late poll"))
    app.on_action_done(ActionDone("token:x", "late action"))
    app._tick()


@sync_test
async def test_a_tick_while_textual_tears_the_screen_down_is_harmless_but_a_real_miss_still_raises(
        db, database_url, seeded, tmp_path) -> None:
    """Textual's own teardown (the end of a Pilot run, SIGTERM) prunes the main screen's widgets
    before it stops the 1 s tick, without `exit()` being called: CI once saw `_tick` raise
    NoMatches('#realms') there. Reproduced deterministically by pruning the widgets the way
    teardown does; a widget missing while the main screen is intact is a bug and still raises."""
    from textual.css.query import NoMatches

    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock",
                       poll_interval_s=600)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await app.query_one("#log").remove()  # one widget gone, the screen intact: a real bug
        with pytest.raises(NoMatches):
            app.on_log_lines(LogLines(LOG_SOURCES[0], ["line"]))
        await app.query_one("#realms").remove()  # teardown order: the screen's widgets go first
        app._tick()
        app.on_poll_result(PollResult(None, None, {}, "late poll"))
        app.on_log_lines(LogLines(LOG_SOURCES[0], ["late line"]))


FROZEN_NOW = datetime(2026, 11, 22, 14, 5, 0, tzinfo=timezone.utc)
HOLDER = "vps1:4242/w1"


def styles_of(text: Any, fragment: str) -> list[str]:
    """The styles of the spans of a rich Text that cover the start of `fragment` in it."""
    start = text.plain.index(fragment)
    return [str(span.style) for span in text.spans if span.start <= start < span.end]


def _set_calls(database_url: str, calls: int) -> None:
    """All the month's calls on a day before the projection's recent days: projected == calls."""
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM quickbooks.api_usage")
        conn.execute("INSERT INTO quickbooks.api_usage (realm_id, day, kind, service, calls)"
                     " VALUES (%s, '2026-11-10', 'cdc', 'sync', %s)", (HEALTHY_REALM, calls))


@sync_test
async def test_the_top_bar_meter_shows_the_months_calls_and_turns_warning_past_80_percent(
        db, database_url, tmp_path) -> None:
    """The meter is `qbsync status`'s usage: plain at 40 % of QBO_MONTHLY_CALL_LIMIT, warning-styled
    (with the reason on the second line) past 80 %, critical past 95 % with the governor on."""
    with db.transaction() as conn:
        insert_console_realm(conn, FROZEN_NOW, HEALTHY_REALM, "Acme")
    _set_calls(database_url, 2_000)
    app = RecordingApp(db, console_settings(database_url, tmp_path, QBO_MONTHLY_CALL_LIMIT="5000"),
                       clock=lambda: FROZEN_NOW, supervisor_socket=tmp_path / "none.sock", poll_interval_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        bar = lambda: app.query_one("#topbar").content  # noqa: E731
        meter = "API 2,000 / 5,000 · proj 2,000 (40 %)"
        assert screen_text(app)[0].split() == ["qbsync", "HEALTHY", *meter.split()]
        assert styles_of(bar(), meter) == []  # nothing to look at
        assert "1 company · all checks pass" in screen_text(app)[1]

        _set_calls(database_url, 4_250)
        meter = "API 4,250 / 5,000 · proj 4,250 (85 %)"
        await pilot_wait_for(pilot, lambda: meter in bar().plain, "the meter at 85 %")
        assert styles_of(bar(), meter) == ["bold black on yellow"]
        assert "WARNING" in bar().plain and "governor on" not in bar().plain
        assert line_with(app, "1 company · API calls: 4,250 projected this month of 5,000 (85 %)")

        _set_calls(database_url, 4_900)
        meter = "API 4,900 / 5,000 · proj 4,900 (98 %)"
        await pilot_wait_for(pilot, lambda: meter in bar().plain, "the meter at 98 %")
        assert styles_of(bar(), meter) == ["bold white on red"]
        assert "CRITICAL" in bar().plain and f"{meter} · governor on" in screen_text(app)[0]
        assert app.screen.max_scroll_y == 0 and "q Quit" in screen_text(app)[-1]  # still fits 80x24


@sync_test
async def test_the_detail_shows_who_works_the_company_and_takeovers_are_events(db, database_url, seeded,
                                                                             tmp_path) -> None:
    """A live lease names its holder on the detail line; a takeover is a row among the errors
    (service "lease") that `e` opens; a lease past its expiry turns the line yellow and warns."""
    now = datetime.now(timezone.utc)
    with db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.realm_leases (realm_id, holder, work, expires_at)"
                     " VALUES (%s, %s, 'schedule', %s)", (HEALTHY_REALM, HOLDER, now + timedelta(minutes=2)))
        takeover = conn.execute(
            "INSERT INTO quickbooks.lease_takeovers (at, realm_id, from_holder, to_holder, expired_at)"
            " VALUES (%s, %s, 'vps2:977/w3', %s, %s) RETURNING id",
            (now - timedelta(minutes=6), HEALTHY_REALM, HOLDER, now - timedelta(minutes=7))).fetchone()[0]
    app = RecordingApp(db, console_settings(database_url, tmp_path), supervisor_socket=tmp_path / "none.sock",
                       poll_interval_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: app.polls >= 1, "first poll")
        await pilot.pause()
        assert app.selected_realm == HEALTHY_REALM
        detail = app.query_one("#detail").content
        assert f"realm {HEALTHY_REALM} · refreshed 12m ago · worked by {HOLDER} (schedule)" in detail.plain
        assert styles_of(detail, "worked by") == ["cyan"]
        errors = app.query_one("#errors")
        key = f"lease-{takeover}"
        assert [str(errors.get_row_at(i)[1]) for i in range(4)] == ["tokenup", "lease", "sync", "webhook"]
        assert cell(app, "errors", key, "message").startswith(f"taken over from vps2:977/w3 by {HOLDER}")
        assert cell(app, "errors", key, "realm") == "Acme Café…"
        errors.focus()
        await pilot.press("down", "e")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, ErrorDetailScreen), "the takeover's detail")
        assert str(app.screen.query_one("#error-message").content).startswith(
            f"taken over from vps2:977/w3 by {HOLDER} (the lease of vps2:977/w3 had expired at ")
        await pilot.press("escape")
        await pilot_wait_for(pilot, lambda: not isinstance(app.screen, ErrorDetailScreen), "modal closed")

        with db.transaction() as conn:  # the holder died: its lease runs out, nobody took it yet
            conn.execute("UPDATE quickbooks.realm_leases SET expires_at = now() - interval '40 seconds'")
        await pilot_wait_for(pilot, lambda: "expired" in app.query_one("#detail").content.plain, "the dead lease")
        detail = app.query_one("#detail").content
        line1, line2 = detail.plain.split("\n")
        assert line1 == f"realm {HEALTHY_REALM} · refreshed 12m ago"  # nobody works it any more
        assert re.fullmatch(rf"lease of {re.escape(HOLDER)} \(schedule\) expired 4\ds ago: a sync process died\?",
                            line2), line2  # instead of the books line
        assert styles_of(detail, "lease of") == ["bold yellow"]
        assert line_with(app, "lease of").strip() == line2
        assert any(f"realm {HEALTHY_REALM}: lease of {HOLDER} expired" in r
                   for r in health(app.snapshot, [], app.clock())[1])
