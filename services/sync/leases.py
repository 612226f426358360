"""Per-realm leases (SPEC section 13): one sync process works a realm at a time.

A lease is a row of `quickbooks.realm_leases` (realm_id, holder, work, expires_at). A process
takes it before working a realm (scheduled sync, requested sync, inbox application,
reconciliation), renews every lease it holds every third of SYNC_LEASE_SECONDS while it works,
and deletes it when done, so an idle install holds no lease and writes nothing. A lease whose
`expires_at` has passed (its holder died, was killed -9, or lost its machine or database) is free:
the next process that takes it records a `quickbooks.lease_takeovers` row, frees the request slots
the dead holder left in flight (services/intuit/budget.py), and resumes from the committed cursors
(a cursor only moves with the data it covers).

Everything is plain row locks in short transactions: no session state and no session advisory
locks, so it works through Neon's pooled endpoint (PgBouncer in transaction mode). Inside one
process, several kinds of work on the same realm share one lease (a count per realm): the engine's
per-(realm, entity) transaction locks already serialize their writes.

A renewal that finds its row gone or held by another process means the lease was lost (the
process stalled past SYNC_LEASE_SECONDS, or the database was away that long): the realm's work is
told to stop (`Holding.lost`) at its next page or entity, and the rows it already committed stay
correct (newer-wins upserts, cursors with their data).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

from db.connection import Database
from services.core.errors import DatabaseUnavailable

__all__ = ["Leases", "Holding", "holder_name", "acquire_lease"]

log = logging.getLogger("qbsync.leases")

# A realm is worth taking only while it still has the work it was picked for: another process may
# have done it between our look and our take. Each check runs in the take's transaction, after
# the lease row is ours, so a realm is never worked twice for one due time.
DueCheck = Callable[[psycopg.Connection, str], bool]


def holder_name() -> str:
    """`host:pid`, plus supervisord's process name when it runs us (`vps1:4242/sync_01`)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    process = os.environ.get("SUPERVISOR_PROCESS_NAME")
    return f"{name}/{process}" if process else name


def acquire_lease(conn: psycopg.Connection, realm_id: str, holder: str, work: str, lease: timedelta) -> bool:
    """Take the realm's lease if it is free or expired (recording a takeover from an expired
    holder); False when another holder's lease is current. Runs in the caller's transaction."""
    row = conn.execute(
        "INSERT INTO quickbooks.realm_leases (realm_id, holder, work, expires_at) VALUES (%s, %s, %s, now() + %s)"
        " ON CONFLICT (realm_id) DO NOTHING RETURNING realm_id", (realm_id, holder, work, lease)).fetchone()
    if row is not None:
        return True
    current = conn.execute(
        "SELECT holder, expires_at, expires_at < now() FROM quickbooks.realm_leases WHERE realm_id = %s"
        " FOR UPDATE", (realm_id,)).fetchone()
    if current is None:  # released between the two statements: take it now
        return acquire_lease(conn, realm_id, holder, work, lease)
    previous, expired_at, expired = current
    if previous != holder and not expired:
        return False
    conn.execute("UPDATE quickbooks.realm_leases SET holder = %s, work = %s, acquired_at = now(), renewed_at = now(),"
                 " expires_at = now() + %s WHERE realm_id = %s", (holder, work, lease, realm_id))
    if previous != holder:
        conn.execute("INSERT INTO quickbooks.lease_takeovers (realm_id, from_holder, to_holder, expired_at)"
                     " VALUES (%s, %s, %s, %s)", (realm_id, previous, holder, expired_at))
        # The dead holder's requests in flight will never say they finished: free their slots of the
        # realm's concurrency now rather than when their own leases end (minutes).
        conn.execute("UPDATE quickbooks.api_requests SET finished_at = clock_timestamp() WHERE realm_id = %s"
                     " AND finished_at IS NULL AND started_at < %s", (realm_id, expired_at))
        log.warning("realm %s: took over the lease of %s (expired %s)", realm_id, previous,
                    expired_at.isoformat(timespec="seconds"))
    return True


@dataclass
class Holding:
    """This process's hold on one realm: how many jobs share it, and whether it was lost."""

    realm_id: str
    works: list[str] = field(default_factory=list)
    lost: bool = False


