"""The webhook receiver over real HTTP (waitress on 127.0.0.1) against a real PostgreSQL."""

from __future__ import annotations

import json
import logging
import socket
import string
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from support import wait_for
from support.samples import SAMPLES

from db.connection import Database
from services.core.config import load_settings
from services.webhook.receiver import DB_WAIT_S, MAX_BODY_BYTES, ReceiverServer, make_app, sign

TOKEN = "test-verifier-token-0123456789"
URL_PATH = "/webhooks/quickbooks"
SAMPLE_FILES = ["webhook_classic.json", "webhook_classic_blog_2025.json", "webhook_cloudevents.json",
                "webhook_cloudevents_customer_merged.json", "webhook_cloudevents_dotnet_sdk_test.json",
                "webhook_cloudevents_sample_app.json"]


class Receiver:
    def __init__(self, database_url: str, token: str = TOKEN) -> None:
        self.settings = load_settings({"DATABASE_URL": database_url, "QBO_WEBHOOK_VERIFIER_TOKEN": token},
                                      dotenv=False)
        self.db = Database(database_url, max_size=8, timeout=DB_WAIT_S)
        self.server = ReceiverServer(make_app(self.db, self.settings), "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self.server.port}"
        self.token = token
        self.http = requests.Session()

    def post(self, body: bytes, signature: str | bytes | None = "sign", **headers: str | bytes) -> requests.Response:
        if signature == "sign":
            signature = sign(self.token, body)
        if signature is not None:
            headers["intuit-signature"] = signature
        return self.http.post(self.base + URL_PATH, data=body, headers=headers, timeout=30)

    def query(self, sql: str, *params: object) -> list[tuple]:
        with self.db.transaction() as conn:
            return conn.execute(sql, params).fetchall()

    def inbox_count(self) -> int:
        return self.query("SELECT count(*) FROM quickbooks.webhook_inbox")[0][0]

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.db.close()


@pytest.fixture
def receiver(database_url: str) -> Iterator[Receiver]:
    r = Receiver(database_url)
    try:
        yield r
    finally:
        r.close()


def vectors() -> list[dict]:
    return json.loads((SAMPLES / "webhook_signature_test_vectors.json").read_text())["vectors"]


# --------------------------------------------------------------------------------------------
# signature

@pytest.mark.parametrize("vector", vectors(), ids=["java-sdk", "dotnet-sdk"])
def test_intuit_signature_test_vectors_verify_and_a_changed_byte_fails(database_url: str, vector: dict) -> None:
    raw = vector["payload_raw"].encode()
    assert sign(vector["verifier_token"], raw) == vector["intuit_signature"]
    r = Receiver(database_url, token=vector["verifier_token"])
    try:
        changed = raw.replace(b'"id":"', b'"id":"9', 1)
        assert len(changed) == len(raw) + 1
        flipped = raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:]
        assert r.post(changed, vector["intuit_signature"]).status_code == 401
        assert r.post(flipped, vector["intuit_signature"]).status_code == 401
        assert r.inbox_count() == 0
        ok = r.post(raw, vector["intuit_signature"])
        assert ok.status_code == 200, ok.text
        expected = len(json.loads(raw)["eventNotifications"][0]["dataChangeEvent"]["entities"])
        assert ok.json() == {"stored": expected, "duplicates": 0}
        assert r.inbox_count() == expected
    finally:
        r.close()


def test_missing_or_wrong_signature_is_401_and_stores_nothing(receiver: Receiver) -> None:
    body = (SAMPLES / "webhook_classic.json").read_bytes()
    for signature in (None, "", "garbage", sign("another-token", body), sign(TOKEN, body + b" "),
                      sign(TOKEN, body).lower(), "é" * 44):
        response = receiver.post(body, signature)
        assert response.status_code == 401, signature
    assert receiver.inbox_count() == 0


# --------------------------------------------------------------------------------------------
# every sample over HTTP

