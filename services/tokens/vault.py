"""The token vault: the one refresh path every process uses, and the reads built on it.

`refresh_realm` is THE way a realm's tokens change after authorization (tokenup, the sync
worker on a 401 or an expired token, `qbsync token refresh`, the console). In one
transaction it

1. notes the database clock (`clock_timestamp()`) before asking for the lock,
2. locks the realm's row (`SELECT ... FOR UPDATE`) and re-reads it,
3. skips the call when another process already did the work (the access token changed
   since the caller saw it, or the row was refreshed after step 1),
4. notes the database clock again and POSTs the refresh (explicit timeouts),
5. stores the access token, the rotated refresh token, every expiry (measured from step 4,
   so never overestimated) and last_refreshed_at, and writes a token event,

then commits. Two processes refreshing one realm at once therefore make exactly one call.
If the process dies after Intuit issued new tokens but before the commit, the stored
(previous) refresh token still works during Intuit's 24 h grace and the next refresh
stores the newest one.

Failures: `invalid_grant` marks the realm `needs_reauth` (reason in last_error, an errors
row and a token event, committed before NeedsReauth is raised); `invalid_client` records a
configuration error (InvalidClient); transient failures (Retriable) leave the tokens as
they were, note last_error and are retried by the caller with backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import requests

from db.connection import Database, scalar
from db.errorlog import record_error
from db.upserts import ensure_company, upsert_company
from services.core.config import Settings
from services.core.errors import (
    FatalQBOError,
    InvalidClient,
    NeedsReauth,
    QBSyncError,
    Retriable,
    TransportError,
)
from services.core.logs import redact, register_secret
from services.intuit import oauth
from services.intuit.client import QBOClient, TokenProvider

__all__ = [
    "TokenRow", "RefreshResult", "refresh_realm", "access_token_for", "active_realms", "read_token",
    "add_tokens", "store_grant", "update_company_info", "revoke_realm", "record_event",
    "RealmTokens", "GivenToken", "client_for",
    "REFRESH_TOKEN_IDLE_REFRESH", "ACCESS_TOKEN_MIN_LEFT",
]

log = logging.getLogger("qbsync.tokens")

REFRESH_TOKEN_IDLE_REFRESH = timedelta(hours=24)  # use the refresh token at least this often
ACCESS_TOKEN_MIN_LEFT = timedelta(seconds=60)  # access_token_for refreshes below this
LOCK_TIMEOUT = "120s"  # longer than the token POST's timeouts; a stuck holder gives a retriable error

_COLUMNS = ("realm_id, company_id, access_token, refresh_token, token_type, scope, expires_at,"
            " refresh_token_expires_at, refresh_token_hard_expires_at, base_url, is_active, status,"
            " last_error, last_refreshed_at, clock_timestamp()")


@dataclass(frozen=True)
class TokenRow:
    """One quickbooks.tokens row. repr/str never show the tokens; reading one registers them as secrets."""

    realm_id: str
    company_id: str | None
    access_token: str | None = field(repr=False)
    refresh_token: str = field(repr=False)
    token_type: str
    scope: str | None
    expires_at: datetime | None
    refresh_token_expires_at: datetime | None
    refresh_token_hard_expires_at: datetime | None
    base_url: str | None
    is_active: bool
    status: str
    last_error: str | None
    last_refreshed_at: datetime | None
    db_now: datetime

    def __post_init__(self) -> None:
        register_secret(self.access_token)
        register_secret(self.refresh_token)

    @property
    def usable(self) -> bool:
        return self.is_active and self.status == "active" and bool(self.refresh_token)

    def access_left(self) -> timedelta | None:
        """Time the stored access token has left by the database clock (None: no token/unknown)."""
        if not self.access_token or self.expires_at is None:
            return None
        return self.expires_at - self.db_now


@dataclass(frozen=True)
class RefreshResult:
    """What `refresh_realm` did. `refreshed`: this call got new tokens from Intuit. `reused`: another
    process refreshed while this caller waited (or since it saw the token), so no call was made.
    Neither: the stored access token was still outside the margin."""

    realm_id: str
    refreshed: bool
    reused: bool
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None = None
    hard_expires_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    reason: str = ""
    access_token: str | None = field(default=None, repr=False)


def read_token(conn: psycopg.Connection, realm_id: str, *, lock: bool = False) -> TokenRow | None:
    """The realm's token row (locked FOR UPDATE when `lock`), or None."""
    sql = f"SELECT {_COLUMNS} FROM quickbooks.tokens WHERE realm_id = %s" + (" FOR UPDATE" if lock else "")
    row = conn.execute(sql, (realm_id,)).fetchone()
    return None if row is None else TokenRow(*row)


