"""`qbsync sync`: the sync worker (schedule, queued requests, webhook inbox) and `--once`.

The worker (under supervisord, PM2 semantics from services/core/worker.py; SPEC sections 6, 12, 13):
- **Looks** at the database (one short transaction): which realms are due (every
  SYNC_INTERVAL_MINUTES per `sync_state.next_run_at`; a realm never synced is due at once;
  oldest due first), which sync requests are queued, whether webhook events wait, and whether
  Intuit's metered-call budget is nearly spent (the governor: then scheduled syncs stretch to
  once a day and webhook events are applied through CDC only).
- **Works** up to SYNC_CONCURRENCY realms at once (a thread pool), each under the realm's lease
  (services/sync/leases.py): several sync processes, on one machine or many, never work one
  realm at once or make its calls twice, and a dead one's realms pass to the others within
  SYNC_LEASE_SECONDS. A realm's lease is taken only while its work is still due (checked in the
  same transaction), so a realm another process just synced is not synced again.
- **Applies webhook events** on a thread of its own, so they reach the tables within seconds
  even while long full loads fill every slot.
- **Sleeps** until the next realm falls due, at most IDLE_LOOK_S (5 minutes): with nothing to do
  it queries the database once per five minutes, so Neon can suspend. Stored webhook events and
  queued requests wake it at once (a UDP datagram, services/sync/wake.py), and so does the end
  of one of its jobs while work is waiting.
- After a realm's scheduled sync, runs what the composition root gave it (`after_realm`: the
  daily reconciliation when RECONCILE_INTERVAL_HOURS have passed, services/reconcile).
- Survives database outages (logs, waits, retries; no cursor moves without its data); on SIGTERM
  lets each job finish its current transaction, gives its leases back and exits 0.
`--once` runs one pass over the selected realm(s)/entity and exits 1 if any entity failed.
It can run while a worker runs: writers of one (realm, entity) serialize on an advisory lock.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from db.connection import Database, scalar
from services.core.config import Settings
from services.core.errors import DatabaseUnavailable, describe
from services.core.logs import setup_logging
from services.core.worker import Stop, run_worker
from services.model.entities import ENTITIES, ENTITY_NAMES
from services.sync.apply import process_inbox
from services.sync.engine import EntityOutcome, sync_realm
from services.sync.leases import Holding, Leases, holder_name
from services.sync.wake import IDLE_LOOK_S, WakeListener, pending_xids, register_worker, unregister_worker

__all__ = ["cmd_sync", "sync_once", "SyncWorker", "AfterRealm", "IDLE_LOOK_S", "GOVERNED_INTERVAL"]

log = logging.getLogger("qbsync.sync")

OUTAGE_WAIT_SECONDS = 5.0
GOVERNED_INTERVAL = timedelta(days=1)   # the scheduled cadence while the call budget is nearly spent
FAILED_REALM_WAIT_S = 60.0              # a realm whose job raised is not retried sooner than this
REGISTER_EVERY_S = 60.0                 # the worker's sync_workers row is refreshed at most this often
GOVERNOR_EVERY_S = 60.0                 # the month's call count is re-read at most this often
QUEUE_FACTOR = 4                        # a look takes up to this many due realms per free slot
SETTLE_WAITS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # re-looks while a waking transaction is uncommitted

# The entities whose next_run_at makes a realm due: CompanyInfo and the entities outside CDC
# (TaxCode, TimeActivity...) run on their own daily cadence whenever the realm syncs. A realm with
# any entity never run (new, or its process died before reaching it) is due at once.
SCHEDULED = [name for name in ENTITY_NAMES if not (ENTITIES[name].company or ENTITIES[name].swept)]

# What runs after a realm's scheduled sync, given by the composition root (services/cli.py).
AfterRealm = Callable[[Database, Settings, str, Any], object]


def _all_realms(db: Database) -> list[str]:
    """Every realm with tokens (a needs_reauth one is then skipped with a recorded reason)."""
    with db.transaction() as conn:
        return [r[0] for r in conn.execute("SELECT realm_id FROM quickbooks.tokens WHERE status <> 'disconnected'"
                                           " ORDER BY realm_id")]


def sync_once(db: Database, settings: Settings, *, realm_id: str | None = None, entity: str | None = None,
              full: bool = False, trigger: str = "cli", stop: Any = None) -> list[EntityOutcome]:
    """One pass over the selected realm(s) (default: all with tokens) and entity (default: all)."""
    realms = [realm_id] if realm_id else _all_realms(db)
    outcomes: list[EntityOutcome] = []
    for realm in realms:
        if stop is not None and stop.requested:
            break
        outcomes.extend(sync_realm(db, settings, realm, entities=[entity] if entity else None,
                                   full=full, trigger=trigger, stop=stop))
    return outcomes


# --------------------------------------------------------------------------- what is due

_SCHEDULE_DUE = """
SELECT t.realm_id,
       CASE WHEN count(s.entity) < %(n)s THEN '-infinity'::timestamptz
            ELSE min(s.next_run_at) FILTER (WHERE s.entity = ANY(%(scheduled)s)) + %(stretch)s END AS due
  FROM quickbooks.tokens t
  LEFT JOIN quickbooks.sync_state s ON s.realm_id = t.realm_id AND s.entity = ANY(%(entities)s)
 WHERE t.status <> 'disconnected' {realm_filter}
 GROUP BY t.realm_id
