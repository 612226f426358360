"""The QuickBooks Online Data API client: query with paging, count, read, CompanyInfo, CDC, reports.

One `QBOClient` per realm. Every request:
- goes to `{base}/v3/company/{realm}/...` where base is the realm's stored `base_url` or
  QBO_API_BASE_URL, with `minorversion=QBO_MINOR_VERSION`, `Accept: application/json` and
  `Authorization: Bearer <access token>`, and explicit (connect, read) timeouts;
- takes a slot from the realm's cross-process `RateBudget` (services/intuit/budget.py) and counts in
  `.api_calls`; once it reached Intuit it is counted as a metered call of its kind (query, read,
  cdc, companyinfo, report) in services/intuit/usage.py's meter, written in batches;
- maps failures through services/intuit/faults.py: Throttled (429/3001), ServerError (5xx) and
  TransportError (connection errors, timeouts) are retried by `services.core.retry.retry_call`
  up to `MAX_ATTEMPTS` attempts (a Retry-After header wins); a 401 refreshes the token once
  through the client's `TokenProvider` (`.refresh(stale)`) and retries once, a second
  401 raises NeedsReauth; anything else raises at once;
- parses JSON with `parse_float=Decimal`, and treats a 200 body holding a Fault as an error.

`query_page` is the exception: it returns one query page's body as QBO served it (`RawPage`),
for callers that hand the JSON text to PostgreSQL (whose jsonb parser keeps every digit) and
need from Python only the object count, the server time and paging. It reads those from the
envelope without parsing the objects when the body has QBO's usual shape (entity array first,
then `startPosition`, `maxResults`, `time`), and parses the body (floats are fine: no money is
read from it) otherwise; a Fault in a 200 body is still an error.

`parse_qbo_time` turns QBO's timestamps (`-07:00`, `-0700`, `Z`, any fraction) into aware
datetimes; other modules import it from here.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote

import orjson
import requests

from db.connection import Database
from services.core.config import Settings
from services.core.errors import (
    AuthenticationFailed,
    FatalQBOError,
    NeedsReauth,
    NotFound,
    Retriable,
    ServerError,
    TransportError,
    describe,
)
from services.core.limits import MAX_RESULTS
from services.core.logs import register_secret
from services.core.qbotime import parse_qbo_time
from services.core.retry import MAX_ATTEMPTS, retry_call
from services.intuit.budget import RateBudget
from services.intuit.faults import check_body_for_fault, header, parse_fault
from services.intuit.usage import METER, UsageMeter

__all__ = [
    "QBOClient", "QueryPage", "RawPage", "CDCResult", "TokenProvider", "parse_qbo_time", "PAGE_SIZE",
]

log = logging.getLogger("qbsync.qbo")

PAGE_SIZE = MAX_RESULTS  # every listing asks for full pages
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")
_ORDER = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*(\s+(ASC|DESC))?(\s*,\s*[A-Za-z][A-Za-z0-9_.]*(\s+(ASC|DESC))?)*$",
                    re.IGNORECASE)
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout,
                     requests.exceptions.ChunkedEncodingError,
                     requests.exceptions.ContentDecodingError)


@dataclass(frozen=True)
class QueryPage:
    """One page of a query: the objects as QBO sent them, the server time, the 1-based start."""

    objects: list[dict]
    time: datetime
    start_position: int


@dataclass(frozen=True)
class RawPage:
    """One query page as served: the UTF-8 JSON body, the key under `QueryResponse` holding the
    objects (as QBO spelled it; None when the page is empty), how many objects it holds, the
    server time and the 1-based start position."""

    body: bytes
    key: str | None
    count: int
    time: datetime
    start_position: int

    def objects(self) -> list[dict]:
        """The page's objects parsed (floats, not Decimals: for ids and small field lists)."""
        if self.key is None:
            return []
        data = _loads_light(self.body)
        found = _pick(data.get("QueryResponse") or {}, self.key)
        return found if isinstance(found, list) else []


