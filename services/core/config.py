"""Configuration: one typed, immutable settings object from the environment or `.env`.

`load_settings()` validates every variable of SPEC section 3 up front. A malformed value
raises `ConfigError` naming the variable; the CLI turns that into one line on stderr and a
non-zero exit, never a traceback. Variables that only some commands need (the Intuit app
keys, the webhook verifier token) are checked by `Settings.require_*` in those commands.

Secrets are held in `Secret`, whose repr and str never show the value, and are registered
with the log redactor as soon as they are read.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.core.errors import ConfigError
from services.core.limits import CONCURRENT_REQUESTS, REQUESTS_PER_MINUTE
from services.core.logs import register_secret

__all__ = ["Secret", "Settings", "load_settings", "API_BASE_URLS"]

API_BASE_URLS = {
    "production": "https://quickbooks.api.intuit.com",
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
}
DEFAULT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
DEFAULT_AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"
DEFAULT_REVOKE_URL = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Secret:
    """A string that never shows itself in repr, str, f-strings or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: Secret | None = None
    redirect_uri: str | None = None
    environment: str = "production"
    api_base_url: str = API_BASE_URLS["production"]
    token_url: str = DEFAULT_TOKEN_URL
    authorize_url: str = DEFAULT_AUTHORIZE_URL
    revoke_url: str = DEFAULT_REVOKE_URL
    webhook_verifier_token: Secret | None = None
    minor_version: int = 75
    max_requests_per_minute: int = 450
    max_concurrency: int = 4
    retry_base_seconds: float = 2.0
    token_refresh_margin_minutes: int = 10
    token_check_interval_seconds: int = 300
    sync_interval_minutes: int = 60
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    sync_concurrency: int = 8
    sync_lease_seconds: int = 120
    sync_wake_host: str = "127.0.0.1"
    sync_wake_port: int = 0
    reconcile_interval_hours: int = 24
    monthly_call_limit: int = 500_000
    call_reserve_percent: float = 5.0
    metrics_port: int | None = None
    log_level: str = "INFO"
    restart_delay_seconds: float = 10.0
    work_dir: Path = field(default_factory=Path.cwd)

    def require_client(self) -> tuple[str, str]:
        """The Intuit app keys, or ConfigError naming the missing variable."""
        if not self.client_id:
            raise ConfigError("QBO_CLIENT_ID is not set (or set QBO_AUTH_BASIC)")
        if self.client_secret is None:
            raise ConfigError("QBO_CLIENT_SECRET is not set (or set QBO_AUTH_BASIC)")
        return self.client_id, self.client_secret.reveal()

    def basic_auth_header(self) -> str:
        """`Basic base64(client_id:client_secret)` for the token and revoke endpoints."""
        client_id, secret = self.require_client()
        raw = f"{client_id}:{secret}".encode()
        value = "Basic " + base64.b64encode(raw).decode()
        register_secret(value)
        register_secret(base64.b64encode(raw).decode())
        return value

    def require_verifier_token(self) -> str:
        if self.webhook_verifier_token is None:
            raise ConfigError("QBO_WEBHOOK_VERIFIER_TOKEN is not set")
        return self.webhook_verifier_token.reveal()

    def require_redirect_uri(self) -> str:
        if not self.redirect_uri:
            raise ConfigError("QBO_REDIRECT_URI is not set")
        return self.redirect_uri

    @property
    def embedded_pg_dir(self) -> Path:
        return self.work_dir / "var" / "pg"

    @property
    def supervisor_socket(self) -> Path:
        """supervisord's unix socket (supervisord.conf: %(here)s/var/supervisor.sock)."""
        return self.work_dir / "var" / "supervisor.sock"

    @property
    def log_dir(self) -> Path:
        """Per-program log files: logs/<program>.out.log (INFO and below), logs/<program>.err.log."""
        return self.work_dir / "logs"


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _optional_port(env: Mapping[str, str], name: str) -> int | None:
    """A TCP port (1-65535), or None when unset."""
    if env.get(name, "").strip() == "":
        return None
    return _int(env, name, 0, 1, 65535)


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def _url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _client_keys(env: Mapping[str, str]) -> tuple[str | None, Secret | None]:
    client_id = env.get("QBO_CLIENT_ID", "").strip() or None
    secret_raw = env.get("QBO_CLIENT_SECRET", "").strip()
    basic = env.get("QBO_AUTH_BASIC", "").strip()
    if basic:
        register_secret(basic)
        try:
            decoded = base64.b64decode(basic, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError("QBO_AUTH_BASIC must be base64 of client_id:client_secret") from None
        basic_id, sep, basic_secret = decoded.partition(":")
        if not sep or not basic_id or not basic_secret:
            raise ConfigError("QBO_AUTH_BASIC must be base64 of client_id:client_secret")
        client_id = client_id or basic_id
        secret_raw = secret_raw or basic_secret
    return client_id, (Secret(secret_raw) if secret_raw else None)


def load_settings(env: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read and validate SPEC section 3. `env` defaults to os.environ (+ ./.env)."""
    if env is None:
        if dotenv:
            from dotenv import load_dotenv

            load_dotenv(Path.cwd() / ".env", override=False)
        env = os.environ
    environment = env.get("QBO_ENVIRONMENT", "").strip().lower() or "production"
    if environment not in API_BASE_URLS:
        raise ConfigError(f"QBO_ENVIRONMENT must be 'production' or 'sandbox', got {environment!r}")
    client_id, client_secret = _client_keys(env)
    verifier = env.get("QBO_WEBHOOK_VERIFIER_TOKEN", "").strip()
    database_url = env.get("DATABASE_URL", "").strip() or None
    if database_url and not database_url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("DATABASE_URL must start with postgresql:// (or postgres://)")
    if database_url:
        register_secret_in_url(database_url)
    log_level = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    return Settings(
        database_url=database_url,
        client_id=client_id,
        client_secret=client_secret,
        redirect_uri=_url(env, "QBO_REDIRECT_URI", None),
        environment=environment,
        api_base_url=_url(env, "QBO_API_BASE_URL", API_BASE_URLS[environment]) or "",
        token_url=_url(env, "QBO_TOKEN_URL", DEFAULT_TOKEN_URL) or "",
        authorize_url=_url(env, "QBO_AUTHORIZE_URL", DEFAULT_AUTHORIZE_URL) or "",
        revoke_url=_url(env, "QBO_REVOKE_URL", DEFAULT_REVOKE_URL) or "",
        webhook_verifier_token=Secret(verifier) if verifier else None,
        minor_version=_int(env, "QBO_MINOR_VERSION", 75, 75, 999),
        max_requests_per_minute=_int(env, "QBO_MAX_REQUESTS_PER_MINUTE", 450, 1, REQUESTS_PER_MINUTE),
        max_concurrency=_int(env, "QBO_MAX_CONCURRENCY", 4, 1, CONCURRENT_REQUESTS),
        retry_base_seconds=_float(env, "QBO_RETRY_BASE_SECONDS", 2.0, 0.0, 60.0),
        token_refresh_margin_minutes=_int(env, "TOKEN_REFRESH_MARGIN_MINUTES", 10, 1, 55),
        token_check_interval_seconds=_int(env, "TOKEN_CHECK_INTERVAL_SECONDS", 300, 1, 3600),
        sync_interval_minutes=_int(env, "SYNC_INTERVAL_MINUTES", 60, 1, 24 * 60),
        webhook_host=env.get("WEBHOOK_HOST", "").strip() or "127.0.0.1",
        webhook_port=_int(env, "WEBHOOK_PORT", 8080, 0, 65535),
        sync_concurrency=_int(env, "SYNC_CONCURRENCY", 8, 1, 64),
        sync_lease_seconds=_int(env, "SYNC_LEASE_SECONDS", 120, 5, 3600),
        sync_wake_host=env.get("SYNC_WAKE_HOST", "").strip() or "127.0.0.1",
        sync_wake_port=_int(env, "SYNC_WAKE_PORT", 0, 0, 65535),
        reconcile_interval_hours=_int(env, "RECONCILE_INTERVAL_HOURS", 24, 1, 24 * 31),
        monthly_call_limit=_int(env, "QBO_MONTHLY_CALL_LIMIT", 500_000, 1, 10**10),
        call_reserve_percent=_float(env, "QBO_CALL_RESERVE_PERCENT", 5.0, 0.0, 50.0),
        metrics_port=_optional_port(env, "METRICS_PORT"),
        log_level=log_level,
        restart_delay_seconds=_float(env, "RESTART_DELAY_SECONDS", 10.0, 0.0, 3600.0),
        work_dir=Path.cwd(),
    )


def register_secret_in_url(url: str) -> None:
    """Register the password of a database URL with the redactor."""
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        register_secret(password)
