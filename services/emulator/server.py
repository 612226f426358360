"""The emulator's HTTP server: Intuit-shaped OAuth and Data API endpoints plus `/_admin/`.

`EmulatorServer(...).start()` listens on loopback (port 0 = any free port) and serves every
connection on its own daemon thread (HTTP/1.1 keep-alive); `.stop()` closes the listener and
every open connection. Endpoints (shapes from shared/qbo/samples):

    POST /oauth2/v1/tokens/bearer      refresh_token | authorization_code (Basic client auth)
    POST /oauth2/v1/tokens/revoke      {"token": ...}: the realm's whole token family dies
    GET  /connect/oauth2               auto-approves: 302 redirect_uri?code&state&realmId
    GET  /.well-known/openid_configuration   the discovery document, endpoints on the emulator
    GET  /v3/company/{realm}/query?query=...   (POST with an application/text body too)
    GET  /v3/company/{realm}/cdc?entities=...&changedSince=...
    GET  /v3/company/{realm}/{entity}/{id}, /v3/company/{realm}/companyinfo/{realm}
    GET  /v3/company/{realm}/reports/{ReportName}?start_date=&end_date=&...  (services.emulator.reports)
    POST /_admin/{method}              JSON kwargs in, JSON out (see services.emulator.admin)

Data API calls need a valid bearer token (else the recorded 401), are limited per realm
(sliding 60 s window and 10 concurrent, else the recorded XML 429), may get seeded injected
429/503 faults and a configured latency. A path with no resource gets Intuit's answer: 400 with
a Fault "Unsupported Operation" (code 500).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from services.core.limits import REQUESTS_PER_MINUTE
from services.core.logs import redact
from services.emulator import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET, EMULATOR_VERIFIER_TOKEN
from services.emulator.admin import EmulatorAdmin
from services.emulator.jsontext import dumps, loads
from services.emulator.state import CANONICAL, REFRESH_TOKEN_REUSE_SECONDS, EmulatorError, State

__all__ = ["EmulatorServer", "FAULT_401_BODY", "FAULT_429_BODY", "DISCOVERY_PATHS", "discovery_document"]

# Recorded bodies (shared/qbo/samples), kept inline so the emulator runs from any checkout.
FAULT_401_BODY = (
    b'{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message=AuthenticationFailed; '
    b'errorCode=003200; statusCode=401","detail":"Token expired: AB01601390262kxzxOlnHYdhtEVRXISU7piPqQrCmmbDN35Yjd",'
    b'"code":"3200","element":null}],"type":"AUTHENTICATION"},"report":null,"queryResponse":null,'
    b'"batchItemResponse":[],"attachableResponse":[],"syncErrorResponse":null,"requestId":null,'
    b'"time":1601391072830,"status":null,"cdcresponse":[]}')
FAULT_429_BODY = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<IntuitResponse time="2016-12-07T15:27:09.527-08:00" xmlns="http://schema.intuit.com/finance/v3">\n'
    b'  <Fault type="SERVICE">\n'
    b'    <Error code="3001">\n'
    b'      <Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>\n'
    b'      <Detail>The request limit was reached.  Try again later</Detail>\n'
    b'    </Error>\n'
    b'  </Fault>\n'
    b'</IntuitResponse>\n')
FAULT_503_BODY = (b"<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
                  b"<center><h1>503 Service Temporarily Unavailable</h1></center></body></html>\n")
FAULT_403_BODY = (b'{"Fault":{"Error":[{"Message":"message=ApplicationAuthorizationFailed; errorCode=003100; '
                  b'statusCode=403","Detail":"","code":"003100"}],"type":"AuthorizationFault"},"time":"%s"}')
_DATA_PATH = re.compile(r"^/v3/company/([^/]+)/(.+?)/?$")
_JSON = "application/json;charset=UTF-8"
_MAX_BODY = 8 * 1024 * 1024


# intuitlib's AuthClient(environment=<this URL>) reads its endpoints from here
DISCOVERY_PATHS = ("/.well-known/openid_configuration", "/.well-known/openid_sandbox_configuration")


def discovery_document(base: str) -> dict[str, Any]:
    """Intuit's OpenID discovery document (shared/qbo/samples/discovery_document.json) with
    every endpoint on the emulator at `base`."""
    return {
        "issuer": f"{base}/op/v1",
        "authorization_endpoint": f"{base}/connect/oauth2",
        "token_endpoint": f"{base}/oauth2/v1/tokens/bearer",
        "userinfo_endpoint": f"{base}/v1/openid_connect/userinfo",
        "revocation_endpoint": f"{base}/v2/oauth2/tokens/revoke",
        "jwks_uri": f"{base}/op/v1/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "address", "phone"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
    }


def _tid() -> str:
    return f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: State) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 120
    server: _HTTPServer

    # ---- plumbing ----------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.connections.discard(self.connection)

    def version_string(self) -> str:
        return "nginx"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: tokens ride in URLs/headers
        return

    @property
    def state(self) -> State:
        return self.server.state

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise EmulatorError("request body too large", 413)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str = _JSON,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        tid = _tid()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("intuit_tid", tid)
        self.send_header("Intuit-Tid", tid)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, dumps(payload).encode(), headers=headers)

    def _latency(self) -> None:
        ms = float(self.state.config.get("latency_ms") or 0)
        if ms > 0:
            time.sleep(ms / 1000.0)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path
        try:
            body = self._body() if self.command == "POST" else b""
            if path.startswith("/_admin/"):
                self._admin(path[len("/_admin/"):].strip("/"), body, params)
            elif path == "/oauth2/v1/tokens/bearer" and self.command == "POST":
                self._token(body)
            elif path in ("/oauth2/v1/tokens/revoke", "/v2/oauth2/tokens/revoke") and self.command == "POST":
                self._revoke(body)
            elif path == "/connect/oauth2" and self.command == "GET":
                self._authorize(params)
            elif path.rstrip("/") in DISCOVERY_PATHS and self.command == "GET":
                self._send_json(200, discovery_document(f"http://{self.headers.get('Host') or self._host()}"))
            elif (m := _DATA_PATH.match(path)) is not None:
                self._data(m.group(1), m.group(2), params, body)
            else:
                self._unsupported()
        except EmulatorError as exc:
            self._send_json(exc.status, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the connection thread with a traceback
            self._send_json(500, {"error": redact(f"emulator internal error: {type(exc).__name__}: {exc}")})

    def _host(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host.decode() if isinstance(host, bytes) else host}:{port}"

    def _unsupported(self) -> None:
        """What Intuit answers for a path it has no resource for: 400 with a Fault, code 500."""
        url = urlsplit(self.path)
        detail = (f"Operation Could not find resource for relative : {url.path} of full path: "
                  f"http://{self.headers.get('Host') or self._host()}{self.path} is not supported.")
        self._send(400, self.state.fault("Unsupported Operation", detail, "500"))

    # ---- OAuth ---------------------------------------------------------------------------------
    def _client(self, form: dict[str, str]) -> tuple[str | None, str | None]:
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
                return user, password
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None, None
        return form.get("client_id"), form.get("client_secret")

    def _token(self, body: bytes) -> None:
        self._latency()
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        grant = form.get("grant_type", "")
        key = f"token:{grant}" if grant in ("refresh_token", "authorization_code") else None
        headers = {"Cache-Control": "no-cache, no-store", "Pragma": "no-cache"}
        if not self.state.check_client(*self._client(form)):
            if key:
                self.state.count(None, key)
            self._send_json(401, {"error": "invalid_client"}, headers)
            return
        include_hard = self.headers.get("x-include-refresh-token-hard-expires-in", "").strip().lower() == "true"
        if grant == "refresh_token":
            if not form.get("refresh_token"):
                self.state.count(None, key or "")
                self._send_json(400, {"error": "invalid_request"}, headers)
                return
            status, payload, realm_id = self.state.refresh(form["refresh_token"], include_hard)
        elif grant == "authorization_code":
            status, payload, realm_id = self.state.exchange_code(form.get("code", ""), form.get("redirect_uri", ""),
                                                                 include_hard)
        else:
            self._send_json(400, {"error": "unsupported_grant_type"}, headers)
            return
        self.state.count(realm_id, key or "")
        self._send_json(status, payload, headers)

    def _revoke(self, body: bytes) -> None:
        self._latency()
        token = ""
        try:
            token = str(json.loads(body or b"{}").get("token", ""))
        except (ValueError, AttributeError):
            token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[-1]
        if not self.state.check_client(*self._client({})):
            self.state.count(None, "revoke")
            self._send_json(401, {"error": "invalid_client"})
            return
        if not token:
            self.state.count(None, "revoke")
            self._send_json(400, {"error": "invalid_request"})
            return
        realm_id = self.state.revoke(token)
        self.state.count(realm_id, "revoke")
        self._send(200, b"")

    def _authorize(self, params: dict[str, str]) -> None:
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if not client_id or not secrets.compare_digest(client_id, self.state.client_id):
            self.state.count(None, "authorize")
            self._send(400, b"invalid client_id\n", "text/plain; charset=utf-8")
            return
        if params.get("response_type") != "code" or not redirect_uri:
            self.state.count(None, "authorize")
            self._send(400, b"response_type=code and redirect_uri are required\n", "text/plain; charset=utf-8")
            return
        code, realm_id = self.state.authorize(client_id, redirect_uri)
        self.state.count(realm_id, "authorize")
        query = urlencode({"code": code, "state": params.get("state", ""), "realmId": realm_id})
        location = redirect_uri + ("&" if "?" in redirect_uri else "?") + query
        self._send(302, b"", "text/plain", {"Location": location})

    # ---- Data API ------------------------------------------------------------------------------
    def _data(self, realm_id: str, rest: str, params: dict[str, str], body: bytes) -> None:
        state = self.state
        parts = rest.split("/")
        if parts == ["query"]:
            kind = "query"
        elif parts == ["cdc"]:
            kind = "cdc"
        elif len(parts) == 2 and parts[0].lower() == "companyinfo":
            kind = "companyinfo"
        elif len(parts) == 2 and parts[0] == "reports" and parts[1]:
            kind = "report"
        elif len(parts) == 2 and parts[0].lower() in CANONICAL:
            kind = "read"
        else:
            self._unsupported()
            return
        state.count(realm_id, kind)
        minor = params.get("minorversion")
        if minor is None:
            state.count(realm_id, "no_minorversion")
        else:
            with state.lock:
                state.minor_versions[minor] += 1
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        verdict = state.check_access(token, realm_id)
        if verdict == 401:
            self._send(401, FAULT_401_BODY, "application/json",
                       {"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'})
            return
        if verdict == 403:
            self._send(403, FAULT_403_BODY % state.time_text().encode())
            return
        if not state.admit(realm_id):
            state.count(realm_id, "throttled")
            self._send(429, FAULT_429_BODY, "application/xml")
            return
        try:
            self._latency()
            injected = state.injected_failure()
            if injected == 429:
                state.count(realm_id, "throttled")
                self._send(429, FAULT_429_BODY, "application/xml")
                return
            if injected == 503:
                self._send(503, FAULT_503_BODY, "text/html")
                return
            if kind == "query":
                text = params.get("query")
                if text is None and self.command == "POST":
                    text = body.decode("utf-8", "replace")
                status, out = state.query(realm_id, text or "")
            elif kind == "cdc":
                status, out = state.cdc(realm_id, params.get("entities", ""), params.get("changedSince", ""))
            elif kind == "report":
                status, out = state.report(realm_id, parts[1], params)
            else:
                status, out = state.read(realm_id, parts[0], parts[1])
            self._send(status, out)
        finally:
            state.release(realm_id)

    # ---- admin ---------------------------------------------------------------------------------
    def _admin(self, method: str, body: bytes, params: dict[str, str]) -> None:
        state = self.state
        try:
            kw: dict[str, Any] = loads(body) if body.strip() else dict(params)
        except ValueError:
            raise EmulatorError("admin body must be a JSON object") from None
        if not isinstance(kw, dict):
            raise EmulatorError("admin body must be a JSON object")
        try:
            if method == "create_realm":
                self._send_json(200, {"realm_id": state.create_realm(**kw)})
            elif method == "issue_tokens":
                self._send_json(200, state.issue_tokens(**kw))
            elif method == "newest_tokens":
                self._send_json(200, state.newest_tokens(**kw))
            elif method == "expire_access_tokens":
                state.expire_access_tokens(**kw)
                self._send_json(200, {})
            elif method == "invalidate_refresh_tokens":
                state.invalidate_refresh_tokens(**kw)
                self._send_json(200, {})
            elif method == "configure":
                self._send_json(200, state.configure(**kw))
            elif method == "request_counts":
                self._send_json(200, state.request_counts(**kw))
            elif method == "reset_counts":
                state.reset_counts()
                self._send_json(200, {})
            elif method == "mutate":
                self._send(200, state.mutate(**kw))
            elif method == "entities":
                self._send(200, state.entities_json(**kw))
            elif method == "vanish":
                state.vanish(**kw)
                self._send_json(200, {})
            elif method == "advance_clock":
                now = state.advance_clock(**kw)
                self._send_json(200, {"now": now, "time": state.time_text()})
            elif method == "now":
                self._send_json(200, {"now": state.now(), "time": state.time_text()})
            elif method == "set_authorize_realm":
                state.set_authorize_realm(**kw)
                self._send_json(200, {})
            elif method == "webhook_deliveries":
                self._send_json(200, state.webhooks.deliveries())
            elif method == "webhooks_pending":
                self._send_json(200, {"pending": state.webhooks.pending()})
            elif method == "minor_versions":
                with state.lock:
                    self._send_json(200, dict(state.minor_versions))
            elif method == "realms":
                with state.lock:
                    self._send_json(200, list(state.realms))
            else:
                raise EmulatorError(f"unknown admin method {method!r}", 404)
        except (TypeError, ValueError) as exc:
            raise EmulatorError(f"bad arguments for {method}: {exc}") from None


class EmulatorServer:
    """The emulator on `host:port` (0 = a free port), served by background daemon threads."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, grace_seconds: float = 86400,
                 rate_limit_per_minute: int = REQUESTS_PER_MINUTE, latency_ms: int = 0, seed: int = 1,
                 client_id: str = EMULATOR_CLIENT_ID, client_secret: str = EMULATOR_CLIENT_SECRET,
                 verifier_token: str = EMULATOR_VERIFIER_TOKEN,
                 refresh_token_reuse_seconds: float = REFRESH_TOKEN_REUSE_SECONDS) -> None:
        self.host, self.port = host, port
        self.state = State(grace_seconds=grace_seconds, rate_limit_per_minute=rate_limit_per_minute,
                           latency_ms=latency_ms, seed=seed, client_id=client_id, client_secret=client_secret,
                           verifier_token=verifier_token, refresh_token_reuse_seconds=refresh_token_reuse_seconds)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._admin: EmulatorAdmin | None = None

    def start(self) -> EmulatorServer:
        """Bind and serve in the background; returns once the socket is listening (OSError if the port is taken)."""
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), self.state)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"emulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: close the listener and every open connection, stop webhook delivery."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            with httpd.conn_lock:
                conns = list(httpd.connections)
            for conn in conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.state.webhooks.stop()

    @property
    def url(self) -> str:
        """`http://host:port` of the running server."""
        return f"http://{self.host}:{self.port}"

    @property
    def admin(self) -> EmulatorAdmin:
        """An admin client on this server's URL."""
        if self._admin is None or self._admin.base_url != self.url:
            self._admin = EmulatorAdmin(self.url)
        return self._admin

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