"""

_LOOK = f"""
WITH due AS ({_SCHEDULE_DUE.format(realm_filter="")}),
free AS (
  SELECT d.realm_id, d.due FROM due d
   WHERE NOT EXISTS (SELECT 1 FROM quickbooks.realm_leases l
                      WHERE l.realm_id = d.realm_id AND l.holder <> %(holder)s AND l.expires_at > now()))
SELECT 'schedule', realm_id, NULL::bigint, NULL::timestamptz
  FROM (SELECT realm_id, due FROM free WHERE due <= now() ORDER BY due, realm_id LIMIT %(take)s) AS ready
UNION ALL
SELECT 'next', NULL, NULL, min(due) FROM free WHERE due > now()
UNION ALL
SELECT 'held', NULL, NULL, min(l.expires_at) FROM quickbooks.realm_leases l
 WHERE l.holder <> %(holder)s AND l.expires_at > now()
   AND (EXISTS (SELECT 1 FROM due d WHERE d.realm_id = l.realm_id AND d.due <= now())
        OR EXISTS (SELECT 1 FROM quickbooks.sync_requests q WHERE q.realm_id = l.realm_id AND q.status = 'queued'))
UNION ALL
SELECT 'request', realm_id, id, NULL FROM (
  SELECT q.id, q.realm_id FROM quickbooks.sync_requests q WHERE q.status = 'queued'
     AND NOT EXISTS (SELECT 1 FROM quickbooks.realm_leases l
                      WHERE l.realm_id = q.realm_id AND l.holder <> %(holder)s AND l.expires_at > now())
   ORDER BY q.requested_at, q.id LIMIT %(take)s) AS queued
UNION ALL
SELECT 'inbox', NULL, count(*), min(next_attempt_at) FROM quickbooks.webhook_inbox WHERE status = 'pending'
"""

_MONTH_CALLS = "SELECT COALESCE(sum(calls), 0)::bigint FROM quickbooks.api_usage WHERE day >= %s"


def _still_scheduled(stretch: timedelta) -> Callable[[psycopg.Connection, str], bool]:
    """The lease's due check for a scheduled sync: the realm is still due (nobody synced it since)."""
    sql = f"SELECT due <= now() FROM ({_SCHEDULE_DUE.format(realm_filter='AND t.realm_id = %(realm)s')}) AS d"

    def check(conn: psycopg.Connection, realm_id: str) -> bool:
        row = conn.execute(sql, {"n": len(ENTITY_NAMES), "entities": list(ENTITY_NAMES), "scheduled": SCHEDULED, "stretch": stretch,
                                 "realm": realm_id}).fetchone()
        return bool(row and row[0])
    return check


