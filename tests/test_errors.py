"""services.core.errors.describe: the one way an exception becomes a line of text."""

from __future__ import annotations

from services.core.errors import NeedsReauth, describe
from services.core.logs import register_secret


def test_describe_gives_one_redacted_line_for_any_exception() -> None:
    register_secret("sekret-token-value-123")
    err = NeedsReauth("refresh token rejected", realm_id="42")
    assert describe(err) == err.one_line() and "reconnect" in describe(err)
    assert describe(ValueError("bad value\nsecond line")) == "ValueError: bad value"
    assert describe(OSError("connection to sekret-token-value-123 failed"), name=False) == \
        "connection to [REDACTED] failed"
    assert describe(KeyError()) == "KeyError" and describe(RuntimeError("  \n  ")) == "RuntimeError"
    assert describe(ValueError("x" * 500), limit=20) == "ValueError: " + "x" * 8
