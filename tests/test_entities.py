"""The declarative entity set maps recorded QBO payloads to SPEC section 8 columns."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from support.samples import SAMPLES

from services.model.entities import ENTITIES, ENTITY_NAMES, get_spec, parse_time


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"), parse_float=Decimal)


def row_of(entity: str, obj: dict) -> dict:
    spec = ENTITIES[entity]
    return dict(zip((c.name for c in spec.columns), spec.row(obj)))


def test_spec_lists_the_five_entities_of_section_8_among_the_ledger() -> None:
    assert {"CompanyInfo", "Customer", "Item", "Estimate", "Invoice"} <= set(ENTITY_NAMES)
    assert ENTITY_NAMES[0] == "CompanyInfo" and len(ENTITY_NAMES) == 28
    assert get_spec("invoice").table == "invoices"
    with pytest.raises(ValueError, match="choose one of"):
        get_spec("Paycheck")


def test_customer_columns_from_recorded_payload() -> None:
    row = row_of("Customer", sample("customer.json")["Customer"])
    assert row == {
        "display_name": "Dukes Basketball Camp", "company_name": "Dukes Basketball Camp",
        "given_name": "Peter", "family_name": "Dukes", "email": "Dukes_bball@intuit.com",
        "phone": "(520) 420-5638", "active": True, "balance": 0, "currency": "USD",
        "parent_id": None, "job": False, "level": None, "fully_qualified_name": "Dukes Basketball Camp",
        "sync_token": "1", "qbo_created_at": "2015-10-01T16:54:59-07:00",
        "qbo_updated_at": "2016-08-27T01:37:57-07:00",
    }


def test_item_columns_from_api_reference_payload() -> None:
    row = row_of("Item", sample("item.json")["Item"])
    assert (row["name"], row["sku"], row["type"], row["active"]) == ("Office Supplies", None, "Inventory", True)
    assert (row["unit_price"], row["purchase_cost"], row["qty_on_hand"]) == (25, 35, 10)


def test_invoice_columns_keep_money_as_decimal() -> None:
    row = row_of("Invoice", sample("invoice.json")["Invoice"])
    assert row["total_amt"] == Decimal("100055.55") and isinstance(row["total_amt"], Decimal)
    assert row["balance"] == Decimal("100055.55")
    assert (row["doc_number"], row["txn_date"], row["due_date"]) == ("4020", "2015-08-10", "2015-08-10")
    assert (row["customer_id"], row["customer_name"]) == ("4841", "fc444465-95c0-43b6-9395-c")
    assert (row["currency"], row["email_status"]) == ("USD", "EmailSent")


def test_estimate_lines_by_position_including_subtotal_and_discount() -> None:
    estimate = sample("estimate.json")["Estimate"]
    spec = ENTITIES["Estimate"]
    assert spec.line is not None and spec.line.fk == "estimate_id"
    lines = [{c.name: c.extract(li) for c in spec.line.columns if c.extract(li) is not None}
             for li in estimate["Line"]]
    assert lines[0] == {"line_id": "1", "line_num": 1, "detail_type": "SalesItemLineDetail",
                        "description": "Pest Control Services", "amount": Decimal("35.0"),
                        "item_id": "10", "item_name": "Pest Control", "qty": 1, "unit_price": 35,
                        "tax_code_id": "NON"}
    assert "line_id" not in lines[1] and lines[1]["detail_type"] == "SubTotalLineDetail"
    assert lines[2]["detail_type"] == "DiscountLineDetail" and lines[2]["amount"] == Decimal("3.5")
    assert row_of("Estimate", estimate)["txn_status"] == "Pending"


def test_companyinfo_country_top_level_else_company_address() -> None:
    info = sample("companyinfo.json")["CompanyInfo"]
    row = row_of("CompanyInfo", info)
    assert (row["name"], row["legal_name"], row["country"]) == ("TestCompany", "TestCompany", "US")
    assert row["last_updated"] == "2015-06-03T16:06:06-07:00"
    del info["Country"]
    info["CompanyAddr"]["Country"] = "USA"
    assert row_of("CompanyInfo", info)["country"] == "USA"


def test_name_lists_query_inactive_rows_too() -> None:
    assert ENTITIES["Customer"].query_where() == "Active IN (true,false)"
    assert ENTITIES["Item"].query_where("MetaData.LastUpdatedTime >= 'x'") == \
        "MetaData.LastUpdatedTime >= 'x' AND Active IN (true,false)"
    assert ENTITIES["Invoice"].query_where() is None
    assert not ENTITIES["Customer"].hard_deletable and ENTITIES["Invoice"].hard_deletable


def test_every_declared_column_exists_with_its_type(db) -> None:
    with db.transaction() as conn:
        for spec in ENTITIES.values():
            tables = [(spec.table, spec.columns)]
            if spec.line:
                tables.append((spec.line.table, spec.line.columns))
            for table, columns in tables:
                types = dict(conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = 'quickbooks' AND table_name = %s", (table,)).fetchall())
                for column in columns:
                    expected = {"timestamptz": "timestamp with time zone"}.get(column.sql_type, column.sql_type)
                    assert types.get(column.name) == expected, (table, column.name)


def test_parse_time_accepts_every_qbo_format() -> None:
    a = parse_time("2015-10-05T14:42:19-0700")
    assert a == parse_time("2015-10-05T14:42:19-07:00") == parse_time("2015-10-05T21:42:19Z")
    assert parse_time("2025-09-10T21:31:25.179851517Z").microsecond == 179851
    assert parse_time("garbage") is None and parse_time(None) is None
