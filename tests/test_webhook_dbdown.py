"""PostgreSQL goes away under a running receiver: 503 (Intuit retries), then the redelivery is kept."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import psycopg
import pytest
import requests
from support.samples import SAMPLES

from db.connection import Database
from db.embedded import stop_embedded
from db.migrate import upgrade
from services.core.config import load_settings
from services.webhook.receiver import ReceiverServer, make_app, sign

TOKEN = "dbdown-verifier-token"


def _start_pg(pgdata: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver.get_server(pgdata, cleanup_mode=None)


@pytest.mark.slow
def test_database_down_gives_503_and_the_redelivery_is_accepted_after_it_returns() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="qbwd", dir="/tmp"))  # short: the unix socket lives here
    pgdata = workdir / "pg"
    server = _start_pg(pgdata)
    url = server.get_uri()
    db = receiver = None
    try:
        with psycopg.connect(url) as conn:
            upgrade(conn)
        settings = load_settings({"DATABASE_URL": url, "QBO_WEBHOOK_VERIFIER_TOKEN": TOKEN}, dotenv=False)
        db = Database(url, max_size=8, timeout=1.0)  # the receiver uses DB_WAIT_S; shorter here for speed
        receiver = ReceiverServer(make_app(db, settings), "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{receiver.port}"
        http = requests.Session()

        first = (SAMPLES / "webhook_classic.json").read_bytes()
        second = (SAMPLES / "webhook_cloudevents_customer_merged.json").read_bytes()
        assert http.post(base + "/webhooks/quickbooks", data=first,
                         headers={"intuit-signature": sign(TOKEN, first)}).json() == {"stored": 2, "duplicates": 0}

        assert stop_embedded(pgdata)
        server.cleanup()  # forget the stopped server so get_server starts it again
        down = http.post(base + "/webhooks/quickbooks", data=second,
                         headers={"intuit-signature": sign(TOKEN, second)}, timeout=30)
        assert down.status_code == 503
        assert down.headers["Retry-After"] == "10"
        assert http.get(base + "/healthz", timeout=30).status_code == 503
        # client errors are still answered as such while the database is down
        assert http.post(base + "/webhooks/quickbooks", data=second, timeout=30,
                         headers={"intuit-signature": "wrong"}).status_code == 401

        server = _start_pg(pgdata)
        assert http.get(base + "/healthz", timeout=30).json() == {"status": "ok"}
        again = http.post(base + "/webhooks/quickbooks", data=second,
                          headers={"intuit-signature": sign(TOKEN, second)}, timeout=30)
        assert again.json() == {"stored": 1, "duplicates": 0}
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT entity, operation FROM quickbooks.webhook_inbox ORDER BY id").fetchall()
        assert rows == [("Customer", "Create"), ("Vendor", "Create"), ("Customer", "Merge")]
    finally:
        if receiver is not None:
            receiver.stop()
        if db is not None:
            db.close()
        stop_embedded(pgdata)
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
