"""The embedded default database: a PostgreSQL server under ./var/pg, started or reused.

pgserver ships the server binaries in its wheel and runs them as root too, so a fresh
machine with only Python can run qbsync. The server outlives the process that started it
(the workers, the console and the CLI all share it); `stop_embedded` stops it.
"""

from __future__ import annotations

import fcntl
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ensure_embedded", "stop_embedded"]

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_embedded(pgdata: Path, *, announce: bool = True) -> str:
    """Start (or reuse) the server in `pgdata`; return its connection URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    pgdata = pgdata.resolve()
    with _file_lock(pgdata.parent / (pgdata.name + ".lock")):
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        url = server.get_uri()
    if announce:
        print(f"qbsync: DATABASE_URL is not set; using the embedded PostgreSQL under {pgdata}",
              file=sys.stderr)
    return url


def stop_embedded(pgdata: Path, timeout_s: float = 30) -> bool:
    """Stop the embedded server in `pgdata` by its PID (fast shutdown); True if one was stopped."""
    import signal
    import time

    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True
