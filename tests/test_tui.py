"""The Textual console driven by Pilot at 80x24 on a real database (and the real emulator,
supervisord and log files where a key acts on them)."""

from __future__ import annotations

import asyncio
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
    seed_console_state,
)

from db.connection import Database
from tui.app import LOG_SOURCES, ActionDone, ErrorDetailScreen, LogLines, PollResult, QBSyncApp

SIZE = (80, 24)


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
    return str(app.query_one(f"#{table}").get_cell(row, column))


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
        assert cell(app, "entities", "Invoice", "rows") == "12,873"
        assert cell(app, "entities", "Customer", "rows") == "2,345"
        assert cell(app, "entities", "Invoice", "success") == "20m ago"
        assert cell(app, "entities", "Invoice", "status") == "success"
        assert cell(app, "entities", "Invoice", "took") == "9.5s"
        assert cell(app, "entities", "Invoice", "next") in ("in 39m", "in 40m")
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
        assert cell(app, "entities", "Invoice", "success") == "5h00m ago"
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
    from services.sync.worker import run_requests
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
        assert cell(app, "entities", "Customer", "success") == "never"
        await pilot.press("s")
        await pilot_wait_for(pilot, lambda: noted(app, "queued"), "queued notification")
        ran = await asyncio.to_thread(run_requests, db, settings)  # the sync worker's request loop
        assert ran == 1
        await pilot_wait_for(pilot, lambda: noted(app, "of Queued Sync Ltd finished"), "finish notification", 30)
        await pilot_wait_for(pilot, lambda: cell(app, "entities", "Customer", "rows") == "7", "synced rows shown")
        assert cell(app, "entities", "Invoice", "rows") == "4"
        assert cell(app, "entities", "Customer", "status") == "success"
        assert cell(app, "entities", "Customer", "success").endswith("s ago")
    with db.transaction() as conn:
        assert conn.execute("SELECT status, requested_by FROM quickbooks.sync_requests").fetchall() == [
            ("done", "tui")]


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
