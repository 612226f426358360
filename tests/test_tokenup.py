"""`qbsync tokenup` and `qbsync token refresh` as real processes: concurrency, kill -9, failures, SIGTERM."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from support import wait_for
from support.realms import create_realm_with_tokens

from services.core.worker import Stop
from services.tokens.vault import read_token, refresh_realm
from services.tokens.worker import TokenWorker

QBSYNC = [sys.executable, "-m", "services.cli"]


def stored_refresh_token(db, realm_id: str) -> str:
    with db.transaction() as conn:
        row = read_token(conn, realm_id)
    assert row is not None
    return row.refresh_token


def refresh_calls(emulator, realm_id: str | None = None) -> int:
    return emulator.admin.request_counts(realm_id).get("token:refresh_token", 0)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def qbsync_waiters(database_url: str, *, state: str | None = None) -> int:
    """qbsync backends of this database waiting on a lock (or in `state`)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if state:
            sql = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                   " AND application_name LIKE 'qbsync%%' AND state = %s")
            return conn.execute(sql, (state,)).fetchone()[0]
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND application_name LIKE 'qbsync%%' AND wait_event_type = 'Lock'").fetchone()[0]


def test_tokenup_once_refreshes_a_token_that_expires_in_five_minutes(db, settings, emulator, qbsync_env, tmp_path):
    due, _ = create_realm_with_tokens(db, settings, emulator, access_expires_in=300)
    fresh, _ = create_realm_with_tokens(db, settings, emulator)  # just stored: not idle

    run = subprocess.run([*QBSYNC, "tokenup", "--once"], env=qbsync_env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)

    assert run.returncode == 0, run.stderr
    assert stored_refresh_token(db, due) == emulator.admin.newest_tokens(due)["refresh_token"]
    assert refresh_calls(emulator, due) == 1
    assert refresh_calls(emulator, fresh) == 0
    refreshed_lines = [ln for ln in run.stdout.splitlines() if f"realm {due}: token refreshed" in ln]
    assert len(refreshed_lines) == 1
    assert refreshed_lines[0][:4].isdigit() and refreshed_lines[0][4] == "-"  # timestamped


def test_a_token_just_added_is_not_idle_until_24_h_after_it_was_stored(db, emulator, qbsync_env, tmp_path):
    realm_id = emulator.admin.create_realm(customers=0, items=0, invoices=0, estimates=0)
    issued = emulator.admin.issue_tokens(realm_id, access_expires_in=3600)

    def qbsync(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*QBSYNC, *argv], env=qbsync_env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)

    added = qbsync("token", "add", "--realm-id", realm_id, "--refresh-token", issued["refresh_token"],
                   "--access-token", issued["access_token"], "--expires-in", "3600")
    assert added.returncode == 0, added.stderr
    first = qbsync("tokenup", "--once")
    assert first.returncode == 0, first.stderr
    assert refresh_calls(emulator, realm_id) == 0, first.stdout
    assert "unused for 24 h" not in first.stdout + first.stderr

    with db.transaction() as conn:  # the idle clock runs from when the token was stored
        conn.execute("UPDATE quickbooks.tokens SET last_refreshed_at = last_refreshed_at - interval '25 hours'"
                     " WHERE realm_id = %s", (realm_id,))
    later = qbsync("tokenup", "--once")
    assert later.returncode == 0, later.stderr
    assert refresh_calls(emulator, realm_id) == 1
    assert "unused for 24 h" in later.stdout