def test_every_sample_is_stored_with_the_right_status(receiver: Receiver) -> None:
    with receiver.db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.tokens (realm_id, refresh_token) VALUES"
                     " ('1185883450', 'r'), ('310687', 'r'), ('93414556*********', 'r')")
    answers = {name: receiver.post((SAMPLES / name).read_bytes()) for name in SAMPLE_FILES}
    assert {n: a.status_code for n, a in answers.items()} == {n: 200 for n in SAMPLE_FILES}
    # the sample app reuses the blog's CloudEvents id, so it is (rightly) a duplicate
    assert answers["webhook_cloudevents_sample_app.json"].json() == {"stored": 0, "duplicates": 1}
    rows = receiver.query("SELECT format, realm_id, entity, entity_id, operation, deleted_id, status"
                          " FROM quickbooks.webhook_inbox ORDER BY id")
    assert rows == [
        ("classic", "1185883450", "Customer", "1", "Create", None, "pending"),
        ("classic", "1185883450", "Vendor", "1", "Create", None, "pending"),
        ("classic", "310687", "Account", "1234", "Create", None, "pending"),
        ("cloudevents", "310687", "Account", "1234", "Create", None, "pending"),
        ("cloudevents", "93414556*********", "Customer", "123", "Merge", "27", "pending"),
        ("cloudevents", "310687", "Class", "1234", "Create", None, "pending"),
    ]  # every entity of the samples is part of the ledger (SPEC section 10)
    assert receiver.query("SELECT count(*) FROM quickbooks.errors") == [(0,)]


def test_duplicate_delivery_is_stored_once(receiver: Receiver) -> None:
    body = (SAMPLES / "webhook_cloudevents_customer_merged.json").read_bytes()
    assert receiver.post(body).json() == {"stored": 1, "duplicates": 0}
    assert receiver.post(body).json() == {"stored": 0, "duplicates": 1}
    assert receiver.inbox_count() == 1


def test_unknown_realm_is_stored_pending_and_reported(receiver: Receiver) -> None:
    body = (SAMPLES / "webhook_classic.json").read_bytes()
    assert receiver.post(body).status_code == 200
    assert receiver.query("SELECT status FROM quickbooks.webhook_inbox WHERE entity = 'Customer'") == [("pending",)]
    errors = receiver.query("SELECT service, realm_id, message FROM quickbooks.errors")
    assert [(s, r) for s, r, _ in errors] == [("webhook", "1185883450")]
    assert "unknown realm 1185883450" in errors[0][2]


# --------------------------------------------------------------------------------------------
# refusals

@pytest.mark.parametrize("body", [
    b"", b"{", b"[1, 2]", b'{"foo": 1}', b"\xff\xfe\x00", b'[{"id": "x", "type": "qbo.customer.created.v1"}]',
    b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Customer"}]}}]}',
])
def test_signed_but_malformed_body_is_400_and_stores_nothing(receiver: Receiver, body: bytes) -> None:
    response = receiver.post(body)
    assert response.status_code == 400
    assert response.json()["error"]
    assert receiver.inbox_count() == 0


def test_one_bad_event_rejects_the_whole_body(receiver: Receiver) -> None:
    good = json.loads((SAMPLES / "webhook_cloudevents_sample_app.json").read_bytes())[0]
    response = receiver.post(json.dumps([good, {**good, "id": "other", "type": 5}]).encode())
    assert response.status_code == 400
    assert receiver.inbox_count() == 0


def test_body_of_exactly_1_mib_is_accepted_and_one_byte_more_is_413(receiver: Receiver) -> None:
    body = (SAMPLES / "webhook_classic.json").read_bytes()
    padded = body + b" " * (MAX_BODY_BYTES - len(body))
    assert len(padded) == MAX_BODY_BYTES
    assert receiver.post(padded).status_code == 200
    assert receiver.post(padded + b" ").status_code == 413
    assert receiver.inbox_count() == 2


def test_oversized_chunked_body_is_413_and_stores_nothing(receiver: Receiver) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(12):
            yield b"[" + b" " * 99_998 + b"]"

    response = receiver.http.post(receiver.base + URL_PATH, data=chunks(), timeout=30,
                                  headers={"intuit-signature": "x"})
    assert response.status_code == 413
    assert receiver.inbox_count() == 0


def test_declared_oversized_body_is_refused_without_being_sent(receiver: Receiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.server.port), timeout=10) as sock:
        sock.sendall(f"POST {URL_PATH} HTTP/1.1\r\nHost: x\r\nintuit-signature: x\r\n"
                     f"Content-Length: {50 * MAX_BODY_BYTES}\r\n\r\n".encode() + b"[" * 1000)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    assert receiver.inbox_count() == 0


