"""Batched, idempotent, newer-wins writes of QBO objects into the SPEC section 8 tables.

Every function works inside the caller's transaction (one transaction per page or batch)
and never commits. A batch goes through COPY into a transaction-scoped temp table, then one
`INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE <newer>`:

- an update applies only when the incoming MetaData.LastUpdatedTime is newer than the stored
  `qbo_updated_at`, or equal with a numerically higher SyncToken; a row marked deleted is
  only revived by a version newer than its `deleted_at`. Re-applying the same version
  changes nothing (not even `synced_at`).
- line items are replaced (delete + insert by `position`, the 0-based index in `Line`)
  only for the documents whose row was actually written, in the same transaction.
- `raw` is the object exactly as QBO sent it: Decimals are written back with their own
  digits (`dump_raw`), and jsonb keeps numeric scale.
- deletes set `deleted_at` (rows are kept); a delete older than the stored version does not
  apply; a delete of an unknown id leaves a tombstone so an older copy arriving later cannot
  resurrect it. Merges also set `merged_into`.

Temp tables are `ON COMMIT DROP` and all locks transaction-scoped, so this works through
PgBouncer in transaction mode (Neon's pooled endpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from services.model.entities import EntitySpec, meta_updated, parse_time

__all__ = [
    "UpsertResult", "PreparedBatch", "prepare_batch", "dump_raw", "apply_objects", "upsert_objects", "upsert_page",
    "upsert_company", "ensure_company",
    "mark_deleted", "mark_merged", "reconcile_missing", "is_delete_marker", "newest_per_id",
]


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def dump_raw(obj: Any) -> str:
    """JSON text of a QBO object with every Decimal written with exactly its own digits."""
    return orjson.dumps(obj, default=_default).decode()


def is_delete_marker(obj: dict) -> bool:
    """True for CDC's `{"status": "Deleted", "Id": ..., "MetaData": {"LastUpdatedTime": ...}}`."""
    return obj.get("status") == "Deleted"


def _token_num(token: Any) -> int:
    try:
        return int(token)
    except (TypeError, ValueError):
        return -1


def newest_per_id(objects: Iterable[dict]) -> list[dict]:
    """One object per Id: the newest by (LastUpdatedTime, SyncToken), first-seen order kept."""
    best: dict[str, dict] = {}
    for obj in objects:
        key = str(obj.get("Id"))
        current = best.get(key)
        if current is None:
            best[key] = obj
            continue
        a = (parse_time(meta_updated(obj)), _token_num(obj.get("SyncToken")))
        b = (parse_time(meta_updated(current)), _token_num(current.get("SyncToken")))
        if _newer(a, b) or (is_delete_marker(obj) and a[0] is not None and b[0] is not None and a[0] >= b[0]):
            best[key] = obj
    return list(best.values())


def _newer(a: tuple, b: tuple) -> bool:
    if a[0] is None:
        return False
    if b[0] is None:
        return True
    return a[0] > b[0] or (a[0] == b[0] and a[1] > b[1])


@dataclass
class UpsertResult:
    """What one batch did: rows written (inserted or updated), skipped as not newer, deleted."""

    received: int = 0
    written: int = 0
    skipped: int = 0
    deleted: int = 0
    written_ids: list[str] = field(default_factory=list)
    present_ids: list[str] = field(default_factory=list)  # upsert_page: every id the page held

    def add(self, other: UpsertResult) -> None:
        self.received += other.received
        self.written += other.written
        self.skipped += other.skipped
        self.deleted += other.deleted
        self.written_ids.extend(other.written_ids)


_TOKEN_SQL = "(CASE WHEN {0} ~ '^[0-9]+$' THEN {0}::numeric END)"


