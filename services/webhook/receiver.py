"""The webhook receiver (`qbsync webhook`): Intuit's notifications into a durable inbox.

Routes (SPEC section 7):
    POST /webhooks/quickbooks   verify `intuit-signature`, parse, store, 200 after commit
    GET  /healthz               200 when the database answers, else 503
    GET  /oauth/callback        finish `qbsync connect` (services.tokens.connect.complete_authorization)

Order of work on a POST, and what each failure answers (never a 500 for client input):
    body over 1 MiB                        -> 413 (waitress refuses before reading it)
    missing or wrong signature             -> 401 (checked on the raw bytes, before parsing)
    not a webhook payload                  -> 400 with a one-line reason
    database unreachable / schema missing  -> 503 (Intuit retries; nothing was stored)
    anything unexpected                    -> 500, logged; the process stays up
All events of a body are stored in one transaction, so a body is either stored whole or not
at all; redeliveries are deduplicated by services.webhook.inbox.

Served by waitress (a production server) with SERVER_THREADS worker threads and a database
pool of the same size, so a request never waits for a connection while the database is up;
the pool's wait is capped at DB_WAIT_S so a dead database answers 503 inside Intuit's 3 s.
One access-log line per request: method, path (no query string), status, event count and
duration; never the body or the signature.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import psycopg
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server

from db.connection import Database, scalar
from services.core.config import Settings
from services.core.errors import ConfigError, DatabaseUnavailable, QBSyncError, describe
from services.core.logs import setup_logging
from services.core.worker import Stop
from services.webhook.inbox import MalformedPayload, parse_events, store_events

__all__ = [
    "make_app", "WebhookApp", "ReceiverServer", "cmd_webhook", "sign",
    "WEBHOOK_PATH", "MAX_BODY_BYTES", "SERVER_THREADS", "DB_WAIT_S",
]

WEBHOOK_PATH = "/webhooks/quickbooks"
HEALTH_PATH = "/healthz"
CALLBACK_PATH = "/oauth/callback"
MAX_BODY_BYTES = 1024 * 1024
SERVER_THREADS = 8
DB_WAIT_S = 2.5          # longest wait for a database connection (Intuit gives us 3 s)
RETRY_AFTER_S = 10       # hint on a 503; Intuit's own schedule starts at 10 s
STOP_GRACE_S = 10.0      # on SIGTERM: finish in-flight requests for at most this long
LOOP_TIMEOUT_S = 0.5     # how often the serve loop looks at the stop flag
SIGNATURE_WARN_EVERY_S = 60.0  # rejected signatures: at most one warning line per minute

log = logging.getLogger("webhook")

_ROUTES = {WEBHOOK_PATH: "POST", HEALTH_PATH: "GET", CALLBACK_PATH: "GET"}
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def sign(verifier_token: str, body: bytes) -> str:
    """Intuit's `intuit-signature` for `body`: base64(HMAC-SHA256(verifier token, raw body))."""
    digest = hmac.new(verifier_token.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class _Response:
    __slots__ = ("status", "body", "content_type", "headers", "events")

    def __init__(self, status: int, body: bytes, content_type: str, *,
                 headers: Iterable[tuple[str, str]] = (), events: int = 0) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers)
        self.events = events


def _json(status: int, obj: dict[str, Any], **kw: Any) -> _Response:
    return _Response(status, json.dumps(obj).encode("utf-8") + b"\n", "application/json", **kw)


def _page(status: int, title: str, text: str) -> _Response:
    body = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>\n")
    return _Response(status, body.encode("utf-8"), "text/html; charset=utf-8")


def _printable(text: str, limit: int = 200) -> str:
    """A path as it may appear in a log line: no control characters, bounded length."""
    out = "".join(ch if ch.isprintable() and ch != " " else f"\\x{ord(ch):02x}" for ch in text[:limit])
    return out + ("..." if len(text) > limit else "")


class _TooLarge(Exception):
    pass


