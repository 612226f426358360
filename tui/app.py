"""`qbsync tui`: the operator's console, built for an 80x24 SSH terminal.

One glance: a health line with the month's metered API calls (the meter turns yellow/red at
the thresholds `qbsync status` exits on) and the first reason, every company with its token
(status, a live access-token countdown, refresh-token idle and hard expiry in green/yellow/red),
the selected company's detail (which sync process works it, its books), its entities one row
per group (how many are ok, stale, never synced or failed, naming the failed ones; oldest
success, rows, next run), supervisord's processes, the newest errors and lease takeovers and a
log tail. `d` (or enter on a group) opens every entity of the company (`tui.entities`). One key
fixes the common problems: `r` refresh the token, `s` queue a sync, `p` restart a process;
`l` switches the log, `e` shows an error.

Everything blocking (PostgreSQL, supervisord, the token endpoint, log files) runs in
thread workers that report back with messages; polls are chained with `set_timer` so a
slow database never piles them up; an unreachable database shows a banner and the next
poll recovers by itself. All data reads go through `db.readmodel`, the same read model as
`qbsync status`. Untrusted text (company names, errors, logs) is always `rich.text.Text`.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, RichLog, Static

from db.readmodel import GROUPS, group_summaries, health, status_snapshot, sync_request_states
from services.core.durations import span
from services.core.errors import QBSyncError
from services.core.logs import redact
from tui.cells import (
    GROUP_COLUMNS,
    LEVEL_STYLES,
    ago,
    books_line,
    countdown,
    events,
    expiry,
    group_cells,
    lease_expired,
    lease_text,
    meter,
    one_line,
    token_status,
)
from tui.entities import EntitiesScreen, first_to_look_at
from tui.logtail import LogTail

__all__ = ["QBSyncApp", "cmd_tui", "LOG_SOURCES", "ErrorDetailScreen", "EntitiesScreen"]

LOG_SOURCES: tuple[tuple[str, str], ...] = tuple(
    (program, stream) for program in ("sync", "tokenup", "webhook") for stream in ("out", "err"))
POLL_INTERVAL_S = 5.0
LOG_INTERVAL_S = 1.0


# ---------------------------------------------------------------- messages

class PollResult(Message):
    """One finished poll: a snapshot (None if the database failed) and process states."""

    def __init__(self, snapshot: dict[str, Any] | None, processes: list[dict[str, Any]] | None,
                 requests: dict[int, dict[str, Any]], error: str | None) -> None:
        super().__init__()
        self.snapshot, self.processes, self.requests, self.error = snapshot, processes, requests, error


class LogLines(Message):
    def __init__(self, source: tuple[str, str], lines: list[str]) -> None:
        super().__init__()
        self.source, self.lines = source, lines


class ActionDone(Message):
    """A key's background action finished: show `text`; `key` clears the in-flight guard."""

    def __init__(self, key: str, text: str, severity: str = "information", request_id: int | None = None,
                 realm_id: str | None = None) -> None:
        super().__init__()
        self.key, self.text, self.severity = key, text, severity
        self.request_id, self.realm_id = request_id, realm_id


@dataclass
class _Request:
    realm_id: str
    status: str = "queued"


# ---------------------------------------------------------------- screens

