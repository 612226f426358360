"""Durations in the operator's shorthand, one way everywhere (status, health reasons, console)."""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["span", "relative"]


def span(duration: float | timedelta) -> str:
    """A duration (seconds or a timedelta) in the operator's shorthand, sign ignored: 45s, 12m,
    3h02m, 9d, 4y."""
    s = int(abs(duration.total_seconds() if isinstance(duration, timedelta) else duration))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s < 2 * 365 * 86400:
        return f"{s // 86400}d"
    return f"{s // (365 * 86400)}y"


def relative(value: str | None, now: datetime) -> str:
    """'5m ago' / 'in 3h02m' / 'never' for an ISO time relative to `now`."""
    if not value:
        return "never"
    seconds = (datetime.fromisoformat(value) - now).total_seconds()
    return f"in {span(seconds)}" if int(seconds) > 0 else f"{span(seconds)} ago"
