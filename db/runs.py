"""The one writer of `quickbooks.sync_runs` and `quickbooks.sync_state` (SPEC section 6: every run
recorded per (realm, entity)).

A run is a `sync_runs` row: opened 'running' by `start_run`, closed by `finish_run` (which also
updates the entity's `sync_state`: last run, status, error, row count, next run), or written
whole by `record_run` (an inbox application, which is one transaction). The cursor moves only
through `advance_cursor`, inside the transaction that commits the data it covers, and never back.
A first load remembers how far it is committed (`record_listing_progress`, in each page's
transaction: `listing_time`, `listing_resume_position`) until `advance_cursor` clears it.
`sync_state.row_count` is the count of live rows, recounted only when a run changed rows, so an
hourly run with nothing to do costs no scan of the entity table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from db.connection import scalar
from services.model.entities import EntitySpec

__all__ = ["RunRecord", "start_run", "finish_run", "record_run", "advance_cursor", "record_listing_progress",
           "entity_states", "recount_rows"]


@dataclass
class RunRecord:
    """What a finished run did (the columns `finish_run`/`record_run` write)."""

    status: str
    kind: str
    rows_fetched: int = 0
    rows_upserted: int = 0
    rows_deleted: int = 0
    api_calls: int = 0
    error: str | None = None

    @property
    def changed_rows(self) -> bool:
        return bool(self.rows_upserted or self.rows_deleted)


def start_run(conn: psycopg.Connection, realm_id: str, entity: str, kind: str, trigger: str) -> int:
    """Open a run ('running') and return its id."""
    return int(scalar(
        conn, "INSERT INTO quickbooks.sync_runs (realm_id, entity, kind, trigger, status)"
        " VALUES (%s, %s, %s, %s, 'running') RETURNING id", (realm_id, entity, kind, trigger)))


def finish_run(conn: psycopg.Connection, spec: EntitySpec, realm_id: str, run_id: int, run: RunRecord,
               next_run_in: timedelta) -> None:
    """Close run `run_id` and update the entity's sync_state (created if new, row count counted)."""
    conn.execute(
        "UPDATE quickbooks.sync_runs SET finished_at = now(), status = %s, kind = %s,"
        " rows_fetched = %s, rows_upserted = %s, rows_deleted = %s, api_calls = %s, error = %s"
        " WHERE id = %s",
        (run.status, run.kind, run.rows_fetched, run.rows_upserted, run.rows_deleted, run.api_calls,
         run.error, run_id))
    recount = run.changed_rows or run.kind == "full"
    conn.execute(
        "INSERT INTO quickbooks.sync_state AS s (realm_id, entity, last_run_id, last_run_status,"
        " last_error, last_success_at, row_count, next_run_at, updated_at)"
        " VALUES (%(realm)s, %(entity)s, %(run)s, %(status)s, %(error)s,"
        " CASE WHEN %(status)s = 'success' THEN now() END,"
        " CASE WHEN %(recount)s OR NOT EXISTS (SELECT 1 FROM quickbooks.sync_state"
        f" WHERE realm_id = %(realm)s AND entity = %(entity)s) THEN ({spec.live_count_sql}) ELSE 0 END,"
        " now() + %(interval)s, now())"
        " ON CONFLICT (realm_id, entity) DO UPDATE SET last_run_id = EXCLUDED.last_run_id,"
        " last_run_status = EXCLUDED.last_run_status, last_error = EXCLUDED.last_error,"
        " last_success_at = COALESCE(EXCLUDED.last_success_at, s.last_success_at),"
        " row_count = CASE WHEN %(recount)s THEN EXCLUDED.row_count ELSE s.row_count END,"
        " next_run_at = EXCLUDED.next_run_at, updated_at = now()",
        {"realm": realm_id, "entity": spec.name, "run": run_id, "status": run.status, "error": run.error,
         "interval": next_run_in, "recount": recount})


