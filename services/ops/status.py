"""`qbsync status [--json]`: the console's data, non-interactive, with a monitoring exit code.

Reads the same read model as the console (`db.readmodel.status_snapshot`) plus
supervisord's process states, prints a short table (or exactly one JSON object with
`--json`), and returns `db.readmodel.health`'s code: 0 healthy, 1 warning, 2 critical.
An unreachable database is critical (exit 2, one line on stderr). Never prints a token.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from db.readmodel import health, status_snapshot
from services.core.config import Settings
from services.core.durations import relative, span
from services.core.errors import DatabaseUnavailable, describe
from services.core.logs import redact
from services.ops.supervisor_rpc import process_states

__all__ = ["cmd_status", "collect_status", "render_text"]


def collect_status(settings: Settings, now: datetime | None = None) -> tuple[dict[str, Any], int, list[str]]:
    """(status object with "processes", exit code, reasons). Raises DatabaseUnavailable."""
    import psycopg

    from db.connection import connect, resolve_database_url

    now = now or datetime.now(timezone.utc)
    url = resolve_database_url(settings, announce=False)
    try:
        with connect(url) as conn:
            snapshot = status_snapshot(conn, now)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL query failed: {describe(exc, name=False)}") from None
    processes = process_states(settings.supervisor_socket)
    code, reasons = health(snapshot, processes, now,
                           sync_interval_minutes=settings.sync_interval_minutes,
                           token_margin_minutes=settings.token_refresh_margin_minutes,
                           token_check_interval_seconds=settings.token_check_interval_seconds)
    out = {"realms": snapshot["realms"],
           "processes": [{"name": p["name"], "state": p["state"], "uptime_s": p["uptime_s"]}
                         for p in processes],
           "recent_errors": snapshot["recent_errors"],
           "generated_at": snapshot["generated_at"],
           "health": {"code": code, "level": ("ok", "warning", "critical")[code], "reasons": reasons}}
    return out, code, reasons


def _one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_text(status: dict[str, Any], now: datetime, out: TextIO) -> None:
    """The short human table: one block per realm, then processes, then the newest errors."""
    level = status["health"]["level"].upper()
    print(f"qbsync status: {level}", file=out)
    for reason in status["health"]["reasons"]:
        print(f"  ! {_one_line(reason, 150)}", file=out)
    if not status["realms"]:
        print("no companies: run `qbsync connect`", file=out)
    for realm in status["realms"]:
        token = realm["token"]
        name = _one_line(realm["company_name"] or "(unnamed)", 40)
        print(f"\n{name}  realm {realm['realm_id']}  {realm['environment']}", file=out)
        line = f"  token {token['status']}"
        if token["status"] == "needs_reauth":
            line += f"  -> fix: qbsync connect --realm-id {realm['realm_id']}"
        else:
            line += (f"  access {relative(token['access_expires_at'], now)}"
                     f"  refresh idle {relative(token['refresh_expires_at'], now)}"
                     f"  hard {relative(token['hard_expires_at'], now)}")
        print(line, file=out)
        if token["last_error"]:
            print(f"  token error: {_one_line(token['last_error'], 100)}", file=out)
        for ent in realm["entities"]:
            status_word = ent["last_run_status"] or "-"
            print(f"  {ent['entity']:<12} {status_word:<8} last success {relative(ent['last_success_at'], now):<12}"
                  f" rows {ent['rows']:>9,}", file=out)
            if ent["last_run_status"] == "failed" and ent["last_error"]:
                print(f"      {_one_line(ent['last_error'], 100)}", file=out)
    print("\nprocesses:", file=out)
    if not status["processes"]:
        print("  supervisord not reachable", file=out)
    for proc in status["processes"]:
        up = f"up {span(proc['uptime_s'])}" if proc["state"] == "RUNNING" else ""
        print(f"  {proc['name']:<10} {proc['state']:<9} {up}".rstrip(), file=out)
    print("\nrecent errors:", file=out)
    if not status["recent_errors"]:
        print("  none", file=out)
    for err in status["recent_errors"][:5]:
        where = " ".join(x for x in (err["realm_id"], err["entity"]) if x)
        print(f"  {relative(err['at'], now):>9} {err['service']:<8} {where:<24} {_one_line(err['message'], 80)}",
              file=out)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the status (table, or one JSON object with --json) and return the health code."""
    now = datetime.now(timezone.utc)
    try:
        status, code, _ = collect_status(settings, now)
    except DatabaseUnavailable as exc:
        print(f"qbsync: database unavailable: {exc.one_line()}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        sys.stdout.write(redact(json.dumps(status, ensure_ascii=False)) + "\n")
    else:
        import io

        buf = io.StringIO()
        render_text(status, now, buf)
        sys.stdout.write(redact(buf.getvalue()))
    sys.stdout.flush()
    return code
