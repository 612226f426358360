"""The emulator's ledger (SPEC section 14) over real HTTP: every entity of SPEC section 10 served
in the recorded samples' shape, books that balance, mutations of the new entities in CDC and in
signed webhooks, Intuit's CDC limits, deterministic generation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections import defaultdict
from decimal import Decimal

import pytest
import requests
from support.samples import SAMPLES
from support.webhooks import WebhookSink

from services.emulator import EMULATOR_VERIFIER_TOKEN
from services.emulator.admin import EmulatorAdminError
from services.emulator.books import postings
from services.emulator.data import generate_company
from services.emulator.jsontext import dumps, fmt_ts, parse_ts

DAY = 86400
ZERO = Decimal("0.00")
NAME_LISTS = ("Account", "Vendor", "Employee", "Class", "Department", "Term", "PaymentMethod", "TaxCode", "TaxRate")
NEW = (*NAME_LISTS, "TaxAgency", "Payment", "SalesReceipt", "CreditMemo", "RefundReceipt", "Deposit", "Transfer",
       "Bill", "BillPayment", "Purchase", "VendorCredit", "JournalEntry", "PurchaseOrder", "TimeActivity")
EVERY = ("Customer", "Item", "Invoice", "Estimate", *NEW)
# entity: (sample file, keys only some objects carry, whether the sample's key order is QBO's)
SHAPES = {
    "Account": ("account.json", {"ParentRef"}, True),
    "Vendor": ("vendor.json", {"AcctNum", "CompanyName", "TermRef"}, True),
    "Employee": ("employee.json", set(), True),
    "Class": ("class_docs_example.json", set(), True),
    "Department": ("department_docs_example.json", set(), True),
    "Term": ("term.json", set(), True),
    "PaymentMethod": ("paymentmethod.json", set(), True),
    "TaxCode": ("taxcode.json", set(), True),
    "TaxRate": ("taxrate.json", set(), True),
    "TaxAgency": ("taxagency.json", set(), True),
    "Payment": ("payment.json", {"PaymentMethodRef", "LinkedTxn"}, True),
    "SalesReceipt": ("salesreceipt.json", set(), True),
    "CreditMemo": ("creditmemo.json", {"ShipAddr"}, True),
    "RefundReceipt": ("refundreceipt.json", set(), True),
    "Deposit": ("deposit.json", set(), True),
    "Transfer": ("transfer.json", set(), True),
    "Bill": ("bill.json", {"SalesTermRef", "LinkedTxn"}, True),
    "BillPayment": ("billpayment_check.json", {"CheckPayment"}, True),
    "Purchase": ("purchase_creditcard.json", {"EntityRef", "Credit", "PurchaseEx", "PrivateNote"}, True),
    "VendorCredit": ("vendorcredit_docs_example.json", set(), False),
    "JournalEntry": ("journalentry.json", {"PrivateNote"}, True),
    "PurchaseOrder": ("purchaseorder.json", {"LinkedTxn"}, True),
    "TimeActivity": ("timeactivity.json", {"EmployeeRef", "CustomerRef"}, True),
    "Invoice": ("invoice_with_tax_and_payments.json", {"CustomerMemo", "ShipAddr"}, True),
}
REF_KEYS = {"CustomerRef": "Customer", "VendorRef": "Vendor", "EmployeeRef": "Employee", "ItemRef": "Item",
            "ClassRef": "Class", "DepartmentRef": "Department", "SalesTermRef": "Term", "TermRef": "Term",
            "PaymentMethodRef": "PaymentMethod", "TaxRateRef": "TaxRate", "TxnTaxCodeRef": "TaxCode",
            "TaxCodeRef": "TaxCode", "AgencyRef": "TaxAgency"}


# ---- HTTP helpers ----------------------------------------------------------------------------------
def data(emulator, realm: str, access: str, path: str, **params) -> requests.Response:
    return requests.get(f"{emulator.url}/v3/company/{realm}/{path}", params={**params, "minorversion": "75"},
                        headers={"Authorization": f"Bearer {access}", "Accept": "application/json"}, timeout=60)


def parsed(resp: requests.Response) -> dict:
    return json.loads(resp.content, parse_float=Decimal)


def query(emulator, realm: str, access: str, text: str) -> dict:
    resp = data(emulator, realm, access, "query", query=text)
    assert resp.status_code == 200, resp.text
    return parsed(resp)["QueryResponse"]


def listing(emulator, realm: str, access: str, entity: str) -> list[dict]:
    """Every object of `entity`, inactive ones included, paged through the Data API."""
    out: list[dict] = []
    while True:
        page = query(emulator, realm, access, f"SELECT * FROM {entity} WHERE Active IN (true, false) "
                     f"ORDERBY Id STARTPOSITION {len(out) + 1} MAXRESULTS 1000").get(entity, [])
        out += page
        if len(page) < 1000:
            return out


def cdc(emulator, realm: str, access: str, entities: str, since: str) -> requests.Response:
    return data(emulator, realm, access, "cdc", entities=entities, changedSince=since)


def cdc_objects(resp: requests.Response) -> dict[str, list[dict]]:
    assert resp.status_code == 200, resp.text
    out: dict[str, list[dict]] = {}
    for element in parsed(resp)["CDCResponse"][0]["QueryResponse"]:
        (entity,) = [k for k in element if k not in ("startPosition", "maxResults")]
        out[entity] = element[entity]
    return out


def books(emulator, realm: str, access: str) -> dict[str, dict[str, dict]]:
    return {e: {o["Id"]: o for o in listing(emulator, realm, access, e)} for e in EVERY}


@pytest.fixture
def ledger(emulator):
    realm = emulator.admin.create_realm(customers=12, items=6, invoices=30, estimates=4, seed=1212)
    return realm, emulator.admin.issue_tokens(realm)["access_token"]


@pytest.fixture
def taxed(emulator):
    realm = emulator.admin.create_realm(customers=40, items=8, invoices=60, estimates=6, seed=31, sales_tax=True)
    return realm, emulator.admin.issue_tokens(realm)["access_token"]


# ---- the books' rules, checked from what is served ---------------------------------------------------
def refs(obj, owner: str):
    """(entity, ref) for every reference in a served object (an independent walk of the JSON)."""
    if isinstance(obj, list):
        for item in obj:
            yield from refs(item, owner)
        return
    if not isinstance(obj, dict):
        return
    for key, value in obj.items():
        if isinstance(value, dict) and "value" in value:
            if key in REF_KEYS and value["value"] not in ("TAX", "NON"):
                yield REF_KEYS[key], value
            elif key.endswith("AccountRef"):
                yield "Account", value
            elif key == "ParentRef":
                yield owner, value
            elif key == "EntityRef":
                yield value.get("type") or obj.get("Type"), value
            elif key == "Entity":  # a deposit line's Entity {"value", "type": "CUSTOMER"}
                yield value["type"].title(), value
            continue
        yield from refs(value, owner)


def linked_amounts(objects: dict[str, dict]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
    for obj in objects.values():
        for line in obj.get("Line", []):
            for link in line.get("LinkedTxn", []):
                out[(link["TxnType"], link["TxnId"])] += line["Amount"]
    return out


def assert_books_coherent(company: dict[str, dict[str, dict]]) -> None:
    """Every rule SPEC section 14 asks of the company, from the served objects alone."""
    for entity, objects in company.items():
        for obj in objects.values():
            for target, ref in refs(obj, entity):
                assert ref["value"] in company[target], f"{entity} {obj['Id']} points at a missing {target} {ref}"
    paid = linked_amounts(company["Payment"])
    settled = linked_amounts(company["BillPayment"])
    banked = linked_amounts(company["Deposit"])
    for invoice in company["Invoice"].values():
        assert invoice["Balance"] == invoice["TotalAmt"] - paid[("Invoice", invoice["Id"])], invoice["Id"]
        payments = {p["Id"] for p in company["Payment"].values()
                    if any(lt["TxnType"] == "Invoice" and lt["TxnId"] == invoice["Id"]
                           for ln in p["Line"] for lt in ln["LinkedTxn"])}
        assert {lt["TxnId"] for lt in invoice["LinkedTxn"] if lt["TxnType"] == "Payment"} == payments
    for memo in company["CreditMemo"].values():
        assert memo["RemainingCredit"] == memo["TotalAmt"] - paid[("CreditMemo", memo["Id"])]
    for bill in company["Bill"].values():
        assert bill["Balance"] == bill["TotalAmt"] - settled[("Bill", bill["Id"])], bill["Id"]
        payers = {p["Id"] for p in company["BillPayment"].values()
                  if any(lt["TxnId"] == bill["Id"] and lt["TxnType"] == "Bill" for ln in p["Line"] for lt in ln["LinkedTxn"])}
        assert {lt["TxnId"] for lt in bill.get("LinkedTxn", [])} == payers
        assert {lt["TxnType"] for lt in bill.get("LinkedTxn", [])} <= {"BillPaymentCheck"}
    for payment in company["Payment"].values():
        lines = {kind: sum((ln["Amount"] for ln in payment["Line"] if ln["LinkedTxn"][0]["TxnType"] == kind), ZERO)
                 for kind in ("Invoice", "CreditMemo")}
        assert payment["TotalAmt"] == lines["Invoice"] - lines["CreditMemo"] + payment["UnappliedAmt"]
        deposits = {lt["TxnId"] for lt in payment.get("LinkedTxn", []) if lt["TxnType"] == "Deposit"}
        assert len(deposits) == (1 if banked[("Payment", payment["Id"])] else 0)
        if deposits:
            assert company["Deposit"][deposits.pop()] and banked[("Payment", payment["Id"])] == payment["TotalAmt"]
    for deposit in company["Deposit"].values():
        cash_back = deposit.get("CashBack", {}).get("Amount", ZERO)
        assert deposit["TotalAmt"] == sum((ln["Amount"] for ln in deposit["Line"]), ZERO) - cash_back
    for entry in company["JournalEntry"].values():
        sides = defaultdict(lambda: ZERO)
        assert [ln["Id"] for ln in entry["Line"]] == [str(n) for n in range(len(entry["Line"]))]
        for line in entry["Line"]:
            assert line["Amount"] > 0
            sides[line["JournalEntryLineDetail"]["PostingType"]] += line["Amount"]
        assert sides["Debit"] == sides["Credit"] > 0, entry["Id"]
    for entity in ("Bill", "Purchase", "VendorCredit", "PurchaseOrder"):
        for doc in company[entity].values():
            assert doc["TotalAmt"] == sum((ln["Amount"] for ln in doc["Line"]), ZERO), (entity, doc["Id"])
    items = company["Item"]
    for entity, objects in company.items():
        for obj in objects.values():
            assert sum((amount for _a, amount in postings(entity, obj, items)), ZERO) == 0, (entity, obj["Id"])


def assert_balances(company: dict[str, dict[str, dict]]) -> None:
    """The generated company's roll-ups: customers, vendors, balance-sheet accounts."""
    owed: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for invoice in company["Invoice"].values():
        owed[invoice["CustomerRef"]["value"]] += invoice["Balance"]
    for payment in company["Payment"].values():
        owed[payment["CustomerRef"]["value"]] -= payment["UnappliedAmt"]
    for memo in company["CreditMemo"].values():
        owed[memo["CustomerRef"]["value"]] -= memo["RemainingCredit"]
    customers = company["Customer"]
    for customer in customers.values():
        assert customer["Balance"] == owed[customer["Id"]], customer["Id"]
        jobs = [c for c in customers.values() if c.get("ParentRef", {}).get("value") == customer["Id"]]
        assert customer["BalanceWithJobs"] == customer["Balance"] + sum((j["Balance"] for j in jobs), ZERO)
    due: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for bill in company["Bill"].values():
        due[bill["VendorRef"]["value"]] += bill["Balance"]
    for credit in company["VendorCredit"].values():
        due[credit["VendorRef"]["value"]] -= credit["Balance"]
    for vendor in company["Vendor"].values():
        assert vendor["Balance"] == due[vendor["Id"]], vendor["Id"]
    ledger: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for entity, objects in company.items():
        for obj in objects.values():
            for account, amount in postings(entity, obj, company["Item"]):
                ledger[account] += amount
    assert sum(ledger.values(), ZERO) == 0  # the trial balance balances
    accounts = company["Account"]
    for account in accounts.values():
        sign = {"Asset": 1, "Liability": -1, "Equity": -1}.get(account["Classification"], 0)
        assert account["CurrentBalance"] == sign * ledger[account["Id"]], account["Name"]
        children = [a for a in accounts.values() if a.get("ParentRef", {}).get("value") == account["Id"]]
        assert account["CurrentBalanceWithSubAccounts"] == account["CurrentBalance"] + sum(
            (c["CurrentBalanceWithSubAccounts"] for c in children), ZERO)
    assert accounts["84"]["CurrentBalance"] == sum((c["Balance"] for c in customers.values()), ZERO)
    assert accounts["33"]["CurrentBalance"] == sum((v["Balance"] for v in company["Vendor"].values()), ZERO)


