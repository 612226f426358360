"""Intuit OAuth 2.0: the token endpoint, revocation and the consent URL (the HTTP side only;
the vault and `qbsync connect` are in services.tokens).

The token endpoint (FACTS §1.4-1.7) is spoken to directly, one POST per call, with explicit
timeouts, the `x-include-refresh-token-hard-expires-in: true` opt-in header, and our own
error mapping (the `error` field only; descriptions vary):

    400 {"error": "invalid_grant"}          -> NeedsReauth      (the company must reconnect)
    401 / {"error": "invalid_client"}       -> InvalidClient    (the app keys are wrong)
    429                                      -> Throttled        (retried with backoff)
    5xx, a malformed 200                     -> ServerError      (retried with backoff)
    connection refused/reset, timeouts       -> TransportError   (retried with backoff)
    anything else                            -> FatalQBOError

Every error carries the `intuit_tid` response header. Every token received is registered
with the log redactor before anything else happens to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests

from services.core.config import Settings
from services.core.errors import (
    FatalQBOError,
    InvalidClient,
    NeedsReauth,
    ServerError,
    Throttled,
    TransportError,
    describe,
)
from services.core.logs import redact, register_secret
from services.core.retry import parse_retry_after

__all__ = [
    "TokenGrant", "SCOPE_ACCOUNTING", "TOKEN_TIMEOUT",
    "request_tokens", "refresh_grant", "exchange_code", "revoke_token", "authorization_url",
]

log = logging.getLogger("qbsync.oauth")

SCOPE_ACCOUNTING = "com.intuit.quickbooks.accounting"
TOKEN_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds for the token and revoke endpoints


@dataclass(frozen=True)
class TokenGrant:
    """One successful token-endpoint response. Its repr never shows a token."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    refresh_expires_in: int | None
    hard_expires_in: int | None
    token_type: str = "bearer"
    scope: str | None = None


def _header_tid(resp: requests.Response) -> str | None:
    return resp.headers.get("intuit_tid") or resp.headers.get("intuit-tid")


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _token_error(resp: requests.Response, what: str, realm_id: str | None) -> Exception:
    """Map a non-2xx token/revoke endpoint answer to the exception tree (matching `error` only)."""
    body = _json_or_none(resp)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, str) else None
    description = body.get("error_description") if isinstance(body, dict) else None
    detail = redact(str(description))[:200] if description else None
    kw: dict[str, Any] = {"realm_id": realm_id, "code": error, "intuit_tid": _header_tid(resp),
                          "http_status": resp.status_code, "detail": detail}
    status = resp.status_code
    suffix = f" ({detail})" if detail else ""
    if error == "invalid_grant":
        return NeedsReauth(f"Intuit rejected the {what} (invalid_grant){suffix}", **kw)
    if error == "invalid_client" or status == 401:
        kw.pop("http_status"), kw.pop("detail")
        return InvalidClient(f"Intuit rejected the app keys at the token endpoint "
                             f"(HTTP {status}, {error or 'no error code'})", **kw)
    if status == 429:
        return Throttled(f"token endpoint throttled the {what} (HTTP 429)",
                         retry_after=parse_retry_after(resp.headers.get("Retry-After")), **kw)
    if status >= 500:
        return ServerError(f"token endpoint failed on the {what} (HTTP {status})", **kw)
    return FatalQBOError(f"token endpoint refused the {what} (HTTP {status}, {error or 'no error code'}){suffix}",
                         **kw)


def _post(url: str, *, what: str, realm_id: str | None, session: requests.Session | None,
          **kw: Any) -> requests.Response:
    try:
        return (session or requests).post(url, timeout=TOKEN_TIMEOUT, allow_redirects=False, **kw)
    except requests.Timeout:
        raise TransportError(f"timed out on the {what}", realm_id=realm_id) from None
    except requests.RequestException as exc:
        raise TransportError(f"cannot reach the token endpoint for the {what}: {describe(exc, limit=300)}",
                             realm_id=realm_id) from None


