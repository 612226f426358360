"""`qbsync connect`: authorize a company with Intuit's authorization-code flow and store it.

`connect` creates a single-use state in Postgres (quickbooks.oauth_states), prints the
authorization URL and completes the flow from a pasted redirect URL, `--redirect-url`, a
short-lived local listener (`--listen`), or the webhook server's `/oauth/callback` route,
which calls `complete_authorization` in its own process. The tokens go to the vault
(services.tokens.vault.store_grant), CompanyInfo through the Data API client.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import queue
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from db.connection import Database, scalar
from services.core.config import Settings
from services.core.errors import QBSyncError, describe
from services.core.logs import redact
from services.intuit.oauth import authorization_url, exchange_code
from services.tokens import vault as tokens

__all__ = ["OAuthStateError", "AuthorizationDenied", "create_state", "complete_authorization", "cmd_connect",
           "STATE_TTL_S"]

log = logging.getLogger("qbsync.oauth")

STATE_TTL_S = 30 * 60


class OAuthStateError(QBSyncError):
    """The callback's `state` is unknown, expired, already used, or not the one we issued."""

    action = "start again with `qbsync connect` and use the newest authorization URL"


class AuthorizationDenied(QBSyncError):
    """The user (or Intuit) declined the authorization, or the callback is incomplete."""

    action = "start again with `qbsync connect` and approve access for the company"


def create_state(db: Database, *, expected_realm_id: str | None = None, ttl_s: int = STATE_TTL_S) -> str:
    """A fresh random state, stored (single-use, expiring) so any qbsync process can validate it."""
    state = secrets.token_urlsafe(24)
    with db.transaction() as conn:
        conn.execute("DELETE FROM quickbooks.oauth_states WHERE expires_at < now() - interval '7 days'")
        conn.execute(
            "INSERT INTO quickbooks.oauth_states (state, expires_at, expected_realm_id)"
            " VALUES (%s, now() + make_interval(secs => %s), %s)",
            (state, ttl_s, expected_realm_id))
    return state


def _consume_state(db: Database, state: str) -> str | None:
    """Mark `state` used; return its expected realm (or ""), None if unknown/expired/used."""
    with db.transaction() as conn:
        row = conn.execute(
            "UPDATE quickbooks.oauth_states SET consumed_at = now()"
            " WHERE state = %s AND consumed_at IS NULL AND expires_at > now()"
            " RETURNING coalesce(expected_realm_id, '')", (state,)).fetchone()
    return None if row is None else row[0]


def _finish_state(db: Database, state: str, *, realm_id: str | None = None, error: str | None = None) -> None:
    with db.transaction() as conn:
        conn.execute(
            "UPDATE quickbooks.oauth_states SET completed_at = CASE WHEN %s::text IS NULL THEN now() END,"
            " realm_id = %s, error = %s WHERE state = %s",
            (error, realm_id, redact(error)[:1000] if error else None, state))


def complete_authorization(db: Database, settings: Settings, params: Mapping[str, str],
                           expected_state: str | None = None, *,
                           session: requests.Session | None = None) -> str:
    """Finish the authorization-code flow from the callback's query parameters; return the realm id.

    Guarantees: the state must match `expected_state` (when given) and be a live, unused state
    from quickbooks.oauth_states; otherwise OAuthStateError and nothing is stored. On success
    the company and its tokens are stored (status active) in one transaction and CompanyInfo is
    fetched for the name (best effort). Used by `qbsync connect` and the webhook's /oauth/callback.
    """
    state = params.get("state") or ""
    if expected_state is not None and not hmac.compare_digest(state.encode(), expected_state.encode()):
        raise OAuthStateError("the callback's state does not match this authorization request; refused")
    if params.get("error"):
        if state:
            _consume_state(db, state)
        raise AuthorizationDenied(f"authorization was not granted: {redact(params['error'])[:100]}")
    code, realm_id = params.get("code") or "", params.get("realmId") or ""
    if not state:
        raise OAuthStateError("the callback carries no state; refused")
    expected_realm = _consume_state(db, state)
    if expected_realm is None:
        raise OAuthStateError("unknown, expired or already used state in the callback; refused")
    if not code or not realm_id:
        _finish_state(db, state, error="callback without code or realmId")
        raise AuthorizationDenied("the callback has no code or realmId")
    if expected_realm and expected_realm != realm_id:
        _finish_state(db, state, error=f"authorized realm {realm_id}, expected {expected_realm}")
        raise AuthorizationDenied(f"Intuit authorized company {realm_id}, but {expected_realm} was expected;"
                                  " nothing stored", realm_id=expected_realm)
    try:
        with db.transaction() as conn:
            requested_at = scalar(conn, "SELECT clock_timestamp()")
        grant = exchange_code(settings, code, realm_id=realm_id, session=session)
        with db.transaction() as conn:
            tokens.store_grant(conn, settings, realm_id, grant, requested_at, event="connected",
                               detail="authorized with qbsync connect")
    except Exception as exc:
        _finish_state(db, state, error=describe(exc))
        raise
    _finish_state(db, state, realm_id=realm_id)
    tokens.update_company_info(db, settings, realm_id, grant.access_token, session=session)
    log.info("realm %s: connected", realm_id)
    return realm_id


