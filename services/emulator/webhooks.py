"""Signed webhook delivery of the emulator's changes, in order, like Intuit.

Each change becomes one POST (built and signed when the change happens):
- `classic`: `{"eventNotifications":[{"realmId":..,"dataChangeEvent":{"entities":[{name,id,operation,lastUpdated}]}}]}`
  (merges add `deletedId`);
- `cloudevents`: a JSON array with one `qbo.<entity>.<verb>.v1` event (merges: `data.deletedid`).
The header `intuit-signature` is base64(HMAC-SHA256(verifier token, raw body)). One background
thread delivers them in order; a failed delivery (non-2xx or connection error) is retried a few
times with a short backoff and blocks the ones behind it, as Intuit holds later events back.
Every attempt is recorded for `deliveries()`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from services.emulator.jsontext import fmt_utc_ms

__all__ = ["WebhookDispatcher", "build_body", "sign", "CLASSIC_OPERATIONS", "CLOUDEVENT_VERBS"]

CLASSIC_OPERATIONS = {"create": "Create", "update": "Update", "delete": "Delete", "merge": "Merge",
                      "void": "Void", "inactivate": "Update"}
CLOUDEVENT_VERBS = {"create": "created", "update": "updated", "delete": "deleted", "merge": "merged",
                    "void": "voided", "inactivate": "updated"}
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0)  # after the first attempt: 5 attempts in all


def sign(verifier_token: str, body: bytes) -> str:
    """The `intuit-signature` value for `body`."""
    digest = hmac.new(verifier_token.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def build_body(fmt: str, realm_id: str, entity: str, entity_id: str, op: str, ts: float,
               deleted_id: str | None = None, event_id: str | None = None) -> bytes:
    """The raw webhook body for one change in `fmt` ("classic" or "cloudevents")."""
    if fmt == "classic":
        ent: dict[str, Any] = {"name": entity, "id": entity_id, "operation": CLASSIC_OPERATIONS[op],
                               "lastUpdated": fmt_utc_ms(ts)}
        if deleted_id is not None:
            ent["deletedId"] = deleted_id
        payload: Any = {"eventNotifications": [{"realmId": realm_id, "dataChangeEvent": {"entities": [ent]}}]}
    elif fmt == "cloudevents":
        source = "intuit." + base64.b64encode(hashlib.sha256(f"qbsync-emulator:{realm_id}".encode()).digest()).decode()
        payload = [{"specversion": "1.0", "id": event_id or str(uuid.uuid4()), "source": source,
                    "type": f"qbo.{entity.lower()}.{CLOUDEVENT_VERBS[op]}.v1",
                    "datacontenttype": "application/json", "time": fmt_utc_ms(ts),
                    "intuitentityid": entity_id, "intuitaccountid": realm_id,
                    "data": {"deletedid": deleted_id} if deleted_id is not None else {}}]
    else:
        raise ValueError(f"unknown webhook format {fmt!r} (classic or cloudevents)")
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass
class Delivery:
    url: str
    format: str
    body: bytes
    signature: str
    realm_id: str
    entity: str
    entity_id: str
    operation: str
    attempts: list[Any] = field(default_factory=list)
    status: int | None = None
    delivered: bool = False
    done: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "format": self.format, "body": self.body.decode(), "signature": self.signature,
                "realm_id": self.realm_id, "entity": self.entity, "id": self.entity_id,
                "operation": self.operation, "attempts": list(self.attempts), "status": self.status,
                "delivered": self.delivered, "done": self.done}


class WebhookDispatcher:
    """Queue of signed deliveries with one sender thread (started on first use)."""

    def __init__(self, timeout_s: float = 3.0) -> None:
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._records: list[Delivery] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.timeout_s = timeout_s

    def enqueue(self, url: str, fmt: str, verifier_token: str, realm_id: str, entity: str, entity_id: str,
                op: str, ts: float, deleted_id: str | None = None) -> None:
        """Build, sign and queue one change for delivery (returns at once)."""
        body = build_body(fmt, realm_id, entity, entity_id, op, ts, deleted_id)
        delivery = Delivery(url, fmt, body, sign(verifier_token, body), realm_id, entity, entity_id, op)
        with self._lock:
            self._records.append(delivery)
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._run, name="emulator-webhooks", daemon=True)
                self._thread.start()
        self._queue.put(delivery)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every queued delivery so far, oldest first, with its attempts and final status."""
        with self._lock:
            return [d.as_dict() for d in self._records]

    def pending(self) -> int:
        """How many deliveries are not finished (delivered or given up)."""
        with self._lock:
            return sum(1 for d in self._records if not d.done)

    def clear(self) -> None:
        """Forget finished deliveries."""
        with self._lock:
            self._records = [d for d in self._records if not d.done]

    def stop(self) -> None:
        """Stop the sender thread (undelivered events are dropped)."""
        self._stopped.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            delivery = self._queue.get()
            if delivery is None:
                return
            for attempt in range(len(RETRY_DELAYS) + 1):
                if self._stopped.is_set():
                    return
                status = self._post(delivery)
                with self._lock:
                    delivery.attempts.append(status)
                    if isinstance(status, int):
                        delivery.status = status
                    if isinstance(status, int) and 200 <= status < 300:
                        delivery.delivered = True
                        break
                if attempt < len(RETRY_DELAYS):
                    self._stopped.wait(RETRY_DELAYS[attempt])
            with self._lock:
                delivery.done = True

    def _post(self, delivery: Delivery) -> int | str:
        request = urllib.request.Request(
            delivery.url, data=delivery.body, method="POST",
            headers={"Content-Type": "application/json", "intuit-signature": delivery.signature,
                     "User-Agent": "qbsync-emulator-webhooks"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (OSError, ValueError) as exc:
            return f"error: {type(exc).__name__}"