def _newer_sql(incoming: str, stored: str) -> str:
    """SQL: the incoming version beats the stored one (see module docstring)."""
    tok_in = _TOKEN_SQL.format(f"{incoming}.sync_token")
    tok_st = _TOKEN_SQL.format(f"{stored}.sync_token")
    return (
        f"CASE WHEN {stored}.deleted_at IS NOT NULL"
        f" THEN {incoming}.qbo_updated_at > {stored}.deleted_at"
        f" WHEN {stored}.qbo_updated_at IS NULL THEN true"
        f" WHEN {incoming}.qbo_updated_at IS NULL THEN false"
        f" ELSE {incoming}.qbo_updated_at > {stored}.qbo_updated_at"
        f" OR ({incoming}.qbo_updated_at = {stored}.qbo_updated_at AND {tok_in} > {tok_st}) END"
    )


def _array(expr: str) -> str:
    """A jsonb array expression, or an empty array when QBO sent something else (or nothing)."""
    return f"CASE WHEN jsonb_typeof({expr}) = 'array' THEN {expr} ELSE '[]'::jsonb END"


@dataclass(frozen=True)
class _Child:
    """Rows derived from a document's `raw` and replaced with it: its lines, its LinkedTxn
    entries. `insert_from(src, source)` inserts the rows of the documents `source` yields under
    the alias `src` (columns id, raw), ending in a WHERE clause callers may extend with AND."""

    delete: str
    select: str          # "INSERT ... SELECT ... FROM {source} CROSS JOIN LATERAL ... WHERE ..."

    def insert_from(self, src: str, source: str | None = None) -> str:
        return self.select.format(src=src, source=source or src)


def _line_child(spec: EntitySpec) -> _Child:
    assert spec.line is not None
    line = spec.line
    lq = f"quickbooks.{line.table}"
    cols = ", ".join(c.name for c in line.columns)
    exprs = ", ".join(c.sql_expr("l.value") for c in line.columns).replace("{", "{{").replace("}", "}}")
    lines = _array("{src}.raw -> 'Line'")
    return _Child(
        delete=f"DELETE FROM {lq} WHERE realm_id = %(realm)s AND {line.fk} = ANY(%(ids)s)",
        select=(f"INSERT INTO {lq} (realm_id, {line.fk}, position, {cols})"
                f" SELECT %(realm)s, {{src}}.id, (l.ord - 1)::integer, {exprs}"
                f" FROM {{source}} CROSS JOIN LATERAL jsonb_array_elements({lines})"
                " WITH ORDINALITY AS l(value, ord) WHERE jsonb_typeof(l.value) = 'object'"))


def _linked_child(spec: EntitySpec) -> _Child:
    """quickbooks.linked_txns rows: the header's LinkedTxn (line_position -1), then each line's."""
    entity = spec.name
    header = _array("{src}.raw -> 'LinkedTxn'")
    lines = _array("{src}.raw -> 'Line'")
    per_line = _array("l.value -> 'LinkedTxn'")
    return _Child(
        delete=("DELETE FROM quickbooks.linked_txns WHERE realm_id = %(realm)s"
                f" AND entity = '{entity}' AND txn_id = ANY(%(ids)s)"),
        select=("INSERT INTO quickbooks.linked_txns (realm_id, entity, txn_id, line_position, position,"
                " linked_txn_id, linked_txn_type, linked_txn_line_id)"
                f" SELECT %(realm)s, '{entity}', {{src}}.id, x.line_position, x.position,"
                " x.value ->> 'TxnId', x.value ->> 'TxnType', x.value ->> 'TxnLineId'"
                " FROM {source} CROSS JOIN LATERAL ("
                f"SELECT -1 AS line_position, (h.ord - 1)::integer AS position, h.value"
                f" FROM jsonb_array_elements({header}) WITH ORDINALITY AS h(value, ord)"
                f" UNION ALL SELECT (l.ord - 1)::integer, (h.ord - 1)::integer, h.value"
                f" FROM jsonb_array_elements({lines}) WITH ORDINALITY AS l(value, ord)"
                f" CROSS JOIN LATERAL jsonb_array_elements({per_line}) WITH ORDINALITY AS h(value, ord)"
                ") AS x WHERE jsonb_typeof(x.value) = 'object'"))


