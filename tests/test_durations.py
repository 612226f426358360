"""services.core.durations: one shorthand for durations in status, health reasons and the console."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.core.durations import relative, span


def test_span_reads_the_same_for_seconds_and_timedeltas_sign_ignored() -> None:
    cases = {0: "0s", 59: "59s", 60: "1m", 3599: "59m", 3600: "1h00m", 3 * 3600 + 125: "3h02m",
             86400: "1d", 400 * 86400: "400d", 3 * 365 * 86400: "3y"}
    for seconds, text in cases.items():
        assert span(seconds) == span(-seconds) == span(timedelta(seconds=seconds)) == text


def test_relative_says_in_or_ago_or_never() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    assert relative((now + timedelta(minutes=5)).isoformat(), now) == "in 5m"
    assert relative((now - timedelta(hours=2)).isoformat(), now) == "2h00m ago"
    assert relative(None, now) == "never"
