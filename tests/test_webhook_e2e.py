"""The whole webhook chain with real processes: an emulator change is delivered signed (classic and
CloudEvents) to `qbsync webhook`, stored in the inbox, and applied by the running `qbsync sync`
worker: the new values are in PostgreSQL within 10 s of receipt."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from support import free_port, stop_process, wait_for
from support.realms import connect_realm, realm_synced

APPLY_WITHIN_S = 10.0


def _start(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.cli", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_emulator_change_reaches_postgres_through_signed_webhooks_within_seconds(
        db, settings, emulator, qbsync_env, tmp_path) -> None:
    realm = connect_realm(db, settings, emulator, customers=12, items=4, invoices=10, estimates=3)
    port = free_port()
    env = {**qbsync_env, "WEBHOOK_PORT": str(port)}
    webhook = _start(env, tmp_path, "webhook")
    worker = _start(env, tmp_path, "sync")
    try:
        wait_for(lambda: realm_synced(db, realm), 60, "the worker's first sync")
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok, 30, "webhook /healthz",
                 ignore=(requests.RequestException,))

        customer = emulator.admin.entities(realm, "Customer")[0]["Id"]
        invoice = next(i for i in emulator.admin.entities(realm, "Invoice") if i["TotalAmt"] != 0)["Id"]
        url = f"http://127.0.0.1:{port}/webhooks/quickbooks"
        cases = [
            ("classic", "Customer", "update", customer,
             "SELECT display_name, synced_at FROM quickbooks.customers WHERE realm_id = %s AND id = %s",
             lambda served: served["DisplayName"]),
            ("cloudevents", "Invoice", "void", invoice,
             "SELECT total_amt, synced_at FROM quickbooks.invoices WHERE realm_id = %s AND id = %s",
             lambda served: Decimal("0")),
        ]
        for webhook_format, entity, op, entity_id, sql, expected in cases:
            emulator.admin.configure(webhook_url=url, webhook_format=webhook_format)
            served = emulator.admin.mutate(realm, entity, op, id=entity_id)
            want = expected(served)

            def received() -> object:
                with db.transaction() as conn:
                    return conn.execute(
                        "SELECT received_at, format FROM quickbooks.webhook_inbox WHERE realm_id = %s"
                        " AND entity = %s AND entity_id = %s AND format = %s ORDER BY id DESC LIMIT 1",
                        (realm, entity, entity_id, webhook_format)).fetchone()
            row = wait_for(received, 15)
            assert row, f"{webhook_format} webhook for {entity} {entity_id} never reached the inbox"
            received_at = row[0]

            def applied() -> object:
                with db.transaction() as conn:
                    value, synced_at = conn.execute(sql, (realm, entity_id)).fetchone()
                return synced_at if value == want else None
            synced_at = wait_for(applied, APPLY_WITHIN_S + 5)
            assert synced_at, f"{entity} {entity_id} did not get its new value from the {webhook_format} webhook"
            assert (synced_at - received_at).total_seconds() <= APPLY_WITHIN_S
            deliveries = [d for d in emulator.admin.webhook_deliveries() if d["format"] == webhook_format]
            assert deliveries and deliveries[-1]["status"] == 200

        with db.transaction() as conn:
            statuses = dict(conn.execute("SELECT status, count(*) FROM quickbooks.webhook_inbox"
                                         " WHERE realm_id = %s GROUP BY status", (realm,)).fetchall())
        assert statuses.get("processed", 0) >= 2 and not statuses.get("failed")
    finally:
        webhook_out = stop_process(webhook)
        worker_out = stop_process(worker)
    assert webhook.returncode == 0, webhook_out[1]
    assert worker.returncode == 0, worker_out[1]
