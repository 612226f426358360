"""A first (full) load killed mid-way resumes where its committed pages end (SPEC section 13:
"another takes over and resumes from the committed cursor").

Real PostgreSQL, the real emulator over HTTP and the real engine. A load is interrupted
deterministically with the engine's own `stop` seam (it is checked between pages): `requested`
turns true once sync_state shows a given committed prefix. What the emulator was asked is read
from a recorder on its State (`QueryLog`), so a subprocess's queries are seen as well.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support import wait_for
from support.realms import assert_exact, connect_realm, ok

from db.runs import advance_cursor, entity_states, record_listing_progress
from services.emulator.ledger import SIZED
from services.sync.engine import RESUME_OVERLAP, STRIDE, _Prefix, sync_realm

INVOICES = 6000  # 7 overlapping pages (1, 991, ... 5941)
# an invoice-heavy company; the rest of the ledger small, so a load is mostly Invoice pages
REALM = {"customers": 30, "items": 10, "invoices": INVOICES, "estimates": 10,
         "sizes": {name: 2 for name in SIZED}}
STOP_AT = 1 + 2 * STRIDE  # interrupt once the first two Invoice pages are committed


class QueryLog:
    """Every query the emulator answered, in order (realm id, statement): a recorder around the
    emulator State's `query`, so the test sees what a subprocess asked too."""

    def __init__(self, emulator) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[str, str]] = []
        answer = emulator.state.query

        def recorded(realm_id: str, text: str):
            with self._lock:
                self._entries.append((realm_id, text))
            return answer(realm_id, text)

        emulator.state.query = recorded

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def statements(self, realm: str, entity: str) -> list[str]:
        """Every statement sent for `realm` about `entity` (pages, COUNTs, id listings)."""
        with self._lock:
            return [t for r, t in self._entries if r == realm and re.search(rf"\bFROM {entity}\b", t)]

    def page_starts(self, realm: str, entity: str) -> list[int]:
        """STARTPOSITIONs of the listing's pages of `entity` (`SELECT *` without a condition: not
        COUNTs, not `SELECT Id`, not a fetch by `Id IN`), sorted."""
        page = re.compile(rf"^SELECT \* FROM {entity} ORDERBY Id STARTPOSITION (\d+) MAXRESULTS ")
        return sorted(int(m.group(1)) for m in map(page.match, self.statements(realm, entity)) if m)


class StopOnceCommitted:
    """The engine's stop seam: `requested` once the first load of `entity` (one listed after
    `listed_after`, if given) has committed every row below STARTPOSITION `position`, as
    sync_state records it."""

    def __init__(self, db, realm: str, entity: str, position: int, listed_after: datetime | None = None) -> None:
        self.db, self.realm, self.entity, self.position = db, realm, entity, position
        self.listed_after = listed_after

    @property
    def requested(self) -> bool:
        listed_at, resume_at, _ = _progress(self.db, self.realm, self.entity)
        if self.listed_after is not None and (listed_at is None or listed_at <= self.listed_after):
            return False
        return (resume_at or 0) >= self.position


def _progress(db, realm: str, entity: str) -> tuple:
    """(listing_time, listing_resume_position, cursor) of one (realm, entity); Nones when no row."""
    with db.transaction() as conn:
        row = conn.execute("SELECT listing_time, listing_resume_position, cursor FROM quickbooks.sync_state"
                           " WHERE realm_id = %s AND entity = %s", (realm, entity)).fetchone()
    return tuple(row) if row else (None, None, None)


def _last_run(db, realm: str, entity: str) -> tuple:
    """(kind, status, error, rows_fetched, api_calls) of the newest run of (realm, entity)."""
    with db.transaction() as conn:
        return conn.execute("SELECT kind, status, error, rows_fetched, api_calls FROM quickbooks.sync_runs"
                            " WHERE realm_id = %s AND entity = %s ORDER BY id DESC LIMIT 1",
                            (realm, entity)).fetchone()


def _committed_below(db, realm: str, position: int) -> int:
    """Live invoices whose position in `ORDERBY Id` was below `position` (ids are 1..INVOICES)."""
    with db.transaction() as conn:
        return conn.execute("SELECT count(*) FROM quickbooks.invoices WHERE realm_id = %s AND deleted_at IS NULL"
                            " AND id::int < %s", (realm, position)).fetchone()[0]


def _interrupted_load(db, settings, emulator, log: QueryLog) -> tuple[str, int]:
    """A company whose first load was stopped after its first Invoice pages; (realm, the committed
    STARTPOSITION sync_state remembers). The emulator's query log is cleared afterwards."""
    realm = connect_realm(db, settings, emulator, **REALM)
    outcomes = sync_realm(db, settings, realm, stop=StopOnceCommitted(db, realm, "Invoice", STOP_AT))
    invoice = next(o for o in outcomes if o.entity == "Invoice")
    assert (invoice.status, invoice.error) == ("failed", "interrupted by shutdown before the run finished")
    listed_at, resume_at, cursor = _progress(db, realm, "Invoice")
    assert cursor is None and listed_at is not None
    assert STOP_AT <= resume_at < INVOICES  # stopped mid-load, with its first pages remembered
    assert _committed_below(db, realm, resume_at) == resume_at - 1  # progress claims only committed rows
    log.clear()
    return realm, resume_at


