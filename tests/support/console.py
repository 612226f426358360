"""What the console, `qbsync status` and read-model tests share.

- `seed_console_state(conn, now)` inserts companies, tokens, sync_state, sync_runs and errors
  rows directly, with every time relative to `now`, so frozen-time snapshots are stable;
  `insert_console_realm` inserts one realm's rows the same way.
- `Supervisord`: a real supervisord with programs in known states; `TcpToUnixProxy`: a database
  link a test can cut; `console_settings`: settings without the emulator.
- `pilot_wait_for`: the async `support.wait_for` for Textual Pilot scenarios; `screen_text`: what
  the terminal shows, as plain text lines (an SVG snapshot's content, for asserting on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from services.model.entities import ENTITY_NAMES
from support import wait_for

__all__ = ["HEALTHY_REALM", "REAUTH_REALM", "ACCESS_TOKEN", "REFRESH_TOKEN", "insert_console_realm",
           "seed_console_state", "ENTITIES", "ROWS", "Supervisord", "console_settings", "TcpToUnixProxy",
           "pilot_wait_for", "screen_text"]

HEALTHY_REALM = "9130357000000001"
REAUTH_REALM = "9130357000000002"
ACCESS_TOKEN = "eyJhbGciOiJSUzI1NiJ9.console-test-access-token-value"
REFRESH_TOKEN = "AB11console-test-refresh-token-value-xyz"
ENTITIES = ENTITY_NAMES  # every synced entity, in the model's (grouped) order
ROWS = {"CompanyInfo": 1, "Customer": 2345, "Estimate": 412, "Invoice": 12873, "Payment": 9120,
        "SalesReceipt": 1530, "CreditMemo": 96, "RefundReceipt": 14, "Vendor": 310, "PurchaseOrder": 77,
        "Bill": 4210, "BillPayment": 3980, "Purchase": 6650, "VendorCredit": 21, "Deposit": 880,
        "Transfer": 45, "JournalEntry": 1204, "Account": 142, "Employee": 38, "TimeActivity": 5410,
        "Class": 12, "Department": 6, "Term": 8, "PaymentMethod": 7, "Item": 187, "TaxCode": 19,
        "TaxRate": 33, "TaxAgency": 4}


def insert_console_realm(conn: psycopg.Connection, now: datetime, realm_id: str, name: str | None, *,
                         status: str = "active", environment: str = "production",
                         access_left: timedelta = timedelta(minutes=48),
                         refreshed_ago: timedelta = timedelta(minutes=12),
                         refresh_left: timedelta = timedelta(days=99), hard_left: timedelta = timedelta(days=1500),
                         token_error: str | None = None, synced_ago: timedelta | None = timedelta(minutes=20),
                         run_status: str = "success", run_error: str | None = None, run_entity: str = "Invoice",
                         access_token: str = ACCESS_TOKEN, refresh_token: str = REFRESH_TOKEN,
                         entities: tuple[str, ...] = ENTITIES) -> None:
    """One realm inserted directly in SQL (no emulator): company (unless `name` is None), token row,
    and a sync_state + sync_runs row per entity of `entities` (none when `synced_ago` is None);
    every run succeeded but `run_entity`'s, whose status is `run_status` (error `run_error`)."""
    if name is not None:
        conn.execute("INSERT INTO quickbooks.companies (id, name, environment) VALUES (%s, %s, %s)",
                     (realm_id, name, environment))
    conn.execute(
        "INSERT INTO quickbooks.tokens (realm_id, company_id, access_token, refresh_token, expires_at,"
        " refresh_token_expires_at, refresh_token_hard_expires_at, status, is_active, last_error,"
        " last_refreshed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (realm_id, realm_id if name is not None else None, access_token, refresh_token, now + access_left,
         now + refresh_left, now + hard_left, status, status == "active", token_error, now - refreshed_ago))
    for i, entity in enumerate(entities):
        if synced_ago is None:
            continue
        started = now - synced_ago - timedelta(seconds=30 + i)
        finished = started + timedelta(seconds=1.5 + i * 2)
        status_i = run_status if entity == run_entity else "success"
        run_id = conn.execute(
            "INSERT INTO quickbooks.sync_runs (realm_id, entity, kind, started_at, finished_at, status,"
            " rows_fetched, rows_upserted, error) VALUES (%s, %s, 'cdc', %s, %s, %s, 10, 10, %s) RETURNING id",
            (realm_id, entity, started, finished, status_i, run_error if status_i == "failed" else None),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO quickbooks.sync_state (realm_id, entity, cursor, last_success_at, last_run_id,"
            " last_run_status, last_error, row_count, next_run_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (realm_id, entity, now - synced_ago, now - synced_ago if status_i == "success" else now - synced_ago
             - timedelta(hours=1), run_id, status_i, run_error if status_i == "failed" else None, ROWS[entity],
             now + timedelta(minutes=40)))


