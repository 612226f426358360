"""services.intuit.budget: the request budget holds across threads and real processes, by database time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from support.realms import connect_realm

from services.intuit.budget import RateBudget

REPO = Path(__file__).resolve().parents[1]


class RecordingSleep:
    """A real sleep that remembers what it was asked, and can run a hook on the first call."""

    def __init__(self, on_first=None) -> None:
        self.calls: list[float] = []
        self._on_first = on_first

    def __call__(self, seconds: float) -> None:
        import time

        self.calls.append(seconds)
        if self._on_first is not None and len(self.calls) == 1:
            self._on_first()
        time.sleep(seconds)  # kept: the budget's own wait, injected and recorded; honouring it is under test


def _rows(db, realm: str) -> list[tuple]:
    with db.transaction() as conn:
        return conn.execute(
            "SELECT id, started_at, finished_at, lease_until FROM quickbooks.api_requests "
            "WHERE realm_id = %s ORDER BY started_at", (realm,)).fetchall()


def _max_in_any_window(starts: list, window_s: float) -> int:
    starts = sorted(starts)
    window = timedelta(seconds=window_s)
    best = 0
    j = 0
    for i, start in enumerate(starts):
        while starts[j] <= start - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def _max_overlap(intervals: list[tuple]) -> int:
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end at the same instant frees before a start
    current = best = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def test_rejects_nonsense_limits(db) -> None:
    with pytest.raises(ValueError):
        RateBudget(db, "1", 0, 1)
    with pytest.raises(ValueError):
        RateBudget(db, "1", 1, 0)


def test_slots_are_recorded_and_released(db) -> None:
    budget = RateBudget(db, "r1", 10, 2)
    with budget.acquire() as slot:
        (row,) = _rows(db, "r1")
        assert row[0] == slot.id and row[2] is None
        assert row[3] > row[1]  # a lease in the future
    (row,) = _rows(db, "r1")
    assert row[2] is not None


def test_a_slot_is_released_when_the_block_raises(db) -> None:
    budget = RateBudget(db, "r1", 10, 1)
    with pytest.raises(RuntimeError), budget.acquire():
        raise RuntimeError("request failed")
    assert _rows(db, "r1")[0][2] is not None
    with budget.acquire():  # the only concurrency slot is free again
        pass


def test_the_request_past_the_limit_waits_for_the_oldest_start_to_leave_the_window(db) -> None:
    sleep = RecordingSleep()
    budget = RateBudget(db, "r1", 3, 5, window_s=0.6, sleep=sleep)
    slots = []
    for _ in range(4):
        with budget.acquire() as slot:
            slots.append(slot)
    assert slots[0].waited_s == 0 and slots[2].waited_s == 0
    assert sleep.calls, "the fourth request should have waited"
    assert 0 < sleep.calls[0] <= 0.6 + 0.01  # computed from the oldest start, not a fixed nap
    assert slots[3].started_at - slots[0].started_at >= timedelta(seconds=0.6)
    assert _max_in_any_window([s.started_at for s in slots], 0.6) <= 3


def test_other_realms_do_not_count(db) -> None:
    sleep = RecordingSleep()
    with RateBudget(db, "other", 1, 1).acquire():
        with RateBudget(db, "mine", 1, 1, sleep=sleep).acquire():
            pass
    assert sleep.calls == []


def test_concurrency_waits_until_a_slot_is_released(db) -> None:
    held = ExitStack()
    for _ in range(2):
        held.enter_context(RateBudget(db, "r1", 100, 2).acquire())
    sleep = RecordingSleep(on_first=held.close)  # the third waits; then the holders finish
    try:
        with RateBudget(db, "r1", 100, 2, sleep=sleep).acquire() as slot:
            assert sleep.calls
            finished = [r for r in _rows(db, "r1") if r[0] != slot.id]
            assert all(r[2] is not None and r[2] < slot.started_at for r in finished)
    finally:
        held.close()


def test_a_crashed_holder_frees_its_slot_when_the_lease_ends(db) -> None:
    with db.transaction() as conn:  # a process that died holding the only slot
        conn.execute("INSERT INTO quickbooks.api_requests (realm_id, lease_until) "
                     "VALUES ('r1', clock_timestamp() + interval '0.3 seconds')")
        conn.execute("INSERT INTO quickbooks.api_requests (realm_id, started_at, lease_until) "
                     "VALUES ('r1', now() - interval '1 hour', now() - interval '59 minutes')")
    sleep = RecordingSleep()
    with RateBudget(db, "r1", 100, 1, sleep=sleep).acquire() as slot:
        crashed = [r for r in _rows(db, "r1") if r[0] != slot.id and r[2] is None]
        assert sleep.calls
        assert all(r[3] <= slot.started_at for r in crashed)


def test_old_rows_are_cleaned_up_but_in_flight_ones_are_kept(db) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.api_requests (realm_id, started_at, lease_until, finished_at) "
                     "SELECT 'r1', now() - interval '2 hours', now() - interval '2 hours', now() - interval '2 hours' "
                     "FROM generate_series(1, 20)")
        conn.execute("INSERT INTO quickbooks.api_requests (realm_id, started_at, lease_until) "
                     "VALUES ('r1', now() - interval '2 hours', now() + interval '1 hour')")
        conn.execute("INSERT INTO quickbooks.api_requests (realm_id, started_at, lease_until, finished_at) "
                     "VALUES ('r2', now() - interval '2 hours', now(), now())")
    with RateBudget(db, "r1", 100, 5, window_s=60, lease_s=180).acquire():
        pass
    rows = _rows(db, "r1")
    assert len(rows) == 2  # the in-flight old one and ours
    assert any(r[2] is None for r in rows)
    assert len(_rows(db, "r2")) == 1  # another realm's rows are its own business


_WORKER = textwrap.dedent("""
    import json, sys, threading, time
    from db.connection import Database
    from services.intuit.budget import RateBudget

    url, realm, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    db = Database(url, max_size=threads + 1)
    out, lock = [], threading.Lock()

    def run():
        budget = RateBudget(db, realm, 10, 2, window_s=1.5, lease_s=30)
        for _ in range(n):
            with budget.acquire() as slot:
                time.sleep(0.03)  # kept: a request holding its slot for 30 ms (the overlap under test)
            with lock:
                out.append({"id": slot.id, "waited": slot.waited_s})

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    db.close()
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_two_processes_never_exceed_the_budget_in_any_window(db, database_url) -> None:
    procs = []
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _WORKER, database_url, "shared", "6", "2"],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
            outputs.append(json.loads(stdout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    reported = [entry for out in outputs for entry in out]
    assert len(reported) == 24
    rows = _rows(db, "shared")
    assert sorted(r[0] for r in rows) == sorted(e["id"] for e in reported)
    assert all(r[2] is not None for r in rows)
    assert _max_in_any_window([r[1] for r in rows], 1.5) <= 10
    assert _max_overlap([(r[1], r[2]) for r in rows]) <= 2
    assert any(e["waited"] > 0 for e in reported)  # the budget did hold requests back


_CLIENT_WORKER = textwrap.dedent("""
    import json, sys, threading
    from db.connection import Database
    from services.intuit.budget import RateBudget
    from services.core.config import load_settings
    from services.tokens.vault import client_for

    realm, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    settings = load_settings(dotenv=False)
    db = Database(settings.database_url, max_size=threads + 1)
    calls, lock = [], threading.Lock()

    def run():
        budget = RateBudget(db, realm, 10, 2, window_s=1.5, lease_s=30)
        with client_for(db, settings, realm, budget=budget) as client:
            for _ in range(n):
                client.count("Customer")
        with lock:
            calls.append(client.api_calls)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    db.close()
    print(json.dumps(sum(calls)))
""")


@pytest.mark.slow
def test_two_client_processes_share_one_realms_budget(db, settings, qbsync_env, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=2, estimates=1)
    with db.transaction() as conn:
        conn.execute("DELETE FROM quickbooks.api_requests")
    emulator.admin.configure(latency_ms=20)
    procs = []
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _CLIENT_WORKER, realm, "6", "2"], env=qbsync_env,
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        calls = 0
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
            calls += json.loads(stdout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rows = _rows(db, realm)
    counts = emulator.admin.request_counts(realm)
    assert calls == 24 == len(rows) == counts.get("query", 0)
    assert counts.get("throttled", 0) == 0
    assert _max_in_any_window([r[1] for r in rows], 1.5) <= 10
    assert _max_overlap([(r[1], r[2]) for r in rows]) <= 2


def test_a_slot_whose_release_failed_is_released_by_the_next_request(db) -> None:
    """The database went away while a request ran: its slot could not be marked finished. The
    next request of the process releases it, instead of waiting out the slot's lease (minutes)."""
    from services.core.errors import DatabaseUnavailable

    class Away:
        def transaction(self):
            raise DatabaseUnavailable("cannot connect to PostgreSQL: test")

    sleeps = RecordingSleep()
    budget = RateBudget(db, "9130000000000777", per_minute=100, concurrency=1, lease_s=600, sleep=sleeps)
    with budget.acquire() as first:
        budget.db = Away()  # the outage begins while the request is in flight
    budget.db = db
    with budget.acquire():
        pass
    assert sleeps.calls == []  # the only concurrency slot was free at once
    finished = {row[0]: row[2] for row in _rows(db, "9130000000000777")}
    assert finished[first.id] is not None