def test_progress_is_the_contiguous_prefix_of_committed_pages_whatever_their_order() -> None:
    prefix = _Prefix(1)
    assert prefix.end_with(1 + STRIDE, 1000) == 1  # page 2 commits first: page 1 is not committed yet
    prefix.add(1 + STRIDE, 1000)
    assert prefix.end_with(1 + 3 * STRIDE, 1000) == 1
    prefix.add(1 + 3 * STRIDE, 1000)
    assert prefix.end_with(1, 1000) == 1 + STRIDE + 1000  # page 1 joins page 2, page 4 still cut off by 3
    prefix.add(1, 1000)
    assert prefix.end_with(1 + 2 * STRIDE, 1000) == 1 + 3 * STRIDE + 1000
    resumed = _Prefix(4951)  # a resumed listing counts from where it started
    assert resumed.end_with(4951, 60) == 5011


def test_recorded_progress_never_goes_back_and_ends_with_the_cursor(db) -> None:
    first, second = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc), datetime(2026, 11, 3, 9, 0, tzinfo=timezone.utc)

    def remembered() -> tuple:
        with db.transaction() as conn:
            state = entity_states(conn, "r1")["Invoice"]
        return state["listing_time"], state["listing_resume_position"], state["cursor"]

    with db.transaction() as conn:
        record_listing_progress(conn, "r1", "Invoice", first, 1981)
        record_listing_progress(conn, "r1", "Invoice", first, 991)  # a page of the same listing, committed later
        due = conn.execute("SELECT next_run_at <= now() FROM quickbooks.sync_state WHERE realm_id = 'r1'").fetchone()
    assert remembered() == (first, 1981, None) and due == (True,)  # due at once, as an entity never run
    with db.transaction() as conn:
        record_listing_progress(conn, "r1", "Invoice", second, 991)  # another listing replaces it
    assert remembered() == (second, 991, None)
    with db.transaction() as conn:
        advance_cursor(conn, "r1", "Invoice", second, full=True)
        record_listing_progress(conn, "r1", "Invoice", first, 2971)  # a listing finishing after the cursor moved
    assert remembered() == (None, None, second)


@pytest.mark.slow
def test_an_interrupted_first_load_resumes_at_its_committed_pages_and_ends_exact(db, settings, emulator) -> None:
    log = QueryLog(emulator)
    realm, resume_at = _interrupted_load(db, settings, emulator, log)
    listed_at = _progress(db, realm, "Invoice")[0]
    outcomes = sync_realm(db, settings, realm)
    assert ok(outcomes), [(o.entity, o.error) for o in outcomes]
    starts = log.page_starts(realm, "Invoice")
    first = resume_at - RESUME_OVERLAP
    assert starts[0] == first, starts  # nothing below the committed rows (less the overlap) again
    assert starts == list(range(first, INVOICES - RESUME_OVERLAP + 1, STRIDE)), starts
    kind, status, _, fetched, calls = _last_run(db, realm, "Invoice")
    assert (kind, status) == ("full", "success")
    assert fetched == INVOICES - first + 1  # what this run fetched, not the load's total
    assert calls == len(log.statements(realm, "Invoice"))  # its pages, its COUNTs: nothing counted twice
    assert not any("SELECT Id FROM" in t for t in log.statements(realm, "Invoice"))  # counts agreed
    assert _progress(db, realm, "Invoice") == (None, None, listed_at)  # cursor = the first page's time
    assert_exact(db, emulator, realm)
    log.clear()
    assert ok(sync_realm(db, settings, realm))  # CDC from the remembered time: nothing to list again
    assert log.page_starts(realm, "Invoice") == []
    assert_exact(db, emulator, realm)


@pytest.mark.slow
def test_deletes_and_updates_between_interrupt_and_resume_still_end_exact(db, settings, emulator) -> None:
    log = QueryLog(emulator)
    realm, resume_at = _interrupted_load(db, settings, emulator, log)
    invoices = emulator.admin.entities(realm, "Invoice")
    position = {o["Id"]: i + 1 for i, o in enumerate(invoices)}
    # 30 committed invoices just below the resume point vanish: the next 20 uncommitted ones shift
    # below where the resumed listing starts (it overlaps 10), unchanged, so CDC would never bring them
    gone = [o["Id"] for o in invoices if resume_at - 40 <= position[o["Id"]] < resume_at - 10]
    for ident in gone:
        emulator.state.mutate(realm, "Invoice", "delete", id=ident)
    shifted = [o["Id"] for o in invoices if resume_at <= position[o["Id"]] < resume_at + 20]
    changed = [invoices[5]["Id"], invoices[min(resume_at + 100, INVOICES - 1)]["Id"]]  # committed, not yet
    for ident in changed:
        emulator.state.mutate(realm, "Invoice", "update", id=ident)
    emulator.state.mutate(realm, "Invoice", "create")
    outcomes = sync_realm(db, settings, realm)
    assert ok(outcomes), [(o.entity, o.error) for o in outcomes]
    assert log.page_starts(realm, "Invoice")[0] == resume_at - RESUME_OVERLAP
    statements = log.statements(realm, "Invoice")
    assert any(t.startswith("SELECT Id FROM Invoice") for t in statements)  # counts differed: ids listed
    fetched_by_id = [t for t in statements if "Id IN (" in t]
    assert fetched_by_id and all(f"'{i}'" in " ".join(fetched_by_id) for i in shifted)
    with db.transaction() as conn:
        live = {r[0] for r in conn.execute("SELECT id FROM quickbooks.invoices WHERE realm_id = %s"
                                           " AND deleted_at IS NULL", (realm,))}
    assert set(shifted) <= live and not set(gone) & live  # the shifted ones fetched, the deleted marked
    assert _progress(db, realm, "Invoice")[:2] == (None, None)
    assert ok(sync_realm(db, settings, realm))  # CDC from the first page's time brings the updates
    assert_exact(db, emulator, realm)


