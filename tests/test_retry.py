"""services.core.retry: the backoff rule and the one blocking retry loop."""

from __future__ import annotations

import random

import pytest

from services.core.retry import MAX_ATTEMPTS, MAX_DELAY_S, backoff_delay, parse_retry_after, retry_call


class Flaky(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("flaky")
        self.retry_after = retry_after


def failing(times: int, exc: Exception | None = None):
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise exc or Flaky()
        return "done"

    return call, calls


def test_backoff_doubles_with_equal_jitter_up_to_the_cap_and_retry_after_wins() -> None:
    rng = random.Random(7)
    for attempt in range(10):
        ceiling = min(MAX_DELAY_S, 2.0 * 2 ** attempt)
        assert ceiling / 2 <= backoff_delay(attempt, 2.0, rng=rng) <= ceiling
    assert backoff_delay(3, 2.0, retry_after=7) == 7
    assert backoff_delay(0, 2.0, retry_after=10_000) == MAX_DELAY_S * 5
    assert parse_retry_after(" 12 ") == 12.0 and parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None


def test_retry_call_retries_the_listed_faults_with_backoff_then_succeeds() -> None:
    call, calls = failing(2)
    slept: list[float] = []
    noted: list[tuple[int, float]] = []
    result = retry_call(call, base_s=1.0, retry_on=(Flaky,), sleep=slept.append,
                        on_retry=lambda n, exc, delay: noted.append((n, delay)))
    assert result == "done" and len(calls) == 3
    assert 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0
    assert [n for n, _ in noted] == [1, 2] and [d for _, d in noted] == slept


def test_retry_call_raises_the_last_failure_after_all_attempts_and_others_at_once() -> None:
    call, calls = failing(100)
    with pytest.raises(Flaky):
        retry_call(call, base_s=0.0, retry_on=(Flaky,), sleep=lambda s: None)
    assert len(calls) == MAX_ATTEMPTS
    call, calls = failing(100, ValueError("not transient"))
    with pytest.raises(ValueError):
        retry_call(call, base_s=0.0, retry_on=(Flaky,), sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_after_wins_and_a_stop_ends_the_retries() -> None:
    call, calls = failing(3, Flaky(retry_after=4.0))
    slept: list[float] = []
    assert retry_call(call, base_s=1.0, retry_on=(Flaky,), sleep=slept.append) == "done"
    assert slept == [4.0, 4.0, 4.0]
    call, calls = failing(100)
    with pytest.raises(Flaky):  # sleep answering True is a worker's Stop.wait: stop requested
        retry_call(call, base_s=1.0, retry_on=(Flaky,), sleep=lambda s: True)
    assert len(calls) == 1