@pytest.mark.slow
def test_eight_simultaneous_refreshes_make_exactly_one_call(db, settings, emulator, qbsync_env, database_url,
                                                            tmp_path):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator)
    emulator.admin.configure(grace_seconds=0)  # a superseded refresh token dies at once
    holder = psycopg.connect(database_url)
    procs: list[subprocess.Popen] = []
    try:
        holder.execute("SELECT 1 FROM quickbooks.tokens WHERE realm_id = %s FOR UPDATE", (realm_id,))
        for _ in range(8):
            procs.append(subprocess.Popen([*QBSYNC, "token", "refresh", "--realm-id", realm_id], env=qbsync_env,
                                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        wait_for(lambda: qbsync_waiters(database_url) == 8, 60, "8 processes waiting on the token row lock")
        holder.rollback()  # release: all eight race for the lock now
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        holder.close()
        for p in procs:
            stop_process(p)

    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in outputs]
    assert refresh_calls(emulator, realm_id) == 1
    newest = emulator.admin.newest_tokens(realm_id)["refresh_token"]
    assert stored_refresh_token(db, realm_id) == newest
    stdout = [out for out, _ in outputs]
    assert sum("refreshed; access token valid until" in out for out in stdout) == 1
    assert sum("refreshed by another process while waiting" in out for out in stdout) == 7
    assert refresh_realm(db, settings, realm_id, force=True).refreshed  # the stored token is the live one


_CHILD = """
import sys
from db.connection import Database
from services.core.config import load_settings
from services.tokens.vault import refresh_realm
settings = load_settings(dotenv=False)
db = Database(settings.database_url, max_size=1)
with db.transaction() as conn:
    conn.execute("SELECT 1")
print("ready", flush=True)
sys.stdin.readline()
refresh_realm(db, settings, sys.argv[1], force=True, reason="kill -9 trial")
print("done", flush=True)
"""


def _spawn_child(env: dict[str, str], cwd: Path, realm_id: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, realm_id], env=env, cwd=cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc


def _go(proc: subprocess.Popen) -> None:
    assert proc.stdout.readline().strip() == "ready"
    proc.stdin.write("go\n")
    proc.stdin.flush()


@pytest.mark.slow
def test_kill_9_anywhere_in_a_refresh_never_loses_the_newest_token(db, settings, emulator, qbsync_env, database_url,
                                                                   tmp_path):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator)
    emulator.admin.configure(latency_ms=120)  # widens the window in which the POST is in flight
    rng = random.Random(20261122)
    random_kills = window_kills = 0
    children: list[subprocess.Popen] = []

    def recover_and_check() -> None:
        result = refresh_realm(db, settings, realm_id, force=True, reason="after kill -9")
        assert result.refreshed
        assert stored_refresh_token(db, realm_id) == emulator.admin.newest_tokens(realm_id)["refresh_token"]

    try:
        # 20 kills at random moments of a refresh (grace 24 h, the emulator's default, as at Intuit).
        nxt = _spawn_child(qbsync_env, tmp_path, realm_id)
        children.append(nxt)
        while random_kills < 20:
            child, nxt = nxt, _spawn_child(qbsync_env, tmp_path, realm_id)
            children.append(nxt)
            _go(child)
            time.sleep(rng.uniform(0.0, 0.2))  # kept: the random moment of the kill is the trial itself
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            if child.stdout.read().strip() == "done":
                continue  # finished before the kill: not a trial
            random_kills += 1
            wait_for(lambda: qbsync_waiters(database_url, state="idle in transaction") == 0, 10, "killed backend gone")
            recover_and_check()
        stop_process(nxt)

        # 4 kills exactly in the dangerous window: Intuit has issued new tokens, the commit has not happened.
        for _ in range(4):
            child = _spawn_child(qbsync_env, tmp_path, realm_id)
            children.append(child)
            stored_before = stored_refresh_token(db, realm_id)
            with psycopg.connect(database_url) as blocker:
                blocker.execute("LOCK TABLE quickbooks.token_events IN EXCLUSIVE MODE")  # stalls the event insert
                _go(child)
                wait_for(lambda: qbsync_waiters(database_url) == 1, 30, "child stalled before its commit")
                assert emulator.admin.newest_tokens(realm_id)["refresh_token"] != stored_before
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=10)
                blocker.rollback()
            assert stored_refresh_token(db, realm_id) == stored_before  # the rotation died with the process
            window_kills += 1
            recover_and_check()
    finally:
        for child in children:
            stop_process(child)
    assert (random_kills, window_kills) == (20, 4)


