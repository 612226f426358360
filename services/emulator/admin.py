"""Python client for the emulator's `/_admin/` HTTP API (usable from tests and other processes).

Every method is one POST with JSON keyword arguments; objects come back parsed with
`Decimal` for numbers with a fraction, exactly as the Data API serves them. A refused call
raises `EmulatorAdminError` with the emulator's one-line reason.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import requests

from services.emulator.jsontext import dumps

__all__ = ["EmulatorAdmin", "EmulatorAdminError"]


class EmulatorAdminError(Exception):
    """The emulator refused an admin call (unknown realm, bad op, ...)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class EmulatorAdmin:
    """Admin client for the emulator at `base_url` (e.g. `http://127.0.0.1:8765`)."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _call(self, method: str, _keep_none: bool = False, **kw: Any) -> Any:
        body = dumps({k: v for k, v in kw.items() if v is not None or _keep_none})
        resp = self._session.post(f"{self.base_url}/_admin/{method}", data=body.encode(),
                                  headers={"Content-Type": "application/json"}, timeout=self.timeout)
        try:
            payload = json.loads(resp.content or b"null", parse_float=Decimal)
        except ValueError:
            payload = None
        if resp.status_code != 200:
            reason = payload.get("error") if isinstance(payload, dict) else resp.text[:200]
            raise EmulatorAdminError(f"emulator admin {method}: {reason}", resp.status_code)
        return payload

    def create_realm(self, realm_id: str | None = None, company_name: str | None = None, customers: int = 50,
                     items: int = 20, invoices: int = 100, estimates: int = 20, seed: int | None = None,
                     sizes: dict[str, int] | None = None, sales_tax: bool = False) -> str:
        """Generate a company; returns its realm id (deterministic data for a given seed). `sizes`
        sets the count of other entities by QBO name ({"Payment": 400, "Vendor": 30, ...}; by
        default proportional to `invoices`); `sales_tax` charges sales tax on taxable customers."""
        return str(self._call("create_realm", realm_id=realm_id, company_name=company_name, customers=customers,
                              items=items, invoices=invoices, estimates=estimates, seed=seed, sizes=sizes,
                              sales_tax=sales_tax)["realm_id"])

    def issue_tokens(self, realm_id: str, access_expires_in: int = 3600) -> dict[str, Any]:
        """A fresh token pair (now the realm's newest) as a token response, plus realmId."""
        return dict(self._call("issue_tokens", realm_id=realm_id, access_expires_in=access_expires_in))

    def newest_tokens(self, realm_id: str) -> dict[str, Any]:
        """The realm's current access token and newest refresh token."""
        return dict(self._call("newest_tokens", realm_id=realm_id))

    def expire_access_tokens(self, realm_id: str) -> None:
        """Every access token of the realm is expired from now on (Data API answers 401)."""
        self._call("expire_access_tokens", realm_id=realm_id)

    def invalidate_refresh_tokens(self, realm_id: str) -> None:
        """Every refresh token of the realm is dead (the next refresh gets invalid_grant)."""
        self._call("invalidate_refresh_tokens", realm_id=realm_id)

    def configure(self, **kw: Any) -> dict[str, Any]:
        """Change settings: grace_seconds, rate_limit_per_minute, latency_ms, fail_rate_429, fail_rate_503,
        webhook_url, webhook_format, verifier_token, hard_expires_in (for realms created afterwards),
        seed (reseeds failure injection), report_cell_limit (cells one report answer may hold,
        400,000), report_adjustments (a list of {"report", "account_id" | "customer_id" | "vendor_id",
        "amount", "realm_id"?}: amounts added to that row of that report; [] clears). Returns the
        configuration (verifier token masked)."""
        return dict(self._call("configure", _keep_none=True, **kw))

    def request_counts(self, realm_id: str | None = None) -> dict[str, int]:
        """Calls per kind ("query", "cdc", "read", "companyinfo", "report", "token:refresh_token",
        "token:authorization_code", "revoke", "authorize", "throttled", "no_minorversion")."""
        return {k: int(v) for k, v in self._call("request_counts", realm_id=realm_id).items()}

    def reset_counts(self) -> None:
        """Zero every counter."""
        self._call("reset_counts")

    def mutate(self, realm_id: str, entity: str, op: str, id: str | int | None = None,  # noqa: A002 - QBO's Id
               fields: dict[str, Any] | None = None, merge_into: str | int | None = None) -> dict[str, Any]:
        """Apply create/update/delete/void/merge/inactivate to any entity its traits allow
        (services.emulator.traits); returns the object as served (the delete marker, the merge
        survivor); the change and what it moved (linked documents) go to CDC and, when
        configured, the change goes out as a webhook."""
        return dict(self._call("mutate", realm_id=realm_id, entity=entity, op=op,
                               id=None if id is None else str(id), fields=fields,
                               merge_into=None if merge_into is None else str(merge_into)))

    def entities(self, realm_id: str, entity: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every object of the entity as the Data API serves it, in Id order (inactive included)."""
        return list(self._call("entities", realm_id=realm_id, entity=entity, include_deleted=include_deleted))

    def vanish(self, realm_id: str, entity: str, id: str | int) -> None:  # noqa: A002 - QBO's Id
        """Drop an object without a trace: gone from query, COUNT, read and CDC, no Deleted marker
        and no webhook (only a COUNT comparison can notice); reports afterwards leave it out."""
        self._call("vanish", realm_id=realm_id, entity=entity, id=str(id))

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator clock by `seconds`; returns its new epoch time."""
        return float(self._call("advance_clock", seconds=seconds)["now"])

    def now(self) -> float:
        """The emulator's current epoch time."""
        return float(self._call("now")["now"])

    def set_authorize_realm(self, realm_id: str) -> None:
        """The realm the next /connect/oauth2 consent returns."""
        self._call("set_authorize_realm", realm_id=realm_id)

    def webhook_deliveries(self) -> list[dict[str, Any]]:
        """Every webhook delivery so far: url, format, body, signature, attempts, status, delivered, done."""
        return list(self._call("webhook_deliveries"))

    def wait_webhooks(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until no delivery is pending (or `timeout`), then return `webhook_deliveries()`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and int(self._call("webhooks_pending")["pending"]) > 0:
            time.sleep(0.02)
        return self.webhook_deliveries()

    def minor_versions(self) -> dict[str, int]:
        """How often each `minorversion` value was seen on Data API calls."""
        return {k: int(v) for k, v in self._call("minor_versions").items()}

    def realms(self) -> list[str]:
        """Ids of every realm the emulator holds."""
        return [str(r) for r in self._call("realms")]
