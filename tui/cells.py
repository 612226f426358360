"""What the console's cells show: pure functions from read-model values (ISO times, states,
`db.readmodel.GroupSummary`) to `rich.text.Text`, styled for a 16-colour SSH terminal.

No widget here: `tui.app` and `tui.entities` put these cells in their tables, so a group row
on the overview and an entity row in the detail look the same wherever they appear.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text

from db.readmodel import GroupSummary, lease_overdue_s, percent_of, usage_level
from services.core.durations import span

__all__ = [
    "ago", "until", "countdown", "expiry", "token_status", "run_status", "one_line",
    "GROUP_COLUMNS", "state_text", "group_cells", "ENTITY_COLUMNS", "entity_cells", "books_line",
    "LEVEL_STYLES", "meter", "lease_expired", "lease_text", "events",
]

DAY = 86400.0


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def ago(value: str | None, now: datetime) -> str:
    """'5m ago' or 'never'."""
    when = _parse(value)
    if when is None:
        return "never"
    return f"{span((now - when).total_seconds())} ago"


def until(value: str | None, now: datetime) -> str:
    """'in 5m', 'due' or '-'."""
    when = _parse(value)
    if when is None:
        return "-"
    left = (when - now).total_seconds()
    return f"in {span(left)}" if left > 0 else "due"


def countdown(value: str | None, now: datetime, margin_s: float) -> Text:
    """The access-token countdown: mm:ss under an hour; yellow inside the margin, red expired."""
    when = _parse(value)
    if when is None:
        return Text("none", style="yellow")
    left = (when - now).total_seconds()
    if left <= 0:
        return Text("expired", style="bold red")
    s = int(left)
    text = f"{s // 60:02d}:{s % 60:02d}" if s < 3600 else span(left)
    return Text(text, style="yellow" if left < margin_s else "green")


def expiry(value: str | None, now: datetime) -> Text:
    """Refresh-token expiry: green beyond 30 days, yellow within 30, red within 7 or passed."""
    when = _parse(value)
    if when is None:
        return Text("-", style="dim")
    left = (when - now).total_seconds()
    if left <= 0:
        return Text("expired", style="bold red")
    style = "red" if left <= 7 * DAY else "yellow" if left <= 30 * DAY else "green"
    return Text(f"in {span(left)}", style=style)


def token_status(status: str) -> Text:
    if status == "active":
        return Text("active", style="green")
    if status == "needs_reauth":
        return Text("NEEDS REAUTH", style="bold white on red")
    return Text(status, style="dim")


def run_status(status: str | None) -> Text:
    if status is None:
        return Text("never", style="yellow")
    style = {"success": "green", "failed": "bold red", "running": "cyan", "skipped": "dim"}.get(status, "")
    return Text(status, style=style)


def one_line(text: str | None, width: int | None = None) -> str:
    flat = " ".join((text or "").split())
    if width is not None and len(flat) > width:
        return flat[: width - 1] + "…"
    return flat


# ---------------------------------------------------------------- entity tables

# (key, label, width) of the overview's one row per group and of the detail's one row per entity.
# At 80 columns: each column also takes 2 cells of padding, the vertical scrollbar 1.
GROUP_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("group", "Group", 9), ("state", "Entities", 26), ("success", "Oldest success", 14),
    ("rows", "Rows", 10), ("next", "Next run", 8))
ENTITY_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("group", "Group", 9), ("entity", "Entity", 13), ("success", "Last success", 12),
    ("status", "Last run", 8), ("rows", "Rows", 8), ("took", "Took", 6), ("next", "Next run", 8))
STATE_STYLES = {"failed": "bold red", "never": "yellow", "stale": "yellow", "ok": "green"}


def state_text(summary: GroupSummary) -> Text:
    """"1 failed: Bill · 2 never synced · 5 ok", each part in its state's colour."""
    text = Text()
    for i, (state, words) in enumerate(summary.parts()):
        if i:
            text.append(" · ")
        text.append(words, style=STATE_STYLES[state])
    return text


def group_cells(summary: GroupSummary, now: datetime) -> list[Text]:
    """The overview row of one group: name, its states, oldest success, rows, soonest next run."""
    state = state_text(summary)
    state.truncate(GROUP_COLUMNS[1][2], overflow="ellipsis")
    late = summary.never or summary.stale
    return [Text(summary.group), state,
            Text(ago(summary.oldest_success_at, now), style="yellow" if late else ""),
            Text(f"{summary.rows:,}", justify="right"), Text(until(summary.next_run_at, now))]


