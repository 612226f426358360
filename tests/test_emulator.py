"""The QBO emulator over real HTTP on 127.0.0.1: OAuth, query, read, faults, limits."""

from __future__ import annotations

import json
import re
import threading
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from support.samples import SAMPLES

from services.emulator import EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET

INVALID_GRANT = {"error": "invalid_grant", "error_description": "Incorrect or invalid refresh token"}


def token_call(emulator, data: dict, *, auth=(EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET), headers=None):
    return requests.post(f"{emulator.url}/oauth2/v1/tokens/bearer", data=data, auth=auth,
                         headers={"Accept": "application/json", **(headers or {})}, timeout=10)


def refresh(emulator, token: str, **kw):
    return token_call(emulator, {"grant_type": "refresh_token", "refresh_token": token}, **kw)


def api(emulator, realm: str, access: str | None, path: str, *, minor: bool = True, **params):
    if minor:
        params["minorversion"] = "75"
    headers = {"Accept": "application/json"}
    if access:
        headers["Authorization"] = f"Bearer {access}"
    return requests.get(f"{emulator.url}/v3/company/{realm}/{path}", params=params, headers=headers, timeout=30)


def query(emulator, realm: str, access: str, text: str):
    resp = api(emulator, realm, access, "query", query=text)
    return resp, json.loads(resp.content, parse_float=Decimal)


@pytest.fixture
def realm(emulator):
    realm_id = emulator.admin.create_realm(customers=40, items=10, invoices=30, estimates=8, seed=11)
    return realm_id, emulator.admin.issue_tokens(realm_id)


# ---- OAuth -------------------------------------------------------------------------------------
def test_every_refresh_rotates_and_a_superseded_token_dies_without_grace(emulator, realm):
    realm_id, tokens = realm
    emulator.admin.configure(grace_seconds=0)
    first = refresh(emulator, tokens["refresh_token"])
    assert first.status_code == 200 and first.headers["intuit_tid"].startswith("1-")
    body = first.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "x_refresh_token_expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["x_refresh_token_expires_in"] == 8726400
    assert body["refresh_token"] != tokens["refresh_token"] and body["access_token"] != tokens["access_token"]
    again = refresh(emulator, tokens["refresh_token"])
    assert again.status_code == 400 and again.json() == INVALID_GRANT
    second = refresh(emulator, body["refresh_token"])
    assert second.status_code == 200 and second.json()["refresh_token"] != body["refresh_token"]
    assert emulator.admin.newest_tokens(realm_id)["refresh_token"] == second.json()["refresh_token"]
    assert emulator.admin.request_counts(realm_id)["token:refresh_token"] == 3


def test_by_default_a_refresh_token_is_reused_for_a_day_as_intuit_does(realm):
    from services.emulator.server import EmulatorServer

    with EmulatorServer(host="127.0.0.1", port=0) as intuit:  # the default mode, not the suite's strict one
        realm_id = intuit.admin.create_realm(customers=2, items=1, invoices=1, estimates=0)
        first = intuit.admin.issue_tokens(realm_id)
        same = refresh(intuit, first["refresh_token"]).json()
        assert same["refresh_token"] == first["refresh_token"] and same["access_token"] != first["access_token"]
        assert api(intuit, realm_id, first["access_token"], "invoice/1").status_code == 200  # both stay valid
        assert api(intuit, realm_id, same["access_token"], "invoice/1").status_code == 200
        intuit.admin.advance_clock(86400 + 1)
        rotated = refresh(intuit, first["refresh_token"]).json()
        assert rotated["refresh_token"] != first["refresh_token"]
        assert refresh(intuit, rotated["refresh_token"]).json()["refresh_token"] == rotated["refresh_token"]
        intuit.admin.configure(refresh_token_reuse_seconds=0)
        assert refresh(intuit, rotated["refresh_token"]).json()["refresh_token"] != rotated["refresh_token"]


def test_superseded_refresh_token_works_within_grace_then_expires(emulator, realm):
    _realm_id, tokens = realm  # default grace: 24 h
    newer = refresh(emulator, tokens["refresh_token"]).json()
    retry = refresh(emulator, tokens["refresh_token"])  # e.g. a client that lost the response
    assert retry.status_code == 200 and retry.json()["refresh_token"] not in (newer["refresh_token"],
                                                                               tokens["refresh_token"])
    emulator.admin.advance_clock(86400 + 5)
    assert refresh(emulator, newer["refresh_token"]).json() == INVALID_GRANT
    assert refresh(emulator, retry.json()["refresh_token"]).status_code == 200