# ---- every entity, its shape ------------------------------------------------------------------------------
def test_every_entity_is_listed_counted_and_read_by_id(emulator, ledger):
    realm, access = ledger
    for entity in EVERY:
        held = emulator.admin.entities(realm, entity)
        assert held, f"no {entity} in a small company"
        every = listing(emulator, realm, access, entity)
        assert every == held, entity
        active = [o for o in held if o.get("Active", True)]
        assert query(emulator, realm, access, f"SELECT COUNT(*) FROM {entity}") == {"totalCount": len(active)}
        plain = query(emulator, realm, access, f"select * from {entity} maxresults 1000").get(entity, [])
        assert [o["Id"] for o in plain] == [o["Id"] for o in active], entity
        one = data(emulator, realm, access, f"{entity.lower()}/{held[-1]['Id']}")
        assert one.status_code == 200 and parsed(one)[entity] == held[-1], entity
        newest = max(parse_ts(o["MetaData"]["LastUpdatedTime"]) for o in held)
        since = query(emulator, realm, access, f"SELECT * FROM {entity} WHERE MetaData.LastUpdatedTime >= "
                      f"'{fmt_ts(newest)}' AND Active IN (true,false)")
        assert [o["Id"] for o in since[entity]] == [o["Id"] for o in held
                                                    if parse_ts(o["MetaData"]["LastUpdatedTime"]) == newest]
        page = query(emulator, realm, access, f"SELECT * FROM {entity} WHERE Active IN (true,false) "
                     "ORDERBY Id DESC STARTPOSITION 2 MAXRESULTS 1")
        assert len(held) < 2 or [o["Id"] for o in page[entity]] == [held[-2]["Id"]]
    for name_list in NAME_LISTS:  # each has an inactive row hidden from plain queries
        assert any(not o["Active"] for o in emulator.admin.entities(realm, name_list)), name_list