# `{"QueryResponse":{"Entity":[` ... `],"startPosition":1,"maxResults":1000},"time":"..."}`
_RAW_HEAD = re.compile(rb'\s*\{\s*"QueryResponse"\s*:\s*\{\s*"([A-Za-z][A-Za-z0-9]*)"\s*:\s*\[')
_RAW_TAIL = re.compile(rb'\s*,\s*"startPosition"\s*:\s*(\d+)\s*,\s*"maxResults"\s*:\s*(\d+)\s*\}'
                       rb'\s*,\s*"time"\s*:\s*"([^"\\]{1,64})"\s*\}\s*$')


def _loads_light(body: bytes) -> Any:
    """Parse JSON with floats (orjson; the standard parser for what orjson refuses)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body.decode("utf-8"))


@dataclass(frozen=True)
class CDCResult:
    """A CDC response: server time, and objects per entity (deleted ones have status Deleted).

    Every requested entity has a key, spelled as requested (an empty list when unchanged).
    """

    time: datetime
    objects: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Objects over all entities (Intuit caps a response at 1,000)."""
        return sum(len(v) for v in self.objects.values())


class TokenProvider(Protocol):
    """Where a client gets its access token: services.tokens.vault.RealmTokens (the stored,
    locked, refreshed token) or a fixed one. `base_url` is the realm's API base ("" = settings)."""

    base_url: str

    def access_token(self) -> str: ...

    def refresh(self, stale: str) -> str: ...


def _entity_name(entity: str) -> str:
    if not _NAME.match(entity or ""):
        raise ValueError(f"not a QBO entity name: {entity!r}")
    return entity


def _pick(mapping: dict, name: str) -> Any:
    """mapping[name], matching the key case-insensitively (QBO answers `Estimate` to `estimate`)."""
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if key.lower() == lowered:
            return value
    return None


