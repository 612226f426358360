"""Everything the emulator knows: realms and their data, tokens, counters, limits and the clock.

Data: each realm keeps one `EntityStore` per entity. A `Record` holds the object's JSON text
(serialized once, when created or changed: responses are joins of these texts, so what is
served is exact and a 1,000-row page costs a join), plus the few fields queries need. Live
ids stay sorted, so Id-ordered paging is a slice; other listings are computed once per data
version and cached. Every change appends to a per-store change log ordered by time, which
CDC reads from a bisect (1,000-object cap across entities); a `changedSince` older than the
30-day window is refused with Intuit's 400 "... older than fixed days is not supported.".

Tokens: per realm a family of access and refresh tokens. A refresh is accepted for the
newest refresh token, or a superseded one within `grace_seconds` of being superseded, before
the rolling and hard expiries. Each success issues a new access token; the refresh token is
the same one while the newest is younger than `refresh_token_reuse_seconds` (Intuit's way,
a day by default) and a new one otherwise (0 = strict: a new refresh token every time).

All times come from `now()` = wall clock + an offset that `advance_clock` moves.
All methods are thread-safe (one re-entrant lock; rate/concurrency counters have their own).
"""

from __future__ import annotations

import bisect
import random
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.emulator import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET, EMULATOR_VERIFIER_TOKEN
from services.emulator.data import CompanyGenerator, generate_company, void_invoice
from services.emulator.jsontext import dumps, fmt_time_ms, fmt_ts, loads, money, parse_ts
from services.emulator.query import Query, QueryError, filter_records, parse_query, project
from services.emulator.webhooks import WebhookDispatcher
from services.intuit.limits import CDC_LOOKBACK, CDC_MAX_OBJECTS, CONCURRENT_REQUESTS, REQUESTS_PER_MINUTE

__all__ = ["State", "EmulatorError", "Record", "EntityStore", "ENTITIES", "NAME_LIST", "TRANSACTIONS",
           "ACCESS_TOKEN_SECONDS", "REFRESH_TOKEN_SECONDS", "HARD_EXPIRY_SECONDS", "COUNT_KEYS",
           "REFRESH_TOKEN_REUSE_SECONDS"]

ENTITIES = ("Customer", "Item", "Invoice", "Estimate")
NAME_LIST = frozenset({"Customer", "Item"})
TRANSACTIONS = frozenset({"Invoice", "Estimate"})
CANONICAL = {e.lower(): e for e in ENTITIES + ("CompanyInfo",)}
ACCESS_TOKEN_SECONDS = 3600
REFRESH_TOKEN_SECONDS = 8726400
HARD_EXPIRY_SECONDS = 5 * 365 * 86400  # 157,680,000 s, as Intuit's sample implementation
CDC_WINDOW_SECONDS = CDC_LOOKBACK.total_seconds()
AUTH_CODE_SECONDS = 600
MAX_CONCURRENT = CONCURRENT_REQUESTS
COUNT_KEYS = ("query", "cdc", "read", "companyinfo", "token:refresh_token", "token:authorization_code",
              "revoke", "authorize", "throttled", "no_minorversion")
CONFIG_KEYS = ("grace_seconds", "rate_limit_per_minute", "latency_ms", "fail_rate_429", "fail_rate_503",
               "webhook_url", "webhook_format", "verifier_token", "hard_expires_in", "seed",
               "refresh_token_reuse_seconds")
# Intuit answers a refresh with the same refresh token for about a day, then a new one
# (FACTS: the value changes every ~24 h). 0 = "strict": a new refresh token on every refresh.
REFRESH_TOKEN_REUSE_SECONDS = 86400