def unwrap(sample: dict, entity: str) -> dict:
    if entity in sample:
        return sample[entity]
    if "QueryResponse" in sample:
        return sample["QueryResponse"][entity][0]
    return sample


def assert_shape(entity: str, sample: dict, served: list[dict], optional: set[str], ordered: bool) -> None:
    """Every served object has the sample's keys (but `optional`) in the sample's order, nested
    objects with the sample's keys (addresses their Id and first line); every line kind of the
    sample has a served line with its keys."""
    keys = [k for k in sample if k not in optional]
    for obj in served:
        assert set(keys) <= set(obj), (entity, obj["Id"], set(keys) - set(obj))
        if ordered:
            assert [k for k in obj if k in sample] == [k for k in sample if k in obj], (entity, obj["Id"])
        for key in keys:
            if key in ("BillAddr", "ShipAddr", "VendorAddr"):  # street or formatted lines: both are QBO's
                assert {"Id", "Line1"} <= set(obj[key]), (entity, key, obj[key])
            elif isinstance(sample[key], dict):
                assert set(sample[key]) <= set(obj[key]), (entity, key, obj[key])
    for line in sample.get("Line", []):
        kind = line.get("DetailType")
        matches = [ln for obj in served for ln in obj.get("Line", []) if ln.get("DetailType") == kind
                   and set(line) - {"Description", "ProjectRef"} <= set(ln)]
        assert matches, (entity, kind, line)
        if kind in line:
            wanted = set(line[kind]) - {"CustomerRef", "ProjectRef", "Entity"}
            assert any(wanted <= set(ln[kind]) for ln in matches), (entity, kind, wanted)