class QBOClient:
    """A Data API client for one realm (see the module docstring for what every call does)."""

    def __init__(self, db: Database, settings: Settings, realm_id: str, *,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 timeout: tuple[float, float] = (5.0, 60.0),
                 budget: RateBudget | None = None,
                 token_provider: TokenProvider,
                 service: str = "sync",
                 meter: UsageMeter = METER) -> None:
        if not realm_id:
            raise ValueError("realm_id is required")
        connect_s, read_s = timeout
        if not (connect_s > 0 and read_s > 0):
            raise ValueError("timeouts must be positive (connect, read) seconds")
        self.db = db
        self.settings = settings
        self.realm_id = str(realm_id)
        self.timeout = (float(connect_s), float(read_s))
        self.api_calls = 0
        self._own_session = session is None
        self._session = session or requests.Session()
        self._sleep = sleep
        if budget is None:
            from services.intuit.budget import RateBudget

            budget = RateBudget(db, self.realm_id, settings.max_requests_per_minute,
                                settings.max_concurrency)
        self.budget = budget
        self._tokens = token_provider
        self.service = service
        self._meter = meter

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Record the metered calls counted so far, and close the HTTP session if this client created it."""
        self._meter.flush(self.db)
        if self._own_session:
            self._session.close()

    def __enter__(self) -> QBOClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public calls ------------------------------------------------------------------------

    def query_pages(self, entity: str, where: str | None = None,
                    order_by: str = "Id") -> Iterator[QueryPage]:
        """Every row of `SELECT * FROM entity [WHERE where] ORDERBY order_by`, page by page.

        Pages of 1,000 from STARTPOSITION 1, advancing by the number returned, until a page
        holds fewer than 1,000 (an empty QueryResponse ends it). Nothing is truncated; `where`
        is passed through as written (e.g. `Active IN (true, false)`).
        """
        entity = _entity_name(entity)
        if not _ORDER.match(order_by or ""):
            raise ValueError(f"not an ORDERBY clause: {order_by!r}")
        start = 1
        while True:
            statement = f"SELECT * FROM {entity}"
            if where:
                statement += f" WHERE {where}"
            statement += f" ORDERBY {order_by} STARTPOSITION {start} MAXRESULTS {PAGE_SIZE}"
            data = self._get("query", {"query": statement}, kind="query")
            response = data.get("QueryResponse") or {}
            if not isinstance(response, dict):
                raise self._bad_shape("QueryResponse is not an object")
            objects = _pick(response, entity) or []
            if not isinstance(objects, list):
                raise self._bad_shape(f"QueryResponse.{entity} is not a list")
            yield QueryPage(objects=objects, time=self._time_of(data), start_position=start)
            if len(objects) < PAGE_SIZE:
                return
            start += len(objects)

    def query_all(self, entity: str, where: str | None = None, order_by: str = "Id") -> list[dict]:
        """All rows of the query, every page concatenated (see query_pages)."""
        rows: list[dict] = []
        for page in self.query_pages(entity, where=where, order_by=order_by):
            rows.extend(page.objects)
        return rows

    def query_page(self, entity: str, where: str | None = None, order_by: str = "Id",
                   start_position: int = 1, *, select: str = "*", max_results: int = PAGE_SIZE) -> RawPage:
        """One page of `SELECT select FROM entity [WHERE where] ORDERBY order_by STARTPOSITION
        start_position MAXRESULTS max_results`, unparsed (see the module docstring).

        `select` is `*` or a comma-separated field list (`Id`). The body is exactly what QBO
        sent; `count < max_results` means the listing ended. Faults raise as for every call.
        """
        entity = _entity_name(entity)
        if not _ORDER.match(order_by or ""):
            raise ValueError(f"not an ORDERBY clause: {order_by!r}")
        if select != "*" and not all(_FIELD.match(f.strip()) for f in select.split(",")):
            raise ValueError(f"not a SELECT field list: {select!r}")
        if not (1 <= int(max_results) <= PAGE_SIZE) or int(start_position) < 1:
            raise ValueError("STARTPOSITION must be >= 1 and MAXRESULTS 1..1000")
        statement = f"SELECT {select} FROM {entity}" + (f" WHERE {where}" if where else "")
        statement += f" ORDERBY {order_by} STARTPOSITION {int(start_position)} MAXRESULTS {int(max_results)}"
        body = self._get("query", {"query": statement}, kind="query", raw=True)
        return self._raw_page(entity, body, int(start_position))

    def _raw_page(self, entity: str, body: bytes, start: int) -> RawPage:
        head = _RAW_HEAD.match(body, 0, 256)
        if head is not None and head.group(1).decode().lower() == entity.lower():
            end = body.rfind(b"]")
            tail = _RAW_TAIL.match(body, end + 1) if end > 0 else None
            if tail is not None:
                try:
                    when = parse_qbo_time(tail.group(3).decode())
                except ValueError as exc:
                    raise self._bad_shape(str(exc)) from None
                return RawPage(body, head.group(1).decode(), int(tail.group(2)), when, start)
        data = _loads_light(body)  # an unusual shape: read the envelope from a full parse
        if not isinstance(data, dict):
            raise self._bad_shape("query returned JSON that is not an object")
        response = data.get("QueryResponse") or {}
        if not isinstance(response, dict):
            raise self._bad_shape("QueryResponse is not an object")
        key = next((k for k in response if k.lower() == entity.lower()), None)
        objects = response.get(key) if key is not None else []
        if not isinstance(objects, list):
            raise self._bad_shape(f"QueryResponse.{entity} is not a list")
        return RawPage(body, key if objects else None, len(objects), self._time_of(data), start)

    def count(self, entity: str, where: str | None = None) -> int:
        """`SELECT COUNT(*) FROM entity [WHERE where]`: QueryResponse.totalCount."""
        entity = _entity_name(entity)
        statement = f"SELECT COUNT(*) FROM {entity}" + (f" WHERE {where}" if where else "")
        data = self._get("query", {"query": statement}, kind="query")
        total = (data.get("QueryResponse") or {}).get("totalCount")
        if total is None:
            raise self._bad_shape("COUNT response without totalCount")
        return int(total)

    def read(self, entity: str, entity_id: str) -> dict:
        """One object by id (`GET {entity lower}/{id}`); NotFound when QBO says 610/404."""
        entity = _entity_name(entity)
        data = self._get(f"{entity.lower()}/{quote(str(entity_id), safe='')}", {}, kind="read")
        obj = _pick(data, entity)
        if not isinstance(obj, dict):
            raise NotFound(f"QuickBooks returned no {entity} {entity_id}", realm_id=self.realm_id)
        return obj

    def company_info(self) -> dict:
        """The realm's CompanyInfo object (`GET companyinfo/{realm}`)."""
        data = self._get(f"companyinfo/{quote(self.realm_id, safe='')}", {}, kind="companyinfo")
        obj = data.get("CompanyInfo")
        if not isinstance(obj, dict):
            raise self._bad_shape("response without CompanyInfo")
        return obj

    def cdc(self, entities: Iterable[str], changed_since: datetime) -> CDCResult:
        """Objects of `entities` changed since `changed_since` (aware datetime), as QBO sent them.

        Deleted objects come back as they are (`status: "Deleted"`, Id and MetaData only).
        Intuit caps a response at 1,000 objects with no paging: callers check `.total`.
        """
        names = [_entity_name(e) for e in entities]
        if not names:
            raise ValueError("cdc needs at least one entity")
        if changed_since.tzinfo is None or changed_since.utcoffset() is None:
            raise ValueError("changed_since must be timezone-aware")
        data = self._get("cdc", {"entities": ",".join(names),
                                 "changedSince": changed_since.isoformat(timespec="seconds")}, kind="cdc")
        objects: dict[str, list[dict]] = {name: [] for name in names}
        by_lower = {name.lower(): name for name in names}
        blocks = data.get("CDCResponse") or []
        if not isinstance(blocks, list):
            raise self._bad_shape("CDCResponse is not a list")
        for block in blocks:
            responses = (block or {}).get("QueryResponse") or []
            if isinstance(responses, dict):
                responses = [responses]
            for response in responses:
                for key, value in (response or {}).items():
                    if isinstance(value, list):
                        objects.setdefault(by_lower.get(key.lower(), key), []).extend(value)
        return CDCResult(time=self._time_of(data), objects=objects)

    def report(self, name: str, params: dict[str, str]) -> dict:
        """One Reports API answer (`GET reports/<name>?...`: Header, Columns, Rows), parsed with
        Decimal; a metered call of kind "report". Callers send explicit dates (Intuit's defaults
        differ per report) and handle "Unable to display more data" (services/reconcile/reports.py)."""
        return self._get(f"reports/{quote(name, safe='')}", dict(params), kind="report")

    # -- the request path --------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str], *, kind: str, raw: bool = False) -> Any:
        """GET with budget, token refresh on 401 and backoff on retriable faults: the parsed
        JSON object, or with `raw` the body bytes (checked for a Fault, not parsed)."""
        refreshed = False

        def authenticated() -> Any:
            nonlocal refreshed
            while True:
                token = self._tokens.access_token()
                register_secret(token)
                base = (self._tokens.base_url or self.settings.api_base_url).rstrip("/")
                try:
                    return self._get_once(base, path, params, token, kind, raw)
                except AuthenticationFailed as exc:
                    if refreshed:
                        raise NeedsReauth(
                            f"QuickBooks rejected a freshly refreshed access token: {exc.message}",
                            realm_id=self.realm_id, code=exc.code, intuit_tid=exc.intuit_tid,
                            http_status=exc.http_status, fault_type=exc.fault_type) from None
                    refreshed = True
                    log.warning("realm %s: 401 on %s (intuit_tid %s); refreshing the access token "
                                "and retrying once", self.realm_id, path, exc.intuit_tid)
                    self._tokens.refresh(token)

        def note(failures: int, exc: BaseException, delay: float) -> None:
            tid = getattr(exc, "intuit_tid", None)
            log.warning("realm %s: %s on %s (attempt %d of %d%s); retrying in %.2f s", self.realm_id,
                        type(exc).__name__, path, failures, MAX_ATTEMPTS, f", intuit_tid {tid}" if tid else "", delay)

        return retry_call(authenticated, base_s=self.settings.retry_base_seconds, retry_on=(Retriable,),
                          sleep=self._sleep, on_retry=note)

    def _get_once(self, base: str, path: str, params: dict[str, str], token: str, kind: str,
                  raw: bool = False) -> Any:
        url = f"{base}/v3/company/{quote(self.realm_id, safe='')}/{path}"
        query = dict(params)
        query["minorversion"] = str(self.settings.minor_version)
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
        with self.budget.acquire():
            self.api_calls += 1
            try:
                response = self._session.get(url, params=query, headers=headers,
                                             timeout=self.timeout, allow_redirects=False)
                body = response.content
            except _TRANSPORT_ERRORS as exc:
                raise TransportError(f"GET {path} failed: {describe(exc, limit=250)}",
                                     realm_id=self.realm_id) from None
        self._meter.count(self.db, self.realm_id, kind, self.service)  # it reached Intuit: metered
        self._meter.maybe_flush(self.db)
        status = response.status_code
        if status >= 300:
            raise parse_fault(status, response.headers, body, realm_id=self.realm_id)
        if raw:
            if b'"Fault"' in body or not body.lstrip().startswith(b"{"):
                self._check_raw(path, status, response.headers, body)
            return body
        try:
            data = json.loads(body.decode("utf-8"), parse_float=Decimal)
        except (UnicodeDecodeError, ValueError):
            check_body_for_fault(status, response.headers, body, realm_id=self.realm_id)
            raise ServerError(f"QuickBooks answered GET {path} with HTTP {status} and a body "
                              "that is not JSON", realm_id=self.realm_id, http_status=status,
                              intuit_tid=header(response.headers, "intuit_tid")
                              or header(response.headers, "intuit-tid")) from None
        if not isinstance(data, dict):
            raise self._bad_shape(f"GET {path} returned JSON that is not an object")
        check_body_for_fault(status, response.headers, data, realm_id=self.realm_id)
        return data

    def _check_raw(self, path: str, status: int, headers: Any, body: bytes) -> None:
        """A body that may hold a Fault (or is not JSON): raise what `_get_once` would."""
        try:
            data = _loads_light(body)
        except (UnicodeDecodeError, ValueError):
            check_body_for_fault(status, headers, body, realm_id=self.realm_id)
            raise ServerError(f"QuickBooks answered GET {path} with HTTP {status} and a body "
                              "that is not JSON", realm_id=self.realm_id, http_status=status,
                              intuit_tid=header(headers, "intuit_tid") or header(headers, "intuit-tid")) from None
        if not isinstance(data, dict):
            raise self._bad_shape(f"GET {path} returned JSON that is not an object")
        check_body_for_fault(status, headers, data, realm_id=self.realm_id)

    def _time_of(self, data: dict) -> datetime:
        raw = data.get("time")
        if raw is None:
            raise self._bad_shape("response without a server time")
        try:
            return parse_qbo_time(raw)
        except ValueError as exc:
            raise self._bad_shape(str(exc)) from None

    def _bad_shape(self, what: str) -> FatalQBOError:
        return FatalQBOError(f"unexpected QuickBooks response: {what}", realm_id=self.realm_id)
