"""services.intuit.faults: every recorded Data API fault, and the odd shapes, map to the right error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.samples import SAMPLES

from services.core.errors import (
    AuthenticationFailed,
    CDCTooOld,
    FatalQBOError,
    NotFound,
    QBOError,
    Retriable,
    ServerError,
    Throttled,
)
from services.intuit.faults import check_body_for_fault, parse_fault

# Every Data API fault in the samples folder: (file, HTTP status it came with, class, code, type).
FAULT_SAMPLES = {
    "fault_429.xml": (429, Throttled, "3001", "SERVICE"),
    "fault_401_token_expired.json": (401, AuthenticationFailed, "3200", "AUTHENTICATION"),
    "fault_validation.json": (400, FatalQBOError, "6240", "ValidationFault"),
}


def _is_data_api_fault(path: Path) -> bool:
    raw = path.read_bytes()
    if path.suffix == ".xml":
        return b"<Fault" in raw
    if path.suffix == ".json" and not path.name.endswith(".headers.json"):
        try:
            data = json.loads(raw)
        except ValueError:
            return False
        return isinstance(data, dict) and bool(data.get("Fault") or data.get("fault"))
    return False


def test_the_table_covers_every_fault_sample_in_the_folder() -> None:
    found = {p.name for p in SAMPLES.iterdir() if _is_data_api_fault(p)}
    assert found == set(FAULT_SAMPLES)


@pytest.mark.parametrize("name", sorted(FAULT_SAMPLES))
def test_each_recorded_fault_maps_to_its_error(name: str) -> None:
    status, cls, code, fault_type = FAULT_SAMPLES[name]
    err = parse_fault(status, {"intuit_tid": "1-abc-tid"}, (SAMPLES / name).read_bytes(),
                      realm_id="9130")
    assert type(err) is cls
    assert err.code == code
    assert err.fault_type == fault_type
    assert err.http_status == status
    assert err.intuit_tid == "1-abc-tid"
    assert err.realm_id == "9130"
    assert "1-abc-tid" in err.one_line()


def test_xml_429_is_throttled_with_message_detail_and_tid() -> None:
    err = parse_fault(429, {"Intuit-Tid": "1-5f7349e0-tid"}, (SAMPLES / "fault_429.xml").read_bytes())
    assert isinstance(err, Throttled) and isinstance(err, Retriable)
    assert "ThrottleExceeded" in err.message
    assert err.detail == "The request limit was reached. Try again later"
    assert err.intuit_tid == "1-5f7349e0-tid"
    assert err.retry_after is None


def test_403_carrying_the_throttle_code_is_throttled() -> None:
    err = parse_fault(403, {}, (SAMPLES / "fault_429.xml").read_bytes())
    assert isinstance(err, Throttled)


def test_401_uses_recorded_headers_and_hides_the_token_fragment() -> None:
    headers = {k: v[0] for k, v in
               json.loads((SAMPLES / "fault_401_token_expired.headers.json").read_text()).items()}
    body = (SAMPLES / "fault_401_token_expired.json").read_bytes()
    err = parse_fault(401, headers, body, realm_id="1")
    assert isinstance(err, AuthenticationFailed)
    assert err.intuit_tid == "1-5f7349e0-0fd2bee86a8a83c67a77fbb2"
    fragment = "AB01601390262kxzxOlnHYdhtEVRXISU7piPqQrCmmbDN35Yjd"
    assert fragment in body.decode()
    assert fragment not in str(err) and fragment not in (err.detail or "")
    assert fragment not in err.one_line()


def test_code_3200_without_401_is_still_authentication() -> None:
    body = b'{"Fault":{"Error":[{"Message":"AuthenticationFailed","code":"3200"}],"type":"AuthenticationFault"}}'
    assert isinstance(parse_fault(400, {}, body), AuthenticationFailed)


def test_code_610_and_bare_404_are_not_found() -> None:
    body = json.dumps({"Fault": {"Error": [{
        "Message": "Object Not Found",
        "Detail": "Object Not Found : Something you're trying to use has been made inactive.",
        "code": "610", "element": ""}], "type": "ValidationFault"},
        "time": "2026-11-01T10:00:00.000-07:00"}).encode()
    err = parse_fault(400, {}, body)
    assert isinstance(err, NotFound) and err.code == "610"
    assert isinstance(parse_fault(404, {}, b""), NotFound)


def test_validation_and_maxresults_faults_are_fatal_not_retriable() -> None:
    err = parse_fault(400, {}, (SAMPLES / "fault_validation.json").read_bytes())
    assert isinstance(err, FatalQBOError) and not isinstance(err, Retriable)
    body = (b'{"Fault":{"Error":[{"Message":"Error parsing query","Detail":"QueryValidationError: '
            b'value 1500 is too large. Max allowed value is 1000","code":"4000"}],"type":"ValidationFault"}}')
    err = parse_fault(400, {}, body)
    assert isinstance(err, FatalQBOError) and err.code == "4000"
    assert "1500 is too large" in (err.detail or "")


def test_cdc_refusing_an_old_changed_since_is_its_own_error() -> None:
    body = (b'{"Fault":{"Error":[{"Message":"Request has invalid or unsupported property","Detail":"Property '
            b'Name:Can not process CDC request with changedSince date 2026-01-01T00:00:00Z which is older than '
            b'fixed days is not supported. specified is unsupported or invalid","code":"2010",'
            b'"element":"changedSince"}],"type":"ValidationFault"}}')
    err = parse_fault(400, {}, body)
    assert isinstance(err, CDCTooOld) and err.code == "2010"
    other = parse_fault(400, {}, body.replace(b"older than fixed days", b"not a date"))
    assert isinstance(other, FatalQBOError) and not isinstance(other, CDCTooOld)


def test_html_503_is_server_error_and_retry_after_is_read() -> None:
    html = b"<html><head><title>503</title></head><body><h1>Service Unavailable</h1></body></html>"
    err = parse_fault(503, {"retry-after": "7"}, html)
    assert isinstance(err, ServerError)
    assert err.retry_after == 7.0
    assert "Service Unavailable" in err.message
    assert err.code is None


def test_empty_and_garbage_bodies_still_map_by_status() -> None:
    assert isinstance(parse_fault(502, {}, b""), ServerError)
    assert isinstance(parse_fault(500, {}, None), ServerError)
    err = parse_fault(400, {}, b'{"Fault": {"Error": [')
    assert type(err) is FatalQBOError and err.http_status == 400
    json_500 = b'{"Fault":{"Error":[{"Message":"An application error has occurred","code":"10000"}],"type":"SystemFault"}}'
    err = parse_fault(500, {}, json_500)
    assert isinstance(err, ServerError) and err.code == "10000" and err.fault_type == "SystemFault"


def test_several_errors_keep_the_first_code_and_mention_the_rest() -> None:
    body = (b'{"Fault":{"Error":[{"Message":"Required param missing","code":"2020","element":"Line"},'
            b'{"Message":"Invalid Reference Id","code":"2500"}],"type":"ValidationFault"}}')
    err = parse_fault(400, {}, body)
    assert err.code == "2020"
    assert "2500" in (err.detail or "")


def test_xml_with_a_doctype_is_never_expanded() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b'<IntuitResponse><Fault type="SERVICE"><Error code="3001"><Message>&b;</Message>'
            b'</Error></Fault></IntuitResponse>')
    err = parse_fault(400, {}, bomb)
    assert type(err) is FatalQBOError
    assert "aaaaaaaaaa" not in str(err)


def test_header_names_are_case_insensitive() -> None:
    for name in ("intuit_tid", "INTUIT_TID", "Intuit-Tid", "intuit-tid"):
        assert parse_fault(500, {name: "tid-1"}, b"").intuit_tid == "tid-1"


def test_a_200_body_with_a_fault_is_an_error() -> None:
    data = json.loads((SAMPLES / "fault_validation.json").read_text())
    with pytest.raises(FatalQBOError) as info:
        check_body_for_fault(200, {"intuit_tid": "t"}, data, realm_id="5")
    assert info.value.code == "6240" and info.value.intuit_tid == "t" and info.value.realm_id == "5"
    with pytest.raises(Throttled):
        check_body_for_fault(200, {}, (SAMPLES / "fault_429.xml").read_bytes())
    with pytest.raises(QBOError):
        check_body_for_fault(200, {}, (SAMPLES / "fault_validation.json").read_bytes())


def test_a_200_body_without_a_fault_passes() -> None:
    ok = json.loads((SAMPLES / "query_response_customers.json").read_text())
    assert check_body_for_fault(200, {}, ok) is None
    assert check_body_for_fault(200, {}, {"fault": None, "queryResponse": None}) is None
    assert check_body_for_fault(200, {}, (SAMPLES / "cdc_deleted_response.xml").read_bytes()) is None
