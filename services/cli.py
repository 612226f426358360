"""`qbsync` command line (SPEC section 4). Parsing lives here; each command lives in its module.

Every command exits non-zero on failure. Known failures (configuration, database, Intuit)
print one line to stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from services.core.errors import ConfigError, DatabaseUnavailable, QBSyncError

__all__ = ["main", "build_parser"]

# command path -> "module:function"; the function takes (args, settings) and returns an exit code.
COMMANDS: dict[str, str] = {
    "db upgrade": "services.ops.dbcmd:cmd_db_upgrade",
    "connect": "services.tokens.connect:cmd_connect",
    "token add": "services.tokens.worker:cmd_token_add",
    "token refresh": "services.tokens.worker:cmd_token_refresh",
    "token revoke": "services.tokens.worker:cmd_token_revoke",
    "tokenup": "services.cli:cmd_tokenup",
    "sync": "services.cli:cmd_sync",
    "webhook": "services.webhook.receiver:cmd_webhook",
    "status": "services.ops.status:cmd_status",
    "tui": "tui.app:cmd_tui",
    "emulator": "services.emulator.cli:cmd_emulator",
    "demo": "services.demo:cmd_demo",
    "doctor": "services.ops.doctor:cmd_doctor",
    "usage": "services.ops.usage:cmd_usage",
    "reconcile": "services.reconcile.checks:cmd_reconcile",
}
NO_SETTINGS = {"emulator"}  # runs without qbsync configuration
WORKERS = {"tokenup", "sync", "webhook"}  # run under supervisord: their lines carry timestamps
# may refresh tokens, so the app keys are checked at start, before any work (even with no realm yet)
REFRESHES_TOKENS = {"sync", "tokenup", "token add", "token refresh", "token revoke", "connect", "tui", "reconcile"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qbsync", description="QuickBooks Online -> PostgreSQL sync: tokens, sync, webhooks, console.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="create/upgrade the schema (idempotent, safe to run concurrently)")

    p = sub.add_parser("connect", help="OAuth authorization-code flow for a company")
    p.add_argument("--realm-id", help="expected realm (reconnecting a company)")
    p.add_argument("--redirect-url", help="the redirect URL from the browser (skips the prompt)")
    p.add_argument("--listen", action="store_true", help="wait for the callback on a local listener")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the callback")

    token = sub.add_parser("token", help="stored OAuth tokens").add_subparsers(dest="token_command", required=True)
    p = token.add_parser("add", help="store tokens, e.g. from Intuit's OAuth Playground")
    p.add_argument("--realm-id", required=True)
    p.add_argument("--refresh-token", required=True)
    p.add_argument("--access-token")
    p.add_argument("--expires-in", type=int, help="seconds the access token has left")
    p.add_argument("--company-name")
    p = token.add_parser("refresh", help="refresh now, even a fresh token")
    p.add_argument("--realm-id", help="one realm (default: every active realm)")
    p = token.add_parser("revoke", help="revoke at Intuit and mark the realm disconnected")
    p.add_argument("--realm-id", required=True)

    p = sub.add_parser("tokenup", help="the token worker")
    p.add_argument("--once", action="store_true", help="one pass, then exit")

    p = sub.add_parser("sync", help="the sync worker")
    p.add_argument("--once", action="store_true", help="one pass, then exit (non-zero if any entity failed)")
    p.add_argument("--realm-id")
    p.add_argument("--entity", help="one QBO entity by name (Invoice, Payment, Bill, ...: README, What is synced)")
    p.add_argument("--full", action="store_true", help="full listing with delete reconciliation")

    sub.add_parser("webhook", help="the webhook receiver")

    p = sub.add_parser("status", help="the console's data, non-interactive")
    p.add_argument("--json", action="store_true", help="one JSON object (SPEC section 4)")

    sub.add_parser("tui", help="the Textual console")

    p = sub.add_parser("emulator", help="the local QBO emulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--seed-data", action="store_true", help="generate a demo company")
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--invoices", type=int, default=3000)
    p.add_argument("--estimates", type=int, default=500)
    p.add_argument("--size", dest="sizes", action="append", metavar="ENTITY=N",
                   help="how many of another entity (e.g. Payment=800; default: in proportion to --invoices)")
    p.add_argument("--sales-tax", action="store_true", help="charge sales tax on taxable customers' sales")
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--rate-limit", type=int, default=500, help="requests per minute per realm before 429")
    p.add_argument("--webhook-url", help="deliver signed webhooks of changes here")
    p.add_argument("--webhook-format", choices=("classic", "cloudevents"), default="cloudevents")

    p = sub.add_parser("demo", help="everything locally: embedded PostgreSQL, emulator, supervisord, console")
    p.add_argument("--for", dest="duration", type=float, help="run this many seconds, check data flowed, exit")
    p.add_argument("--no-tui", action="store_true", help="do not open the console")

    sub.add_parser("doctor", help="check configuration, database, endpoints, supervisord, logs")
    p = sub.add_parser("reconcile", help="counts and books against QuickBooks' own figures")
    p.add_argument("--realm-id")
    p.add_argument("--repair", action="store_true", help="list the entities whose counts differ in full, check again")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p = sub.add_parser("usage", help="Intuit metered calls: month to date, projection, limit")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--month", type=_month, help="YYYY-MM (default: this month, UTC)")
    return parser


def cmd_sync(args: argparse.Namespace, settings: Any) -> int:
    """`qbsync sync`, wired here: the worker reconciles each realm every RECONCILE_INTERVAL_HOURS
    after its scheduled sync (reconciliation sits above the sync engine, so only a root joins them)."""
    from services.reconcile.checks import reconcile_if_due
    from services.sync.worker import cmd_sync as sync_command

    return sync_command(args, settings, after_realm=reconcile_if_due)


def cmd_tokenup(args: argparse.Namespace, settings: Any) -> int:
    """`qbsync tokenup`, wired here: it also serves the Prometheus metrics (METRICS_PORT), which
    read every layer; one tokenup runs per install, so one process serves them (SPEC section 12)."""
    from services.ops.metrics import start_metrics
    from services.tokens.worker import cmd_tokenup as tokenup_command

    return tokenup_command(args, settings, serve_metrics=start_metrics)


def _month(text: str) -> date:
    """`YYYY-MM` as the first day of that month; anything else is a usage error (exit 2)."""
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like 2026-12, got {text!r}") from None


def _command_key(args: argparse.Namespace) -> str:
    for group in ("db_command", "token_command"):
        if getattr(args, group, None):
            return f"{args.command} {getattr(args, group)}"
    return args.command


def _resolve(key: str) -> Callable[..., int]:
    module_name, func = COMMANDS[key].split(":")
    return getattr(importlib.import_module(module_name), func)


def _fail(key: str, text: str) -> None:
    """One line on stderr; under supervisord (the workers) it carries the log timestamp."""
    from services.core.logs import pm2_timestamp

    prefix = f"{pm2_timestamp()} ERROR " if key in WORKERS else ""
    print(f"{prefix}qbsync: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    key = _command_key(args)
    try:
        if key in NO_SETTINGS:
            return int(_resolve(key)(args, None) or 0)
        from services.core.config import load_settings

        # the configuration first, before the command's modules load: a bad variable is one line
        # and exit 2 at once (under supervisord, well inside startsecs even on a starved machine)
        settings = load_settings()
        if key in REFRESHES_TOKENS:
            settings.require_client()
        return int(_resolve(key)(args, settings) or 0)
    except ConfigError as exc:
        _fail(key, f"configuration error: {exc.one_line()}")
        return 2
    except DatabaseUnavailable as exc:
        _fail(key, f"database unavailable: {exc.one_line()}")
        return 1
    except QBSyncError as exc:
        _fail(key, f"{type(exc).__name__}: {exc.one_line()}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
