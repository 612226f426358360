"""Many companies (SPEC section 13) with real processes: several sync processes share the realms
through leases (numprocs=3 under a real supervisord), a process killed -9 mid-load loses its
realms to the others, webhook events are applied beside a long full load, and idle workers
leave the database alone while a webhook still arrives within seconds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import requests
from support import free_port, stop_process, wait_for
from support.realms import assert_exact, connect_realm, data_calls, realm_synced

from services.intuit.client import parse_qbo_time
from services.model.entities import ENTITY_NAMES
from services.ops.supervisor_rpc import process_states
from services.reconcile.checks import reconcile_if_due
from services.sync.worker import sync_once
from services.webhook.inbox import InboxEvent, store_events

pytestmark = pytest.mark.slow  # real sync processes, supervisord, kill -9, a 100,000-invoice load

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
QBSYNC = [sys.executable, "-m", "services.cli"]
SMALL = {"customers": 4, "items": 3, "invoices": 4, "estimates": 2}


def _reconciled(db, realm: str) -> bool:
    with db.transaction() as conn:
        return bool(conn.execute("SELECT count(*) FROM quickbooks.reconciliations WHERE realm_id = %s",
                                 (realm,)).fetchone()[0])


def _leases(db) -> list[tuple[str, str, str]]:
    with db.transaction() as conn:
        return conn.execute("SELECT realm_id, holder, work FROM quickbooks.realm_leases ORDER BY realm_id").fetchall()


def _pid(holder: str) -> int:
    """`host:pid` or `host:pid/process_name` → pid."""
    return int(holder.split("/")[0].rsplit(":", 1)[1])


def _costs(emulator, realm: str) -> dict[str, int]:
    counts = emulator.admin.request_counts(realm)
    return {**data_calls(emulator, realm), "report": counts.get("report", 0)}


@contextmanager
def _processes(count: int, env: dict[str, str], cwd: Path, *args: str) -> Iterator[list[subprocess.Popen]]:
    procs = []
    try:
        for i in range(count):
            out = open(cwd / f"{args[0]}-{i}.log", "w")  # noqa: SIM115 - closed with the process below
            procs.append(subprocess.Popen([*QBSYNC, *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT))
            out.close()
        yield procs
    finally:
        for proc in procs:
            stop_process(proc)


def test_three_supervised_sync_processes_share_thirty_realms_and_call_nothing_twice(
        db, settings, emulator, qbsync_env) -> None:
    realms = [connect_realm(db, settings, emulator, **SMALL) for _ in range(30)]
    reference = connect_realm(db, settings, emulator, **SMALL)  # what one sync + reconcile of this shape costs
    sync_once(db, settings, realm_id=reference, trigger="schedule")
    reconcile_if_due(db, settings, reference)
    expected = _costs(emulator, reference)
    assert expected["query"] > len(ENTITY_NAMES) and expected["report"] == 3 and expected["cdc"] == 0

    home = Path(tempfile.mkdtemp(prefix="qbfl"))  # short: unix socket paths are limited to ~100 bytes
    conf = (ROOT / "supervisord.conf").read_text()
    several = conf.replace(";numprocs=3\n", "numprocs=3\n").replace(";process_name=", "process_name=")
    assert several.count("numprocs=3") == 1 and "\nprocess_name=%(program_name)s_%(process_num)02d" in several
    (home / "supervisord.conf").write_text(several)
    (home / ".venv").symlink_to(BIN.parent)
    (home / "var").mkdir()
    (home / "logs").mkdir()
    env = {**qbsync_env, "WEBHOOK_PORT": str(free_port()), "SYNC_CONCURRENCY": "4"}
    sock = home / "var" / "supervisor.sock"
    supervisord = subprocess.Popen([str(BIN / "supervisord"), "-n", "-c", str(home / "supervisord.conf")],
                                   cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def syncs_running() -> bool:
            states = {p["name"]: p["state"] for p in process_states(sock)} if sock.exists() else {}
            return [n for n, s in sorted(states.items()) if s == "RUNNING" and n.startswith("sync")] == [
                "sync_00", "sync_01", "sync_02"]
        wait_for(syncs_running, 60, "three sync processes RUNNING", ignore=(OSError,))
        wait_for(lambda: all(realm_synced(db, r) and _reconciled(db, r) for r in realms) and not _leases(db),
                 180, "every realm synced and reconciled, every lease given back")
        costs = {realm: _costs(emulator, realm) for realm in realms}
        assert {r: c for r, c in costs.items() if c != expected} == {}  # each realm worked exactly once
        assert _costs(emulator, reference) == expected  # the realm synced beforehand was not due: untouched
        with db.transaction() as conn:
            assert conn.execute("SELECT count(*) FROM quickbooks.lease_takeovers").fetchone()[0] == 0
            runs = conn.execute("SELECT count(*) FROM quickbooks.sync_runs WHERE realm_id = ANY(%s)",
                                (realms,)).fetchone()[0]
        assert runs == 30 * len(ENTITY_NAMES)
        log = (home / "logs" / "sync.out.log").read_text() + (home / "logs" / "sync.err.log").read_text()
        for name in ("sync_00", "sync_01", "sync_02"):
            assert f"/{name} started" in log, f"{name} never logged its start"
    finally:
        if supervisord.poll() is None:
            supervisord.send_signal(signal.SIGTERM)
            try:
                supervisord.wait(60)
            except subprocess.TimeoutExpired:
                supervisord.kill()
                supervisord.wait(5)
        for pid_line in subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout.split():
            os.kill(int(pid_line), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def test_a_sync_process_killed_mid_load_loses_its_realms_to_the_others(
        db, settings, emulator, qbsync_env, tmp_path) -> None:
    lease_s = 5
    realms = [connect_realm(db, settings, emulator, **SMALL) for _ in range(6)]
    emulator.admin.configure(latency_ms=250)  # each realm's load takes seconds: there is a "mid-load"
    env = {**qbsync_env, "SYNC_LEASE_SECONDS": str(lease_s), "SYNC_CONCURRENCY": "4", "QBO_MAX_CONCURRENCY": "1"}
    with _processes(3, env, tmp_path, "sync") as procs:
        def mid_load() -> tuple[str, str] | None:
            with db.transaction() as conn:
                rows = conn.execute(
                    "SELECT l.realm_id, l.holder FROM quickbooks.realm_leases l WHERE l.work = 'schedule'"
                    " AND (SELECT count(*) FROM quickbooks.sync_state s WHERE s.realm_id = l.realm_id"
                    "      AND s.last_run_status = 'success') BETWEEN 3 AND %s ORDER BY l.realm_id LIMIT 1",
                    (len(ENTITY_NAMES) - 5,)).fetchall()
            return rows[0] if rows else None
        realm, holder = wait_for(mid_load, 60, "a realm half loaded")
        victim = next(p for p in procs if p.pid == _pid(holder))
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        with db.transaction() as conn:
            killed_at = conn.execute("SELECT now()").fetchone()[0]
            committed = {r[0] for r in conn.execute(
                "SELECT entity FROM quickbooks.sync_state WHERE realm_id = %s AND last_run_status = 'success'",
                (realm,))}

        def taken_over() -> list[tuple]:
            with db.transaction() as conn:
                return conn.execute("SELECT realm_id, to_holder, at FROM quickbooks.lease_takeovers"
                                    " WHERE from_holder = %s", (holder,)).fetchall()
        takeovers = wait_for(lambda: [t for t in taken_over() if t[0] == realm], 30,
                             "another process taking the half-loaded realm over")
        takeovers = taken_over()
        assert all(t[1] != holder for t in takeovers)
        assert min(t[2] for t in takeovers) - killed_at < timedelta(seconds=lease_s + 10)
        def unsynced() -> str:
            with db.transaction() as conn:
                return str(conn.execute("SELECT realm_id, entity, last_run_status FROM quickbooks.sync_state"
                                        " WHERE realm_id = ANY(%s) AND last_run_status <> 'success'",
                                        (realms,)).fetchall())
        wait_for(lambda: all(realm_synced(db, r) for r in realms), 120, "every realm synced by the survivors",
                 details=unsynced)
        emulator.admin.configure(latency_ms=0)
        for r in realms:
            assert_exact(db, emulator, r)
        with db.transaction() as conn:
            # what the dead process committed was not listed again by the one that took over
            again = conn.execute(
                "SELECT entity, count(*) FROM quickbooks.sync_runs WHERE realm_id = %s AND kind = 'full'"
                " AND status = 'success' GROUP BY entity HAVING count(*) > 1", (realm,)).fetchall()
        assert again == [], f"listed twice after the takeover: {again} (committed before the kill: {sorted(committed)})"
        for proc in procs:
            if proc is not victim:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 0


def test_webhook_events_are_applied_within_seconds_beside_a_100000_invoice_full_load(
        db, settings, emulator, qbsync_env, tmp_path) -> None:
    from services.tokens.vault import add_tokens

    small = connect_realm(db, settings, emulator, **SMALL)
    sync_once(db, settings, realm_id=small)
    big = emulator.admin.create_realm(customers=200, items=20, invoices=100_000, estimates=10)
    issued = emulator.admin.issue_tokens(big)
    add_tokens(db, settings, big, issued["refresh_token"], access_token=issued["access_token"], expires_in=3600)
    with _processes(1, qbsync_env, tmp_path, "sync") as (worker,):
        def loading() -> bool:
            with db.transaction() as conn:
                return conn.execute("SELECT count(*) FROM quickbooks.invoices WHERE realm_id = %s",
                                    (big,)).fetchone()[0] > 0
        wait_for(loading, 120, "the big realm's invoices arriving")
        delays = []
        for invoice in emulator.admin.entities(small, "Invoice")[:3]:
            served = emulator.admin.mutate(small, "Invoice", "update", id=invoice["Id"])
            when = served["MetaData"]["LastUpdatedTime"]
            started = time.monotonic()
            with db.transaction() as conn:  # as the receiver stores it: the worker is woken
                store_events(conn, [InboxEvent("cloudevents", str(uuid.uuid4()), small, "Invoice", served["Id"],
                                               "Update", parse_qbo_time(when), None, {}, when)])

            def applied() -> bool:
                with db.transaction() as conn:
                    return conn.execute("SELECT sync_token FROM quickbooks.invoices WHERE realm_id = %s AND id = %s",
                                        (small, served["Id"])).fetchone() == (served["SyncToken"],)
            wait_for(applied, 30, f"invoice {served['Id']} applied from its webhook")
            delays.append(time.monotonic() - started)
        with db.transaction() as conn:
            still_loading = conn.execute("SELECT cursor IS NULL FROM quickbooks.sync_state WHERE realm_id = %s"
                                         " AND entity = 'Invoice'", (big,)).fetchone()
        assert still_loading in (None, (True,)), "the big load ended before the webhooks: nothing was proven"
        assert max(delays) < 5, delays
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0


def _backend_activity(database_url: str) -> dict[str, tuple[int, object]]:
    """Per qbsync process (application_name): backends and the newest query start."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {name: (count, newest) for name, count, newest in conn.execute(
            "SELECT application_name, count(*), max(query_start) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'qbsync-%%'"
            " GROUP BY application_name").fetchall()}


