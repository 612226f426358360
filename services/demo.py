"""`qbsync demo`: the whole product on one machine, with nothing registered at Intuit.

Starts (and on exit stops, by PID) everything it needs: the embedded PostgreSQL under
./var/pg (always the embedded one: a demo never writes to DATABASE_URL), the emulator with a
generated company whose webhooks go to the local receiver, supervisord with tokenup, sync and
webhook pointed at the emulator, and a change generator that edits the company every few
seconds. Then it opens the console. `--for N --no-tui` runs N seconds headless and checks
that data flowed end to end (exit 0) or not (exit 1).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from db.connection import Database, scalar
from services.core.config import Settings, load_settings
from services.core.errors import ConfigError
from services.core.logs import setup_logging
from services.emulator.admin import EmulatorAdmin

__all__ = ["cmd_demo", "DEMO_COMPANY"]

DEMO_COMPANY = "Demo Bakery & Café"
# a whole ledger (SPEC section 14): the rest (payments, bills, deposits, journal entries...) in
# proportion to the invoices, sales tax on taxable customers
DEMO_SIZES: dict[str, Any] = {"customers": 300, "items": 40, "invoices": 1200, "estimates": 150, "sales_tax": True}
CHANGE_EVERY_S = 4.0


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _stop_pid(proc: subprocess.Popen, timeout_s: float = 40) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class ChangeMaker(threading.Thread):
    """Edits the emulator's company every few seconds, the way a bookkeeper would."""

    def __init__(self, admin: EmulatorAdmin, realm_id: str, every_s: float = CHANGE_EVERY_S) -> None:
        super().__init__(name="demo-changes", daemon=True)
        self.admin, self.realm_id, self.every_s = admin, realm_id, every_s
        self.stop_event = threading.Event()
        self.rng = random.Random(7)
        self.changes = 0

    def _some_id(self, entity: str) -> str | None:
        objects = self.admin.entities(self.realm_id, entity)
        live = [o["Id"] for o in objects if o.get("Active", True)]
        return self.rng.choice(live) if live else None

    def change_once(self) -> None:
        op, entity = self.rng.choice([
            ("update", "Customer"), ("create", "Invoice"), ("update", "Invoice"), ("void", "Invoice"),
            ("create", "Customer"), ("inactivate", "Customer"), ("update", "Item"), ("create", "Estimate"),
            ("delete", "Estimate"), ("create", "Payment"), ("create", "Payment"), ("void", "Payment"),
            ("create", "Bill"), ("create", "BillPayment"), ("create", "Purchase"), ("delete", "Purchase"),
            ("create", "Deposit"), ("create", "JournalEntry"), ("update", "Vendor"), ("create", "TimeActivity"),
        ])
        target = None if op == "create" else self._some_id(entity)
        if op != "create" and target is None:
            return
        self.admin.mutate(self.realm_id, entity, op, id=target)
        self.changes += 1

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            try:
                self.change_once()
            except Exception:  # noqa: BLE001 - a failed edit is not worth stopping the demo
                continue