def _claim_request(request_id: int) -> Callable[[psycopg.Connection, str], bool]:
    """The lease's due check for a queued request: claim it (queued → running) or give up."""
    def check(conn: psycopg.Connection, _realm_id: str) -> bool:
        return conn.execute("UPDATE quickbooks.sync_requests SET status = 'running', started_at = now()"
                            " WHERE id = %s AND status = 'queued' RETURNING id", (request_id,)).fetchone() is not None
    return check


def _inbox_waiting(conn: psycopg.Connection, realm_id: str) -> bool:
    return conn.execute("SELECT 1 FROM quickbooks.webhook_inbox WHERE realm_id = %s AND status = 'pending'"
                        " AND next_attempt_at <= now() LIMIT 1", (realm_id,)).fetchone() is not None


@dataclass
class _Look:
    """What one look found."""

    schedule: list[str] = field(default_factory=list)
    requests: list[tuple[int, str | None]] = field(default_factory=list)
    next_due: datetime | None = None
    held_until: datetime | None = None       # due realms other processes hold: the first lease end
    inbox_pending: int = 0
    inbox_next: datetime | None = None
    waking: list[str] = field(default_factory=list)  # waking transactions not yet committed


# --------------------------------------------------------------------------- the worker


class SyncWorker:
    """The long-running sync process (see the module docstring)."""

    def __init__(self, db: Database, settings: Settings, stop: Stop, *, after_realm: AfterRealm | None = None,
                 holder: str | None = None) -> None:
        self.db = db
        self.settings = settings
        self.stop = stop
        self.after_realm = after_realm
        self.holder = holder or holder_name()
        self.concurrency = settings.sync_concurrency
        self.interval = timedelta(minutes=settings.sync_interval_minutes)
        self.leases = Leases(db, self.holder, settings.sync_lease_seconds)
        self.listener = WakeListener(settings.sync_wake_host, settings.sync_wake_port)
        self.listener.on_wake(self._woken)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="realm")
        self._jobs: dict[tuple[str, str], Future] = {}   # ("schedule", realm) / ("request", id) → job
        self._queue: list[str] = []                        # due realms found by the last look, oldest due first
        self._lock = threading.Lock()
        self._nudge = threading.Event()                    # look (or dispatch) now
        self._inbox_nudge = threading.Event()
        self._xids: set[str] = set()                       # waking transactions the dispatcher has not seen
        self._inbox_xids: set[str] = set()
        self._cooldown: dict[str, float] = {}            # realm → monotonic time its failed job may run again
        self._registered_at = float("-inf")
        self._governed = False
        self._governor_read_at = float("-inf")

    # -- wake-ups ------------------------------------------------------------------------------

    def _woken(self, xid: str) -> None:
        with self._lock:
            if xid:
                self._xids.add(xid)
                self._inbox_xids.add(xid)
        self._nudge.set()
        self._inbox_nudge.set()

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.listener.start()
        host, port = self.listener.address
        inbox = threading.Thread(target=self._inbox_loop, name="inbox", daemon=True)
        inbox.start()
        log.info("sync worker %s started: every %d min, %d realms at once, lease %d s, woken on %s:%d",
                 self.holder, self.settings.sync_interval_minutes, self.concurrency,
                 self.settings.sync_lease_seconds, host, port)
        try:
            self._dispatch_loop()
        finally:
            self._inbox_nudge.set()
            self._pool.shutdown(wait=True, cancel_futures=True)
            inbox.join(60)
            self.leases.close()
            try:
                with self.db.transaction() as conn:
                    unregister_worker(conn, self.holder)
            except DatabaseUnavailable:
                pass  # pruned after a day
            self.listener.close()
            log.info("sync worker stopping")

    def _dispatch_loop(self) -> None:
        settle = 0
        while not self.stop.requested:
            self._nudge.clear()
            try:
                found = self._look()
            except DatabaseUnavailable as exc:
                log.warning("database unavailable, retrying in %.0f s: %s", OUTAGE_WAIT_SECONDS, exc.one_line())
                self.stop.wait(OUTAGE_WAIT_SECONDS)
                continue
            self._dispatch(found)
            if found.inbox_pending and (found.inbox_next is None or found.inbox_next <= _now()):
                self._inbox_nudge.set()
            if found.waking:
                timeout = SETTLE_WAITS[min(settle, len(SETTLE_WAITS) - 1)]
                settle += 1
            else:
                settle = 0
                timeout = self._sleep_for(found)
            self._sleep(timeout)

    def _sleep(self, timeout: float) -> None:
        """Until the timeout, a wake-up, SIGTERM or a finished job (which dispatches from the queue)."""
        deadline = time.monotonic() + timeout
        while not self.stop.requested:
            left = deadline - time.monotonic()
            if left <= 0 or self._nudge.wait(min(left, 1.0)):
                return

    def _sleep_for(self, found: _Look) -> float:
        now = _now()
        candidates = [IDLE_LOOK_S]
        if found.next_due is not None:
            candidates.append((found.next_due - now).total_seconds())
        with self._lock:
            if self._cooldown:
                candidates.append(min(self._cooldown.values()) - time.monotonic())
        if found.held_until is not None:  # work another process holds: look when its lease could end
            candidates.append(max(1.0, (found.held_until - now).total_seconds()))
        return max(0.05, min(candidates))

    def _stretch(self) -> timedelta:
        return GOVERNED_INTERVAL - self.interval if self._governed and GOVERNED_INTERVAL > self.interval \
            else timedelta(0)

    def _look(self) -> _Look:
        found = _Look()
        with self._lock:
            xids = list(self._xids)
            self._xids.clear()
            free = self.concurrency - len(self._jobs)
        with self.db.transaction() as conn:
            clock = time.monotonic()
            if clock - self._registered_at >= REGISTER_EVERY_S:
                register_worker(conn, self.holder, *self.listener.address)
                self._registered_at = clock
            found.waking = pending_xids(conn, xids)
            if clock - self._governor_read_at >= GOVERNOR_EVERY_S:
                self._govern(int(scalar(conn, _MONTH_CALLS, (_now().date().replace(day=1),))))
                self._governor_read_at = clock
            rows = conn.execute(_LOOK, {
                "n": len(ENTITY_NAMES), "entities": list(ENTITY_NAMES), "scheduled": SCHEDULED, "stretch": self._stretch(),
                "holder": self.holder, "take": max(1, free) * QUEUE_FACTOR}).fetchall()
        for kind, realm_id, number, at in rows:
            if kind == "schedule":
                found.schedule.append(realm_id)
            elif kind == "request":
                found.requests.append((int(number), realm_id))
            elif kind == "next":
                found.next_due = at
            elif kind == "held":
                found.held_until = at
            elif kind == "inbox":
                found.inbox_pending, found.inbox_next = int(number or 0), at
        with self._lock:
            self._xids.update(found.waking)
        return found

    def _govern(self, calls: int) -> None:
        """The governor (SPEC section 12): under QBO_CALL_RESERVE_PERCENT of the month's limit left."""
        limit = self.settings.monthly_call_limit
        governed = limit - calls < limit * self.settings.call_reserve_percent / 100
        if governed != self._governed:
            if governed:
                log.warning("governor on: %d of %d metered calls made this month, under %g %% left: scheduled syncs"
                            " run once a day, webhook events are applied through CDC", calls, limit,
                            self.settings.call_reserve_percent)
            else:
                log.info("governor off: %d of %d metered calls made this month", calls, limit)
        self._governed = governed

    # -- dispatching -----------------------------------------------------------------------------

    def _dispatch(self, found: _Look) -> None:
        with self._lock:
            for request_id, realm_id in found.requests:
                key = ("request", str(request_id))
                if key not in self._jobs and len(self._jobs) < self.concurrency:
                    self._start(key, self._request_job, request_id, realm_id)
            now = time.monotonic()
            self._cooldown = {r: t for r, t in self._cooldown.items() if t > now}
            self._queue = [r for r in found.schedule if ("schedule", r) not in self._jobs and r not in self._cooldown]
            self._fill()

    def _fill(self) -> None:
        """Start queued scheduled realms while slots are free (caller holds self._lock)."""
        while self._queue and len(self._jobs) < self.concurrency and not self.stop.requested:
            realm_id = self._queue.pop(0)
            if ("schedule", realm_id) not in self._jobs:
                self._start(("schedule", realm_id), self._schedule_job, realm_id)

    def _start(self, key: tuple[str, str], job: Callable[..., None], *args: Any) -> None:
        future = self._pool.submit(self._guarded, key, job, *args)
        self._jobs[key] = future

    def _guarded(self, key: tuple[str, str], job: Callable[..., None], *args: Any) -> None:
        """Run a job; a failed realm waits before it is tried again (it is still due, and would
        otherwise be picked by the very next look)."""
        try:
            job(*args)
        except DatabaseUnavailable as exc:
            log.warning("%s %s stopped: database unavailable: %s", key[0], key[1], exc.one_line())
            self._cool(key, OUTAGE_WAIT_SECONDS)
        except Exception as exc:  # one realm's failure must not stop the others (logged, retried later)
            log.error("%s %s failed: %s", key[0], key[1], describe(exc))
            log.debug("traceback", exc_info=True)
            self._cool(key, FAILED_REALM_WAIT_S)
        finally:
            with self._lock:
                self._jobs.pop(key, None)
                self._fill()
                if not self._queue:
                    self._nudge.set()  # the queue ran dry: look for more

    def _cool(self, key: tuple[str, str], seconds: float) -> None:
        if key[0] == "schedule":
            with self._lock:
                self._cooldown[key[1]] = time.monotonic() + seconds

    def _schedule_job(self, realm_id: str) -> None:
        holding = self.leases.take(realm_id, "schedule", _still_scheduled(self._stretch()))
        if holding is None:
            return
        try:
            stop = self.leases.stop_for(holding, self.stop)
            sync_realm(self.db, self.settings, realm_id, trigger="schedule", stop=stop)
            if self.after_realm is not None and not stop.requested:
                with self.leases.doing(holding, "reconcile"):
                    self.after_realm(self.db, self.settings, realm_id, stop)
        finally:
            self.leases.give_back(holding, "schedule")

    def _request_job(self, request_id: int, realm_id: str | None) -> None:
        """A queued request: one realm, or every realm (each under its own lease)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT entity, full_sync FROM quickbooks.sync_requests WHERE id = %s AND"
                               " status = 'queued'", (request_id,)).fetchone()
        if row is None:
            return
        entity, full = row
        if realm_id is not None:
            holding = self.leases.take(realm_id, "request", _claim_request(request_id))
            if holding is None:
                return  # another process claimed it, or holds the realm: it stays queued for the next look
            try:
                self._run_request(request_id, [realm_id], entity, full, {realm_id: holding})
            finally:
                self.leases.give_back(holding, "request")
            return
        with self.db.transaction() as conn:
            if not _claim_request(request_id)(conn, ""):
                return
        self._run_request(request_id, _all_realms(self.db), entity, full, {})

    def _run_request(self, request_id: int, realms: list[str], entity: str | None, full: bool,
                     holdings: dict[str, Holding]) -> None:
        status, errors = "done", []
        pending = list(realms)
        try:
            while pending and not self.stop.requested:
                for realm_id in list(pending):
                    holding = holdings.get(realm_id) or self.leases.take(realm_id, "request")
                    if holding is None:
                        continue  # another process works it: again in a moment
                    try:
                        outcomes = sync_realm(self.db, self.settings, realm_id, entities=[entity] if entity else None,
                                              full=full, trigger="request",
                                              stop=self.leases.stop_for(holding, self.stop))
                    finally:
                        if realm_id not in holdings:
                            self.leases.give_back(holding, "request")
                    pending.remove(realm_id)
                    errors += [f"{o.entity}: {o.error}" for o in outcomes if not o.ok]
                if pending:
                    self.stop.wait(1.0)
            if pending:
                status, errors = "failed", [*errors, f"stopped before {len(pending)} realm(s)"]
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad request must not kill the worker
            status, errors = "failed", [describe(exc, limit=2000)]
        if errors:
            status = "failed"
        with self.db.transaction() as conn:
            conn.execute("UPDATE quickbooks.sync_requests SET status = %s, finished_at = now(), error = %s"
                         " WHERE id = %s", (status, "; ".join(errors)[:2000] or None, request_id))

    # -- the inbox -------------------------------------------------------------------------------

    def _inbox_loop(self) -> None:
        """Apply due webhook events of every realm this process can hold, when woken."""
        timeout: float | None = None
        settle = 0
        while not self.stop.requested:
            self._inbox_nudge.wait(timeout)
            self._inbox_nudge.clear()
            if self.stop.requested:
                return
            try:
                timeout, waking = self._apply_inbox()
            except DatabaseUnavailable as exc:
                log.warning("inbox: database unavailable, retrying in %.0f s: %s", OUTAGE_WAIT_SECONDS,
                            exc.one_line())
                timeout, waking = OUTAGE_WAIT_SECONDS, False
            if waking:
                timeout = SETTLE_WAITS[min(settle, len(SETTLE_WAITS) - 1)]
                settle += 1
            else:
                settle = 0

    def _apply_inbox(self) -> tuple[float | None, bool]:
        """One round: (seconds until the next retry falls due or None, whether a waking transaction
        is still uncommitted)."""
        with self._lock:
            xids = list(self._inbox_xids)
            self._inbox_xids.clear()
        with self.db.transaction() as conn:
            waking = pending_xids(conn, xids)
            rows = conn.execute(
                "SELECT realm_id, min(next_attempt_at) <= now(), min(next_attempt_at) FROM quickbooks.webhook_inbox"
                " WHERE status = 'pending' GROUP BY realm_id ORDER BY min(next_attempt_at)").fetchall()
        with self._lock:
            self._inbox_xids.update(waking)
        later: list[datetime] = []
        for realm_id, due, at in rows:
            if self.stop.requested:
                break
            if not due:
                later.append(at)
                continue
            holding = self.leases.take(realm_id, "inbox", _inbox_waiting)
            if holding is None:  # another process holds the realm (its worker applies them), or none is left
                later.append(_now() + timedelta(seconds=self.settings.sync_lease_seconds / 3))
                continue
            try:
                process_inbox(self.db, self.settings, realms=[realm_id], cdc_only=self._governed)
            finally:
                self.leases.give_back(holding, "inbox")
        timeout = max(0.05, (min(later) - _now()).total_seconds()) if later else None
        return timeout, bool(waking)


def _now() -> datetime:
    return datetime.now(timezone.utc)


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


def pool_size(settings: Settings) -> int:
    """Connections a worker may need at once: per realm in work, its fetchers' request budget, two
    page writers and a run record; plus the inbox, the lease renewal and the dispatcher."""
    return settings.sync_concurrency * (settings.max_concurrency + 3) + 4


def cmd_sync(args: argparse.Namespace, settings: Settings, *, after_realm: AfterRealm | None = None) -> int:
    """`qbsync sync [--once] [--realm-id R] [--entity E] [--full]`. The worker calls `after_realm`
    after each realm's scheduled sync (the composition root passes the daily reconciliation)."""
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
    once = getattr(args, "once", False)
    db = open_database(settings, max_size=settings.max_concurrency + 4 if once else pool_size(settings),
                       service="sync")
    try:
        if once:
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

        def body(stop: Stop) -> None:
            try:
                worker = SyncWorker(db, settings, stop, after_realm=after_realm)
            except OSError as exc:
                from services.core.errors import ConfigError

                raise ConfigError(f"cannot listen for wake-ups on {settings.sync_wake_host}:"
                                  f"{settings.sync_wake_port} (SYNC_WAKE_HOST/SYNC_WAKE_PORT):"
                                  f" {exc.strerror or exc}") from None
            worker.run()

        return run_worker("sync", settings.restart_delay_seconds, body)
    finally:
        db.close()