def active_realms(conn: psycopg.Connection) -> list[str]:
    """Realm ids whose tokens are active (is_active and status 'active'), sorted."""
    rows = conn.execute("SELECT realm_id FROM quickbooks.tokens WHERE is_active AND status = 'active'"
                        " ORDER BY realm_id").fetchall()
    return [r[0] for r in rows]


def record_event(conn: psycopg.Connection, realm_id: str, event: str, detail: str = "") -> None:
    """Append one redacted row to quickbooks.token_events in the caller's transaction."""
    conn.execute("INSERT INTO quickbooks.token_events (realm_id, event, detail) VALUES (%s, %s, %s)",
                 (realm_id, event, redact(detail)[:2000] if detail else None))


def _fmt(ts: datetime | None) -> str:
    return ts.isoformat(timespec="seconds") if ts else "unknown"


def _why_refresh(row: TokenRow, margin: timedelta) -> str | None:
    """Why the row is due for a refresh without force, or None if it is not."""
    left = row.access_left()
    if left is None:
        return "no access token or unknown expiry"
    if left < margin:
        return f"access token {'expired' if left.total_seconds() <= 0 else 'expires in %d s' % left.total_seconds()}"
    if row.last_refreshed_at is None or row.db_now - row.last_refreshed_at >= REFRESH_TOKEN_IDLE_REFRESH:
        return "refresh token unused for 24 h"
    return None


def _decide(row: TokenRow, started_at: datetime, *, force: bool, stale_access_token: str | None,
            margin: timedelta) -> tuple[bool, bool, str]:
    """(call Intuit?, reused another process's refresh?, reason) for a locked, re-read row."""
    refreshed_meanwhile = row.last_refreshed_at is not None and row.last_refreshed_at > started_at
    if stale_access_token is not None:
        left = row.access_left()
        if row.access_token != stale_access_token and left is not None and left > ACCESS_TOKEN_MIN_LEFT:
            return False, True, "access token already replaced by another process"
        return True, False, "access token rejected"
    if force:
        if refreshed_meanwhile:
            return False, True, "refreshed by another process while waiting"
        return True, False, "forced"
    why = _why_refresh(row, margin)
    if why is None:
        return False, refreshed_meanwhile, ("refreshed by another process while waiting" if refreshed_meanwhile
                                            else "access token still fresh")
    return True, False, why


def _result_from_row(row: TokenRow, *, refreshed: bool, reused: bool, reason: str) -> RefreshResult:
    return RefreshResult(realm_id=row.realm_id, refreshed=refreshed, reused=reused,
                         access_expires_at=row.expires_at, refresh_expires_at=row.refresh_token_expires_at,
                         hard_expires_at=row.refresh_token_hard_expires_at,
                         last_refreshed_at=row.last_refreshed_at, reason=reason, access_token=row.access_token)


def _store_refresh(conn: psycopg.Connection, realm_id: str, grant: oauth.TokenGrant,
                   requested_at: datetime) -> TokenRow:
    conn.execute(
        """UPDATE quickbooks.tokens SET
             access_token = %(access)s, refresh_token = %(refresh)s, token_type = %(type)s,
             scope = coalesce(%(scope)s, scope),
             expires_at = %(t)s + make_interval(secs => %(exp)s),
             refresh_token_expires_at = coalesce(%(t)s + make_interval(secs => %(rexp)s), refresh_token_expires_at),
             refresh_token_hard_expires_at = coalesce(%(t)s + make_interval(secs => %(hexp)s),
                                                      refresh_token_hard_expires_at),
             last_refreshed_at = clock_timestamp(), last_error = NULL,
             updated_at = now(), last_updated = clock_timestamp()
           WHERE realm_id = %(realm)s""",
        {"access": grant.access_token, "refresh": grant.refresh_token, "type": grant.token_type,
         "scope": grant.scope, "t": requested_at, "exp": grant.expires_in, "rexp": grant.refresh_expires_in,
         "hexp": grant.hard_expires_in, "realm": realm_id})
    row = read_token(conn, realm_id)
    assert row is not None
    return row