def test_routes_and_methods(receiver: Receiver) -> None:
    http, base = receiver.http, receiver.base
    assert http.get(base + "/healthz").json() == {"status": "ok"}
    assert http.get(base + "/nope").status_code == 404
    assert http.post(base + "/", data=b"x").status_code == 404
    wrong = http.get(base + URL_PATH)
    assert (wrong.status_code, wrong.headers["Allow"]) == (405, "POST")
    assert http.post(base + "/healthz").status_code == 405
    assert http.delete(base + "/oauth/callback").status_code == 405


def test_oauth_callback_failure_is_a_400_page_without_the_code(receiver: Receiver) -> None:
    response = receiver.http.get(receiver.base + "/oauth/callback",
                                 params={"code": "AB11SECRETCODE", "state": "no-such-state", "realmId": "123"})
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Authorization failed" in response.text
    assert "AB11SECRETCODE" not in response.text and "no-such-state" not in response.text


def test_access_log_has_one_line_per_request_and_no_body_or_signature(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    body = (SAMPLES / "webhook_classic.json").read_bytes()
    signature = sign(TOKEN, body)
    with caplog.at_level(logging.INFO, logger="webhook"):
        receiver.post(body)
        receiver.post(body, "bad-signature-value")
        receiver.http.get(receiver.base + "/oauth/callback?code=SECRETCODE42&state=s")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 webhook(s) with a missing or invalid intuit-signature" in w for w in warnings)
    access = [r.getMessage() for r in caplog.records if r.name == "webhook" and " events=" in r.getMessage()]
    assert len(access) == 3
    assert access[0].startswith("POST /webhooks/quickbooks 200 events=2 ")
    assert access[1].startswith("POST /webhooks/quickbooks 401 events=0 ")
    assert access[2].startswith("GET /oauth/callback 400 events=0 ")
    assert all(line.endswith("ms") for line in access)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (signature, "bad-signature-value", "SECRETCODE42", "1185883450", TOKEN):
        assert secret not in everything


def test_unexpected_database_error_is_500_and_the_server_keeps_serving(receiver: Receiver) -> None:
    with receiver.db.transaction() as conn:
        conn.execute("ALTER TABLE quickbooks.webhook_inbox ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
    body = (SAMPLES / "webhook_classic.json").read_bytes()
    assert receiver.post(body).status_code == 500
    assert receiver.http.get(receiver.base + "/healthz").status_code == 200
    with receiver.db.transaction() as conn:
        conn.execute("ALTER TABLE quickbooks.webhook_inbox DROP CONSTRAINT refuse_all")
    assert receiver.post(body).json() == {"stored": 2, "duplicates": 0}


def test_missing_schema_is_503_not_500(receiver: Receiver) -> None:
    with receiver.db.transaction() as conn:
        conn.execute("ALTER TABLE quickbooks.webhook_inbox RENAME TO webhook_inbox_gone")
    response = receiver.post((SAMPLES / "webhook_classic.json").read_bytes())
    assert (response.status_code, response.headers["Retry-After"]) == (503, "10")
    assert receiver.http.get(receiver.base + "/healthz").status_code == 503


# --------------------------------------------------------------------------------------------
# fuzzing: never a 5xx, nothing stored without a valid signature

FUZZ = hsettings(max_examples=100, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)
near_valid = st.fixed_dictionaries({
    "specversion": st.just("1.0"), "id": st.text(max_size=30) | st.integers(),
    "type": st.sampled_from(["qbo.customer.created.v1", "qbo..v1", "qbo.invoice.x.y.v1", "", "qbo.item.voided"])
            | st.text(max_size=30),
    "intuitaccountid": st.text(max_size=25) | st.none(), "intuitentityid": st.text(max_size=10) | json_values,
    "time": st.sampled_from(["2025-01-01T00:00:00Z", "2025-02-30T00:00:00Z", "x"]) | st.text(max_size=30),
    "data": json_values,
})
classic_like = st.fixed_dictionaries({"eventNotifications": st.lists(st.fixed_dictionaries({
    "realmId": st.text(max_size=20) | json_values,
    "dataChangeEvent": st.fixed_dictionaries({"entities": st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["Customer", "Invoice"]) | json_values, "id": st.text(max_size=10),
        "operation": st.text(max_size=10), "lastUpdated": st.text(max_size=30) | json_values,
    }), max_size=3)}) | json_values,
}), max_size=3)})
ident = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(str.strip)
stamps = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
valid_ce = st.fixed_dictionaries({
    "specversion": st.just("1.0"), "id": ident, "intuitaccountid": ident, "intuitentityid": ident, "time": stamps,
    "type": st.builds("qbo.{}.{}.v1".format, st.sampled_from(["customer", "invoice", "companyinfo", "vendor"]),
                      st.sampled_from(["created", "updated", "deleted", "merged", "voided", "emailed", "odd"])),
    "data": st.just({}) | st.fixed_dictionaries({"deletedid": ident}),
})
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=300)


