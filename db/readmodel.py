"""The console's read model: one snapshot of every realm's health, shared by `qbsync tui`
and `qbsync status` (SPEC section 4), plus `health()` that turns it into an exit code.

Cheap by construction, whatever the size of the synced data: row counts come from
`sync_state.row_count` (never `count(*)` on an entity table), the duration of the last run
is one primary-key lookup per (realm, entity) through `sync_state.last_run_id`, and the
newest errors are read through the `errors (at DESC)` index. Token values are never
selected: only their status and expiry times leave this module. The same snapshot carries
the month's metered API calls (`db.usage.usage_report`, SPEC section 12) and who holds each
realm's lease (SPEC section 13), read in the caller's connection so all of it is one view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from db.reconcile import latest_results
from db.usage import usage_report
from services.core.durations import span
from services.core.logs import redact
from services.model.entities import ENTITIES, ENTITY_NAMES, GROUPS

__all__ = [
    "ENTITY_ORDER", "GROUPS", "RECENT_ERRORS", "status_snapshot", "health", "entity_state",
    "GroupSummary", "summarize", "group_summaries", "sync_request_states", "READ_MODEL_QUERIES",
    "USAGE_WARNING_PERCENT", "USAGE_CRITICAL_PERCENT", "usage_level", "percent_of", "TAKEOVERS_SHOWN",
    "TAKEOVERS_WINDOW", "GOVERNOR_EFFECT", "lease_overdue_s",
]

# SPEC section 4: every synced entity, by its QBO name, in the model's order (grouped, see GROUPS).
ENTITY_ORDER = ENTITY_NAMES
RECENT_ERRORS = 20
EXPIRY_WARNING_DAYS = 30
# SPEC section 12: a month-end projection past these shares of QBO_MONTHLY_CALL_LIMIT warns / is critical.
USAGE_WARNING_PERCENT = 80
USAGE_CRITICAL_PERCENT = 95
GOVERNOR_EFFECT = "scheduled syncs daily, webhooks applied through CDC"
# SPEC section 13: each realm lists its newest lease takeovers, at most this many, this recent.
TAKEOVERS_SHOWN = 5
TAKEOVERS_WINDOW = timedelta(hours=24)

# Every query one snapshot runs, by name (the benchmark EXPLAINs exactly these).
READ_MODEL_QUERIES: dict[str, str] = {
    "realms": """
        SELECT coalesce(t.realm_id, c.id) AS realm_id, c.name, c.environment,
               t.status, t.is_active, t.expires_at, t.refresh_token_expires_at,
               t.refresh_token_hard_expires_at, t.last_refreshed_at, t.last_error
          FROM quickbooks.tokens t
          FULL OUTER JOIN quickbooks.companies c ON c.id = t.realm_id
         ORDER BY lower(coalesce(c.name, '')), coalesce(t.realm_id, c.id)""",
    "entities": """
        SELECT s.realm_id, s.entity, s.last_success_at, s.last_run_status, s.row_count,
               s.last_error, s.next_run_at, r.started_at, r.finished_at, r.status
          FROM quickbooks.sync_state s
          LEFT JOIN quickbooks.sync_runs r ON r.id = s.last_run_id""",
    "errors": """
        SELECT id, at, service, realm_id, entity, code, message
          FROM quickbooks.errors
         ORDER BY at DESC, id DESC
         LIMIT %(limit)s""",
    # One row per realm being worked right now (holders delete theirs when done).
    "leases": """
        SELECT realm_id, holder, work, acquired_at, renewed_at, expires_at
          FROM quickbooks.realm_leases""",
    # The newest takeovers per realm within a day of the newest one, through the (at) index;
    # status_snapshot keeps those within TAKEOVERS_WINDOW of its `now` (a superset: now >= max(at)).
    "takeovers": f"""
        SELECT id, at, realm_id, from_holder, to_holder, expired_at
          FROM (SELECT *, row_number() OVER (PARTITION BY realm_id ORDER BY at DESC, id DESC) AS n
                  FROM quickbooks.lease_takeovers
                 WHERE at > (SELECT max(at) FROM quickbooks.lease_takeovers)
                            - interval '{TAKEOVERS_WINDOW.total_seconds():.0f} seconds') t
         WHERE n <= {TAKEOVERS_SHOWN}
         ORDER BY at DESC, id DESC""",
}


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset, whatever the session's TimeZone."""
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


