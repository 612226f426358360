"""services.webhook.inbox: both Intuit formats normalized, wrong shapes refused, events stored once."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from support.samples import SAMPLES

from services.core.qbotime import parse_qbo_time as parse_timestamp
from services.webhook.inbox import InboxEvent, MalformedPayload, parse_events, store_events

UTC = timezone.utc


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def summary(event: InboxEvent) -> tuple:
    return (event.format, event.event_id, event.realm_id, event.entity, event.entity_id,
            event.operation, event.occurred_at, event.deleted_id)


# --------------------------------------------------------------------------------------------
# every recorded sample

def test_classic_docs_sample_yields_customer_and_vendor_events() -> None:
    events = parse_events(sample("webhook_classic.json"))
    at = datetime(2015, 10, 5, 14, 42, 19, tzinfo=timezone(timedelta(hours=-7)))
    assert [summary(e) for e in events] == [
        ("classic", None, "1185883450", "Customer", "1", "Create", at, None),
        ("classic", None, "1185883450", "Vendor", "1", "Create", at, None),
    ]
    assert events[0].payload == {"name": "Customer", "id": "1", "operation": "Create",
                                 "lastUpdated": "2015-10-05T14:42:19-0700"}
    assert events[0].dedupe_key == "classic:1185883450:Customer:1:Create:2015-10-05T14:42:19-0700"
    assert events[0].synced and events[1].synced  # Vendor is part of the ledger (SPEC section 10)


def test_classic_blog_2025_sample_has_millisecond_utc_time() -> None:
    (event,) = parse_events(sample("webhook_classic_blog_2025.json"))
    assert summary(event) == ("classic", None, "310687", "Account", "1234", "Create",
                              datetime(2025, 9, 8, 20, 52, 31, 657000, tzinfo=UTC), None)
    assert event.dedupe_key == "classic:310687:Account:1234:Create:2025-09-08T20:52:31.657Z"


def test_cloudevents_blog_sample_maps_type_and_nanosecond_time() -> None:
    (event,) = parse_events(sample("webhook_cloudevents.json"))
    assert summary(event) == ("cloudevents", "88cd52aa-33b6-4351-9aa4-47572edbd068", "310687",
                              "Account", "1234", "Create",
                              datetime(2025, 9, 10, 21, 31, 25, 179851, tzinfo=UTC), None)
    assert event.dedupe_key == "ce:88cd52aa-33b6-4351-9aa4-47572edbd068"
    assert event.payload == json.loads(sample("webhook_cloudevents.json"))[0]


def test_cloudevents_merge_sample_carries_deleted_id() -> None:
    (event,) = parse_events(sample("webhook_cloudevents_customer_merged.json"))
    assert summary(event) == ("cloudevents", "********-****-****-****-************-Customer-123",
                              "93414556*********", "Customer", "123", "Merge",
                              datetime(2025, 12, 4, 15, 25, 5, tzinfo=UTC), "27")


def test_cloudevents_dotnet_sample_without_datacontenttype() -> None:
    (event,) = parse_events(sample("webhook_cloudevents_dotnet_sdk_test.json"))
    assert summary(event) == ("cloudevents", "d1a3aedd-9670-41bf-a4f9-c148a1cc4e03", "310687",
                              "Class", "1234", "Create",
                              datetime(2025, 10, 7, 19, 59, 7, 34359, tzinfo=UTC), None)
    assert event.payload["data"]["alternative_ids"][0]["namespace"] == "Intuit.sbseg.v4"
    assert event.synced


def test_cloudevents_sample_app_customer_created() -> None:
    (event,) = parse_events(sample("webhook_cloudevents_sample_app.json"))
    assert summary(event) == ("cloudevents", "88cd52aa-33b6-4351-9aa4-47572edbd068", "310687",
                              "Customer", "1234", "Create",
                              datetime(2025, 9, 10, 21, 31, 25, 179000, tzinfo=UTC), None)
    assert event.synced


# --------------------------------------------------------------------------------------------
# generic mapping

def ce(type_: str, *, id_: str = "e1", realm: str = "r1", data: object = None, time: str = "2025-01-02T03:04:05Z") -> dict:
    event = {"specversion": "1.0", "id": id_, "source": "intuit.x", "type": type_, "time": time,
             "intuitentityid": "7", "intuitaccountid": realm}
    if data is not None:
        event["data"] = data
    return event


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(("type_", "entity", "operation"), [
    ("qbo.customer.created.v1", "Customer", "Create"),
    ("qbo.invoice.updated.v1", "Invoice", "Update"),
    ("qbo.estimate.deleted.v1", "Estimate", "Delete"),
    ("qbo.item.merged.v1", "Item", "Merge"),
    ("qbo.invoice.voided.v1", "Invoice", "Void"),
    ("qbo.invoice.void.v1", "Invoice", "Void"),
    ("qbo.invoice.emailed.v1", "Invoice", "Emailed"),
    ("qbo.companyinfo.updated.v1", "CompanyInfo", "Update"),
    ("qbo.journalentry.created.v2", "JournalEntry", "Create"),
    ("qbo.customer.archived.v1", "Customer", "Archived"),      # unknown verbs pass through
    ("qbo.widget.created", "Widget", "Create"),                 # version suffix optional
])
def test_cloudevents_type_maps_generically(type_: str, entity: str, operation: str) -> None:
    (event,) = parse_events(body([ce(type_)]))
    assert (event.entity, event.operation) == (entity, operation)


def test_batches_spanning_realms_split_per_realm() -> None:
    classic = {"eventNotifications": [
        {"realmId": "A", "dataChangeEvent": {"entities": [
            {"name": "Invoice", "id": "1", "operation": "Void", "lastUpdated": "2025-01-01T00:00:00Z"}]}},
        {"realmId": "B", "dataChangeEvent": {"entities": [
            {"name": "Customer", "id": "2", "operation": "Merge", "deletedId": "9",
             "lastUpdated": "2025-01-01T00:00:00.123-05:00"}]}}]}
    events = parse_events(body(classic))
    assert [(e.realm_id, e.entity, e.operation, e.deleted_id) for e in events] == [
        ("A", "Invoice", "Void", None), ("B", "Customer", "Merge", "9")]
    cloud = parse_events(body([ce("qbo.customer.updated.v1", id_="x", realm="A"),
                               ce("qbo.customer.updated.v1", id_="y", realm="B")]))
    assert [e.realm_id for e in cloud] == ["A", "B"]


@pytest.mark.parametrize(("text", "expected"), [
    ("2015-10-05T14:42:19-0700", datetime(2015, 10, 5, 21, 42, 19, tzinfo=UTC)),
    ("2015-10-05T14:42:19-07:00", datetime(2015, 10, 5, 21, 42, 19, tzinfo=UTC)),
    ("2016-10-05T03:09:04.000Z", datetime(2016, 10, 5, 3, 9, 4, tzinfo=UTC)),
    ("2025-09-10T21:31:25.179851517Z", datetime(2025, 9, 10, 21, 31, 25, 179851, tzinfo=UTC)),
    ("2025-09-10T21:31:25.1+05:30", datetime(2025, 9, 10, 16, 1, 25, 100000, tzinfo=UTC)),
])
def test_timestamps_in_every_intuit_variant(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed.tzinfo is not None
    assert parsed == expected


@pytest.mark.parametrize("text", ["2015-10-05T14:42:19", "2015-13-05T14:42:19Z", "yesterday",
                                  "2015-10-05T14:42:19.1234567890Z", "2015-10-05T14:42:19+25:00"])
def test_bad_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_redelivery_has_the_same_key_and_other_events_do_not() -> None:
    a = parse_events(sample("webhook_classic.json"))
    b = parse_events(sample("webhook_classic.json"))
    assert [e.dedupe_key for e in a] == [e.dedupe_key for e in b]
    assert len({e.dedupe_key for e in a}) == 2
    later = sample("webhook_classic.json").replace(b"14:42:19", b"14:42:20")
    assert {e.dedupe_key for e in parse_events(later)}.isdisjoint({e.dedupe_key for e in a})


def test_long_identifiers_keep_a_bounded_key() -> None:
    wide = "\U0001F600" * 200  # 800 UTF-8 bytes per field, 200 characters (the limit)
    classic = {"eventNotifications": [{"realmId": wide, "dataChangeEvent": {"entities": [
        {"name": wide, "id": wide, "operation": "Update", "lastUpdated": "2025-01-01T00:00:00Z"}]}}]}
    (event,) = parse_events(body(classic))
    assert event.dedupe_key.startswith("classic:sha256:") and len(event.dedupe_key) < 100
    (other,) = parse_events(body(classic).replace(b"Update", b"Delete"))
    assert other.dedupe_key != event.dedupe_key
    with pytest.raises(MalformedPayload, match="longer than 200"):
        parse_events(body(classic).replace(b'"id": "', b'"id": "x'))


# --------------------------------------------------------------------------------------------
# wrong shapes

@pytest.mark.parametrize("raw", [
    b"", b"not json", b"\xff\xfe{}", b"42", b'"text"', b"null", b"{}", b'{"eventNotification": []}',
    b'{"eventNotifications": {}}', b'{"eventNotifications": [1]}',
    b'{"eventNotifications": [{"dataChangeEvent": {"entities": []}}]}',
    b'{"eventNotifications": [{"realmId": 5, "dataChangeEvent": {"entities": []}}]}',
    b'{"eventNotifications": [{"realmId": "1"}]}',
    b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Customer", "operation": "Create"}]}}]}',
    b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Customer", "id": "1", "operation": "Create", "lastUpdated": 7}]}}]}',
    b'[1]', b'[{"id": "x"}]', b'[{"id": "x", "type": "customer.created", "intuitaccountid": "1", "intuitentityid": "2"}]',
    b'[{"id": "x", "type": "qbo.customer.created.v1", "intuitentityid": "2"}]',
    b'[{"id": "x", "type": "qbo.customer.created.v1", "intuitaccountid": "1", "intuitentityid": "2", "data": []}]',
    b'[{"id": "x", "type": "qbo.customer.created.v1", "intuitaccountid": "1", "intuitentityid": "2", "time": "soon"}]',
    b'[{"id": "", "type": "qbo.customer.created.v1", "intuitaccountid": "1", "intuitentityid": "2"}]',
    b'[{"id": "x\\u0000", "type": "qbo.customer.created.v1", "intuitaccountid": "1", "intuitentityid": "2"}]',
    b'[{"id": "\\ud800", "type": "qbo.customer.created.v1", "intuitaccountid": "1", "intuitentityid": "2"}]',
    b'[NaN]', b'[1e999]', b"[" * 50000 + b"]" * 50000, b"[" + b"1" * 5000 + b"]",
])
def test_wrong_shapes_raise_one_line_reason(raw: bytes) -> None:
    with pytest.raises(MalformedPayload) as info:
        parse_events(raw)
    reason = str(info.value)
    assert reason and "\n" not in reason and len(reason) < 300


def test_empty_batches_are_valid_and_empty() -> None:
    assert parse_events(b"[]") == []
    assert parse_events(b'{"eventNotifications": []}') == []


# --------------------------------------------------------------------------------------------
# storing

def inbox_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT dedupe_key, format, event_id, realm_id, entity, entity_id, operation, occurred_at,"
        " deleted_id, payload, status FROM quickbooks.webhook_inbox ORDER BY id").fetchall()


def add_token(conn: psycopg.Connection, realm: str) -> None:
    conn.execute("INSERT INTO quickbooks.tokens (realm_id, refresh_token) VALUES (%s, 'r')", (realm,))


def test_store_writes_every_column_and_ignores_unsynced_entities(db) -> None:
    budget = sample("webhook_classic.json").replace(b'"name":"Vendor"', b'"name":"Budget"')
    assert budget != sample("webhook_classic.json")
    events = parse_events(budget) + parse_events(sample("webhook_cloudevents_customer_merged.json"))
    with db.transaction() as conn:
        add_token(conn, "1185883450")
        add_token(conn, "93414556*********")
        assert store_events(conn, events) == 3
    with db.transaction() as conn:
        rows = inbox_rows(conn)
        errors = conn.execute("SELECT count(*) FROM quickbooks.errors").fetchone()[0]
    assert [(r[4], r[6], r[10]) for r in rows] == [
        ("Customer", "Create", "pending"), ("Budget", "Create", "ignored"), ("Customer", "Merge", "pending")]
    merged = rows[2]
    assert merged[0] == "ce:********-****-****-****-************-Customer-123"
    assert merged[1:9] == ("cloudevents", "********-****-****-****-************-Customer-123",
                           "93414556*********", "Customer", "123", "Merge",
                           datetime(2025, 12, 4, 15, 25, 5, tzinfo=UTC), "27")
    assert merged[9]["data"] == {"deletedid": "27"}
    assert errors == 0  # both realms are known


def test_store_deduplicates_within_and_across_deliveries(db) -> None:
    events = parse_events(sample("webhook_cloudevents_dotnet_sdk_test.json"))
    with db.transaction() as conn:
        assert store_events(conn, events + events) == 1
    with db.transaction() as conn:
        assert store_events(conn, events) == 0
        assert len(inbox_rows(conn)) == 1


def test_store_reports_each_unknown_realm_once_per_delivery(db) -> None:
    events = parse_events(body([ce("qbo.customer.created.v1", id_=f"e{i}", realm=realm)
                                for i, realm in enumerate(["known", "lost1", "lost1", "lost2"])]))
    with db.transaction() as conn:
        add_token(conn, "known")
        assert store_events(conn, events) == 4
    with db.transaction() as conn:
        errors = conn.execute("SELECT service, realm_id, message FROM quickbooks.errors ORDER BY realm_id").fetchall()
        statuses = {r[0] for r in conn.execute("SELECT status FROM quickbooks.webhook_inbox")}
    assert [(s, r) for s, r, _ in errors] == [("webhook", "lost1"), ("webhook", "lost2")]
    assert "2 in this delivery" in errors[0][2]
    assert statuses == {"pending"}


def test_store_is_part_of_the_callers_transaction(db) -> None:
    events = parse_events(sample("webhook_classic.json"))
    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            assert store_events(conn, events) == 2
            raise RuntimeError("caller fails after storing")
    with db.transaction() as conn:
        assert inbox_rows(conn) == []
        assert conn.execute("SELECT count(*) FROM quickbooks.errors").fetchone()[0] == 0
