"""The webhook inbox: Intuit's two payload formats parsed into one event shape, and stored.

Intuit sends either the classic object `{"eventNotifications": [...]}` or, once an app has
switched, a CloudEvents JSON array (FACTS.md section 3). `parse_events` detects the format
from the top-level JSON type and normalizes every event to an `InboxEvent`; anything of the
wrong shape raises `MalformedPayload` with a one-line reason (the receiver answers 400).
`store_events` writes the events into `quickbooks.webhook_inbox` in the caller's
transaction, deduplicated on `dedupe_key`, so a redelivery is stored once. The sync worker
applies pending rows; this module never calls Intuit.

Parsing is strict about what PostgreSQL could not store (NUL characters, lone surrogates,
NaN/Infinity, absurdly long identifiers), so a signed but odd body is a 400, never a 500.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from db.errorlog import record_error
from services.core.qbotime import parse_qbo_time
from services.model.entities import ENTITY_NAMES
from services.sync.wake import wake_workers

__all__ = [
    "InboxEvent", "MalformedPayload", "parse_events", "store_events",
    "SYNCED_ENTITIES", "MAX_ID_LENGTH",
]

# The entities qbsync syncs (SPEC sections 6 and 10); events for any other entity are stored as 'ignored'.
SYNCED_ENTITIES = frozenset(ENTITY_NAMES)
MAX_ID_LENGTH = 200  # realm ids are ~19 digits, entity ids a few, CloudEvents ids a UUID
_MAX_DEDUPE_KEY_BYTES = 1000  # far below PostgreSQL's ~2700-byte btree entry limit

# QBO entity names whose lower-case form does not capitalize back by itself
# (CloudEvents types carry `qbo.<entity lower-case>.<verb>.v1`). Any other name is
# capitalized generically, so entities Intuit adds later still map to something sensible.
_ENTITY_NAMES = {name.lower(): name for name in (
    "CompanyInfo", "JournalEntry", "JournalCode", "BillPayment", "CreditMemo", "SalesReceipt",
    "RefundReceipt", "PurchaseOrder", "VendorCredit", "TimeActivity", "PaymentMethod",
    "TaxAgency", "TaxCode", "TaxRate", "TaxService", "CreditCardPayment", "ReimburseCharge",
    "RecurringTransaction", "CompanyCurrency", "ExchangeRate", "InventoryAdjustment",
    "SalesTerm", "CustomerType", "Preferences",
)}
_VERBS = {"created": "Create", "updated": "Update", "deleted": "Delete", "merged": "Merge",
          "voided": "Void", "emailed": "Emailed"}
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL text/jsonb cannot hold these
_VERSION = re.compile(r"v\d+")


class MalformedPayload(ValueError):
    """The body is not a webhook payload qbsync understands; `str()` is a one-line reason."""


@dataclass(frozen=True)
class InboxEvent:
    """One webhook event, the same shape whichever format Intuit sent it in."""

    format: str                    # 'classic' | 'cloudevents'
    event_id: str | None           # CloudEvents id; None for classic
    realm_id: str
    entity: str                    # QBO name: Customer, Invoice, CompanyInfo, ...
    entity_id: str
    operation: str                 # Create | Update | Delete | Merge | Void | Emailed | ...
    occurred_at: datetime | None   # aware; classic lastUpdated / CloudEvents time
    deleted_id: str | None         # merges: the id merged away
    payload: dict[str, Any]        # this single event's JSON as received
    raw_time: str | None = None    # the timestamp text as received (part of the classic key)

    @property
    def dedupe_key(self) -> str:
        """Equal for redeliveries of the same event, different for different events."""
        if self.format == "cloudevents":
            key = f"ce:{self.event_id}"
        else:
            key = (f"classic:{self.realm_id}:{self.entity}:{self.entity_id}:{self.operation}:"
                   f"{self.raw_time or ''}")
        if len(key.encode("utf-8")) > _MAX_DEDUPE_KEY_BYTES:
            prefix = key.split(":", 1)[0]
            key = f"{prefix}:sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
        return key

    @property
    def synced(self) -> bool:
        """True if qbsync syncs this entity (otherwise the event is stored as 'ignored')."""
        return self.entity in SYNCED_ENTITIES


# ---------------------------------------------------------------------------------------------
# parsing

def _reject_constant(name: str) -> Any:
    raise MalformedPayload(f"JSON constant {name} is not allowed")


def _check_storable(value: Any) -> None:
    """Reject strings PostgreSQL cannot store (NUL, lone surrogates), iteratively."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                raise MalformedPayload("body contains a NUL character or an unpaired surrogate")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and (item != item or item in (float("inf"), float("-inf"))):
            raise MalformedPayload("body contains a number out of range")