class Leases:
    """The leases one sync process holds, renewed by a thread of its own while any is held."""

    def __init__(self, db: Database, holder: str, lease_seconds: float) -> None:
        self.db = db
        self.holder = holder
        self.lease = timedelta(seconds=lease_seconds)
        self._held: dict[str, Holding] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._thread.start()

    # -- taking and giving back --------------------------------------------------------------

    def take(self, realm_id: str, work: str, still_due: DueCheck | None = None) -> Holding | None:
        """Hold the realm for `work` (shared with this process's other jobs on it); None when
        another process holds it, or when `still_due` says the work is no longer there.
        DatabaseUnavailable propagates."""
        with self._lock:
            holding = self._held.get(realm_id)
            if holding is not None and not holding.lost:
                if still_due is not None:
                    with self.db.transaction() as conn:
                        if not still_due(conn, realm_id):
                            return None
                holding.works.append(work)
                return holding
        with self.db.transaction() as conn:
            if not acquire_lease(conn, realm_id, self.holder, work, self.lease):
                return None
            if still_due is not None and not still_due(conn, realm_id):
                conn.rollback()  # nothing to do after all: the lease was never taken
                return None
        with self._lock:
            holding = self._held.get(realm_id)
            if holding is None or holding.lost:
                holding = self._held[realm_id] = Holding(realm_id)
            holding.works.append(work)
        self._wake.set()
        return holding

    def give_back(self, holding: Holding, work: str) -> None:
        """One job on the realm is done; the last one deletes the lease row."""
        with self._lock:
            if work in holding.works:
                holding.works.remove(work)
            if holding.works:
                return  # other jobs of this process still work the realm
            if self._held.get(holding.realm_id) is holding:
                del self._held[holding.realm_id]
            if holding.lost:
                return
        try:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM quickbooks.realm_leases WHERE realm_id = %s AND holder = %s",
                             (holding.realm_id, self.holder))
        except DatabaseUnavailable as exc:  # it expires by itself within SYNC_LEASE_SECONDS
            log.warning("realm %s: could not release the lease (%s); it expires by itself", holding.realm_id,
                        exc.one_line())

    @contextmanager
    def doing(self, holding: Holding, work: str) -> Iterator[None]:
        """Name `work` on the realm's lease row (from its next renewal) while the block runs."""
        with self._lock:
            holding.works.append(work)
        try:
            yield
        finally:
            with self._lock:
                if work in holding.works:
                    holding.works.remove(work)

    def held(self) -> list[str]:
        with self._lock:
            return sorted(r for r, h in self._held.items() if not h.lost)

    def holds(self, realm_id: str) -> bool:
        with self._lock:
            holding = self._held.get(realm_id)
            return holding is not None and not holding.lost

    # -- renewal -----------------------------------------------------------------------------

    def renew(self) -> list[str]:
        """Renew every lease held; return the realms whose lease was lost meanwhile."""
        with self._lock:
            held = {r: h for r, h in self._held.items() if not h.lost}
            works = {r: (h.works[-1] if h.works else "") for r, h in held.items()}
        if not held:
            return []
        with self.db.transaction() as conn:
            kept = {r[0] for r in conn.execute(
                "UPDATE quickbooks.realm_leases AS l SET renewed_at = now(), expires_at = now() + %s,"
                " work = w.work FROM unnest(%s::text[], %s::text[]) AS w(realm_id, work)"
                " WHERE l.realm_id = w.realm_id AND l.holder = %s RETURNING l.realm_id",
                (self.lease, list(works), list(works.values()), self.holder))}
        lost = sorted(set(held) - kept)
        with self._lock:
            for realm_id in lost:
                holding = self._held.get(realm_id)
                if holding is not None:
                    holding.lost = True
                    log.error("realm %s: lost its lease (this process stalled past SYNC_LEASE_SECONDS);"
                              " stopping its work here, another process resumes it", realm_id)
        return lost

    def _renew_loop(self) -> None:
        interval = max(1.0, self.lease.total_seconds() / 3)
        while not self._closed:
            if not self.held():
                self._wake.wait()  # nothing held: nothing to renew, no query
                self._wake.clear()
                continue
            self._wake.wait(interval)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.renew()
            except DatabaseUnavailable as exc:
                log.warning("could not renew leases: %s", exc.one_line())

    def close(self) -> None:
        """Stop renewing and delete every lease still held (on SIGTERM, after the jobs ended)."""
        self._closed = True
        self._wake.set()
        self._thread.join(5)
        with self._lock:
            realms = [r for r, h in self._held.items() if not h.lost]
            self._held.clear()
        if realms:
            try:
                with self.db.transaction() as conn:
                    conn.execute("DELETE FROM quickbooks.realm_leases WHERE holder = %s AND realm_id = ANY(%s)",
                                 (self.holder, realms))
            except DatabaseUnavailable:
                pass

    def stop_for(self, holding: Holding, stop: Any) -> _RealmStop:
        """A stop flag for the realm's work: set by SIGTERM or by losing the lease."""
        return _RealmStop(stop, holding)


class _RealmStop:
    """Looks like services.core.worker.Stop to the engine: `requested`, `wait`."""

    def __init__(self, stop: Any, holding: Holding) -> None:
        self._stop = stop
        self._holding = holding

    @property
    def requested(self) -> bool:
        return bool(self._stop.requested or self._holding.lost)

    def wait(self, seconds: float) -> bool:
        return bool(self._stop.wait(seconds)) or self._holding.lost
