"""`qbsync status` with the month's metered API calls (SPEC section 12) and the realms' lease
holders (SPEC section 13): the real CLI as a subprocess against the test database, and
`db.readmodel.health` on hand-built snapshots where real time cannot reach a case."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from support.console import HEALTHY_REALM, REAUTH_REALM, insert_console_realm

from db.readmodel import health, status_snapshot
from db.usage import RECENT_DAYS, month_bounds, usage_report

QBSYNC = str(Path(sys.executable).parent / "qbsync")
LIMIT = 100_000  # small next to Intuit's 500,000, large enough to steer the projection in a young month
HOLDER = "vps1:4242/w1"
OTHER = "vps2:977/w3"


@pytest.fixture
def status_env(database_url: str) -> dict[str, str]:
    """`status` against the test database, with a small monthly call limit; no emulator needed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_", "DATABASE_URL"))}
    env.update({"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", "QBO_MONTHLY_CALL_LIMIT": str(LIMIT)})
    return env


def _status(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QBSYNC, "status", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def _now_clear_of_midnight() -> datetime:
    """Now (UTC), at least 20 s before the next midnight: the rows and the subprocess agree on the month."""
    now = datetime.now(timezone.utc)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
    if midnight - now < timedelta(seconds=20):
        time.sleep((midnight - now).total_seconds() + 1)
        now = datetime.now(timezone.utc)
    return now


def _elapsed_share(now: datetime) -> float:
    """usage_report projects today's calls at their rate since the start of its recent window (the
    month's first day, or RECENT_DAYS back) over the rest of the month: the calls made so far are
    this share of the projection."""
    first, after = month_bounds(now.date())
    start = max(first, now.date() - timedelta(days=RECENT_DAYS - 1))
    midnight = lambda day: datetime.combine(day, datetime.min.time(), timezone.utc)  # noqa: E731
    return (now - midnight(start)) / (midnight(after) - midnight(start))


def _granularity(now: datetime) -> float:
    """How far one more call today moves the projection (thousands in a month's first minutes)."""
    return 1 / _elapsed_share(now)


def _calls_for_projection(now: datetime, projected: int) -> int:
    """The calls to record today so that the month-end projection as of `now` is `projected`."""
    return round(projected * _elapsed_share(now))


def _insert_usage(conn: psycopg.Connection, realm_id: str, day: date, calls: dict[str, int]) -> None:
    for kind, n in calls.items():
        conn.execute("INSERT INTO quickbooks.api_usage (realm_id, day, kind, service, calls)"
                     " VALUES (%s, %s, %s, 'sync', %s)", (realm_id, day, kind, n))


def _seed_usage(db, projected_share: float) -> tuple[int, float]:
    """A healthy company whose calls today project to `projected_share` of LIMIT; returns the calls
    and the projection's granularity (see `_granularity`)."""
    now = _now_clear_of_midnight()
    if _granularity(now) > LIMIT * 0.01:
        pytest.skip("in the month's first hour one call moves the projection past 1 % of the limit")
    calls = _calls_for_projection(now, round(projected_share * LIMIT))
    with db.transaction() as conn:
        insert_console_realm(conn, now, HEALTHY_REALM, "Acme")
        _insert_usage(conn, HEALTHY_REALM, now.date(), {"cdc": calls - calls // 4, "query": calls // 4})
    return calls, _granularity(now)


def _check_usage_json(doc: dict, database_url: str, calls: int) -> dict:
    """The status object's usage is usage_report's for the same moment (generated_at), in the SPEC shape."""
    usage = doc["usage"]
    assert {"month", "calls", "limit", "projected", "governed"} <= set(usage)
    now = datetime.fromisoformat(doc["generated_at"])
    with psycopg.connect(database_url) as conn:
        report = usage_report(conn, limit=LIMIT, reserve_percent=5, now=now)
    assert usage["month"] == now.strftime("%Y-%m") == report.month
    assert usage["calls"] == calls == report.calls
    assert usage["limit"] == LIMIT
    assert usage["projected"] == report.projected
    assert usage["governed"] is report.governed
    assert usage["by_kind"] == {"cdc": calls - calls // 4, "query": calls // 4}
    return usage


@pytest.mark.parametrize(("share", "code"), [(0.50, 0), (0.85, 1), (0.97, 2)])
def test_status_exit_code_follows_the_projected_calls(db, database_url, status_env, tmp_path, share, code) -> None:
    """50 % of the limit is healthy, past 80 % a warning, past 95 % critical: in the exit code,
    the JSON usage object, the reasons and the text's usage line."""
    calls, granularity = _seed_usage(db, share)
    result = _status(status_env, tmp_path, "--json")
    assert result.returncode == code, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    usage = _check_usage_json(doc, database_url, calls)
    assert abs(usage["projected"] - share * LIMIT) <= max(LIMIT * 0.001, granularity)  # the seeding hit its band
    assert usage["governed"] is False
    reasons = [r for r in doc["health"]["reasons"] if r.startswith("API calls:")]
    percent = usage["projected"] * 100 // LIMIT
    if code == 0:
        assert reasons == [] and doc["health"]["reasons"] == []
    else:
        assert reasons == [f"API calls: {usage['projected']:,} projected this month of {LIMIT:,} ({percent} %)"
                           ": see qbsync usage"]
        assert doc["health"]["level"] == ("warning", "critical")[code - 1]
    text = _status(status_env, tmp_path)
    assert text.returncode == code
    (line,) = [line for line in text.stdout.splitlines() if line.startswith("API calls ")]
    # A second later the projection may have moved by a call (early in the month, by ~0.05 a second).
    match = re.fullmatch(rf"API calls {usage['month']}: {calls:,} made, projected ([\d,]+) of {LIMIT:,} \((\d+) %\)",
                         line)
    assert match, text.stdout
    projected = int(match.group(1).replace(",", ""))
    assert abs(projected - usage["projected"]) <= 10 and int(match.group(2)) == projected * 100 // LIMIT


def test_status_says_the_governor_is_on_when_under_the_reserve(db, database_url, status_env, tmp_path) -> None:
    """96,000 of 100,000 calls made: under 5 % left, the governor is on (and the projection is past
    the limit: critical); the reasons and the text say what the governor does."""
    now = _now_clear_of_midnight()
    with db.transaction() as conn:
        insert_console_realm(conn, now, HEALTHY_REALM, "Acme")
        _insert_usage(conn, HEALTHY_REALM, now.date(), {"cdc": 72_000, "query": 24_000})
    result = _status(status_env, tmp_path, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    usage = _check_usage_json(doc, database_url, 96_000)
    assert usage["governed"] is True
    (reason,) = [r for r in doc["health"]["reasons"] if r.startswith("API calls:")]
    assert "96,000 made, under 5 % of the limit left: governor on, scheduled syncs daily, " \
           "webhooks applied through CDC" in reason
    text = _status(status_env, tmp_path)
    (line,) = [line for line in text.stdout.splitlines() if line.startswith("API calls ")]
    assert line.endswith("governor on: scheduled syncs daily, webhooks applied through CDC")
    assert "96,000 made" in line


def _usage(projected: int, calls: int, *, governed: bool, limit: int = 500_000) -> dict:
    return {"month": "2026-11", "calls": calls, "limit": limit, "projected": projected, "governed": governed,
            "reserve_percent": 30, "by_kind": {}}


def test_health_reads_the_usage_thresholds_from_the_snapshot() -> None:
    """The pure function: the exact boundaries, the brief's example line, the governor on under
    a large reserve while the projection is still below 80 % (a warning), and no usage read."""
    now = datetime(2026, 11, 22, 14, 5, tzinfo=timezone.utc)
    realm = {"realm_id": "1", "company_name": "Acme", "token": {"status": "disconnected"}, "entities": []}

    def check(usage: dict | None) -> tuple[int, list[str]]:
        return health({"realms": [realm], "recent_errors": [], "usage": usage}, [], now)

    assert check(None) == (0, [])
    assert check(_usage(400_000, 100_000, governed=False)) == (0, [])  # exactly 80 %: not past it
    assert check(_usage(412_000, 100_000, governed=False)) == (
        1, ["API calls: 412,000 projected this month of 500,000 (82 %): see qbsync usage"])
    assert check(_usage(402_000, 100_000, governed=False))[1] == [
        "API calls: 402,000 projected this month of 500,000 (80.4 %): see qbsync usage"]
    assert check(_usage(475_000, 100_000, governed=False))[0] == 1  # exactly 95 %
    assert check(_usage(476_000, 100_000, governed=False)) == (
        2, ["API calls: 476,000 projected this month of 500,000 (95.2 %): see qbsync usage"])
    code, reasons = check(_usage(360_000, 355_000, governed=True))
    assert code == 1 and reasons == [
        "API calls: 360,000 projected this month of 500,000 (72 %); 355,000 made, under 30 % of the limit left: "
        "governor on, scheduled syncs daily, webhooks applied through CDC"]


def _lease(conn: psycopg.Connection, realm_id: str, holder: str, work: str, expires_at: datetime,
           acquired_at: datetime) -> None:
    conn.execute("INSERT INTO quickbooks.realm_leases (realm_id, holder, work, acquired_at, renewed_at, expires_at)"
                 " VALUES (%s, %s, %s, %s, %s, %s)", (realm_id, holder, work, acquired_at, acquired_at, expires_at))


def _takeover(conn: psycopg.Connection, realm_id: str, at: datetime, from_holder: str, to_holder: str) -> None:
    conn.execute("INSERT INTO quickbooks.lease_takeovers (at, realm_id, from_holder, to_holder, expired_at)"
                 " VALUES (%s, %s, %s, %s, %s)", (at, realm_id, from_holder, to_holder, at - timedelta(seconds=30)))


def test_status_shows_who_works_each_realm_and_the_recent_takeovers(db, status_env, tmp_path) -> None:
    """A live lease is shown (and healthy); of the takeovers, only the realm's newest five of the
    last 24 h, newest first, each as a line of the text."""
    now = datetime.now(timezone.utc)
    with db.transaction() as conn:
        insert_console_realm(conn, now, HEALTHY_REALM, "Acme")
        insert_console_realm(conn, now, REAUTH_REALM, "Beta")
        _lease(conn, HEALTHY_REALM, HOLDER, "schedule", now + timedelta(seconds=100), now - timedelta(seconds=20))
        _takeover(conn, HEALTHY_REALM, now - timedelta(hours=25), "old:1/w1", HOLDER)  # too old
        for minutes in (50, 40, 30, 20, 10, 3):
            _takeover(conn, HEALTHY_REALM, now - timedelta(minutes=minutes), f"dead:{minutes}/w1", HOLDER)
        _takeover(conn, REAUTH_REALM, now - timedelta(minutes=7), OTHER, HOLDER)
    result = _status(status_env, tmp_path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    acme, beta = doc["realms"]
    lease = acme["lease"]
    assert {k: lease[k] for k in ("holder", "work", "expired")} == {"holder": HOLDER, "work": "schedule",
                                                                    "expired": False}
    assert abs(datetime.fromisoformat(lease["expires_at"]) - (now + timedelta(seconds=100))) < timedelta(seconds=1)
    assert beta["lease"] is None
    assert [t["from_holder"] for t in acme["takeovers"]] == [f"dead:{m}/w1" for m in (3, 10, 20, 30, 40)]
    assert all(t["to_holder"] == HOLDER and datetime.fromisoformat(t["at"]).utcoffset() is not None
               for t in acme["takeovers"])
    assert [(t["from_holder"], t["to_holder"]) for t in beta["takeovers"]] == [(OTHER, HOLDER)]

    text = _status(status_env, tmp_path)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    acme_block = lines[lines.index(next(line for line in lines if line.startswith("Acme"))):]
    worked = [line for line in acme_block if "worked by" in line]
    assert re.fullmatch(rf"  worked by {re.escape(HOLDER)} \(schedule\), lease renewed 2\ds ago, expires in 1m",
                        worked[0]), text.stdout
    takeovers = [line for line in lines if "lease taken over" in line]
    at = datetime.fromisoformat(acme["takeovers"][0]["at"])
    assert f"  lease taken over from dead:3/w1 by {HOLDER} at {at:%Y-%m-%d %H:%M:%S} UTC (3m ago)" in takeovers
    assert len(takeovers) == 6 and not any("old:1/w1" in line for line in lines)
    assert any(f"from {OTHER} by {HOLDER}" in line for line in takeovers)


def test_an_expired_lease_nobody_took_over_is_a_warning(db, status_env, tmp_path) -> None:
    now = datetime.now(timezone.utc)
    with db.transaction() as conn:
        insert_console_realm(conn, now, HEALTHY_REALM, "Acme")
        _lease(conn, HEALTHY_REALM, HOLDER, "inbox", now - timedelta(seconds=40), now - timedelta(minutes=3))
    result = _status(status_env, tmp_path, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    (realm,) = doc["realms"]
    assert realm["lease"]["holder"] == HOLDER and realm["lease"]["work"] == "inbox"
    assert realm["lease"]["expired"] is True
    (reason,) = doc["health"]["reasons"]
    match = re.fullmatch(rf"realm {HEALTHY_REALM}: lease of {re.escape(HOLDER)} expired (\d+) s ago "
                         r"\(a sync process died\?\)", reason)
    assert match and 40 <= int(match.group(1)) < 70, reason
    text = _status(status_env, tmp_path)
    assert text.returncode == 1
    assert any(line.startswith(f"  ! lease of {HOLDER} (inbox) expired ") and "not taken over yet" in line
               for line in text.stdout.splitlines()), text.stdout
    assert not any("worked by" in line for line in text.stdout.splitlines())


def test_the_snapshot_reads_usage_only_when_asked_and_in_the_callers_transaction(db) -> None:
    """Without a limit the snapshot carries no usage (and health ignores it); with one, rows the
    caller's still-open transaction added are counted (one connection, one view)."""
    now = datetime(2026, 11, 22, 14, 5, tzinfo=timezone.utc)
    with db.transaction() as conn:
        insert_console_realm(conn, now, HEALTHY_REALM, "Acme")
        _insert_usage(conn, HEALTHY_REALM, date(2026, 11, 10), {"read": 4_250})  # before the recent days
        assert status_snapshot(conn, now)["usage"] is None
        snap = status_snapshot(conn, now, call_limit=5_000, call_reserve_percent=5)
    assert {k: snap["usage"][k] for k in ("month", "calls", "limit", "projected", "governed")} == {
        "month": "2026-11", "calls": 4_250, "limit": 5_000, "projected": 4_250, "governed": False}
    assert health(snap, [], now)[0] == 1
    assert snap["realms"][0]["lease"] is None and snap["realms"][0]["takeovers"] == []