def _reconciliation(last: dict[str, Any] | None) -> dict[str, Any] | None:
    """SPEC section 4/11: `{"checked_at", "status", "drifts"}` of the realm's last reconciliation
    (None before the first); amounts as text, so no digit is lost in JSON."""
    if last is None:
        return None
    def text(value: Any) -> str | None:
        return None if value is None else str(value)
    return {"checked_at": _iso(last["checked_at"]), "status": last["status"],
            "drifts": [{"check": d["check"], "subject": d["subject"], "status": d["status"],
                        "expected": text(d["expected"]), "actual": text(d["actual"]),
                        "difference": text(d["difference"]), "detail": redact(d["detail"]) if d["detail"] else None}
                       for d in last["drifts"]]}


def _relisted(entity: str) -> timedelta:
    """The extra age an entity read on its own cadence may have (CompanyInfo, the swept ones:
    a day) before it counts as stale; scheduled runs cover the CDC entities."""
    spec = ENTITIES.get(entity)
    return (spec.cadence if spec else None) or timedelta(0)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _usage(report: Any) -> dict[str, Any]:
    """SPEC section 4/12: `{"month", "calls", "limit", "projected", "governed"}` of a
    `db.usage.UsageReport`, plus "reserve_percent" and "by_kind" (the per-realm split is
    `qbsync usage`'s: thousands of realms would swamp a status object)."""
    return {"month": report.month, "calls": report.calls, "limit": report.limit, "projected": report.projected,
            "governed": report.governed, "reserve_percent": report.reserve_percent, "by_kind": report.by_kind}


def _lease(row: tuple | None, now: datetime) -> dict[str, Any] | None:
    """SPEC section 13: `{"holder", "work", "expires_at", "expired"}` (plus "acquired_at",
    "renewed_at") of the realm's lease, None when no process works it."""
    if row is None:
        return None
    _realm, holder, work, acquired, renewed, expires = row
    return {"holder": holder, "work": work, "expires_at": _iso(expires), "expired": expires <= now,
            "acquired_at": _iso(acquired), "renewed_at": _iso(renewed)}


def status_snapshot(conn: psycopg.Connection, now: datetime | None = None, *,
                    stale_after: timedelta = timedelta(hours=2),
                    errors_limit: int = RECENT_ERRORS, call_limit: int | None = None,
                    call_reserve_percent: float = 5.0) -> dict[str, Any]:
    """The SPEC section 4 status object without "processes", from a few indexed queries.

    Guarantees: every SPEC key is present; realms are sorted by company name; each realm
    lists ENTITY_ORDER entities (never-synced ones with nulls and rows 0); times are ISO
    8601 with offset; no token value and no unredacted secret is returned. Extra keys for
    the console: realm "is_active"; entity "group" (one of GROUPS, see `group_summaries`),
    "next_run_at", "last_run_started_at", "last_run_finished_at", "duration_s", "stale"
    (never synced, or last success older than `stale_after`, 2 x SYNC_INTERVAL_MINUTES by
    convention); error "id", "code"; top-level "generated_at".
    Each realm has "lease" (see `_lease`; "expired" as of `now`) and "takeovers" (its newest
    TAKEOVERS_SHOWN lease takeovers within TAKEOVERS_WINDOW of `now`, newest first:
    `{"at", "from_holder", "to_holder", "expired_at", "id"}`).
    Top-level "usage": this month's metered calls against `call_limit` (QBO_MONTHLY_CALL_LIMIT)
    with `call_reserve_percent` (QBO_CALL_RESERVE_PERCENT), projected as of `now` (see `_usage`);
    None when `call_limit` is None (the caller did not ask).
    """
    now = _now(now)
    realms_rows = conn.execute(READ_MODEL_QUERIES["realms"]).fetchall()
    entity_rows = conn.execute(READ_MODEL_QUERIES["entities"]).fetchall()
    error_rows = conn.execute(READ_MODEL_QUERIES["errors"], {"limit": errors_limit}).fetchall()
    leases = {row[0]: row for row in conn.execute(READ_MODEL_QUERIES["leases"]).fetchall()}
    takeovers: dict[str, list[dict[str, Any]]] = {}
    for tid, at, realm_id, from_holder, to_holder, expired_at in conn.execute(READ_MODEL_QUERIES["takeovers"]):
        if now - at <= TAKEOVERS_WINDOW:
            takeovers.setdefault(realm_id, []).append({
                "at": _iso(at), "from_holder": from_holder, "to_holder": to_holder,
                "expired_at": _iso(expired_at), "id": tid})
    reconciled = latest_results(conn)
    usage = None if call_limit is None else _usage(
        usage_report(conn, limit=call_limit, reserve_percent=call_reserve_percent, now=now))

    by_realm: dict[str, dict[str, tuple]] = {}
    for row in entity_rows:
        by_realm.setdefault(row[0], {})[row[1]] = row

    realms = []
    for (realm_id, name, environment, status, is_active, expires_at, refresh_expires,
         hard_expires, last_refreshed, last_error) in realms_rows:
        entities = []
        states = by_realm.get(realm_id, {})
        for entity in ENTITY_ORDER:
            state = states.get(entity)
            if state is None:
                entities.append({
                    "entity": entity, "group": ENTITIES[entity].group, "last_success_at": None,
                    "last_run_status": None, "rows": 0, "last_error": None, "next_run_at": None,
                    "last_run_started_at": None, "last_run_finished_at": None, "duration_s": None, "stale": True,
                })
                continue
            (_r, _e, last_success, run_status, row_count, ent_error, next_run,
             started, finished, _run_row_status) = state
            duration = None
            if started is not None and finished is not None:
                duration = round((finished - started).total_seconds(), 3)
            entities.append({
                "entity": entity,
                "group": ENTITIES[entity].group,
                "last_success_at": _iso(last_success),
                "last_run_status": run_status,
                "rows": int(row_count or 0),
                "last_error": redact(ent_error) if ent_error else None,
                "next_run_at": _iso(next_run),
                "last_run_started_at": _iso(started),
                "last_run_finished_at": _iso(finished),
                "duration_s": duration,
                "stale": last_success is None or now - last_success > stale_after + _relisted(entity),
            })
        realms.append({
            "realm_id": realm_id,
            "company_name": name,
            "environment": environment or "production",
            "is_active": bool(is_active) if is_active is not None else False,
            "token": {
                # A company row without any token row has nothing to sync with.
                "status": status or "disconnected",
                "access_expires_at": _iso(expires_at),
                "refresh_expires_at": _iso(refresh_expires),
                "hard_expires_at": _iso(hard_expires),
                "last_refreshed_at": _iso(last_refreshed),
                "last_error": redact(last_error) if last_error else None,
            },
            "entities": entities,
            "reconciliation": _reconciliation(reconciled.get(realm_id)),
            "lease": _lease(leases.get(realm_id), now),
            "takeovers": takeovers.get(realm_id, []),
        })

    recent_errors = [
        {"at": _iso(at), "service": service, "realm_id": realm_id, "entity": entity,
         "message": redact(message), "id": err_id, "code": code}
        for err_id, at, service, realm_id, entity, code, message in error_rows
    ]
    return {"generated_at": _iso(now), "realms": realms, "recent_errors": recent_errors, "usage": usage}


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# An entity's state at a glance, best first (what `entity_state` returns).
ENTITY_STATES = ("ok", "stale", "never", "failed")


