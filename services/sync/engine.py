"""The sync engine: QBO → PostgreSQL per (realm, entity), exact, resumable, recorded.

For each due (realm, entity) (SPEC section 6):
- **full** — no cursor yet, or `--full`: a complete listing (`SELECT *`, ORDERBY Id, MAXRESULTS
  1000; name lists with `Active IN (true,false)`), pages fetched concurrently by Id range (up
  to QBO_MAX_CONCURRENCY in flight for the realm, shared by the entities' listings, which run
  side by side) and written one transaction per page: the page's JSON goes to PostgreSQL as
  served and PostgreSQL splits it, extracts columns and lines and upserts (db/upserts.py
  `upsert_page`), so Python never parses the objects. The cursor is QBO's
  server time of the FIRST page (taken before the rest is read, so nothing changed during the
  load is missed) and is stored only after the last page is committed. `--full` also
  reconciles: live local rows missing from the listing get `deleted_at`. A first load (no
  cursor yet) is resumable: each page's transaction also records in sync_state the listing's
  time and the STARTPOSITION below which every row is committed (the contiguous prefix of
  pages, which complete out of order), so the next run after a kill lists only from 10 rows
  (RESUME_OVERLAP) before there, keeps the remembered time as its cursor-to-be (CDC from it
  brings what changed since), and ends exact: QBO's COUNT of the rows older than the resumed
  listing against the local ones and, only if they differ, an id listing that fetches rows the
  deletes in between shifted below the resume point and marks the deleted ones. `--full`, and
  a remembered listing older than CDC's reach, start over from row 1.
- **cdc** — later runs: one CDC call for all of a realm's due entities from the earliest
  cursor; the new cursor is the response's `time`, stored in the same transaction as the data.
  A response of 1,000 objects is treated as truncated: the entities are asked one by one, and
  an entity still truncated is resolved without CDC (below).
- **window** — an entity whose cursor is older than CDC's 30 days (minus a day of margin, by
  QBO's clock), whose CDC call QBO refuses as "older than fixed days" (QBO's clock is ahead of
  ours: every entity of that call), or whose CDC stays truncated: a windowed query `MetaData.LastUpdatedTime >=
  cursor` (paged, complete for live rows); for entities whose rows can vanish (hard-deleted
  transactions, merged customers) the delete markers a truncated CDC did show are applied, a
  COUNT of QBO's rows older than the window is compared with the local live rows, and only if
  they differ an id reconciliation lists `SELECT Id` pages (ids only) and marks missing rows
  deleted. A burst of 1,001 changes costs a window, not a company's worth of objects.
- **sweep** — the entities Intuit's CDC does not cover (TaxCode, TaxRate, TaxAgency,
  TimeActivity; `EntitySpec.swept`) are listed in full once a day (RELIST_EVERY), on `--full`
  and when named with `--entity`; rows missing from the listing get `deleted_at`. Their first
  listing is a 'full' run, the later ones 'sweep' runs.
- CompanyInfo is read on a realm's first sync, on `--full` and once a day (it is not in CDC).

Every run is a `quickbooks.sync_runs` row (kind, trigger, times, status, rows fetched/upserted/
deleted, API calls, error) and updates `quickbooks.sync_state`. Errors go to the errors table
(service 'sync'). A realm needing re-authorization is skipped ('skipped' runs with the
reason); one failing entity does not stop the others; a database outage raises
DatabaseUnavailable to the caller (the worker retries later) and never advances a cursor,
because a cursor only moves inside the transaction that writes the data. Writers of one
(realm, entity) serialize on a transaction-scoped advisory lock, so the worker and a
`sync --once` from another shell never conflict.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import psycopg

from db.connection import Database, one, scalar
from db.errorlog import record_error
from db.runs import RunRecord, advance_cursor, entity_states, finish_run, record_listing_progress, start_run
from db.upserts import (
    UpsertResult,
    apply_objects,
    is_delete_marker,
    mark_deleted,
    reconcile_missing,
    upsert_company,
    upsert_page,
)
from services.core.config import Settings
from services.core.errors import CDCTooOld, DatabaseUnavailable, NeedsReauth, QBSyncError, describe
from services.core.limits import CDC_LOOKBACK, CDC_MAX_OBJECTS, MAX_RESULTS
from services.core.logs import redact
from services.intuit.client import RawPage
from services.model.entities import ENTITY_NAMES, RELIST_EVERY, EntitySpec, get_spec, meta_updated
from services.tokens.vault import client_for

__all__ = [
    "EntityOutcome", "RealmSync", "sync_realm", "enqueue_sync_request",
    "CDC_CAP", "CDC_WINDOW", "CDC_MARGIN",
]

log = logging.getLogger("qbsync.sync")

CDC_CAP = CDC_MAX_OBJECTS            # objects per CDC response; reaching it means "maybe truncated"
CDC_WINDOW = CDC_LOOKBACK            # how far back CDC reaches
CDC_MARGIN = timedelta(days=1)       # cursors older than WINDOW - MARGIN are not trusted to CDC
PAGE_SIZE = MAX_RESULTS              # MAXRESULTS (Intuit's maximum)
WRITERS = 2                          # concurrent page transactions of one listing (PostgreSQL uses 2 cores)
STRIDE = 990                         # concurrent pages start every STRIDE rows (10 rows overlap)
RESUME_OVERLAP = PAGE_SIZE - STRIDE  # a resumed first load starts this many rows before its committed end
ID_BATCH = 100                       # ids per `Id IN (...)` query for rows a resumed load missed
_LOCK_NS = 0x5153_0003               # advisory lock namespace: "qbsync sync"
ANALYZE_AFTER_ROWS = 10_000          # a listing that wrote this many rows refreshes the tables' statistics


@dataclass
class EntityOutcome:
    """One (realm, entity) run: what it did and how it ended."""

    realm_id: str
    entity: str
    kind: str
    trigger: str
    run_id: int | None = None
    status: str = "running"
    rows_fetched: int = 0
    rows_upserted: int = 0
    rows_deleted: int = 0
    api_calls: int = 0
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("success", "skipped")

    def count(self, result: UpsertResult) -> None:
        self.rows_fetched += result.received
        self.rows_upserted += result.written
        self.rows_deleted += result.deleted

    def record(self) -> RunRecord:
        return RunRecord(self.status, self.kind, self.rows_fetched, self.rows_upserted, self.rows_deleted,
                         self.api_calls, self.error)


class _Clients:
    """One QBO client per fetching thread (a client is not shared across threads)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
            with self._lock:
                self._all.append(client)
        return client

    @property
    def api_calls(self) -> int:
        with self._lock:
            return sum(c.api_calls for c in self._all)

    def close(self) -> None:
        with self._lock:
            for client in self._all:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            self._all.clear()


