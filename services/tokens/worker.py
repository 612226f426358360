"""`qbsync tokenup` (the token worker) and the `qbsync token add|refresh|revoke` commands.

Every TOKEN_CHECK_INTERVAL_SECONDS the worker refreshes, through `services.tokens.vault.refresh_realm`,
each active realm whose access token is inside TOKEN_REFRESH_MARGIN_MINUTES or whose refresh
token has not been used for 24 h, and records a warning 30 and 7 days before a refresh
token's 5-year hard expiry (once each). Each realm is independent:

- invalid_grant: the realm becomes `needs_reauth` (recorded by refresh_realm) and is not
  called again; the other realms go on;
- invalid_client: a configuration error, recorded and logged; the worker stays up and tries
  again after INVALID_CLIENT_RETRY_S (slowly: the keys will not fix themselves);
- network errors, 429 and 5xx: that realm backs off (services/core/retry.py), the others go on;
- PostgreSQL unreachable: logged, waited out with backoff, never fatal.

SIGTERM lets the refresh in flight finish (its HTTP call has timeouts) and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db.connection import Database
from services.core.config import Settings
from services.core.errors import (
    DatabaseUnavailable,
    FatalQBOError,
    InvalidClient,
    NeedsReauth,
    QBSyncError,
    Retriable,
    describe,
)
from services.core.retry import MAX_ATTEMPTS, backoff_delay, retry_call
from services.core.worker import Stop, run_worker

if TYPE_CHECKING:
    from services.tokens.vault import RefreshResult

__all__ = ["TokenWorker", "PassOutcome", "cmd_tokenup", "cmd_token_add", "cmd_token_refresh",
           "cmd_token_revoke", "INVALID_CLIENT_RETRY_S", "FATAL_RETRY_S"]

log = logging.getLogger("tokenup")

INVALID_CLIENT_RETRY_S = 300.0  # wrong app keys: look again every 5 minutes
FATAL_RETRY_S = 900.0  # an unexpected token-endpoint refusal for one realm: every 15 minutes
HARD_EXPIRY_WARNINGS = ((7, "hard_expiry_7d"), (30, "hard_expiry_30d"))
_REALM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class PassOutcome:
    """What one pass did: realm ids refreshed, and realm id -> error one-liner for failures."""

    refreshed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class TokenWorker:
    """The tokenup loop's state: per-realm backoff and the invalid_client cool-down (monotonic clock)."""

    def __init__(self, db: Database, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.failures: dict[str, int] = {}
        self.next_attempt: dict[str, float] = {}
        self.client_blocked_until = 0.0

    # ------------------------------------------------------------------ queries

    def due_realms(self) -> list[str]:
        """Active realms inside the margin, without a usable access token, or unused for 24 h."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                """SELECT realm_id FROM quickbooks.tokens
                   WHERE is_active AND status = 'active' AND refresh_token <> '' AND (
                         access_token IS NULL OR expires_at IS NULL
                      OR expires_at < clock_timestamp() + make_interval(mins => %s)
                      OR last_refreshed_at IS NULL
                      OR last_refreshed_at < clock_timestamp() - interval '24 hours')
                   ORDER BY expires_at NULLS FIRST, realm_id""",
                (self.settings.token_refresh_margin_minutes,)).fetchall()
        return [r[0] for r in rows]

    def warn_hard_expiry(self) -> list[tuple[str, str]]:
        """Record (once each) a warning 30 and 7 days before a refresh token's hard expiry."""
        from services.tokens.vault import record_event

        warned: list[tuple[str, str]] = []
        with self.db.transaction() as conn:
            rows = conn.execute(
                """SELECT realm_id, refresh_token_hard_expires_at,
                          extract(epoch FROM refresh_token_hard_expires_at - clock_timestamp())
                   FROM quickbooks.tokens
                   WHERE is_active AND status = 'active'
                     AND refresh_token_hard_expires_at < clock_timestamp() + interval '30 days'""").fetchall()
            for realm_id, hard, seconds_left in rows:
                days = float(seconds_left) / 86400
                event = next(name for limit, name in HARD_EXPIRY_WARNINGS if days <= limit)
                detail = f"refresh token hard expiry {hard.isoformat(timespec='seconds')}"
                seen = conn.execute("SELECT 1 FROM quickbooks.token_events WHERE realm_id = %s AND event = %s"
                                    " AND detail = %s", (realm_id, event, detail)).fetchone()
                if seen:
                    continue
                record_event(conn, realm_id, event, detail)
                warned.append((realm_id, event))
                log.warning("realm %s: the refresh token reaches its 5-year hard expiry on %s (%.0f days);"
                            " reconnect the company before then: qbsync connect --realm-id %s",
                            realm_id, hard.isoformat(timespec="minutes"), max(days, 0), realm_id)
        return warned

    # ------------------------------------------------------------------ one realm

    def refresh_one(self, realm_id: str, stop: Stop, *, attempts: int = 1) -> str | None:
        """Refresh one due realm; None on success, else the error one-liner. Transient failures
        are retried up to `attempts` times in all (`retry_call`, waiting on `stop`); the streak
        of failures across passes sets when the realm is next tried."""
        from services.tokens.vault import refresh_realm

        def refresh() -> None:
            refresh_realm(self.db, self.settings, realm_id, reason="tokenup", service="tokenup")

        def failed(_failures: int, exc: BaseException, delay: float) -> None:
            assert isinstance(exc, Retriable)  # retry_call retries only these
            self._note_failure(realm_id, exc, delay)

        try:
            retry_call(refresh, base_s=self.settings.retry_base_seconds, retry_on=(Retriable,),
                       attempts=attempts, sleep=stop.wait, on_retry=failed)
        except NeedsReauth as exc:
            log.error("realm %s needs re-authorization; not calling Intuit for it again: %s",
                      realm_id, exc.one_line())
            self._forget(realm_id)
            return exc.one_line()
        except InvalidClient as exc:
            log.error("configuration error: %s (tokenup stays up and retries in %.0f s)",
                      exc.one_line(), INVALID_CLIENT_RETRY_S)
            self.client_blocked_until = self.clock() + INVALID_CLIENT_RETRY_S
            return exc.one_line()
        except FatalQBOError as exc:
            log.error("realm %s: refresh refused: %s (next try in %.0f s)", realm_id, exc.one_line(),
                      FATAL_RETRY_S)
            self.next_attempt[realm_id] = self.clock() + FATAL_RETRY_S
            return exc.one_line()
        except Retriable as exc:
            if stop.requested:  # the retry wait was cut short: that failure is already noted
                return exc.one_line()
            delay = backoff_delay(self.failures.get(realm_id, 0), self.settings.retry_base_seconds,
                                  retry_after=exc.retry_after)
            self._note_failure(realm_id, exc, delay)
            return exc.one_line()
        self._forget(realm_id)
        return None

    def _note_failure(self, realm_id: str, exc: Retriable, delay: float) -> None:
        """One more transient failure of the realm's streak: next try after `delay`; the first
        failure of a streak goes to the errors table."""
        from db.errorlog import record_error_safely

        count = self.failures.get(realm_id, 0)
        self.failures[realm_id] = count + 1
        self.next_attempt[realm_id] = self.clock() + delay
        log.warning("realm %s: refresh failed, retrying in %.1f s: %s", realm_id, delay, exc.one_line())
        if count == 0:
            record_error_safely(self.db, "tokenup", exc.one_line(), realm_id=realm_id,
                                code=exc.code or type(exc).__name__, intuit_tid=exc.intuit_tid)

    def _forget(self, realm_id: str) -> None:
        self.failures.pop(realm_id, None)
        self.next_attempt.pop(realm_id, None)

    # ------------------------------------------------------------------ passes

    def run_pass(self, stop: Stop, *, attempts: int = 1) -> PassOutcome:
        """One look at every realm: refresh the due ones (each independently), then hard-expiry warnings."""
        outcome = PassOutcome()
        for realm_id in self.due_realms():
            if stop.requested:
                break
            now = self.clock()
            if now < self.client_blocked_until:
                break
            if now < self.next_attempt.get(realm_id, 0.0):
                continue
            error = self.refresh_one(realm_id, stop, attempts=attempts)
            if error is None:
                outcome.refreshed.append(realm_id)
            else:
                outcome.failed[realm_id] = error
        self.warn_hard_expiry()
        return outcome

    def next_due_in(self) -> float | None:
        """Seconds until the next active realm falls due (inside the margin, or 24 h unused); None
        without any. Read with the pass, so a quiet tokenup sleeps until then instead of looking."""
        with self.db.transaction() as conn:
            row = conn.execute(
                """SELECT extract(epoch FROM min(LEAST(
                              expires_at - make_interval(mins => %s),
                              last_refreshed_at + interval '24 hours')) - clock_timestamp())
                   FROM quickbooks.tokens
                   WHERE is_active AND status = 'active' AND refresh_token <> ''""",
                (self.settings.token_refresh_margin_minutes,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def next_wait(self, due_in: float | None = None) -> float:
        """Seconds until the next pass: the check interval (TOKEN_CHECK_INTERVAL_SECONDS), or sooner
        when a realm falls due (`due_in`) or a realm's backoff ends."""
        wait = float(self.settings.token_check_interval_seconds)
        if due_in is not None:
            wait = min(wait, max(0.05, due_in))
        now = self.clock()
        for when in self.next_attempt.values():
            wait = min(wait, max(0.05, when - now))
        return wait

    def run(self, stop: Stop) -> None:
        """Passes until SIGTERM. A database outage is logged and waited out, never fatal."""
        log.info("tokenup started: looking at least every %d s, refreshing %d min before expiry",
                 self.settings.token_check_interval_seconds, self.settings.token_refresh_margin_minutes)
        db_failures = 0
        while not stop.requested:
            try:
                self.run_pass(stop)
                db_failures = 0
                wait = self.next_wait(self.next_due_in())
            except DatabaseUnavailable as exc:
                wait = backoff_delay(db_failures, max(1.0, self.settings.retry_base_seconds))
                db_failures += 1
                log.warning("database unavailable, retrying in %.0f s: %s", wait, exc.one_line())
            stop.wait(wait)
        log.info("tokenup stopped")


# --------------------------------------------------------------------------- commands


def _bad_input(message: str) -> int:
    print(f"qbsync: {message}", file=sys.stderr)
    return 2


def _check_realm(realm_id: str | None) -> str | None:
    if realm_id is not None and not _REALM_RE.match(realm_id):
        return "--realm-id must be the company's realm id (letters, digits, '-' or '_')"
    return None


# A side service tokenup runs while it works (the composition root passes the metrics endpoint):
# started with the pool, it returns something with close(), or None when it is off.
SideService = Callable[[Database, Settings], Any]


def _start_side(serve: SideService | None, db: Database, settings: Settings) -> Any:
    """Start `serve` (the Prometheus endpoint, METRICS_PORT): tokenup runs once per install. A port
    in use is an error recorded and logged on one line; tokens matter more, so tokenup goes on."""
    if serve is None:
        return None
    try:
        return serve(db, settings)
    except OSError as exc:
        from db.errorlog import record_error_safely

        message = f"metrics: cannot listen on 127.0.0.1:{settings.metrics_port} (METRICS_PORT): {exc.strerror or exc}"
        log.error("%s; serving no metrics", message)
        record_error_safely(db, "tokenup", message)
        return None


def cmd_tokenup(args: argparse.Namespace, settings: Settings, *, serve_metrics: SideService | None = None) -> int:
    """`qbsync tokenup [--once]`: the worker (PM2 semantics via run_worker); --once exits 1 if a realm
    failed. The worker also serves what the composition root gives it (`serve_metrics`)."""
    from db.connection import open_database
    from services.core.logs import setup_logging

    setup_logging("tokenup", settings.log_level)
    failed: dict[str, str] = {}

    def body(stop: Stop) -> None:
        # A short pool wait: an unreachable database is retried by the loop, and SIGTERM stays prompt.
        db = open_database(settings, timeout=5.0, service="tokenup")
        try:
            worker = TokenWorker(db, settings)
            metrics = None if args.once else _start_side(serve_metrics, db, settings)
            if args.once:
                try:
                    outcome = worker.run_pass(stop, attempts=MAX_ATTEMPTS)
                except DatabaseUnavailable as exc:
                    log.error("database unavailable: %s", exc.one_line())
                    failed["*"] = exc.one_line()
                    return
                failed.update(outcome.failed)
                log.info("tokenup pass done: %d refreshed, %d failed", len(outcome.refreshed), len(outcome.failed))
            else:
                try:
                    worker.run(stop)
                finally:
                    if metrics is not None:
                        metrics.close()
        finally:
            db.close()

    code = run_worker("tokenup", settings.restart_delay_seconds, body)
    return 1 if code == 0 and failed else code


def cmd_token_add(args: argparse.Namespace, settings: Settings) -> int:
    """`qbsync token add`: store tokens from Intuit's OAuth Playground for a realm."""
    from db.connection import open_database
    from services.core.logs import register_secret, setup_logging
    from services.tokens.vault import add_tokens

    register_secret(args.refresh_token)
    register_secret(args.access_token)
    setup_logging("cli", settings.log_level)
    if (problem := _check_realm(args.realm_id)) is not None:
        return _bad_input(problem)
    if not args.refresh_token.strip():
        return _bad_input("--refresh-token must not be empty")
    if args.expires_in is not None and not args.access_token:
        return _bad_input("--expires-in needs --access-token")
    if args.expires_in is not None and not 0 <= args.expires_in <= 86400:
        return _bad_input("--expires-in must be seconds between 0 and 86400 (Intuit's access tokens last 3600)")
    db = open_database(settings, announce=False)
    try:
        name = add_tokens(db, settings, args.realm_id, args.refresh_token.strip(),
                          access_token=(args.access_token or "").strip() or None, expires_in=args.expires_in,
                          company_name=args.company_name)
    finally:
        db.close()
    label = f" ({name})" if name else ""
    print(f"Stored tokens for realm {args.realm_id}{label}. `qbsync tokenup` keeps them fresh.")
    return 0


def cmd_token_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """`qbsync token refresh [--realm-id R]`: refresh now through the locked path; exit 1 if any realm failed."""
    from db.connection import open_database
    from services.core.logs import setup_logging
    from services.tokens.vault import active_realms

    setup_logging("cli", settings.log_level)
    if (problem := _check_realm(args.realm_id)) is not None:
        return _bad_input(problem)
    db = open_database(settings, announce=False)
    status = 0
    try:
        if args.realm_id:
            realms = [args.realm_id]
        else:
            with db.transaction() as conn:
                realms = active_realms(conn)
            if not realms:
                print("No active realms: add one with `qbsync connect` or `qbsync token add`.")
        for realm_id in realms:
            try:
                result = _refresh_with_retries(db, settings, realm_id)
            except QBSyncError as exc:
                print(f"qbsync: {type(exc).__name__}: {exc.one_line()}", file=sys.stderr)
                if isinstance(exc, InvalidClient):
                    return 2
                status = 1
                continue
            until = result.access_expires_at.isoformat(timespec="seconds") if result.access_expires_at else "?"
            if result.refreshed:
                print(f"realm {realm_id}: refreshed; access token valid until {until}")
            else:
                print(f"realm {realm_id}: {result.reason}; access token valid until {until}")
    finally:
        db.close()
    return status


def _refresh_with_retries(db: Database, settings: Settings, realm_id: str) -> RefreshResult:
    from services.tokens.vault import refresh_realm

    def note(_failures: int, exc: BaseException, delay: float) -> None:
        log.warning("realm %s: refresh failed, retrying in %.1f s: %s", realm_id, delay, describe(exc))

    return retry_call(
        lambda: refresh_realm(db, settings, realm_id, force=True, reason="qbsync token refresh", service="cli"),
        base_s=settings.retry_base_seconds, retry_on=(Retriable, DatabaseUnavailable), on_retry=note)


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """`qbsync token revoke --realm-id R`: revoke at Intuit, mark the realm disconnected (is_active false)."""
    from db.connection import open_database
    from services.core.logs import setup_logging
    from services.tokens.vault import revoke_realm

    setup_logging("cli", settings.log_level)
    if (problem := _check_realm(args.realm_id)) is not None:
        return _bad_input(problem)
    db = open_database(settings, announce=False)
    try:
        done = revoke_realm(db, settings, args.realm_id)
    finally:
        db.close()
    if done:
        print(f"realm {args.realm_id}: revoked at Intuit and marked disconnected.")
    else:
        print(f"realm {args.realm_id}: already disconnected.")
    return 0