def entity_state(entity: dict[str, Any]) -> str:
    """One snapshot entity's state: "failed" (its last run failed), "never" (never succeeded),
    "stale" (last success older than the snapshot's `stale_after`) or "ok"."""
    if entity["last_run_status"] == "failed":
        return "failed"
    if entity["last_success_at"] is None:
        return "never"
    return "stale" if entity.get("stale") else "ok"


@dataclass(frozen=True)
class GroupSummary:
    """One GROUPS entry of a realm, summarized: which entities are in each state, total rows,
    the oldest last success (None while any entity never succeeded) and the soonest next run."""

    group: str
    entities: tuple[str, ...]
    failed: tuple[str, ...]
    never: tuple[str, ...]
    stale: tuple[str, ...]
    rows: int
    oldest_success_at: str | None
    next_run_at: str | None

    @property
    def ok(self) -> int:
        return len(self.entities) - len(self.failed) - len(self.never) - len(self.stale)

    @property
    def worst(self) -> str:
        """The worst state of its entities (one of ENTITY_STATES)."""
        return next((state for state, _ in self.parts()), "ok")

    def parts(self) -> list[tuple[str, str]]:
        """(state, text) worst first, for the states present: ("failed", "1 failed: Bill"),
        ("never", "2 never synced"), ("stale", "1 stale"), ("ok", "5 ok"). Failed entities
        are named: they are what an operator acts on."""
        parts = []
        if self.failed:
            parts.append(("failed", f"{len(self.failed)} failed: {', '.join(self.failed)}"))
        if self.never:
            parts.append(("never", f"{len(self.never)} never synced"))
        if self.stale:
            parts.append(("stale", f"{len(self.stale)} stale"))
        if self.ok:
            parts.append(("ok", f"{self.ok} ok"))
        return parts


