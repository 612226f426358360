"""Backoff for transient faults (429, 5xx, connection errors), shared by every HTTP caller.

QBO_RETRY_BASE_SECONDS for the first retry, doubling per attempt up to 60 s, with "equal
jitter" (half fixed, half random) so retries from several processes spread out; a
Retry-After header from the server wins.
"""

from __future__ import annotations

import random

__all__ = ["backoff_delay", "parse_retry_after", "MAX_DELAY_S", "MAX_ATTEMPTS"]

MAX_DELAY_S = 60.0
MAX_ATTEMPTS = 6  # the first try plus five retries


def backoff_delay(attempt: int, base_s: float, *, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry)."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, MAX_DELAY_S * 5)
    ceiling = min(MAX_DELAY_S, base_s * (2 ** attempt))
    jitter = (rng or random).random()
    return ceiling / 2 + jitter * ceiling / 2


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (delta form; HTTP dates are rare from Intuit and ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None