def test_objects_have_the_recorded_samples_shape(emulator, ledger, taxed):
    realm, _access = ledger
    taxed_realm, _access = taxed
    for entity, (name, optional, ordered) in SHAPES.items():
        sample = unwrap(json.loads((SAMPLES / name).read_text(), parse_float=Decimal), entity)
        served = emulator.admin.entities(taxed_realm if entity == "Invoice" else realm, entity)
        if entity == "Invoice":  # a taxed, partly paid invoice like the recorded one
            served = [i for i in served if "TaxLine" in i["TxnTaxDetail"] and i["LinkedTxn"]][:5]
        if entity == "TimeActivity":
            served = [t for t in served if t["NameOf"] == "Employee"]
        assert served, entity
        assert_shape(entity, sample, served, optional, ordered)
    customers = emulator.admin.entities(realm, "Customer")
    jobs = [c for c in customers if c["Job"]]
    sample = json.loads((SAMPLES / "customer_job.json").read_text(), parse_float=Decimal)
    assert_shape("Customer", sample, jobs, {"Mobile", "Fax", "WebAddr", "CompanyName"}, True)
    by_id = {c["Id"]: c for c in customers}
    for job in jobs:
        parent = by_id[job["ParentRef"]["value"]]
        assert job["ParentRef"] == {"value": parent["Id"]} and job["Level"] == 1 and "Level" not in parent
        assert job["FullyQualifiedName"] == f"{parent['FullyQualifiedName']}:{job['DisplayName']}"
    sub = next(a for a in emulator.admin.entities(realm, "Account") if a["Name"] == "Decks and Patios")
    assert sub["SubAccount"] is True and sub["FullyQualifiedName"] == "Job Expenses:Job Materials:Decks and Patios"
    assert sub["Classification"] == "Expense" and sub["AccountType"] == "Expense"
    gone = next(a for a in emulator.admin.entities(realm, "Account") if not a["Active"])
    assert gone["Name"].endswith(" (deleted)") and gone["FullyQualifiedName"] == gone["Name"]
    kinds = {p["PaymentType"] for p in emulator.admin.entities(realm, "Purchase")}
    assert kinds == {"Cash", "Check", "CreditCard"}
    assert any(p.get("Credit") for p in emulator.admin.entities(realm, "Purchase"))
    assert {b["PayType"] for b in emulator.admin.entities(realm, "BillPayment")} == {"Check", "CreditCard"}
    assert {v["Vendor1099"] for v in emulator.admin.entities(realm, "Vendor")} == {True, False}
    assert {c["SubClass"] for c in emulator.admin.entities(realm, "Class")} == {True, False}