class ErrorDetailScreen(ModalScreen[None]):
    """The full text of one error; any of escape/enter/e/q closes it."""

    BINDINGS: ClassVar = [Binding("escape,enter,e,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    ErrorDetailScreen { align: center middle; }
    ErrorDetailScreen > Vertical { width: 76; height: 18; border: round $error; background: $surface; padding: 0 1; }
    ErrorDetailScreen #error-head { height: auto; color: $text-muted; }
    """

    def __init__(self, error: dict[str, Any], now: datetime) -> None:
        super().__init__()
        self.error, self.now = error, now

    def compose(self) -> ComposeResult:
        e = self.error
        head = Text()
        head.append(f"{e.get('at')}  ({ago(e.get('at'), self.now)})\n")
        head.append(f"service {e.get('service')}  realm {e.get('realm_id') or '-'}  "
                    f"entity {e.get('entity') or '-'}  code {e.get('code') or '-'}")
        with Vertical():
            yield Static(head, id="error-head")
            with VerticalScroll():
                yield Static(Text(redact(e.get("message") or "")), id="error-message")
            yield Static(Text("escape: close", style="dim"))


# ---------------------------------------------------------------- the app

def _shutting_down(app: App) -> bool:
    """True once the console is being taken down (`q`, SIGTERM, the end of a Pilot run).

    The main screen's widgets are composed once and never removed while the console runs, so
    its realms table being gone (or the screen itself) means teardown has begun: textual prunes
    the widgets before it stops timers and message queues."""
    if getattr(app, "_quit_requested", False):
        return True
    try:
        return not app.default_screen.query("#realms")
    except (ScreenStackError, IndexError, KeyError):
        return True


def _harmless_after_shutdown(handler: Callable[..., None]) -> Callable[..., None]:
    """A message or timer that arrives while the console shuts down (its widgets already removed)
    is dropped, and nothing is rescheduled, instead of raising NoMatches on a widget that is gone."""

    @functools.wraps(handler)
    def guarded(self: App, *args: Any) -> None:
        try:
            handler(self, *args)
        except (NoMatches, ScreenStackError):
            if not _shutting_down(self):
                raise

    return guarded


class QBSyncApp(App[None]):
    """The console. `db` is a `db.connection.Database`; `clock()` returns an aware datetime."""

    TITLE = "qbsync"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar = [
        Binding("r", "refresh_token", "Token"),
        Binding("s", "sync_now", "Sync"),
        Binding("l", "next_log", "Log"),
        Binding("e", "error_details", "Error"),
        Binding("d", "entity_details", "Entities"),
        Binding("c", "repair_books", "Books"),
        Binding("p", "restart_process", "Restart"),
        Binding("q", "quit", "Quit"),
    ]
    CSS = """
    Screen { layout: vertical; }
    #topbar { height: 2; padding: 0 1; background: $panel; }
    #banner { height: auto; padding: 0 1; background: red; color: white; text-style: bold; display: none; }
    #banner.down { display: block; }
    DataTable { scrollbar-size-vertical: 1; }
    #realms { max-height: 5; }
    #detail { height: 2; padding: 0 1; }
    #groups { height: 7; }
    #procs { height: 1; padding: 0 1; }
    #errors { height: 4; }
    #loglabel { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    #log { height: 1fr; min-height: 1; }
    """

    def __init__(self, db: Any, settings: Any, *, clock: Callable[[], datetime] | None = None,
                 supervisor_socket: str | Path | None = None, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        super().__init__()
        self.db = db
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.supervisor_socket = Path(supervisor_socket or settings.supervisor_socket)
        self.poll_interval_s = poll_interval_s
        self.snapshot: dict[str, Any] | None = None
        self.processes: list[dict[str, Any]] = []
        self.db_error: str | None = None
        self.polls = 0  # finished polls (tests wait on this)
        self.last_good_at: datetime | None = None
        self.selected_realm: str | None = None
        self.requests: dict[int, _Request] = {}
        self._conn: Any = None
        self._polling = False
        self._poll_again = False
        self._poll_timer: Any = None
        self._busy: set[str] = set()
        self._log_index = 0
        self._tail: LogTail | None = None
        self._error_ids: list[Any] = []  # error ids (int) and lease takeovers ("lease-<id>")

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(Text("qbsync · loading…"), id="topbar")
        yield Static("", id="banner")
        realms: DataTable = DataTable(id="realms", cursor_type="row", zebra_stripes=False)
        realms.add_column("Company", key="company", width=22)
        realms.add_column("Env", key="env", width=4)
        realms.add_column("Token", key="token", width=12)
        realms.add_column("Access", key="access", width=7)
        realms.add_column("Refresh", key="refresh", width=8)
        realms.add_column("Hard exp", key="hard", width=8)
        yield realms
        yield Static("", id="detail")
        groups: DataTable = DataTable(id="groups", cursor_type="row")
        for key, label, width in GROUP_COLUMNS:
            groups.add_column(label, key=key, width=width)
        for group in GROUPS:
            groups.add_row(Text(group), *[Text("-")] * (len(GROUP_COLUMNS) - 1), key=group)
        yield groups
        yield Static("", id="procs")
        errors: DataTable = DataTable(id="errors", cursor_type="row")
        errors.add_column("When", key="when", width=8)
        errors.add_column("Service", key="service", width=7)
        errors.add_column("Company", key="realm", width=10)
        errors.add_column("Entity", key="entity", width=9)
        errors.add_column("Message", key="message", width=30)
        yield errors
        yield Static("", id="loglabel")
        yield RichLog(id="log", max_lines=500, wrap=False, markup=False, highlight=False, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#realms", DataTable).focus()
        self._switch_log(0)
        self._start_poll()
        self.set_interval(1.0, self._tick)
        self._tail_log()

    # ------------------------------------------------------------ polling (chained)

    def _start_poll(self) -> None:
        if self._polling:
            self._poll_again = True
            return
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        self._polling = True
        self._poll_worker([rid for rid, r in self.requests.items() if r.status in ("queued", "running")])

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def _poll_worker(self, request_ids: list[int]) -> None:
        snapshot, error = None, None
        requests: dict[int, Any] = {}
        try:
            snapshot, requests = self._read_database(request_ids)
        except Exception as exc:  # noqa: BLE001 - any failure is shown as the banner, then retried
            self._drop_connection()
            text = exc.one_line() if isinstance(exc, QBSyncError) else str(exc)
            error = redact(one_line(text or type(exc).__name__, 300))
        processes: list[dict[str, Any]] | None
        try:
            from services.ops.supervisor_rpc import process_states

            processes = process_states(self.supervisor_socket)
        except Exception:  # noqa: BLE001
            processes = []
        self.post_message(PollResult(snapshot, processes, requests, error))

    def _read_database(self, request_ids: list[int]) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
        from db.connection import connect

        if self._conn is None or self._conn.closed:
            self._conn = connect(self.db.url, autocommit=True)
        conn = self._conn
        with conn.transaction():
            snapshot = status_snapshot(conn, self.clock(),
                                       stale_after=_minutes(2 * self.settings.sync_interval_minutes),
                                       call_limit=self.settings.monthly_call_limit,
                                       call_reserve_percent=self.settings.call_reserve_percent)
            requests = sync_request_states(conn, request_ids)
        return snapshot, requests

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    @_harmless_after_shutdown
    def on_poll_result(self, message: PollResult) -> None:
        self._polling = False
        self.polls += 1
        self.processes = message.processes or []
        if message.snapshot is not None:
            self.snapshot = message.snapshot
            self.db_error = None
            self.last_good_at = self.clock()
            self._track_requests(message.requests)
        else:
            self.db_error = message.error or "unknown error"
        self._render_all()
        if self._poll_again:
            self._poll_again = False
            self._start_poll()
        else:
            self._poll_timer = self.set_timer(self.poll_interval_s, self._start_poll)

    def _track_requests(self, states: dict[int, dict[str, Any]]) -> None:
        for rid, state in states.items():
            req = self.requests.get(rid)
            if req is None or state["status"] == req.status:
                continue
            label = self._realm_label(req.realm_id)
            if state["status"] == "running":
                self.notify(f"sync #{rid} of {label} started", markup=False)
            elif state["status"] == "done":
                self.notify(f"sync #{rid} of {label} finished", markup=False)
            elif state["status"] == "failed":
                self.notify(f"sync #{rid} of {label} failed: {one_line(state['error'], 200)}",
                            severity="error", markup=False)
            req.status = state["status"]
        for rid in [r for r, req in self.requests.items() if req.status in ("done", "failed")]:
            del self.requests[rid]

    # ------------------------------------------------------------ rendering

    def _realm(self, realm_id: str | None) -> dict[str, Any] | None:
        for realm in (self.snapshot or {}).get("realms", []):
            if realm["realm_id"] == realm_id:
                return realm
        return None

    def _realm_label(self, realm_id: str) -> str:
        realm = self._realm(realm_id)
        return one_line((realm or {}).get("company_name") or realm_id, 30)

    def _render_all(self) -> None:
        now = self.clock()
        self._render_topbar(now)
        banner = self.query_one("#banner", Static)
        if self.db_error:
            since = f" · showing data from {self.last_good_at:%H:%M:%S}" if self.last_good_at else ""
            banner.update(Text(f"DATABASE UNREACHABLE · retrying every {self.poll_interval_s:g}s{since}\n"
                               f"{one_line(self.db_error, 150)}"))
            banner.add_class("down")
        else:
            banner.remove_class("down")
        self._render_realms(now)
        self._render_selected(now)
        self._render_processes()
        self._render_errors(now)

    def _render_topbar(self, now: datetime) -> None:
        """Line 1: the level and the API call meter; line 2: how many companies and the first reason."""
        bar = Text("qbsync ", style="bold")
        width = max(20, (self.size.width or 80) - 2)
        if self.snapshot is None:
            bar.append("no data yet", style="yellow")
        else:
            code, reasons = health(self.snapshot, self.processes, now,
                                   sync_interval_minutes=self.settings.sync_interval_minutes,
                                   token_margin_minutes=self.settings.token_refresh_margin_minutes,
                                   token_check_interval_seconds=self.settings.token_check_interval_seconds)
            word = ("HEALTHY", "WARNING", "CRITICAL")[code]
            bar.append(f" {word} ", style=LEVEL_STYLES[code] if code else "bold black on green")
            bar.append(" ")
            bar.append_text(meter(self.snapshot.get("usage")))
            bar.truncate(width, overflow="ellipsis")
            count = len(self.snapshot["realms"])
            second = Text(f"{count} compan{'y' if count == 1 else 'ies'}")
            if reasons:
                more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
                room = max(10, width - len(second.plain) - len(more) - 3)
                second.append(f" · {one_line(reasons[0], room)}{more}")
            else:
                second.append(" · all checks pass", style="green")
            bar.append("\n")
            bar.append_text(second)
        self.query_one("#topbar", Static).update(bar)

    def _render_realms(self, now: datetime) -> None:
        table = self.query_one("#realms", DataTable)
        realms = (self.snapshot or {}).get("realms", [])
        wanted = [r["realm_id"] for r in realms]
        existing = [key.value for key in table.rows]
        if existing != wanted:
            table.clear()
            for realm in realms:
                table.add_row(*self._realm_cells(realm, now), key=realm["realm_id"])
            if self.selected_realm in wanted:
                table.move_cursor(row=wanted.index(self.selected_realm))
            self.selected_realm = wanted[table.cursor_row] if wanted else None
        else:
            for realm in realms:
                for col, cell in zip(("company", "env", "token", "access", "refresh", "hard"),
                                     self._realm_cells(realm, now), strict=True):
                    table.update_cell(realm["realm_id"], col, cell)

    def _realm_cells(self, realm: dict[str, Any], now: datetime) -> list[Text]:
        token = realm["token"]
        env = "sbx" if realm["environment"] == "sandbox" else "prod"
        if token["status"] == "active":
            access = countdown(token["access_expires_at"], now, self.settings.token_refresh_margin_minutes * 60)
        else:
            access = Text("-", style="dim")
        return [Text(one_line(realm["company_name"] or realm["realm_id"])), Text(env),
                token_status(token["status"]), access,
                expiry(token["refresh_expires_at"], now), expiry(token["hard_expires_at"], now)]

    def _render_selected(self, now: datetime) -> None:
        realm = self._realm(self.selected_realm)
        detail = Text()
        if realm is None:
            detail.append("no company connected: run ", style="yellow")
            detail.append("qbsync connect", style="bold")
        else:
            token = realm["token"]
            rid = realm["realm_id"]
            # The environment is the table's Env column: this line has the realm, who works it
            # (SPEC section 13) and the syncs the console queued.
            detail.append(f"realm {rid} · refreshed {ago(token['last_refreshed_at'], now)}")
            pending = [f"#{i} {r.status}" for i, r in self.requests.items() if r.realm_id == rid]
            if pending:
                detail.append(f" · sync {' '.join(pending)}", style="cyan")
            width = max(20, (self.size.width or 80) - 2)
            dead_lease = lease_expired(realm, now)
            room = width - len(detail.plain) - 3
            if realm.get("lease") and not dead_lease and room >= 20:
                detail.append(" · ")
                detail.append_text(lease_text(realm, now, width=room))
            detail.append("\n")
            if token["status"] == "needs_reauth":
                detail.append(f" NEEDS REAUTH: run qbsync connect --realm-id {rid} ", style="bold white on red")
            elif token["status"] == "disconnected":
                detail.append(f"disconnected: reconnect with qbsync connect --realm-id {rid}", style="dim")
            elif token["last_error"]:
                detail.append(f"token: {one_line(token['last_error'], 70)}", style="yellow")
            elif dead_lease:
                detail.append_text(lease_text(realm, now, width=width))
            else:
                detail.append_text(books_line(realm.get("reconciliation"), now))
        self.query_one("#detail", Static).update(detail)
        table = self.query_one("#groups", DataTable)
        if realm is None:
            for group in GROUPS:
                for key, _, _ in GROUP_COLUMNS[1:]:
                    table.update_cell(group, key, Text("-"))
        else:
            for summary in group_summaries(realm):
                for (key, _, _), cell in zip(GROUP_COLUMNS, group_cells(summary, now), strict=True):
                    table.update_cell(summary.group, key, cell)
        for screen in self.screen_stack:
            if isinstance(screen, EntitiesScreen):
                screen.show(self._realm(screen.realm_id), now)

    def _render_processes(self) -> None:
        line = Text("processes: ", style="bold")
        if not self.processes:
            line.append("supervisord not reachable", style="yellow")
        for i, proc in enumerate(self.processes):
            if i:
                line.append(" · ")
            style = {"RUNNING": "green", "FATAL": "bold white on red", "BACKOFF": "yellow",
                     "STARTING": "cyan"}.get(proc["state"], "dim")
            line.append(f"{proc['name']} ")
            line.append(proc["state"], style=style)
            if proc["state"] == "RUNNING":
                line.append(f" {span(proc['uptime_s'])}")
        self.query_one("#procs", Static).update(line)

    def _render_errors(self, now: datetime) -> None:
        table = self.query_one("#errors", DataTable)
        errors = events(self.snapshot)
        ids = [e["id"] for e in errors]
        if ids != self._error_ids:
            cursor = table.cursor_row
            table.clear()
            names = {r["realm_id"]: r["company_name"] for r in (self.snapshot or {}).get("realms", [])}
            for e in errors:
                table.add_row(*self._error_cells(e, now, names), key=str(e["id"]))
            if errors:
                table.move_cursor(row=min(cursor, len(errors) - 1))
            self._error_ids = ids
        else:
            for e in errors:
                table.update_cell(str(e["id"]), "when", Text(ago(e["at"], now).replace(" ago", "")))

    @staticmethod
    def _error_cells(e: dict[str, Any], now: datetime, names: dict[str, str | None]) -> list[Text]:
        realm = names.get(e["realm_id"]) or e["realm_id"] or "-"
        return [Text(ago(e["at"], now).replace(" ago", "")), Text(e["service"] or ""),
                Text(one_line(realm, 10)), Text(e["entity"] or "-"), Text(one_line(e["message"], 120))]

    @_harmless_after_shutdown
    def _tick(self) -> None:
        """Every second, between polls: the countdowns and relative times move."""
        if self.snapshot is None:
            return
        now = self.clock()
        table = self.query_one("#realms", DataTable)
        for realm in self.snapshot["realms"]:
            if realm["realm_id"] in [k.value for k in table.rows]:
                cells = self._realm_cells(realm, now)
                table.update_cell(realm["realm_id"], "access", cells[3])
        self._render_selected(now)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "realms" and event.row_key is not None:
            self.selected_realm = event.row_key.value
            self._render_selected(self.clock())

    # ------------------------------------------------------------ log pane

    def _switch_log(self, index: int) -> None:
        self._log_index = index % len(LOG_SOURCES)
        program, stream = LOG_SOURCES[self._log_index]
        if self._tail is not None:
            self._tail.close()
        self._tail = LogTail(self.settings.log_dir / f"{program}.{stream}.log")
        self.query_one("#log", RichLog).clear()
        label = Text(f"log: {program}.{stream}.log", style="bold")
        label.append(f"   l: next log · p: restart {program}", style="")
        self.query_one("#loglabel", Static).update(label)

    def _tail_log(self) -> None:
        self._tail_worker(LOG_SOURCES[self._log_index], self._tail)

    @work(thread=True, exclusive=True, exit_on_error=False, group="log")
    def _tail_worker(self, source: tuple[str, str], tail: LogTail | None) -> None:
        lines: list[str] = []
        try:
            if tail is not None:
                lines = tail.read_lines()
        except Exception as exc:  # noqa: BLE001 - a log we cannot read is shown, not fatal
            lines = [f"[cannot read log: {exc}]"]
        self.post_message(LogLines(source, lines))

    @_harmless_after_shutdown
    def on_log_lines(self, message: LogLines) -> None:
        if message.source == LOG_SOURCES[self._log_index]:
            log = self.query_one("#log", RichLog)
            for line in message.lines[-500:]:
                log.write(Text(redact(line)))
        self.set_timer(LOG_INTERVAL_S, self._tail_log)

    def action_next_log(self) -> None:
        self._switch_log(self._log_index + 1)
        program, stream = LOG_SOURCES[self._log_index]
        self.notify(f"log: {program}.{stream}.log", timeout=2)

    # ------------------------------------------------------------ keys

    def _cannot(self, why: str) -> None:
        self.notify(why, severity="warning", markup=False)

    def _selected_for_action(self, what: str) -> dict[str, Any] | None:
        if self.db_error:
            self._cannot(f"cannot {what}: database unreachable ({one_line(self.db_error, 80)})")
            return None
        realm = self._realm(self.selected_realm)
        if realm is None:
            self._cannot(f"cannot {what}: no company selected (connect one with qbsync connect)")
            return None
        return realm

    def action_refresh_token(self) -> None:
        realm = self._selected_for_action("refresh the token")
        if realm is None:
            return
        rid = realm["realm_id"]
        if realm["token"]["status"] != "active":
            self._cannot(f"{self._realm_label(rid)} is {realm['token']['status']}: "
                         f"run qbsync connect --realm-id {rid}")
            return
        key = f"token:{rid}"
        if key in self._busy:
            self._cannot(f"a token refresh for {self._realm_label(rid)} is already running")
            return
        self._busy.add(key)
        self.notify(f"refreshing the token of {self._realm_label(rid)}…", timeout=2, markup=False)
        self._refresh_worker(rid)

    @work(thread=True, exclusive=True, exit_on_error=False, group="token")
    def _refresh_worker(self, realm_id: str) -> None:
        key = f"token:{realm_id}"
        try:
            from services.tokens.vault import refresh_realm  # lazily: only the console's `r` needs it

            refresh_realm(self.db, self.settings, realm_id, force=True, reason="console", service="tui")
            self.post_message(ActionDone(key, f"token refreshed for {self._realm_label(realm_id)}",
                                         realm_id=realm_id))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
            text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
            self.post_message(ActionDone(key, redact(f"token refresh failed: {one_line(text, 300)}"), "error"))

    def action_repair_books(self) -> None:
        """`c`: reconcile the selected company against QuickBooks now, re-listing in full the
        entities whose counts differ (`qbsync reconcile --repair`), then show the result."""
        realm = self._selected_for_action("reconcile")
        if realm is None:
            return
        rid = realm["realm_id"]
        key = f"books:{rid}"
        if key in self._busy:
            self._cannot(f"a reconciliation of {self._realm_label(rid)} is already running")
            return
        self._busy.add(key)
        self.notify(f"reconciling {self._realm_label(rid)} with QuickBooks…", timeout=2, markup=False)
        self._repair_worker(rid)

    @work(thread=True, exclusive=False, exit_on_error=False, group="books")
    def _repair_worker(self, realm_id: str) -> None:
        key = f"books:{realm_id}"
        try:
            from services.reconcile.checks import reconcile_realm  # lazily: only the console's `c` needs it

            outcome = reconcile_realm(self.db, self.settings, realm_id, repair=True)
            repaired = f", re-listed {', '.join(outcome.repaired)}" if outcome.repaired else ""
            severity = {"ok": "information", "drift": "warning"}.get(outcome.status, "error")
            self.post_message(ActionDone(key, f"{self._realm_label(realm_id)}: books {outcome.status}"
                                              f" ({len(outcome.drifts())} differences{repaired})", severity))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
            text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
            self.post_message(ActionDone(key, redact(f"reconciliation failed: {one_line(text, 300)}"), "error"))

    def action_sync_now(self) -> None:
        realm = self._selected_for_action("queue a sync")
        if realm is None:
            return
        rid = realm["realm_id"]
        key = f"sync:{rid}"
        if key in self._busy:
            return
        self._busy.add(key)
        self._sync_worker(rid)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sync")
    def _sync_worker(self, realm_id: str) -> None:
        key = f"sync:{realm_id}"
        try:
            from services.sync.engine import enqueue_sync_request
            with self.db.transaction() as conn:
                request_id = enqueue_sync_request(conn, realm_id, requested_by="tui")
            self.post_message(ActionDone(key, f"sync #{request_id} of {self._realm_label(realm_id)} queued",
                                         request_id=request_id, realm_id=realm_id))
        except Exception as exc:  # noqa: BLE001
            text = exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"
            self.post_message(ActionDone(key, redact(f"cannot queue a sync: {one_line(text, 300)}"), "error"))

    def action_restart_process(self) -> None:
        program = LOG_SOURCES[self._log_index][0]
        if not self.processes:
            self._cannot(f"cannot restart {program}: supervisord not reachable at {self.supervisor_socket}")
            return
        key = f"restart:{program}"
        if key in self._busy:
            self._cannot(f"{program} is already restarting")
            return
        self._busy.add(key)
        self.notify(f"restarting {program}…", timeout=3)
        self._restart_worker(program)

    @work(thread=True, exclusive=True, exit_on_error=False, group="supervisor")
    def _restart_worker(self, program: str) -> None:
        key = f"restart:{program}"
        try:
            from services.ops.supervisor_rpc import restart_process

            state = restart_process(self.supervisor_socket, program)
            self.post_message(ActionDone(key, f"{program} restarted: {state}"))
        except Exception as exc:  # noqa: BLE001
            self.post_message(ActionDone(key, redact(f"cannot restart {program}: {one_line(str(exc), 300)}"),
                                         "error"))

    @_harmless_after_shutdown
    def on_action_done(self, message: ActionDone) -> None:
        self._busy.discard(message.key)
        if message.request_id is not None and message.realm_id is not None:
            self.requests[message.request_id] = _Request(message.realm_id)
        self.notify(message.text, severity=message.severity, markup=False)  # type: ignore[arg-type]
        self._start_poll()

    def action_error_details(self) -> None:
        errors = events(self.snapshot)
        if not errors:
            self._cannot("no errors recorded")
            return
        table = self.query_one("#errors", DataTable)
        index = min(max(table.cursor_row, 0), len(errors) - 1)
        self.push_screen(ErrorDetailScreen(errors[index], self.clock()))

    def action_entity_details(self, group: str | None = None) -> None:
        """Every entity of the selected company: opened on the first entity of `group`, else of
        the highlighted group when the groups table has the focus, else on the first entity
        that needs a look (failed, never synced, stale)."""
        realm = self._realm(self.selected_realm)
        if realm is None:
            self._cannot("no company selected (connect one with qbsync connect)")
            return
        groups = self.query_one("#groups", DataTable)
        if group is None and groups.has_focus:
            group = GROUPS[groups.cursor_row]
        if group is not None:
            focus = next(e["entity"] for e in realm["entities"] if e["group"] == group)
        else:
            focus = first_to_look_at(realm)
        self.push_screen(EntitiesScreen(realm, self.clock(), focus))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "groups" and event.row_key.value is not None:
            self.action_entity_details(event.row_key.value)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """On the entity detail only the keys that act on its company (and quit) are live and in
        the footer: the log, the errors table and the process list are not on that screen."""
        if isinstance(self.screen, EntitiesScreen):
            return action not in ("next_log", "error_details", "entity_details", "restart_process")
        return True

    def exit(self, *args: Any, **kwargs: Any) -> None:
        self._quit_requested = True
        super().exit(*args, **kwargs)

    def on_unmount(self) -> None:
        self._drop_connection()
        if self._tail is not None:
            self._tail.close()


def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def cmd_tui(args: argparse.Namespace, settings: Any) -> int:
    """Run the console until `q`. Logs go to logs/tui.log (the screen is the console's)."""
    from db.connection import open_database
    from services.core.logs import PM2Formatter

    settings.log_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(settings.log_dir / "tui.log", encoding="utf-8")
    handler.setFormatter(PM2Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    db = open_database(settings, announce=False, max_size=3)
    try:
        QBSyncApp(db, settings).run()
    finally:
        db.close()
    return 0