class WebhookApp:
    """The WSGI callable. Thread-safe: it holds only the pool, the settings and the key."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._key = settings.require_verifier_token().encode("utf-8")
        self._rejected = 0
        self._rejected_lock = threading.Lock()
        self._last_warning = float("-inf")

    def _note_rejected_signature(self) -> None:
        """A wrong QBO_WEBHOOK_VERIFIER_TOKEN makes every delivery fail: say so, rate-limited."""
        with self._rejected_lock:
            self._rejected += 1
            now = time.monotonic()
            if now - self._last_warning < SIGNATURE_WARN_EVERY_S:
                return
            count, self._rejected, self._last_warning = self._rejected, 0, now
        log.warning("rejected %d webhook(s) with a missing or invalid intuit-signature; if these are"
                    " Intuit's, check QBO_WEBHOOK_VERIFIER_TOKEN against the developer portal", count)

    # -- WSGI ---------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        try:
            response = self._dispatch(method, path, environ)
        except Exception as exc:  # a bug must not take the receiver down
            log.exception("internal error on %s %s: %s", method, _printable(path), type(exc).__name__)
            response = _json(500, {"error": "internal error"})
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))),
                   ("Cache-Control", "no-store"), *response.headers]
        start_response(f"{response.status} {_REASONS.get(response.status, '')}".rstrip(), headers)
        log.info("%s %s %d events=%d %.1fms", _printable(method, 16), _printable(path),
                 response.status, response.events, (time.perf_counter() - started) * 1000)
        return [response.body]

    def _dispatch(self, method: str, path: str, environ: dict[str, Any]) -> _Response:
        allowed = _ROUTES.get(path)
        if allowed is None:
            return _json(404, {"error": "not found"})
        if method != allowed:
            return _json(405, {"error": f"use {allowed}"}, headers=[("Allow", allowed)])
        if path == WEBHOOK_PATH:
            return self._webhook(environ)
        if path == HEALTH_PATH:
            return self._health()
        return self._oauth_callback(environ)

    # -- POST /webhooks/quickbooks -----------------------------------------------------------
    def _read_body(self, environ: dict[str, Any]) -> bytes:
        stream = environ["wsgi.input"]
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        if raw_length:
            if not raw_length.isdigit():
                raise MalformedPayload("Content-Length is not a number")
            length = int(raw_length)
            if length > MAX_BODY_BYTES:
                raise _TooLarge()
            body = stream.read(length)
            if len(body) != length:
                raise MalformedPayload("body shorter than its Content-Length")
            return body
        if not environ.get("wsgi.input_terminated"):
            return b""  # no length and no end marker: reading could block
        body = stream.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge()
        return body

    def _signature_ok(self, environ: dict[str, Any], body: bytes) -> bool:
        received = environ.get("HTTP_INTUIT_SIGNATURE")
        if not received:
            return False
        expected = base64.b64encode(hmac.new(self._key, body, hashlib.sha256).digest())
        return hmac.compare_digest(received.strip().encode("latin-1"), expected)

    def _webhook(self, environ: dict[str, Any]) -> _Response:
        try:
            body = self._read_body(environ)
        except _TooLarge:
            return _json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
        except MalformedPayload as exc:
            return _json(400, {"error": str(exc)})
        if not self._signature_ok(environ, body):
            self._note_rejected_signature()
            return _json(401, {"error": "missing or invalid intuit-signature"})
        try:
            events = parse_events(body)
        except MalformedPayload as exc:
            log.warning("rejected a signed but malformed webhook body: %s", exc)
            return _json(400, {"error": str(exc)})
        try:
            with self.db.transaction() as conn:
                stored = store_events(conn, events)
        except DatabaseUnavailable as exc:
            log.warning("database unavailable, answered 503 (Intuit will retry): %s", exc.one_line())
            return self._unavailable(len(events))
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
            log.error("the inbox table is missing (%s): run `qbsync db upgrade`; answered 503",
                      describe(exc, name=False))
            return self._unavailable(len(events))
        except psycopg.OperationalError as exc:
            log.warning("database error, answered 503 (Intuit will retry): %s",
                        describe(exc, name=False))
            return self._unavailable(len(events))
        return _json(200, {"stored": stored, "duplicates": len(events) - stored}, events=len(events))

    @staticmethod
    def _unavailable(events: int) -> _Response:
        return _json(503, {"error": "database unavailable; retry later"},
                     headers=[("Retry-After", str(RETRY_AFTER_S))], events=events)

    # -- GET /healthz ------------------------------------------------------------------------
    def _health(self) -> _Response:
        try:
            with self.db.transaction() as conn:
                ready = scalar(conn, "SELECT to_regclass('quickbooks.webhook_inbox') IS NOT NULL")
        except (DatabaseUnavailable, psycopg.Error) as exc:
            return _json(503, {"status": "database unavailable", "error": describe(exc, name=False, limit=200)})
        if not ready:
            return _json(503, {"status": "schema missing: run qbsync db upgrade"})
        return _json(200, {"status": "ok"})

    # -- GET /oauth/callback -----------------------------------------------------------------
    def _oauth_callback(self, environ: dict[str, Any]) -> _Response:
        try:
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True,
                             max_num_fields=20, errors="replace")
        except ValueError:
            return _page(400, "Authorization failed", "the callback has too many parameters")
        params = {key: values[0] for key, values in query.items()}
        hidden = [params[k] for k in ("code", "state") if len(params.get(k) or "") >= 4]
        try:
            from services.tokens.connect import complete_authorization

            realm_id = complete_authorization(self.db, self.settings, params)
        except DatabaseUnavailable as exc:
            return _page(503, "Database unavailable", self._scrub(exc.one_line(), hidden))
        except QBSyncError as exc:
            message = self._scrub(exc.one_line(), hidden)
            log.warning("OAuth callback refused: %s", message)
            return _page(400, "Authorization failed", message)
        log.info("OAuth callback: connected company %s", realm_id)
        return _page(200, "QuickBooks connected", f"Connected company {realm_id}. You can close this tab.")

    @staticmethod
    def _scrub(text: str, hidden: list[str]) -> str:
        for value in hidden:
            text = text.replace(value, "[REDACTED]")
        return text.replace("\n", " ")


def make_app(db: Database, settings: Settings) -> WebhookApp:
    """The receiver's WSGI app. Raises ConfigError when QBO_WEBHOOK_VERIFIER_TOKEN is unset."""
    return WebhookApp(db, settings)


