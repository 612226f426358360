"""The console's entity detail (`d`, or enter on a group): every entity of one company, one row
each (Last success, Last run, Rows, Took, Next run), group by group, scrollable; under the
table, how the highlighted entity is kept current and its last error (two lines of it; the
whole text is under `e` on the overview). `escape` goes back to the overview.

The screen shows what the app gives it (`show`, after every poll and every tick): it reads
nothing itself, so it is as live as the overview and never queries the database twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from db.readmodel import ENTITY_ORDER, entity_state, summarize
from services.core.logs import redact
from services.model.entities import ENTITIES
from tui.cells import ENTITY_COLUMNS, entity_cells, one_line, state_text

__all__ = ["EntitiesScreen", "first_to_look_at"]

HOW = {"company": "the company's settings, read once a day", "cdc": "changes through Intuit's CDC",
       "swept": "outside Intuit's CDC: kept exact by a daily full listing"}


def _how(name: str) -> str:
    spec = ENTITIES[name]
    return HOW["company"] if spec.company else HOW["swept"] if spec.swept else HOW["cdc"]


def first_to_look_at(realm: dict[str, Any]) -> str | None:
    """The entity the detail opens on: the first failed, else never synced, else stale one."""
    summary = summarize("all", realm["entities"])
    return next(iter(summary.failed + summary.never + summary.stale), None)


class EntitiesScreen(Screen[None]):
    """Every entity of the company `realm` (a snapshot realm, as of `now`), opened on the entity
    `focus` (None: the first); the app keeps it current with `show`."""

    BINDINGS: ClassVar = [Binding("escape", "app.pop_screen", "Back")]
    DEFAULT_CSS = """
    EntitiesScreen { layout: vertical; }
    EntitiesScreen #entities-head { height: 1; padding: 0 1; background: $panel; }
    EntitiesScreen #entities { height: 1fr; }
    EntitiesScreen #entity-detail { height: 3; padding: 0 1; }
    """

    def __init__(self, realm: dict[str, Any], now: datetime, focus: str | None = None) -> None:
        super().__init__()
        self.realm_id: str = realm["realm_id"]
        self.focus_entity = focus
        self._latest: tuple[dict[str, Any] | None, datetime] = (realm, now)
        self._entities: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="entities-head")
        table: DataTable = DataTable(id="entities", cursor_type="row")
        for key, label, width in ENTITY_COLUMNS:
            table.add_column(label, key=key, width=width)
        previous = None
        for name in ENTITY_ORDER:
            group = ENTITIES[name].group
            table.add_row(Text(group if group != previous else "", style="bold"), Text(name),
                          *[Text("-")] * (len(ENTITY_COLUMNS) - 2), key=name)
            previous = group
        yield table
        yield Static("", id="entity-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#entities", DataTable).focus()
        self._paint()
        if self.focus_entity in ENTITY_ORDER:
            self.call_after_refresh(self._open_on, self.focus_entity)

    def _open_on(self, name: str) -> None:
        """The cursor on `name`, its group's first row at the top (once the table has a size)."""
        table = self.query_one("#entities", DataTable)
        group = ENTITIES[name].group
        table.move_cursor(row=ENTITY_ORDER.index(name), scroll=False)
        table.scroll_to(y=next(i for i, n in enumerate(ENTITY_ORDER) if ENTITIES[n].group == group),
                        animate=False)

    def show(self, realm: dict[str, Any] | None, now: datetime) -> None:
        """Show the realm of the newest snapshot (None: gone), every row updated in place; before
        the screen is mounted (a tick right after `push_screen`), on mount."""
        self._latest = (realm, now)
        if self.is_mounted:
            self._paint()

    def _paint(self) -> None:
        realm, now = self._latest
        head = Text()
        if realm is None:
            head.append(f"realm {self.realm_id} is no longer listed", style="yellow")
        else:
            head.append(one_line(realm["company_name"] or self.realm_id, 30), style="bold")
            head.append(f" · {len(realm['entities'])} entities: ")
            head.append_text(state_text(summarize("all", realm["entities"])))
        self.query_one("#entities-head", Static).update(head)
        self._entities = {e["entity"]: e for e in (realm or {}).get("entities", [])}
        table = self.query_one("#entities", DataTable)
        for name, ent in self._entities.items():
            for (key, _, _), cell in zip(ENTITY_COLUMNS[2:], entity_cells(ent, now), strict=True):
                table.update_cell(name, key, cell)
        self._show_detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        table = self.query_one("#entities", DataTable)
        if not 0 <= table.cursor_row < len(ENTITY_ORDER):
            return
        name = ENTITY_ORDER[table.cursor_row]
        ent = self._entities.get(name)
        detail = Text(f"{name}: {_how(name)}", style="dim")
        if ent is not None and ent["last_error"]:
            style = "red" if entity_state(ent) == "failed" else "yellow"
            detail.append("\n")
            detail.append(one_line(redact(ent["last_error"]), 2 * 76), style=style)
        self.query_one("#entity-detail", Static).update(detail)

