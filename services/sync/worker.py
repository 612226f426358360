"""`qbsync sync`: the sync worker (schedule, queued requests, webhook inbox) and `--once`.

The worker (under supervisord, PM2 semantics from services/core/worker.py):
- syncs every active realm every SYNC_INTERVAL_MINUTES (the `schedule` package), and at
  start every realm whose sync_state says it is due (so a restart does not skip a run);
  with SYNC_INTERVAL_MINUTES capped at a day this is also the daily CDC sweep that covers
  missed webhooks;
- every ~1.5 s claims queued quickbooks.sync_requests (`FOR UPDATE SKIP LOCKED`; queued →
  running → done/failed) and applies due webhook inbox events (services/sync/apply.py);
- survives database outages (logs, waits, retries; no cursor moves without its data);
- on SIGTERM finishes the current transaction and exits 0.
`--once` runs one pass over the selected realm(s)/entity and exits 1 if any entity failed.
It can run while a worker runs: writers of one (realm, entity) serialize on an advisory lock.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

import schedule

from db.connection import Database
from services.core.config import Settings
from services.core.errors import DatabaseUnavailable, describe
from services.core.logs import setup_logging
from services.core.worker import Stop, run_worker
from services.model.entities import ENTITY_NAMES
from services.sync.apply import process_inbox
from services.sync.engine import EntityOutcome, sync_realm

__all__ = ["cmd_sync", "sync_once", "run_requests", "sync_due_realms", "POLL_SECONDS"]

log = logging.getLogger("qbsync.sync")

POLL_SECONDS = 1.5
OUTAGE_WAIT_SECONDS = 5.0


def _all_realms(db: Database) -> list[str]:
    """Every realm with tokens (a needs_reauth one is then skipped with a recorded reason)."""
    with db.transaction() as conn:
        return [r[0] for r in conn.execute("SELECT realm_id FROM quickbooks.tokens WHERE status <> 'disconnected'"
                                           " ORDER BY realm_id")]


def sync_once(db: Database, settings: Settings, *, realm_id: str | None = None, entity: str | None = None,
              full: bool = False, trigger: str = "cli", stop: Stop | None = None) -> list[EntityOutcome]:
    """One pass over the selected realm(s) (default: all with tokens) and entity (default: all)."""
    realms = [realm_id] if realm_id else _all_realms(db)
    outcomes: list[EntityOutcome] = []
    for realm in realms:
        if stop is not None and stop.requested:
            break
        outcomes.extend(sync_realm(db, settings, realm, entities=[entity] if entity else None,
                                   full=full, trigger=trigger, stop=stop))
    return outcomes


def run_requests(db: Database, settings: Settings, stop: Stop | None = None) -> int:
    """Run every queued sync request, one at a time; return how many ran."""
    ran = 0
    while stop is None or not stop.requested:
        with db.transaction() as conn:
            row = conn.execute(
                "UPDATE quickbooks.sync_requests SET status = 'running', started_at = now()"
                " WHERE id = (SELECT id FROM quickbooks.sync_requests WHERE status = 'queued'"
                " ORDER BY requested_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                " RETURNING id, realm_id, entity, full_sync").fetchone()
        if row is None:
            return ran
        request_id, realm_id, entity, full = row
        status, error = "done", None
        try:
            outcomes = sync_once(db, settings, realm_id=realm_id, entity=entity, full=full,
                                 trigger="request", stop=stop)
            failed = [o for o in outcomes if not o.ok]
            if failed:
                status = "failed"
                error = "; ".join(f"{o.entity}: {o.error}" for o in failed)[:2000]
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad request must not kill the worker
            status, error = "failed", describe(exc, limit=2000)
        with db.transaction() as conn:
            conn.execute("UPDATE quickbooks.sync_requests SET status = %s, finished_at = now(), error = %s"
                         " WHERE id = %s", (status, error, request_id))
        ran += 1
    return ran


def sync_due_realms(db: Database, settings: Settings, stop: Stop | None = None, *, all_realms: bool = False) -> None:
    """Scheduled pass: every realm with tokens (all_realms) or those with an entity due now.

    Realms needing re-authorization are included: they get a 'skipped' run with the reason
    (once per interval), so the console shows why they are not syncing."""
    realms = _all_realms(db)
    if not all_realms:
        with db.transaction() as conn:
            done = {r[0] for r in conn.execute(
                "SELECT realm_id FROM quickbooks.sync_state WHERE entity = ANY(%s) GROUP BY realm_id"
                " HAVING count(*) = %s AND min(next_run_at) > now()", (list(ENTITY_NAMES), len(ENTITY_NAMES)))}
        realms = [r for r in realms if r not in done]
    for realm in realms:
        if stop is not None and stop.requested:
            return
        sync_realm(db, settings, realm, trigger="schedule", stop=stop)


def _worker_body(db: Database, settings: Settings, args: argparse.Namespace) -> Any:
    def body(stop: Stop) -> None:
        scheduler = schedule.Scheduler()
        state = {"due": True}

        def scheduled() -> None:
            state["due"] = True

        scheduler.every(settings.sync_interval_minutes).minutes.do(scheduled)
        log.info("sync worker started: every %d min, polling requests and inbox every %.1f s",
                 settings.sync_interval_minutes, POLL_SECONDS)
        first = True
        while not stop.requested:
            try:
                scheduler.run_pending()
                if state["due"]:
                    state["due"] = False
                    sync_due_realms(db, settings, stop, all_realms=not first)
                    first = False
                run_requests(db, settings, stop)
                if not stop.requested:
                    process_inbox(db, settings)
            except DatabaseUnavailable as exc:
                log.warning("database unavailable, retrying in %.0f s: %s", OUTAGE_WAIT_SECONDS, exc.one_line())
                if first:
                    state["due"] = True
                stop.wait(OUTAGE_WAIT_SECONDS)
                continue
            stop.wait(POLL_SECONDS)
        log.info("sync worker stopping")
    return body


def _fix_malloc_threshold() -> None:
    """Keep big buffers (~2 MB pages, COPY text) out of glibc's heap arenas.

    glibc raises its mmap threshold after the first large free, after which every page-sized
    buffer comes from per-thread heaps that fragment and never shrink: the process would grow
    by ~1 KB per synced row. A fixed 1 MiB threshold maps and unmaps them instead (RSS stays
    flat at ~90 MB for a 100,000-invoice load). No-op where glibc's mallopt is unavailable.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    """`qbsync sync [--once] [--realm-id R] [--entity E] [--full]`."""
    from db.connection import open_database
    from services.model.entities import get_spec

    _fix_malloc_threshold()
    setup_logging("sync", settings.log_level)
    entity = getattr(args, "entity", None)
    if entity:
        try:
            entity = get_spec(entity).name
        except ValueError as exc:
            print(f"qbsync: {exc}", file=sys.stderr)
            return 2
    db = open_database(settings, max_size=settings.max_concurrency + 4)
    try:
        if getattr(args, "once", False):
            started = time.monotonic()
            outcomes = sync_once(db, settings, realm_id=args.realm_id, entity=entity, full=args.full)
            failed = [o for o in outcomes if not o.ok]
            skipped = [o for o in outcomes if o.status == "skipped"]
            log.info("sync --once: %d runs, %d failed, %d skipped, %.1f s", len(outcomes), len(failed),
                     len(skipped), time.monotonic() - started)
            if not outcomes:
                log.warning("sync --once: no realm to sync (add one with `qbsync token add` or `qbsync connect`)")
            return 1 if failed or (skipped and args.realm_id) else 0
        if args.realm_id or entity or args.full:
            from services.sync.engine import enqueue_sync_request

            with db.transaction() as conn:
                enqueue_sync_request(conn, args.realm_id, entity, args.full, requested_by="cli")
        return run_worker("sync", settings.restart_delay_seconds, _worker_body(db, settings, args))
    finally:
        db.close()
