"""Intuit Data API error responses -> the qbsync exception tree (services/core/errors.py).

QuickBooks reports a failure in several shapes, all handled by `parse_fault`:

- the JSON envelope `{"Fault": {"Error": [{"Message", "Detail", "code", "element"}], "type"}}`
  (validation faults, 400/404/500...);
- the lower-case envelope `{"fault": {"error": [{"message", "detail", "code"}], "type": "AUTHENTICATION"}}`
  that a 401 for an expired access token carries;
- XML `<IntuitResponse><Fault type="SERVICE"><Error code="3001"><Message>...` (namespaced),
  which the throttle (429) sends even when JSON was asked for;
- anything else (an HTML 503 page from a load balancer, an empty body).

Mapping, first match wins:
    429, or code 3001 (also on a 403)   -> Throttled        (retried with backoff)
    401, or code 3200                   -> AuthenticationFailed (refresh once, retry once)
    404, or code 610                    -> NotFound
    5xx                                 -> ServerError      (retried with backoff)
    400 "... older than fixed days ..."   -> CDCTooOld        (the sync goes to windowed queries)
    anything else                       -> FatalQBOError    (validation 6240, 4000 MAXRESULTS...)

Every error carries code, message, detail, fault type, `intuit_tid` (header `intuit_tid` or
`Intuit-Tid`, any case), http_status and retry_after (a Retry-After header, in seconds).
Messages and details are redacted: the 401 detail quotes part of the expired token.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from services.core.errors import (
    AuthenticationFailed,
    CDCTooOld,
    FatalQBOError,
    NotFound,
    QBOError,
    ServerError,
    Throttled,
)
from services.core.logs import REDACTED, redact
from services.core.retry import parse_retry_after

__all__ = ["parse_fault", "check_body_for_fault", "find_fault", "header", "FaultEntry"]

MAX_XML_BYTES = 256 * 1024
MAX_TEXT_CHARS = 300
_TOKEN_FRAGMENT = re.compile(r"(?i)(\btoken[^:]{0,40}:\s*)[A-Za-z0-9._~+/=-]{8,}")
_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")
_CDC_TOO_OLD = re.compile(r"(?i)older\s+than\s+(?:fixed\s+|\d+\s+)?days")


class FaultEntry:
    """One `Error` of a Fault: code, message, detail, element (all optional strings)."""

    __slots__ = ("code", "message", "detail", "element")

    def __init__(self, code: str | None, message: str | None, detail: str | None,
                 element: str | None = None) -> None:
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """The value of header `name`, compared case-insensitively; None when absent."""
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if str(key).lower() == wanted:
            return value
    return None


def _intuit_tid(headers: Mapping[str, str] | None) -> str | None:
    return header(headers, "intuit_tid") or header(headers, "intuit-tid")


def _clean(text: Any) -> str | None:
    """A short, single-line, redacted string (None for empty)."""
    if text is None:
        return None
    out = _SPACES.sub(" ", str(text)).strip()
    if not out:
        return None
    out = _TOKEN_FRAGMENT.sub(lambda m: f"{m.group(1)}{REDACTED}", out)
    out = redact(out)
    if len(out) > MAX_TEXT_CHARS:
        out = out[: MAX_TEXT_CHARS - 1] + "…"
    return out


def _code(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _get(d: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in d and d[name] is not None:
            return d[name]
    return None


def _entries_from_json_fault(fault: Mapping[str, Any]) -> tuple[list[FaultEntry], str | None]:
    raw_errors = _get(fault, "Error", "error") or []
    if isinstance(raw_errors, Mapping):
        raw_errors = [raw_errors]
    entries = []
    for err in raw_errors if isinstance(raw_errors, list) else []:
        if not isinstance(err, Mapping):
            continue
        entries.append(FaultEntry(
            code=_code(_get(err, "code", "Code")),
            message=_get(err, "Message", "message"),
            detail=_get(err, "Detail", "detail"),
            element=_get(err, "element", "Element"),
        ))
    fault_type = _get(fault, "type", "Type")
    return entries, (str(fault_type) if fault_type is not None else None)


def find_fault(data: Any) -> tuple[list[FaultEntry], str | None] | None:
    """The Fault of a parsed JSON body as (entries, type), or None when it carries none."""
    if not isinstance(data, Mapping):
        return None
    fault = _get(data, "Fault", "fault")
    if not isinstance(fault, Mapping) or not fault:
        return None
    return _entries_from_json_fault(fault)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(body: bytes) -> tuple[list[FaultEntry], str | None] | None:
    """The Fault of an XML body, parsed without DTDs or entities (refused outright)."""
    if len(body) > MAX_XML_BYTES or b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    fault = root if _local(root.tag) == "Fault" else None
    if fault is None:
        for el in root.iter():
            if _local(el.tag) == "Fault":
                fault = el
                break
    if fault is None:
        return None
    entries = []
    for err in fault:
        if _local(err.tag) != "Error":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in err}
        entries.append(FaultEntry(
            code=_code(err.get("code")),
            message=fields.get("Message"),
            detail=fields.get("Detail"),
            element=err.get("element"),
        ))
    return entries, fault.get("type")


def _parse_body(body: bytes) -> tuple[list[FaultEntry], str | None, str | None]:
    """(entries, fault type, fallback text) for any body."""
    stripped = body.strip()
    if stripped.startswith((b"{", b"[")):
        try:
            data = json.loads(stripped.decode("utf-8", errors="replace"))
        except ValueError:
            data = None
        found = find_fault(data)
        if found is not None:
            return found[0], found[1], None
    elif stripped.startswith(b"<"):
        found = _parse_xml(stripped)
        if found is not None:
            return found[0], found[1], None
    text = stripped.decode("utf-8", errors="replace")
    text = _TAGS.sub(" ", text)
    return [], None, _clean(text)


def _norm(code: str | None) -> str:
    return (code or "").lstrip("0")


def _choose_class(status: int, codes: set[str]) -> type[QBOError]:
    if status == 429 or "3001" in codes:
        return Throttled
    if status == 401 or "3200" in codes:
        return AuthenticationFailed
    if status == 404 or "610" in codes:
        return NotFound
    if status >= 500:
        return ServerError
    return FatalQBOError


def parse_fault(status: int, headers: Mapping[str, str] | None, body: bytes | str | None, *,
                realm_id: str | None = None) -> QBOError:
    """The exception for an Intuit Data API error response; never raises itself.

    Any body is accepted (JSON either case, namespaced XML, HTML, empty, garbage); the result
    always carries http_status, intuit_tid and retry_after from the headers, and the first
    error's code/message/detail when the body has a Fault.
    """
    if body is None:
        body = b""
    if isinstance(body, str):
        body = body.encode("utf-8", errors="replace")
    entries, fault_type, fallback = _parse_body(body)
    return _build(status, headers, entries, fault_type, fallback, realm_id)


def _build(status: int, headers: Mapping[str, str] | None, entries: list[FaultEntry],
           fault_type: str | None, fallback: str | None, realm_id: str | None) -> QBOError:
    codes = {_norm(e.code) for e in entries if e.code}
    cls = _choose_class(status, codes)
    first = entries[0] if entries else FaultEntry(None, None, None)
    message = _clean(first.message)
    detail = _clean(first.detail)
    if cls is FatalQBOError and status == 400 and _CDC_TOO_OLD.search(f"{message} {detail}"):
        cls = CDCTooOld
    if len(entries) > 1:
        more = "; ".join(filter(None, (_clean(f"{e.code}: {e.message}") for e in entries[1:])))
        detail = f"{detail or ''} (+{len(entries) - 1} more: {more})".strip()
    kind = f" {fault_type} fault" if fault_type else ""
    text = f"QuickBooks returned HTTP {status}{kind}: {message or fallback or 'no error body'}"
    if detail and detail != message:
        text += f" ({detail})"
    return cls(
        text,
        http_status=status,
        fault_type=fault_type,
        detail=detail,
        retry_after=parse_retry_after(header(headers, "Retry-After")),
        realm_id=realm_id,
        code=first.code,
        intuit_tid=_intuit_tid(headers),
    )


def check_body_for_fault(status: int, headers: Mapping[str, str] | None, data: Any, *,
                         realm_id: str | None = None) -> None:
    """Raise the mapped error when a successful (2xx) response still carries a Fault.

    `data` is the parsed JSON body (a dict) or the raw bytes. Returns None when there is no
    Fault, so callers can use the body as it is.
    """
    if isinstance(data, (bytes, str)):
        raw = data.encode() if isinstance(data, str) else data
        stripped = raw.strip()
        if stripped.startswith(b"<"):
            found = _parse_xml(stripped)
            if found is not None:
                raise parse_fault(status, headers, raw, realm_id=realm_id)
            return
        try:
            data = json.loads(stripped.decode("utf-8", errors="replace"))
        except ValueError:
            return
    found = find_fault(data)
    if found is not None:
        raise _build(status, headers, found[0], found[1], None, realm_id)