def test_wrong_client_gets_invalid_client(emulator, realm):
    _realm_id, tokens = realm
    resp = refresh(emulator, tokens["refresh_token"], auth=(EMULATOR_CLIENT_ID, "wrong"))
    assert resp.status_code == 401 and resp.json() == {"error": "invalid_client"}
    resp = refresh(emulator, tokens["refresh_token"], auth=("someone-else", EMULATOR_CLIENT_SECRET))
    assert resp.status_code == 401 and resp.json() == {"error": "invalid_client"}
    assert refresh(emulator, tokens["refresh_token"]).status_code == 200  # the token survived


def test_unknown_invalidated_and_revoked_tokens_get_invalid_grant(emulator, realm):
    realm_id, tokens = realm
    assert refresh(emulator, "AB11-never-issued").json() == INVALID_GRANT
    emulator.admin.invalidate_refresh_tokens(realm_id)
    assert refresh(emulator, tokens["refresh_token"]).json() == INVALID_GRANT
    fresh = emulator.admin.issue_tokens(realm_id)
    assert api(emulator, realm_id, fresh["access_token"], "companyinfo/" + realm_id).status_code == 200
    resp = requests.post(f"{emulator.url}/oauth2/v1/tokens/revoke", json={"token": fresh["refresh_token"]},
                         auth=(EMULATOR_CLIENT_ID, EMULATOR_CLIENT_SECRET), timeout=10)
    assert resp.status_code == 200
    assert refresh(emulator, fresh["refresh_token"]).json() == INVALID_GRANT
    assert api(emulator, realm_id, fresh["access_token"], "companyinfo/" + realm_id).status_code == 401
    assert emulator.admin.request_counts(realm_id)["revoke"] == 1


def test_hard_expiry_field_only_when_asked_and_enforced(emulator, realm):
    realm_id, tokens = realm
    plain = refresh(emulator, tokens["refresh_token"]).json()
    assert "x_refresh_token_hard_expires_in" not in plain
    asked = refresh(emulator, plain["refresh_token"],
                    headers={"x-include-refresh-token-hard-expires-in": "true"}).json()
    assert 5 * 365 * 86400 - 120 < asked["x_refresh_token_hard_expires_in"] <= 5 * 365 * 86400
    emulator.admin.configure(hard_expires_in=1000)
    short_realm = emulator.admin.create_realm(customers=2, items=1, invoices=0, estimates=0)
    short = emulator.admin.issue_tokens(short_realm)
    got = refresh(emulator, short["refresh_token"], headers={"x-include-refresh-token-hard-expires-in": "true"})
    assert 900 < got.json()["x_refresh_token_hard_expires_in"] <= 1000
    assert got.json()["x_refresh_token_expires_in"] <= 1000  # never beyond the hard expiry
    emulator.admin.advance_clock(1001)
    assert refresh(emulator, got.json()["refresh_token"]).json() == INVALID_GRANT


