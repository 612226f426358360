"""Batched newer-wins upserts on real PostgreSQL, fed with the recorded QBO payloads."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

from support.samples import SAMPLES

from db.upserts import (
    apply_objects,
    dump_raw,
    mark_deleted,
    mark_merged,
    reconcile_missing,
    upsert_company,
    upsert_objects,
    upsert_page,
)
from services.model.entities import ENTITIES

REALM = "9130350000000001"
INVOICE, ESTIMATE, CUSTOMER = ENTITIES["Invoice"], ENTITIES["Estimate"], ENTITIES["Customer"]


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"), parse_float=Decimal)


def newer(obj: dict, seconds_later: str, token: str, **changes: object) -> dict:
    out = copy.deepcopy(obj)
    out["MetaData"]["LastUpdatedTime"] = seconds_later
    out["SyncToken"] = token
    out.update(changes)
    return out


def fetch(db, sql: str, *params):
    with db.transaction() as conn:
        return conn.execute(sql, params).fetchall()


def raw_of(db, table: str, ident: str) -> dict:
    (text,), = fetch(db, f"SELECT raw::text FROM quickbooks.{table} WHERE realm_id = %s AND id = %s", REALM, ident)
    return json.loads(text, parse_float=Decimal)


def test_invoice_columns_lines_and_raw_are_exact(db) -> None:
    created = sample("invoice_created_real.json")["Invoice"]
    with db.transaction() as conn:
        result = upsert_objects(conn, INVOICE, REALM, [created, sample("invoice.json")["Invoice"]])
    assert (result.written, result.skipped) == (2, 0)
    row, = fetch(db, "SELECT doc_number, txn_date::text, due_date::text, customer_id, customer_name, total_amt,"
                 " balance, currency, email_status, sync_token, qbo_created_at, qbo_updated_at, deleted_at"
                 " FROM quickbooks.invoices WHERE realm_id = %s AND id = '266'", REALM)
    assert row[:10] == ("1043", "2020-09-29", "2020-10-29", "1", "Amy's Bird Sanctuary", Decimal("100.00"),
                        Decimal("100.00"), "USD", "NotSet", "0")
    assert str(row[5]) == "100.00"  # numeric keeps QBO's scale
    assert row[11].isoformat() == "2020-09-29T12:58:07+00:00" and row[12] is None
    assert raw_of(db, "invoices", "266") == created
    (amount,), = fetch(db, "SELECT raw->'Line'->0->>'Amount' FROM quickbooks.invoices WHERE id = '266'")
    assert amount == "100.00"
    lines = fetch(db, "SELECT position, line_id, line_num, detail_type, amount, item_id, item_name"
                  " FROM quickbooks.invoice_line_items WHERE realm_id = %s AND invoice_id = '266' ORDER BY position", REALM)
    assert lines == [(0, "1", 1, "SalesItemLineDetail", Decimal("100.00"), "1", "Services"),
                     (1, None, None, "SubTotalLineDetail", Decimal("100.00"), None, None)]


def test_same_version_twice_changes_nothing(db) -> None:
    obj = sample("estimate.json")["Estimate"]
    with db.transaction() as conn:
        upsert_objects(conn, ESTIMATE, REALM, [obj])
    before = fetch(db, "SELECT synced_at, xmin::text FROM quickbooks.estimates")
    with db.transaction() as conn:
        again = upsert_objects(conn, ESTIMATE, REALM, [obj])
    assert (again.written, again.skipped) == (0, 1)
    assert fetch(db, "SELECT synced_at, xmin::text FROM quickbooks.estimates") == before
    assert fetch(db, "SELECT count(*) FROM quickbooks.estimate_line_items")[0][0] == 3


def test_older_version_never_overwrites_newer(db) -> None:
    old = sample("invoice_created_real.json")["Invoice"]
    void = newer(old, "2022-09-02T05:58:56-07:00", "1", TotalAmt=Decimal("0"), Balance=Decimal("0"),
                 PrivateNote="Voided", Line=[{"Amount": Decimal("0"), "DetailType": "SubTotalLineDetail",
                                              "SubTotalLineDetail": {}}])
    with db.transaction() as conn:
        upsert_objects(conn, INVOICE, REALM, [void])
    with db.transaction() as conn:
        late = upsert_objects(conn, INVOICE, REALM, [old])
    assert late.written == 0
    assert fetch(db, "SELECT total_amt, sync_token FROM quickbooks.invoices") == [(Decimal("0"), "1")]
    assert fetch(db, "SELECT position, detail_type FROM quickbooks.invoice_line_items") == [(0, "SubTotalLineDetail")]
    assert raw_of(db, "invoices", "266") == void


def test_equal_time_higher_sync_token_wins_numerically(db) -> None:
    base = sample("customer.json")["Customer"]
    t = base["MetaData"]["LastUpdatedTime"]
    nine = newer(base, t, "9", DisplayName="nine")
    ten = newer(base, t, "10", DisplayName="ten")
    with db.transaction() as conn:
        upsert_objects(conn, CUSTOMER, REALM, [nine])
    with db.transaction() as conn:
        assert upsert_objects(conn, CUSTOMER, REALM, [ten]).written == 1
    with db.transaction() as conn:
        assert upsert_objects(conn, CUSTOMER, REALM, [nine]).written == 0
    assert fetch(db, "SELECT display_name, sync_token FROM quickbooks.customers") == [("ten", "10")]


def test_inactivation_is_an_update_not_a_delete(db) -> None:
    base = sample("customer.json")["Customer"]
    with db.transaction() as conn:
        upsert_objects(conn, CUSTOMER, REALM, [base])
        upsert_objects(conn, CUSTOMER, REALM, [newer(base, "2017-01-01T00:00:00Z", "2", Active=False)])
    assert fetch(db, "SELECT active, deleted_at FROM quickbooks.customers") == [(False, None)]


def test_deletes_keep_rows_and_respect_versions(db) -> None:
    obj = sample("invoice_created_real.json")["Invoice"]  # updated 2020-09-29T05:58:07-07:00
    with db.transaction() as conn:
        upsert_objects(conn, INVOICE, REALM, [obj])
        assert mark_deleted(conn, INVOICE, REALM, [("266", "2020-09-29T05:00:00-07:00")]) == 0  # older
    assert fetch(db, "SELECT deleted_at FROM quickbooks.invoices") == [(None,)]
    marker = {"domain": "QBO", "status": "Deleted", "Id": "266",
              "MetaData": {"LastUpdatedTime": "2020-09-29T06:02:35-07:00"}}
    with db.transaction() as conn:
        result = apply_objects(conn, INVOICE, REALM, [marker])
    assert result.deleted == 1
    (deleted_at, total), = fetch(db, "SELECT deleted_at, total_amt FROM quickbooks.invoices")
    assert deleted_at.isoformat() == "2020-09-29T13:02:35+00:00" and total == Decimal("100.00")
    assert fetch(db, "SELECT count(*) FROM quickbooks.invoice_line_items")[0][0] == 2  # kept
    with db.transaction() as conn:  # the pre-delete version arriving late does not resurrect
        assert upsert_objects(conn, INVOICE, REALM, [obj]).written == 0
    with db.transaction() as conn:  # a version newer than the delete does
        assert upsert_objects(conn, INVOICE, REALM, [newer(obj, "2020-09-30T00:00:00Z", "3")]).written == 1
    assert fetch(db, "SELECT deleted_at FROM quickbooks.invoices") == [(None,)]


def test_delete_of_unknown_id_leaves_tombstone_that_blocks_older_copies(db) -> None:
    obj = sample("invoice.json")["Invoice"]  # updated 2015-08-10
    with db.transaction() as conn:
        mark_deleted(conn, INVOICE, REALM, [(obj["Id"], "2016-01-01T00:00:00Z")])
        assert upsert_objects(conn, INVOICE, REALM, [obj]).written == 0
    (deleted_at,), = fetch(db, "SELECT deleted_at FROM quickbooks.invoices")
    assert deleted_at is not None


def test_merge_marks_merged_away_row(db) -> None:
    customers = sample("query_response_customers.json")["QueryResponse"]["Customer"]
    with db.transaction() as conn:
        assert upsert_objects(conn, CUSTOMER, REALM, customers).written == len(customers) == 41
        assert mark_merged(conn, CUSTOMER, REALM, "2", "1", "2030-01-01T00:00:00Z") == 1
        assert mark_merged(conn, CUSTOMER, REALM, "2", "1", "2030-01-01T00:00:00Z") == 0  # once
    rows = fetch(db, "SELECT id, merged_into, deleted_at IS NOT NULL FROM quickbooks.customers"
                 " WHERE deleted_at IS NOT NULL OR merged_into IS NOT NULL")
    assert rows == [("2", "1", True)]


def test_reconcile_marks_missing_rows_deleted(db) -> None:
    customers = sample("query_response_customers.json")["QueryResponse"]["Customer"]
    with db.transaction() as conn:
        upsert_objects(conn, CUSTOMER, REALM, customers)
        present = [c["Id"] for c in customers if c["Id"] not in ("3", "7")]
        assert reconcile_missing(conn, CUSTOMER, REALM, present, "2030-01-01T00:00:00Z") == 2
    assert fetch(db, "SELECT id FROM quickbooks.customers WHERE deleted_at IS NOT NULL ORDER BY id") == [("3",), ("7",)]


def test_batch_with_duplicates_keeps_newest_per_id(db) -> None:
    base = sample("customer.json")["Customer"]
    later = newer(base, "2017-01-01T00:00:00-07:00", "2", DisplayName="Dukes Basketball Camp \u00e9t\u00e9")
    with db.transaction() as conn:
        result = apply_objects(conn, CUSTOMER, REALM, [later, base])
    assert result.written == 1
    assert fetch(db, "SELECT display_name FROM quickbooks.customers") == [("Dukes Basketball Camp \u00e9t\u00e9",)]


def test_cdc_sample_estimates_apply(db) -> None:
    body = sample("cdc_response.json")
    estimates = [o for qr in body["CDCResponse"][0]["QueryResponse"] for o in qr.get("Estimate", [])]
    with db.transaction() as conn:
        result = apply_objects(conn, ESTIMATE, REALM, estimates)
    assert result.written == len(estimates) > 0
    for obj in estimates:
        assert raw_of(db, "estimates", obj["Id"]) == obj
        n = fetch(db, "SELECT count(*) FROM quickbooks.estimate_line_items WHERE estimate_id = %s", obj["Id"])[0][0]
        assert n == len(obj["Line"])


def test_company_upsert_keeps_environment_and_newer_wins(db) -> None:
    info = sample("companyinfo.json")["CompanyInfo"]
    with db.transaction() as conn:
        conn.execute("INSERT INTO quickbooks.companies (id, environment) VALUES (%s, 'sandbox')", (REALM,))
        assert upsert_company(conn, REALM, info, environment="production").written == 1
        older = newer(info, "2015-01-01T00:00:00Z", "1", CompanyName="Old")
        assert upsert_company(conn, REALM, older).written == 0
    row, = fetch(db, "SELECT id, name, legal_name, country, environment, last_updated, raw::text FROM quickbooks.companies")
    assert row[:5] == (REALM, "TestCompany", "TestCompany", "US", "sandbox")
    assert row[5].isoformat() == "2015-06-03T23:06:06+00:00"
    assert json.loads(row[6], parse_float=Decimal) == info


def test_dump_raw_writes_decimals_with_their_digits() -> None:
    obj = {"a": Decimal("100.00"), "b": [Decimal("1E+2"), Decimal("-0.10")], "c": "\u00e9'"}
    text = dump_raw(obj)
    assert '"a":100.00' in text and "-0.10" in text
    assert json.loads(text, parse_float=Decimal) == obj


def test_text_with_backslashes_tabs_quotes_and_newlines_round_trips(db) -> None:
    base = sample("customer.json")["Customer"]
    odd = newer(base, "2017-01-01T00:00:00Z", "2", DisplayName='C:\\dir\t"q"\nline2 \u00e9\u4e2d\\n')
    with db.transaction() as conn:
        assert upsert_objects(conn, CUSTOMER, REALM, [odd]).written == 1
    assert fetch(db, "SELECT display_name FROM quickbooks.customers") == [(odd["DisplayName"],)]
    assert raw_of(db, "customers", odd["Id"]) == odd


# -- upsert_page: a query page handed to PostgreSQL as QBO served it ------------------------------

def page_of(entity: str, *objects: dict, extra: bytes = b"") -> bytes:
    """A query page body as QBO writes it (Decimals with their own digits)."""
    inner = ",".join(dump_raw(o) for o in objects).encode()
    return (b'{"QueryResponse":{"' + entity.encode() + b'":[' + inner + b'],"startPosition":1,"maxResults":'
            + str(len(objects)).encode() + b"}" + extra + b',"time":"2026-11-22T06:03:53.903-08:00"}')


def lines_of(db, ident: str) -> list[tuple]:
    return fetch(db, "SELECT position, line_id, amount::text, qty::text, unit_price::text FROM quickbooks.invoice_line_items"
                 " WHERE realm_id = %s AND invoice_id = %s ORDER BY position", REALM, ident)


def test_page_columns_lines_and_raw_equal_the_served_json(db) -> None:
    created = sample("invoice_created_real.json")["Invoice"]
    other = sample("invoice.json")["Invoice"]
    body = page_of("Invoice", created, other)
    with db.transaction() as conn:
        paged = upsert_page(conn, INVOICE, REALM, body, "Invoice")
    assert (paged.received, paged.written, sorted(paged.present_ids)) == (2, 2, sorted([created["Id"], other["Id"]]))
    via_page = fetch(db, "SELECT * FROM quickbooks.invoices ORDER BY id")
    page_lines = fetch(db, "SELECT * FROM quickbooks.invoice_line_items ORDER BY invoice_id, position")
    for obj in (created, other):  # raw is the served object, digit for digit
        assert raw_of(db, "invoices", obj["Id"]) == obj
    (raw_text,), = fetch(db, "SELECT raw->'Line'->0->>'Amount' FROM quickbooks.invoices WHERE id = %s", created["Id"])
    assert raw_text == str(created["Line"][0]["Amount"])
    with db.transaction() as conn:  # the same objects through the Python-parsed path give the same rows
        conn.execute("DELETE FROM quickbooks.invoices"); conn.execute("DELETE FROM quickbooks.invoice_line_items")
        upsert_objects(conn, INVOICE, REALM, [created, other])
    strip = lambda rows: [tuple(v for i, v in enumerate(r) if i != SYNCED_AT) for r in rows]  # noqa: E731
    assert strip(fetch(db, "SELECT * FROM quickbooks.invoices ORDER BY id")) == strip(via_page)
    assert fetch(db, "SELECT * FROM quickbooks.invoice_line_items ORDER BY invoice_id, position") == page_lines


SYNCED_AT = 17  # quickbooks.invoices column index of synced_at (checked below)


def test_synced_at_index_matches_the_table(db) -> None:
    with db.transaction() as conn:
        cols = [c.name for c in conn.execute("SELECT * FROM quickbooks.invoices LIMIT 0").description]
    assert cols[SYNCED_AT] == "synced_at"


def test_page_newer_wins_replaces_lines_and_claims_repeated_ids(db) -> None:
    base = sample("invoice_created_real.json")["Invoice"]
    ident = base["Id"]
    with db.transaction() as conn:
        upsert_page(conn, INVOICE, REALM, page_of("Invoice", base), "Invoice")
    before = fetch(db, "SELECT synced_at, xmin::text FROM quickbooks.invoices")
    with db.transaction() as conn:  # the same version again: nothing written, not even synced_at
        again = upsert_page(conn, INVOICE, REALM, page_of("Invoice", base), "Invoice")
    assert (again.written, again.skipped) == (0, 1)
    assert fetch(db, "SELECT synced_at, xmin::text FROM quickbooks.invoices") == before
    changed = copy.deepcopy(base)
    changed["MetaData"]["LastUpdatedTime"] = "2030-01-01T00:00:00-08:00"
    changed["SyncToken"] = "9"
    changed["Line"] = [dict(changed["Line"][0], Amount=Decimal("12.340"), Id="7")]
    older = copy.deepcopy(base)
    older["MetaData"]["LastUpdatedTime"] = "2001-01-01T00:00:00-08:00"
    older["Id"] = "older-" + ident
    seen: set[str] = {"older-" + ident}  # an earlier overlapping page already had this one

    def claim(ids: list[str]) -> list[str]:
        repeated = [i for i in ids if i in seen]
        seen.update(ids)
        return repeated

    with db.transaction() as conn:
        result = upsert_page(conn, INVOICE, REALM, page_of("Invoice", changed, older), "Invoice", claim=claim)
    # the claimed id is not counted again (it is new to this table, so it is still written)
    assert result.received == 1 and sorted(result.written_ids) == sorted([ident, "older-" + ident])
    detail = changed["Line"][0].get("SalesItemLineDetail") or {}
    as_text = lambda v: None if v is None else str(v)  # noqa: E731
    assert lines_of(db, ident) == [(0, "7", "12.340", as_text(detail.get("Qty")), as_text(detail.get("UnitPrice")))]
    assert raw_of(db, "invoices", ident) == changed
    with db.transaction() as conn:  # an older copy of a written document changes nothing
        stale = upsert_page(conn, INVOICE, REALM, page_of("Invoice", base), "Invoice")
    assert stale.written == 0 and raw_of(db, "invoices", ident) == changed and len(lines_of(db, ident)) == 1


def test_page_with_an_unexpected_key_case_and_text_escapes(db) -> None:
    base = sample("customer.json")["Customer"]
    odd = newer(base, "2017-01-01T00:00:00Z", "2", DisplayName='C:\\dir\t"q"\nline2 \u00e9\u4e2d\\n')
    with db.transaction() as conn:
        result = upsert_page(conn, CUSTOMER, REALM, page_of("customer", odd), "customer")
    assert result.written == 1
    assert fetch(db, "SELECT display_name FROM quickbooks.customers") == [(odd["DisplayName"],)]
    assert raw_of(db, "customers", odd["Id"]) == odd
