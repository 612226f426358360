"""The ledger's entities (SPEC section 10) from Intuit's real recorded payloads into PostgreSQL.

Every recorded sample of every entity goes through both write paths of db/upserts.py (a query
page as served, and a batch as CDC or webhooks deliver it); the columns PostgreSQL extracted must
equal the declared mapping applied in Python, money Decimal-exact, lines by position, every
LinkedTxn in quickbooks.linked_txns, `raw` equal to what QBO sent.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from support.samples import SAMPLES

from db.upserts import dump_raw, newest_per_id, upsert_objects, upsert_page
from services.model.entities import ENTITIES, ENTITY_NAMES, GROUPS, get_spec, parse_time

REALM = "9130350000000077"

# SPEC section 10's table: entity -> (table, lines table)
SPEC_10 = {
    "Account": ("accounts", None), "Vendor": ("vendors", None), "Employee": ("employees", None),
    "Class": ("classes", None), "Department": ("departments", None), "Term": ("terms", None),
    "PaymentMethod": ("payment_methods", None), "TaxCode": ("tax_codes", None), "TaxRate": ("tax_rates", None),
    "TaxAgency": ("tax_agencies", None), "Payment": ("payments", "payment_line_items"),
    "SalesReceipt": ("sales_receipts", "sales_receipt_line_items"),
    "CreditMemo": ("credit_memos", "credit_memo_line_items"),
    "RefundReceipt": ("refund_receipts", "refund_receipt_line_items"),
    "Deposit": ("deposits", "deposit_line_items"), "Transfer": ("transfers", None),
    "Bill": ("bills", "bill_line_items"), "BillPayment": ("bill_payments", "bill_payment_line_items"),
    "Purchase": ("purchases", "purchase_line_items"), "VendorCredit": ("vendor_credits", "vendor_credit_line_items"),
    "JournalEntry": ("journal_entries", "journal_entry_line_items"),
    "PurchaseOrder": ("purchase_orders", "purchase_order_line_items"), "TimeActivity": ("time_activities", None),
    "Customer": ("customers", None), "Item": ("items", None), "Estimate": ("estimates", "estimate_line_items"),
    "Invoice": ("invoices", "invoice_line_items"),
}

# Every recorded object of each entity (SOURCES.md says where each was recorded).
SAMPLE_FILES = {
    "Account": ["account.json", "account_query_response_java_sdk.json"], "Vendor": ["vendor.json"],
    "Employee": ["employee.json", "employee_query_response_active_in.json"],
    "Class": ["class_docs_example.json", "class_query_response_docs_example.json"],
    "Department": ["department_docs_example.json", "department_query_response_docs_example.json"],
    "Term": ["term.json"], "PaymentMethod": ["paymentmethod.json", "paymentmethod_credit_card.json"],
    "TaxCode": ["taxcode.json"], "TaxRate": ["taxrate.json"], "TaxAgency": ["taxagency.json"],
    "Payment": ["payment.json", "payment_for_invoice_12.json"], "SalesReceipt": ["salesreceipt.json"],
    "CreditMemo": ["creditmemo.json"], "RefundReceipt": ["refundreceipt.json"],
    "Deposit": ["deposit.json", "deposit_account_line.json", "deposit_cashback.json"],
    "Transfer": ["transfer.json"], "Bill": ["bill.json", "bill_item_based.json"],
    "BillPayment": ["billpayment_check.json", "billpayment_creditcard.json"],
    "Purchase": ["purchase_creditcard.json"], "VendorCredit": ["vendorcredit_docs_example.json"],
    "JournalEntry": ["journalentry.json", "journalentry_docs_example.json"],
    "PurchaseOrder": ["purchaseorder.json"],
    "TimeActivity": ["timeactivity.json", "timeactivity_query_response_dotnet_sdk.json"],
    "Customer": ["customer_job.json", "customer_job_parent.json"],
    "Invoice": ["invoice_with_tax_and_payments.json", "invoice_linked_estimate.json"],
}


def recorded(entity: str) -> list[dict]:
    """Every object of `entity` in its sample files, whatever the wrapper (bare, keyed, query), one per Id."""
    out = []
    for name in SAMPLE_FILES[entity]:
        body = json.loads((SAMPLES / name).read_text(encoding="utf-8"), parse_float=Decimal)
        if "QueryResponse" in body:
            out.extend(body["QueryResponse"][entity])
        elif entity in body:
            out.append(body[entity])
        else:
            out.append(body)
    assert out and all("Id" in obj for obj in out), entity
    return newest_per_id(out)  # a query response may hold a single sample's object again


def normal(column_type: str, value: Any) -> Any:
    """A Python-extracted value as PostgreSQL returns its column type."""
    if value is None:
        return None
    if column_type == "numeric":
        return Decimal(str(value))
    if column_type == "date":
        return date.fromisoformat(value)
    if column_type == "timestamptz":
        return parse_time(value)
    return value


def digits(text: str) -> Any:
    """JSON text parsed with every number as its exact digits (Decimal equality ignores scale)."""
    def exact(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: exact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [exact(v) for v in value]
        return ("number", str(value)) if isinstance(value, (Decimal, int)) and not isinstance(value, bool) else value
    return exact(json.loads(text, parse_float=Decimal))


def expected_linked(obj: dict) -> list[tuple]:
    rows = [(-1, i, lt.get("TxnId"), lt.get("TxnType"), lt.get("TxnLineId"))
            for i, lt in enumerate(obj.get("LinkedTxn") or [])]
    for pos, line in enumerate(obj.get("Line") or []):
        rows += [(pos, i, lt.get("TxnId"), lt.get("TxnType"), lt.get("TxnLineId"))
                 for i, lt in enumerate(line.get("LinkedTxn") or [])]
    return sorted(rows)


def test_every_entity_of_spec_section_10_is_declared_with_its_tables() -> None:
    assert set(ENTITY_NAMES) == set(SPEC_10) | {"CompanyInfo"}
    for entity, (table, lines) in SPEC_10.items():
        spec = get_spec(entity.lower())
        assert spec.table == table and (spec.line.table if spec.line else None) == lines, entity
    assert [ENTITIES[n].group for n in ENTITY_NAMES] == sorted((ENTITIES[n].group for n in ENTITY_NAMES),
                                                               key=GROUPS.index)
    assert {n for n in ENTITY_NAMES if ENTITIES[n].swept} == {"TaxCode", "TaxRate", "TaxAgency", "TimeActivity"}
    assert {n for n in ENTITY_NAMES if ENTITIES[n].mergeable} == {"Customer", "Vendor", "Account", "Item",
                                                                   "Employee", "Class"}
    name_lists = {"Account", "Customer", "Vendor", "Employee", "Item", "Class", "Department", "Term",
                  "PaymentMethod", "TaxCode", "TaxRate"}
    assert {n for n in ENTITY_NAMES if ENTITIES[n].name_list} == name_lists
    assert not any(ENTITIES[n].hard_deletable for n in name_lists | {"TaxAgency"})


@pytest.mark.parametrize("path", ["page", "batch"])
def test_recorded_payloads_of_every_entity_land_exactly(db, path: str) -> None:
    with db.transaction() as conn:
        for entity in SAMPLE_FILES:
            spec = ENTITIES[entity]
            objects = recorded(entity)
            if path == "page":
                body = dump_raw({"QueryResponse": {entity: objects}}).encode()
                result = upsert_page(conn, spec, REALM, body, entity)
            else:
                result = upsert_objects(conn, spec, REALM, objects)
            assert result.written == len(objects), entity
    with db.transaction() as conn:
        for entity in SAMPLE_FILES:
            spec = ENTITIES[entity]
            for obj in recorded(entity):
                names = [c.name for c in spec.columns]
                row = conn.execute(f"SELECT {', '.join(names)}, raw::text FROM {spec.qualified_table}"
                                   " WHERE realm_id = %s AND id = %s", (REALM, obj["Id"])).fetchone()
                assert row is not None, (entity, obj["Id"])
                want = [normal(c.sql_type, v) for c, v in zip(spec.columns, spec.row(obj))]
                assert list(row[:-1]) == want, (entity, obj["Id"])
                assert digits(row[-1]) == digits(dump_raw(obj)), (entity, obj["Id"])
                if spec.line is not None:
                    lines = conn.execute(
                        f"SELECT position, {', '.join(c.name for c in spec.line.columns)}"
                        f" FROM quickbooks.{spec.line.table} WHERE realm_id = %s AND {spec.line.fk} = %s"
                        " ORDER BY position", (REALM, obj["Id"])).fetchall()
                    assert [r[0] for r in lines] == list(range(len(obj.get("Line", []))))
                    for stored, line in zip(lines, obj.get("Line", [])):
                        assert list(stored[1:]) == [normal(c.sql_type, c.extract(line)) for c in spec.line.columns]
                if spec.linked_txns:
                    linked = conn.execute(
                        "SELECT line_position, position, linked_txn_id, linked_txn_type, linked_txn_line_id"
                        " FROM quickbooks.linked_txns WHERE realm_id = %s AND entity = %s AND txn_id = %s"
                        " ORDER BY 1, 2", (REALM, entity, obj["Id"])).fetchall()
                    assert sorted(linked) == expected_linked(obj), (entity, obj["Id"])


def test_each_detail_type_fills_its_columns(db) -> None:
    """The columns SPEC section 10 names per DetailType, from the real samples."""
    je = ENTITIES["JournalEntry"]
    with db.transaction() as conn:
        for entity in ("JournalEntry", "Bill", "Deposit", "PurchaseOrder", "Payment", "BillPayment", "Invoice"):
            upsert_objects(conn, ENTITIES[entity], REALM, recorded(entity))
        lines = conn.execute(
            "SELECT position, posting_type, account_id, account_name, entity_type, entity_id, amount"
            " FROM quickbooks.journal_entry_line_items WHERE realm_id = %s AND journal_entry_id = %s"
            " ORDER BY position", (REALM, recorded("JournalEntry")[1]["Id"])).fetchall()
        assert lines[:2] == [
            (0, "Debit", "65", "Job Expenses:Job Materials:Fountain and Garden Lighting", "Customer", "1",
             Decimal("25.54")),
            (1, "Credit", "44", "Notes Payable", "Vendor", "2", Decimal("25.54"))]
        # a JournalEntry without TotalAmt (older minor versions) totals its debits
        (total,) = conn.execute("SELECT total_amt FROM quickbooks.journal_entries WHERE realm_id = %s AND id = %s",
                                (REALM, recorded("JournalEntry")[0]["Id"])).fetchone()
        assert "TotalAmt" not in recorded("JournalEntry")[0] and total == Decimal("13495.0")
        assert je.row(recorded("JournalEntry")[0])[2] == Decimal("13495.0")
        bill = conn.execute(
            "SELECT detail_type, account_id, billable_status, tax_code_id FROM quickbooks.bill_line_items"
            " WHERE realm_id = %s AND bill_id = %s AND position = 0", (REALM, recorded("Bill")[0]["Id"])).fetchone()
        assert bill == ("AccountBasedExpenseLineDetail", "64", "HasBeenBilled", "NON")
        po = conn.execute(
            "SELECT detail_type, item_id, item_name, qty, unit_price FROM quickbooks.purchase_order_line_items"
            " WHERE realm_id = %s AND position = 1", (REALM,)).fetchone()
        assert po == ("ItemBasedExpenseLineDetail", "16", "Sprinkler Heads", Decimal("15"), Decimal("0.75"))
        # a deposit line with only LinkedTxn (and no DetailType) keeps its link and amount
        dep = recorded("Deposit")[0]
        linked = conn.execute(
            "SELECT d.amount, l.linked_txn_type, l.linked_txn_id FROM quickbooks.deposit_line_items d"
            " JOIN quickbooks.linked_txns l ON l.realm_id = d.realm_id AND l.entity = 'Deposit'"
            " AND l.txn_id = d.deposit_id AND l.line_position = d.position"
            " WHERE d.realm_id = %s AND d.deposit_id = %s ORDER BY d.position", (REALM, dep["Id"])).fetchall()
        assert linked[0] == (Decimal("108.0"), "Payment", "31")
        # "which payments paid this invoice" is one join
        payment = recorded("Payment")[0]
        invoice_id = payment["Line"][0]["LinkedTxn"][0]["TxnId"]
        paid = conn.execute(
            "SELECT p.id, p.total_amt FROM quickbooks.linked_txns l JOIN quickbooks.payments p"
            " ON p.realm_id = l.realm_id AND p.id = l.txn_id WHERE l.realm_id = %s AND l.entity = 'Payment'"
            " AND l.linked_txn_type = 'Invoice' AND l.linked_txn_id = %s", (REALM, invoice_id)).fetchall()
        assert paid == [(payment["Id"], Decimal("220.0"))]
        check, card = recorded("BillPayment")
        pay_from = dict(conn.execute("SELECT pay_type, pay_from_account_id FROM quickbooks.bill_payments"
                                     " WHERE realm_id = %s", (REALM,)).fetchall())
        assert pay_from == {"Check": check["CheckPayment"]["BankAccountRef"]["value"],
                            "CreditCard": card["CreditCardPayment"]["CCAccountRef"]["value"]}


def test_lines_and_linked_txns_are_replaced_with_their_document(db) -> None:
    """A newer version with fewer lines and another LinkedTxn replaces both, on either path."""
    spec = ENTITIES["Invoice"]
    invoice = recorded("Invoice")[0]
    newer = copy.deepcopy(invoice)
    newer["SyncToken"] = str(int(invoice["SyncToken"]) + 1)
    newer["MetaData"]["LastUpdatedTime"] = "2030-01-01T00:00:00-08:00"
    newer["Line"] = newer["Line"][:1]
    newer["LinkedTxn"] = [{"TxnId": "999", "TxnType": "Payment"}]
    with db.transaction() as conn:
        upsert_objects(conn, spec, REALM, [invoice])
        before = conn.execute("SELECT count(*) FROM quickbooks.linked_txns WHERE realm_id = %s", (REALM,)).fetchone()
        assert before == (len(expected_linked(invoice)),) and before[0] > 1
        upsert_page(conn, spec, REALM, dump_raw({"QueryResponse": {"Invoice": [newer]}}).encode(), "Invoice")
        lines = conn.execute("SELECT count(*) FROM quickbooks.invoice_line_items WHERE realm_id = %s",
                             (REALM,)).fetchone()
        linked = conn.execute("SELECT line_position, linked_txn_id, linked_txn_type FROM quickbooks.linked_txns"
                              " WHERE realm_id = %s", (REALM,)).fetchall()
    assert lines == (1,) and linked == [(-1, "999", "Payment")]