def _note_failure(conn: psycopg.Connection, realm_id: str, exc: QBSyncError, *, service: str,
                  needs_reauth: bool, record: bool) -> None:
    message = exc.one_line()
    reason = redact(exc.message + (f" (intuit_tid {exc.intuit_tid})" if exc.intuit_tid else ""))[:1000]
    if needs_reauth:
        conn.execute("UPDATE quickbooks.tokens SET status = 'needs_reauth', last_error = %s, updated_at = now(),"
                     " last_updated = now() WHERE realm_id = %s", (reason, realm_id))
        record_event(conn, realm_id, "needs_reauth", message)
    else:
        conn.execute("UPDATE quickbooks.tokens SET last_error = %s, updated_at = now() WHERE realm_id = %s",
                     (reason, realm_id))
        if record:
            record_event(conn, realm_id, "refresh_failed", message)
    if record:
        record_error(conn, service, message, realm_id=realm_id, code=exc.code or type(exc).__name__,
                     intuit_tid=exc.intuit_tid)


def refresh_realm(db: Database, settings: Settings, realm_id: str, *, force: bool = False,
                  stale_access_token: str | None = None, reason: str = "",
                  session: requests.Session | None = None, service: str = "tokenup") -> RefreshResult:
    """Refresh one realm's tokens through the locked path (module docstring); return what happened.

    force=False: only if the access token is inside TOKEN_REFRESH_MARGIN_MINUTES (or missing) or
    the refresh token has not been used for 24 h. force=True: now, unless another process
    refreshed while this call waited for the lock (then that result is reused).
    stale_access_token=X: refresh unless the stored access token is no longer X.
    Raises NeedsReauth (realm unknown, not active, or invalid_grant: then marked needs_reauth),
    InvalidClient, Retriable (tokens untouched; retry with backoff), FatalQBOError,
    DatabaseUnavailable.
    """
    margin = timedelta(minutes=settings.token_refresh_margin_minutes)
    failure: QBSyncError | None = None
    with db.transaction() as conn:
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        started_at = scalar(conn, "SELECT clock_timestamp()")
        try:
            row = read_token(conn, realm_id, lock=True)
        except psycopg.errors.LockNotAvailable:
            raise TransportError("another process has held the token lock for too long; retrying later",
                                 realm_id=realm_id) from None
        if row is None:
            raise NeedsReauth("no tokens stored for this realm", realm_id=realm_id)
        if not row.usable:
            raise NeedsReauth(f"realm is {row.status}" + (f" ({row.last_error})" if row.last_error else ""),
                              realm_id=realm_id)
        call, reused, why = _decide(row, started_at, force=force, stale_access_token=stale_access_token,
                                    margin=margin)
        if not call:
            return _result_from_row(row, refreshed=False, reused=reused, reason=why)
        requested_at = scalar(conn, "SELECT clock_timestamp()")
        try:
            grant = oauth.refresh_grant(settings, row.refresh_token, realm_id=realm_id, session=session)
        except NeedsReauth as exc:
            _note_failure(conn, realm_id, exc, service=service, needs_reauth=True, record=True)
            failure = exc
        except InvalidClient as exc:
            _note_failure(conn, realm_id, exc, service=service, needs_reauth=False, record=True)
            failure = exc
        except FatalQBOError as exc:
            _note_failure(conn, realm_id, exc, service=service, needs_reauth=False, record=True)
            failure = exc
        except Retriable as exc:
            _note_failure(conn, realm_id, exc, service=service, needs_reauth=False, record=False)
            failure = exc
        else:
            new = _store_refresh(conn, realm_id, grant, requested_at)
            full_reason = "; ".join(p for p in (reason, why) if p)
            record_event(conn, realm_id, "refreshed",
                         f"{full_reason}; access token until {_fmt(new.expires_at)}")
    if failure is not None:
        raise failure
    log.info("realm %s: token refreshed (%s); access token valid until %s, refresh token until %s%s",
             realm_id, full_reason, _fmt(new.expires_at), _fmt(new.refresh_token_expires_at),
             f", hard expiry {_fmt(new.refresh_token_hard_expires_at)}" if new.refresh_token_hard_expires_at else "")
    return _result_from_row(new, refreshed=True, reused=False, reason=full_reason)