def seed_console_state(conn: psycopg.Connection, now: datetime) -> dict[str, Any]:
    """A healthy company, a company that needs re-authorization, and three errors."""
    insert_console_realm(conn, now, HEALTHY_REALM, "Acme Café & Sons")
    insert_console_realm(conn, now, REAUTH_REALM, "O'Brien [bold]Plumbing[/]", status="needs_reauth",
                         token_error="invalid_grant: the refresh token is invalid, expired or revoked",
                         access_left=timedelta(minutes=-30), refreshed_ago=timedelta(hours=5),
                         refresh_left=timedelta(days=20), synced_ago=timedelta(hours=5))
    errors = [
        (now - timedelta(minutes=3), "tokenup", REAUTH_REALM, None,
         "NeedsReauth: invalid_grant -> reconnect the company: qbsync connect --realm-id " + REAUTH_REALM),
        (now - timedelta(minutes=9), "sync", HEALTHY_REALM, "Invoice",
         "Throttled: 429 Too Many Requests [red]not markup[/red] " + "detail " * 40 + "END-OF-MESSAGE"),
        (now - timedelta(hours=2), "webhook", None, None, "signature mismatch from 127.0.0.1"),
    ]
    for at, service, realm, entity, message in errors:
        conn.execute("INSERT INTO quickbooks.errors (at, service, realm_id, entity, message)"
                     " VALUES (%s, %s, %s, %s, %s)", (at, service, realm, entity, message))
    return {"realms": [HEALTHY_REALM, REAUTH_REALM]}


SUPERVISORD_CONF = """\
[unix_http_server]
file={dir}/var/supervisor.sock
chmod=0700

[supervisord]
logfile={dir}/logs/supervisord.log
pidfile={dir}/var/supervisord.pid
directory={dir}
childlogdir={dir}/logs
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[group:qbsync]
programs=tokenup,sync,webhook

[program:tokenup]
command={python} -c "import time; print('tokenup up', flush=True); time.sleep(600)"
startsecs=0
stdout_logfile={dir}/logs/tokenup.out.log
stderr_logfile={dir}/logs/tokenup.err.log

[program:sync]
command={python} -c "import time; print('sync up', flush=True); time.sleep(600)"
startsecs=0
stopwaitsecs=5
stdout_logfile={dir}/logs/sync.out.log
stderr_logfile={dir}/logs/sync.err.log

[program:webhook]
command={python} -c "import sys; sys.exit(3)"
startsecs=1
startretries=0
stdout_logfile={dir}/logs/webhook.out.log
stderr_logfile={dir}/logs/webhook.err.log
"""


class Supervisord:
    """A real supervisord in `directory` (short path: unix sockets allow ~100 chars).

    tokenup and sync sleep (RUNNING), webhook exits at once with startretries=0 (FATAL).
    Stop it with `stop()` (by PID).
    """

    def __init__(self, directory: Path) -> None:
        import subprocess
        import sys
        from pathlib import Path

        self.dir = Path(directory)
        (self.dir / "var").mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        conf = self.dir / "supervisord.conf"
        conf.write_text(SUPERVISORD_CONF.format(dir=self.dir, python=sys.executable))
        self.socket = self.dir / "var" / "supervisor.sock"
        supervisord = Path(sys.executable).parent / "supervisord"
        self.proc = subprocess.Popen([str(supervisord), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def wait_states(self, wanted: dict[str, str], timeout_s: float = 20) -> list[dict[str, Any]]:
        """Wait until the programs in `wanted` are in those states; returns every program's state."""
        from services.ops.supervisor_rpc import process_states

        last: dict[str, list[dict[str, Any]]] = {"states": []}

        def reached() -> list[dict[str, Any]]:
            last["states"] = states = process_states(self.socket)
            return states if {p["name"]: p["state"] for p in states if p["name"] in wanted} == wanted else []

        return wait_for(reached, timeout_s, f"supervisord states {wanted}", interval=0.1,
                        details=lambda: f"last seen: {last['states']}")

    def pid_of(self, name: str) -> int:
        from services.ops.supervisor_rpc import _proxy

        return int(_proxy(self.socket, 5).supervisor.getProcessInfo(f"qbsync:{name}")["pid"])

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def console_settings(database_url: str, work_dir: Path, **extra: str):
    """Settings for the console/status against `database_url`, with logs and socket under work_dir.

    Built without the emulator: reading the console's data never talks to Intuit.
    """
    from dataclasses import replace

    from services.core.config import load_settings

    env = {"DATABASE_URL": database_url, **extra}
    return replace(load_settings(env, dotenv=False), work_dir=work_dir)


class TcpToUnixProxy:
    """A loopback TCP port forwarding to PostgreSQL's unix socket, so a test can cut the
    database off (`stop()`) and bring it back on the same port (`start()`)."""

    def __init__(self, database_url: str) -> None:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(database_url)
        host_dir = parse_qs(parts.query)["host"][0]
        self.unix_path = f"{host_dir}/.s.PGSQL.{parts.port or 5432}"
        self.dbname = parts.path.lstrip("/")
        self.user = parts.username or "postgres"
        self.port = 0
        self._listener: Any = None
        self._socks: list[Any] = []

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    def start(self) -> None:
        import socket
        import threading

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.unix_path)
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def stop(self) -> None:
        import socket

        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._socks = []


async def pilot_wait_for(pilot: Any, predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Let the app run (`pilot.pause`) until `predicate()` is true; AssertionError naming `what`
    after `timeout` seconds. The async `support.wait_for` for Textual Pilot scenarios."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def screen_text(app: Any) -> list[str]:
    """The running app's screen as plain text, one string per terminal line (what a person over
    SSH would read): the same render as `App.export_screenshot`, without the styles."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, color_system=None,
                      legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text().splitlines()
