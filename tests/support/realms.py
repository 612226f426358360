"""Emulator companies with stored tokens, and exact comparisons of PostgreSQL with the emulator.

- `create_realm_with_tokens`: a new emulator company whose tokens are stored the way
  `qbsync token add` stores them (the token tests; empty company unless sizes are given).
- `connect_realm`: the same with data, request counters then reset (the sync tests).
- `assert_exact`: for every synced entity (SPEC sections 8 and 10), every column, every line by
  position, every LinkedTxn and `raw` equal what the emulator serves (parsed with Decimal), and
  the deleted rows equal its deletions.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from services.model.entities import ENTITIES, ENTITY_NAMES, parse_time

__all__ = ["create_realm_with_tokens", "connect_realm", "assert_exact", "data_calls", "snapshot", "served_versions",
           "ok", "realm_synced", "request_status", "linked_txns", "SYNCED", "CDC_SYNCED"]

DATA_KEYS = ("query", "cdc", "read", "companyinfo")
SYNCED = tuple(name for name in ENTITY_NAMES if not ENTITIES[name].company)  # every entity table
# what CDC and webhooks keep current; the swept ones (TimeActivity...) can change as a side effect of
# another change (a merged customer's time re-pointed) and wait for their daily sweep
CDC_SYNCED = tuple(name for name in SYNCED if ENTITIES[name].cdc_supported)


def create_realm_with_tokens(db, settings, emulator, *, access_expires_in: int = 3600,
                             customers: int = 0, items: int = 0, invoices: int = 0, estimates: int = 0,
                             **realm_kw: Any) -> tuple[str, dict]:
    """A new emulator company (no data unless sizes are given; `realm_kw` such as company_name
    goes to the emulator's create_realm) whose freshly issued tokens are stored in the database
    as `qbsync token add` stores them. Returns (realm id, the issued token response)."""
    from services.tokens.vault import add_tokens

    realm_id = emulator.admin.create_realm(customers=customers, items=items, invoices=invoices, estimates=estimates,
                                           **realm_kw)
    issued = emulator.admin.issue_tokens(realm_id, access_expires_in=access_expires_in)
    add_tokens(db, settings, realm_id, issued["refresh_token"], access_token=issued["access_token"],
               expires_in=access_expires_in)
    return realm_id, issued


def connect_realm(db, settings, emulator, **realm_kw: Any) -> str:
    """An emulator company with tokens stored the way `qbsync token add` stores them, and the
    emulator's request counters reset, so a test counts only its own calls."""
    realm, _ = create_realm_with_tokens(db, settings, emulator, **realm_kw)
    emulator.admin.reset_counts()
    return realm


def _expected(sql_type: str, value: Any) -> Any:
    if value is None:
        return None
    if sql_type == "timestamptz":
        return parse_time(value)
    if sql_type == "date":
        return date.fromisoformat(value)
    if sql_type == "numeric":
        return str(value)
    return value


def _actual(sql_type: str, value: Any) -> Any:
    if value is not None and sql_type == "numeric":
        return str(value)
    return value


def assert_exact(db, emulator, realm: str, entities: tuple[str, ...] = SYNCED) -> None:
    """Every synced table equals the emulator's data for `realm`, digit for digit."""
    with db.transaction() as conn:
        for name in entities:
            spec = ENTITIES[name]
            served = {o["Id"]: o for o in emulator.admin.entities(realm, name)}
            every = emulator.admin.entities(realm, name, include_deleted=True)
            deleted = {o["Id"] for o in every if o.get("status") == "Deleted"}
            cols = [c.name for c in spec.columns]
            rows = conn.execute(
                f"SELECT id, raw::text, deleted_at IS NOT NULL, {', '.join(cols)} FROM {spec.qualified_table}"
                " WHERE realm_id = %s", (realm,)).fetchall()
            live = {r[0]: r for r in rows if not r[2]}
            assert set(live) == set(served), f"{name}: live ids differ"
            state = conn.execute("SELECT row_count FROM quickbooks.sync_state WHERE realm_id = %s AND entity = %s"
                                 " AND last_run_status = 'success'", (realm, name)).fetchone()
            assert state is None or state[0] == len(served), f"{name}: sync_state.row_count"
            assert {r[0] for r in rows if r[2]} == deleted, f"{name}: deleted ids differ"
            for ident, obj in served.items():
                row = live[ident]
                assert json.loads(row[1], parse_float=Decimal) == obj, f"{name} {ident}: raw differs"
                for column, value in zip(spec.columns, row[3:]):
                    want = _expected(column.sql_type, column.extract(obj))
                    assert _actual(column.sql_type, value) == want, f"{name} {ident}.{column.name}"
            if spec.line is None:
                continue
            lcols = [c.name for c in spec.line.columns]
            lines: dict[str, list[tuple]] = {}
            for r in conn.execute(
                    f"SELECT {spec.line.fk}, position, {', '.join(lcols)} FROM quickbooks.{spec.line.table}"
                    " WHERE realm_id = %s ORDER BY 1, 2", (realm,)):
                lines.setdefault(r[0], []).append(r[1:])
            for ident, obj in served.items():
                want_lines = [tuple([pos] + [_expected(c.sql_type, c.extract(li)) for c in spec.line.columns])
                              for pos, li in enumerate(obj.get("Line", []))]
                got = [tuple([r[0]] + [_actual(c.sql_type, v) for c, v in zip(spec.line.columns, r[1:])])
                       for r in lines.get(ident, [])]
                assert got == want_lines, f"{name} {ident}: lines differ"
        for name in entities:
            if not ENTITIES[name].linked_txns:
                continue
            stored = sorted(conn.execute(
                "SELECT txn_id, line_position, position, linked_txn_id, linked_txn_type, linked_txn_line_id"
                " FROM quickbooks.linked_txns WHERE realm_id = %s AND entity = %s", (realm, name)).fetchall())
            live_ids = {o["Id"] for o in emulator.admin.entities(realm, name)}
            assert sorted(r for r in stored if r[0] in live_ids) == linked_txns(
                emulator.admin.entities(realm, name)), f"{name}: linked_txns differ"
        info = emulator.admin.entities(realm, "CompanyInfo")[0]
        row = conn.execute("SELECT name, legal_name, country, raw::text FROM quickbooks.companies WHERE id = %s",
                           (realm,)).fetchone()
        assert row[:3] == (info.get("CompanyName"), info.get("LegalName"),
                           info.get("Country") or (info.get("CompanyAddr") or {}).get("Country"))
        assert json.loads(row[3], parse_float=Decimal) == info


def linked_txns(objects: list[dict]) -> list[tuple]:
    """The quickbooks.linked_txns rows of these documents, sorted (SPEC section 10)."""
    rows = []
    for obj in objects:
        entries = [(-1, obj.get("LinkedTxn") or [])]
        entries += [(pos, line.get("LinkedTxn") or []) for pos, line in enumerate(obj.get("Line") or [])]
        for line_position, linked in entries:
            rows += [(obj["Id"], line_position, i, lt.get("TxnId"), lt.get("TxnType"), lt.get("TxnLineId"))
                     for i, lt in enumerate(linked)]
    return sorted(rows)


def data_calls(emulator, realm: str) -> dict[str, int]:
    """The emulator's data-call counters for `realm` (query, cdc, read, companyinfo), 0 when absent."""
    counts = emulator.admin.request_counts(realm)
    return {k: counts.get(k, 0) for k in DATA_KEYS}


def snapshot(db, realm: str) -> dict[tuple[str, str], tuple]:
    """(synced_at, qbo_updated_at, deleted_at) of every synced row of `realm`, keyed by (entity, id)."""
    out = {}
    with db.transaction() as conn:
        for name in SYNCED:
            table = ENTITIES[name].qualified_table
            for ident, synced, updated, deleted in conn.execute(
                    f"SELECT id, synced_at, qbo_updated_at, deleted_at FROM {table} WHERE realm_id = %s", (realm,)):
                out[(name, ident)] = (synced, updated, deleted)
    return out


def served_versions(emulator, realm: str) -> dict[tuple[str, str], str]:
    """Every object the emulator holds for `realm` (deleted ones too) as canonical JSON, keyed by (entity, id)."""
    out = {}
    for name in SYNCED:
        for obj in emulator.admin.entities(realm, name, include_deleted=True):
            out[(name, obj["Id"])] = json.dumps(obj, sort_keys=True, default=str)
    return out


def ok(outcomes) -> bool:
    """True when every sync outcome succeeded."""
    return all(o.status == "success" for o in outcomes)


def realm_synced(db, realm: str) -> bool:
    """True once every entity of `realm` has a successful last run."""
    with db.transaction() as conn:
        return conn.execute("SELECT count(*) FROM quickbooks.sync_state WHERE realm_id = %s"
                            " AND last_run_status = 'success'", (realm,)).fetchone()[0] == len(ENTITY_NAMES)


def request_status(db, request_id: int) -> str:
    """The status of one quickbooks.sync_requests row."""
    with db.transaction() as conn:
        return conn.execute("SELECT status FROM quickbooks.sync_requests WHERE id = %s", (request_id,)).fetchone()[0]