def _qbo_literal(ts: datetime) -> str:
    """A timestamp literal for a QBO query (`'2026-11-22T14:05:00+00:00'`)."""
    return "'" + ts.astimezone(timezone.utc).isoformat(timespec="seconds") + "'"


class RealmSync:
    """Sync one realm: `run(entities, full)` → one EntityOutcome per entity."""

    def __init__(self, db: Database, settings: Settings, realm_id: str, *, trigger: str = "schedule",
                 client_factory: Callable[[], Any] | None = None,
                 stop: Any = None) -> None:
        self.db = db
        self.settings = settings
        self.realm_id = str(realm_id)
        self.trigger = trigger
        self.stop = stop
        if client_factory is None:
            def client_factory() -> Any:
                return client_for(db, settings, self.realm_id, service="cli" if trigger == "cli" else "sync")
        self._factory = client_factory
        self.concurrency = max(1, int(getattr(settings, "max_concurrency", 4)))
        self._local = threading.local()  # per entity-run thread: its _Clients
        self._fetch_pool: ThreadPoolExecutor | None = None
        self._write_pool: ThreadPoolExecutor | None = None

    # -- entry point -----------------------------------------------------------------------

    def run(self, entities: list[str] | None = None, *, full: bool = False) -> list[EntityOutcome]:
        """Sync the given entities (default: all) and record a run for each.

        Full listings of several entities run side by side through one fetch pool (at most
        QBO_MAX_CONCURRENCY requests in flight for the realm) and one pool of WRITERS page
        writers. Raises DatabaseUnavailable if PostgreSQL goes away (nothing is
        half-committed: each page and each cursor move is its own transaction).
        """
        specs = [get_spec(e) for e in (entities or ENTITY_NAMES)]
        try:
            self._check_tokens()
        except NeedsReauth as exc:
            return self._skip_all(specs, exc)
        states = self._states()
        jobs: list[tuple[EntityOutcome, Callable[[EntityOutcome], object]]] = []
        cdc_specs: list[EntitySpec] = []
        now = datetime.now(timezone.utc)
        for spec in specs:
            state = states.get(spec.name, {})
            if spec.company:
                last = state.get("last_success_at")
                if full or state.get("cursor") is None or last is None or now - last > RELIST_EVERY or entities:
                    jobs.append((self._begin(spec, "full"), lambda o: self._company(o)))
                continue
            if spec.swept:
                # outside Intuit's CDC: a complete listing on its own cadence, deletions reconciled
                last = state.get("last_full_sync_at")
                if full or last is None or now - last > RELIST_EVERY or entities:
                    kind = "full" if full or state.get("cursor") is None else "sweep"
                    jobs.append((self._begin(spec, kind), partial(self._full, spec, reconcile=True)))
            elif full or state.get("cursor") is None:
                first = state.get("cursor") is None
                resume = _remembered(spec, state, now) if first and not full else None
                jobs.append((self._begin(spec, "full"),
                             partial(self._full, spec, reconcile=full, first_load=first, resume=resume)))
            else:
                cdc_specs.append(spec)
        self._open_pools()
        try:
            outcomes = self._execute_all(jobs)
            if cdc_specs:
                outcomes.extend(self._incremental(cdc_specs, {s.name: states[s.name]["cursor"] for s in cdc_specs}))
        finally:
            self._close_pools()
        return outcomes

    def _open_pools(self) -> None:
        self._fetch_pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="qbo-fetch")
        self._write_pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="pg-write")

    def _close_pools(self) -> None:
        for pool in (self._fetch_pool, self._write_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _execute_all(self, jobs: list[tuple[EntityOutcome, Callable[[EntityOutcome], object]]]) -> list[EntityOutcome]:
        """Run the jobs side by side (one thread each); outcomes in job order. A database
        outage in any of them is raised once all have stopped."""
        if len(jobs) <= 1:
            return [self._execute(o, body) for o, body in jobs]
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="sync-entity") as pool:
            # transactions usually outnumber name lists: the last specs' listings get their
            # first requests into the shared fetch queue first, the small ones fill the gaps
            futures = {id(o): pool.submit(self._execute, o, body) for o, body in reversed(jobs)}
            wait(futures.values())
        return [futures[id(o)].result() for o, _ in jobs]

    # -- tokens and state ------------------------------------------------------------------

    def _check_tokens(self) -> None:
        from services.tokens.vault import access_token_for

        access_token_for(self.db, self.settings, self.realm_id)

    def _skip_all(self, specs: list[EntitySpec], exc: QBSyncError) -> list[EntityOutcome]:
        reason = exc.one_line()
        out = []
        with self.db.transaction() as conn:
            record_error(conn, "sync", f"sync skipped: {reason}", realm_id=self.realm_id, code=exc.code)
        for spec in specs:
            outcome = EntityOutcome(self.realm_id, spec.name, "cdc", self.trigger, status="skipped", error=reason)
            outcome.run_id = self._start_run(outcome)
            self._finish_run(outcome)
            out.append(outcome)
        return out

    def _states(self) -> dict[str, dict[str, Any]]:
        with self.db.transaction() as conn:
            return entity_states(conn, self.realm_id)

    def _start_run(self, outcome: EntityOutcome) -> int:
        with self.db.transaction() as conn:
            return start_run(conn, outcome.realm_id, outcome.entity, outcome.kind, outcome.trigger)

    def _finish_run(self, outcome: EntityOutcome) -> None:
        """Close the run row and update sync_state (status, error, row count, next run)."""
        assert outcome.run_id is not None  # every outcome is begun (a run row) before it finishes
        outcome.ms = int((time.monotonic() - outcome.started) * 1000)
        interval = timedelta(minutes=int(getattr(self.settings, "sync_interval_minutes", 60)))
        with self.db.transaction() as conn:
            finish_run(conn, get_spec(outcome.entity), outcome.realm_id, outcome.run_id, outcome.record(), interval)
        self._log_run(outcome)

    @staticmethod
    def _log_run(outcome: EntityOutcome) -> None:
        log.info("sync realm=%s entity=%s kind=%s status=%s fetched=%d upserted=%d deleted=%d "
                 "api_calls=%d ms=%d%s", outcome.realm_id, outcome.entity, outcome.kind, outcome.status,
                 outcome.rows_fetched, outcome.rows_upserted, outcome.rows_deleted, outcome.api_calls,
                 outcome.ms, f" error={outcome.error}" if outcome.error else "")

    def _lock(self, conn: psycopg.Connection, entity: str, *, shared: bool = False) -> None:
        """Lock one (realm, entity) for this transaction: exclusive for cursor moves, CDC and
        inbox-sized batches; shared for the concurrent page writes of one listing (pages hold
        disjoint ids and are written in Id order)."""
        fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        conn.execute(f"SELECT {fn}(%s, hashtext(%s))", (_LOCK_NS, f"{self.realm_id}/{entity}"))

    def _advance(self, conn: psycopg.Connection, entity: str, cursor: datetime, *, full: bool) -> None:
        """Move the cursor forward (never back) in the caller's data transaction."""
        advance_cursor(conn, self.realm_id, entity, cursor, full=full)

    def _begin(self, spec: EntitySpec, kind: str, extra_calls: int = 0) -> EntityOutcome:
        """A recorded run (sync_runs row 'running'); `extra_calls` were made for it beforehand."""
        outcome = EntityOutcome(self.realm_id, spec.name, kind, self.trigger, api_calls=extra_calls)
        outcome.run_id = self._start_run(outcome)
        return outcome

    def _guard(self, spec: EntitySpec, kind: str, body: Callable[[EntityOutcome], object],
               extra_calls: int = 0) -> EntityOutcome:
        """Run `body` as one recorded run; QBO and data errors fail this entity only.

        `extra_calls` are API calls made for this run beforehand (a shared CDC call).
        """
        return self._execute(self._begin(spec, kind, extra_calls), body)

    def _execute(self, outcome: EntityOutcome, body: Callable[[EntityOutcome], object]) -> EntityOutcome:
        """Run `body` for a begun run, then close the run (see _guard)."""
        clients = _Clients(self._factory)
        self._local.clients = clients
        try:
            body(outcome)
            outcome.status = "success"
        except DatabaseUnavailable:
            raise
        except _Interrupted:
            outcome.status, outcome.error = "failed", "interrupted by shutdown before the run finished"
        except QBSyncError as exc:
            self._fail(outcome, exc.one_line(), code=exc.code, tid=exc.intuit_tid)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"PostgreSQL failed during sync: {describe(exc, name=False)}") from None
        except (psycopg.Error, ValueError, KeyError, TypeError) as exc:
            self._fail(outcome, describe(exc))
        finally:
            outcome.api_calls += clients.api_calls
            clients.close()
        self._finish_run(outcome)
        return outcome

    @property
    def _clients(self) -> _Clients:
        return self._local.clients

    def _fail(self, outcome: EntityOutcome, message: str, *, code: str | None = None, tid: str | None = None) -> None:
        outcome.status, outcome.error = "failed", redact(message)[:2000]
        with self.db.transaction() as conn:
            record_error(conn, "sync", f"{outcome.entity} {outcome.kind} sync failed: {message}",
                         realm_id=self.realm_id, entity=outcome.entity, code=code, intuit_tid=tid)

    def _check_stop(self) -> None:
        if self.stop is not None and getattr(self.stop, "requested", False):
            raise _Interrupted()

    # -- CompanyInfo -----------------------------------------------------------------------

    def _company(self, outcome: EntityOutcome) -> None:
        clients = self._clients  # through the fetch pool: it holds the realm's concurrency
        info = self._fetchers().submit(lambda: clients.get().company_info()).result()
        outcome.rows_fetched = 1
        with self.db.transaction() as conn:
            self._lock(conn, "CompanyInfo")
            result = upsert_company(conn, self.realm_id, info, environment=self.settings.environment)
            self._advance(conn, "CompanyInfo", datetime.now(timezone.utc), full=True)
        outcome.rows_upserted = result.written

    # -- full listings ---------------------------------------------------------------------

    def _full(self, spec: EntitySpec, outcome: EntityOutcome, *, reconcile: bool,
              condition: str | None = None, first_load: bool = False,
              resume: _Listing | None = None) -> datetime:
        """List every row (optionally only `condition`), write per page, then move the cursor
        (unless `condition` is given: then the caller moves it). Returns the listing's time.

        Each page goes to PostgreSQL as the JSON text QBO served (`upsert_page`): no object
        is parsed in Python, and `raw` and every amount are exactly what QBO sent.

        A `first_load` (no cursor yet) records in each page's transaction how far the listing is
        committed (`record_listing_progress`: the contiguous prefix of committed pages, which
        complete out of order), so a run killed mid-way is resumed by the next one (`resume`):
        it lists from RESUME_OVERLAP rows before the committed end, keeps the remembered
        listing time as the cursor-to-be, and ends with `_settle_resumed`.
        """
        present: list[str] | None = [] if reconcile and resume is None else None  # one "\n"-joined string per page
        start = 1 if resume is None else resume.resume_at - RESUME_OVERLAP
        prefix = _Prefix(start) if first_load and condition is None else None
        listing_time: datetime | None = None if resume is None else resume.time
        first_time: datetime | None = None
        counter = threading.Lock()
        seen = _IdSet()

        def write(page: RawPage) -> None:
            with self.db.transaction() as conn:
                # Page commits need not wait for the WAL flush: the cursor moves in a later,
                # synchronous commit, which flushes every page before it (WAL is ordered), so a
                # crash can only lose pages whose cursor move is lost too; and a page's progress
                # is in its own commit, after the commits of the pages it counts.
                conn.execute("SET LOCAL synchronous_commit = off")
                self._lock(conn, spec.name, shared=True)
                result = upsert_page(conn, spec, self.realm_id, page.body, page.key or spec.name, claim=seen.claim)
                if prefix is not None:
                    assert listing_time is not None  # set from the first page, before any write
                    record_listing_progress(conn, self.realm_id, spec.name, listing_time,
                                            prefix.end_with(page.start_position, page.count))
            if prefix is not None:
                prefix.add(page.start_position, page.count)
            with counter:
                outcome.count(result)
                if present is not None:
                    present.append("\n".join(result.present_ids))

        if resume is not None:
            log.info("sync realm=%s entity=%s: resuming the first load listed at %s from row %d"
                     " (rows below %d committed)", self.realm_id, spec.name, resume.time.isoformat(), start,
                     resume.resume_at)
        in_flight: set[Future] = set()
        try:
            for page in self.listing(spec, condition, start=start):
                self._check_stop()
                if first_time is None:
                    first_time = page.time
                    listing_time = listing_time or first_time
                if not page.count:
                    continue
                if len(in_flight) >= WRITERS:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
                in_flight.add(self._writers().submit(write, page))
                del page
            for future in in_flight:
                future.result()
        finally:
            for future in in_flight:
                future.cancel()
            wait(in_flight)
        assert first_time is not None and listing_time is not None
        if condition is not None and present is None:
            return first_time
        if resume is not None:
            self._settle_resumed(spec, outcome, cursor=listing_time, listed_at=first_time, claim=seen.claim)
        else:
            with self.db.transaction() as conn:
                self._lock(conn, spec.name)
                if present is not None:
                    ids = (i for chunk in present for i in chunk.split("\n") if i)
                    outcome.rows_deleted += reconcile_missing(conn, spec, self.realm_id, ids, first_time)
                self._advance(conn, spec.name, first_time, full=condition is None)
        if outcome.rows_upserted >= ANALYZE_AFTER_ROWS:
            # a bulk load leaves the planner without statistics until autovacuum comes round:
            # reconciliation's joins over these tables would run minutes instead of seconds
            with self.db.transaction() as conn:
                for table in (spec.table, *((spec.line.table,) if spec.line else ()),
                              *(("linked_txns",) if spec.linked_txns else ())):
                    conn.execute(f"ANALYZE quickbooks.{table}")
        return listing_time

    def _settle_resumed(self, spec: EntitySpec, outcome: EntityOutcome, *, cursor: datetime, listed_at: datetime,
                        claim: Callable[[list[str]], list[str]]) -> None:
        """End a resumed first load exactly, then move the cursor to the listing's first time.

        Rows committed before the interruption and changed since are newer than `cursor`: the
        next CDC brings them. What it cannot bring are rows that stayed unchanged and moved below
        the resumed start (more than RESUME_OVERLAP committed rows deleted in QuickBooks
        meanwhile), and the deletes themselves are only known to CDC. So, as in `_window`:
        `COUNT(*) WHERE LastUpdatedTime < T` (T = the resumed listing's server time, whole
        seconds) is compared with the local rows older than T that are live or were deleted
        after `cursor`. A row missed that way needs more than RESUME_OVERLAP committed rows
        deleted below it, each still counted here, so a miss always makes the counts differ.
        Counts differ: the ids are listed (`SELECT Id` pages), ids without a live local row are
        fetched (`Id IN (...)`) and written, and live local rows missing from the ids get
        `deleted_at`; the cursor moves with that last write.
        """
        bound = listed_at.replace(microsecond=0)
        clients, where = self._clients, spec.query_where(f"MetaData.LastUpdatedTime < {_qbo_literal(bound)}")
        remote = self._fetchers().submit(lambda: clients.get().count(spec.name, where)).result()
        with self.db.transaction() as conn:
            local = scalar(
                conn, f"SELECT count(*) FROM {spec.qualified_table} WHERE realm_id = %s"
                " AND (deleted_at IS NULL OR deleted_at >= %s) AND (qbo_updated_at IS NULL OR qbo_updated_at < %s)",
                (self.realm_id, cursor, bound))
        present: list[str] | None = None
        as_of = listed_at
        if remote != local:
            log.info("sync realm=%s entity=%s: %d rows before %s in QuickBooks, %d here after resuming;"
                     " reconciling ids", self.realm_id, spec.name, remote, bound.isoformat(), local)
            present, as_of = self._listed_ids(spec)
            with self.db.transaction() as conn:
                missing = [r[0] for r in conn.execute(
                    f"SELECT p.id FROM unnest(%s::text[]) AS p(id) WHERE NOT EXISTS (SELECT 1 FROM"
                    f" {spec.qualified_table} t WHERE t.realm_id = %s AND t.id = p.id AND t.deleted_at IS NULL)",
                    ([i for chunk in present for i in chunk.split("\n") if i], self.realm_id))]

            def fetch(where: str | None) -> RawPage:
                return clients.get().query_page(spec.name, where, "Id", 1)

            for i in range(0, len(missing), ID_BATCH):
                self._check_stop()
                listed = ", ".join("'" + ident.replace("'", "\\'") + "'" for ident in missing[i:i + ID_BATCH])
                page = self._fetchers().submit(fetch, spec.query_where(f"Id IN ({listed})")).result()
                if page.count:
                    with self.db.transaction() as conn:
                        self._lock(conn, spec.name, shared=True)
                        outcome.count(upsert_page(conn, spec, self.realm_id, page.body, page.key or spec.name,
                                                  claim=claim))
        with self.db.transaction() as conn:
            self._lock(conn, spec.name)
            if present is not None:
                ids = (i for chunk in present for i in chunk.split("\n") if i)
                outcome.rows_deleted += reconcile_missing(conn, spec, self.realm_id, ids, as_of)
            self._advance(conn, spec.name, cursor, full=True)

    def _listed_ids(self, spec: EntitySpec) -> tuple[list[str], datetime]:
        """Every id of the entity (`SELECT Id` pages, ids only) as one newline-joined string per
        page (no Python object per id outlives its page: see `_IdSet`), and the listing's time."""
        present: list[str] = []
        as_of: datetime | None = None
        for page in self.listing(spec, select="Id"):
            self._check_stop()
            as_of = as_of or page.time
            present.append("\n".join(str(o.get("Id")) for o in page.objects()))
        assert as_of is not None
        return present, as_of

    def _fetchers(self) -> ThreadPoolExecutor:
        if self._fetch_pool is None:  # a RealmSync used outside run(): pools on first use
            self._open_pools()
        assert self._fetch_pool is not None
        return self._fetch_pool

    def _writers(self) -> ThreadPoolExecutor:
        if self._write_pool is None:
            self._open_pools()
        assert self._write_pool is not None
        return self._write_pool

    def listing(self, spec: EntitySpec, condition: str | None = None, *, select: str = "*",
                start: int = 1) -> Iterator[RawPage]:
        """Every page of `SELECT select FROM entity [WHERE ...] ORDERBY Id` from STARTPOSITION
        `start` (a resumed first load starts past its committed rows), as served (RawPage).

        The first page comes first (its time is the listing's cursor; a resumed first load keeps
        the time it remembered). When it is full, a COUNT
        sizes the listing and the rest is fetched concurrently through the run's fetch pool (QBO_MAX_CONCURRENCY requests
        in flight for the realm, shared by the listings running side by side; a bounded
        number of pages in memory): pages start every STRIDE
        rows, overlapping by PAGE_SIZE - STRIDE rows so a row deleted meanwhile cannot shift
        another past a page boundary unseen; paging goes on past the count while pages are
        full. Pages overlap, so ids repeat: the writer drops ids already written (`claim`).
        """
        clients = self._clients
        where = spec.query_where(condition)
        pool = self._fetchers()

        def fetch(start: int) -> RawPage:
            return clients.get().query_page(spec.name, where, "Id", start, select=select)

        pending: set[Future] = set()
        try:
            f_first = pool.submit(fetch, start)
            pending = {f_first}
            first = f_first.result()
            full_page = first.count >= PAGE_SIZE
            pending = set()
            if full_page:  # only then is the COUNT worth a (metered) call: most listings are one page
                f_count = pool.submit(lambda: clients.get().count(spec.name, where))
                pending = {f_count}
            yield first
            del first
            if not full_page:
                return
            total = f_count.result()
            pending = set()
            next_start = start + STRIDE
            planned_end = max(total, start - 1 + PAGE_SIZE)
            limit = self.concurrency + 2  # in flight (pool size) + fetched, waiting to be written
            # An unconditioned listing in Id order only shifts rows back (deletes; new rows get
            # higher ids and are newer than the cursor anyway): a page whose rows all lie within
            # the previous page's overlap is not needed. A windowed listing can also shift rows
            # forward (rows entering the window), so it pages on until a page is short.
            reach = PAGE_SIZE - STRIDE if condition is None else 0
            while True:
                while len(pending) < limit and next_start + reach <= planned_end:
                    pending.add(pool.submit(fetch, next_start))
                    next_start += STRIDE
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: f.result().start_position):
                    page = future.result()
                    if page.count >= PAGE_SIZE and page.start_position + STRIDE > planned_end:
                        planned_end = page.start_position + STRIDE  # more rows than counted: keep paging
                    yield page
                del done
        finally:
            for future in pending:
                future.cancel()
            wait(pending)

    # -- incremental -----------------------------------------------------------------------

    def _incremental(self, specs: list[EntitySpec], cursors: dict[str, datetime]) -> list[EntityOutcome]:
        """One CDC call for all `specs`; split on truncation; stale cursors go to windows.

        The shared call is counted on the first entity's run.
        """
        clients = _Clients(self._factory)
        try:
            result = clients.get().cdc([s.name for s in specs], min(cursors.values()))
            error: QBSyncError | None = None
        except DatabaseUnavailable:
            raise
        except QBSyncError as exc:
            result, error = None, exc
        finally:
            shared_calls = clients.api_calls
            clients.close()
        if result is not None and error is None and result.total < CDC_CAP \
                and all(cursors[s.name] >= result.time - (CDC_WINDOW - CDC_MARGIN) for s in specs):
            batched = self._apply_cdc_together(specs, result, shared_calls)
            if batched is not None:
                return batched
        outcomes: list[EntityOutcome] = []
        for i, spec in enumerate(specs):
            calls = shared_calls if i == 0 else 0
            cursor = cursors[spec.name]
            if isinstance(error, CDCTooOld):  # by Intuit's clock: catch up as a stale cursor does
                outcomes.append(self._guard(spec, "window", partial(self._window, spec, cursor=cursor), calls))
            elif result is None:
                outcomes.append(self._guard(spec, "cdc", partial(_raise, error), calls))
            elif cursor < result.time - (CDC_WINDOW - CDC_MARGIN):
                outcomes.append(self._guard(spec, "window", partial(self._window, spec, cursor=cursor), calls))
            elif result.total >= CDC_CAP and len(specs) == 1:
                marks = [ob for ob in result.objects.get(spec.name, []) if is_delete_marker(ob)]
                outcomes.append(self._guard(
                    spec, "window", partial(self._window, spec, cursor=cursor, markers=marks), calls))
            elif result.total >= CDC_CAP:
                outcomes.append(self._guard(spec, "cdc", partial(self._cdc_alone, spec, cursor=cursor), calls))
            else:
                objs = result.objects.get(spec.name, [])
                outcomes.append(self._guard(
                    spec, "cdc", partial(self._apply_cdc, spec, objects=objs, at=result.time), calls))
        return outcomes

    def _apply_cdc_together(self, specs: list[EntitySpec], result: Any, shared_calls: int) -> list[EntityOutcome] | None:
        """The usual hourly case, a complete CDC answer: every entity's changes, cursor and run record
        in ONE transaction (instead of three per entity: an hourly pass over thousands of realms is
        bound by these commits). None when any entity's write fails: the caller then runs the
        entities one by one, so one failing entity does not hold back the others."""
        interval = timedelta(minutes=int(getattr(self.settings, "sync_interval_minutes", 60)))
        outcomes = [EntityOutcome(self.realm_id, spec.name, "cdc", self.trigger, api_calls=shared_calls if i == 0 else 0)
                    for i, spec in enumerate(specs)]
        try:
            with self.db.transaction() as conn:
                for spec, outcome in zip(specs, outcomes, strict=True):
                    outcome.run_id = start_run(conn, self.realm_id, spec.name, "cdc", self.trigger)
                    self._lock(conn, spec.name)
                    objects = result.objects.get(spec.name, [])
                    if objects:
                        outcome.count(apply_objects(conn, spec, self.realm_id, objects))
                    self._advance(conn, spec.name, result.time, full=False)
                    outcome.status = "success"
                    outcome.ms = int((time.monotonic() - outcome.started) * 1000)
                    finish_run(conn, spec, self.realm_id, outcome.run_id, outcome.record(), interval)
        except DatabaseUnavailable:
            raise
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"PostgreSQL failed during sync: {describe(exc, name=False)}") from None
        except (psycopg.Error, ValueError, KeyError, TypeError) as exc:
            log.info("sync realm=%s: the CDC changes could not be written together (%s); entity by entity",
                     self.realm_id, describe(exc))
            return None
        for outcome in outcomes:
            self._log_run(outcome)
        return outcomes

    def _apply_cdc(self, spec: EntitySpec, outcome: EntityOutcome, objects: list[dict], at: datetime) -> None:
        with self.db.transaction() as conn:
            self._lock(conn, spec.name)
            if objects:
                outcome.count(apply_objects(conn, spec, self.realm_id, objects))
            self._advance(conn, spec.name, at, full=False)

    def _cdc_alone(self, spec: EntitySpec, outcome: EntityOutcome, cursor: datetime) -> None:
        """CDC for one entity; if that is truncated too, resolve it with queries."""
        result = self._clients.get().cdc([spec.name], cursor)
        if result.total >= CDC_CAP:
            outcome.kind = "window"
            marks = [ob for ob in result.objects.get(spec.name, []) if is_delete_marker(ob)]
            self._window(spec, outcome, cursor, marks)
            return
        self._apply_cdc(spec, outcome, result.objects.get(spec.name, []), result.time)

    def _window(self, spec: EntitySpec, outcome: EntityOutcome, cursor: datetime,
                markers: list[dict] | None = None) -> None:
        """Catch up without (complete) CDC: a windowed query plus, where rows can vanish, deletes.

        1. `WHERE MetaData.LastUpdatedTime >= cursor` (paged by Id, complete for live rows;
           Id order is stable under updates) is written page by page.
        2. Entities whose rows can vanish (hard-deleted transactions, merged customers):
           the delete markers a truncated CDC did return are applied (real deletes, newer-wins);
           then `COUNT(*) WHERE LastUpdatedTime < T` (T = the window's server time, whole
           seconds) is compared with the live local rows older than T. Every QBO row older
           than T is local (earlier syncs + this window), so equal counts mean nothing is
           missing; any change racing the check makes the counts differ, never agree wrongly.
        3. Counts differ: an id reconciliation — `SELECT Id` pages (ids only, tiny) — and live
           local rows missing from it get `deleted_at`.
        The cursor moves to the window's time with the last of these writes.
        """
        outcome.kind = "window"
        condition = f"MetaData.LastUpdatedTime >= {_qbo_literal(cursor - timedelta(seconds=1))}"
        at = self._full(spec, outcome, reconcile=False, condition=condition)
        if not (spec.hard_deletable or spec.mergeable):
            with self.db.transaction() as conn:
                self._lock(conn, spec.name)
                self._advance(conn, spec.name, at, full=False)
            return
        if markers:
            with self.db.transaction() as conn:
                self._lock(conn, spec.name)
                dead = [(str(m["Id"]), meta_updated(m)) for m in markers]
                outcome.rows_deleted += mark_deleted(conn, spec, self.realm_id, dead, markers=markers)
        bound = at.replace(microsecond=0)
        clients, where = self._clients, spec.query_where(f"MetaData.LastUpdatedTime < {_qbo_literal(bound)}")
        remote = self._fetchers().submit(lambda: clients.get().count(spec.name, where)).result()
        with self.db.transaction() as conn:
            local = scalar(
                conn, f"SELECT count(*) FROM {spec.qualified_table} WHERE realm_id = %s AND deleted_at IS NULL"
                " AND (qbo_updated_at IS NULL OR qbo_updated_at < %s)", (self.realm_id, bound))
        if remote == local:
            with self.db.transaction() as conn:
                self._lock(conn, spec.name)
                self._advance(conn, spec.name, at, full=False)
            return
        log.info("sync realm=%s entity=%s: %d rows before %s in QuickBooks, %d here; reconciling ids",
                 self.realm_id, spec.name, remote, bound.isoformat(), local)
        present, as_of = self._listed_ids(spec)
        with self.db.transaction() as conn:
            self._lock(conn, spec.name)
            ids = (i for chunk in present for i in chunk.split("\n") if i)
            outcome.rows_deleted += reconcile_missing(conn, spec, self.realm_id, ids, as_of)
            self._advance(conn, spec.name, at, full=False)