def test_idle_workers_leave_the_database_alone_and_a_webhook_still_lands_in_seconds(
        db, settings, emulator, qbsync_env, database_url, tmp_path) -> None:
    realm = connect_realm(db, settings, emulator, **SMALL)
    port = free_port()
    env = {k: v for k, v in qbsync_env.items() if k != "TOKEN_CHECK_INTERVAL_SECONDS"}  # the default, 300 s
    env["WEBHOOK_PORT"] = str(port)
    names = ("tokenup", "sync", "webhook")
    procs = {}
    try:
        for name in names:
            out = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed right after the start
            procs[name] = subprocess.Popen([*QBSYNC, name], env=env, cwd=tmp_path, stdout=out,
                                           stderr=subprocess.STDOUT)
            out.close()
        wait_for(lambda: realm_synced(db, realm) and _reconciled(db, realm) and not _leases(db), 90,
                 "the first sync and reconciliation")
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok, 30, "webhook /healthz",
                 ignore=(requests.RequestException,))
        wait_for(lambda: "tokenup started" in (tmp_path / "tokenup.log").read_text(), 30, "tokenup's first look")
        before = _backend_activity(database_url)
        assert {"qbsync-sync", "qbsync-tokenup", "qbsync-webhook"} <= set(before), before
        # The observation window itself is the measurement (not a wait for something to happen):
        # idle workers must not query in it. bench/quiet_bench.py watches a whole hour's worth.
        time.sleep(20)
        after = _backend_activity(database_url)
        assert {n: a[1] for n, a in after.items()} == {n: b[1] for n, b in before.items()}, (before, after)

        url = f"http://127.0.0.1:{port}/webhooks/quickbooks"
        emulator.admin.configure(webhook_url=url, webhook_format="cloudevents")
        for customer in emulator.admin.entities(realm, "Customer")[:3]:
            served = emulator.admin.mutate(realm, "Customer", "update", id=customer["Id"])
            started = time.monotonic()

            def applied() -> bool:
                with db.transaction() as conn:
                    return conn.execute("SELECT sync_token FROM quickbooks.customers WHERE realm_id = %s AND id = %s",
                                        (realm, served["Id"])).fetchone() == (served["SyncToken"],)
            wait_for(applied, 30, f"customer {served['Id']} applied from its webhook")
            assert time.monotonic() - started < 5
    finally:
        for proc in procs.values():
            stop_process(proc)
    assert all(proc.returncode == 0 for proc in procs.values()), {n: p.returncode for n, p in procs.items()}

