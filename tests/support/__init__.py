"""What the tests share: waits, ports and processes here; the rest in focused modules.

- `support` (this module): `wait_for` (poll a condition), `get_when_listening` (the first answer
  of a server that is starting), `free_port`, `stop_process`.
- `support.samples`: `SAMPLES`, the recorded QBO payloads.
- `support.realms`: emulator companies with stored tokens (`connect_realm`,
  `create_realm_with_tokens`) and exact comparisons of the database with the emulator.
- `support.console`: seeded console rows, a real supervisord and a cuttable database link for
  the console, status and read-model tests, and `pilot_wait_for` for Textual Pilot scenarios.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import requests

__all__ = ["free_port", "wait_for", "get_when_listening", "stop_process"]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float = 20.0, what: str = "condition", *,
             interval: float = 0.05, ignore: tuple[type[BaseException], ...] = (),
             details: Callable[[], str] | None = None) -> T:
    """Poll `check` until it returns something truthy and return that; AssertionError naming
    `what` after `timeout` seconds (with the text of `details()` appended, if given).
    Exceptions in `ignore` count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except ignore:
            pass
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            raise AssertionError(f"{message}; {details()}" if details is not None else message)
        time.sleep(interval)


def get_when_listening(url: str, timeout: float, what: str | None = None, *, proc=None,
                       details: Callable[[], str] | None = None) -> requests.Response:
    """GET `url` as soon as its server accepts connections and return that response, whatever
    its status (a refused connection means "not listening yet"). With `proc`, waiting fails at
    once when that process has exited."""

    def answered() -> list[requests.Response]:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {url} answered"
                                 + (f"; {details()}" if details is not None else ""))
        return [requests.get(url, timeout=10)]  # in a list: a 4xx/5xx Response is falsy

    return wait_for(answered, timeout, what or f"{url} to answer", ignore=(requests.ConnectionError,),
                    details=details)[0]


def stop_process(proc, timeout: float = 30) -> tuple[str, str]:
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