@pytest.mark.slow
def test_full_and_a_remembered_listing_older_than_cdc_reaches_start_over(db, settings, emulator) -> None:
    log = QueryLog(emulator)
    realm, resume_at = _interrupted_load(db, settings, emulator, log)
    with db.transaction() as conn:  # interrupted 30 days ago: its cursor-to-be is past CDC's reach
        stale = conn.execute("UPDATE quickbooks.sync_state SET listing_time = listing_time - %s"
                             " WHERE realm_id = %s AND entity = 'Invoice' RETURNING listing_time",
                             (timedelta(days=30), realm)).fetchone()[0]
    outcomes = sync_realm(db, settings, realm, entities=["Invoice"],
                          stop=StopOnceCommitted(db, realm, "Invoice", STOP_AT, listed_after=stale))
    assert log.page_starts(realm, "Invoice")[0] == 1  # listed again from the start ...
    listed_at, again, _ = _progress(db, realm, "Invoice")
    assert outcomes[0].status == "failed" and listed_at > stale and STOP_AT <= again < INVOICES  # ... as a new listing
    log.clear()
    assert ok(sync_realm(db, settings, realm, full=True))  # --full asks for a listing from the start too
    assert log.page_starts(realm, "Invoice")[0] == 1 and resume_at > 1
    listed_again, _, cursor = _progress(db, realm, "Invoice")
    assert listed_again is None and cursor > listed_at
    assert_exact(db, emulator, realm)


@pytest.mark.slow
def test_a_sync_killed_mid_load_resumes_from_its_committed_pages(db, settings, emulator, qbsync_env,
                                                                  tmp_path: Path) -> None:
    log = QueryLog(emulator)
    realm = connect_realm(db, settings, emulator, **REALM)
    emulator.admin.configure(latency_ms=150)  # the load takes seconds: there is a "mid-load" to kill
    qbsync = [str(Path(sys.executable).parent / "qbsync"), "sync", "--once"]
    procs: list[subprocess.Popen] = []

    def start(name: str, env: dict[str, str]) -> subprocess.Popen:
        out = (tmp_path / f"{name}.log").open("w")
        proc = subprocess.Popen(qbsync, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        procs.append(proc)
        return proc

    try:
        # the killed process's requests in flight keep their slots of the realm's concurrency until
        # the slots' leases end (a lease takeover frees them; `sync --once` takes no lease), so it
        # runs with 2 of the 4 and the next run has the other 2 at once
        victim = start("killed", {**qbsync_env, "QBO_MAX_CONCURRENCY": "2"})
        wait_for(lambda: (_progress(db, realm, "Invoice")[1] or 0) >= STOP_AT, 120,
                 "the first Invoice pages committed", details=lambda: (tmp_path / "killed.log").read_text())
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL

        def backends_gone() -> bool:  # its transactions ended (committed or rolled back) on the server
            with db.transaction() as conn:
                return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                    " AND application_name = 'qbsync-sync'").fetchone()[0] == 0
        wait_for(backends_gone, 30, "the killed process's database sessions to end")
        listed_at, resume_at, cursor = _progress(db, realm, "Invoice")
        assert cursor is None and STOP_AT <= resume_at < INVOICES
        assert _committed_below(db, realm, resume_at) == resume_at - 1
        emulator.admin.configure(latency_ms=0)
        log.clear()
        again = start("again", qbsync_env)
        assert again.wait(300) == 0, (tmp_path / "again.log").read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
    starts = log.page_starts(realm, "Invoice")
    assert starts[0] == resume_at - RESUME_OVERLAP, starts  # no committed page fetched again
    assert starts == list(range(resume_at - RESUME_OVERLAP, INVOICES - RESUME_OVERLAP + 1, STRIDE)), starts
    kind, status, _, fetched, calls = _last_run(db, realm, "Invoice")
    assert (kind, status, fetched) == ("full", "success", INVOICES - resume_at + RESUME_OVERLAP + 1)
    assert calls == len(log.statements(realm, "Invoice"))
    assert _progress(db, realm, "Invoice") == (None, None, listed_at)
    assert_exact(db, emulator, realm)