class EmulatorError(Exception):
    """A refused admin or API request: `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Record:
    """One object: its JSON text as served plus the fields queries and CDC use."""

    __slots__ = ("id", "json", "created", "updated", "active", "deleted", "seq", "doc", "name")

    def __init__(self, rid: int, json_text: bytes, created: float, updated: float, active: bool,
                 doc: str | None, name: str | None, seq: int) -> None:
        self.id = rid
        self.json = json_text
        self.created = created
        self.updated = updated
        self.active = active
        self.deleted = False
        self.seq = seq
        self.doc = doc
        self.name = name


class EntityStore:
    """One entity of one realm: records by id, sorted live ids, a time-ordered change log."""

    def __init__(self, entity: str) -> None:
        self.entity = entity
        self.records: dict[int, Record] = {}
        self.live: list[int] = []
        self.log: list[tuple[float, int, int]] = []  # (updated, seq, id); stale entries skipped
        self.cache: dict[Any, list[Record]] = {}
        self.next_id = 1

    def load(self, records: Iterable[Record]) -> None:
        """Bulk insert (generation): one sort instead of one insert per record."""
        for rec in records:
            self.records[rec.id] = rec
            self.next_id = max(self.next_id, rec.id + 1)
        self.live = sorted(r.id for r in self.records.values() if not r.deleted)
        self.log = sorted((r.updated, r.seq, r.id) for r in self.records.values())
        self.cache.clear()

    def touch(self, rec: Record, *, new: bool = False) -> None:
        """Record a change of `rec` (already updated in place)."""
        if new:
            self.records[rec.id] = rec
            self.next_id = max(self.next_id, rec.id + 1)
            bisect.insort(self.live, rec.id)
        if rec.deleted:
            k = bisect.bisect_left(self.live, rec.id)
            if k < len(self.live) and self.live[k] == rec.id:
                del self.live[k]
        entry = (rec.updated, rec.seq, rec.id)
        if not self.log or self.log[-1] <= entry:
            self.log.append(entry)
        else:
            bisect.insort(self.log, entry)
        self.cache.clear()

    def live_records(self) -> list[Record]:
        return [self.records[i] for i in self.live]

    def changed_since(self, since: float) -> list[Record]:
        """Current versions of records (deleted ones included) changed at or after `since`."""
        start = bisect.bisect_left(self.log, (since, -1, -1))
        out = []
        for _ts, seq, rid in self.log[start:]:
            rec = self.records[rid]
            if rec.seq == seq:
                out.append(rec)
        return out


@dataclass
class AccessToken:
    realm_id: str
    expires_at: float
    dead: bool = False


@dataclass
class RefreshToken:
    realm_id: str
    issued_at: float
    expires_at: float
    superseded_at: float | None = None
    dead: bool = False


@dataclass
class Realm:
    realm_id: str
    created_at: float
    hard_expires_at: float
    generator: CompanyGenerator
    company_info: bytes = b""
    stores: dict[str, EntityStore] = field(default_factory=lambda: {e: EntityStore(e) for e in ENTITIES})
    next_doc: dict[str, int] = field(default_factory=dict)
    newest_access: str | None = None
    newest_refresh: str | None = None
    refresh_tokens: list[str] = field(default_factory=list)
    access_tokens: list[str] = field(default_factory=list)


@dataclass
class AuthCode:
    realm_id: str
    redirect_uri: str
    client_id: str
    issued_at: float
    used: bool = False


class State:
    """The emulator's whole world (see module docstring)."""

    def __init__(self, *, grace_seconds: float = 86400, rate_limit_per_minute: int = REQUESTS_PER_MINUTE, latency_ms: int = 0,
                 seed: int = 1, client_id: str = EMULATOR_CLIENT_ID, client_secret: str = EMULATOR_CLIENT_SECRET,
                 verifier_token: str = EMULATOR_VERIFIER_TOKEN,
                 refresh_token_reuse_seconds: float = REFRESH_TOKEN_REUSE_SECONDS) -> None:
        self.lock = threading.RLock()
        self._rate_lock = threading.Lock()
        self.client_id = client_id
        self.client_secret = client_secret
        self.config: dict[str, Any] = {
            "grace_seconds": grace_seconds, "rate_limit_per_minute": rate_limit_per_minute,
            "latency_ms": latency_ms, "fail_rate_429": 0.0, "fail_rate_503": 0.0, "webhook_url": None,
            "webhook_format": "cloudevents", "verifier_token": verifier_token,
            "hard_expires_in": HARD_EXPIRY_SECONDS, "seed": seed,
            "refresh_token_reuse_seconds": refresh_token_reuse_seconds,
        }
        self.clock_offset = 0.0
        self.realms: dict[str, Realm] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.authorize_realm: str | None = None
        self.counts: dict[str, Counter[str]] = {}
        self.minor_versions: Counter[str] = Counter()
        self._seq = 0
        self._realm_rng = random.Random(seed)
        self._fail_rng = random.Random(seed)
        self._windows: dict[str, deque[float]] = {}
        self._inflight: dict[str, int] = {}
        self.webhooks = WebhookDispatcher()

    # ---- clock and counters -----------------------------------------------------------------
    def now(self) -> float:
        """Emulator time (epoch seconds): wall clock plus the offset `advance_clock` set."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator clock forward (or back) by `seconds`; returns the new now()."""
        with self.lock:
            self.clock_offset += float(seconds)
            return self.now()

    def time_text(self) -> str:
        """The `time` field of a response: now with milliseconds and the company offset."""
        return fmt_time_ms(self.now())

    def count(self, realm_id: str | None, key: str) -> None:
        with self.lock:
            self.counts.setdefault(realm_id or "", Counter())[key] += 1

    def request_counts(self, realm_id: str | None = None) -> dict[str, int]:
        """Calls per kind for one realm, or for everything (realm-less token failures included)."""
        with self.lock:
            total: Counter[str] = Counter({k: 0 for k in COUNT_KEYS})
            for rid, counter in self.counts.items():
                if realm_id is None or rid == realm_id:
                    total.update(counter)
            return dict(total)

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.minor_versions.clear()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def configure(self, **kw: Any) -> dict[str, Any]:
        """Change settings (see CONFIG_KEYS); returns the whole configuration, secrets masked.
        `hard_expires_in` applies to realms created afterwards; `seed` reseeds failure injection."""
        with self.lock:
            for key, value in kw.items():
                if key not in CONFIG_KEYS:
                    raise EmulatorError(f"unknown setting {key!r} (known: {', '.join(CONFIG_KEYS)})")
                if key == "webhook_format" and value not in ("classic", "cloudevents"):
                    raise EmulatorError("webhook_format must be classic or cloudevents")
                if key in ("fail_rate_429", "fail_rate_503") and not 0 <= float(value) <= 1:
                    raise EmulatorError(f"{key} must be between 0 and 1")
                if key == "seed":
                    self._fail_rng = random.Random(int(value))
                self.config[key] = value
            shown = dict(self.config)
            shown["verifier_token"] = "***"
            return shown

    # ---- realms -----------------------------------------------------------------------------
    def create_realm(self, realm_id: str | None = None, company_name: str | None = None, customers: int = 50,
                     items: int = 20, invoices: int = 100, estimates: int = 20, seed: int | None = None) -> str:
        """Generate a company (deterministic for `seed`) and return its realm id."""
        for name, n in (("customers", customers), ("items", items), ("invoices", invoices), ("estimates", estimates)):
            if not isinstance(n, int) or n < 0:
                raise EmulatorError(f"{name} must be a whole number >= 0")
        with self.lock:
            if realm_id is None:
                while realm_id is None or realm_id in self.realms:
                    realm_id = str(self._realm_rng.randint(9130000000000000, 9341999999999999))
            elif realm_id in self.realms:
                raise EmulatorError(f"realm {realm_id} already exists", 409)
            if seed is None:
                seed = self._realm_rng.randint(1, 2**31)
            now = self.now()
        gen = CompanyGenerator(int(seed))
        realm = Realm(str(realm_id), now, now + float(self.config["hard_expires_in"]), gen)
        batches: dict[str, list[Record]] = {e: [] for e in ENTITIES}
        for entity, obj, created, updated in generate_company(
                int(seed), now=now, customers=customers, items=items, invoices=invoices, estimates=estimates,
                realm_id=str(realm_id), company_name=company_name, generator=gen):
            text = dumps(obj).encode()
            if entity == "CompanyInfo":
                realm.company_info = text
                continue
            batches[entity].append(self._new_record(entity, obj, text, created, updated))
        with self.lock:
            for entity, recs in batches.items():
                realm.stores[entity].load(recs)
            realm.next_doc = {"Invoice": 1001 + invoices, "Estimate": 5001 + estimates}
            self.realms[realm.realm_id] = realm
        return realm.realm_id

    def _new_record(self, entity: str, obj: dict[str, Any], text: bytes, created: float, updated: float) -> Record:
        name = obj.get("DisplayName") if entity == "Customer" else obj.get("Name")
        return Record(int(obj["Id"]), text, created, updated, bool(obj.get("Active", True)),
                      obj.get("DocNumber"), name, self.next_seq())

    def realm(self, realm_id: str) -> Realm:
        realm = self.realms.get(str(realm_id))
        if realm is None:
            raise EmulatorError(f"unknown realm {realm_id}", 404)
        return realm

    def first_realm(self) -> str:
        with self.lock:
            if self.authorize_realm and self.authorize_realm in self.realms:
                return self.authorize_realm
            if self.realms:
                return next(iter(self.realms))
        return self.create_realm()

    def set_authorize_realm(self, realm_id: str) -> None:
        with self.lock:
            self.realm(realm_id)
            self.authorize_realm = str(realm_id)

    # ---- tokens -----------------------------------------------------------------------------
    def check_client(self, client_id: str | None, client_secret: str | None) -> bool:
        return bool(client_id) and secrets.compare_digest(str(client_id), self.client_id) and \
            secrets.compare_digest(str(client_secret or ""), self.client_secret)

    def _issue_access(self, realm: Realm, access_expires_in: int = ACCESS_TOKEN_SECONDS) -> str:
        access = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0.." + secrets.token_urlsafe(48)
        self.access_tokens[access] = AccessToken(realm.realm_id, self.now() + access_expires_in)
        realm.newest_access = access
        realm.access_tokens.append(access)
        return access

    def _issue(self, realm: Realm, access_expires_in: int = ACCESS_TOKEN_SECONDS) -> tuple[str, str]:
        """A new access token AND a new refresh token (the previous one superseded)."""
        now = self.now()
        access = self._issue_access(realm, access_expires_in)
        refresh = "AB11" + f"{int(now):010d}" + secrets.token_urlsafe(27)
        if realm.newest_refresh and realm.newest_refresh in self.refresh_tokens:
            self.refresh_tokens[realm.newest_refresh].superseded_at = now
        self.refresh_tokens[refresh] = RefreshToken(realm.realm_id, now, now + REFRESH_TOKEN_SECONDS)
        realm.newest_refresh = refresh
        realm.refresh_tokens.append(refresh)
        return access, refresh

    def _token_body(self, realm: Realm, access: str, refresh: str, include_hard: bool) -> dict[str, Any]:
        now = self.now()
        body: dict[str, Any] = {
            "access_token": access, "token_type": "bearer",
            "expires_in": max(0, round(self.access_tokens[access].expires_at - now)),
            "refresh_token": refresh,
            "x_refresh_token_expires_in": max(0, round(min(self.refresh_tokens[refresh].expires_at,
                                                         realm.hard_expires_at) - now)),
        }
        if include_hard:
            body["x_refresh_token_hard_expires_in"] = max(0, round(realm.hard_expires_at - now))
        return body

    def issue_tokens(self, realm_id: str, access_expires_in: int = ACCESS_TOKEN_SECONDS) -> dict[str, Any]:
        """A fresh token pair for the realm (now the newest), as a token response with realmId."""
        with self.lock:
            realm = self.realm(realm_id)
            access, refresh = self._issue(realm, int(access_expires_in))
            body = self._token_body(realm, access, refresh, True)
            body["realmId"] = realm.realm_id
            return body

    def newest_tokens(self, realm_id: str) -> dict[str, Any]:
        """The realm's current access token and newest refresh token (issuing a pair if none)."""
        with self.lock:
            realm = self.realm(realm_id)
            if not realm.newest_access or not realm.newest_refresh:
                return self.issue_tokens(realm_id)
            body = self._token_body(realm, realm.newest_access, realm.newest_refresh, True)
            body["realmId"] = realm.realm_id
            return body

    def expire_access_tokens(self, realm_id: str) -> None:
        with self.lock:
            realm = self.realm(realm_id)
            now = self.now()
            for token in realm.access_tokens:
                tok = self.access_tokens[token]
                tok.expires_at = min(tok.expires_at, now - 1)

    def invalidate_refresh_tokens(self, realm_id: str) -> None:
        with self.lock:
            for token in self.realm(realm_id).refresh_tokens:
                self.refresh_tokens[token].dead = True

    def refresh(self, refresh_token: str, include_hard: bool) -> tuple[int, dict[str, Any], str | None]:
        """Token endpoint, grant_type=refresh_token: (status, body, realm id or None)."""
        with self.lock:
            now = self.now()
            tok = self.refresh_tokens.get(refresh_token)
            if tok is None:
                return 400, _INVALID_GRANT, None
            realm = self.realms.get(tok.realm_id)
            grace = float(self.config["grace_seconds"])
            if (realm is None or tok.dead or now >= tok.expires_at or now >= realm.hard_expires_at
                    or (tok.superseded_at is not None and now > tok.superseded_at + grace)):
                return 400, _INVALID_GRANT, tok.realm_id
            reuse = float(self.config["refresh_token_reuse_seconds"])
            if refresh_token == realm.newest_refresh and now < tok.issued_at + reuse:
                access = self._issue_access(realm)  # Intuit's way: same refresh token within the day
                return 200, self._token_body(realm, access, refresh_token, include_hard), realm.realm_id
            access, refresh = self._issue(realm)
            return 200, self._token_body(realm, access, refresh, include_hard), realm.realm_id

    def authorize(self, client_id: str, redirect_uri: str) -> tuple[str, str]:
        """Auto-approve a consent: (code, realm id)."""
        realm_id = self.first_realm()
        with self.lock:
            code = "AB11" + secrets.token_urlsafe(30)
            self.auth_codes[code] = AuthCode(realm_id, redirect_uri, client_id, self.now())
            return code, realm_id

    def exchange_code(self, code: str, redirect_uri: str, include_hard: bool) -> tuple[int, dict[str, Any], str | None]:
        """Token endpoint, grant_type=authorization_code: single use, 10 minutes, same redirect_uri."""
        with self.lock:
            auth = self.auth_codes.get(code)
            if auth is None:
                return 400, {"error": "invalid_grant"}, None
            if auth.used or redirect_uri != auth.redirect_uri or self.now() > auth.issued_at + AUTH_CODE_SECONDS:
                return 400, {"error": "invalid_grant"}, auth.realm_id
            auth.used = True
            realm = self.realm(auth.realm_id)
            access, refresh = self._issue(realm)
            return 200, self._token_body(realm, access, refresh, include_hard), realm.realm_id

    def revoke(self, token: str) -> str | None:
        """Kill every token of the family `token` belongs to; returns the realm id (None if unknown)."""
        with self.lock:
            found = self.refresh_tokens.get(token) or self.access_tokens.get(token)
            if found is None:
                return None
            realm = self.realms.get(found.realm_id)
            if realm is not None:
                for t in realm.refresh_tokens:
                    self.refresh_tokens[t].dead = True
                for t in realm.access_tokens:
                    self.access_tokens[t].dead = True
                realm.newest_access = realm.newest_refresh = None
            return found.realm_id

    def check_access(self, token: str | None, realm_id: str) -> int:
        """200 if `token` may call realm `realm_id` now, 401 if not valid, 403 if for another realm."""
        with self.lock:
            tok = self.access_tokens.get(token or "")
            if tok is None or tok.dead or self.now() >= tok.expires_at:
                return 401
            if tok.realm_id != realm_id or realm_id not in self.realms:
                return 403
            return 200

    # ---- limits ----------------------------------------------------------------------------
    def admit(self, realm_id: str) -> bool:
        """Take a request slot for the realm (sliding 60 s window and 10 concurrent); False → 429."""
        now = self.now()
        limit = int(self.config["rate_limit_per_minute"])
        with self._rate_lock:
            window = self._windows.setdefault(realm_id, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            inflight = self._inflight.get(realm_id, 0)
            if len(window) >= limit or inflight >= MAX_CONCURRENT:
                return False
            window.append(now)
            self._inflight[realm_id] = inflight + 1
            return True

    def release(self, realm_id: str) -> None:
        with self._rate_lock:
            self._inflight[realm_id] = max(0, self._inflight.get(realm_id, 0) - 1)

    def injected_failure(self) -> int | None:
        """429 or 503 when the seeded failure injection says so, else None."""
        with self.lock:
            r429, r503 = float(self.config["fail_rate_429"]), float(self.config["fail_rate_503"])
            if not r429 and not r503:
                return None
            roll = self._fail_rng.random()
            if roll < r429:
                return 429
            if roll < r429 + r503:
                return 503
            return None

    # ---- Data API ---------------------------------------------------------------------------
    def fault(self, message: str, detail: str, code: str, element: str | None = None) -> bytes:
        error: dict[str, Any] = {"Message": message, "Detail": detail, "code": code}
        if element is not None:
            error["element"] = element
        return dumps({"Fault": {"Error": [error], "type": "ValidationFault"}, "time": self.time_text()}).encode()

    def not_found(self) -> bytes:
        return self.fault("Object Not Found", "Object Not Found : Something you're trying to use has been made "
                          "inactive. Check the fields with accounts, customers, items, vendors or employees.",
                          "610", "")

    def _wrap(self, inner: bytes) -> bytes:
        return b"{" + inner + b',"time":"' + self.time_text().encode() + b'"}'

    def query(self, realm_id: str, text: str) -> tuple[int, bytes]:
        """Run a QBO query: (HTTP status, body)."""
        try:
            q = parse_query(text)
        except QueryError as exc:
            return 400, self._query_fault(str(exc))
        entity = CANONICAL.get(q.entity.lower())
        if entity is None:
            return 400, self._query_fault(f"QueryParserError: Invalid context declaration : {q.entity}")
        with self.lock:
            realm = self.realm(realm_id)
            if entity == "CompanyInfo":
                if q.count:
                    return 200, self._wrap(b'"QueryResponse":{"totalCount":1}')
                if q.start > 1:
                    return 200, self._wrap(b'"QueryResponse":{}')
                return 200, self._wrap(b'"QueryResponse":{"CompanyInfo":[' + realm.company_info +
                                       b'],"startPosition":1,"maxResults":1}')
            store = realm.stores[entity]
            try:
                rows = self._listing(store, q, hide_inactive=entity in NAME_LIST)
            except QueryError as exc:
                return 400, self._query_fault(str(exc))
            if q.count:
                return 200, self._wrap(b'"QueryResponse":{"totalCount":' + str(len(rows)).encode() + b"}")
            page = rows[q.start - 1:q.start - 1 + q.max_results]
            if not page:
                return 200, self._wrap(b'"QueryResponse":{}')
            body = (b'"QueryResponse":{"' + entity.encode() + b'":[' + b",".join(project(q, r.json) for r in page) +
                    b'],"startPosition":' + str(q.start).encode() + b',"maxResults":' + str(len(page)).encode() + b"}")
            return 200, self._wrap(body)

    def _listing(self, store: EntityStore, q: Query, *, hide_inactive: bool) -> list[Record]:
        key = (q.listing_key(), hide_inactive and not q.has_active_condition)
        rows = store.cache.get(key)
        if rows is None:
            if not q.conds and not hide_inactive and q.order in ((), (("id", False),)):
                rows = store.live_records()
            else:
                rows = filter_records(q, store.live_records(), hide_inactive=hide_inactive)
            if len(store.cache) > 16:
                store.cache.clear()
            store.cache[key] = rows
        return rows

    def _query_fault(self, detail: str) -> bytes:
        message = "Invalid query" if detail.startswith("QueryValidationError") else "Error parsing query"
        return self.fault(message, detail, "4000")

    def cdc(self, realm_id: str, entities: str, changed_since: str) -> tuple[int, bytes]:
        """Change data capture: (HTTP status, body); see module docstring for the limits."""
        names = [n.strip() for n in (entities or "").split(",") if n.strip()]
        if not names:
            return 400, self.fault("Request has invalid or unsupported property", "entities is required", "2010",
                                   "entities")
        try:
            since = parse_ts(changed_since or "")
        except ValueError:
            return 400, self.fault("Request has invalid or unsupported property",
                                   f"Invalid changedSince: {changed_since!r}", "2010", "changedSince")
        wanted: list[str] = []
        for n in names:
            entity = CANONICAL.get(n.lower())
            if entity is None:
                return 400, self.fault("Request has invalid or unsupported property",
                                       f"Invalid entity for CDC: {n}", "2010", "entities")
            if entity not in wanted:
                wanted.append(entity)
        with self.lock:
            realm = self.realm(realm_id)
            if since < self.now() - CDC_WINDOW_SECONDS:
                return 400, self.fault(
                    "Request has invalid or unsupported property",
                    f"Property Name:Can not process CDC request with changedSince date {changed_since} "
                    "which is older than fixed days is not supported. specified is unsupported or invalid",
                    "2010", "changedSince")
            changes: list[tuple[float, int, str, Record]] = []
            for order, entity in enumerate(wanted):
                if entity == "CompanyInfo":
                    continue
                for rec in realm.stores[entity].changed_since(since):
                    changes.append((rec.updated, order, entity, rec))
            changes.sort(key=lambda c: (c[0], c[1], c[3].id))
            kept = changes[:CDC_MAX_OBJECTS]
            groups: dict[str, list[bytes]] = {}
            for _ts, _order, entity, rec in kept:
                groups.setdefault(entity, []).append(rec.json)
            parts = []
            for entity in wanted:
                rows = groups.get(entity)
                if rows:
                    parts.append(b'{"' + entity.encode() + b'":[' + b",".join(rows) +
                                 b'],"startPosition":1,"maxResults":' + str(len(rows)).encode() + b"}")
            return 200, self._wrap(b'"CDCResponse":[{"QueryResponse":[' + b",".join(parts) + b"]}]")

    def read(self, realm_id: str, resource: str, object_id: str) -> tuple[int, bytes]:
        """Read by id: `{"Invoice":{...},"time":...}`, or 400 with Fault 610 when missing/deleted."""
        entity = CANONICAL.get(resource.lower())
        with self.lock:
            realm = self.realm(realm_id)
            if entity == "CompanyInfo":
                if object_id != realm.realm_id:
                    return 400, self.not_found()
                return 200, self._wrap(b'"CompanyInfo":' + realm.company_info)
            if entity is None:
                raise EmulatorError(f"unknown entity {resource!r}")
            try:
                rec = realm.stores[entity].records.get(int(object_id))
            except ValueError:
                rec = None
            if rec is None or rec.deleted:
                return 400, self.not_found()
            return 200, self._wrap(b'"' + entity.encode() + b'":' + rec.json)

    # ---- admin views -------------------------------------------------------------------------
    def entities_json(self, realm_id: str, entity: str, include_deleted: bool = False) -> bytes:
        """A JSON array of the entity's objects exactly as served, in Id order."""
        canonical = CANONICAL.get(entity.lower())
        with self.lock:
            realm = self.realm(realm_id)
            if canonical == "CompanyInfo":
                return b"[" + realm.company_info + b"]"
            if canonical is None:
                raise EmulatorError(f"unknown entity {entity!r} (one of {', '.join(ENTITIES)})")
            store = realm.stores[canonical]
            recs = (sorted(store.records.values(), key=lambda r: r.id) if include_deleted
                    else store.live_records())
            return b"[" + b",".join(r.json for r in recs) + b"]"

    # ---- mutations ---------------------------------------------------------------------------
    def mutate(self, realm_id: str, entity: str, op: str, id: str | int | None = None,  # noqa: A002 - QBO's Id
               fields: dict[str, Any] | None = None, merge_into: str | int | None = None) -> bytes:
        """Apply one change (create/update/delete/void/merge/inactivate), log it for CDC, queue a
        webhook when configured; returns the resulting object's JSON (or the delete marker)."""
        canonical = CANONICAL.get(str(entity).lower())
        if canonical not in ENTITIES:
            raise EmulatorError(f"unknown entity {entity!r} (one of {', '.join(ENTITIES)})")
        if op not in ("create", "update", "delete", "void", "merge", "inactivate"):
            raise EmulatorError(f"unknown op {op!r} (create, update, delete, void, merge, inactivate)")
        fields = fields or {}
        with self.lock:
            realm = self.realm(realm_id)
            store = realm.stores[canonical]
            now = self.now()
            deleted_id: str | None = None
            if op == "create":
                obj = self._create(realm, canonical, now)
                obj.update(fields)
                rec = self._save(store, None, obj, now)
            else:
                rec = self._live(store, id)
                obj = loads(rec.json)
                if op == "update":
                    if fields:
                        obj.update(fields)
                    else:
                        self._default_update(canonical, obj)
                elif op == "delete":
                    if canonical not in TRANSACTIONS:
                        raise EmulatorError(f"{canonical} is a name-list entity: it cannot be deleted, "
                                            f"only made inactive (op inactivate)")
                elif op == "void":
                    if canonical != "Invoice":
                        raise EmulatorError("only an Invoice can be voided")
                    void_invoice(obj)
                elif op == "inactivate":
                    if canonical not in NAME_LIST:
                        raise EmulatorError("only a Customer or Item can be made inactive")
                    obj["Active"] = False
                elif op == "merge":
                    if canonical != "Customer":
                        raise EmulatorError("only Customers can be merged here")
                    survivor = self._live(store, merge_into)
                    if survivor.id == rec.id:
                        raise EmulatorError("cannot merge a customer into itself")
                    self._delete(store, rec, now)
                    deleted_id = str(rec.id)
                    self._repoint(realm, str(rec.id), survivor, now)
                    sobj = loads(survivor.json)
                    sobj["Balance"] = money(sobj.get("Balance", 0)) + money(obj.get("Balance", 0))
                    sobj["BalanceWithJobs"] = sobj["Balance"]
                    rec, obj = survivor, sobj
                if op == "delete":
                    self._delete(store, rec, now)
                else:
                    obj["SyncToken"] = str(int(obj.get("SyncToken", "0")) + 1)
                    rec = self._save(store, rec, obj, now)
            url = self.config["webhook_url"]
            if url:
                self.webhooks.enqueue(str(url), str(self.config["webhook_format"]), str(self.config["verifier_token"]),
                                      realm.realm_id, canonical, str(rec.id), op, now, deleted_id)
            return rec.json

    def _live(self, store: EntityStore, object_id: Any) -> Record:
        try:
            rec = store.records.get(int(str(object_id)))
        except ValueError:
            rec = None
        if rec is None or rec.deleted:
            raise EmulatorError(f"{store.entity} {object_id} not found", 404)
        return rec

    def _save(self, store: EntityStore, rec: Record | None, obj: dict[str, Any], now: float) -> Record:
        obj.setdefault("MetaData", {})
        obj["MetaData"]["LastUpdatedTime"] = fmt_ts(now)
        text = dumps(obj).encode()
        if rec is None:
            rec = self._new_record(store.entity, obj, text, now, now)
            store.touch(rec, new=True)
            return rec
        rec.json = text
        rec.updated = now
        rec.active = bool(obj.get("Active", True))
        rec.doc = obj.get("DocNumber")
        rec.name = obj.get("DisplayName") if store.entity == "Customer" else obj.get("Name")
        rec.seq = self.next_seq()
        store.touch(rec)
        return rec

    def _delete(self, store: EntityStore, rec: Record, now: float) -> None:
        rec.deleted = True
        rec.updated = now
        rec.seq = self.next_seq()
        rec.json = dumps({"domain": "QBO", "status": "Deleted", "Id": str(rec.id),
                          "MetaData": {"LastUpdatedTime": fmt_ts(now)}}).encode()
        store.touch(rec)

    def _repoint(self, realm: Realm, old_id: str, survivor: Record, now: float) -> None:
        """After a merge, transactions of the merged-away customer belong to the survivor."""
        name = survivor.name
        needle = b'"CustomerRef":{"value":"' + old_id.encode() + b'"'
        for entity in TRANSACTIONS:
            store = realm.stores[entity]
            for rec in store.live_records():
                if needle in rec.json:
                    obj = loads(rec.json)
                    obj["CustomerRef"] = {"value": str(survivor.id), "name": name}
                    obj["SyncToken"] = str(int(obj.get("SyncToken", "0")) + 1)
                    self._save(store, rec, obj, now)

    def _pick(self, store: EntityStore, rng: random.Random, *, active: bool = True) -> dict[str, Any] | None:
        live = store.live
        if not live:
            return None
        for _ in range(20):
            rec = store.records[live[rng.randrange(len(live))]]
            if rec.active or not active:
                return loads(rec.json)
        return loads(store.records[live[0]].json)

    def _create(self, realm: Realm, entity: str, now: float) -> dict[str, Any]:
        gen = realm.generator
        store = realm.stores[entity]
        new_id = store.next_id
        if entity == "Customer":
            for rec in store.records.values():
                if rec.name:
                    gen.names.add(rec.name)
            return gen.customer(new_id, now, now, active=True)
        if entity == "Item":
            for rec in store.records.values():
                if rec.name:
                    gen.item_names.add(rec.name)
            return gen.item(new_id, now, now, active=True)
        customer = self._pick(realm.stores["Customer"], gen.rng)
        item = self._pick(realm.stores["Item"], gen.rng)
        if customer is None or item is None:
            raise EmulatorError(f"the realm needs a customer and an item before an {entity} can be created")
        items = [item] + [i for i in (self._pick(realm.stores["Item"], gen.rng) for _ in range(2)) if i]
        doc = realm.next_doc.get(entity, 1001 if entity == "Invoice" else 5001)
        realm.next_doc[entity] = doc + 1
        if entity == "Invoice":
            return gen.invoice(new_id, str(doc), now, now, customer, items)
        return gen.estimate(new_id, str(doc), now, now, customer, items)

    def _default_update(self, entity: str, obj: dict[str, Any]) -> None:
        rev = int(obj.get("SyncToken", "0")) + 1
        if entity == "Customer":
            base = str(obj.get("DisplayName", "Customer")).split(" (rev ")[0]
            name = f"{base} (rev {rev})"
            obj["DisplayName"] = obj["FullyQualifiedName"] = obj["PrintOnCheckName"] = name
            local = str(obj.get("PrimaryEmailAddr", {}).get("Address", "info@example.com")).split("@")[0]
            obj["PrimaryEmailAddr"] = {"Address": f"{local.split('+')[0]}+r{rev}@example.com"}
        elif entity == "Item":
            obj["UnitPrice"] = money(obj.get("UnitPrice", 0)) + Decimal("1.00")
        else:
            old_total = money(obj.get("TotalAmt", 0))
            lines = obj.get("Line", [])
            first = next((ln for ln in lines if ln.get("DetailType") == "SalesItemLineDetail"), None)
            detail = (first or {}).get("SalesItemLineDetail", {})
            if first is None or "Qty" not in detail or "UnitPrice" not in detail:
                obj["CustomerMemo"] = {"value": f"Updated (rev {rev})"}
                return
            detail["Qty"] = int(detail["Qty"]) + 1
            first["Amount"] = money(Decimal(detail["UnitPrice"]) * detail["Qty"])
            subtotal = sum((money(ln["Amount"]) for ln in lines if ln.get("DetailType") == "SalesItemLineDetail"),
                           Decimal("0.00"))
            total = subtotal
            for ln in lines:
                if ln.get("DetailType") == "SubTotalLineDetail":
                    ln["Amount"] = subtotal
                elif ln.get("DetailType") == "DiscountLineDetail":
                    pct = ln.get("DiscountLineDetail", {}).get("DiscountPercent")
                    if pct is not None:
                        ln["Amount"] = money(subtotal * Decimal(str(pct)) / 100)
                    total -= money(ln["Amount"])
            obj["TotalAmt"] = total
            if entity == "Invoice":
                obj["Balance"] = money(obj.get("Balance", 0)) + (total - old_total)


_INVALID_GRANT = {"error": "invalid_grant", "error_description": "Incorrect or invalid refresh token"}