class _IdSet:
    """Ids seen during one listing. Numeric ids live in a bitmap, so no per-id Python object
    outlives its page: keeping the parsed pages' own strings (or fresh ints allocated among
    them) would pin their memory pools and grow the process by ~1 KB per row."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self._other: set[str] = set()
        self._lock = threading.Lock()

    def add(self, ident: str) -> bool:
        """Add `ident`; True if it was not there yet."""
        if ident.isdigit() and len(ident) < 12:
            n = int(ident)
            byte, bit = n >> 3, 1 << (n & 7)
            if byte >= len(self._bits):
                self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
            if self._bits[byte] & bit:
                return False
            self._bits[byte] |= bit
            return True
        if ident in self._other:
            return False
        self._other.add(ident.encode().decode())
        return True

    def claim(self, idents: list[str]) -> list[str]:
        """Add `idents`; return those that were already there (thread-safe)."""
        with self._lock:
            return [i for i in idents if not self.add(i)]


@dataclass(frozen=True)
class _Listing:
    """An unfinished first load as sync_state remembers it: QBO's time of its first page (the
    cursor it sets when done) and the STARTPOSITION below which every row is committed."""

    time: datetime
    resume_at: int


def _remembered(spec: EntitySpec, state: dict[str, Any], now: datetime) -> _Listing | None:
    """The unfinished first load to resume, if any. One listed before CDC's reach (minus the
    margin, by our clock) is not resumed: its cursor-to-be would be too old for the CDC that
    follows, so the listing starts over (should Intuit's clock still refuse the cursor, CDC goes
    to a window, as for any stale cursor); so does one with no more committed rows than the
    resume's overlap."""
    at, resume_at = state.get("listing_time"), state.get("listing_resume_position")
    if at is None or resume_at is None or resume_at - RESUME_OVERLAP <= 1:
        return None
    if at < now - (CDC_WINDOW - CDC_MARGIN):
        log.info("sync entity=%s: the unfinished first load listed at %s is older than CDC reaches;"
                 " listing again from the start", spec.name, at.isoformat())
        return None
    return _Listing(at, int(resume_at))


