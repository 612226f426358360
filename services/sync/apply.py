"""Applying pending webhook inbox events (quickbooks.webhook_inbox) to the database.

Webhooks carry only ids, so for each realm with due events the worker fetches what changed:
read-by-id for one distinct id, or ONE CDC call over every CDC entity from the earliest event's
`occurred_at` (minus a second) when that is cheaper (several ids), or when a document that links
others changed (a Payment changes the invoices it pays, without events of theirs), and the
window is within CDC's reach and not truncated; everything that call returns is applied
(newer-wins). CompanyInfo and the entities outside CDC, such as TimeActivity, are always read by id. Then, in one transaction per realm:
- Create / Update / Void / Emailed / inactivation: upsert the fetched object (newer-wins,
  so out-of-order and duplicate events are harmless);
- Delete: the object is marked deleted only when QBO confirms it (read-by-id → NotFound /
  610, or CDC's `status: Deleted` marker); if it still exists (a name-list "delete" is an
  inactivation) the fetched object is stored instead;
- Merge: the merged-away id (`deleted_id`) gets deleted_at + merged_into, the survivor is fetched.
Events are marked processed in the same transaction as the data. Each distinct (entity, id)
is fetched once however many events name it.

Claiming: due events are leased (attempts + 1, next_attempt_at pushed out) with
`FOR UPDATE SKIP LOCKED`, so several workers never process one event twice at once and a
crash only delays it. Failures are retried with exponential backoff (visible in the errors
table); after MAX_ATTEMPTS an event is 'failed'. Events for a realm without usable tokens
are marked 'failed' with the reason at once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from db.connection import Database
from db.errorlog import record_error
from db.runs import RunRecord, record_run
from db.upserts import apply_objects, is_delete_marker, mark_deleted, mark_merged, upsert_company
from services.core.config import Settings
from services.core.errors import DatabaseUnavailable, NeedsReauth, NotFound, describe
from services.core.limits import CDC_MAX_OBJECTS
from services.model.entities import ENTITIES, ENTITY_NAMES
from services.tokens.vault import client_for

__all__ = ["process_inbox", "InboxStats", "MAX_ATTEMPTS", "LEASE", "retry_delay"]

CDC_ENTITIES = [name for name in ENTITY_NAMES if ENTITIES[name].cdc_supported]

log = logging.getLogger("qbsync.inbox")

MAX_ATTEMPTS = 8
LEASE = timedelta(minutes=5)
CLAIM_LIMIT = 500
CDC_REACH = timedelta(days=29)


def retry_delay(attempts: int) -> timedelta:
    """Backoff after `attempts` failed tries: 10 s, 20 s, 40 s ... capped at 1 h."""
    return timedelta(seconds=min(3600, 10 * 2 ** max(0, attempts - 1)))


@dataclass
class InboxStats:
    """What one pass did."""

    claimed: int = 0
    processed: int = 0
    failed: int = 0
    retried: int = 0
    api_calls: int = 0


@dataclass
class _Event:
    id: int
    realm_id: str
    entity: str
    entity_id: str
    operation: str
    occurred_at: datetime | None
    deleted_id: str | None
    attempts: int


def _claim(db: Database, limit: int, realms: list[str] | None) -> list[_Event]:
    with db.transaction() as conn:
        rows = conn.execute(
            "UPDATE quickbooks.webhook_inbox SET attempts = attempts + 1, next_attempt_at = now() + %s"
            " WHERE id IN (SELECT id FROM quickbooks.webhook_inbox WHERE status = 'pending'"
            " AND next_attempt_at <= now() AND (%s::text[] IS NULL OR realm_id = ANY(%s::text[]))"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, realm_id, entity, entity_id, operation, occurred_at, deleted_id, attempts",
            (LEASE, realms, realms, limit)).fetchall()
    return sorted((_Event(*row) for row in rows), key=lambda e: e.id)


def process_inbox(db: Database, settings: Settings, *, client_factory: Callable[[str], Any] | None = None,
                  limit: int = CLAIM_LIMIT, realms: list[str] | None = None, cdc_only: bool = False) -> InboxStats:
    """Apply every due pending event (of `realms` only, when given: the realms this process holds
    the lease of); see the module docstring. `cdc_only` (the usage governor, SPEC section 12): the
    CDC entities' events are applied through one CDC call per realm even for a single id.
    DatabaseUnavailable propagates."""
    stats = InboxStats()
    events = _claim(db, limit, realms)
    stats.claimed = len(events)
    by_realm: dict[str, list[_Event]] = defaultdict(list)
    for event in events:
        by_realm[event.realm_id].append(event)
    for realm_id, realm_events in by_realm.items():
        _process_realm(db, settings, realm_id, realm_events, stats, client_factory, cdc_only)
    if stats.claimed:
        log.info("inbox: %d events, %d processed, %d retried later, %d failed, %d api calls",
                 stats.claimed, stats.processed, stats.retried, stats.failed, stats.api_calls)
    return stats


def _client(db: Database, settings: Settings, realm_id: str, factory: Callable[[str], Any] | None) -> Any:
    if factory is not None:
        return factory(realm_id)
    return client_for(db, settings, realm_id, service="inbox")


def _process_realm(db: Database, settings: Settings, realm_id: str, events: list[_Event], stats: InboxStats,
                   factory: Callable[[str], Any] | None, cdc_only: bool = False) -> None:
    known = [e for e in events if e.entity in ENTITIES]
    unknown = [e for e in events if e.entity not in ENTITIES]
    if unknown:
        _finish(db, unknown, "ignored", None)
    if not known:
        return
    client = None
    try:
        from services.tokens.vault import access_token_for

        access_token_for(db, settings, realm_id)
        client = _client(db, settings, realm_id, factory)
        fetched, gone = _fetch(client, known, cdc_only=cdc_only)
        with db.transaction() as conn:
            stats_by_entity = _apply(conn, settings, realm_id, known, fetched, gone)
            _record_runs(conn, realm_id, stats_by_entity, getattr(client, "api_calls", 0))
            _mark(conn, known, "processed", None)
        stats.processed += len(known)
    except DatabaseUnavailable:
        raise
    except NeedsReauth as exc:
        reason = f"realm {realm_id} cannot be synced: {exc.one_line()}"
        _finish(db, known, "failed", reason)
        stats.failed += len(known)
        _error(db, realm_id, reason, exc)
    except Exception as exc:  # noqa: BLE001 - any failure is retried with backoff and recorded
        message = describe(exc)
        dead = [e for e in known if e.attempts >= MAX_ATTEMPTS]
        retry = [e for e in known if e.attempts < MAX_ATTEMPTS]
        if dead:
            _finish(db, dead, "failed", message)
            stats.failed += len(dead)
        if retry:
            with db.transaction() as conn, conn.cursor() as cur:
                cur.executemany("UPDATE quickbooks.webhook_inbox SET next_attempt_at = now() + %s,"
                                " last_error = %s WHERE id = %s",
                                [(retry_delay(e.attempts), message[:2000], e.id) for e in retry])
            stats.retried += len(retry)
        _error(db, realm_id, f"webhook events ({len(known)}) not applied, will retry: {message}", exc)
        with db.transaction() as conn:
            _record_runs(conn, realm_id, {e.entity: [0, 0, 0] for e in known},
                         getattr(client, "api_calls", 0) if client is not None else 0, "failed", message[:2000])
    finally:
        if client is not None:
            stats.api_calls += getattr(client, "api_calls", 0)
            close = getattr(client, "close", None)
            if close:
                close()


def _error(db: Database, realm_id: str, message: str, exc: BaseException) -> None:
    with db.transaction() as conn:
        record_error(conn, "sync", message, realm_id=realm_id,
                     code=getattr(exc, "code", None), intuit_tid=getattr(exc, "intuit_tid", None))


def _wanted(events: list[_Event]) -> set[tuple[str, str]]:
    """Distinct (entity, id) whose current state must be fetched."""
    wanted = set()
    for e in events:
        if e.entity == "CompanyInfo":
            wanted.add(("CompanyInfo", e.realm_id))
        else:
            wanted.add((e.entity, e.entity_id))
    return wanted


def _fetch(client: Any, events: list[_Event], *,
           cdc_only: bool = False) -> tuple[dict[tuple[str, str], dict], set[tuple[str, str]]]:
    """(objects by (entity, id), ids QBO says are gone); CDC when it saves calls, or always
    (`cdc_only`) when the metered-call budget is nearly spent."""
    wanted = _wanted(events)
    fetched: dict[tuple[str, str], dict] = {}
    gone: set[tuple[str, str]] = set()
    # CompanyInfo and the entities outside Intuit's CDC (TimeActivity, ...) are always read
    by_cdc = [(entity, ident) for entity, ident in wanted if ENTITIES[entity].cdc_supported]
    # a document that links others (a payment, a bill payment, a deposit...) changes them too (balances,
    # LinkedTxn) without events of their own: one CDC call over every entity covers both
    linking = any(ENTITIES[entity].linked_txns for entity, _ in by_cdc)
    times = [e.occurred_at for e in events if e.occurred_at is not None]
    if by_cdc and len(times) == len(events) and (len(by_cdc) > 1 or linking or cdc_only):
        since = min(times) - timedelta(seconds=1)
        if datetime.now(timezone.utc) - since < CDC_REACH:
            result = client.cdc(CDC_ENTITIES, since)
            if result.total < CDC_MAX_OBJECTS:
                for entity, objects in result.objects.items():
                    for obj in objects:
                        key = (entity, str(obj.get("Id")))
                        if is_delete_marker(obj):
                            gone.add(key)
                        fetched[key] = obj
    for entity, ident in sorted(wanted):
        if (entity, ident) in fetched:
            continue
        try:
            fetched[(entity, ident)] = client.company_info() if entity == "CompanyInfo" else client.read(entity, ident)
        except NotFound:
            gone.add((entity, ident))
    return fetched, gone


def _apply(conn: psycopg.Connection, settings: Settings, realm_id: str, events: list[_Event], fetched: dict,
           gone: set) -> dict[str, list[int]]:
    """Write what was fetched; per entity [rows fetched, upserted, deleted]."""
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in events:
        stats[e.entity]
    # merges first: the merged-away row is retired, then the survivor is written below
    for e in events:
        if e.operation.lower() == "merge" and e.deleted_id:
            spec = ENTITIES[e.entity]
            at = e.occurred_at or datetime.now(timezone.utc)
            stats[e.entity][2] += mark_merged(conn, spec, realm_id, e.deleted_id, e.entity_id, at)
    by_entity: dict[str, list[dict]] = defaultdict(list)
    for (entity, ident), obj in fetched.items():
        if entity == "CompanyInfo":
            stats[entity][0] += 1
            stats[entity][1] += upsert_company(conn, realm_id, obj, environment=settings.environment).written
        elif not is_delete_marker(obj):
            by_entity[entity].append(obj)
    for entity, objects in by_entity.items():
        result = apply_objects(conn, ENTITIES[entity], realm_id, objects)
        stats[entity][0] += result.received
        stats[entity][1] += result.written
    deletions: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for entity, ident in gone:
        if entity == "CompanyInfo":
            continue
        marker = fetched.get((entity, ident))
        deleted_at: Any
        if marker is not None:
            deleted_at = (marker.get("MetaData") or {}).get("LastUpdatedTime")
        else:
            times = [e.occurred_at for e in events if e.entity == entity and e.entity_id == ident and e.occurred_at]
            deleted_at = max(times) if times else datetime.now(timezone.utc)
        deletions[entity].append((ident, deleted_at))
    for entity, pairs in deletions.items():
        stats[entity][0] += len(pairs)
        stats[entity][2] += mark_deleted(conn, ENTITIES[entity], realm_id, pairs)
    return dict(stats)


def _record_runs(conn: psycopg.Connection, realm_id: str, stats: dict[str, list[int]], api_calls: int,
                 status: str = "success", error: str | None = None) -> None:
    """One sync_runs row (kind and trigger 'webhook') per entity touched; the realm's API calls
    are counted on the first."""
    for i, (entity, (fetched, upserted, deleted)) in enumerate(sorted(stats.items())):
        run = RunRecord(status, "webhook", fetched, upserted, deleted, api_calls if i == 0 else 0, error)
        record_run(conn, ENTITIES[entity], realm_id, run, trigger="webhook")


def _mark(conn: psycopg.Connection, events: list[_Event], status: str, error: str | None) -> None:
    conn.execute(
        "UPDATE quickbooks.webhook_inbox SET status = %s, processed_at = now(), last_error = %s"
        " WHERE id = ANY(%s)", (status, error, [e.id for e in events]))


def _finish(db: Database, events: list[_Event], status: str, error: str | None) -> None:
    with db.transaction() as conn:
        _mark(conn, events, status, error)