def access_token_for(db: Database, settings: Settings, realm_id: str, *, service: str = "sync") -> tuple[str, str]:
    """(access token, base URL or "") for Data API calls, refreshing through `refresh_realm` when the
    token is missing, expired or has less than 60 s left. Raises NeedsReauth unless the realm is active."""
    with db.transaction() as conn:
        row = read_token(conn, realm_id)
    if row is None:
        raise NeedsReauth("no tokens stored for this realm", realm_id=realm_id)
    if not row.usable:
        raise NeedsReauth(f"realm is {row.status}" + (f" ({row.last_error})" if row.last_error else ""),
                          realm_id=realm_id)
    left = row.access_left()
    if row.access_token and left is not None and left > ACCESS_TOKEN_MIN_LEFT:
        return row.access_token, row.base_url or ""
    result = refresh_realm(db, settings, realm_id, force=False, reason="access token needed", service=service)
    if not result.access_token:
        raise NeedsReauth("no access token after refresh", realm_id=realm_id)
    return result.access_token, row.base_url or ""


# --------------------------------------------------------------------------- storing new tokens


def store_grant(conn: psycopg.Connection, settings: Settings, realm_id: str, grant: oauth.TokenGrant,
                requested_at: datetime, *, event: str, detail: str = "") -> None:
    """Store tokens from an authorization-code exchange: company row, tokens row (status active), event."""
    ensure_company(conn, realm_id, None, settings.environment)
    conn.execute(
        """INSERT INTO quickbooks.tokens AS t (realm_id, company_id, access_token, refresh_token, token_type,
               scope, expires_at, refresh_token_expires_at, refresh_token_hard_expires_at, is_active, status,
               last_error, last_refreshed_at)
           VALUES (%(realm)s, %(realm)s, %(access)s, %(refresh)s, %(type)s, %(scope)s,
               %(t)s + make_interval(secs => %(exp)s), %(t)s + make_interval(secs => %(rexp)s),
               %(t)s + make_interval(secs => %(hexp)s), true, 'active', NULL, clock_timestamp())
           ON CONFLICT (realm_id) DO UPDATE SET
               company_id = EXCLUDED.company_id, access_token = EXCLUDED.access_token,
               refresh_token = EXCLUDED.refresh_token, token_type = EXCLUDED.token_type,
               scope = EXCLUDED.scope, expires_at = EXCLUDED.expires_at,
               refresh_token_expires_at = EXCLUDED.refresh_token_expires_at,
               refresh_token_hard_expires_at = EXCLUDED.refresh_token_hard_expires_at,
               is_active = true, status = 'active', last_error = NULL,
               last_refreshed_at = EXCLUDED.last_refreshed_at, updated_at = now(), last_updated = now()""",
        {"realm": realm_id, "access": grant.access_token, "refresh": grant.refresh_token,
         "type": grant.token_type, "scope": grant.scope or oauth.SCOPE_ACCOUNTING, "t": requested_at,
         "exp": grant.expires_in, "rexp": grant.refresh_expires_in, "hexp": grant.hard_expires_in})
    record_event(conn, realm_id, event, detail)


def add_tokens(db: Database, settings: Settings, realm_id: str, refresh_token: str, *, access_token: str | None = None,
               expires_in: int | None = None, company_name: str | None = None,
               session: requests.Session | None = None) -> str | None:
    """Store tokens obtained elsewhere (Intuit's OAuth Playground) for `token add`; return the company name.

    Creates or updates the companies row and the tokens row (status active). Without an access
    token and its lifetime the access token counts as expired, so tokenup refreshes it at once.
    When the access token works, CompanyInfo supplies the company's name (best effort).
    """
    register_secret(refresh_token)
    register_secret(access_token)
    with db.transaction() as conn:
        ensure_company(conn, realm_id, company_name, settings.environment)
        conn.execute(
            """INSERT INTO quickbooks.tokens AS t (realm_id, company_id, access_token, refresh_token, scope,
                   expires_at, is_active, status, last_error, last_refreshed_at)
               VALUES (%(realm)s, %(realm)s, %(access)s, %(refresh)s, %(scope)s,
                   CASE WHEN %(access)s::text IS NOT NULL AND %(exp)s::int IS NOT NULL
                        THEN clock_timestamp() + make_interval(secs => %(exp)s::int) END,
                   true, 'active', NULL, clock_timestamp())
               ON CONFLICT (realm_id) DO UPDATE SET
                   company_id = EXCLUDED.company_id, access_token = EXCLUDED.access_token,
                   refresh_token = EXCLUDED.refresh_token, expires_at = EXCLUDED.expires_at,
                   refresh_token_expires_at = NULL, refresh_token_hard_expires_at = NULL,
                   is_active = true, status = 'active', last_error = NULL,
                   last_refreshed_at = EXCLUDED.last_refreshed_at,
                   updated_at = now(), last_updated = now()""",
            {"realm": realm_id, "access": access_token, "refresh": refresh_token,
             "scope": oauth.SCOPE_ACCOUNTING, "exp": expires_in})
        record_event(conn, realm_id, "added", "tokens added with qbsync token add")
    if access_token:
        update_company_info(db, settings, realm_id, access_token, session=session)  # with the token given
    with db.transaction() as conn:
        row = conn.execute("SELECT name FROM quickbooks.companies WHERE id = %s", (realm_id,)).fetchone()
    return row[0] if row else None


