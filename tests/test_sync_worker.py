"""`qbsync sync` as a process: --once exit codes, and the worker (requests, inbox, SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support import stop_process, wait_for
from support.realms import assert_exact, connect_realm, realm_synced, request_status

from services.intuit.client import parse_qbo_time
from services.sync.engine import enqueue_sync_request
from services.webhook.inbox import InboxEvent, store_events


def qbsync(env: dict[str, str], cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_sync_once_exits_0_on_success_and_1_when_an_entity_fails(db, settings, emulator, qbsync_env,
                                                                 tmp_path) -> None:
    realm = connect_realm(db, settings, emulator, customers=15, items=5, invoices=12, estimates=3)
    done = qbsync(qbsync_env, tmp_path, "sync", "--once", "--realm-id", realm)
    assert done.returncode == 0, done.stderr
    assert "entity=Invoice kind=full status=success" in done.stdout
    assert_exact(db, emulator, realm)
    with db.transaction() as conn:
        conn.execute("ALTER TABLE quickbooks.items RENAME COLUMN sku TO sku_broken")
    emulator.admin.mutate(realm, "Item", "update", id=emulator.admin.entities(realm, "Item")[0]["Id"])
    failed = qbsync(qbsync_env, tmp_path, "sync", "--once")
    assert failed.returncode == 1
    assert "entity=Item kind=cdc status=failed" in failed.stdout + failed.stderr
    bad = qbsync(qbsync_env, tmp_path, "sync", "--once", "--entity", "Paycheck")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "Paycheck" in bad.stderr


@pytest.mark.slow
def test_worker_applies_inbox_runs_requests_and_stops_on_sigterm(db, settings, emulator, qbsync_env,
                                                                 tmp_path) -> None:
    realm = connect_realm(db, settings, emulator, customers=15, items=5, invoices=12, estimates=3)
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "sync"], env=qbsync_env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: realm_synced(db, realm), 30, "the worker's first sync")
        admin = emulator.admin
        invoice = admin.mutate(realm, "Invoice", "update", id=admin.entities(realm, "Invoice")[0]["Id"])
        when = invoice["MetaData"]["LastUpdatedTime"]
        with db.transaction() as conn:
            store_events(conn, [InboxEvent("cloudevents", str(uuid.uuid4()), realm, "Invoice", invoice["Id"],
                                           "Update", parse_qbo_time(when), None, {}, when)])
        started = time.monotonic()

        def applied() -> bool:
            with db.transaction() as conn:
                row = conn.execute("SELECT i.sync_token, w.status FROM quickbooks.invoices i,"
                                   " quickbooks.webhook_inbox w WHERE i.realm_id = %s AND i.id = %s",
                                   (realm, invoice["Id"])).fetchone()
            return row == (invoice["SyncToken"], "processed")
        assert wait_for(applied, 15), "the inbox event was not applied"
        assert time.monotonic() - started < 10
        with db.transaction() as conn:
            request_id = enqueue_sync_request(conn, realm, "Customer", full=True, requested_by="test")
        wait_for(lambda: request_status(db, request_id) == "done", 20, "the queued request")
        with db.transaction() as conn:
            assert conn.execute("SELECT kind, trigger, status FROM quickbooks.sync_runs WHERE realm_id = %s"
                                " AND entity = 'Customer' ORDER BY id DESC LIMIT 1", (realm,)).fetchone() == \
                ("full", "request", "success")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "sync worker stopping" in out
        assert_exact(db, emulator, realm)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_sync_once_from_another_shell_while_the_worker_runs(db, settings, emulator, qbsync_env,
                                                            tmp_path) -> None:
    """Both write the same realm at once; per-(realm, entity) locks keep the end state exact."""
    realm = connect_realm(db, settings, emulator, customers=40, items=8, invoices=60, estimates=10)
    worker = subprocess.Popen([sys.executable, "-m", "services.cli", "sync"], env=qbsync_env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: realm_synced(db, realm), 60, "the worker's first sync")
        for customer in emulator.admin.entities(realm, "Customer")[:5]:
            emulator.admin.mutate(realm, "Customer", "update", id=customer["Id"])
        emulator.admin.mutate(realm, "Invoice", "create")
        with db.transaction() as conn:  # the worker runs a full listing at the same time as --once
            request_id = enqueue_sync_request(conn, realm, None, full=True, requested_by="test")
        runs = [subprocess.Popen([sys.executable, "-m", "services.cli", "sync", "--once", "--realm-id", realm],
                                 env=qbsync_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, out + err
        wait_for(lambda: request_status(db, request_id) == "done", 60, "the worker's full request")
        assert_exact(db, emulator, realm)
        assert worker.poll() is None
    finally:
        stop_process(worker)
    assert worker.returncode == 0