def entity_cells(entity: dict[str, Any], now: datetime) -> list[Text]:
    """The cells of one snapshot entity after its group and name: last success, last run, rows,
    took, next run."""
    success = Text(ago(entity["last_success_at"], now), style="yellow" if entity.get("stale") else "")
    duration = entity["duration_s"]
    took = "-" if duration is None else f"{duration:.1f}s" if duration < 100 else span(duration)
    return [success, run_status(entity["last_run_status"]), Text(f"{entity['rows']:,}", justify="right"),
            Text(took, justify="right"), Text(until(entity["next_run_at"], now))]


def books_line(books: dict[str, Any] | None, now: datetime) -> Text:
    """The selected company's last reconciliation with QuickBooks, for the detail line: what
    drifted first and how many more, and the key that repairs it."""
    if books is None:
        return Text("books: not reconciled yet (c to reconcile)", style="dim")
    when = ago(books["checked_at"], now)
    if books["status"] == "ok":
        return Text(f"books match QuickBooks (reconciled {when})", style="green")
    first = books["drifts"][0]
    more = f" +{len(books['drifts']) - 1}" if len(books["drifts"]) > 1 else ""
    what = one_line(first["detail"] or f"{first['check']} {first['subject']}", 44)
    style = "bold red" if books["status"] == "error" else "yellow"
    return Text(f"books {books['status'].upper()}: {what}{more} · c to repair", style=style)


# The look of a health level (0 ok, 1 warning, 2 critical), as the top bar shows it.
LEVEL_STYLES = ("", "bold black on yellow", "bold white on red")


def meter(usage: dict[str, Any] | None) -> Text:
    """The month's metered calls: 'API 12,345 / 500,000 · proj 40,100 (8 %)', styled by
    `db.readmodel.usage_level` (the thresholds `qbsync status` exits on); '· governor on' while
    syncs are slowed down. Empty when the snapshot has no usage."""
    if not usage:
        return Text()
    text = Text(f"API {usage['calls']:,} / {usage['limit']:,} · proj {usage['projected']:,} "
                f"({percent_of(usage['projected'], usage['limit'])} %)", style=LEVEL_STYLES[usage_level(usage)])
    if usage["governed"]:
        text.append(" · ")
        text.append("governor on", style="bold yellow")
    return text


def lease_expired(realm: dict[str, Any], now: datetime) -> bool:
    """The realm's lease is past its expiry: its holder stopped renewing, nobody took it over yet."""
    return lease_overdue_s(realm.get("lease"), now) is not None


def lease_text(realm: dict[str, Any], now: datetime, width: int = 40) -> Text:
    """Which sync process works the realm, in at most `width` cells (the holder is what gets
    cut): 'worked by vps1:4242/w1 (schedule)'; a lease past its expiry in yellow, 'lease of
    vps1:4242/w1 (schedule) expired 40s ago: a sync process died?' (not taken over yet); empty
    when nobody works it."""
    lease = realm.get("lease")
    if not lease:
        return Text()
    work = f" ({one_line(lease['work'], 12)})"
    overdue = lease_overdue_s(lease, now)
    if overdue is not None:
        tail = f"{work} expired {span(overdue)} ago"
        text = Text(f"lease of {one_line(lease['holder'], max(8, width - 9 - len(tail)))}{tail}", style="bold yellow")
        more = ": a sync process died?"
        if len(text.plain) + len(more) <= width:
            text.append(more, style="yellow")
        return text
    return Text(f"worked by {one_line(lease['holder'], max(8, width - 10 - len(work)))}{work}", style="cyan")


def events(snapshot: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The overview's events, newest first: the snapshot's recent errors and every realm's lease
    takeovers (service "lease", id "lease-<n>"), in the errors' shape so `e` shows either."""
    if not snapshot:
        return []
    merged = list(snapshot.get("recent_errors", []))
    for realm in snapshot.get("realms", []):
        for t in realm.get("takeovers", []):
            merged.append({"id": f"lease-{t['id']}", "at": t["at"], "service": "lease", "realm_id": realm["realm_id"],
                           "entity": None, "code": None,
                           "message": f"taken over from {t['from_holder']} by {t['to_holder']}"
                                      f" (the lease of {t['from_holder']} had expired at {t['expired_at']})"})
    return sorted(merged, key=lambda e: datetime.fromisoformat(e["at"]), reverse=True)