class _Statements:
    """SQL text for one spec, built once. Batches are staged as (id, raw jsonb) only: every
    column, every line and every LinkedTxn is extracted by PostgreSQL from `raw`
    (`Column.sql_expr`), which is the same mapping as the Python extractors and keeps the
    client's CPU for parsing."""

    def __init__(self, spec: EntitySpec) -> None:
        cols = [c.name for c in spec.columns]
        exprs = [c.sql_expr("s.raw") for c in spec.columns]
        self.stage = f"_qbs_stage_{spec.table}"
        self.create_stage = f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} (id text, raw jsonb) ON COMMIT DROP"
        self.copy_stage = f"COPY {self.stage} (id, raw) FROM STDIN"
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
        self.upsert = (
            f"INSERT INTO {spec.qualified_table} AS t (realm_id, id, {', '.join(cols)}, raw, deleted_at,"
            f" merged_into, synced_at)"
            f" SELECT %(realm)s, s.id, {', '.join(exprs)}, s.raw, NULL, NULL, now()"
            f" FROM {self.stage} s ORDER BY s.id"
            f" ON CONFLICT (realm_id, id) DO UPDATE SET {updates}, raw = EXCLUDED.raw,"
            f" deleted_at = NULL, merged_into = NULL, synced_at = EXCLUDED.synced_at"
            f" WHERE {_newer_sql('EXCLUDED', 't')}"
            f" RETURNING t.id"
        )
        self.children: list[_Child] = []
        if spec.line is not None:
            self.children.append(_line_child(spec))
        if spec.linked_txns:
            self.children.append(_linked_child(spec))
        self.page_upsert = self._page_upsert(spec, cols, exprs, updates)
        stored = f"{spec.qualified_table} AS t"
        # the children of documents a page updated (rather than inserted) are replaced from the
        # stored raw (deleting and inserting the same child keys within one statement is not safe)
        self.page_rechildren = [
            (child.delete, child.insert_from("t", stored) + " AND t.realm_id = %(realm)s AND t.id = ANY(%(ids)s)")
            for child in self.children]

    def _page_upsert(self, spec: EntitySpec, cols: list[str], exprs: list[str], updates: str) -> str:
        """One statement per query page as served: PostgreSQL parses the page once, splits
        `QueryResponse -> key` into objects, upserts them newer-wins and inserts the children
        (lines, LinkedTxn) of the documents it inserted; it returns (every id, written ids, ids of
        written rows that existed before), whose children `page_rechildren` replaces, reading the
        stored raw, so nothing is parsed twice."""
        upsert = (
            "WITH s AS MATERIALIZED (SELECT e ->> 'Id' AS id, e AS raw"
            " FROM jsonb_array_elements(%(page)s::jsonb -> 'QueryResponse' -> %(key)s) AS e),"
            f" w AS (INSERT INTO {spec.qualified_table} AS t (realm_id, id, {', '.join(cols)}, raw, deleted_at,"
            f" merged_into, synced_at)"
            f" SELECT %(realm)s, s.id, {', '.join(exprs)}, s.raw, NULL, NULL, now() FROM s ORDER BY s.id"
            f" ON CONFLICT (realm_id, id) DO UPDATE SET {updates}, raw = EXCLUDED.raw,"
            f" deleted_at = NULL, merged_into = NULL, synced_at = EXCLUDED.synced_at"
            f" WHERE {_newer_sql('EXCLUDED', 't')}"
            f" RETURNING t.id, t.raw, (t.xmax <> 0) AS updated)")
        for n, child in enumerate(self.children):
            upsert += f", c{n} AS ({child.insert_from('w')} AND NOT w.updated)"
        return upsert + (" SELECT (SELECT array_agg(id) FROM s), (SELECT array_agg(id) FROM w),"
                         " (SELECT array_agg(id) FROM w WHERE updated)")


