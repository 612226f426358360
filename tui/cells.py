"""What the console's cells show: pure functions from read-model values (ISO times, states,
`db.readmodel.GroupSummary`) to `rich.text.Text`, styled for a 16-colour SSH terminal.

No widget here: `tui.app` and `tui.entities` put these cells in their tables, so a group row
on the overview and an entity row in the detail look the same wherever they appear.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text

from db.readmodel import GroupSummary
from services.core.durations import span

__all__ = [
    "ago", "until", "countdown", "expiry", "token_status", "run_status", "one_line",
    "GROUP_COLUMNS", "state_text", "group_cells", "ENTITY_COLUMNS", "entity_cells",
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