def record_run(conn: psycopg.Connection, spec: EntitySpec, realm_id: str, run: RunRecord, trigger: str) -> None:
    """A run done within the caller's transaction (started now, finished now); recounts the rows
    of an entity whose state exists when the run changed rows. It does not touch the schedule."""
    conn.execute(
        "INSERT INTO quickbooks.sync_runs (realm_id, entity, kind, trigger, started_at, finished_at, status,"
        " rows_fetched, rows_upserted, rows_deleted, api_calls, error)"
        " VALUES (%s, %s, %s, %s, now(), clock_timestamp(), %s, %s, %s, %s, %s, %s)",
        (realm_id, spec.name, run.kind, trigger, run.status, run.rows_fetched, run.rows_upserted,
         run.rows_deleted, run.api_calls, run.error))
    if run.changed_rows:
        recount_rows(conn, spec, realm_id)


def recount_rows(conn: psycopg.Connection, spec: EntitySpec, realm_id: str) -> None:
    """Set sync_state.row_count to the live rows of (realm, entity), if that state exists."""
    conn.execute(f"UPDATE quickbooks.sync_state SET row_count = ({spec.live_count_sql}), updated_at = now()"
                 " WHERE realm_id = %(realm)s AND entity = %(entity)s", {"realm": realm_id, "entity": spec.name})


def advance_cursor(conn: psycopg.Connection, realm_id: str, entity: str, cursor: datetime, *, full: bool) -> None:
    """Move the cursor forward (never back) in the caller's data transaction; `full` marks a
    complete listing (last_full_sync_at: a full load, `--full`, or the sweep of an entity outside CDC).
    A cursor ends any unfinished first load: its remembered listing is cleared."""
    conn.execute(
        "INSERT INTO quickbooks.sync_state AS s (realm_id, entity, cursor, last_full_sync_at)"
        " VALUES (%s, %s, %s, CASE WHEN %s THEN now() END)"
        " ON CONFLICT (realm_id, entity) DO UPDATE SET"
        " cursor = GREATEST(s.cursor, EXCLUDED.cursor),"
        " last_full_sync_at = COALESCE(EXCLUDED.last_full_sync_at, s.last_full_sync_at),"
        " listing_time = NULL, listing_resume_position = NULL, updated_at = now()",
        (realm_id, entity, cursor, full))


def record_listing_progress(conn: psycopg.Connection, realm_id: str, entity: str, listing_time: datetime,
                            resume_at: int) -> None:
    """In a page's transaction of a first load: every row below STARTPOSITION `resume_at` of the
    listing whose first page QBO served at `listing_time` is committed (with this transaction).

    Only while the entity has no cursor (a listing that finishes after another one set the cursor
    records nothing). Progress never goes back within one listing; a listing with another
    `listing_time` replaces what an earlier one left. A row created here is due at once, as an
    entity never run is, so a process dying mid-load leaves its realm due for whoever takes it.
    """
    conn.execute(
        "INSERT INTO quickbooks.sync_state AS s (realm_id, entity, listing_time, listing_resume_position,"
        " next_run_at) VALUES (%s, %s, %s, %s, now())"
        " ON CONFLICT (realm_id, entity) DO UPDATE SET"
        " listing_resume_position = CASE WHEN s.listing_time = EXCLUDED.listing_time"
        "   THEN GREATEST(s.listing_resume_position, EXCLUDED.listing_resume_position)"
        "   ELSE EXCLUDED.listing_resume_position END,"
        " listing_time = EXCLUDED.listing_time, updated_at = now()"
        " WHERE s.cursor IS NULL",
        (realm_id, entity, listing_time, resume_at))


def entity_states(conn: psycopg.Connection, realm_id: str) -> dict[str, dict[str, Any]]:
    """Per entity of the realm: cursor, last_success_at, last_full_sync_at, and an unfinished
    first load's listing_time and listing_resume_position (None when there is none)."""
    rows = conn.execute(
        "SELECT entity, cursor, last_success_at, last_full_sync_at, listing_time, listing_resume_position"
        " FROM quickbooks.sync_state WHERE realm_id = %s", (realm_id,)).fetchall()
    return {e: {"cursor": c, "last_success_at": s, "last_full_sync_at": f, "listing_time": lt,
                "listing_resume_position": ra} for e, c, s, f, lt, ra in rows}