def _demo_env(settings: Settings, database_url: str, emulator_url: str, webhook_port: int) -> dict[str, str]:
    from services.emulator import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET, EMULATOR_VERIFIER_TOKEN

    env = {k: v for k, v in os.environ.items() if not k.startswith("QBO_")}
    env.update({
        "DATABASE_URL": database_url,
        "QBO_CLIENT_ID": EMULATOR_CLIENT_ID,
        "QBO_CLIENT_SECRET": EMULATOR_CLIENT_SECRET,
        "QBO_WEBHOOK_VERIFIER_TOKEN": EMULATOR_VERIFIER_TOKEN,
        "QBO_ENVIRONMENT": "sandbox",
        "QBO_API_BASE_URL": emulator_url,
        "QBO_TOKEN_URL": f"{emulator_url}/oauth2/v1/tokens/bearer",
        "QBO_AUTHORIZE_URL": f"{emulator_url}/connect/oauth2",
        "QBO_REVOKE_URL": f"{emulator_url}/oauth2/v1/tokens/revoke",
        "QBO_REDIRECT_URI": f"http://127.0.0.1:{webhook_port}/oauth/callback",
        "QBO_RETRY_BASE_SECONDS": "0.5",
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": str(webhook_port),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _data_flowed(db: Database, admin: EmulatorAdmin, realm_id: str) -> tuple[bool, str]:
    """True when Postgres holds exactly the emulator's customers and live invoices, and webhooks were applied."""
    want_customers = len(admin.entities(realm_id, "Customer"))
    want_invoices = len(admin.entities(realm_id, "Invoice"))
    with db.transaction() as conn:
        customers = scalar(conn, "SELECT count(*) FROM quickbooks.customers WHERE realm_id = %s"
                           " AND deleted_at IS NULL", (realm_id,))
        invoices = scalar(conn, "SELECT count(*) FROM quickbooks.invoices WHERE realm_id = %s"
                          " AND deleted_at IS NULL", (realm_id,))
        applied = scalar(conn, "SELECT count(*) FROM quickbooks.webhook_inbox WHERE realm_id = %s"
                         " AND status = 'processed'", (realm_id,))
    ok = customers == want_customers and invoices == want_invoices and applied > 0
    return ok, (f"customers {customers}/{want_customers}, invoices {invoices}/{want_invoices},"
                f" webhook events applied {applied}")


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    log = setup_logging("demo", settings.log_level)
    root = settings.work_dir
    conf = root / "supervisord.conf"
    if not conf.exists():
        raise ConfigError(f"run `qbsync demo` from the qbsync checkout: {conf} not found")
    if settings.supervisor_socket.exists():
        from services.ops.supervisor_rpc import process_states

        if process_states(settings.supervisor_socket):
            raise ConfigError("supervisord is already running from this directory;"
                              " stop it first: supervisorctl -c supervisord.conf shutdown")
    bin_dir = Path(sys.executable).parent
    (root / "logs").mkdir(exist_ok=True)
    (root / "var").mkdir(exist_ok=True)

    from db.connection import Database, connect
    from db.embedded import ensure_embedded, stop_embedded
    from db.migrate import upgrade
    from services.emulator.admin import EmulatorAdmin

    with ExitStack() as cleanup:
        pgdata = settings.embedded_pg_dir
        pg_was_running = (pgdata / "postmaster.pid").exists()
        database_url = ensure_embedded(pgdata)
        if not pg_was_running:
            cleanup.callback(stop_embedded, pgdata)
        with connect(database_url) as conn:
            upgrade(conn)

        emulator_port, webhook_port = _free_port(8765), _free_port(settings.webhook_port)
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        emulator_log = open(root / "logs" / "emulator.log", "ab")  # noqa: SIM115 - closed by cleanup
        cleanup.callback(emulator_log.close)
        emulator = subprocess.Popen(
            [str(bin_dir / "qbsync"), "emulator", "--port", str(emulator_port), "--webhook-url",
             f"http://127.0.0.1:{webhook_port}/webhooks/quickbooks", "--webhook-format", "cloudevents"],
            cwd=root, stdout=emulator_log, stderr=subprocess.STDOUT)
        cleanup.callback(_stop_pid, emulator)
        admin = EmulatorAdmin(emulator_url)
        _wait_for(lambda: admin.request_counts() is not None, 60, "the emulator")
        realm_id = admin.create_realm(company_name=DEMO_COMPANY, **DEMO_SIZES)
        log.info("emulator at %s with company %r (realm %s)", emulator_url, DEMO_COMPANY, realm_id)

        env = _demo_env(settings, database_url, emulator_url, webhook_port)
        demo_settings = load_settings(env, dotenv=False)
        db = Database(database_url)
        cleanup.callback(db.close)
        from services.tokens.vault import add_tokens

        issued = admin.issue_tokens(realm_id)
        add_tokens(db, demo_settings, realm_id=realm_id, refresh_token=issued["refresh_token"],
                   access_token=issued["access_token"], expires_in=int(issued["expires_in"]),
                   company_name=DEMO_COMPANY)

        supervisord = subprocess.Popen([str(bin_dir / "supervisord"), "-n", "-c", str(conf)], cwd=root, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cleanup.callback(_stop_pid, supervisord, 60)
        from services.ops.supervisor_rpc import process_states

        _wait_for(lambda: sum(p["state"] == "RUNNING" for p in process_states(demo_settings.supervisor_socket)) == 3,
                  60, "tokenup, sync and webhook to be RUNNING")
        log.info("supervisord is running tokenup, sync and webhook (logs in %s)", root / "logs")

        changes = ChangeMaker(admin, realm_id)
        changes.start()
        cleanup.callback(changes.stop_event.set)

        if not args.no_tui:
            from tui.app import QBSyncApp

            app = QBSyncApp(db, demo_settings, supervisor_socket=demo_settings.supervisor_socket)
            if args.duration:
                threading.Timer(args.duration, lambda: app.call_from_thread(app.exit)).start()
            app.run()
        else:
            from services.core.worker import Stop

            stop = Stop()
            stop.install_signal_handlers()
            log.info("running%s; Ctrl-C stops everything", f" for {args.duration:.0f} s" if args.duration else "")
            stop.wait(args.duration if args.duration else 10 ** 9)

        if not args.duration:
            return 0
        changes.stop_event.set()
        changes.join(10)
        deadline = time.monotonic() + 45
        ok, summary = _data_flowed(db, admin, realm_id)
        while not ok and time.monotonic() < deadline:
            time.sleep(1)
            ok, summary = _data_flowed(db, admin, realm_id)
        print(f"qbsync demo: {'data flowed end to end' if ok else 'data did NOT flow'}: {summary};"
              f" {changes.changes} changes made in the emulator")
        return 0 if ok else 1
    return 1
