"""The receiver against the local QBO emulator: its signed deliveries land in the inbox, and
its consent redirect completes on /oauth/callback."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from db.connection import Database
from services.webhook.receiver import ReceiverServer, make_app


@pytest.fixture
def served(db: Database, settings) -> Iterator[str]:
    server = ReceiverServer(make_app(db, settings), "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.mark.parametrize("fmt", ["classic", "cloudevents"])
def test_emulator_deliveries_are_verified_and_stored_once(emulator, db: Database, served: str, fmt: str) -> None:
    admin = emulator.admin
    realm_id = admin.create_realm(customers=5, items=3, invoices=4, estimates=2, seed=3)
    with db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.tokens (realm_id, refresh_token) VALUES (%s, 'r')", (realm_id,))
    admin.configure(webhook_url=f"{served}/webhooks/quickbooks", webhook_format=fmt)
    admin.mutate(realm_id, "Customer", "update", id="2")
    admin.mutate(realm_id, "Customer", "merge", id="4", merge_into="5")
    admin.mutate(realm_id, "Invoice", "void", id="1")
    admin.mutate(realm_id, "Estimate", "delete", id="1")
    deliveries = admin.wait_webhooks()
    assert [d["status"] for d in deliveries] == [200] * 4
    with db.transaction() as conn:
        rows = conn.execute("SELECT format, realm_id, entity, entity_id, operation, deleted_id, status"
                            " FROM quickbooks.webhook_inbox ORDER BY id").fetchall()
        errors = conn.execute("SELECT count(*) FROM quickbooks.errors").fetchone()[0]
    assert rows == [
        (fmt, realm_id, "Customer", "2", "Update", None, "pending"),
        (fmt, realm_id, "Customer", "5", "Merge", "4", "pending"),
        (fmt, realm_id, "Invoice", "1", "Void", None, "pending"),
        (fmt, realm_id, "Estimate", "1", "Delete", None, "pending"),
    ]
    assert errors == 0


def test_oauth_callback_connects_the_company(emulator, db: Database, settings, served: str) -> None:
    from services.intuit.oauth import authorization_url
    from services.tokens.connect import create_state

    realm_id = emulator.admin.create_realm(customers=1, items=1, invoices=1, estimates=1, seed=5)
    emulator.admin.set_authorize_realm(realm_id)
    consent = requests.get(authorization_url(settings, create_state(db)), allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    query = urlsplit(consent.headers["Location"]).query
    code = parse_qs(query)["code"][0]
    page = requests.get(f"{served}/oauth/callback?{query}", timeout=30)
    assert page.status_code == 200, page.text
    assert f"Connected company {realm_id}" in page.text
    assert code not in page.text
    with db.transaction() as conn:
        assert conn.execute("SELECT status FROM quickbooks.tokens WHERE realm_id = %s",
                            (realm_id,)).fetchall() == [("active",)]
    replay = requests.get(f"{served}/oauth/callback?{query}", timeout=30)  # the state is single-use
    assert replay.status_code == 400 and code not in replay.text