class ReceiverServer:
    """waitress serving one WSGI app, with a stop that lets in-flight requests finish.

    All socket work happens in the thread that calls `serve` (the main thread under
    `qbsync webhook`, a background thread in tests), so stopping needs no cross-thread
    socket handling: the loop sees the stop flag, closes the listening socket, waits for
    requests being handled to be answered (at most STOP_GRACE_S), then closes the rest.
    """

    def __init__(self, app: Callable[..., Any], host: str, port: int, *, threads: int = SERVER_THREADS) -> None:
        self._map: dict[int, Any] = {}
        self._server = create_server(
            app, map=self._map, host=host, port=port, threads=threads,
            # waitress refuses bodies of this size or more with 413 before reading them,
            # for Content-Length and chunked bodies alike
            max_request_body_size=MAX_BODY_BYTES + 1,
            ident="qbsync", expose_tracebacks=False, channel_timeout=30,
            clear_untrusted_proxy_headers=True,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wakers = self._listeners()

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self._bound()[1])

    @property
    def host(self) -> str:
        return str(self._bound()[0])

    def _bound(self) -> tuple[Any, ...]:
        sock = self._listeners()[0].socket
        assert sock is not None  # bound by create_server
        return tuple(sock.getsockname())

    def _listeners(self) -> list[BaseWSGIServer]:
        return [d for d in self._map.values() if isinstance(d, BaseWSGIServer)]

    def serve(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Serve until `should_stop()` (or `stop()`) says so, then stop gracefully."""
        check = should_stop or (lambda: False)
        while not (self._stop.is_set() or check()):
            wasyncore.loop(timeout=LOOP_TIMEOUT_S, map=self._map, use_poll=True, count=1)
        self._drain()

    def _drain(self) -> None:
        listeners = self._listeners()
        for listener in listeners:
            wasyncore.dispatcher.close(listener)  # stop accepting; keep the trigger
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(
                isinstance(ch, HTTPChannel) and (ch.requests or ch.total_outbufs_len)
                for ch in list(self._map.values())):
            wasyncore.loop(timeout=0.05, map=self._map, use_poll=True, count=1)
        for channel in list(self._map.values()):
            try:
                channel.close()
            except OSError:
                pass
        if listeners:
            listeners[0].task_dispatcher.shutdown(timeout=2)

    # -- for tests and embedding: run in a background thread ---------------------------------
    def start(self) -> ReceiverServer:
        """Serve in a daemon thread; `stop()` ends it."""
        self._thread = threading.Thread(target=self.serve, name="webhook-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_GRACE_S + 5) -> None:
        """Ask the serve loop to stop and wait for it (background-thread use)."""
        if not self._stop.is_set():
            self._stop.set()
            for listener in self._wakers:  # wake the loop now rather than at its next timeout
                try:
                    listener.pull_trigger()
                except OSError:  # the loop already closed it
                    pass
        if self._thread is not None:
            self._thread.join(timeout)


def cmd_webhook(args: argparse.Namespace, settings: Settings) -> int:
    """`qbsync webhook`: serve until SIGTERM (exit 0); a missing verifier token exits 2."""
    from db.connection import open_database
    from services.core.worker import run_worker

    setup_logging("webhook", settings.log_level)
    logging.getLogger("waitress").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # the embedded default's chatter

    def body(stop: Stop) -> None:
        settings.require_verifier_token()
        db = open_database(settings, max_size=SERVER_THREADS, timeout=DB_WAIT_S, service="webhook")
        try:
            app = make_app(db, settings)
            try:
                server = ReceiverServer(app, settings.webhook_host, settings.webhook_port)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {settings.webhook_host}:{settings.webhook_port}"
                                  f" (WEBHOOK_HOST/WEBHOOK_PORT): {exc.strerror or exc}") from None
            log.info("listening on http://%s:%d%s (health: %s)", server.host, server.port,
                     WEBHOOK_PATH, HEALTH_PATH)
            server.serve(lambda: stop.requested)
            log.info("stopped")
        finally:
            db.close()

    return run_worker("webhook", settings.restart_delay_seconds, body)