_STATEMENTS: dict[str, _Statements] = {}


def _statements(spec: EntitySpec) -> _Statements:
    found = _STATEMENTS.get(spec.name)
    if found is None or found.stage != f"_qbs_stage_{spec.table}":
        found = _STATEMENTS[spec.name] = _Statements(spec)
    return found


def _copy_text(value: str) -> str:
    """Escape a value for COPY's text format."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value or "\r" in value or "\t" in value:
        value = value.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return value


@dataclass
class PreparedBatch:
    """Live objects of one entity ready for COPY: their ids and the COPY text of (id, raw).

    A page of 1,000 invoices is ~2 MB as text but ~10x that as parsed Python objects, so
    concurrent listings turn pages into batches as soon as they arrive.
    """

    ids: list[str]
    text: str

    def __len__(self) -> int:
        return len(self.ids)


def prepare_batch(objects: Sequence[dict]) -> PreparedBatch:
    """The COPY form of `objects` (at most one per Id; no delete markers)."""
    ids = [str(obj["Id"]) for obj in objects]
    text = "".join(f"{_copy_text(i)}\t{_copy_text(dump_raw(obj))}\n" for i, obj in zip(ids, objects))
    return PreparedBatch(ids, text)


def upsert_objects(conn: psycopg.Connection, spec: EntitySpec, realm_id: str,
                   objects: Sequence[dict] | PreparedBatch) -> UpsertResult:
    """Write live (non-deleted) QBO objects of one entity newer-wins; replace written docs' lines.

    `objects` must hold at most one object per Id (see `newest_per_id`), or be a PreparedBatch.
    """
    result = UpsertResult(received=len(objects))
    if not len(objects):
        return result
    if spec.company:
        assert not isinstance(objects, PreparedBatch)
        for obj in objects:
            result.add(upsert_company(conn, realm_id, obj))
        return result
    batch = objects if isinstance(objects, PreparedBatch) else prepare_batch(objects)
    st = _statements(spec)
    with conn.cursor() as cur:
        cur.execute(st.create_stage)
        cur.execute(f"TRUNCATE {st.stage}")
        with cur.copy(st.copy_stage) as copy:
            copy.write(batch.text)
        _write_staged(cur, st, realm_id, len(batch), result)
    return result


def _write_staged(cur: psycopg.Cursor, st: _Statements, realm_id: str, staged: int,
                  result: UpsertResult) -> None:
    """Upsert the staged (id, raw) rows newer-wins and replace the written documents' children."""
    cur.execute(st.upsert, {"realm": realm_id})
    written = [row[0] for row in cur.fetchall()]
    result.written = len(written)
    result.skipped = staged - len(written)
    result.written_ids = written
    if not written:
        return
    params = {"realm": realm_id, "ids": written}
    for child in st.children:
        cur.execute(child.delete, params)
        insert = child.insert_from("s", f"{st.stage} AS s")
        cur.execute(insert if len(written) == staged else insert + " AND s.id = ANY(%(ids)s)", params)


def _as_is(body: bytes) -> bytes:
    return body