def _text(obj: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        what = "missing" if value is None else f"not a non-empty string ({type(value).__name__})"
        raise MalformedPayload(f"{where}: {key} is {what}")
    if len(value) > MAX_ID_LENGTH:
        raise MalformedPayload(f"{where}: {key} is longer than {MAX_ID_LENGTH} characters")
    return value


def _time(obj: dict[str, Any], key: str, where: str) -> tuple[datetime | None, str | None]:
    raw = obj.get(key)
    if raw is None:
        return None, None
    if not isinstance(raw, str):
        raise MalformedPayload(f"{where}: {key} is not a string")
    try:
        return parse_qbo_time(raw), raw
    except ValueError as exc:
        raise MalformedPayload(f"{where}: {key}: {exc}") from None


def _parse_classic(doc: dict[str, Any]) -> list[InboxEvent]:
    notifications = doc["eventNotifications"]
    if not isinstance(notifications, list):
        raise MalformedPayload("eventNotifications is not an array")
    events: list[InboxEvent] = []
    for n, notification in enumerate(notifications):
        where = f"eventNotifications[{n}]"
        if not isinstance(notification, dict):
            raise MalformedPayload(f"{where} is not an object")
        realm_id = _text(notification, "realmId", where)
        change = notification.get("dataChangeEvent")
        if not isinstance(change, dict):
            raise MalformedPayload(f"{where}: dataChangeEvent is missing or not an object")
        entities = change.get("entities")
        if not isinstance(entities, list):
            raise MalformedPayload(f"{where}: dataChangeEvent.entities is missing or not an array")
        for e, entity in enumerate(entities):
            ewhere = f"{where}.dataChangeEvent.entities[{e}]"
            if not isinstance(entity, dict):
                raise MalformedPayload(f"{ewhere} is not an object")
            occurred_at, raw_time = _time(entity, "lastUpdated", ewhere)
            events.append(InboxEvent(
                format="classic", event_id=None, realm_id=realm_id or "",
                entity=_text(entity, "name", ewhere) or "",
                entity_id=_text(entity, "id", ewhere) or "",
                operation=_text(entity, "operation", ewhere) or "",
                occurred_at=occurred_at,
                deleted_id=_text(entity, "deletedId", ewhere, required=False),
                payload=entity, raw_time=raw_time,
            ))
    return events


def _entity_name(lower: str) -> str:
    parts = [p for p in re.split(r"[_-]", lower) if p]
    joined = "".join(parts).lower()
    if joined in _ENTITY_NAMES:
        return _ENTITY_NAMES[joined]
    return "".join(p[:1].upper() + p[1:] for p in parts)


def _split_type(type_: str, where: str) -> tuple[str, str]:
    """`qbo.customer.merged.v1` -> ('Customer', 'Merge'); any verb, any entity."""
    parts = type_.split(".")
    if len(parts) >= 2 and _VERSION.fullmatch(parts[-1]):
        parts = parts[:-1]
    if len(parts) != 3 or parts[0].lower() != "qbo" or not parts[1] or not parts[2]:
        raise MalformedPayload(f"{where}: type {type_[:60]!r} is not qbo.<entity>.<verb>.v<n>")
    verb = parts[2].lower()
    operation = _VERBS.get(verb) or (parts[2][:1].upper() + parts[2][1:])
    return _entity_name(parts[1]), operation


def _parse_cloudevents(doc: list[Any]) -> list[InboxEvent]:
    events: list[InboxEvent] = []
    for n, event in enumerate(doc):
        where = f"event[{n}]"
        if not isinstance(event, dict):
            raise MalformedPayload(f"{where} is not an object")
        event_id = _text(event, "id", where)
        type_ = _text(event, "type", where) or ""
        entity, operation = _split_type(type_, where)
        data = event.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise MalformedPayload(f"{where}: data is not an object")
        occurred_at, raw_time = _time(event, "time", where)
        events.append(InboxEvent(
            format="cloudevents", event_id=event_id,
            realm_id=_text(event, "intuitaccountid", where) or "",
            entity=entity, entity_id=_text(event, "intuitentityid", where) or "",
            operation=operation, occurred_at=occurred_at,
            deleted_id=_text(data, "deletedid", f"{where}.data", required=False),
            payload=event, raw_time=raw_time,
        ))
    return events


def parse_events(body: bytes) -> list[InboxEvent]:
    """Every event in a webhook body, normalized; MalformedPayload (one-line reason) otherwise.

    Classic bodies (an object with `eventNotifications`) and CloudEvents bodies (an array)
    are both accepted; each event carries its own realm, so a batch spanning several realms
    yields per-realm events. Parsing never touches the database.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("body is not UTF-8") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except MalformedPayload:
        raise
    except RecursionError:
        raise MalformedPayload("body nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "number too long"
        raise MalformedPayload(f"body is not JSON: {reason}") from None
    _check_storable(doc)
    if isinstance(doc, dict) and "eventNotifications" in doc:
        return _parse_classic(doc)
    if isinstance(doc, list):
        return _parse_cloudevents(doc)
    if isinstance(doc, dict):
        raise MalformedPayload("JSON object without eventNotifications (neither classic nor CloudEvents)")
    raise MalformedPayload(f"top-level JSON {type(doc).__name__} is neither an object nor an array")


# ---------------------------------------------------------------------------------------------
# storing

_INSERT = (
    "INSERT INTO quickbooks.webhook_inbox (dedupe_key, format, event_id, realm_id, entity,"
    " entity_id, operation, occurred_at, deleted_id, payload, status)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)


def _row(event: InboxEvent) -> tuple[Any, ...]:
    return (event.dedupe_key, event.format, event.event_id, event.realm_id, event.entity,
            event.entity_id, event.operation, event.occurred_at, event.deleted_id,
            json.dumps(event.payload, ensure_ascii=False, allow_nan=False),
            "pending" if event.synced else "ignored")


def _unknown_realms(conn: psycopg.Connection, realms: Iterable[str]) -> list[str]:
    wanted = sorted(set(realms))
    if not wanted:
        return []
    known = {row[0] for row in conn.execute(
        "SELECT realm_id FROM quickbooks.tokens WHERE realm_id = ANY(%s)", (wanted,))}
    return [realm for realm in wanted if realm not in known]


def store_events(conn: psycopg.Connection, events: Sequence[InboxEvent]) -> int:
    """Insert `events` into the inbox in the caller's transaction; return how many were new.

    Deduplicated on `dedupe_key` (a redelivery, or the same event twice in one body, is
    stored once). Entities qbsync does not sync are stored with status 'ignored'. Events for
    realms without a row in quickbooks.tokens are stored pending and reported once per realm
    in the errors table (service 'webhook'). Nothing is committed here. When something new was
    stored, the sync workers are woken (services/sync/wake.py) to apply it within seconds.
    """
    if not events:
        return 0
    with conn.cursor() as cur:
        cur.executemany(_INSERT, [_row(event) for event in events])
        stored = max(cur.rowcount, 0)
    if stored:
        wake_workers(conn)
    for realm in _unknown_realms(conn, (event.realm_id for event in events)):
        count = sum(1 for event in events if event.realm_id == realm)
        record_error(conn, "webhook",
                     f"webhook events for unknown realm {realm} ({count} in this delivery, kept pending):"
                     " connect the company with `qbsync connect`, or ignore if it was disconnected",
                     realm_id=realm)
    return stored