@FUZZ
@given(body=st.binary(max_size=2000), signature=st.none() | header_text,
       extra=st.dictionaries(st.sampled_from(["X-Odd", "Content-Type", "Transfer-Encoding-Not", "Intuit-Signature-2"]),
                             header_text, max_size=3))
def test_fuzz_unsigned_bodies_never_5xx_and_never_stored(receiver: Receiver, body: bytes, signature: str | None,
                                                         extra: dict[str, str]) -> None:
    # as bytes, so that requests sends any Latin-1 value instead of judging it
    headers = {k: v.encode("latin-1").lstrip() for k, v in extra.items()}
    response = receiver.post(body, None if signature is None else signature.encode("latin-1").lstrip(),
                             **headers)
    assert response.status_code in (400, 401), response.text
    assert receiver.inbox_count() == 0


@FUZZ
@given(doc=json_values | st.lists(near_valid, max_size=3) | classic_like | st.lists(valid_ce, max_size=5))
def test_fuzz_signed_json_is_200_or_400_never_5xx(receiver: Receiver, doc: object) -> None:
    body = json.dumps(doc).encode()
    before = receiver.inbox_count()
    response = receiver.post(body)
    event(f"status {response.status_code}")
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert receiver.inbox_count() == before
    else:
        assert receiver.inbox_count() == before + response.json()["stored"]


@FUZZ
@given(data=st.data())
def test_fuzz_huge_and_odd_headers_never_5xx(receiver: Receiver, data: st.DataObject) -> None:
    body = (SAMPLES / "webhook_classic.json").read_bytes()
    size = data.draw(st.sampled_from([1, 100, 8_000, 60_000]))
    filler = data.draw(st.sampled_from(string.ascii_letters + "=+/é"))
    header = data.draw(st.sampled_from(["intuit-signature", "X-Filler", "Content-Type"]))
    response = receiver.post(body, signature=None, **{header: filler * size})
    assert response.status_code in (400, 401, 431), response.status_code
    assert receiver.inbox_count() == 0


# --------------------------------------------------------------------------------------------
# graceful stop

def test_stop_lets_the_request_in_flight_commit_and_answer(receiver: Receiver, database_url: str) -> None:
    import threading

    import psycopg

    body = (SAMPLES / "webhook_classic.json").read_bytes()
    answers: list[requests.Response] = []
    with psycopg.connect(database_url) as blocker, psycopg.connect(database_url, autocommit=True) as watcher:
        blocker.execute("LOCK TABLE quickbooks.webhook_inbox IN ACCESS EXCLUSIVE MODE")
        poster = threading.Thread(target=lambda: answers.append(receiver.post(body)))
        poster.start()

        def lock_waiters() -> int:
            return watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                   " AND datname = current_database()").fetchone()[0]
        waiting = wait_for(lock_waiters, 10, "the receiver's INSERT to wait on our lock")
        assert waiting == 1
        stopper = threading.Thread(target=receiver.server.stop)
        stopper.start()

        def refused() -> bool:
            try:
                requests.get(receiver.base + "/healthz", timeout=5)
            except requests.ConnectionError:
                return True
            return False
        wait_for(refused, 10, "the stopping receiver to refuse connections")  # soon no longer accepting
        assert poster.is_alive() and stopper.is_alive()  # the stop waits for the request in flight
        blocker.rollback()  # release the lock: the in-flight request may finish
    poster.join(20)
    stopper.join(20)
    assert not stopper.is_alive()
    assert [a.status_code for a in answers] == [200]
    assert answers[0].json() == {"stored": 2, "duplicates": 0}
    assert receiver.inbox_count() == 2