def summarize(group: str, entities: list[dict[str, Any]]) -> GroupSummary:
    """`entities` (snapshot entities, at least one) summarized under the name `group`."""
    by_state: dict[str, list[str]] = {state: [] for state in ENTITY_STATES}
    for ent in entities:
        by_state[entity_state(ent)].append(ent["entity"])
    successes = [e["last_success_at"] for e in entities]
    next_runs = [e["next_run_at"] for e in entities if e["next_run_at"]]
    return GroupSummary(
        group=group,
        entities=tuple(e["entity"] for e in entities),
        failed=tuple(by_state["failed"]),
        never=tuple(by_state["never"]),
        stale=tuple(by_state["stale"]),
        rows=sum(e["rows"] for e in entities),
        oldest_success_at=None if None in successes else min(successes, key=datetime.fromisoformat),
        next_run_at=min(next_runs, key=datetime.fromisoformat) if next_runs else None,
    )


def group_summaries(realm: dict[str, Any]) -> list[GroupSummary]:
    """The realm's entities (a `status_snapshot` realm) summarized per group, in GROUPS order:
    the one summary `qbsync status` and the console show. Groups without entities are left out."""
    summaries = []
    for group in GROUPS:
        members = [e for e in realm["entities"] if e["group"] == group]
        if members:
            summaries.append(summarize(group, members))
    return summaries


def _some(names: list[str], shown: int = 3) -> str:
    """'Bill, Invoice, Item and 4 more': a list of entity names that stays one short line."""
    if len(names) <= shown + 1:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def lease_overdue_s(lease: dict[str, Any] | None, now: datetime) -> float | None:
    """Seconds since a snapshot lease expired (its holder stopped renewing and nobody took it
    over yet); None while it is live or when nobody works the realm."""
    expires = _parse(lease["expires_at"]) if lease else None
    if expires is None or expires > now:
        return None
    return (now - expires).total_seconds()


def percent_of(n: int, of: int) -> str:
    """100 * n / of as it should read next to a threshold: whole percents rounded down ("82"),
    one decimal just past a threshold ("80.4", never a warning that reads "80 %")."""
    if of <= 0:
        return "-"
    value = 100 * n / of
    whole = math.floor(value)
    return f"{value:.1f}" if whole in (USAGE_WARNING_PERCENT, USAGE_CRITICAL_PERCENT) and value > whole else str(whole)


def usage_level(usage: dict[str, Any] | None) -> int:
    """The month's metered calls (a snapshot's "usage") as a health level: 2 when the projection
    is past USAGE_CRITICAL_PERCENT of the limit, 1 past USAGE_WARNING_PERCENT or while the
    governor is on (syncs slowed down), else 0 (also when usage was not read)."""
    if not usage or usage["limit"] <= 0:
        return 0
    share = 100 * usage["projected"] / usage["limit"]
    if share > USAGE_CRITICAL_PERCENT:
        return 2
    return 1 if share > USAGE_WARNING_PERCENT or usage["governed"] else 0


def _usage_reason(usage: dict[str, Any]) -> str:
    """'API calls: 412,000 projected this month of 500,000 (82 %): see qbsync usage'; with the
    governor on, what it does instead of the pointer."""
    line = (f"API calls: {usage['projected']:,} projected this month of {usage['limit']:,} "
            f"({percent_of(usage['projected'], usage['limit'])} %)")
    if usage["governed"]:
        return (f"{line}; {usage['calls']:,} made, under {usage['reserve_percent']:g} % of the limit left: "
                f"governor on, {GOVERNOR_EFFECT}")
    return f"{line}: see qbsync usage"