def upsert_page(conn: psycopg.Connection, spec: EntitySpec, realm_id: str, body: bytes, key: str,
                claim: Callable[[list[str]], list[str]] | None = None) -> UpsertResult:
    """Write the live objects of one query page, given as the JSON body QBO served, newer-wins.

    PostgreSQL parses the body (jsonb keeps every digit, so `raw` and every numeric column are
    exact), splits `QueryResponse -> key` into objects and extracts columns and lines with the
    same mapping as `upsert_objects`; documents written replace their lines. `claim(ids)`
    (optional) gets the page's ids and returns those an earlier page of the same listing
    already had (overlapping pages): they are not counted again (writing them again changed
    nothing, being the same version). The result's `present_ids` are all ids of the page.
    """
    if spec.company:
        raise ValueError("upsert_page is for query pages of ordinary entities")
    st = _statements(spec)
    with conn.cursor() as cur:
        cur.execute(st.page_upsert, {"page": Jsonb(body, dumps=_as_is), "key": key, "realm": realm_id})
        row = cur.fetchone()
        assert row is not None  # an aggregate over the page: always one row
        every, written, updated = row
        every, written = every or [], written or []
        if updated:
            for delete, insert in st.page_rechildren:
                cur.execute(delete, {"realm": realm_id, "ids": updated})
                cur.execute(insert, {"realm": realm_id, "ids": updated})
    repeated = claim(every) if claim is not None else []
    received = len(every) - len(repeated)
    return UpsertResult(received=received, written=len(written), skipped=max(0, received - len(written)),
                        written_ids=written, present_ids=every)


def ensure_company(conn: psycopg.Connection, realm_id: str, name: str | None, environment: str) -> None:
    """The companies row a realm's tokens hang from, before any CompanyInfo is known: created with
    `environment`, its name set when given (a CompanyInfo written later wins over it)."""
    conn.execute(
        "INSERT INTO quickbooks.companies (id, name, environment) VALUES (%s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET name = coalesce(EXCLUDED.name, companies.name), updated_at = now()",
        (realm_id, name, environment))


def upsert_company(conn: psycopg.Connection, realm_id: str, obj: dict,
                   environment: str | None = None) -> UpsertResult:
    """Write CompanyInfo into quickbooks.companies (id = realm id) newer-wins.

    `environment` is used only when the row is created; an existing row keeps its own.
    """
    from services.model.entities import ENTITIES

    spec = ENTITIES["CompanyInfo"]
    values = dict(zip((c.name for c in spec.columns), spec.row(obj)))
    tok = _TOKEN_SQL.format("(EXCLUDED.raw->>'SyncToken')")
    tok_st = _TOKEN_SQL.format("(t.raw->>'SyncToken')")
    row = conn.execute(
        "INSERT INTO quickbooks.companies AS t (id, name, legal_name, country, last_updated, raw,"
        " environment) VALUES (%(id)s, %(name)s, %(legal_name)s, %(country)s, %(last_updated)s,"
        " %(raw)s::jsonb, COALESCE(%(env)s, 'production'))"
        " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, legal_name = EXCLUDED.legal_name,"
        " country = EXCLUDED.country, last_updated = EXCLUDED.last_updated, raw = EXCLUDED.raw,"
        " updated_at = now()"
        " WHERE t.last_updated IS NULL OR t.raw IS NULL"
        " OR EXCLUDED.last_updated > t.last_updated"
        f" OR (EXCLUDED.last_updated = t.last_updated AND {tok} > {tok_st})"
        " RETURNING t.id",
        {**values, "id": realm_id, "raw": dump_raw(obj), "env": environment},
    ).fetchone()
    written = row is not None
    return UpsertResult(received=1, written=int(written), skipped=int(not written),
                        written_ids=[realm_id] if written else [])


def mark_deleted(conn: psycopg.Connection, spec: EntitySpec, realm_id: str,
                 deletions: Sequence[tuple[str, Any]], *, markers: Sequence[dict] | None = None) -> int:
    """Set `deleted_at` for (id, deleted_at) pairs; return how many live rows became deleted.

    A delete older than the stored version (qbo_updated_at > deleted_at) does not apply; an
    already-deleted row keeps its first deletion time. Unknown ids get a tombstone row
    (raw = the CDC marker when given) so that an older copy arriving later stays deleted.
    """
    if not deletions or spec.company:
        return 0
    ids = [str(i) for i, _ in deletions]
    whens = [w for _, w in deletions]
    raws = [dump_raw(m) for m in markers] if markers is not None else [None] * len(ids)
    rows = conn.execute(
        f"INSERT INTO {spec.qualified_table} AS t (realm_id, id, deleted_at, raw, synced_at)"
        " SELECT %s, d.id, d.at, d.raw, now()"
        " FROM unnest(%s::text[], %s::timestamptz[], %s::jsonb[]) AS d(id, at, raw)"
        " ON CONFLICT (realm_id, id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at,"
        " synced_at = EXCLUDED.synced_at"
        " WHERE t.deleted_at IS NULL AND (t.qbo_updated_at IS NULL OR t.qbo_updated_at <= EXCLUDED.deleted_at)"
        " RETURNING (xmax <> 0) AS updated",
        (realm_id, ids, whens, raws),
    ).fetchall()
    return sum(1 for (updated,) in rows if updated)


