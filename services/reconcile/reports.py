"""QBO's Reports API, read the way an accountant reads it (FACTS §6.7).

- `fetch(client, name, start, end, ...)`: one report with explicit dates (Intuit's defaults differ
  per report). An answer that says "Unable to display more data" (Intuit's 400,000-cell limit) is
  fetched again in two halves of the period, recursively down to one day, for reports whose
  amounts add up over time (ProfitAndLoss and the other period reports); a balance report as of
  a date (TrialBalance, BalanceSheet, aging) cannot be split by period, so it is an error.
- `flatten(report)`: the recursive Header/Columns/Rows tree as rows: the section path above each
  row, the first cell's id and name (an account, customer or vendor), and one value per money
  column (Decimal; every cell is a string; "" is None). Summary rows are kept, marked "summary".
- `combine(rows)`: the rows of several periods of an additive report summed into one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from services.core.errors import FatalQBOError

__all__ = ["ReportRow", "ReportPart", "fetch", "flatten", "combine", "too_large", "TOO_LARGE", "ADDITIVE"]

TOO_LARGE = "Unable to display more data"  # Intuit's words (hotglue's "Too much data" is its own label)
ADDITIVE = frozenset({"ProfitAndLoss", "ProfitAndLossDetail", "GeneralLedger", "CashFlow", "TransactionList"})


class ReportClient(Protocol):
    def report(self, name: str, params: dict[str, str]) -> dict: ...


@dataclass(frozen=True)
class ReportRow:
    path: tuple[str, ...]
    account_id: str | None
    account_name: str | None
    row_type: str          # data | summary
    column: str
    value: Decimal | None


@dataclass(frozen=True)
class ReportPart:
    """One answer: the period it covers, the parameters sent and the report as QBO sent it."""

    start: date
    end: date
    params: dict[str, str]
    body: dict


def too_large(body: dict) -> bool:
    """True when the answer is Intuit's "Unable to display more data" instead of the report."""
    return TOO_LARGE in json.dumps(body, default=str)


def fetch(client: ReportClient, name: str, start: date, end: date, *, accounting_method: str = "Accrual",
          **extra: str) -> list[ReportPart]:
    """The report for [start, end] in as many parts as Intuit's size limit needs (see module docstring)."""
    params = {"start_date": start.isoformat(), "end_date": end.isoformat(),
              "accounting_method": accounting_method, **extra}
    body = client.report(name, params)
    if not too_large(body):
        return [ReportPart(start, end, params, body)]
    if name not in ADDITIVE:
        raise FatalQBOError(f"QuickBooks cannot return {name} as of {end}: it says the report is too large "
                            f"({TOO_LARGE}), and a balance report cannot be split by period")
    if start >= end:
        raise FatalQBOError(f"QuickBooks cannot return {name} even for the single day {end}: {TOO_LARGE}")
    middle = start + timedelta(days=(end - start).days // 2)
    return (fetch(client, name, start, middle, accounting_method=accounting_method, **extra)
            + fetch(client, name, middle + timedelta(days=1), end, accounting_method=accounting_method, **extra))


def _number(text: Any) -> Decimal | None:
    if text is None or text == "":
        return None
    try:
        return Decimal(str(text).replace(",", ""))
    except InvalidOperation:
        return None


def _columns(body: dict) -> list[tuple[str, str]]:
    """(title, type) per column; an untitled first column is the row label."""
    cols = ((body.get("Columns") or {}).get("Column")) or []
    return [(str(c.get("ColTitle") or c.get("ColType") or f"col{i}"), str(c.get("ColType") or "")) for i, c in
            enumerate(cols)]


def _cells(cells: list[dict], columns: list[tuple[str, str]], path: tuple[str, ...],
           row_type: str) -> Iterator[ReportRow]:
    if not cells:
        return
    first = cells[0]
    ident = first.get("id") or None
    label = first.get("value") or None
    for (title, kind), cell in zip(columns[1:], cells[1:]):
        if kind in ("Account", "Customer", "Vendor", "Employee", "tx_date", "txn_type", "doc_num", "name"):
            continue  # a label column, not an amount
        value = _number(cell.get("value"))
        yield ReportRow(path, ident, label, row_type, title, value)


def _rows(rows: list[dict], columns: list[tuple[str, str]], path: tuple[str, ...]) -> Iterator[ReportRow]:
    for row in rows:
        header = ((row.get("Header") or {}).get("ColData")) or []
        if header or row.get("type") == "Section" or "Rows" in row:
            title = (header[0].get("value") if header else None) or row.get("group") or ""
            inner = path + (str(title),)
            yield from _rows(((row.get("Rows") or {}).get("Row")) or [], columns, inner)
            summary = ((row.get("Summary") or {}).get("ColData")) or []
            yield from _cells(summary, columns, inner, "summary")
        else:
            yield from _cells(row.get("ColData") or [], columns, path, "data")


def flatten(body: dict) -> list[ReportRow]:
    """Every amount of the report as a row (see module docstring), in report order."""
    return list(_rows(((body.get("Rows") or {}).get("Row")) or [], _columns(body), ()))


def combine(parts: list[list[ReportRow]]) -> list[ReportRow]:
    """Rows of the same (path, id, name, type, column) summed over periods, in first-seen order."""
    sums: dict[tuple[tuple[str, ...], str | None, str | None, str, str], Decimal | None] = {}
    for rows in parts:
        for row in rows:
            key = (row.path, row.account_id, row.account_name, row.row_type, row.column)
            have = sums.get(key)
            if row.value is None:
                sums.setdefault(key, have)
            else:
                sums[key] = row.value if have is None else have + row.value
    return [ReportRow(path, ident, name, row_type, column, value)
            for (path, ident, name, row_type, column), value in sums.items()]
