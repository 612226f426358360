"""The files an operator copies stay in step with the code: .env.example and supervisord.conf."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import services.core.config

ROOT = Path(__file__).parents[1]
SPEC_VARIABLES = {
    "DATABASE_URL", "QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_AUTH_BASIC", "QBO_REDIRECT_URI",
    "QBO_ENVIRONMENT", "QBO_API_BASE_URL", "QBO_TOKEN_URL", "QBO_AUTHORIZE_URL", "QBO_REVOKE_URL",
    "QBO_WEBHOOK_VERIFIER_TOKEN", "QBO_MINOR_VERSION", "QBO_MAX_REQUESTS_PER_MINUTE", "QBO_MAX_CONCURRENCY",
    "QBO_RETRY_BASE_SECONDS", "TOKEN_REFRESH_MARGIN_MINUTES", "TOKEN_CHECK_INTERVAL_SECONDS",
    "SYNC_INTERVAL_MINUTES", "WEBHOOK_HOST", "WEBHOOK_PORT", "LOG_LEVEL", "RESTART_DELAY_SECONDS",
    "QBO_MONTHLY_CALL_LIMIT", "QBO_CALL_RESERVE_PERCENT", "RECONCILE_INTERVAL_HOURS",
    "SYNC_CONCURRENCY", "SYNC_LEASE_SECONDS", "METRICS_PORT",
}
# Beyond SPEC section 3, documented in .env.example and the README like the rest: where a sync worker
# listens for the receiver's wake-ups when the two run on different machines (docs/INTERNALS.md).
EXTRA_VARIABLES = {"SYNC_WAKE_HOST", "SYNC_WAKE_PORT"}


def _variables_read_by_settings() -> set[str]:
    source = Path(services.core.config.__file__).read_text()
    return set(re.findall(r'"((?:QBO|DATABASE|TOKEN|SYNC|WEBHOOK|LOG|RESTART|RECONCILE|METRICS)_[A-Z_]+|DATABASE_URL)"', source))


def test_settings_read_exactly_the_spec_variables() -> None:
    assert _variables_read_by_settings() == SPEC_VARIABLES | EXTRA_VARIABLES


def test_env_example_documents_every_variable_with_a_comment() -> None:
    text = (ROOT / ".env.example").read_text()
    for name in SPEC_VARIABLES | EXTRA_VARIABLES:
        match = re.search(rf"^#?\s*{name}=", text, re.M)
        assert match, f"{name} missing from .env.example"
        above = [line for line in text[:match.start()].splitlines()
                 if not re.match(r"^#?\s*[A-Z_]+=", line)]  # skip the variable lines of the same block
        assert above and above[-1].startswith("# "), f"{name} has no explaining comment above it"


def test_supervisord_conf_holds_no_secrets_no_bare_percent_and_the_pm2_rules() -> None:
    text = (ROOT / "supervisord.conf").read_text()
    assert not re.search(r"%(?!\(here\)s|\(program_name\)s|\(process_num\)02d)", text), "bare % in supervisord.conf"
    for secret in ("QBO_CLIENT_SECRET", "QBO_AUTH_BASIC", "QBO_WEBHOOK_VERIFIER_TOKEN", "DATABASE_URL"):
        assert secret not in text
    conf = configparser.RawConfigParser()
    conf.read_string(text)
    assert conf.get("group:qbsync", "programs") == "tokenup,sync,webhook"
    assert conf.get("unix_http_server", "chmod") == "0700"
    delays = {"tokenup": "10", "sync": "15", "webhook": "15"}
    for program, delay in delays.items():
        section = f"program:{program}"
        assert conf.get(section, "command").endswith(f"qbsync {program}")
        assert (conf.get(section, "startsecs"), conf.get(section, "startretries")) == ("5", "5")
        assert conf.get(section, "autorestart") == "true" and conf.get(section, "stopsignal") == "TERM"
        assert int(conf.get(section, "stopwaitsecs")) >= 30
        assert conf.get(section, "stopasgroup") == conf.get(section, "killasgroup") == "true"
        assert f'RESTART_DELAY_SECONDS="{delay}"' in conf.get(section, "environment")
        assert 'PYTHONUNBUFFERED="1"' in conf.get(section, "environment")
        for stream in ("stdout", "stderr"):
            assert conf.get(section, f"{stream}_logfile").startswith("%(here)s/logs/")
            assert conf.get(section, f"{stream}_logfile_maxbytes") and conf.get(section, f"{stream}_logfile_backups")
