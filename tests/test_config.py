from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from services.core.config import API_BASE_URLS, load_settings
from services.core.errors import ConfigError


def test_defaults_follow_the_spec() -> None:
    s = load_settings({}, dotenv=False)
    assert s.api_base_url == API_BASE_URLS["production"]
    assert (s.minor_version, s.max_requests_per_minute, s.max_concurrency) == (75, 450, 4)
    assert (s.token_refresh_margin_minutes, s.token_check_interval_seconds, s.sync_interval_minutes) == (10, 300, 60)
    assert (s.sync_concurrency, s.sync_lease_seconds, s.metrics_port) == (8, 120, None)
    assert (s.webhook_host, s.webhook_port, s.restart_delay_seconds) == ("127.0.0.1", 8080, 10.0)
    assert s.database_url is None


def test_sandbox_picks_the_sandbox_base_url_and_override_wins() -> None:
    assert load_settings({"QBO_ENVIRONMENT": "sandbox"}, dotenv=False).api_base_url == API_BASE_URLS["sandbox"]
    s = load_settings({"QBO_ENVIRONMENT": "sandbox", "QBO_API_BASE_URL": "http://127.0.0.1:8765/"}, dotenv=False)
    assert s.api_base_url == "http://127.0.0.1:8765"


@pytest.mark.parametrize(("name", "value"), [
    ("QBO_ENVIRONMENT", "staging"), ("QBO_MINOR_VERSION", "abc"), ("QBO_MINOR_VERSION", "70"),
    ("QBO_MAX_REQUESTS_PER_MINUTE", "501"), ("QBO_MAX_CONCURRENCY", "11"), ("WEBHOOK_PORT", "http"),
    ("QBO_RETRY_BASE_SECONDS", "-1"), ("LOG_LEVEL", "LOUD"), ("QBO_TOKEN_URL", "ftp://x"),
    ("DATABASE_URL", "mysql://x"), ("SYNC_CONCURRENCY", "0"), ("SYNC_LEASE_SECONDS", "1"),
    ("METRICS_PORT", "99999"), ("METRICS_PORT", "metrics"), ("QBO_AUTH_BASIC", "not-base64!"),
])
def test_malformed_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value}, dotenv=False)
    assert name in str(info.value)


def test_auth_basic_supplies_the_client_keys_and_is_never_shown() -> None:
    basic = base64.b64encode(b"my-client:my-very-secret").decode()
    s = load_settings({"QBO_AUTH_BASIC": basic}, dotenv=False)
    assert s.require_client() == ("my-client", "my-very-secret")
    assert "my-very-secret" not in repr(s) and basic not in repr(s)


def test_missing_client_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="QBO_CLIENT_ID"):
        load_settings({}, dotenv=False).require_client()
    with pytest.raises(ConfigError, match="QBO_CLIENT_SECRET"):
        load_settings({"QBO_CLIENT_ID": "x"}, dotenv=False).require_client()
    with pytest.raises(ConfigError, match="QBO_WEBHOOK_VERIFIER_TOKEN"):
        load_settings({}, dotenv=False).require_verifier_token()


def test_cli_reports_a_bad_variable_in_one_line_without_traceback(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "QBO_MAX_CONCURRENCY": "40", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "services.cli", "db", "upgrade"], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "QBO_MAX_CONCURRENCY" in lines[0]
    assert "Traceback" not in proc.stderr


def test_dotenv_in_working_directory_is_read(tmp_path, monkeypatch) -> None:
    (tmp_path / ".env").write_text("QBO_MAX_CONCURRENCY=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QBO_MAX_CONCURRENCY", raising=False)
    try:
        assert load_settings().max_concurrency == 7
    finally:
        import os
        os.environ.pop("QBO_MAX_CONCURRENCY", None)
