"""`qbsync doctor`: one line per check, so an operator sees at once what is wrong.

Checks: configuration, database reachable and migrated, Intuit (or emulator) endpoints
reachable, supervisord socket, log directory writable, webhook verifier token set.
Exit 0 when every check passes, 1 otherwise. Never prints a secret.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from services.core.config import Settings
from services.core.errors import QBSyncError
from services.core.logs import redact

__all__ = ["cmd_doctor", "run_checks", "Check"]

HTTP_TIMEOUT = (5.0, 10.0)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<12} {redact(self.detail)}"


def _configuration(settings: Settings) -> Check:
    try:
        settings.require_client()
    except QBSyncError as exc:
        return Check("config", False, exc.one_line())
    target = "the emulator" if settings.api_base_url.startswith("http://127.") else settings.environment
    return Check("config", True, f"app keys set; API {settings.api_base_url} ({target})")


def _database(settings: Settings) -> Check:
    from db.connection import connect, resolve_database_url
    from db.migrate import applied_migrations, available_migrations

    try:
        url = resolve_database_url(settings, announce=False)
        with connect(url) as conn:
            applied = applied_migrations(conn)
    except QBSyncError as exc:
        return Check("database", False, exc.one_line())
    where = "embedded ./var/pg" if not settings.database_url else urlsplit(settings.database_url).hostname
    pending = [v for v, _ in available_migrations() if v not in applied]
    if pending:
        return Check("database", False, f"reachable ({where}) but {len(pending)} migration(s) pending:"
                                        " run `qbsync db upgrade`")
    return Check("database", True, f"reachable ({where}), schema up to date")


def _endpoint(name: str, url: str) -> Check:
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        return Check(name, False, f"{url} unreachable: {type(exc).__name__}")
    return Check(name, True, f"{url} answers (HTTP {response.status_code})")


def _supervisord(settings: Settings) -> Check:
    from services.ops.supervisor_rpc import process_states

    socket = settings.supervisor_socket
    if not socket.exists():
        return Check("supervisord", False, f"no socket at {socket}: start it with"
                                           " `supervisord -c supervisord.conf`")
    states = process_states(socket)
    if not states:
        return Check("supervisord", False, f"socket {socket} does not answer")
    summary = ", ".join(f"{p['name']} {p['state']}" for p in states)
    return Check("supervisord", all(p["state"] == "RUNNING" for p in states), summary)


def _log_dir(settings: Settings) -> Check:
    folder = settings.log_dir
    if not folder.is_dir():  # doctor reports; creating it is the install step's job, not a side effect here
        return Check("logs", False, f"{folder} does not exist: run `python3 dev.py install`")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("logs", False, f"{folder} is not writable: {exc.strerror}")
    return Check("logs", True, f"{folder} writable")


def _verifier(settings: Settings) -> Check:
    if settings.webhook_verifier_token is None:
        return Check("webhook", False, "QBO_WEBHOOK_VERIFIER_TOKEN is not set: webhooks will be refused")
    return Check("webhook", True, f"verifier token set; listening on {settings.webhook_host}:{settings.webhook_port}")


def run_checks(settings: Settings) -> Iterator[Check]:
    """Every check, in order; each one catches its own failure."""
    checks: list[Callable[[], Check]] = [
        lambda: _configuration(settings),
        lambda: _database(settings),
        lambda: _endpoint("token url", settings.token_url),
        lambda: _endpoint("api", settings.api_base_url),
        lambda: _supervisord(settings),
        lambda: _log_dir(settings),
        lambda: _verifier(settings),
    ]
    for check in checks:
        yield check()


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    failed = 0
    for check in run_checks(settings):
        print(check.line(), flush=True)
        failed += not check.ok
    print(f"{failed} problem(s) found" if failed else "all checks passed")
    return 1 if failed else 0

