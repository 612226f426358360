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


class _Statements:
    """SQL text for one spec, built once. Batches are staged as (id, raw jsonb) only: every
    column and every line is extracted by PostgreSQL from `raw` (`Column.sql_expr`), which
    is the same mapping as the Python extractors and keeps the client's CPU for parsing."""

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
        self.line_delete = self.line_insert_all = self.line_insert_some = None
        if spec.line is not None:
            line = spec.line
            lcols = [c.name for c in line.columns]
            lexprs = [c.sql_expr("l.value") for c in line.columns]
            lq = f"quickbooks.{line.table}"
            self.line_delete = f"DELETE FROM {lq} WHERE realm_id = %s AND {line.fk} = ANY(%s)"
            insert = (
                f"INSERT INTO {lq} (realm_id, {line.fk}, position, {', '.join(lcols)})"
                f" SELECT %s, s.id, (l.ord - 1)::integer, {', '.join(lexprs)}"
                f" FROM {self.stage} s CROSS JOIN LATERAL jsonb_array_elements("
                f"CASE WHEN jsonb_typeof(s.raw -> 'Line') = 'array' THEN s.raw -> 'Line' ELSE '[]'::jsonb END)"
                f" WITH ORDINALITY AS l(value, ord)"
                f" WHERE jsonb_typeof(l.value) = 'object'"
            )
            self.line_insert_all = insert
            self.line_insert_some = insert + " AND s.id = ANY(%s)"
        self.page_upsert, self.page_lines = self._page_statements(spec, cols, exprs, updates)

    def _page_statements(self, spec: EntitySpec, cols: list[str], exprs: list[str],
                         updates: str) -> tuple[str, tuple[str, str] | None]:
        """One statement per query page as served: PostgreSQL parses the page once, splits
        `QueryResponse -> key` into objects, upserts them newer-wins and inserts the lines of
        the documents it inserted; it returns (every id, written ids, ids of written rows that
        existed before). The lines of those updated documents are replaced by `page_lines`
        (deleting and inserting the same line keys within one statement is not safe), reading the stored raw, so nothing is parsed twice."""
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
        if spec.line is None:
            upsert += " SELECT (SELECT array_agg(id) FROM s), (SELECT array_agg(id) FROM w), NULL::text[]"
            return upsert, None
        line = spec.line
        lcols = [c.name for c in line.columns]
        lexprs = [c.sql_expr("l.value") for c in line.columns]
        lq = f"quickbooks.{line.table}"

        def lines_from(src: str) -> str:
            return (f"INSERT INTO {lq} (realm_id, {line.fk}, position, {', '.join(lcols)})"
                    f" SELECT %(realm)s, {src}.id, (l.ord - 1)::integer, {', '.join(lexprs)}"
                    f" FROM {src} CROSS JOIN LATERAL jsonb_array_elements("
                    f"CASE WHEN jsonb_typeof({src}.raw -> 'Line') = 'array' THEN {src}.raw -> 'Line'"
                    f" ELSE '[]'::jsonb END) WITH ORDINALITY AS l(value, ord)"
                    f" WHERE jsonb_typeof(l.value) = 'object'")
        upsert += (f", l AS ({lines_from('w')} AND NOT w.updated)"
                   " SELECT (SELECT array_agg(id) FROM s), (SELECT array_agg(id) FROM w),"
                   " (SELECT array_agg(id) FROM w WHERE updated)")
        relines = (f"DELETE FROM {lq} WHERE realm_id = %(realm)s AND {line.fk} = ANY(%(ids)s)",
                   lines_from("t").replace("FROM t CROSS", f"FROM {spec.qualified_table} AS t CROSS")
                   + " AND t.realm_id = %(realm)s AND t.id = ANY(%(ids)s)")
        return upsert, relines


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
        _write_staged(cur, spec, st, realm_id, len(batch), result)
    return result


def _write_staged(cur: psycopg.Cursor, spec: EntitySpec, st: _Statements, realm_id: str, staged: int,
                  result: UpsertResult) -> None:
    """Upsert the staged (id, raw) rows newer-wins and replace the written documents' lines."""
    cur.execute(st.upsert, {"realm": realm_id})
    written = [row[0] for row in cur.fetchall()]
    result.written = len(written)
    result.skipped = staged - len(written)
    result.written_ids = written
    if spec.line is not None and written:
        assert st.line_delete and st.line_insert_all and st.line_insert_some  # built for every spec with lines
        cur.execute(st.line_delete, (realm_id, written))
        if len(written) == staged:
            cur.execute(st.line_insert_all, (realm_id,))
        else:
            cur.execute(st.line_insert_some, (realm_id, written))


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
        if updated and st.page_lines is not None:
            for statement in st.page_lines:
                cur.execute(statement, {"realm": realm_id, "ids": updated})
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