def test_authorization_code_flow_through_connect_redirect(emulator, realm):
    realm_id, _tokens = realm
    other = emulator.admin.create_realm(customers=3, items=2, invoices=1, estimates=0)
    emulator.admin.set_authorize_realm(other)
    redirect = "http://127.0.0.1:9/oauth/callback"
    params = {"client_id": EMULATOR_CLIENT_ID, "response_type": "code", "redirect_uri": redirect,
              "scope": "com.intuit.quickbooks.accounting", "state": "st-123"}
    resp = requests.get(f"{emulator.url}/connect/oauth2", params=params, allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect
    got = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert got["state"] == "st-123" and got["realmId"] == other and got["code"]
    wrong = token_call(emulator, {"grant_type": "authorization_code", "code": got["code"],
                                  "redirect_uri": "http://127.0.0.1:9/other"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    ok = token_call(emulator, {"grant_type": "authorization_code", "code": got["code"], "redirect_uri": redirect})
    assert ok.status_code == 200
    access = ok.json()["access_token"]
    assert api(emulator, other, access, f"companyinfo/{other}").status_code == 200
    assert api(emulator, realm_id, access, f"companyinfo/{realm_id}").status_code == 403  # another company
    reused = token_call(emulator, {"grant_type": "authorization_code", "code": got["code"], "redirect_uri": redirect})
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    bad = requests.get(f"{emulator.url}/connect/oauth2", params={**params, "client_id": "nope"},
                       allow_redirects=False, timeout=10)
    assert bad.status_code == 400
    counts = emulator.admin.request_counts(other)
    assert counts["authorize"] == 1 and counts["token:authorization_code"] == 3


# ---- query ------------------------------------------------------------------------------------
def test_query_pages_over_more_than_1000_rows(emulator):
    admin = emulator.admin
    realm_id = admin.create_realm(customers=20, items=5, invoices=2300, estimates=0, seed=5)
    access = admin.issue_tokens(realm_id)["access_token"]
    seen: list[int] = []
    sizes = []
    start = 1
    while True:
        resp, body = query(emulator, realm_id, access,
                           f"SELECT * FROM Invoice ORDERBY Id STARTPOSITION {start} MAXRESULTS 1000")
        assert resp.status_code == 200
        page = body["QueryResponse"].get("Invoice", [])
        if not page:
            assert body["QueryResponse"] == {} and "time" in body
            break
        assert body["QueryResponse"]["startPosition"] == start
        assert body["QueryResponse"]["maxResults"] == len(page)
        sizes.append(len(page))
        seen += [int(o["Id"]) for o in page]
        start += len(page)
    assert sizes == [1000, 1000, 300]
    assert seen == list(range(1, 2301))
    _resp, body = query(emulator, realm_id, access, "select count(*) from Invoice")
    assert body == {"QueryResponse": {"totalCount": 2300}, "time": body["time"]}
    _resp, body = query(emulator, realm_id, access, "SELECT * FROM Invoice ORDERBY Id DESC MAXRESULTS 3")
    assert [o["Id"] for o in body["QueryResponse"]["Invoice"]] == ["2300", "2299", "2298"]
    _resp, body = query(emulator, realm_id, access, "SELECT * FROM Invoice")
    assert body["QueryResponse"]["maxResults"] == 100  # the default page size


def test_maxresults_over_1000_and_syntax_errors_are_validation_faults(emulator, realm):
    realm_id, tokens = realm
    resp, body = query(emulator, realm_id, tokens["access_token"], "SELECT * FROM Customer MAXRESULTS 1500")
    assert resp.status_code == 400
    error = body["Fault"]["Error"][0]
    assert body["Fault"]["type"] == "ValidationFault" and error["code"] == "4000"
    assert "QueryValidationError: value 1500 is too large. Max allowed value is 1000" in error["Detail"]
    for bad in ("SELEKT * FROM Customer", "SELECT * FROM Customer WHERE Active = true OR Id = '1'",
                "SELECT * FROM Nonsense", "SELECT * FROM Customer WHERE"):
        resp, body = query(emulator, realm_id, tokens["access_token"], bad)
        assert resp.status_code == 400 and body["Fault"]["Error"][0]["code"] == "4000", bad


def test_active_filter_and_count(emulator, realm):
    realm_id, tokens = realm
    access = tokens["access_token"]
    everyone = emulator.admin.entities(realm_id, "Customer")
    inactive = [c for c in everyone if not c["Active"]]
    emulator.admin.mutate(realm_id, "Customer", "inactivate", id=everyone[0]["Id"])
    inactive_ids = {c["Id"] for c in inactive} | {everyone[0]["Id"]}
    _r, body = query(emulator, realm_id, access, "SELECT * FROM Customer MAXRESULTS 1000")
    assert {c["Id"] for c in body["QueryResponse"]["Customer"]} == {c["Id"] for c in everyone} - inactive_ids
    _r, body = query(emulator, realm_id, access, "select * from customer where Active IN (true, false) maxresults 1000")
    assert len(body["QueryResponse"]["Customer"]) == len(everyone)
    _r, body = query(emulator, realm_id, access, "SELECT * FROM Customer WHERE Active = false")
    assert {c["Id"] for c in body["QueryResponse"]["Customer"]} == inactive_ids
    _r, body = query(emulator, realm_id, access, "SELECT COUNT(*) FROM Customer")
    assert body["QueryResponse"] == {"totalCount": len(everyone) - len(inactive_ids)}
    _r, body = query(emulator, realm_id, access, "SELECT COUNT(*) FROM Customer WHERE Active IN (true,false)")
    assert body["QueryResponse"] == {"totalCount": len(everyone)}


def test_query_conditions_ordering_and_post_body(emulator, realm):
    realm_id, tokens = realm
    access = tokens["access_token"]
    invoices = emulator.admin.entities(realm_id, "Invoice")
    _r, body = query(emulator, realm_id, access, "SELECT * FROM Invoice WHERE Id IN ('3','1','12')")
    assert [o["Id"] for o in body["QueryResponse"]["Invoice"]] == ["1", "3", "12"]  # numeric, not text order
    _r, body = query(emulator, realm_id, access, "SELECT * FROM Invoice WHERE Id = '5'")
    assert body["QueryResponse"]["Invoice"] == [invoices[4]]
    doc = invoices[7]["DocNumber"]
    _r, body = query(emulator, realm_id, access, f"SELECT * FROM Invoice WHERE DocNumber = '{doc}'")
    assert [o["Id"] for o in body["QueryResponse"]["Invoice"]] == [invoices[7]["Id"]]
    times = sorted(o["MetaData"]["LastUpdatedTime"] for o in invoices)
    cut = times[len(times) // 2]
    _r, body = query(emulator, realm_id, access, "SELECT * FROM Invoice WHERE Metadata.LastUpdatedTime >= "
                     f"'{cut}' ORDERBY MetaData.LastUpdatedTime ASC, Id MAXRESULTS 1000")
    got = body["QueryResponse"]["Invoice"]
    assert got and all(o["MetaData"]["LastUpdatedTime"] >= cut for o in got)
    assert len(got) == sum(1 for t in times if t >= cut)
    assert [o["MetaData"]["LastUpdatedTime"] for o in got] == sorted(o["MetaData"]["LastUpdatedTime"] for o in got)
    resp = requests.post(f"{emulator.url}/v3/company/{realm_id}/query?minorversion=75",
                         data="SELECT COUNT(*) FROM Item WHERE Active IN (true,false)",
                         headers={"Authorization": f"Bearer {access}", "Content-Type": "application/text",
                                  "Accept": "application/json"}, timeout=10)
    assert resp.json()["QueryResponse"] == {"totalCount": 10}
    _r, body = query(emulator, realm_id, access, "SELECT * FROM CompanyInfo")
    assert body["QueryResponse"]["CompanyInfo"][0]["Country"] == "USA"


# ---- read, faults, limits ---------------------------------------------------------------------
def test_times_carry_the_pacific_offset_in_force_daylight_saving_included(emulator, realm):
    from datetime import datetime, timezone

    realm_id, tokens = realm
    admin = emulator.admin
    for month, offset, hour in ((7, "-07:00", 13), (1, "-08:00", 12)):  # 20:00 UTC both times
        now = datetime.fromtimestamp(admin.now(), timezone.utc)
        year = now.year + (1 if (now.month, now.day) >= (month, 1) else 0)
        admin.advance_clock(datetime(year, month, 15, 20, tzinfo=timezone.utc).timestamp() - admin.now())
        access = admin.issue_tokens(realm_id)["access_token"]
        admin.mutate(realm_id, "Invoice", "update", id="2")
        body = api(emulator, realm_id, access, "invoice/2").json()
        assert body["time"].startswith(f"{year}-{month:02d}-15T{hour}:00:") and body["time"].endswith(offset)
        assert body["Invoice"]["MetaData"]["LastUpdatedTime"].endswith(offset)
        _r, found = query(emulator, realm_id, access,  # a time without offset is company time
                          f"SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{year}-{month:02d}-15T{hour - 1}:59:00'")
        assert [i["Id"] for i in found["QueryResponse"]["Invoice"]] == ["2"]


def test_a_path_intuit_has_no_resource_for_is_a_fault_not_a_made_up_body(emulator, realm):
    realm_id, tokens = realm
    for path in (f"/v3/company/{realm_id}/widget/1", f"/v3/company/{realm_id}/invoice/1/extra", "/nothing/here"):
        resp = requests.get(f"{emulator.url}{path}", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                            timeout=10)
        assert resp.status_code == 400, path
        (error,) = resp.json()["Fault"]["Error"]
        assert (error["code"], error["Message"]) == ("500", "Unsupported Operation")
        assert f"Could not find resource for relative : {path} of full path" in error["Detail"]


def test_read_by_id_and_object_not_found(emulator, realm):
    realm_id, tokens = realm
    access = tokens["access_token"]
    resp = api(emulator, realm_id, access, "invoice/4")
    body = json.loads(resp.content, parse_float=Decimal)
    assert resp.status_code == 200 and set(body) == {"Invoice", "time"}
    assert body["Invoice"] == emulator.admin.entities(realm_id, "Invoice")[3]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-0[78]:00", body["time"])
    emulator.admin.mutate(realm_id, "Invoice", "delete", id="4")
    for path in ("invoice/4", "invoice/99999", "customer/abc"):
        resp = api(emulator, realm_id, access, path)
        assert resp.status_code == 400, path
        fault = resp.json()["Fault"]
        assert fault["type"] == "ValidationFault"
        assert fault["Error"] == [{"Message": "Object Not Found", "Detail": "Object Not Found : Something you're "
                                   "trying to use has been made inactive. Check the fields with accounts, customers, "
                                   "items, vendors or employees.", "code": "610", "element": ""}]
    info = api(emulator, realm_id, access, f"companyinfo/{realm_id}").json()
    assert info["CompanyInfo"]["Country"] == "USA" and info["CompanyInfo"]["CompanyName"]
    counts = emulator.admin.request_counts(realm_id)
    assert counts["read"] == 4 and counts["companyinfo"] == 1


def test_expired_missing_or_unknown_token_gets_the_recorded_401(emulator, realm):
    realm_id, tokens = realm
    recorded = json.loads((SAMPLES / "fault_401_token_expired.json").read_text())
    recorded_headers = json.loads((SAMPLES / "fault_401_token_expired.headers.json").read_text())
    emulator.admin.expire_access_tokens(realm_id)
    for access in (tokens["access_token"], None, "eyJ-made-up"):
        resp = api(emulator, realm_id, access, "query", query="SELECT * FROM Customer")
        assert resp.status_code == 401
        assert resp.json() == recorded
        assert resp.headers["WWW-Authenticate"] == recorded_headers["Www-Authenticate"][0]
        assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", resp.headers["Intuit-Tid"])
    fresh = refresh(emulator, tokens["refresh_token"]).json()
    assert api(emulator, realm_id, fresh["access_token"], "query", query="SELECT * FROM Item").status_code == 200


def test_minorversion_is_recorded_and_its_absence_counted(emulator, realm):
    realm_id, tokens = realm
    emulator.admin.reset_counts()
    api(emulator, realm_id, tokens["access_token"], "query", query="SELECT * FROM Item")
    api(emulator, realm_id, tokens["access_token"], "query", minor=False, query="SELECT * FROM Item")
    assert emulator.admin.request_counts(realm_id)["no_minorversion"] == 1
    assert emulator.admin.minor_versions() == {"75": 1}


def test_rate_limit_answers_recorded_xml_429_and_recovers_after_the_window(emulator, realm):
    realm_id, tokens = realm
    emulator.admin.configure(rate_limit_per_minute=5)
    statuses = [api(emulator, realm_id, tokens["access_token"], "item/1").status_code for _ in range(5)]
    assert statuses == [200] * 5
    resp = api(emulator, realm_id, tokens["access_token"], "item/1")
    assert resp.status_code == 429
    assert resp.headers["Content-Type"].startswith("application/xml")
    assert resp.content == (SAMPLES / "fault_429.xml").read_bytes()
    assert emulator.admin.request_counts(realm_id)["throttled"] == 1
    emulator.admin.advance_clock(61)
    assert api(emulator, realm_id, tokens["access_token"], "item/1").status_code == 200


def test_more_than_ten_concurrent_requests_are_throttled(emulator, realm):
    realm_id, tokens = realm
    emulator.admin.configure(latency_ms=400)
    statuses: list[int] = []
    barrier = threading.Barrier(13)

    def call() -> None:
        barrier.wait()
        statuses.append(api(emulator, realm_id, tokens["access_token"], "item/1").status_code)

    threads = [threading.Thread(target=call) for _ in range(13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(statuses) == 13
    assert statuses.count(429) >= 1 and statuses.count(200) >= 10
    assert set(statuses) == {200, 429}


def test_injected_failures_are_seeded_and_shaped_like_intuits(emulator, realm):
    realm_id, tokens = realm
    emulator.admin.configure(fail_rate_503=1.0)
    resp = api(emulator, realm_id, tokens["access_token"], "item/1")
    assert resp.status_code == 503 and resp.headers["Content-Type"].startswith("text/html")
    emulator.admin.configure(fail_rate_503=0.0, fail_rate_429=1.0)
    resp = api(emulator, realm_id, tokens["access_token"], "item/1")
    assert resp.status_code == 429 and b"ThrottleExceeded" in resp.content

    def pattern(seed: int) -> list[int]:
        emulator.admin.configure(fail_rate_429=0.3, seed=seed, rate_limit_per_minute=10000)
        return [api(emulator, realm_id, tokens["access_token"], "item/1").status_code for _ in range(20)]

    first = pattern(9)
    assert first == pattern(9) and 429 in first and 200 in first