def mark_merged(conn: psycopg.Connection, spec: EntitySpec, realm_id: str, merged_id: str,
                into_id: str, at: Any) -> int:
    """Mark `merged_id` merged into `into_id` at `at` (deleted_at + merged_into); 1 if applied.

    A row already deleted keeps its deletion time but gains `merged_into`; a row updated after
    `at` is left alone (the merge is older than what is stored).
    """
    row = conn.execute(
        f"INSERT INTO {spec.qualified_table} AS t (realm_id, id, deleted_at, merged_into, synced_at)"
        " VALUES (%s, %s, %s, %s, now())"
        " ON CONFLICT (realm_id, id) DO UPDATE SET deleted_at = COALESCE(t.deleted_at, EXCLUDED.deleted_at),"
        " merged_into = EXCLUDED.merged_into, synced_at = EXCLUDED.synced_at"
        " WHERE (t.merged_into IS DISTINCT FROM EXCLUDED.merged_into)"
        " AND (t.qbo_updated_at IS NULL OR t.qbo_updated_at <= EXCLUDED.deleted_at)"
        " RETURNING t.id",
        (realm_id, str(merged_id), at, str(into_id)),
    ).fetchone()
    return int(row is not None)


def reconcile_missing(conn: psycopg.Connection, spec: EntitySpec, realm_id: str,
                      present_ids: Iterable[str], as_of: Any) -> int:
    """Mark deleted every live local row absent from a complete listing taken at `as_of`.

    Rows changed after `as_of` (qbo_updated_at > as_of) are kept: they are newer than the listing.
    """
    if spec.company:
        return 0
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS _qbs_present (id text PRIMARY KEY) ON COMMIT DROP")
        cur.execute("TRUNCATE _qbs_present")
        with cur.copy("COPY _qbs_present (id) FROM STDIN") as copy:
            for ident in set(present_ids):
                copy.write_row((ident,))
        cur.execute("ANALYZE _qbs_present")
        cur.execute(
            f"UPDATE {spec.qualified_table} AS t SET deleted_at = %s, synced_at = now()"
            " WHERE t.realm_id = %s AND t.deleted_at IS NULL"
            " AND (t.qbo_updated_at IS NULL OR t.qbo_updated_at <= %s)"
            " AND NOT EXISTS (SELECT 1 FROM _qbs_present p WHERE p.id = t.id)",
            (as_of, realm_id, as_of),
        )
        return cur.rowcount


def apply_objects(conn: psycopg.Connection, spec: EntitySpec, realm_id: str,
                  objects: Iterable[dict]) -> UpsertResult:
    """Apply a batch as CDC/query delivers it: newest per Id, delete markers → `mark_deleted`."""
    batch = newest_per_id(objects)
    live = [o for o in batch if not is_delete_marker(o)]
    dead = [o for o in batch if is_delete_marker(o)]
    result = upsert_objects(conn, spec, realm_id, live)
    if dead:
        result.received += len(dead)
        result.deleted += mark_deleted(conn, spec, realm_id,
                                       [(str(o["Id"]), meta_updated(o)) for o in dead], markers=dead)
    return result
