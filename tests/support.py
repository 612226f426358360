"""Small helpers the process-level tests share."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["free_port", "wait_for", "stop_process", "realm_synced", "request_status"]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float = 20.0, what: str = "condition", *,
             interval: float = 0.05, ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Poll `check` until it returns something truthy and return that; AssertionError naming
    `what` after `timeout` seconds. Exceptions in `ignore` count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except ignore:
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc, timeout: float = 30) -> tuple[str, str]:  # noqa: ANN001
    """SIGTERM, wait up to `timeout`, then SIGKILL; returns the remaining (stdout, stderr) if piped."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    out, err = proc.communicate() if proc.stdout or proc.stderr else (None, None)
    return out or "", err or ""


def realm_synced(db, realm: str) -> bool:  # noqa: ANN001
    """True once every entity of `realm` has a successful last run."""
    with db.transaction() as conn:
        return conn.execute("SELECT count(*) FROM quickbooks.sync_state WHERE realm_id = %s"
                            " AND last_run_status = 'success'", (realm,)).fetchone()[0] == 5


def request_status(db, request_id: int) -> str:  # noqa: ANN001
    """The status of one quickbooks.sync_requests row."""
    with db.transaction() as conn:
        return conn.execute("SELECT status FROM quickbooks.sync_requests WHERE id = %s", (request_id,)).fetchone()[0]