def test_invalid_grant_marks_one_realm_and_the_pass_still_refreshes_the_other(db, settings, emulator, qbsync_env,
                                                                              tmp_path):
    broken, _ = create_realm_with_tokens(db, settings, emulator, access_expires_in=60)
    healthy, _ = create_realm_with_tokens(db, settings, emulator, access_expires_in=60)
    emulator.admin.invalidate_refresh_tokens(broken)

    run = subprocess.run([*QBSYNC, "tokenup", "--once"], env=qbsync_env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)

    assert run.returncode == 1  # a realm failed in this pass
    assert "Traceback" not in run.stderr and "needs re-authorization" in run.stderr
    assert stored_refresh_token(db, healthy) == emulator.admin.newest_tokens(healthy)["refresh_token"]
    with db.transaction() as conn:
        status, last_error = conn.execute("SELECT status, last_error FROM quickbooks.tokens WHERE realm_id = %s",
                                          (broken,)).fetchone()
        errors = conn.execute("SELECT realm_id, code FROM quickbooks.errors").fetchall()
    assert status == "needs_reauth" and "invalid_grant" in last_error
    assert errors == [(broken, "invalid_grant")]
    calls = refresh_calls(emulator, broken)
    again = subprocess.run([*QBSYNC, "tokenup", "--once"], env=qbsync_env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr  # the needs_reauth realm is no longer attempted
    assert refresh_calls(emulator, broken) == calls


@pytest.mark.slow
def test_invalid_client_is_reported_and_tokenup_stays_up(db, settings, emulator, qbsync_env, tmp_path):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator, access_expires_in=60)
    env = {**qbsync_env, "QBO_CLIENT_SECRET": "wrong-secret-for-test"}
    err_path = tmp_path / "err.log"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([*QBSYNC, "tokenup"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        def recorded() -> int:
            with db.transaction() as conn:
                return conn.execute("SELECT count(*) FROM quickbooks.errors WHERE code = 'invalid_client'"
                                    " AND realm_id = %s", (realm_id,)).fetchone()[0]

        wait_for(recorded, 30, "the invalid_client error row")
        time.sleep(3)  # kept: three check intervals pass on purpose: still alive, and not retrying every second
        assert proc.poll() is None
        assert recorded() == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        stop_process(proc)
    text = err_path.read_text()
    assert "configuration error" in text and "QBO_CLIENT_ID / QBO_CLIENT_SECRET" in text
    assert "Traceback" not in text


def test_sigterm_lets_the_refresh_in_flight_finish_and_exits_0(db, settings, emulator, qbsync_env, database_url,
                                                               tmp_path):
    realm_id, _ = create_realm_with_tokens(db, settings, emulator, access_expires_in=60)
    emulator.admin.configure(latency_ms=1500)
    proc = subprocess.Popen([*QBSYNC, "tokenup"], env=qbsync_env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # The refresh transaction is open while the POST is in flight.
        wait_for(lambda: qbsync_waiters(database_url, state="idle in transaction") == 1, 30, "refresh in flight")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        stop_process(proc)
    assert refresh_calls(emulator, realm_id) == 1
    assert stored_refresh_token(db, realm_id) == emulator.admin.newest_tokens(realm_id)["refresh_token"]


def test_tokenup_survives_an_unreachable_database(qbsync_env, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**qbsync_env, "DATABASE_URL": f"postgresql://qbsync@127.0.0.1:{port}/nothing"}
    err_path = tmp_path / "err.log"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([*QBSYNC, "tokenup"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: "database unavailable" in err_path.read_text(), 60, "a logged retry")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        stop_process(proc)
    assert "Traceback" not in err_path.read_text()


def test_hard_expiry_warnings_are_recorded_once_each(db, settings, emulator, caplog):
    emulator.admin.configure(hard_expires_in=20 * 86400)  # this company's token dies for good in 20 days
    realm_id, _ = create_realm_with_tokens(db, settings, emulator, access_expires_in=60)
    worker = TokenWorker(db, settings)

    first = worker.run_pass(Stop())
    worker.run_pass(Stop())

    assert first.refreshed == [realm_id]
    with db.transaction() as conn:
        events = [r[0] for r in conn.execute("SELECT event FROM quickbooks.token_events WHERE realm_id = %s"
                                             " AND event LIKE 'hard_expiry%%'", (realm_id,))]
        assert events == ["hard_expiry_30d"]
        conn.execute("UPDATE quickbooks.tokens SET refresh_token_hard_expires_at = now() + interval '6 days'"
                     " WHERE realm_id = %s", (realm_id,))
    worker.run_pass(Stop())
    worker.run_pass(Stop())
    with db.transaction() as conn:
        events = [r[0] for r in conn.execute("SELECT event FROM quickbooks.token_events WHERE realm_id = %s"
                                             " AND event LIKE 'hard_expiry%%' ORDER BY id", (realm_id,))]
    assert events == ["hard_expiry_30d", "hard_expiry_7d"]
    assert any("hard expiry" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


@pytest.mark.parametrize("argv", [["token", "refresh", "--realm-id", "bad realm!"],
                                  ["token", "revoke", "--realm-id", ""]])
def test_bad_realm_ids_get_one_line(qbsync_env, tmp_path, argv):
    run = subprocess.run([*QBSYNC, *argv], env=qbsync_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "--realm-id" in run.stderr





@pytest.mark.parametrize("argv", [["sync", "--once"], ["tokenup", "--once"], ["token", "refresh"],
                                  ["token", "revoke", "--realm-id", "123"], ["connect", "--realm-id", "123"],
                                  ["token", "add", "--realm-id", "123", "--refresh-token", "RT-not-used"], ["tui"]])
def test_commands_that_may_refresh_tokens_check_the_app_keys_at_start(qbsync_env, tmp_path, argv):
    """Even with no realm stored yet (nothing to refresh today), a missing key is one line and exit 2."""
    env = {k: v for k, v in qbsync_env.items() if k != "QBO_CLIENT_ID"}
    run = subprocess.run([*QBSYNC, *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().count("\n") == 0 and "QBO_CLIENT_ID" in run.stderr
    assert "Traceback" not in run.stderr and "no realm" not in run.stdout


@pytest.mark.slow
def test_tokenup_sleeps_until_a_token_falls_due_and_serves_the_metrics(db, settings, emulator, qbsync_env,
                                                                        tmp_path):
    """Quiet tokenup: with TOKEN_CHECK_INTERVAL_SECONDS=300 it still refreshes a token the moment it
    enters the margin (here 4 s after start), because it sleeps until then, not for the interval.
    It also serves /metrics (METRICS_PORT): one tokenup per install."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families
    from support import free_port

    margin_s = settings.token_refresh_margin_minutes * 60
    realm, _ = create_realm_with_tokens(db, settings, emulator, access_expires_in=margin_s + 4)
    port = free_port()
    env = {**qbsync_env, "TOKEN_CHECK_INTERVAL_SECONDS": "300", "METRICS_PORT": str(port)}
    proc = subprocess.Popen([*QBSYNC, "tokenup"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        started = time.monotonic()
        wait_for(lambda: refresh_calls(emulator, realm) == 1, 60, "the refresh at the token's due time")
        assert time.monotonic() - started < 60  # not the 300 s check interval
        text = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, 30, "/metrics",
                        ignore=(requests.RequestException,))
        families = {f.name: f for f in text_string_to_metric_families(text)}
        left = [s for s in families["qbsync_token_access_seconds_left"].samples if s.labels["realm_id"] == realm]
        assert left and left[0].value > margin_s  # read after the refresh: a fresh hour
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop_process(proc)


def test_a_metrics_port_in_use_is_one_error_line_and_tokenup_keeps_refreshing(db, settings, emulator, qbsync_env,
                                                                              tmp_path):
    realm, _ = create_realm_with_tokens(db, settings, emulator, access_expires_in=60)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**qbsync_env, "METRICS_PORT": str(taken.getsockname()[1])}
        proc = subprocess.Popen([*QBSYNC, "tokenup"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: refresh_calls(emulator, realm) == 1, 60, "the refresh despite the metrics port")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            stop_process(proc)
    assert proc.returncode == 0
    errors = [line for line in out.splitlines() if "METRICS_PORT" in line]
    assert len(errors) == 1 and "cannot listen" in errors[0] and "Traceback" not in out