def test_money_has_two_places_everywhere(emulator, taxed):
    realm, access = taxed
    for entity in NEW + ("Invoice",):
        raw = data(emulator, realm, access, "query", query=f"SELECT * FROM {entity} MAXRESULTS 1000").text
        amounts = re.findall(r'"(?:Amount|TotalAmt|Balance|UnitPrice|UnappliedAmt|RemainingCredit|TotalTax|'
                             r'CurrentBalance|HourlyRate|NetAmountTaxable)":(-?[0-9.eE+]+)', raw)
        assert all(re.fullmatch(r"-?\d+\.\d\d", a) for a in amounts), entity


# ---- the books ------------------------------------------------------------------------------------
def test_the_generated_books_balance(emulator, ledger):
    realm, access = ledger
    company = books(emulator, realm, access)
    assert_books_coherent(company)
    assert_balances(company)
    invoices = [i for i in company["Invoice"].values() if i.get("PrivateNote") != "Voided"]
    assert {"paid", "partly", "open"} == {"paid" if i["Balance"] == 0 else "open" if i["Balance"] == i["TotalAmt"]
                                         else "partly" for i in invoices}
    deposits = company["Deposit"].values()
    assert any(d.get("CashBack") for d in deposits)
    assert any(ln.get("DetailType") == "DepositLineDetail" for d in deposits for ln in d["Line"])  # a direct one
    assert any(ln.get("LinkedTxn") for d in deposits for ln in d["Line"])
    assert {p["POStatus"] for p in company["PurchaseOrder"].values()} == {"Open", "Closed"}
    assert {t["NameOf"] for t in company["TimeActivity"].values()} <= {"Employee", "Vendor"}
    assert any(d.get("ClassRef") for d in company["Invoice"].values())
    assert any(d.get("DepartmentRef") for d in company["Invoice"].values())
    assert any(c.get("Job") for c in company["Customer"].values())


