"""`qbsync status [--json]`: the console's data, non-interactive, with a monitoring exit code.

Reads the same read model as the console (`db.readmodel.status_snapshot`) plus
supervisord's process states, prints a short table (or exactly one JSON object with
`--json`), and returns `db.readmodel.health`'s code: 0 healthy, 1 warning, 2 critical.
The table lists every entity, one block per group (`db.readmodel.group_summaries`): the
group's summary line, then its entities with their row counts, then a failed entity's error;
it also shows the month's metered API calls (SPEC section 12) and which sync process works
each realm, with the leases taken over from dead ones (SPEC section 13).
An unreachable database is critical (exit 2, one line on stderr). Never prints a token.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from db.readmodel import (
    GOVERNOR_EFFECT,
    entity_state,
    group_summaries,
    health,
    lease_overdue_s,
    percent_of,
    status_snapshot,
)
from services.core.config import Settings
from services.core.durations import relative, span
from services.core.errors import DatabaseUnavailable, describe
from services.core.logs import redact
from services.ops.supervisor_rpc import process_states

__all__ = ["cmd_status", "collect_status", "render_text", "usage_line", "lease_lines"]


def collect_status(settings: Settings, now: datetime | None = None) -> tuple[dict[str, Any], int, list[str]]:
    """(status object with "processes", exit code, reasons). Raises DatabaseUnavailable."""
    import psycopg

    from db.connection import connect, resolve_database_url

    now = now or datetime.now(timezone.utc)
    url = resolve_database_url(settings, announce=False)
    try:
        with connect(url) as conn:
            # "stale" as health() judges it: no success for 2 x SYNC_INTERVAL_MINUTES; the usage
            # meter in the same connection (and transaction) as the rest of the snapshot.
            snapshot = status_snapshot(conn, now, stale_after=timedelta(minutes=2 * settings.sync_interval_minutes),
                                       call_limit=settings.monthly_call_limit,
                                       call_reserve_percent=settings.call_reserve_percent)
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
           "usage": snapshot["usage"],
           "generated_at": snapshot["generated_at"],
           "health": {"code": code, "level": ("ok", "warning", "critical")[code], "reasons": reasons}}
    return out, code, reasons


def _one_line(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


ENTITY_LINE_WIDTH = 92


def _entity_word(ent: dict[str, Any], marked: bool) -> str:
    """'Invoice 12,873', 'Bill 4,210 FAILED', 'Item 187 stale', 'TaxAgency never'. Stale and never
    are marked only with `marked`: when a group's entities are all in one state, its line says it."""
    state = entity_state(ent)
    word = ent["entity"] if state == "never" else f"{ent['entity']} {ent['rows']:,}"
    if state == "failed":
        return f"{word} FAILED"
    if marked and state != "ok":
        return f"{word} {state}"
    return word


def _wrap(words: list[str], width: int) -> list[str]:
    """The words joined by ' · ', in lines of at most `width` (a word is never split)."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 3 + len(word) <= width:
            lines[-1] += " · " + word
        else:
            lines.append(word)
    return lines


def usage_line(usage: dict[str, Any]) -> str:
    """'API calls 2026-11: 12,345 made, projected 40,100 of 500,000 (8 %)', and the governor when on."""
    line = (f"API calls {usage['month']}: {usage['calls']:,} made, projected {usage['projected']:,} of "
            f"{usage['limit']:,} ({percent_of(usage['projected'], usage['limit'])} %)")
    if usage["governed"]:
        line += f"  governor on: {GOVERNOR_EFFECT}"
    return line


def _at(value: str) -> str:
    return f"{datetime.fromisoformat(value).astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def lease_lines(realm: dict[str, Any], now: datetime) -> list[str]:
    """Who works the realm ('worked by vps1:4242/w1 (schedule), lease renewed 3s ago'), an expired
    lease nobody took over yet, and the recent takeovers, newest first."""
    lines = []
    lease = realm.get("lease")
    if lease:
        holder = f"{_one_line(lease['holder'], 60)} ({_one_line(lease['work'], 20)})"
        overdue = lease_overdue_s(lease, now)
        if overdue is not None:
            lines.append(f"! lease of {holder} expired {int(overdue)} s ago, "
                         "not taken over yet (a sync process died?)")
        else:
            lines.append(f"worked by {holder}, lease renewed {relative(lease['renewed_at'], now)}, "
                         f"expires {relative(lease['expires_at'], now)}")
    for takeover in realm.get("takeovers", []):
        lines.append(f"lease taken over from {_one_line(takeover['from_holder'], 40)} by "
                     f"{_one_line(takeover['to_holder'], 40)} at {_at(takeover['at'])} "
                     f"({relative(takeover['at'], now)})")
    return lines


def render_text(status: dict[str, Any], now: datetime, out: TextIO) -> None:
    """The short human table: the level and its reasons, the month's API calls, one block per
    realm (its token, who works it, then every entity, group by group), then processes, then
    the newest errors."""
    level = status["health"]["level"].upper()
    print(f"qbsync status: {level}", file=out)
    for reason in status["health"]["reasons"]:
        print(f"  ! {_one_line(reason, 150)}", file=out)
    if status.get("usage"):
        print(usage_line(status["usage"]), file=out)
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
        for line in lease_lines(realm, now):
            print(f"  {line}", file=out)
        books = realm.get("reconciliation")
        if books:
            line = f"  books {books['status']} (reconciled {relative(books['checked_at'], now)})"
            if books["drifts"]:
                first = books["drifts"][0]
                line += f": {_one_line(first['detail'] or first['subject'], 90)}"
                line += f" (+{len(books['drifts']) - 1} more)" if len(books["drifts"]) > 1 else ""
            print(line, file=out)
        by_name = {ent["entity"]: ent for ent in realm["entities"]}
        for group in group_summaries(realm):
            parts = group.parts()
            counts = "; ".join(text for _, text in parts)
            print(f"  {group.group:<10} {_one_line(counts, 34):<34} oldest success "
                  f"{relative(group.oldest_success_at, now):<10} rows {group.rows:>9,}", file=out)
            members = [by_name[name] for name in group.entities]
            words = [_entity_word(ent, marked=len(parts) > 1) for ent in members]
            for line in _wrap(words, ENTITY_LINE_WIDTH):
                print(f"      {line}", file=out)
            for ent in members:
                if ent["last_run_status"] == "failed" and ent["last_error"]:
                    print(f"      ! {ent['entity']}: {_one_line(ent['last_error'], 100)}", file=out)
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
