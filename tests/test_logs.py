from __future__ import annotations

import logging

from services.core.config import Secret
from services.core.errors import NeedsReauth
from services.core.logs import PM2Formatter, redact, register_secret, setup_logging


def test_registered_secrets_and_token_shapes_are_redacted() -> None:
    register_secret("RT1-secret-refresh-value")
    text = "refresh RT1-secret-refresh-value; Authorization: Bearer eyJabc.def.ghi; refresh_token=zzz123456&x=1"
    out = redact(text)
    assert "RT1-secret-refresh-value" not in out and "eyJabc" not in out and "zzz123456" not in out
    assert "x=1" in out


def test_urls_are_not_redacted_only_secrets() -> None:
    line = "token url https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer unreachable: ConnectionError"
    assert redact(line) == line
    assert "abcdefgh1234" not in redact("headers: Authorization: Basic abcdefgh1234 and bearer abcdefgh1234")


def test_secret_never_shows_itself() -> None:
    s = Secret("client-secret-xyz")
    assert "client-secret-xyz" not in repr(s) + str(s) + f"{s}"
    assert s.reveal() == "client-secret-xyz"


def test_log_lines_carry_pm2_timestamps_and_no_secrets(capsys) -> None:
    before = list(logging.getLogger().handlers)
    log = setup_logging("tokenup", "INFO")
    register_secret("AB11-access-token-value")
    log.info("refreshed with %s", "AB11-access-token-value")
    line = capsys.readouterr().out.strip()
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
    for handler in before:
        logging.getLogger().addHandler(handler)
    import re
    assert re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} [+-]\d{2}:\d{2} INFO tokenup: refreshed with \[REDACTED\]$", line)


def test_errors_say_what_to_do() -> None:
    exc = NeedsReauth("invalid_grant", realm_id="123", code="invalid_grant", intuit_tid="tid-1")
    line = exc.one_line()
    assert "realm 123" in line and "intuit_tid tid-1" in line and "qbsync connect" in line
    assert "\n" not in line


def test_formatter_redacts_tracebacks() -> None:
    register_secret("sekrit-in-traceback")
    try:
        raise RuntimeError("boom sekrit-in-traceback")
    except RuntimeError:
        import sys
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    assert "sekrit-in-traceback" not in PM2Formatter("%(message)s").format(record)


def test_thousands_of_registered_secrets_are_all_found_also_when_they_share_a_beginning() -> None:
    """A sync process of a large fleet knows a token pair per realm; every one must still be scrubbed,
    the longer of two secrets starting alike first, and nothing else touched."""
    import secrets as random_secrets

    from services.core.logs import REDACTED, redact, register_secret

    tokens = [random_secrets.token_urlsafe(24) for _ in range(3000)]
    for token in tokens:
        register_secret(token)
    register_secret("SharedStart-short")
    register_secret("SharedStart-short-and-longer")
    text = f"realm 1: {tokens[0]} / {tokens[2999]} / SharedStart-short-and-longer / SharedStart-short; ok"
    assert redact(text) == f"realm 1: {REDACTED} / {REDACTED} / {REDACTED} / {REDACTED}; ok"
    assert redact("nothing secret here, only SharedStart") == "nothing secret here, only SharedStart"
