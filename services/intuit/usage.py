"""Counting Intuit's metered calls cheaply: in memory per process, written in batches.

Every Data API request that reached Intuit (whatever it answered) is counted by the client
under its kind (query, read, cdc, report, companyinfo) and the service that made it. The
meter writes what it counted to `quickbooks.api_usage` at most once a minute while calls keep
coming (`maybe_flush`, from the client after a call) and when a client is closed (the end of
an entity's run, of an inbox batch, of a CLI command or console action). After a failed write it
does not try again for RETRY_AFTER_S, so clients closing during an outage never wait on it. A failed write keeps the counts for
the next flush; nothing is counted twice. OAuth calls are not metered and never come here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone

from db.connection import Database
from db.usage import UsageRow, add_usage
from services.core.errors import DatabaseUnavailable

__all__ = ["UsageMeter", "METER", "FLUSH_EVERY_S"]

log = logging.getLogger("qbsync.usage")

FLUSH_EVERY_S = 60.0
RETRY_AFTER_S = 30.0  # after a failed write, counts wait this long: a closing client must not wait on a dead database


class UsageMeter:
    """Counts per database and (realm, UTC day, kind, service); see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, retry_after_s: float = RETRY_AFTER_S) -> None:
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._counts: dict[Database, Counter[tuple[str, str, str, str]]] = {}
        self._clock = clock
        self._last_flush = clock()
        self._retry_after_s = retry_after_s
        self._away_until: dict[Database, float] = {}

    def count(self, db: Database, realm_id: str, kind: str, service: str) -> None:
        day = datetime.now(timezone.utc).date().isoformat()
        with self._lock:
            self._counts.setdefault(db, Counter())[(realm_id, day, kind, service)] += 1

    def pending(self, db: Database | None = None) -> int:
        """Calls counted and not yet written (for `db`, or for every database)."""
        with self._lock:
            return sum(sum(counter.values()) for key, counter in self._counts.items() if db is None or key is db)

    def maybe_flush(self, db: Database) -> None:
        """Flush when FLUSH_EVERY_S have passed since the last flush."""
        if self._clock() - self._last_flush >= FLUSH_EVERY_S:
            self.flush(db)

    def flush(self, db: Database) -> bool:
        """Write what was counted for `db` in one transaction; False (counts kept) if it is away,
        or was away less than `retry_after_s` ago (then without trying: no wait on a dead database)."""
        if self._clock() < self._away_until.get(db, 0.0):
            return False
        with self._flushing:
            with self._lock:
                taken = self._counts.pop(db, Counter())
                self._last_flush = self._clock()
            if not taken:
                return True
            rows = [UsageRow(realm, datetime.fromisoformat(day).date(), kind, service, n)
                    for (realm, day, kind, service), n in taken.items()]
            try:
                with db.transaction() as conn:
                    add_usage(conn, rows)
            except DatabaseUnavailable as exc:
                with self._lock:
                    self._counts.setdefault(db, Counter()).update(taken)
                    self._away_until[db] = self._clock() + self._retry_after_s
                log.warning("could not record %d metered calls yet (kept for the next try): %s",
                            sum(taken.values()), exc.one_line())
                return False
            self._away_until.pop(db, None)
            return True


METER = UsageMeter()