class RealmTokens:
    """The Data API client's token provider for a realm: the stored access token (refreshed
    through `refresh_realm` when it is about to expire), and the realm's stored base URL."""

    def __init__(self, db: Database, settings: Settings, realm_id: str, service: str) -> None:
        self.db, self.settings, self.realm_id, self.service = db, settings, realm_id, service
        self.base_url = ""

    def access_token(self) -> str:
        token, base_url = access_token_for(self.db, self.settings, self.realm_id, service=self.service)
        self.base_url = base_url or ""
        return token

    def refresh(self, stale: str) -> str:
        refresh_realm(self.db, self.settings, self.realm_id, stale_access_token=stale, reason="401",
                      service=self.service)
        return self.access_token()


class GivenToken:
    """A token provider for one access token just received (connect, token add): nothing to
    refresh with yet, so a 401 is final."""

    def __init__(self, access_token: str, realm_id: str) -> None:
        self.token, self.realm_id, self.base_url = access_token, realm_id, ""

    def access_token(self) -> str:
        return self.token

    def refresh(self, stale: str) -> str:
        raise NeedsReauth("QuickBooks rejected the access token just received", realm_id=self.realm_id)


def client_for(db: Database, settings: Settings, realm_id: str, *, service: str = "sync",
               token_provider: TokenProvider | None = None, **kw: Any) -> QBOClient:
    """A Data API client for `realm_id` on the stored tokens (`service` labels its metered calls
    and the token-refresh errors recorded on its behalf); `kw` goes to QBOClient (session, sleep,
    budget, timeout)."""
    return QBOClient(db, settings, realm_id, service=service,
                     token_provider=token_provider or RealmTokens(db, settings, str(realm_id), service), **kw)


def update_company_info(db: Database, settings: Settings, realm_id: str, access_token: str, *,
                        session: requests.Session | None = None) -> bool:
    """Fetch CompanyInfo with `access_token` and write it the one way companies are written
    (db.upserts.upsert_company: newer wins). Best effort: a failure is logged as a warning
    and returns False."""
    try:
        with client_for(db, settings, realm_id, session=session, service="cli",
                        token_provider=GivenToken(access_token, realm_id)) as client:
            info = client.company_info()
    except QBSyncError as exc:
        log.warning("realm %s: could not fetch CompanyInfo: %s", realm_id, exc.one_line())
        return False
    with db.transaction() as conn:
        upsert_company(conn, realm_id, info, environment=settings.environment)
    return True


def revoke_realm(db: Database, settings: Settings, realm_id: str, *, session: requests.Session | None = None) -> bool:
    """Revoke the realm's refresh token at Intuit, then mark it `disconnected` (is_active false) and
    forget its tokens, under the row lock. False if it was already disconnected. If Intuit cannot be
    reached the row is left unchanged and the error raised."""
    with db.transaction() as conn:
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        row = read_token(conn, realm_id, lock=True)
        if row is None:
            raise NeedsReauth("no tokens stored for this realm; nothing to revoke", realm_id=realm_id)
        if row.status == "disconnected" and not row.refresh_token:
            return False
        if row.refresh_token:
            oauth.revoke_token(settings, row.refresh_token, realm_id=realm_id, session=session)
        conn.execute("UPDATE quickbooks.tokens SET status = 'disconnected', is_active = false, access_token = NULL,"
                     " refresh_token = '', expires_at = NULL, last_error = NULL, updated_at = now(),"
                     " last_updated = now() WHERE realm_id = %s", (realm_id,))
        record_event(conn, realm_id, "revoked", "revoked with qbsync token revoke")
    log.info("realm %s: tokens revoked at Intuit; realm disconnected", realm_id)
    return True
