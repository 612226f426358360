"""The synced entity set, declared once: one `EntitySpec` per QBO entity (SPEC sections 6 and 8).

Each spec says where a QBO object lands (table, key), how every column is taken from the
QBO JSON (`Column.extract`, applied to the object exactly as QBO sent it, numbers parsed as
`Decimal`), whether the entity has line items (table + foreign-key column), whether it is a
name list (queried with `Active IN (true,false)`; never hard-deleted, inactivated instead),
whether it can be hard-deleted or merged. The upserts (db/upserts.py) and the sync engine
(services/sync/engine.py) are generic over these specs: adding Payment is one entry here plus a
migration creating `payments` (+ `payment_line_items`).

Extractors return text / Decimal / bool / None; dates and timestamps are passed to
PostgreSQL as QBO's ISO 8601 strings (PostgreSQL parses offsets such as `-07:00`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from services.core.qbotime import parse_qbo_time_or_none

__all__ = [
    "Column", "LineSpec", "EntitySpec", "ENTITIES", "ENTITY_NAMES", "LINE_COLUMNS",
    "get_spec", "field_path", "meta_updated", "parse_time",
]

Extractor = Callable[[dict], Any]


def field_path(*keys: str) -> Extractor:
    """An extractor for a nested field (`field_path("CustomerRef", "value")`); None when absent."""
    if len(keys) == 1:
        key = keys[0]

        def one(obj: dict) -> Any:
            value = obj.get(key)
            return None if isinstance(value, (dict, list)) else value
        return one

    def nested(obj: dict) -> Any:
        value: Any = obj
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return None if isinstance(value, (dict, list)) else value
    return nested


def _text(extract: Extractor) -> Extractor:
    """Coerce scalars to text (QBO ids and numbers-as-strings stay digit-exact)."""
    def inner(obj: dict) -> Any:
        value = extract(obj)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    return inner


def _bool(extract: Extractor) -> Extractor:
    def inner(obj: dict) -> Any:
        value = extract(obj)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return value.strip().lower() == "true"
        return bool(value)
    return inner


def _int(extract: Extractor) -> Extractor:
    def inner(obj: dict) -> Any:
        value = extract(obj)
        if value is None or isinstance(value, bool):
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return inner


def _company_country(obj: dict) -> Any:
    """Top-level `Country` if present, else `CompanyAddr.Country` (ISO alpha-3 since 2025)."""
    country = obj.get("Country")
    if isinstance(country, str) and country:
        return country
    addr = obj.get("CompanyAddr")
    if isinstance(addr, dict):
        return addr.get("Country")
    return None


def parse_time(value: Any) -> datetime | None:
    """A QBO timestamp as an aware datetime; None if absent or unparseable."""
    return parse_qbo_time_or_none(value)


RELIST_EVERY = timedelta(days=1)  # CompanyInfo and the entities outside CDC are read in full this often

meta_updated: Extractor = field_path("MetaData", "LastUpdatedTime")
meta_created: Extractor = field_path("MetaData", "CreateTime")


@dataclass(frozen=True)
class Column:
    """One table column: its name, SQL type, how Python takes it from the QBO object, and the
    same in SQL over a jsonb value (`sql_expr("s.raw")`), so batches can be extracted by
    PostgreSQL from the stored `raw` instead of in Python."""

    name: str
    sql_type: str
    extract: Extractor
    path: tuple[str, ...] | None = None
    sql: str | None = None  # an SQL expression with `{src}` for the jsonb, when `path` does not say it
    choices: tuple[Column, ...] = ()  # the first of these that is present (see `_first`)

    def sql_expr(self, src: str) -> str:
        """SQL computing this column from the jsonb expression `src` (same result as `extract`)."""
        if self.sql is not None:
            return self.sql.format(src=src)
        if self.choices:
            return "COALESCE(" + ", ".join(choice.sql_expr(src) for choice in self.choices) + ")"
        assert self.path is not None
        literal = "'{" + ",".join(self.path) + "}'"
        text = f"({src} #>> {literal})"
        if self.sql_type == "text":
            return text
        return f"{text}::{self.sql_type}"


def _col(name: str, sql_type: str, extract: Extractor | tuple[str, ...], sql: str | None = None) -> Column:
    path = extract if isinstance(extract, tuple) else None
    fn = field_path(*extract) if isinstance(extract, tuple) else extract
    if sql_type == "text":
        fn = _text(fn)
    elif sql_type == "boolean":
        fn = _bool(fn)
    elif sql_type == "integer":
        fn = _int(fn)
    return Column(name, sql_type, fn, path, sql)


def _first(name: str, sql_type: str, *paths: tuple[str, ...]) -> Column:
    """A column QBO carries in one of several places (a line's field under whichever detail it
    has): the first path present wins, in Python and in SQL (COALESCE) alike."""
    choices = tuple(_col(name, sql_type, path) for path in paths)

    def extract(obj: dict) -> Any:
        for choice in choices:
            value = choice.extract(obj)
            if value is not None:
                return value
        return None
    return Column(name, sql_type, extract, choices=choices)


# The line details QBO documents (FACTS §6.5), and which of them carry each line column.
_SALES, _ITEM_EXP, _ACCT_EXP = "SalesItemLineDetail", "ItemBasedExpenseLineDetail", "AccountBasedExpenseLineDetail"
_JOURNAL, _DEPOSIT, _DISCOUNT, _GROUP = "JournalEntryLineDetail", "DepositLineDetail", "DiscountLineDetail", "GroupLineDetail"

# Line item columns (SPEC sections 8 and 10): one set for every lines table, each line filling
# the ones its detail carries. Deposits' linked lines may have a DepositLineDetail but no
# DetailType key (FACTS §6.5), so columns are read from whichever detail object is present.
LINE_COLUMNS: tuple[Column, ...] = (
    _col("line_id", "text", ("Id",)),
    _col("line_num", "integer", ("LineNum",)),
    _col("detail_type", "text", ("DetailType",)),
    _col("description", "text", ("Description",)),
    _col("amount", "numeric", ("Amount",)),
    _first("item_id", "text", (_SALES, "ItemRef", "value"), (_ITEM_EXP, "ItemRef", "value"),
           (_GROUP, "GroupItemRef", "value")),
    _first("item_name", "text", (_SALES, "ItemRef", "name"), (_ITEM_EXP, "ItemRef", "name"),
           (_GROUP, "GroupItemRef", "name")),
    _first("qty", "numeric", (_SALES, "Qty"), (_ITEM_EXP, "Qty"), (_GROUP, "Quantity")),
    _first("unit_price", "numeric", (_SALES, "UnitPrice"), (_ITEM_EXP, "UnitPrice")),
    _first("account_id", "text", (_ACCT_EXP, "AccountRef", "value"), (_JOURNAL, "AccountRef", "value"),
           (_DEPOSIT, "AccountRef", "value"), (_SALES, "ItemAccountRef", "value"),
           (_DISCOUNT, "DiscountAccountRef", "value")),
    _first("account_name", "text", (_ACCT_EXP, "AccountRef", "name"), (_JOURNAL, "AccountRef", "name"),
           (_DEPOSIT, "AccountRef", "name"), (_SALES, "ItemAccountRef", "name"),
           (_DISCOUNT, "DiscountAccountRef", "name")),
    _first("class_id", "text", *((d, "ClassRef", "value") for d in
                                 (_SALES, _ITEM_EXP, _ACCT_EXP, _JOURNAL, _DEPOSIT, _DISCOUNT))),
    _first("tax_code_id", "text", *((d, "TaxCodeRef", "value") for d in
                                    (_SALES, _ITEM_EXP, _ACCT_EXP, _JOURNAL, _DEPOSIT, _DISCOUNT))),
    _col("posting_type", "text", (_JOURNAL, "PostingType")),
    _first("entity_type", "text", (_JOURNAL, "Entity", "Type"), (_DEPOSIT, "Entity", "type")),
    _first("entity_id", "text", (_JOURNAL, "Entity", "EntityRef", "value"), (_DEPOSIT, "Entity", "value")),
    _first("billable_status", "text", (_ACCT_EXP, "BillableStatus"), (_ITEM_EXP, "BillableStatus")),
)


@dataclass(frozen=True)
class LineSpec:
    """Line items of a document: `table` keyed by (realm_id, `fk`, position)."""

    table: str
    fk: str
    columns: tuple[Column, ...] = LINE_COLUMNS


@dataclass(frozen=True)
class EntitySpec:
    """How one QBO entity maps to PostgreSQL.

    `table` is in schema quickbooks. Ordinary entities are keyed (realm_id, id) and carry
    sync_token, qbo_created_at, qbo_updated_at, raw, deleted_at, merged_into, synced_at.
    `company=True` marks CompanyInfo: keyed by id = realm id, versioned by `last_updated`,
    fetched with `company_info()` instead of query/CDC. `cdc=False` marks the entities Intuit's
    CDC does not cover (FACTS §6.2): they are kept exact by a full listing on their own cadence
    (the sweep). `linked_txns` documents have their LinkedTxn entries (header and lines) in
    quickbooks.linked_txns, replaced with the document. `group` is where operators find it
    (status, console).
    """

    name: str
    table: str
    columns: tuple[Column, ...]
    group: str
    line: LineSpec | None = None
    name_list: bool = False
    hard_deletable: bool = True
    mergeable: bool = False
    company: bool = False
    cdc: bool = True
    linked_txns: bool = False

    @property
    def qualified_table(self) -> str:
        return f"quickbooks.{self.table}"

    @property
    def live_count_sql(self) -> str:
        """`SELECT count(*)` of the live rows of realm `%(realm)s` (what sync_state.row_count holds)."""
        if self.company:
            return "SELECT count(*) FROM quickbooks.companies WHERE id = %(realm)s"
        return f"SELECT count(*) FROM {self.qualified_table} WHERE realm_id = %(realm)s AND deleted_at IS NULL"

    @property
    def version_column(self) -> str:
        return "last_updated" if self.company else "qbo_updated_at"

    @property
    def cdc_supported(self) -> bool:
        """Changes come through CDC (else: CompanyInfo's daily read, or the sweep)."""
        return self.cdc and not self.company

    @property
    def swept(self) -> bool:
        """Kept exact by a full listing on its own cadence (not in Intuit's CDC)."""
        return not self.cdc and not self.company

    @property
    def cadence(self) -> timedelta | None:
        """How often an entity outside CDC is read again in full (CompanyInfo, the swept ones);
        None for CDC entities, which every scheduled run covers."""
        return None if self.cdc_supported else RELIST_EVERY

    def query_where(self, condition: str | None = None) -> str | None:
        """The WHERE clause for a listing: name lists include inactive rows."""
        parts = [condition] if condition else []
        if self.name_list:
            parts.append("Active IN (true,false)")
        return " AND ".join(parts) or None

    def row(self, obj: dict) -> list[Any]:
        """The column values of one QBO object, in `columns` order."""
        return [column.extract(obj) for column in self.columns]


_VERSIONED = (
    _col("sync_token", "text", ("SyncToken",)),
    _col("qbo_created_at", "timestamptz", ("MetaData", "CreateTime")),
    _col("qbo_updated_at", "timestamptz", ("MetaData", "LastUpdatedTime")),
)


def _ref(prefix: str, ref: str, *, name: bool = True) -> tuple[Column, ...]:
    """`<prefix>_id` (and `<prefix>_name`) from `<ref>.value`/`.name` (SPEC §10 references)."""
    columns = (_col(f"{prefix}_id", "text", (ref, "value")),)
    return columns + (_col(f"{prefix}_name", "text", (ref, "name")),) if name else columns


def _plain(*pairs: tuple[str, str, str]) -> tuple[Column, ...]:
    """Columns taken from one top-level field each: (column, sql type, QBO field)."""
    return tuple(_col(column, sql_type, (qbo,)) for column, sql_type, qbo in pairs)


_ACTIVE = _col("active", "boolean", ("Active",))
_CURRENCY = _col("currency", "text", ("CurrencyRef", "value"))
_DOC = _plain(("doc_number", "text", "DocNumber"), ("txn_date", "date", "TxnDate"))
_TOTAL = _col("total_amt", "numeric", ("TotalAmt",))
_HIERARCHY = (_col("name", "text", ("Name",)), _col("fully_qualified_name", "text", ("FullyQualifiedName",)),
              _col("parent_id", "text", ("ParentRef", "value")))
_PERSON = _plain(("display_name", "text", "DisplayName"), ("given_name", "text", "GivenName"),
                 ("family_name", "text", "FamilyName")) + (
    _col("email", "text", ("PrimaryEmailAddr", "Address")), _col("phone", "text", ("PrimaryPhone", "FreeFormNumber")))
_TAX_CLASS = (_col("total_tax", "numeric", ("TxnTaxDetail", "TotalTax")), _col("class_id", "text", ("ClassRef", "value")),
              _col("department_id", "text", ("DepartmentRef", "value")))


def _journal_total(obj: dict) -> Any:
    """JournalEntry.TotalAmt when QBO sends it, else the sum of its debit lines (older minor
    versions omit it; a balanced entry's debits are its total)."""
    if obj.get("TotalAmt") is not None:
        return obj["TotalAmt"]
    lines = obj.get("Line")
    debits = [ln["Amount"] for ln in (lines if isinstance(lines, list) else [])
              if isinstance(ln, dict) and ln.get("Amount") is not None
              and field_path(_JOURNAL, "PostingType")(ln) == "Debit"]
    return sum(debits, Decimal(0)) if debits else None


_JOURNAL_TOTAL_SQL = (
    "COALESCE(({src} ->> 'TotalAmt')::numeric, (SELECT sum((l ->> 'Amount')::numeric)"
    " FROM jsonb_array_elements(CASE WHEN jsonb_typeof({src} -> 'Line') = 'array' THEN {src} -> 'Line'"
    " ELSE '[]'::jsonb END) AS l WHERE l #>> '{{JournalEntryLineDetail,PostingType}}' = 'Debit'))")


def _document(name: str, table: str, group: str, *columns: Column, lines: bool = True) -> EntitySpec:
    """A transaction: hard-deletable, LinkedTxn recorded, lines in `<singular>_line_items`."""
    singular = table.removesuffix("s").removesuffix("ie") + ("y" if table.endswith("ies") else "")
    line = LineSpec(f"{singular}_line_items", f"{singular}_id") if lines else None
    return EntitySpec(name=name, table=table, group=group, line=line, linked_txns=True,
                      columns=(*columns, *_VERSIONED))


def _name_list(name: str, table: str, group: str, *columns: Column, mergeable: bool = False,
               cdc: bool = True) -> EntitySpec:
    """A name list: queried with inactive rows, never hard-deleted (inactivated instead)."""
    return EntitySpec(name=name, table=table, group=group, name_list=True, hard_deletable=False,
                      mergeable=mergeable, cdc=cdc, columns=(*columns, _ACTIVE, *_VERSIONED))


# Groups, in the order operators see them (status, console).
GROUPS = ("Company", "Sales", "Purchases", "Ledger", "Time", "Lists")

ENTITIES: dict[str, EntitySpec] = {spec.name: spec for spec in (
    EntitySpec(
        name="CompanyInfo", table="companies", group="Company", company=True, hard_deletable=False,
        columns=(
            _col("name", "text", ("CompanyName",)),
            _col("legal_name", "text", ("LegalName",)),
            _col("country", "text", _company_country,
                 sql="COALESCE(NULLIF({src} ->> 'Country', ''), {src} #>> '{{CompanyAddr,Country}}')"),
            _col("last_updated", "timestamptz", ("MetaData", "LastUpdatedTime")),
        ),
    ),
    _name_list("Customer", "customers", "Sales",
               *_PERSON[:1], _col("company_name", "text", ("CompanyName",)), *_PERSON[1:],
               _col("balance", "numeric", ("Balance",)), _CURRENCY,
               _col("parent_id", "text", ("ParentRef", "value")), _col("job", "boolean", ("Job",)),
               _col("level", "integer", ("Level",)),
               _col("fully_qualified_name", "text", ("FullyQualifiedName",)), mergeable=True),
    _document("Estimate", "estimates", "Sales",
              *_DOC, *_plain(("expiration_date", "date", "ExpirationDate"), ("txn_status", "text", "TxnStatus")),
              *_ref("customer", "CustomerRef"), _TOTAL, _CURRENCY, _col("email_status", "text", ("EmailStatus",)),
              *_TAX_CLASS),
    _document("Invoice", "invoices", "Sales",
              *_DOC, _col("due_date", "date", ("DueDate",)), *_ref("customer", "CustomerRef"), _TOTAL,
              _col("balance", "numeric", ("Balance",)), _CURRENCY, _col("email_status", "text", ("EmailStatus",)),
              *_TAX_CLASS),
    _document("Payment", "payments", "Sales",
              _col("txn_date", "date", ("TxnDate",)), *_ref("customer", "CustomerRef"), _TOTAL,
              _col("unapplied_amt", "numeric", ("UnappliedAmt",)), _CURRENCY,
              *_ref("payment_method", "PaymentMethodRef", name=False),
              *_ref("deposit_to_account", "DepositToAccountRef", name=False),
              _col("payment_ref_num", "text", ("PaymentRefNum",))),
    _document("SalesReceipt", "sales_receipts", "Sales",
              *_DOC, *_ref("customer", "CustomerRef"), _TOTAL, _CURRENCY,
              *_ref("deposit_to_account", "DepositToAccountRef", name=False),
              *_ref("payment_method", "PaymentMethodRef", name=False)),
    _document("CreditMemo", "credit_memos", "Sales",
              *_DOC, *_ref("customer", "CustomerRef"), _TOTAL,
              _col("remaining_credit", "numeric", ("RemainingCredit",)), _CURRENCY),
    _document("RefundReceipt", "refund_receipts", "Sales",
              *_DOC, *_ref("customer", "CustomerRef"), _TOTAL, _CURRENCY,
              *_ref("deposit_to_account", "DepositToAccountRef", name=False)),
    _name_list("Vendor", "vendors", "Purchases",
               *_PERSON[:1], _col("company_name", "text", ("CompanyName",)), *_PERSON[1:],
               _col("balance", "numeric", ("Balance",)), _CURRENCY, _col("vendor_1099", "boolean", ("Vendor1099",)),
               mergeable=True),
    _document("PurchaseOrder", "purchase_orders", "Purchases",
              *_DOC, *_ref("vendor", "VendorRef"), _TOTAL, _col("po_status", "text", ("POStatus",)), _CURRENCY),
    _document("Bill", "bills", "Purchases",
              *_DOC, _col("due_date", "date", ("DueDate",)), *_ref("vendor", "VendorRef"),
              *_ref("ap_account", "APAccountRef", name=False), _TOTAL, _col("balance", "numeric", ("Balance",)),
              _CURRENCY),
    _document("BillPayment", "bill_payments", "Purchases",
              *_DOC, *_ref("vendor", "VendorRef"), _col("pay_type", "text", ("PayType",)),
              _first("pay_from_account_id", "text", ("CheckPayment", "BankAccountRef", "value"),
                     ("CreditCardPayment", "CCAccountRef", "value")),
              _TOTAL, _CURRENCY),
    _document("Purchase", "purchases", "Purchases",
              *_DOC, _col("payment_type", "text", ("PaymentType",)),
              *_ref("account", "AccountRef", name=False),
              _col("entity_type", "text", ("EntityRef", "type")), _col("entity_id", "text", ("EntityRef", "value")),
              _TOTAL, _CURRENCY, _col("credit", "boolean", ("Credit",))),
    _document("VendorCredit", "vendor_credits", "Purchases",
              *_DOC, *_ref("vendor", "VendorRef"), _TOTAL, _col("balance", "numeric", ("Balance",)), _CURRENCY),
    _document("Deposit", "deposits", "Ledger",
              _col("txn_date", "date", ("TxnDate",)), *_ref("deposit_to_account", "DepositToAccountRef", name=False),
              _TOTAL, _CURRENCY),
    _document("Transfer", "transfers", "Ledger",
              _col("txn_date", "date", ("TxnDate",)), *_ref("from_account", "FromAccountRef", name=False),
              *_ref("to_account", "ToAccountRef", name=False), _col("amount", "numeric", ("Amount",)), _CURRENCY,
              lines=False),
    _document("JournalEntry", "journal_entries", "Ledger",
              *_DOC, _col("total_amt", "numeric", _journal_total, sql=_JOURNAL_TOTAL_SQL), _CURRENCY,
              _col("adjustment", "boolean", ("Adjustment",))),
    _name_list("Account", "accounts", "Ledger",
               *_HIERARCHY[:2], *_plain(("account_type", "text", "AccountType"),
                                        ("account_sub_type", "text", "AccountSubType"),
                                        ("classification", "text", "Classification"), ("acct_num", "text", "AcctNum")),
               _HIERARCHY[2], _col("current_balance", "numeric", ("CurrentBalance",)), _CURRENCY, mergeable=True),
    _name_list("Employee", "employees", "Time",
               *_PERSON, *_plain(("hired_date", "date", "HiredDate"), ("released_date", "date", "ReleasedDate")),
               mergeable=True),
    EntitySpec(name="TimeActivity", table="time_activities", group="Time", cdc=False,
               columns=(_col("txn_date", "date", ("TxnDate",)), _col("name_of", "text", ("NameOf",)),
                        _col("employee_id", "text", ("EmployeeRef", "value")),
                        _col("vendor_id", "text", ("VendorRef", "value")),
                        _col("customer_id", "text", ("CustomerRef", "value")),
                        _col("item_id", "text", ("ItemRef", "value")),
                        *_plain(("hours", "integer", "Hours"), ("minutes", "integer", "Minutes"),
                                ("hourly_rate", "numeric", "HourlyRate"), ("billable_status", "text", "BillableStatus"),
                                ("description", "text", "Description")),
                        *_VERSIONED)),
    _name_list("Class", "classes", "Lists", *_HIERARCHY, mergeable=True),
    _name_list("Department", "departments", "Lists", *_HIERARCHY),
    _name_list("Term", "terms", "Lists",
               *_plain(("name", "text", "Name"), ("type", "text", "Type"), ("due_days", "integer", "DueDays"),
                       ("discount_percent", "numeric", "DiscountPercent"), ("discount_days", "integer", "DiscountDays"))),
    _name_list("PaymentMethod", "payment_methods", "Lists", *_plain(("name", "text", "Name"), ("type", "text", "Type"))),
    _name_list("Item", "items", "Lists",
               *_plain(("name", "text", "Name"), ("sku", "text", "Sku"), ("type", "text", "Type"),
                       ("unit_price", "numeric", "UnitPrice"), ("purchase_cost", "numeric", "PurchaseCost"),
                       ("qty_on_hand", "numeric", "QtyOnHand")), mergeable=True),
    _name_list("TaxCode", "tax_codes", "Lists",
               *_plain(("name", "text", "Name"), ("description", "text", "Description"), ("taxable", "boolean", "Taxable"),
                       ("tax_group", "boolean", "TaxGroup")), cdc=False),
    _name_list("TaxRate", "tax_rates", "Lists",
               *_plain(("name", "text", "Name"), ("description", "text", "Description"),
                       ("rate_value", "numeric", "RateValue")),
               _col("agency_id", "text", ("AgencyRef", "value")), cdc=False),
    EntitySpec(name="TaxAgency", table="tax_agencies", group="Lists", hard_deletable=False, cdc=False,
               columns=(_col("display_name", "text", ("DisplayName",)), *_VERSIONED)),
)}

ENTITY_NAMES: tuple[str, ...] = tuple(ENTITIES)
assert [s.group for s in ENTITIES.values()] == sorted((s.group for s in ENTITIES.values()), key=GROUPS.index), \
    "ENTITIES are declared group by group, in GROUPS order"


def get_spec(name: str) -> EntitySpec:
    """The spec for a QBO entity name, case-insensitively; ValueError naming the choices."""
    for spec_name, spec in ENTITIES.items():
        if spec_name.lower() == name.strip().lower():
            return spec
    raise ValueError(f"unknown entity {name!r}: choose one of {', '.join(ENTITY_NAMES)}")
