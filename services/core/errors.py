"""The qbsync exception tree. Catch at the level that matches what you can do about it.

    QBSyncError                      base: realm_id, code, intuit_tid, and `action` (what the operator does)
    ├── ConfigError                  bad or missing configuration: fix .env / the environment
    │   └── InvalidClient            Intuit rejected the app keys (token endpoint `invalid_client`)
    ├── DatabaseUnavailable          PostgreSQL unreachable: transient, retried by workers
    └── QBOError                     an Intuit API or token-endpoint failure: http_status, fault_type, detail
        ├── NeedsReauth              `invalid_grant`, or 401 after a refresh: the company must reconnect
        ├── AuthenticationFailed     401 / code 3200 on a Data API call: refresh once, retry once
        ├── NotFound                 code 610 / 404: the object is gone
        ├── Retriable                may succeed later: retried with backoff
        │   ├── Throttled            429 / code 3001 (often an XML body)
        │   ├── ServerError          5xx
        │   └── TransportError       connection refused/reset, timeouts
        └── FatalQBOError            validation and other 4xx: retrying will not help
            └── CDCTooOld            CDC's 400 "older than fixed days": the sync uses windowed queries
"""

from __future__ import annotations

__all__ = [
    "describe", "QBSyncError", "ConfigError", "InvalidClient", "DatabaseUnavailable", "QBOError",
    "NeedsReauth", "AuthenticationFailed", "NotFound", "Retriable", "Throttled",
    "ServerError", "TransportError", "FatalQBOError", "CDCTooOld",
]


class QBSyncError(Exception):
    action = "see the log for details"

    def __init__(self, message: str, *, realm_id: str | None = None, code: str | None = None,
                 intuit_tid: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.realm_id = realm_id
        self.code = code
        self.intuit_tid = intuit_tid

    def __str__(self) -> str:
        parts = [self.message]
        if self.realm_id:
            parts.append(f"realm {self.realm_id}")
        if self.code:
            parts.append(f"code {self.code}")
        if self.intuit_tid:
            parts.append(f"intuit_tid {self.intuit_tid}")
        return " | ".join(parts)

    def one_line(self) -> str:
        """The message plus what to do about it, on one line (already redacted)."""
        from services.core.logs import redact

        return redact(f"{self} -> {self.action}".replace("\n", " "))


def describe(exc: BaseException, *, name: bool = True, limit: int | None = None) -> str:
    """Any exception as one redacted line, the one way qbsync turns an exception into text:
    a QBSyncError's `one_line()` (message and what to do); anything else its first line,
    after its class name (`name`), or the class name alone when it has no text; cut at `limit`."""
    from services.core.logs import redact

    if isinstance(exc, QBSyncError):
        text = exc.one_line()
    else:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        kind = type(exc).__name__
        text = redact(f"{kind}: {first}" if name and first else first or kind)
    return text if limit is None else text[:limit]


class ConfigError(QBSyncError):
    action = "fix the variable in .env or the environment, then restart"


class InvalidClient(ConfigError):
    action = "check QBO_CLIENT_ID / QBO_CLIENT_SECRET against the Intuit developer portal"


class DatabaseUnavailable(QBSyncError):
    action = "check DATABASE_URL and that PostgreSQL is up; qbsync retries by itself"


class QBOError(QBSyncError):
    action = "see the Intuit error code; quote intuit_tid to Intuit support"

    def __init__(self, message: str, *, http_status: int | None = None, fault_type: str | None = None,
                 detail: str | None = None, retry_after: float | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.http_status = http_status
        self.fault_type = fault_type
        self.detail = detail
        self.retry_after = retry_after


class NeedsReauth(QBOError):
    action = "reconnect the company: qbsync connect --realm-id <realm>"


class AuthenticationFailed(QBOError):
    action = "qbsync refreshes the token and retries once; if it persists, reconnect"


class NotFound(QBOError):
    action = "none: the object no longer exists in QuickBooks"


class Retriable(QBOError):
    action = "none: qbsync retries with backoff"


class Throttled(Retriable):
    action = "none: qbsync backs off; lower QBO_MAX_REQUESTS_PER_MINUTE if it persists"


class ServerError(Retriable):
    pass


class TransportError(Retriable):
    action = "check network access to Intuit (or the emulator); qbsync retries with backoff"


class FatalQBOError(QBOError):
    pass


class CDCTooOld(FatalQBOError):
    """CDC refused `changedSince` as older than its fixed window (by Intuit's clock)."""

    action = "none: qbsync catches up with windowed queries instead of CDC"
