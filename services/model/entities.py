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
from dataclasses import dataclass, field
from datetime import datetime
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

    def sql_expr(self, src: str) -> str:
        """SQL computing this column from the jsonb expression `src` (same result as `extract`)."""
        if self.sql is not None:
            return self.sql.format(src=src)
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


# Line item columns (SPEC section 8: estimate_line_items and invoice_line_items).
LINE_COLUMNS: tuple[Column, ...] = (
    _col("line_id", "text", ("Id",)),
    _col("line_num", "integer", ("LineNum",)),
    _col("detail_type", "text", ("DetailType",)),
    _col("description", "text", ("Description",)),
    _col("amount", "numeric", ("Amount",)),
    _col("item_id", "text", ("SalesItemLineDetail", "ItemRef", "value")),
    _col("item_name", "text", ("SalesItemLineDetail", "ItemRef", "name")),
    _col("qty", "numeric", ("SalesItemLineDetail", "Qty")),
    _col("unit_price", "numeric", ("SalesItemLineDetail", "UnitPrice")),
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
    fetched with `company_info()` instead of query/CDC.
    """

    name: str
    table: str
    columns: tuple[Column, ...]
    line: LineSpec | None = None
    name_list: bool = False
    hard_deletable: bool = True
    mergeable: bool = False
    company: bool = False
    insert_only: tuple[str, ...] = field(default=())   # columns never overwritten on update

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
        return not self.company

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

ENTITIES: dict[str, EntitySpec] = {spec.name: spec for spec in (
    EntitySpec(
        name="CompanyInfo", table="companies", company=True, hard_deletable=False,
        columns=(
            _col("name", "text", ("CompanyName",)),
            _col("legal_name", "text", ("LegalName",)),
            _col("country", "text", _company_country,
                 sql="COALESCE(NULLIF({src} ->> 'Country', ''), {src} #>> '{{CompanyAddr,Country}}')"),
            _col("last_updated", "timestamptz", ("MetaData", "LastUpdatedTime")),
        ),
    ),
    EntitySpec(
        name="Customer", table="customers", name_list=True, hard_deletable=False, mergeable=True,
        columns=(
            _col("display_name", "text", ("DisplayName",)),
            _col("company_name", "text", ("CompanyName",)),
            _col("given_name", "text", ("GivenName",)),
            _col("family_name", "text", ("FamilyName",)),
            _col("email", "text", ("PrimaryEmailAddr", "Address")),
            _col("phone", "text", ("PrimaryPhone", "FreeFormNumber")),
            _col("active", "boolean", ("Active",)),
            _col("balance", "numeric", ("Balance",)),
            _col("currency", "text", ("CurrencyRef", "value")),
            *_VERSIONED,
        ),
    ),
    EntitySpec(
        name="Item", table="items", name_list=True, hard_deletable=False, mergeable=True,
        columns=(
            _col("name", "text", ("Name",)),
            _col("sku", "text", ("Sku",)),
            _col("type", "text", ("Type",)),
            _col("active", "boolean", ("Active",)),
            _col("unit_price", "numeric", ("UnitPrice",)),
            _col("purchase_cost", "numeric", ("PurchaseCost",)),
            _col("qty_on_hand", "numeric", ("QtyOnHand",)),
            *_VERSIONED,
        ),
    ),
    EntitySpec(
        name="Estimate", table="estimates",
        line=LineSpec("estimate_line_items", "estimate_id"),
        columns=(
            _col("doc_number", "text", ("DocNumber",)),
            _col("txn_date", "date", ("TxnDate",)),
            _col("expiration_date", "date", ("ExpirationDate",)),
            _col("txn_status", "text", ("TxnStatus",)),
            _col("customer_id", "text", ("CustomerRef", "value")),
            _col("customer_name", "text", ("CustomerRef", "name")),
            _col("total_amt", "numeric", ("TotalAmt",)),
            _col("currency", "text", ("CurrencyRef", "value")),
            _col("email_status", "text", ("EmailStatus",)),
            *_VERSIONED,
        ),
    ),
    EntitySpec(
        name="Invoice", table="invoices",
        line=LineSpec("invoice_line_items", "invoice_id"),
        columns=(
            _col("doc_number", "text", ("DocNumber",)),
            _col("txn_date", "date", ("TxnDate",)),
            _col("due_date", "date", ("DueDate",)),
            _col("customer_id", "text", ("CustomerRef", "value")),
            _col("customer_name", "text", ("CustomerRef", "name")),
            _col("total_amt", "numeric", ("TotalAmt",)),
            _col("balance", "numeric", ("Balance",)),
            _col("currency", "text", ("CurrencyRef", "value")),
            _col("email_status", "text", ("EmailStatus",)),
            *_VERSIONED,
        ),
    ),
)}

ENTITY_NAMES: tuple[str, ...] = tuple(ENTITIES)


def get_spec(name: str) -> EntitySpec:
    """The spec for a QBO entity name, case-insensitively; ValueError naming the choices."""
    for spec_name, spec in ENTITIES.items():
        if spec_name.lower() == name.strip().lower():
            return spec
    raise ValueError(f"unknown entity {name!r}: choose one of {', '.join(ENTITY_NAMES)}")
