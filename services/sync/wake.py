"""Waking sleeping sync workers: one UDP datagram per worker when there is work for them.

A quiet sync worker sleeps until its next due run (at most IDLE_LOOK_S), so Neon can suspend
(SPEC section 13). Work that arrives meanwhile (a webhook event stored by the receiver, a sync
requested by the console or the CLI) must still reach it within seconds. Each worker listens on
a UDP port and registers it in `quickbooks.sync_workers`; whoever stores work calls
`wake_workers(conn)` in the transaction that stores it: it reads the registered addresses and
sends each a datagram carrying the transaction's id. The datagram may arrive before that
transaction commits, so the woken worker asks PostgreSQL `pg_xact_status(xid)` and looks again
once it is no longer in progress (`WakeListener.settled`), never missing the work it was woken for.

Why UDP and not LISTEN/NOTIFY: Neon's pooled endpoint (PgBouncer in transaction mode) does not
pass LISTEN; a direct connection would, but Neon closes every connection when the compute
suspends, and keeping a LISTEN open (reconnecting after each suspend) would wake the compute
straight back up. A datagram needs no database. Across machines the worker registers
SYNC_WAKE_HOST (an address the receiver's machine can reach) and the port SYNC_WAKE_PORT
(0: any free port; set a fixed one for firewalls). A datagram lost on the way costs latency,
never data: the worker still looks at least every IDLE_LOOK_S.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

__all__ = ["WakeListener", "wake_workers", "register_worker", "unregister_worker", "pending_xids",
           "IDLE_LOOK_S", "FORGET_WORKERS_AFTER"]

log = logging.getLogger("qbsync.wake")

IDLE_LOOK_S = 300.0                   # the longest a sync worker sleeps between two looks at the database
FORGET_WORKERS_AFTER = "1 day"        # registrations unseen this long are pruned (a worker killed -9)
_MAX_DATAGRAM = 64


def wake_workers(conn: psycopg.Connection) -> int:
    """Tell every registered sync worker to look now, from inside the transaction that stores
    the work; returns how many were told. Never raises for a worker that cannot be reached."""
    rows = conn.execute(
        "SELECT wake_host, wake_port, pg_current_xact_id()::text FROM quickbooks.sync_workers"
        f" WHERE seen_at > now() - interval '{FORGET_WORKERS_AFTER}'").fetchall()
    if not rows:
        return 0
    told = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for host, port, xid in rows:
            try:
                sock.sendto(xid.encode(), (host, int(port)))
                told += 1
            except OSError as exc:  # an unreachable worker looks on its own within IDLE_LOOK_S
                log.debug("could not wake the sync worker at %s:%s: %s", host, port, exc)
    return told


def register_worker(conn: psycopg.Connection, holder: str, host: str, port: int) -> None:
    """Record (or refresh) where `holder` listens, and prune registrations unseen for a day."""
    conn.execute(
        "INSERT INTO quickbooks.sync_workers (holder, wake_host, wake_port) VALUES (%s, %s, %s)"
        " ON CONFLICT (holder) DO UPDATE SET wake_host = EXCLUDED.wake_host, wake_port = EXCLUDED.wake_port,"
        " seen_at = now()", (holder, host, port))
    conn.execute(f"DELETE FROM quickbooks.sync_workers WHERE seen_at < now() - interval '{FORGET_WORKERS_AFTER}'")


def unregister_worker(conn: psycopg.Connection, holder: str) -> None:
    conn.execute("DELETE FROM quickbooks.sync_workers WHERE holder = %s", (holder,))


def pending_xids(conn: psycopg.Connection, xids: Iterable[str]) -> list[str]:
    """The transactions among `xids` that are still in progress (their work is not visible yet)."""
    wanted = sorted(set(xids))
    if not wanted:
        return []
    rows = conn.execute("SELECT x FROM unnest(%s::text[]) AS x WHERE pg_xact_status(x::xid8) = 'in progress'",
                        (wanted,)).fetchall()
    return [r[0] for r in rows]


class WakeListener:
    """A UDP socket a worker sleeps on: each datagram (a transaction id) calls every `on_wake`
    callback with it, from the listener's own thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._callbacks: list[Callable[[str], Any]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def on_wake(self, callback: Callable[[str], Any]) -> None:
        self._callbacks.append(callback)

    def start(self) -> WakeListener:
        self._thread = threading.Thread(target=self._serve, name="sync-wake", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(_MAX_DATAGRAM)
            except OSError:
                return  # closed
            xid = data.decode("ascii", errors="replace").strip()
            for callback in self._callbacks:
                callback(xid if xid.isdigit() else "")

    def close(self) -> None:
        self._closed = True
        try:
            # a datagram to ourselves ends the blocking recv at once
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"", self.address)
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(2)
        self._sock.close()