class _Prefix:
    """The contiguous prefix of one listing's committed pages (pages complete out of order):
    `end_with(start, count)` is the first row not yet covered if that page commits too,
    `add(start, count)` records a committed page (thread-safe)."""

    def __init__(self, start: int) -> None:
        self._start = start
        self._ends: dict[int, int] = {}  # page start -> the row after its last
        self._lock = threading.Lock()

    def end_with(self, start: int, count: int) -> int:
        with self._lock:
            ends = {**self._ends, start: max(self._ends.get(start, start), start + count)}
        end = self._start
        for page_start in sorted(ends):
            if page_start > end:
                break
            end = max(end, ends[page_start])
        return end

    def add(self, start: int, count: int) -> None:
        with self._lock:
            self._ends[start] = max(self._ends.get(start, start), start + count)


class _Interrupted(Exception):
    """SIGTERM arrived between two pages: stop before the next transaction."""


def _raise(exc: BaseException | None, _outcome: EntityOutcome) -> None:
    """A run whose work already failed (the shared CDC call): record that failure."""
    assert exc is not None
    raise exc


def sync_realm(db: Database, settings: Settings, realm_id: str, *, entities: list[str] | None = None,
               full: bool = False, trigger: str = "schedule", stop: Any = None,
               client_factory: Callable[[], Any] | None = None) -> list[EntityOutcome]:
    """Sync one realm (see the module docstring); one recorded outcome per entity."""
    return RealmSync(db, settings, realm_id, trigger=trigger, stop=stop,
                     client_factory=client_factory).run(entities, full=full)


def enqueue_sync_request(conn: psycopg.Connection, realm_id: str | None = None, entity: str | None = None,
                         full: bool = False, requested_by: str = "tui") -> int:
    """Queue a sync (all realms when realm_id is None, all entities when entity is None) in the
    caller's transaction and wake the sync workers to run it; its id."""
    from services.sync.wake import wake_workers

    if entity is not None:
        entity = get_spec(entity).name
    row = one(
        conn, "INSERT INTO quickbooks.sync_requests (realm_id, entity, full_sync, requested_by)"
        " VALUES (%s, %s, %s, %s) RETURNING id", (realm_id, entity, full, requested_by))
    wake_workers(conn)
    return int(row[0])