# --------------------------------------------------------------------------- qbsync connect


def _params_from_url(text: str) -> dict[str, str]:
    text = text.strip()
    query = urlsplit(text).query if "://" in text or text.startswith("/") else text.lstrip("?")
    return dict(parse_qsl(query, keep_blank_values=True))


class _Callback(BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != self.server.expected_path:
            self.send_error(404)
            return
        self.server.results.put(dict(parse_qsl(parts.query, keep_blank_values=True)))
        body = b"qbsync received the authorization. You can close this tab and return to the terminal.\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:  # the query string carries the code
        pass


class _CallbackServer(HTTPServer):
    def __init__(self, address: tuple[str, int], expected_path: str) -> None:
        super().__init__(address, _Callback)
        self.expected_path = expected_path
        self.results: queue.Queue[dict[str, str]] = queue.Queue()


def _listen_for_callback(redirect_uri: str, timeout_s: float) -> dict[str, str]:
    parts = urlsplit(redirect_uri)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "https":
        raise QBSyncError("--listen serves plain HTTP; QBO_REDIRECT_URI is https, so paste the redirect URL"
                          " instead (or let the webhook server behind your TLS proxy receive it)")
    try:
        server = _CallbackServer((host, port), parts.path or "/")
    except OSError as exc:
        raise QBSyncError(f"cannot listen on {host}:{port} for the callback: {exc.strerror or exc}") from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        print(f"Waiting up to {timeout_s:.0f} s for the callback on {host}:{port}{parts.path} ...", flush=True)
        try:
            return server.results.get(timeout=timeout_s)
        except queue.Empty:
            raise QBSyncError("timed out waiting for the OAuth callback") from None
    finally:
        server.shutdown()
        server.server_close()


def _state_outcome(db: Database, state: str) -> tuple[str | None, str | None]:
    with db.transaction() as conn:
        row = conn.execute("SELECT realm_id, error, completed_at IS NOT NULL FROM quickbooks.oauth_states"
                           " WHERE state = %s", (state,)).fetchone()
    if row is None:
        return None, None
    realm_id, error, completed = row
    return (realm_id if completed else None), error


def _paste_or_webhook(db: Database, state: str, timeout_s: float) -> dict[str, str] | str:
    """A pasted redirect URL (its params), or the realm id if the webhook server completed `state`."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    print("Paste the full URL your browser was redirected to and press Enter"
          " (or wait: the webhook server's /oauth/callback completes it too):", flush=True)
    deadline = time.monotonic() + timeout_s
    stdin_open = True
    while time.monotonic() < deadline:
        if stdin_open:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                line = ""
            if line is None:
                stdin_open = False
            elif line.strip():
                return _params_from_url(line)
        else:
            time.sleep(1.0)
        realm_id, error = _state_outcome(db, state)
        if realm_id:
            return realm_id
        if error:
            raise QBSyncError(f"the webhook server could not complete the authorization: {error}")
    raise QBSyncError("timed out waiting for the redirect URL")


def cmd_connect(args: argparse.Namespace, settings: Settings) -> int:
    """`qbsync connect`: authorize a company and store its tokens; exit 0 with the realm connected."""
    from db.connection import open_database
    from services.core.logs import setup_logging

    setup_logging("connect", settings.log_level)
    redirect_uri = settings.require_redirect_uri()
    db = open_database(settings, announce=False)
    try:
        if args.redirect_url:
            # The state was issued by an earlier `qbsync connect` (stored in Postgres): validate against it.
            realm_id = complete_authorization(db, settings, _params_from_url(args.redirect_url))
        else:
            state = create_state(db, expected_realm_id=args.realm_id)
            print("Open this URL in a browser, sign in to QuickBooks and approve access:", flush=True)
            print(authorization_url(settings, state), flush=True)
            if args.listen:
                outcome: dict[str, str] | str = _listen_for_callback(redirect_uri, args.timeout)
            else:
                print("(If this session ends first, run: qbsync connect --redirect-url '<the URL>' within"
                      f" {STATE_TTL_S // 60} minutes.)", flush=True)
                outcome = _paste_or_webhook(db, state, args.timeout)
            realm_id = outcome if isinstance(outcome, str) else complete_authorization(db, settings, outcome, state)
        with db.transaction() as conn:
            name = conn.execute("SELECT name FROM quickbooks.companies WHERE id = %s", (realm_id,)).fetchone()
        label = f" ({name[0]})" if name and name[0] else ""
        print(f"Connected realm {realm_id}{label}. `qbsync tokenup` keeps its tokens fresh.", flush=True)
        return 0
    finally:
        db.close()
