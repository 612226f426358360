"""The QBO emulator's changes over real HTTP: mutations, CDC, signed webhooks, generated data, CLI."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from support.webhooks import WebhookSink

from services.emulator import EMULATOR_VERIFIER_TOKEN
from services.emulator.admin import EmulatorAdminError
from services.emulator.data import SPECIAL_CUSTOMER_NAMES, generate_company
from services.emulator.jsontext import dumps, fmt_ts, parse_ts

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400


def cdc(emulator, realm: str, access: str, entities: str, since: str) -> dict:
    resp = requests.get(f"{emulator.url}/v3/company/{realm}/cdc",
                        params={"entities": entities, "changedSince": since, "minorversion": "75"},
                        headers={"Authorization": f"Bearer {access}", "Accept": "application/json"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return json.loads(resp.content, parse_float=Decimal)


def cdc_objects(body: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for element in body["CDCResponse"][0]["QueryResponse"]:
        (entity,) = [k for k in element if k not in ("startPosition", "maxResults")]
        assert element["startPosition"] == 1 and element["maxResults"] == len(element[entity])
        out[entity] = element[entity]
    return out


def read(emulator, realm: str, access: str, path: str) -> requests.Response:
    return requests.get(f"{emulator.url}/v3/company/{realm}/{path}", params={"minorversion": "75"},
                        headers={"Authorization": f"Bearer {access}", "Accept": "application/json"}, timeout=10)


@pytest.fixture
def realm(emulator):
    realm_id = emulator.admin.create_realm(customers=30, items=8, invoices=25, estimates=6, seed=21)
    return realm_id, emulator.admin.issue_tokens(realm_id)["access_token"]


# ---- mutations and CDC --------------------------------------------------------------------------
def test_each_mutation_kind(emulator, realm):
    realm_id, access = realm
    admin = emulator.admin
    created = admin.mutate(realm_id, "Customer", "create", fields={"DisplayName": "Ünïcode & Sons'"})
    assert created["DisplayName"] == "Ünïcode & Sons'" and created["SyncToken"] == "0"
    assert created["Id"] == "31" and created["Active"] is True
    assert read(emulator, realm_id, access, "customer/31").json()["Customer"]["DisplayName"] == "Ünïcode & Sons'"

    before = admin.entities(realm_id, "Item")[0]
    item = admin.mutate(realm_id, "Item", "update", id=before["Id"])
    assert item["UnitPrice"] == before["UnitPrice"] + Decimal("1.00")
    assert item["SyncToken"] == str(int(before["SyncToken"]) + 1)
    assert parse_ts(item["MetaData"]["LastUpdatedTime"]) > parse_ts(before["MetaData"]["LastUpdatedTime"])

    invoice = next(i for i in admin.entities(realm_id, "Invoice") if i["TotalAmt"] > 0)
    updated = admin.mutate(realm_id, "Invoice", "update", id=invoice["Id"])
    assert updated["TotalAmt"] > invoice["TotalAmt"]
    assert_totals_consistent(updated)

    voided = admin.mutate(realm_id, "Invoice", "void", id=invoice["Id"])
    assert voided["TotalAmt"] == 0 and voided["Balance"] == 0 and voided["PrivateNote"] == "Voided"
    assert all(line["Amount"] == 0 for line in voided["Line"])
    assert voided["SyncToken"] == str(int(updated["SyncToken"]) + 1)

    marker = admin.mutate(realm_id, "Estimate", "delete", id="2")
    assert marker["status"] == "Deleted" and marker["Id"] == "2" and marker["domain"] == "QBO"
    assert read(emulator, realm_id, access, "estimate/2").json()["Fault"]["Error"][0]["code"] == "610"
    with pytest.raises(EmulatorAdminError, match="cannot be deleted"):
        admin.mutate(realm_id, "Customer", "delete", id="3")

    inactive = admin.mutate(realm_id, "Item", "inactivate", id=before["Id"])
    assert inactive["Active"] is False and read(emulator, realm_id, access, f"item/{before['Id']}").status_code == 200

    customers = {c["Id"]: c for c in admin.entities(realm_id, "Customer")}
    owned = [i for i in admin.entities(realm_id, "Invoice") if i["CustomerRef"]["value"] != "5"]
    loser_id = owned[0]["CustomerRef"]["value"]
    survivor = admin.mutate(realm_id, "Customer", "merge", id=loser_id, merge_into="5")
    assert survivor["Id"] == "5" and survivor["SyncToken"] == str(int(customers["5"]["SyncToken"]) + 1)
    assert survivor["Balance"] == customers["5"]["Balance"] + customers[loser_id]["Balance"]
    assert read(emulator, realm_id, access, f"customer/{loser_id}").status_code == 400
    moved = [i for i in admin.entities(realm_id, "Invoice") if i["Id"] == owned[0]["Id"]][0]
    assert moved["CustomerRef"] == {"value": "5", "name": customers["5"]["DisplayName"]}
    deleted = [c for c in admin.entities(realm_id, "Customer", include_deleted=True) if c.get("status")]
    assert [c["Id"] for c in deleted] == [loser_id]


def assert_totals_consistent(doc: dict) -> None:
    items = [ln for ln in doc["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
    subtotal = sum((ln["Amount"] for ln in items), Decimal("0"))
    for ln in items:
        detail = ln["SalesItemLineDetail"]
        assert ln["Amount"] == detail["UnitPrice"] * detail["Qty"]
    sub_line = [ln for ln in doc["Line"] if ln["DetailType"] == "SubTotalLineDetail"]
    assert len(sub_line) == 1 and sub_line[0]["Amount"] == subtotal and "Id" not in sub_line[0]
    discount = sum((ln["Amount"] for ln in doc["Line"] if ln["DetailType"] == "DiscountLineDetail"), Decimal("0"))
    assert doc["TotalAmt"] == subtotal - discount


def test_cdc_returns_changes_with_deleted_markers(emulator, realm):
    realm_id, access = realm
    admin = emulator.admin
    start = admin.now()
    since = fmt_ts(start - 1)
    assert cdc(emulator, realm_id, access, "Customer,Invoice", since)["CDCResponse"] == [{"QueryResponse": []}]
    admin.mutate(realm_id, "Customer", "inactivate", id="4")
    admin.mutate(realm_id, "Invoice", "update", id="3")
    admin.mutate(realm_id, "Invoice", "delete", id="6")
    admin.mutate(realm_id, "Customer", "merge", id="7", merge_into="8")
    body = cdc(emulator, realm_id, access, "customer,Invoice,Estimate", since)
    objects = cdc_objects(body)
    assert list(objects) == ["Customer", "Invoice"]  # only entities with changes, in request order
    customers = {c["Id"]: c for c in objects["Customer"]}
    assert customers["4"]["Active"] is False and customers["4"]["DisplayName"]  # full payload, inactive
    assert customers["7"] == {"domain": "QBO", "status": "Deleted", "Id": "7",
                              "MetaData": {"LastUpdatedTime": customers["7"]["MetaData"]["LastUpdatedTime"]}}
    assert customers["8"]["SyncToken"] != "0"
    invoices = {i["Id"]: i for i in objects["Invoice"]}
    assert invoices["6"]["status"] == "Deleted" and set(invoices["6"]) == {"domain", "status", "Id", "MetaData"}
    assert invoices["3"]["Line"] and "status" not in invoices["3"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[78]:00", invoices["6"]["MetaData"]["LastUpdatedTime"])
    # every accepted spelling of changedSince: Z, +00:00 (encoded or arriving as a space), -0800
    utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start - 1))
    for spelled in (f"{utc}Z", f"{utc}+00:00", re.sub(r"([+-]\d\d):(\d\d)$", r"\1\2", since)):
        assert cdc_objects(cdc(emulator, realm_id, access, "Customer,Invoice", spelled)) == objects
    raw = requests.get(f"{emulator.url}/v3/company/{realm_id}/cdc?entities=Customer&minorversion=75"
                       f"&changedSince={utc}+00:00", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert {c["Id"] for c in cdc_objects(raw.json())["Customer"]} == set(customers)
    assert admin.request_counts(realm_id)["cdc"] == 6


def test_cdc_caps_at_1000_objects_across_entities(emulator):
    admin = emulator.admin
    realm_id = admin.create_realm(customers=300, items=5, invoices=900, estimates=0, seed=4)
    access = admin.issue_tokens(realm_id)["access_token"]
    since = fmt_ts(admin.now() - 29 * DAY)
    objects = cdc_objects(cdc(emulator, realm_id, access, "Invoice,Customer,Item", since))
    everything = [*admin.entities(realm_id, "Invoice"), *admin.entities(realm_id, "Customer"),
                  *admin.entities(realm_id, "Item")]
    assert len(everything) == 1205
    assert sum(len(v) for v in objects.values()) == 1000
    kept = [o["MetaData"]["LastUpdatedTime"] for v in objects.values() for o in v]
    dropped = sorted(o["MetaData"]["LastUpdatedTime"] for o in everything)[1000:]
    assert max(parse_ts(t) for t in kept) <= min(parse_ts(t) for t in dropped)  # the oldest 1,000 are kept
    one = cdc_objects(cdc(emulator, realm_id, access, "Item", since))
    assert len(one["Item"]) == 5  # a narrower request gets everything


def test_cdc_refuses_a_changed_since_older_than_30_days(emulator, realm):
    realm_id, access = realm
    admin = emulator.admin
    almost = fmt_ts(admin.now() - 29 * DAY)
    assert cdc_objects(cdc(emulator, realm_id, access, "Customer", almost))["Customer"]
    admin.mutate(realm_id, "Customer", "update", id="2")
    admin.advance_clock(31 * DAY)
    assert read(emulator, realm_id, access, "customer/2").status_code == 401  # an hour-long token is long gone
    access = admin.issue_tokens(realm_id)["access_token"]
    refused = requests.get(f"{emulator.url}/v3/company/{realm_id}/cdc",
                           params={"entities": "Customer,Invoice", "changedSince": almost, "minorversion": "75"},
                           headers={"Authorization": f"Bearer {access}", "Accept": "application/json"}, timeout=30)
    assert refused.status_code == 400
    (error,) = refused.json()["Fault"]["Error"]
    assert error["code"] == "2010" and "older than fixed days is not supported" in error["Detail"]
    recent = fmt_ts(admin.now() - 29 * DAY)
    assert cdc(emulator, realm_id, access, "Customer,Invoice", recent)["CDCResponse"] == [{"QueryResponse": []}]
    admin.mutate(realm_id, "Invoice", "update", id="2")
    objects = cdc_objects(cdc(emulator, realm_id, access, "Customer,Invoice", recent))
    assert list(objects) == ["Invoice"] and [i["Id"] for i in objects["Invoice"]] == ["2"]
    # the query API still sees everything: a stale cursor must re-query
    resp = requests.get(f"{emulator.url}/v3/company/{realm_id}/query",
                        params={"query": "SELECT COUNT(*) FROM Customer WHERE Active IN (true,false)",
                                "minorversion": "75"},
                        headers={"Authorization": f"Bearer {access}"},
                        timeout=10)
    assert resp.json()["QueryResponse"]["totalCount"] == 30


# ---- webhooks ---------------------------------------------------------------------------------
@pytest.fixture
def receiver():
    rec = WebhookSink(fail_first=1)
    try:
        yield rec
    finally:
        rec.stop()


def verify(body: bytes, headers: dict[str, str]) -> None:
    expected = base64.b64encode(hmac.new(EMULATOR_VERIFIER_TOKEN.encode(), body, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["intuit-signature"], expected)


def test_signed_classic_webhooks_in_order_with_retry(emulator, realm, receiver):
    realm_id, _access = realm
    admin = emulator.admin
    admin.configure(webhook_url=receiver.url, webhook_format="classic")
    admin.mutate(realm_id, "Customer", "create")
    admin.mutate(realm_id, "Customer", "merge", id="3", merge_into="9")
    admin.mutate(realm_id, "Invoice", "void", id="1")
    admin.mutate(realm_id, "Item", "inactivate", id="2")
    admin.mutate(realm_id, "Estimate", "delete", id="1")
    deliveries = admin.wait_webhooks()
    assert [d["done"] and d["delivered"] for d in deliveries] == [True] * 5
    assert deliveries[0]["attempts"] == [500, 200]  # the first post failed and was retried
    bodies = [b for b, _h in receiver.posts][1:]
    assert bodies == [d["body"].encode() for d in deliveries]
    entities = []
    for body, headers in receiver.posts:
        verify(body, headers)
        payload = json.loads(body)
        (note,) = payload["eventNotifications"]
        assert note["realmId"] == realm_id
        (entity,) = note["dataChangeEvent"]["entities"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entity["lastUpdated"])
        entities.append(entity)
    tail = [(e["name"], e["id"], e["operation"], e.get("deletedId")) for e in entities[1:]]
    assert tail == [("Customer", "31", "Create", None), ("Customer", "9", "Merge", "3"),
                    ("Invoice", "1", "Void", None), ("Item", "2", "Update", None), ("Estimate", "1", "Delete", None)]


def test_signed_cloudevents_webhooks(emulator, realm, receiver):
    realm_id, _access = realm
    admin = emulator.admin
    receiver.fail_first = 0
    admin.configure(webhook_url=receiver.url, webhook_format="cloudevents")
    admin.mutate(realm_id, "Customer", "update", id="2")
    admin.mutate(realm_id, "Customer", "merge", id="4", merge_into="5")
    admin.mutate(realm_id, "Invoice", "create")
    assert all(d["status"] == 200 for d in admin.wait_webhooks())
    events = []
    for body, headers in receiver.posts:
        verify(body, headers)
        payload = json.loads(body)
        assert isinstance(payload, list) and len(payload) == 1
        events.append(payload[0])
    assert [(e["type"], e["intuitentityid"], e["data"]) for e in events] == [
        ("qbo.customer.updated.v1", "2", {}), ("qbo.customer.merged.v1", "5", {"deletedid": "4"}),
        ("qbo.invoice.created.v1", "26", {})]
    for event in events:
        assert event["specversion"] == "1.0" and event["intuitaccountid"] == realm_id
        assert event["source"].startswith("intuit.") and event["datacontenttype"] == "application/json"
        assert re.fullmatch(r"[0-9a-f-]{36}", event["id"]) and event["time"].endswith("Z")
    assert len({e["id"] for e in events}) == 3


# ---- generated data -----------------------------------------------------------------------------
def strip_times(objs: list[dict]) -> list[dict]:
    text = json.dumps(objs, default=str, ensure_ascii=False)
    return json.loads(re.sub(r"\d{4}-\d\d-\d\d(T\d\d:\d\d:\d\d[^\"]*)?", "T", text))


def test_same_seed_same_company(emulator):
    admin = emulator.admin
    one = admin.create_realm(customers=25, items=6, invoices=20, estimates=5, seed=77)
    two = admin.create_realm(customers=25, items=6, invoices=20, estimates=5, seed=77)
    three = admin.create_realm(customers=25, items=6, invoices=20, estimates=5, seed=78)
    for entity in ("Customer", "Item", "Invoice", "Estimate"):
        assert strip_times(admin.entities(one, entity)) == strip_times(admin.entities(two, entity)), entity
    assert strip_times(admin.entities(one, "Invoice")) != strip_times(admin.entities(three, "Invoice"))
    now = 1_795_000_000.0
    first = [dumps(o) for _e, o, _c, _u in generate_company(5, now=now, customers=10, invoices=10, estimates=3)]
    again = [dumps(o) for _e, o, _c, _u in generate_company(5, now=now, customers=10, invoices=10, estimates=3)]
    assert first == again  # byte for byte, timestamps included


def test_money_is_exact_decimal_with_two_places(emulator, realm):
    realm_id, access = realm
    raw = requests.get(f"{emulator.url}/v3/company/{realm_id}/query",
                       params={"query": "SELECT * FROM Invoice MAXRESULTS 1000", "minorversion": "75"},
                       headers={"Authorization": f"Bearer {access}"}, timeout=10).text
    amounts = re.findall(r'"(?:Amount|TotalAmt|Balance|UnitPrice)":(-?[0-9.eE+]+)', raw)
    assert amounts and all(re.fullmatch(r"-?\d+\.\d\d", a) for a in amounts)
    invoices = json.loads(raw, parse_float=Decimal)["QueryResponse"]["Invoice"]
    live = [i for i in invoices if i.get("PrivateNote") != "Voided"]
    assert live and len(live) < len(invoices)  # at least one voided invoice
    for invoice in live:
        assert_totals_consistent(invoice)
        assert Decimal(0) <= invoice["Balance"] <= invoice["TotalAmt"]
        assert invoice["CurrencyRef"] == {"value": "USD", "name": "United States Dollar"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", invoice["TxnDate"]) and invoice["DueDate"] > invoice["TxnDate"]
        assert invoice["EmailStatus"] in ("NotSet", "NeedToSend", "EmailSent")
    customers = emulator.admin.entities(realm_id, "Customer")
    by_customer: dict[str, Decimal] = {}
    for invoice in invoices:
        ref = invoice["CustomerRef"]["value"]
        by_customer[ref] = by_customer.get(ref, Decimal("0")) + invoice["Balance"]
    for customer in customers:
        assert customer["Balance"] == by_customer.get(customer["Id"], Decimal("0"))
    estimates = emulator.admin.entities(realm_id, "Estimate")
    assert {e["TxnStatus"] for e in estimates} <= {"Pending", "Accepted", "Closed", "Rejected"}
    for estimate in estimates:
        assert_totals_consistent(estimate)
        assert estimate["ExpirationDate"] > estimate["TxnDate"]


def test_customer_names_are_unique_and_varied(emulator):
    admin = emulator.admin
    realm_id = admin.create_realm(customers=400, items=40, invoices=5, estimates=0, seed=3)
    customers = admin.entities(realm_id, "Customer")
    names = [c["DisplayName"] for c in customers]
    assert len(set(names)) == 400
    for wanted in ("Café Müller", "O'Brien's Plumbing", "東京商事"):
        assert wanted in names and wanted in SPECIAL_CUSTOMER_NAMES
    assert any("&" in n for n in names) and sum("'" in n for n in names) > 5
    assert 5 <= sum(not c["Active"] for c in customers) <= 45
    for customer in customers:
        assert customer["PrimaryEmailAddr"]["Address"].count("@") == 1
        assert customer["GivenName"] and customer["FamilyName"] and customer["BillAddr"]["City"]
    items = admin.entities(realm_id, "Item")
    assert {i["Type"] for i in items} == {"Service", "Inventory", "NonInventory"}
    assert all("QtyOnHand" in i for i in items if i["Type"] == "Inventory")
    assert len({i["Name"] for i in items}) == 40 and len({i["Sku"] for i in items}) == 40
    newest = max(parse_ts(o["MetaData"]["LastUpdatedTime"]) for o in customers + items)
    assert newest < admin.now() - DAY  # generated history lies well before now


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_serves_a_seeded_realm_until_sigterm():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "emulator", "--port", "0", "--seed-data",
                             "--customers", "12", "--items", "4", "--invoices", "9", "--estimates", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"emulator realm_id=(\d+) url=(http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        realm_id, url = match.groups()
        from services.emulator.admin import EmulatorAdmin

        admin = EmulatorAdmin(url)
        assert len(admin.entities(realm_id, "Invoice")) == 9
        tokens = admin.issue_tokens(realm_id)
        assert tokens["refresh_token"] not in line and tokens["access_token"] not in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