def test_sales_tax_lines_add_up(emulator, taxed):
    realm, access = taxed
    company = books(emulator, realm, access)
    assert_books_coherent(company)
    assert_balances(company)
    rates = {r["Id"]: r for r in company["TaxRate"].values()}
    taxed_docs = 0
    for entity in ("Invoice", "Estimate", "SalesReceipt", "CreditMemo", "RefundReceipt"):
        for doc in company[entity].values():
            detail = doc["TxnTaxDetail"]
            items = [ln for ln in doc["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
            subtotal = sum((ln["Amount"] for ln in items), ZERO)
            discount = sum((ln["Amount"] for ln in doc["Line"] if ln["DetailType"] == "DiscountLineDetail"), ZERO)
            assert doc["TotalAmt"] == subtotal - discount + detail["TotalTax"], (entity, doc["Id"])
            if "TaxLine" not in detail:
                continue
            taxed_docs += 1
            taxable = sum((ln["Amount"] for ln in items if ln["SalesItemLineDetail"]["TaxCodeRef"]["value"] == "TAX"),
                          ZERO)
            assert detail["TotalTax"] == sum((t["Amount"] for t in detail["TaxLine"]), ZERO)
            for line in detail["TaxLine"]:
                tax = line["TaxLineDetail"]
                assert tax["NetAmountTaxable"] == taxable and Decimal(str(tax["TaxPercent"])) == \
                    Decimal(str(rates[tax["TaxRateRef"]["value"]]["RateValue"]))
                assert line["Amount"] == (taxable * Decimal(str(tax["TaxPercent"])) / 100).quantize(
                    Decimal("0.01"), rounding="ROUND_HALF_UP")
    assert taxed_docs >= 10
    assert company["Account"]["89"]["CurrentBalance"] > 0  # Sales Tax Payable


# ---- mutations: coherence, CDC, webhooks --------------------------------------------------------------
def test_every_kind_of_mutation_keeps_the_books_coherent(emulator, ledger):
    realm, access = ledger
    admin = emulator.admin

    def live(entity: str, active: bool = False) -> list[dict]:
        return [o for o in admin.entities(realm, entity) if o.get("Active", True) or not active]

    for entity in NEW:
        created = admin.mutate(realm, entity, "create")
        assert created["SyncToken"] == "0" and created in admin.entities(realm, entity)
        before = live(entity)[0]
        updated = admin.mutate(realm, entity, "update", id=before["Id"])
        assert updated["SyncToken"] == str(int(before["SyncToken"]) + 1) and updated != before
    for entity in ("Payment", "SalesReceipt", "BillPayment", "CreditMemo", "Purchase", "RefundReceipt", "Transfer"):
        voided = admin.mutate(realm, entity, "void", id=live(entity)[0]["Id"])
        assert voided["PrivateNote"].startswith("Voided") and voided.get("TotalAmt", voided.get("Amount")) == 0
    for entity in ("Invoice", "CreditMemo", "Bill", "Payment", "Deposit", "JournalEntry", "TimeActivity",
                   "VendorCredit", "PurchaseOrder", "Transfer", "BillPayment", "SalesReceipt"):
        marker = admin.mutate(realm, entity, "delete", id=live(entity)[-1]["Id"])
        assert marker["status"] == "Deleted"
    for entity in ("Vendor", "Employee", "Account", "Class", "Department", "Term", "PaymentMethod", "TaxCode"):
        target = live(entity, active=True)[-1]
        inactive = admin.mutate(realm, entity, "inactivate", id=target["Id"])
        name = inactive.get("DisplayName") or inactive["Name"]
        assert inactive["Active"] is False and name.endswith(" (deleted)")
    for entity in ("Vendor", "Account", "Class", "Employee"):
        keep, gone = live(entity, active=True)[:2]
        survivor = admin.mutate(realm, entity, "merge", id=gone["Id"], merge_into=keep["Id"])
        assert survivor["Id"] == keep["Id"] and gone["Id"] not in {o["Id"] for o in admin.entities(realm, entity)}
    company = books(emulator, realm, access)
    assert_books_coherent(company)
    with pytest.raises(EmulatorAdminError, match="cannot be deleted"):
        admin.mutate(realm, "Vendor", "delete", id=live("Vendor")[0]["Id"])
    with pytest.raises(EmulatorAdminError, match="cannot be voided"):
        admin.mutate(realm, "Bill", "void", id=live("Bill")[0]["Id"])
    with pytest.raises(EmulatorAdminError, match="cannot be merged"):
        admin.mutate(realm, "Department", "merge", id="1", merge_into="2")
    accounts = {a["AccountType"]: a["Id"] for a in live("Account", active=True)}
    with pytest.raises(EmulatorAdminError, match="different types"):
        admin.mutate(realm, "Account", "merge", id=accounts["Bank"], merge_into=accounts["Expense"])


def test_a_payment_applies_to_an_invoice_and_a_void_gives_it_back(emulator, ledger):
    realm, access = ledger
    admin = emulator.admin
    since = fmt_ts(admin.now() - 1)
    payment = admin.mutate(realm, "Payment", "create")
    ((link,),) = [ln["LinkedTxn"] for ln in payment["Line"]]
    assert link["TxnType"] == "Invoice" and payment["UnappliedAmt"] == 0
    invoice = parsed(data(emulator, realm, access, f"invoice/{link['TxnId']}"))["Invoice"]
    assert invoice["Balance"] == 0 and invoice["LinkedTxn"][0] == {"TxnId": payment["Id"], "TxnType": "Payment"}
    changed = cdc_objects(cdc(emulator, realm, access, "Payment,Invoice", since))
    assert [p["Id"] for p in changed["Payment"]] == [payment["Id"]]
    assert [i["Id"] for i in changed["Invoice"]] == [invoice["Id"]] and changed["Invoice"][0] == invoice
    admin.mutate(realm, "Payment", "void", id=payment["Id"])
    restored = parsed(data(emulator, realm, access, f"invoice/{invoice['Id']}"))["Invoice"]
    assert restored["Balance"] == payment["TotalAmt"] and payment["Id"] not in {
        lt["TxnId"] for lt in restored["LinkedTxn"]}
    # deleting a paid bill leaves its bill payment's money unapplied, the bill a tombstone
    bill = next(b for b in admin.entities(realm, "Bill") if b["Balance"] < b["TotalAmt"])
    payer = next(p for p in admin.entities(realm, "BillPayment")
                 if {"TxnId": bill["Id"], "TxnType": "Bill"} in [lt for ln in p["Line"] for lt in ln["LinkedTxn"]])
    admin.mutate(realm, "Bill", "delete", id=bill["Id"])
    after = parsed(data(emulator, realm, access, f"billpayment/{payer['Id']}"))["BillPayment"]
    assert ("Bill", bill["Id"]) not in {(lt["TxnType"], lt["TxnId"]) for ln in after["Line"] for lt in ln["LinkedTxn"]}
    assert after["SyncToken"] == str(int(payer["SyncToken"]) + 1)
    assert_books_coherent(books(emulator, realm, access))


def test_deletes_and_merges_of_new_entities_are_cdc_tombstones(emulator, ledger):
    realm, access = ledger
    admin = emulator.admin
    since = fmt_ts(admin.now() - 1)
    journal = admin.entities(realm, "JournalEntry")[-1]
    admin.mutate(realm, "JournalEntry", "delete", id=journal["Id"])
    vendors = [v for v in admin.entities(realm, "Vendor") if v["Active"]]
    billed = {b["VendorRef"]["value"] for b in admin.entities(realm, "Bill")}
    gone = next(v for v in vendors[1:] if v["Id"] in billed)
    survivor = admin.mutate(realm, "Vendor", "merge", id=gone["Id"], merge_into=vendors[0]["Id"])
    assert survivor["Balance"] == vendors[0]["Balance"] + gone["Balance"]
    deposit = admin.entities(realm, "Deposit")[-1]
    admin.mutate(realm, "Deposit", "delete", id=deposit["Id"])
    objects = cdc_objects(cdc(emulator, realm, access, "JournalEntry,Vendor,Bill,Deposit,Payment", since))
    assert objects["JournalEntry"] == [{"domain": "QBO", "status": "Deleted", "Id": journal["Id"],
                                        "MetaData": objects["JournalEntry"][0]["MetaData"]}]
    vendors_seen = {v["Id"]: v for v in objects["Vendor"]}
    assert vendors_seen[gone["Id"]]["status"] == "Deleted" and set(vendors_seen[gone["Id"]]) == {
        "domain", "status", "Id", "MetaData"}
    assert vendors_seen[survivor["Id"]]["SyncToken"] == survivor["SyncToken"]
    assert objects["Bill"] and all(b["VendorRef"] == {"value": survivor["Id"], "name": survivor["DisplayName"]}
                                   for b in objects["Bill"])
    assert [d["status"] for d in objects["Deposit"]] == ["Deleted"]
    banked = {lt["TxnId"] for ln in deposit["Line"] for lt in ln.get("LinkedTxn", []) if lt["TxnType"] == "Payment"}
    assert banked <= {p["Id"] for p in objects.get("Payment", [])}  # no longer marked deposited
    for payment in objects.get("Payment", []):
        assert deposit["Id"] not in {lt["TxnId"] for lt in payment.get("LinkedTxn", [])}
    assert data(emulator, realm, access, f"vendor/{gone['Id']}").status_code == 400
    assert data(emulator, realm, access, f"journalentry/{journal['Id']}").status_code == 400
    tombstones = [v for v in admin.entities(realm, "Vendor", include_deleted=True) if v.get("status")]
    assert [v["Id"] for v in tombstones] == [gone["Id"]]


@pytest.fixture
def receiver():
    rec = WebhookSink()
    try:
        yield rec
    finally:
        rec.stop()


def signed(body: bytes, headers: dict[str, str]) -> bool:
    digest = hmac.new(EMULATOR_VERIFIER_TOKEN.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(headers["intuit-signature"], base64.b64encode(digest).decode())


@pytest.mark.parametrize("fmt", ["cloudevents", "classic"])
def test_mutations_of_new_entities_are_signed_webhooks(emulator, ledger, receiver, fmt):
    realm, _access = ledger
    admin = emulator.admin
    admin.configure(webhook_url=receiver.url, webhook_format=fmt)
    payment = admin.mutate(realm, "Payment", "create")
    bill_payment = admin.entities(realm, "BillPayment")[0]
    admin.mutate(realm, "BillPayment", "void", id=bill_payment["Id"])
    vendors = [v for v in admin.entities(realm, "Vendor") if v["Active"]]
    admin.mutate(realm, "Vendor", "merge", id=vendors[1]["Id"], merge_into=vendors[0]["Id"])
    account = [a for a in admin.entities(realm, "Account") if a["Active"]][-1]
    admin.mutate(realm, "Account", "inactivate", id=account["Id"])
    activity = admin.entities(realm, "TimeActivity")[0]
    admin.mutate(realm, "TimeActivity", "delete", id=activity["Id"])
    admin.mutate(realm, "TaxRate", "update", id="1")  # Intuit sends none for TaxCode and TaxRate
    admin.mutate(realm, "TaxCode", "inactivate", id="2")
    term = admin.mutate(realm, "Term", "create")
    deliveries = admin.wait_webhooks()
    assert len(deliveries) == 6 and all(d["delivered"] for d in deliveries)
    assert len(receiver.posts) == 6 and all(signed(body, headers) for body, headers in receiver.posts)
    got = []
    for body, _headers in receiver.posts:
        payload = json.loads(body)
        if fmt == "cloudevents":
            (event,) = payload
            assert event["intuitaccountid"] == realm
            got.append((event["type"], event["intuitentityid"], event["data"].get("deletedid")))
        else:
            (entity,) = payload["eventNotifications"][0]["dataChangeEvent"]["entities"]
            got.append((entity["name"], entity["id"], entity["operation"], entity.get("deletedId")))
    if fmt == "cloudevents":
        assert got == [("qbo.payment.created.v1", payment["Id"], None),
                       ("qbo.billpayment.voided.v1", bill_payment["Id"], None),
                       ("qbo.vendor.merged.v1", vendors[0]["Id"], vendors[1]["Id"]),
                       ("qbo.account.updated.v1", account["Id"], None),
                       ("qbo.timeactivity.deleted.v1", activity["Id"], None),
                       ("qbo.term.created.v1", term["Id"], None)]
    else:
        assert got == [("Payment", payment["Id"], "Create", None), ("BillPayment", bill_payment["Id"], "Void", None),
                       ("Vendor", vendors[0]["Id"], "Merge", vendors[1]["Id"]),
                       ("Account", account["Id"], "Update", None), ("TimeActivity", activity["Id"], "Delete", None),
                       ("Term", term["Id"], "Create", None)]


# ---- Intuit's CDC limits --------------------------------------------------------------------------------
def test_cdc_refuses_the_entities_intuit_does_not_cover(emulator, ledger):
    realm, access = ledger
    since = fmt_ts(emulator.admin.now() - DAY)
    for entities in ("TimeActivity", "Invoice,timeactivity", "TaxCode", "TaxRate", "TaxAgency", "JournalCode"):
        resp = cdc(emulator, realm, access, entities, since)
        assert resp.status_code == 400, entities
        fault = resp.json()["Fault"]
        (error,) = fault["Error"]
        named = entities.split(",")[-1].lower()
        assert fault["type"] == "ValidationFault" and error["code"] == "2010" and error["element"] == "entities"
        assert named in error["Detail"].lower() and "not supported by change data capture" in error["Detail"]
    emulator.admin.mutate(realm, "TimeActivity", "update", id="1")
    resp = query(emulator, realm, access, "SELECT * FROM TimeActivity WHERE MetaData.LastUpdatedTime >= "
                 f"'{fmt_ts(emulator.admin.now() - 60)}'")  # what a sync does instead
    assert [t["Id"] for t in resp["TimeActivity"]] == ["1"]


def test_the_cdc_cap_is_shared_by_the_new_entities(emulator):
    admin = emulator.admin
    realm = admin.create_realm(customers=30, items=6, invoices=700, estimates=0, seed=8)
    access = admin.issue_tokens(realm)["access_token"]
    wanted = ("Payment", "Bill", "Purchase", "Vendor", "Account")
    start = admin.now() - 29 * DAY
    since = fmt_ts(start)
    every = [o for e in wanted for o in admin.entities(realm, e, include_deleted=True)
             if parse_ts(o["MetaData"]["LastUpdatedTime"]) >= start]
    assert len(every) > 1000
    objects = cdc_objects(cdc(emulator, realm, access, ",".join(wanted), since))
    assert list(objects) == [e for e in wanted if e in objects] and sum(len(v) for v in objects.values()) == 1000
    kept = max(parse_ts(o["MetaData"]["LastUpdatedTime"]) for v in objects.values() for o in v)
    dropped = sorted(parse_ts(o["MetaData"]["LastUpdatedTime"]) for o in every)[1000:]
    assert kept <= min(dropped)  # the oldest 1,000 across the entities are the ones kept
    alone = cdc_objects(cdc(emulator, realm, access, "Bill", since))
    assert len(alone["Bill"]) == len(admin.entities(realm, "Bill"))


# ---- generation -------------------------------------------------------------------------------------------
def test_a_big_company_is_the_same_for_the_same_seed():
    now = 1_795_000_000.0

    def company(seed: int) -> list[str]:
        return [dumps([e, o, c, u]) for e, o, c, u in generate_company(
            seed, now=now, customers=600, items=60, invoices=5000, estimates=300)]

    started = time.monotonic()
    first = company(42)
    assert time.monotonic() - started < 30
    counts = defaultdict(int)
    for text in first:
        counts[json.loads(text)[0]] += 1
    assert counts["Invoice"] == 5000 and counts["Payment"] == 4000 and counts["Bill"] == 2000
    assert counts["BillPayment"] == 1500 and counts["Purchase"] == 2000 and counts["JournalEntry"] == 500
    assert company(42) == first  # byte for byte, times included
    assert company(43) != first


def test_sizes_are_per_entity_and_may_be_zero(emulator):
    admin = emulator.admin
    realm = admin.create_realm(customers=5, items=3, invoices=10, estimates=0, seed=2,
                               sizes={"Payment": 0, "Bill": 7, "Deposit": 0, "Vendor": 6})
    assert admin.entities(realm, "Payment") == [] and admin.entities(realm, "Deposit") == []
    assert len(admin.entities(realm, "Bill")) == 7 and len(admin.entities(realm, "Vendor")) == 6
    assert all(i["Balance"] == i["TotalAmt"] for i in admin.entities(realm, "Invoice"))
    empty = admin.create_realm(customers=0, items=0, invoices=0, estimates=0)
    assert admin.entities(empty, "Account") and admin.entities(empty, "Payment") == []
    with pytest.raises(EmulatorAdminError, match="unknown size"):
        admin.create_realm(customers=1, items=1, invoices=1, estimates=0, sizes={"Widget": 3})
    with pytest.raises(EmulatorAdminError, match="whole number"):
        admin.create_realm(customers=1, items=1, invoices=1, estimates=0, sizes={"Payment": -1})
