"""Backoff for transient faults (429, 5xx, connection errors), shared by every HTTP caller.

QBO_RETRY_BASE_SECONDS for the first retry, doubling per attempt up to 60 s, with "equal
jitter" (half fixed, half random) so retries from several processes spread out; a
Retry-After header from the server wins. `retry_call` is the one blocking retry loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["backoff_delay", "parse_retry_after", "retry_call", "MAX_DELAY_S", "MAX_ATTEMPTS"]

T = TypeVar("T")

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


def retry_call(call: Callable[[], T], *, base_s: float, retry_on: tuple[type[BaseException], ...],
               attempts: int = MAX_ATTEMPTS, sleep: Callable[[float], object] = time.sleep,
               on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
    """`call()`, tried up to `attempts` times in all while it raises one of `retry_on`, waiting
    `backoff_delay` in between (an exception's `retry_after` wins); the last failure is raised.

    `on_retry(failures so far, exc, delay)` runs before each wait (to log it). `sleep(delay)` is
    injectable; one that returns True (a worker's `Stop.wait`: stop requested) ends the retries
    and re-raises at once."""
    for attempt in range(attempts):
        try:
            return call()
        except retry_on as exc:
            if attempt + 1 >= attempts:
                raise
            delay = backoff_delay(attempt, base_s, retry_after=getattr(exc, "retry_after", None))
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
            if sleep(delay) is True:
                raise
    raise ValueError("attempts must be at least 1")
