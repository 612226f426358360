"""services.intuit.client: the Data API client against real HTTP on loopback and the real database.

Two kinds of server: the QBO emulator (`emulator` fixture) for paging, filters, CDC, failure
injection and token expiry; and a tiny scripted HTTP server run by the test itself for what
the emulator does not do (Retry-After headers, a server that never answers, exact headers).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from support.realms import connect_realm

from services.core.config import load_settings
from services.core.errors import (
    FatalQBOError,
    NeedsReauth,
    NotFound,
    ServerError,
    Throttled,
    TransportError,
)
from services.core.retry import MAX_ATTEMPTS
from services.intuit.client import PAGE_SIZE, QBOClient, parse_qbo_time
from services.tokens.vault import client_for

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "qbo" / "samples"
REALM = "9130355"
TIME = "2026-11-22T06:03:53.903-08:00"

Reply = tuple[int, dict[str, str], bytes]


# -- a scripted loopback server ---------------------------------------------------------------

class Recorded:
    def __init__(self, path: str, raw_query: str, headers: dict[str, str]) -> None:
        self.path = path
        self.raw_query = raw_query
        self.query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        self.headers = headers


class ScriptedServer:
    """HTTP on 127.0.0.1 answering with `respond(recorded) -> Reply`, or hanging when it says None."""

    def __init__(self, respond: Callable[[Recorded], Reply | None]) -> None:
        self.respond = respond
        self.requests: list[Recorded] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                rec = Recorded(parts.path, parts.query, {k: v for k, v in self.headers.items()})
                outer.requests.append(rec)
                reply = outer.respond(rec)
                if reply is None:  # never answer (until the test ends)
                    outer.release.wait(10)
                    return
                status, headers, body = reply
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # shutdown() returns within one poll: 0.05 s instead of the default 0.5 s per test
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[Recorded], Reply | None]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(respond: Callable[[Recorded], Reply | None]) -> ScriptedServer:
        server = ScriptedServer(respond)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def _json(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


class FixedTokens:
    """A token provider seam for the scripted server: a current token and a refresh counter."""

    base_url = ""  # the settings' base URL

    def __init__(self, token: str = "access-old-123456", fresh: str = "access-new-654321") -> None:
        self.token = token
        self.fresh = fresh
        self.refreshed_with: list[str] = []

    def access_token(self) -> str:
        return self.token

    def refresh(self, stale: str) -> str:
        self.refreshed_with.append(stale)
        self.token = self.fresh
        return self.token


def _settings(database_url: str, base_url: str, **extra: str):
    env = {"DATABASE_URL": database_url, "QBO_API_BASE_URL": base_url,
           "QBO_RETRY_BASE_SECONDS": "0.01", **extra}
    return load_settings(env, dotenv=False)


def _client(db, server: ScriptedServer, database_url: str, *, tokens=None, sleep=None,
            timeout=(2.0, 5.0), **env: str) -> QBOClient:
    return QBOClient(db, _settings(database_url, server.url, **env), REALM,
                     token_provider=tokens or FixedTokens(), sleep=sleep or (lambda s: None),
                     timeout=timeout)


def _api_rows(db) -> int:
    with db.transaction() as conn:
        return conn.execute("SELECT count(*) FROM quickbooks.api_requests WHERE realm_id = %s",
                            (REALM,)).fetchone()[0]


# -- parse_qbo_time -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("2015-10-01T16:54:59-07:00", datetime(2015, 10, 1, 23, 54, 59, tzinfo=timezone.utc)),
    ("2015-10-05T14:42:19-0700", datetime(2015, 10, 5, 21, 42, 19, tzinfo=timezone.utc)),
    ("2016-10-05T03:09:04.000Z", datetime(2016, 10, 5, 3, 9, 4, tzinfo=timezone.utc)),
    ("2020-09-29T06:03:53.903-07:00", datetime(2020, 9, 29, 13, 3, 53, 903000, tzinfo=timezone.utc)),
    ("2025-09-10T21:31:25.179851517Z", datetime(2025, 9, 10, 21, 31, 25, 179851, tzinfo=timezone.utc)),
    ("2026-01-01T05:30:00+05:30", datetime(2026, 1, 1, 0, 0, 0, tzinfo=timezone.utc)),
])
def test_qbo_times_parse_into_aware_datetimes(text: str, expected: datetime) -> None:
    parsed = parse_qbo_time(text)
    assert parsed.tzinfo is not None
    assert parsed == expected


def test_qbo_time_keeps_the_local_offset_and_reads_epoch_millis() -> None:
    assert parse_qbo_time("2015-10-05T14:42:19-0700").utcoffset() == timedelta(hours=-7)
    assert parse_qbo_time(1601391072830) == datetime(2020, 9, 29, 14, 51, 12, 830000, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["2015-10-05T14:42:19", "yesterday", "", "2015-10-05T14:42:19+25:00"])
def test_qbo_time_without_an_offset_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_qbo_time(text)


# -- against the scripted server ------------------------------------------------------------

def _qbo_like(rec: Recorded) -> Reply:
    """Answers each endpoint with a recorded-shape body."""
    if rec.path.endswith("/query"):
        if "COUNT(*)" in rec.query["query"]:
            return _json({"QueryResponse": {"totalCount": 41}, "time": TIME})
        return _json({"QueryResponse": {"Customer": [{"Id": "1", "Balance": 100.00}],
                                        "startPosition": 1, "maxResults": 1}, "time": TIME})
    if rec.path.endswith(f"/companyinfo/{REALM}"):
        return 200, {}, (SAMPLES / "companyinfo.json").read_bytes()
    if rec.path.endswith("/customer/5"):
        return 200, {}, (SAMPLES / "customer.json").read_bytes()
    if rec.path.endswith("/cdc"):
        return 200, {}, (SAMPLES / "cdc_response.json").read_bytes()
    return _json({"Fault": {"Error": [{"Message": "Object Not Found", "code": "610"}],
                            "type": "ValidationFault"}, "time": TIME}, status=400)


def test_every_request_carries_minorversion_json_accept_and_the_bearer_token(
        db, database_url, serve) -> None:
    server = serve(_qbo_like)
    client = _client(db, server, database_url, QBO_MINOR_VERSION="76")
    client.query_all("Customer")
    assert client.count("Customer") == 41
    assert client.read("Customer", "5")["Id"] == "5"
    assert client.company_info()["CompanyName"]
    client.cdc(["Estimate"], datetime(2026, 11, 1, tzinfo=timezone.utc))
    assert len(server.requests) == 5 == client.api_calls == _api_rows(db)
    for rec in server.requests:
        assert rec.path.startswith(f"/v3/company/{REALM}/")
        assert rec.query["minorversion"] == "76"
        assert rec.headers["Accept"] == "application/json"
        assert rec.headers["Authorization"] == "Bearer access-old-123456"


def test_query_statement_where_and_money_as_decimal(db, database_url, serve) -> None:
    server = serve(_qbo_like)
    client = _client(db, server, database_url)
    (page,) = list(client.query_pages("Customer", where="Active IN (true, false)"))
    assert server.requests[0].query["query"] == (
        "SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY Id STARTPOSITION 1 "
        f"MAXRESULTS {PAGE_SIZE}")
    assert page.objects[0]["Balance"] == Decimal("100.00")
    assert isinstance(page.objects[0]["Balance"], Decimal)
    assert page.time == parse_qbo_time(TIME) and page.start_position == 1


def test_cdc_encodes_changed_since_and_parses_the_recorded_response(db, database_url, serve) -> None:
    server = serve(_qbo_like)
    client = _client(db, server, database_url)
    since = datetime(2026, 11, 1, 8, 30, 15, 999000, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    result = client.cdc(["estimate", "Invoice"], since)
    rec = server.requests[0]
    assert "changedSince=2026-11-01T08%3A30%3A15%2B05%3A30" in rec.raw_query
    assert parse_qbo_time(rec.query["changedSince"]) <= since
    assert rec.query["entities"] == "estimate,Invoice"
    sample = json.loads((SAMPLES / "cdc_response.json").read_text(), parse_float=Decimal)
    expected = sample["CDCResponse"][0]["QueryResponse"][0]["Estimate"]
    assert result.objects == {"estimate": expected, "Invoice": []}
    assert result.total == len(expected)
    assert result.time == parse_qbo_time(sample["time"])
    with pytest.raises(ValueError):
        client.cdc(["Estimate"], datetime(2026, 11, 1))  # naive: refused before any request


def test_cdc_returns_deleted_objects_as_they_come(db, database_url, serve) -> None:
    deleted = {"domain": "QBO", "status": "Deleted", "Id": "2359",
               "MetaData": {"LastUpdatedTime": "2021-12-15T09:14:16-08:00"}}
    body = {"CDCResponse": [{"QueryResponse": [{"Payment": [deleted], "startPosition": 1, "maxResults": 1}]}],
            "time": TIME}
    server = serve(lambda rec: _json(body))
    result = _client(db, server, database_url).cdc(["Payment"], datetime.now(timezone.utc))
    assert result.objects["Payment"] == [deleted]


def test_read_raises_not_found_on_610(db, database_url, serve) -> None:
    server = serve(_qbo_like)
    with pytest.raises(NotFound) as info:
        _client(db, server, database_url).read("Customer", "999")
    assert info.value.code == "610" and len(server.requests) == 1


def test_a_retry_after_header_wins_over_the_backoff(db, database_url, serve, caplog) -> None:
    caplog.set_level("WARNING", logger="qbsync.qbo")
    xml = (SAMPLES / "fault_429.xml").read_bytes()

    def respond(rec: Recorded) -> Reply:
        if len(server.requests) <= 2:
            return 429, {"Content-Type": "application/xml", "Retry-After": "7",
                         "intuit_tid": f"tid-{len(server.requests)}"}, xml
        return _qbo_like(rec)

    server = serve(respond)
    slept: list[float] = []
    client = _client(db, server, database_url, sleep=slept.append)
    assert client.count("Customer") == 41
    assert slept == [7.0, 7.0]
    assert client.api_calls == 3 == len(server.requests)
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2  # one line per retry, with the tid, never the token
    assert "tid-1" in retries[0] and "Throttled" in retries[0]
    assert all("access-old-123456" not in line for line in retries)


def test_throttling_that_never_ends_raises_after_max_attempts(db, database_url, serve) -> None:
    xml = (SAMPLES / "fault_429.xml").read_bytes()
    server = serve(lambda rec: (429, {"Intuit-Tid": "tid-429"}, xml))
    slept: list[float] = []
    client = _client(db, server, database_url, sleep=slept.append, QBO_RETRY_BASE_SECONDS="1")
    with pytest.raises(Throttled) as info:
        client.count("Customer")
    assert info.value.intuit_tid == "tid-429" and info.value.code == "3001"
    assert len(server.requests) == MAX_ATTEMPTS == client.api_calls
    assert len(slept) == MAX_ATTEMPTS - 1
    # exponential with equal jitter: retry n waits between 2**n / 2 and 2**n seconds
    for n, delay in enumerate(slept):
        assert 2 ** n / 2 <= delay <= 2 ** n


def test_a_read_timeout_is_a_transport_error_after_retries(db, database_url, serve) -> None:
    server = serve(lambda rec: None)  # accepts, never answers
    slept: list[float] = []
    client = _client(db, server, database_url, sleep=slept.append, timeout=(1.0, 0.2))
    with pytest.raises(TransportError) as info:
        client.company_info()
    assert "Timeout" in str(info.value)
    assert len(server.requests) == MAX_ATTEMPTS == client.api_calls
    assert len(slept) == MAX_ATTEMPTS - 1


def test_connection_refused_is_a_transport_error(db, database_url, serve) -> None:
    server = serve(_qbo_like)
    server.stop()  # the port is closed now
    slept: list[float] = []
    client = _client(db, server, database_url, sleep=slept.append)
    with pytest.raises(TransportError):
        client.company_info()
    assert client.api_calls == MAX_ATTEMPTS and len(slept) == MAX_ATTEMPTS - 1


def test_5xx_is_retried_and_a_validation_fault_is_not(db, database_url, serve) -> None:
    def respond(rec: Recorded) -> Reply:
        if len(server.requests) == 1:
            return 503, {"Content-Type": "text/html"}, b"<html><body>Service Unavailable</body></html>"
        return 400, {}, (SAMPLES / "fault_validation.json").read_bytes()

    server = serve(respond)
    slept: list[float] = []
    client = _client(db, server, database_url, sleep=slept.append)
    with pytest.raises(FatalQBOError) as info:
        client.count("Customer")
    assert info.value.code == "6240"
    assert len(server.requests) == 2 and len(slept) == 1


def test_a_200_body_with_a_fault_raises(db, database_url, serve) -> None:
    server = serve(lambda rec: (200, {}, (SAMPLES / "fault_validation.json").read_bytes()))
    with pytest.raises(FatalQBOError):
        _client(db, server, database_url).count("Customer")
    server2 = serve(lambda rec: (200, {}, b"<html>proxy login</html>"))
    slept: list[float] = []
    with pytest.raises(ServerError):
        _client(db, server2, database_url, sleep=slept.append).count("Customer")
    assert len(server2.requests) == MAX_ATTEMPTS


def test_a_401_refreshes_once_and_retries_once(db, database_url, serve) -> None:
    body401 = (SAMPLES / "fault_401_token_expired.json").read_bytes()

    def respond(rec: Recorded) -> Reply:
        if rec.headers["Authorization"] != "Bearer access-new-654321":
            return 401, {"Intuit-Tid": "tid-401"}, body401
        return _qbo_like(rec)

    server = serve(respond)
    tokens = FixedTokens()
    client = _client(db, server, database_url, tokens=tokens)
    assert client.count("Customer") == 41
    assert tokens.refreshed_with == ["access-old-123456"]
    assert [r.headers["Authorization"] for r in server.requests] == [
        "Bearer access-old-123456", "Bearer access-new-654321"]


def test_a_second_401_needs_reauth(db, database_url, serve) -> None:
    body401 = (SAMPLES / "fault_401_token_expired.json").read_bytes()
    server = serve(lambda rec: (401, {"Intuit-Tid": "tid-401"}, body401))
    tokens = FixedTokens()
    with pytest.raises(NeedsReauth) as info:
        _client(db, server, database_url, tokens=tokens).company_info()
    assert tokens.refreshed_with == ["access-old-123456"]
    assert len(server.requests) == 2
    assert info.value.intuit_tid == "tid-401" and info.value.realm_id == REALM
    assert "access-new-654321" not in info.value.one_line()


def test_paging_walks_every_row_once(db, database_url, serve) -> None:
    total = 2 * PAGE_SIZE + 345
    rows = [{"Id": str(i)} for i in range(1, total + 1)]

    def respond(rec: Recorded) -> Reply:
        words = rec.query["query"].split()
        start = int(words[words.index("STARTPOSITION") + 1])
        size = int(words[words.index("MAXRESULTS") + 1])
        page = rows[start - 1:start - 1 + size]
        return _json({"QueryResponse": {"Customer": page} if page else {}, "time": TIME})

    server = serve(respond)
    client = _client(db, server, database_url)
    pages = list(client.query_pages("Customer"))
    assert [p.start_position for p in pages] == [1, 1001, 2001]
    got = [o["Id"] for p in pages for o in p.objects]
    assert got == [r["Id"] for r in rows]
    # exactly PAGE_SIZE rows: one more request that comes back empty ends it
    del rows[PAGE_SIZE:]
    pages = list(client.query_pages("Customer"))
    assert [len(p.objects) for p in pages] == [PAGE_SIZE, 0]


def test_bad_entity_names_are_refused_before_any_request(db, database_url, serve) -> None:
    server = serve(_qbo_like)
    client = _client(db, server, database_url)
    with pytest.raises(ValueError):
        client.count("Customer; DROP")
    with pytest.raises(ValueError):
        list(client.query_pages("Customer", order_by="Id; x"))
    assert server.requests == []


# -- against the emulator, through the real token vault (services.tokens.vault) ----------------------

def _data_calls(counts: dict[str, int]) -> int:
    return sum(counts.get(k, 0) for k in ("query", "cdc", "read", "companyinfo"))


def test_paging_across_thousands_returns_every_row_exactly_once(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=2345, items=5, invoices=5, estimates=2)
    client = client_for(db, settings, realm)
    pages = list(client.query_pages("Customer", where="Active IN (true, false)"))
    ids = [c["Id"] for p in pages for c in p.objects]
    expected = [c["Id"] for c in emulator.admin.entities(realm, "Customer")]
    assert len(expected) == 2345
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
    assert [p.start_position for p in pages] == [1, 1001, 2001]
    assert client.count("Customer", where="Active IN (true, false)") == 2345
    assert client.api_calls == 4 == _data_calls(emulator.admin.request_counts(realm))


def test_the_active_filter_is_passed_through(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=30, items=5, invoices=5, estimates=2)
    every = emulator.admin.entities(realm, "Customer")
    for customer in every[:3]:
        if customer.get("Active", True):
            emulator.admin.mutate(realm, "Customer", "inactivate", id=customer["Id"])
    inactive = {c["Id"] for c in emulator.admin.entities(realm, "Customer") if c.get("Active") is False}
    assert len(inactive) >= 3
    client = client_for(db, settings, realm)
    plain = {c["Id"] for c in client.query_all("Customer")}
    both = {c["Id"] for c in client.query_all("Customer", where="Active IN (true, false)")}
    only_inactive = {c["Id"] for c in client.query_all("Customer", where="Active = false")}
    assert both == {c["Id"] for c in every}
    assert plain == both - inactive
    assert only_inactive == inactive


def test_minorversion_rides_on_every_request(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=10, items=5, invoices=20, estimates=5)
    client = client_for(db, settings, realm)
    client.company_info()
    invoice = client.query_all("Invoice")[0]
    client.read("Invoice", invoice["Id"])
    client.count("Item")
    client.cdc(["Customer", "Invoice"], datetime.now(timezone.utc) - timedelta(days=1))
    counts = emulator.admin.request_counts(realm)
    assert counts.get("no_minorversion", 0) == 0
    assert _data_calls(counts) == client.api_calls == 5
    assert emulator.admin.minor_versions() == {str(settings.minor_version): 5}


def test_read_company_info_and_cdc_with_a_deleted_invoice(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=10, items=5, invoices=10, estimates=2,
                          company_name="Crème d'Olive")
    client = client_for(db, settings, realm)
    assert client.company_info()["CompanyName"] == "Crème d'Olive"
    since = datetime.fromtimestamp(emulator.admin.now(), timezone.utc) - timedelta(seconds=1)
    invoices = client.query_all("Invoice")
    gone, changed = invoices[0]["Id"], invoices[1]["Id"]
    emulator.admin.mutate(realm, "Invoice", "delete", id=gone)
    emulator.admin.mutate(realm, "Invoice", "update", id=changed, fields={"PrivateNote": "edited"})
    result = client.cdc(["Invoice", "Customer"], since)
    by_id = {o["Id"]: o for o in result.objects["Invoice"]}
    assert by_id[gone]["status"] == "Deleted"
    assert by_id[changed]["PrivateNote"] == "edited" and "status" not in by_id[changed]
    assert result.objects["Customer"] == []
    assert isinstance(by_id[changed]["TotalAmt"], Decimal)
    with pytest.raises(NotFound):
        client.read("Invoice", gone)


def test_a_401_refreshes_through_the_token_vault_and_retries_once(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=2, estimates=1)
    with db.transaction() as conn:
        before = conn.execute("SELECT access_token FROM quickbooks.tokens WHERE realm_id = %s",
                              (realm,)).fetchone()[0]
    emulator.admin.expire_access_tokens(realm)  # the stored token still looks valid to qbsync
    client = client_for(db, settings, realm)
    assert client.count("Customer") >= 1
    counts = emulator.admin.request_counts(realm)
    assert counts.get("token:refresh_token", 0) == 1
    assert client.api_calls == 2 == _data_calls(counts)
    with db.transaction() as conn:
        after = conn.execute("SELECT access_token FROM quickbooks.tokens WHERE realm_id = %s",
                             (realm,)).fetchone()[0]
    assert after != before


def test_the_stored_base_url_wins_over_the_setting(db, settings, emulator) -> None:
    import dataclasses

    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=2, estimates=1)
    with db.transaction() as conn:
        conn.execute("UPDATE quickbooks.tokens SET base_url = %s WHERE realm_id = %s", (emulator.url, realm))
    nowhere = dataclasses.replace(settings, api_base_url="http://127.0.0.1:9")
    client = client_for(db, nowhere, realm, sleep=lambda s: None)
    assert client.company_info()["CompanyName"]


def test_injected_429_and_503_are_retried_with_backoff(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=2, estimates=1)
    emulator.admin.configure(fail_rate_429=0.2, fail_rate_503=0.2, seed=7)  # seeded: same rolls each run
    slept: list[float] = []
    client = client_for(db, settings, realm, sleep=slept.append)
    for _ in range(12):
        assert client.count("Customer") >= 1
    counts = emulator.admin.request_counts(realm)
    assert client.api_calls == _data_calls(counts) == 12 + len(slept)
    assert counts.get("throttled", 0) >= 1  # some 429s ...
    assert client.api_calls - counts.get("throttled", 0) > 12  # ... and some 503s were retried
    assert all(0 < s <= settings.retry_base_seconds * 2 ** (MAX_ATTEMPTS - 1) for s in slept)


def test_persistent_429_and_503_give_up_after_max_attempts(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=2, estimates=1)
    emulator.admin.configure(fail_rate_429=1.0, fail_rate_503=0.0)
    slept: list[float] = []
    client = client_for(db, settings, realm, sleep=slept.append)
    with pytest.raises(Throttled) as info:
        client.count("Customer")
    assert info.value.code == "3001" and info.value.intuit_tid
    assert client.api_calls == MAX_ATTEMPTS == emulator.admin.request_counts(realm)["throttled"]
    base = settings.retry_base_seconds
    assert len(slept) == MAX_ATTEMPTS - 1
    for n, delay in enumerate(slept):  # doubling, with equal jitter
        assert base * 2 ** n / 2 <= delay <= base * 2 ** n
    emulator.admin.configure(fail_rate_429=0.0, fail_rate_503=1.0)
    with pytest.raises(ServerError):
        client.count("Customer")
    assert client.api_calls == 2 * MAX_ATTEMPTS


# -- query_page: one page as served, for the sync's PostgreSQL-side parsing ----------------------

def test_query_page_returns_the_recorded_body_as_served(db, database_url, serve) -> None:
    recorded = (SAMPLES / "query_response_customers.json").read_bytes()
    server = serve(lambda rec: (200, {"Content-Type": "application/json"}, recorded))
    client = _client(db, server, database_url)
    page = client.query_page("Customer", "Active IN (true,false)", "Id", 1001)
    assert server.requests[0].query["query"] == (
        "SELECT * FROM Customer WHERE Active IN (true,false) ORDERBY Id STARTPOSITION 1001 MAXRESULTS 1000")
    served = json.loads(recorded, parse_float=Decimal)
    objects = served["QueryResponse"]["Customer"]
    assert page.body == recorded  # byte for byte: PostgreSQL parses it, digits intact
    assert (page.key, page.count, page.start_position) == ("Customer", len(objects), 1001)
    assert page.time == parse_qbo_time(served["time"])
    assert [o["Id"] for o in page.objects()] == [o["Id"] for o in objects]


def test_query_page_reads_unusual_envelopes_by_parsing(db, database_url, serve) -> None:
    bodies = [
        # keys in another order, lower-case entity key, whitespace: the full parse path
        b'{ "time": "' + TIME.encode() + b'", "QueryResponse": {"maxResults": 2, "customer": '
        b'[{"Id": "7", "Balance": 1.10}, {"Id": "8"}], "startPosition": 1} }',
        b'{"QueryResponse":{},"time":"' + TIME.encode() + b'"}',  # an empty page
    ]
    server = serve(lambda rec: (200, {}, bodies[len(server.requests) - 1]))
    client = _client(db, server, database_url)
    first = client.query_page("Customer")
    assert (first.key, first.count, first.time) == ("customer", 2, parse_qbo_time(TIME))
    assert first.body == bodies[0] and [o["Id"] for o in first.objects()] == ["7", "8"]
    empty = client.query_page("Customer", start_position=1001)
    assert (empty.key, empty.count, empty.objects()) == (None, 0, [])


def test_query_page_still_raises_on_a_fault_in_a_200_body(db, database_url, serve) -> None:
    server = serve(lambda rec: (200, {}, (SAMPLES / "fault_validation.json").read_bytes()))
    with pytest.raises(FatalQBOError):
        _client(db, server, database_url).query_page("Customer")
    server2 = serve(lambda rec: (200, {}, b"<html>proxy login</html>"))
    with pytest.raises(ServerError):
        _client(db, server2, database_url).query_page("Customer")
    assert len(server2.requests) == MAX_ATTEMPTS
    with pytest.raises(ValueError):
        _client(db, server, database_url).query_page("Customer", select="Id; DROP")


def test_query_page_selects_ids_only_from_the_emulator(db, settings, emulator) -> None:
    realm = connect_realm(db, settings, emulator, customers=5, items=2, invoices=1203, estimates=1)
    client = client_for(db, settings, realm)
    pages = [client.query_page("Invoice", start_position=s, select="Id") for s in (1, 1001)]
    assert [p.count for p in pages] == [1000, 203]
    ids = [o["Id"] for p in pages for o in p.objects()]
    assert ids == [o["Id"] for o in emulator.admin.entities(realm, "Invoice")]
    assert all(set(o) == {"Id"} for p in pages for o in p.objects())
    full = client.query_page("Invoice", start_position=1201)
    assert full.count == 3 and json.loads(full.body, parse_float=Decimal)["QueryResponse"]["Invoice"] == \
        emulator.admin.entities(realm, "Invoice")[1200:]