def health(snapshot: dict[str, Any], processes: list[dict[str, Any]], now: datetime | None = None, *,
           sync_interval_minutes: int = 60, token_margin_minutes: int = 10,
           token_check_interval_seconds: int = 60) -> tuple[int, list[str]]:
    """(exit code, reasons) like a monitoring check: 0 healthy, 1 warning, 2 critical.

    Critical: a realm needs_reauth, a FATAL process, an entity whose last run failed, a
    reconciliation that failed. A reconciliation that found drift is a warning.
    Warning: an active realm's access token has less than the refresh margin left and
    was not refreshed within the last two token checks (tokenup is not keeping up); the
    refresh token's idle or hard expiry is within 30 days; entities never synced or whose
    last success is older than 2 x SYNC_INTERVAL_MINUTES (one line per realm for each of the
    two, naming the entities); a process that is not RUNNING/STARTING; no company connected.
    Disconnected realms are reported as such but never raise the level (the operator revoked
    them on purpose).
    Metered calls (the snapshot's "usage", see `usage_level`): a month-end projection past
    USAGE_CRITICAL_PERCENT of the limit is critical, past USAGE_WARNING_PERCENT (or the governor
    on) a warning. A realm's lease past its expiry (its holder stopped renewing and nobody took
    it over yet) is a warning.
    Each reason is one line naming the realm and what to do.
    """
    now = _now(now)
    critical: list[str] = []
    warning: list[str] = []
    margin = timedelta(minutes=token_margin_minutes)
    recent_refresh = timedelta(seconds=2 * token_check_interval_seconds)
    stale_after = timedelta(minutes=2 * sync_interval_minutes)
    expiry_horizon = timedelta(days=EXPIRY_WARNING_DAYS)

    if not snapshot.get("realms"):
        warning.append("no company connected: run qbsync connect")
    for realm in snapshot.get("realms", []):
        rid = realm["realm_id"]
        label = realm.get('company_name') or f"realm {rid}"
        overdue = lease_overdue_s(realm.get("lease"), now)
        if overdue is not None:
            warning.append(f"realm {rid}: lease of {realm['lease']['holder']} expired "
                           f"{int(overdue)} s ago (a sync process died?)")
        token = realm["token"]
        status = token["status"]
        if status == "needs_reauth":
            critical.append(f"{label}: needs re-authorization: run qbsync connect --realm-id {rid}")
            continue
        if status != "active":
            continue
        access = _parse(token["access_expires_at"])
        refreshed = _parse(token["last_refreshed_at"])
        if access is None or access - now < margin:
            if refreshed is None or now - refreshed >= recent_refresh:
                left = "no access token" if access is None else (
                    f"access token expired {span(now - access)} ago" if access <= now
                    else f"access token expires in {span(access - now)}")
                warning.append(f"{label}: {left} and was not refreshed: check the tokenup process")
        for key, what in (("refresh_expires_at", "refresh token idle expiry"),
                          ("hard_expires_at", "refresh token hard expiry")):
            when = _parse(token[key])
            if when is not None and when - now <= expiry_horizon:
                verb = "passed" if when <= now else f"in {span(when - now)}"
                warning.append(f"{label}: {what} {verb}: run qbsync connect --realm-id {rid}")
        never: list[str] = []
        stale: list[tuple[str, timedelta]] = []
        for ent in realm["entities"]:
            name = ent["entity"]
            if ent["last_run_status"] == "failed":
                msg = (ent.get("last_error") or "no error recorded").splitlines()[0][:200]
                critical.append(f"{label}: {name} sync failed: {msg}")
                continue
            last = _parse(ent["last_success_at"])
            if last is None:
                never.append(name)
            elif now - last > stale_after + _relisted(name):
                stale.append((name, now - last))
        if len(never) == 1:
            warning.append(f"{label}: {never[0]} never synced")
        elif never:
            warning.append(f"{label}: {len(never)} entities never synced: {_some(never)}")
        if len(stale) == 1:
            warning.append(f"{label}: {stale[0][0]} last synced {span(stale[0][1])} ago (stale)")
        elif stale:
            oldest = max(age for _, age in stale)
            warning.append(f"{label}: {len(stale)} entities last synced up to {span(oldest)} ago (stale): "
                           f"{_some([name for name, _ in stale])}")
        books = realm.get("reconciliation")
        if books and books["status"] != "ok":
            first = books["drifts"][0]
            what = first["detail"] or f"{first['check']} {first['subject']}"
            if books["status"] == "error":
                critical.append(f"{label}: reconciliation failed: {what}")
            else:
                more = f" (and {len(books['drifts']) - 1} more)" if len(books["drifts"]) > 1 else ""
                warning.append(f"{label}: copy differs from QuickBooks: {what}{more}: see qbsync reconcile")
    usage = snapshot.get("usage")
    level = usage_level(usage)
    if usage and level:
        (critical if level == 2 else warning).append(_usage_reason(usage))
    for proc in processes:
        state = str(proc.get("state", "")).upper()
        if state == "FATAL":
            critical.append(f"process {proc['name']} is FATAL: see logs/{proc['name']}.err.log")
        elif state not in ("RUNNING", "STARTING"):
            warning.append(f"process {proc['name']} is {state}")
    if critical:
        return 2, critical + warning
    if warning:
        return 1, warning
    return 0, []


def sync_request_states(conn: psycopg.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """{id: {"status", "started_at", "finished_at", "error"}} for the given request ids."""
    if not ids:
        return {}
    rows = conn.execute(
        "SELECT id, status, started_at, finished_at, error FROM quickbooks.sync_requests"
        " WHERE id = ANY(%s)", (list(ids),)).fetchall()
    return {int(r[0]): {"status": r[1], "started_at": _iso(r[2]), "finished_at": _iso(r[3]),
                        "error": redact(r[4]) if r[4] else None} for r in rows}
