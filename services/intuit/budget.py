"""The per-realm request budget, shared by every qbsync process through PostgreSQL.

Intuit allows 500 requests per minute per realm and about 10 concurrent ones; qbsync stays
under QBO_MAX_REQUESTS_PER_MINUTE and QBO_MAX_CONCURRENCY across all its processes together.
Each request is one row of `quickbooks.api_requests` (started_at, lease_until, finished_at).

`RateBudget.acquire()` takes a slot:
  1. in a short transaction, take `pg_advisory_xact_lock(hashtext('qbsync-budget:' || realm))`
     (transaction-scoped, so PgBouncer-safe), read the database clock, and check that fewer
     than `per_minute` requests started within the last `window_s` seconds and fewer than
     `concurrency` are in flight (finished_at NULL and lease_until in the future);
  2. if both hold, insert the row and commit (the lock goes with the commit);
     otherwise commit, sleep until the oldest start that blocks us leaves the window (or a
     short poll for a concurrency slot), and try again;
  3. when the block exits, set finished_at in another short transaction. A process that
     dies holding a slot frees it when lease_until passes.
All times are the database's (clock_timestamp()), so the processes' clocks do not matter.
Old rows are deleted now and then by whoever holds the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from db.connection import Database, one
from services.core.errors import DatabaseUnavailable

__all__ = ["RateBudget", "Slot"]

log = logging.getLogger("qbsync.budget")

CONCURRENCY_POLL_S = 0.1  # how often a process waiting only for a concurrency slot looks again
CLEANUP_EVERY = 50        # acquisitions between deletions of old rows (per RateBudget)
KEEP_WINDOWS = 5          # rows older than this many windows (and not in flight) are deleted

# Slots whose release failed (the database went away while their request ran): released by the
# next slot taken in this process, so an outage does not leave the realm's concurrency "full" of
# finished requests until their leases end (minutes after the database is back).
_unreleased: set[int] = set()
_unreleased_lock = threading.Lock()

_CHECK = """
WITH now AS (SELECT clock_timestamp() AS t)
SELECT now.t,
       (SELECT r.started_at FROM quickbooks.api_requests r
         WHERE r.realm_id = %(realm)s
           AND r.started_at > now.t - make_interval(secs => %(window)s)
         ORDER BY r.started_at DESC
         OFFSET %(offset)s LIMIT 1) AS blocking_start,
       (SELECT count(*) FROM quickbooks.api_requests r
         WHERE r.realm_id = %(realm)s AND r.finished_at IS NULL AND r.lease_until > now.t) AS in_flight,
       (SELECT min(r.lease_until) FROM quickbooks.api_requests r
         WHERE r.realm_id = %(realm)s AND r.finished_at IS NULL AND r.lease_until > now.t) AS first_lease_end
  FROM now
"""

_INSERT = """
INSERT INTO quickbooks.api_requests (realm_id, started_at, lease_until)
VALUES (%(realm)s, clock_timestamp(), clock_timestamp() + make_interval(secs => %(lease)s))
RETURNING id, started_at
"""

_CLEANUP = """
DELETE FROM quickbooks.api_requests
 WHERE realm_id = %(realm)s
   AND started_at < clock_timestamp() - make_interval(secs => %(keep)s)
   AND (finished_at IS NOT NULL OR lease_until < clock_timestamp())
"""


@dataclass(frozen=True)
class Slot:
    """One granted request: its api_requests row id, its start (database time), the wait."""

    id: int
    started_at: datetime
    waited_s: float


class RateBudget:
    """A cross-process request budget for one realm (see the module docstring)."""

    def __init__(self, db: Database, realm_id: str, per_minute: int, concurrency: int, *,
                 window_s: float = 60.0, lease_s: float = 180.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be at least 1, got {per_minute}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if window_s <= 0 or lease_s <= 0:
            raise ValueError("window_s and lease_s must be positive")
        self.db = db
        self.realm_id = realm_id
        self.per_minute = per_minute
        self.concurrency = concurrency
        self.window_s = float(window_s)
        self.lease_s = float(lease_s)
        self._sleep = sleep
        self._lock_key = f"qbsync-budget:{realm_id}"
        self._acquired = 0
        self.waited_s = 0.0  # total time this instance spent waiting for slots

    @contextmanager
    def acquire(self) -> Iterator[Slot]:
        """Hold one request slot for the duration of the block.

        Guarantees: when the block starts, this realm had fewer than `per_minute` starts in
        the last `window_s` seconds and fewer than `concurrency` requests in flight, counted
        over every process sharing the database, and this request is now counted in both.
        Raises DatabaseUnavailable if the database cannot be reached to take the slot.
        """
        slot = self._take()
        try:
            yield slot
        finally:
            self._release(slot)

    def _take(self) -> Slot:
        waited = 0.0
        while True:
            granted, wait_s = self._try_take(waited)
            if granted is not None:
                self.waited_s += waited
                return granted
            self._sleep(wait_s)
            waited += wait_s

    def _try_take(self, waited: float) -> tuple[Slot | None, float]:
        """One locked check: (slot, 0) when granted, else (None, seconds to wait)."""
        with _unreleased_lock:
            leftover = sorted(_unreleased)
        with self.db.transaction() as conn:
            if leftover:
                conn.execute("UPDATE quickbooks.api_requests SET finished_at = clock_timestamp()"
                             " WHERE id = ANY(%s) AND finished_at IS NULL", (leftover,))
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_key,))
            now, blocking_start, in_flight, first_lease_end = one(conn, _CHECK, {
                "realm": self.realm_id, "window": self.window_s, "offset": self.per_minute - 1,
            })
            wait_rate = 0.0
            if blocking_start is not None:
                wait_rate = max(0.0, (blocking_start - now).total_seconds() + self.window_s)
            wait_conc = 0.0
            if in_flight >= self.concurrency:
                until_lease = (first_lease_end - now).total_seconds() if first_lease_end else 0.0
                wait_conc = max(0.001, min(CONCURRENCY_POLL_S, until_lease))
            if wait_rate > 0 or wait_conc > 0:
                # A few ms past the edge so the next check finds the start out of the window.
                return None, max(wait_rate + 0.002 if wait_rate > 0 else 0.0, wait_conc)
            row_id, started_at = one(conn, _INSERT, {
                "realm": self.realm_id, "lease": self.lease_s})
            self._acquired += 1
            if self._acquired % CLEANUP_EVERY == 1:
                conn.execute(_CLEANUP, {"realm": self.realm_id,
                                        "keep": max(KEEP_WINDOWS * self.window_s, self.lease_s)})
        if leftover:
            with _unreleased_lock:
                _unreleased.difference_update(leftover)
        return Slot(id=row_id, started_at=started_at, waited_s=waited), 0.0

    def _release(self, slot: Slot) -> None:
        try:
            with self.db.transaction() as conn:
                conn.execute("UPDATE quickbooks.api_requests SET finished_at = clock_timestamp() "
                             "WHERE id = %s", (slot.id,))
        except DatabaseUnavailable as exc:
            with _unreleased_lock:
                _unreleased.add(slot.id)
            log.warning("could not release request slot %s for realm %s (%s); the next request"
                        " releases it", slot.id, self.realm_id, exc)