def request_tokens(settings: Settings, form: Mapping[str, str], *, what: str, realm_id: str | None = None,
                   session: requests.Session | None = None) -> TokenGrant:
    """POST one grant to QBO_TOKEN_URL; return the parsed tokens (registered as secrets) or raise.

    Guarantees: explicit timeouts, the hard-expiry opt-in header, Basic client auth, and
    one of the exception types in the module docstring on any failure.
    """
    headers = {
        "Authorization": settings.basic_auth_header(),
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        "x-include-refresh-token-hard-expires-in": "true",
    }
    resp = _post(settings.token_url, what=what, realm_id=realm_id, session=session,
                 data=dict(form), headers=headers)
    body = _json_or_none(resp)
    if isinstance(body, dict):
        for key in ("access_token", "refresh_token", "id_token"):
            if isinstance(body.get(key), str):
                register_secret(body[key])
    if resp.status_code != 200:
        raise _token_error(resp, what, realm_id)
    access = body.get("access_token") if isinstance(body, dict) else None
    refresh = body.get("refresh_token") if isinstance(body, dict) else None
    expires_in = _opt_int(body.get("expires_in")) if isinstance(body, dict) else None
    if not isinstance(access, str) or not isinstance(refresh, str) or not access or not refresh \
            or expires_in is None:
        raise ServerError(f"token endpoint answered the {what} with HTTP 200 but no usable tokens",
                          realm_id=realm_id, intuit_tid=_header_tid(resp), http_status=200)
    return TokenGrant(
        access_token=access, refresh_token=refresh, expires_in=expires_in,
        refresh_expires_in=_opt_int(body.get("x_refresh_token_expires_in")),
        hard_expires_in=_opt_int(body.get("x_refresh_token_hard_expires_in")),
        token_type=str(body.get("token_type") or "bearer"),
        scope=str(body["scope"]) if body.get("scope") else None,
    )


def refresh_grant(settings: Settings, refresh_token: str, *, realm_id: str | None = None,
                  session: requests.Session | None = None) -> TokenGrant:
    """grant_type=refresh_token with the given (latest) refresh token."""
    register_secret(refresh_token)
    return request_tokens(settings, {"grant_type": "refresh_token", "refresh_token": refresh_token},
                          what="refresh token", realm_id=realm_id, session=session)


def exchange_code(settings: Settings, code: str, *, realm_id: str | None = None,
                  session: requests.Session | None = None) -> TokenGrant:
    """grant_type=authorization_code with the same redirect_uri as the authorization request."""
    register_secret(code)
    return request_tokens(settings, {"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": settings.require_redirect_uri()},
                          what="authorization code", realm_id=realm_id, session=session)


def revoke_token(settings: Settings, token: str, *, realm_id: str | None = None,
                 session: requests.Session | None = None) -> None:
    """Revoke a refresh (or access) token at QBO_REVOKE_URL. An already-dead token counts as revoked."""
    register_secret(token)
    headers = {"Authorization": settings.basic_auth_header(), "Accept": "application/json",
               "Content-Type": "application/json"}
    resp = _post(settings.revoke_url, what="revocation", realm_id=realm_id, session=session,
                 json={"token": token}, headers=headers)
    if 200 <= resp.status_code < 300:
        return
    exc = _token_error(resp, "revocation", realm_id)
    if isinstance(exc, NeedsReauth):  # invalid_grant: the token is already unusable
        return
    raise exc


def authorization_url(settings: Settings, state: str) -> str:
    """Intuit's consent URL for the accounting scope with our redirect URI and `state`."""
    client_id, _ = settings.require_client()
    query = urlencode({"client_id": client_id, "response_type": "code", "scope": SCOPE_ACCOUNTING,
                       "redirect_uri": settings.require_redirect_uri(), "state": state})
    sep = "&" if "?" in settings.authorize_url else "?"
    return f"{settings.authorize_url}{sep}{query}"
