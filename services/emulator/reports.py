"""The emulator's reports, computed from its own documents by services.emulator.books' postings.

`GET /v3/company/{realm}/reports/{name}` for TrialBalance, ProfitAndLoss, BalanceSheet,
AgedReceivables and AgedPayables, shaped as Intuit's (shared/qbo/samples/report_*.json):
`Header`, `Columns.Column[]`, recursive `Rows.Row[]` of Section rows (Header, Rows, Summary,
`type`, `group`) and Data rows (`ColData`, `type`), every cell a string ("1234.56", "-100.00",
"" for nothing), the first cell of an account row carrying the Account id (a customer's or
vendor's on aging rows).

- `Journal`: what reports read, kept current by the realm's EntityStore observers (and fed by
  generation), so a report never re-reads the documents: net postings per TxnDate per account
  (debits positive), the last known chart (an account is never forgotten, so history posted
  to it keeps its name), the items' account refs that postings resolve item lines through
  (with the documents on each item: when an item's account refs change, those documents are
  posted again), and for aging every Invoice / Bill (date, due date, party, total) with the
  Payment / BillPayment amounts applied to it and their dates. Deleted and vanished documents
  leave it; voided ones post nothing (their amounts are zero).
- `run(company, name, params, now=, config=)`: one report body; `ReportError` for a parameter
  the emulator refuses (400). Rules:
  - a document counts on its TxnDate: balance figures take every document dated on or before
    the as-of date (`end_date`; aging: `report_date`, else `end_date`), period figures those
    from `start_date` to `end_date`; omitted dates mean this month to date (DateMacro
    "this month-to-date").
  - fiscal year close, as QBO's "electronic swap": TrialBalance and BalanceSheet show income
    and expense accounts from the start of the fiscal year holding the as-of date
    (CompanyInfo.FiscalYearStartMonth), earlier years' net income is in Retained Earnings;
    the BalanceSheet's Net Income row is the fiscal year to date.
  - `accounting_method=Cash` is refused: cash basis needs QBO's proration of every payment
    over the lines of what it pays (income, discounts, tax), which the emulator does not model.
  - `summarize_column_by`: Total, or Month for ProfitAndLoss (a column per month, then Total)
    and BalanceSheet (a column per month end, no Total); TrialBalance and aging: Total only.
  - aging: open amount as of the date = TotalAmt - the settlement lines dated on or before
    it; buckets by days past DueDate (TxnDate without one) at the report date
    (`aging_method=Current`: at today), `aging_period` (30) days each, `num_periods` (4), the
    last one "N and over". Only invoices (bills) are aged: credit memos, vendor credits and
    unapplied payments are not in the emulator's aging (QBO lists them as negative amounts),
    so the totals equal the sum of open invoice (bill) balances.
  - `report_adjustments` (State config, see `adjustments`): amounts added to one account's
    (customer's, vendor's) row of one report, the report's own totals following its rows.
  - a body of more than `report_cell_limit` cells (ColData entries in Rows) is not served:
    HTTP 200 with the same Header (Option NoReportData "true") and Columns, and one Data row
    whose first cell reads Intuit's message `TOO_BIG`.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import orjson

from services.emulator.books import ITEM_ACCOUNT_KEYS, POSTING, links, postings, txn_date
from services.emulator.fake import ZERO
from services.emulator.jsontext import fmt_date, fmt_ts, money
from services.emulator.store import EntityStore

__all__ = ["Journal", "ReportError", "run", "adjustments", "REPORTS", "TOO_BIG", "CELL_LIMIT"]

REPORTS = ("TrialBalance", "ProfitAndLoss", "BalanceSheet", "AgedReceivables", "AgedPayables")
TOO_BIG = "Unable to display more data. Please reduce the date range."
CELL_LIMIT = 400_000  # Intuit's cap on one report answer
_NAMES = {name.lower(): name for name in REPORTS}
_FILTERS = ("customer", "vendor", "class", "department", "item", "account", "source_account", "employee")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OPEN = {"Invoice": "CustomerRef", "Bill": "VendorRef"}  # aged document -> its party
_SETTLED = {"Payment": "Invoice", "BillPayment": "Bill"}  # settlement -> the aged document it pays
_WATCHED = POSTING | {"Item", "Account"}
_ITEM_DETAILS = ("SalesItemLineDetail", "ItemBasedExpenseLineDetail")  # the lines postings resolve by item
_PL_TYPES = ("Income", "Cost of Goods Sold", "Expense", "Other Income", "Other Expense")
_CREDIT_TYPES = frozenset({"Accounts Payable", "Credit Card", "Other Current Liability", "Long Term Liability",
                           "Equity", "Income", "Other Income"})
_BY_CLASSIFICATION = {"Asset": "Other Current Asset", "Liability": "Other Current Liability", "Equity": "Equity",
                      "Revenue": "Income", "Expense": "Expense"}
_TYPE_ORDER = ("Bank", "Accounts Receivable", "Other Current Asset", "Fixed Asset", "Other Asset", "Accounts Payable",
               "Credit Card", "Other Current Liability", "Long Term Liability", "Equity", *_PL_TYPES)


class ReportError(Exception):
    """A refused report request: `detail` says why, `element` names the parameter."""

    def __init__(self, detail: str, element: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.element = element


# ---- the journal ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What reports show of an account: names, type (`kind`: AccountType, or one derived from
    the Classification for a type the layout does not know), parent, sub-type."""

    id: str
    name: str
    full_name: str
    kind: str
    sub_type: str
    parent: str | None

    @staticmethod
    def of(obj: dict[str, Any]) -> AccountInfo:
        kind = str(obj.get("AccountType", ""))
        if kind not in _TYPE_ORDER:
            kind = _BY_CLASSIFICATION.get(str(obj.get("Classification", "")), "Other Current Asset")
        name = str(obj.get("Name", obj.get("Id")))
        parent = (obj.get("ParentRef") or {}).get("value")
        return AccountInfo(str(obj["Id"]), name, str(obj.get("FullyQualifiedName", name)), kind,
                           str(obj.get("AccountSubType", "")), None if parent is None else str(parent))

    @staticmethod
    def unknown(aid: str) -> AccountInfo:
        """An account posted to that the chart never had (only a vanished one)."""
        return AccountInfo(aid, aid, aid, "Other Current Asset", "", None)


@dataclass(frozen=True, slots=True)
class OpenDoc:
    """An Invoice or Bill as aging reads it."""

    date: str
    due: str
    party: str
    party_name: str
    total: Decimal


class Journal:
    """A realm's posted amounts and open documents for reports (see module docstring), over
    the realm's `stores` (read only to post an item's documents again)."""

    def __init__(self, stores: Mapping[str, EntityStore]) -> None:
        self.stores = stores
        self.days: dict[str, dict[str, Decimal]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.by_item: dict[str, dict[str, set[str]]] = {}  # item id -> entity -> ids of the documents on it
        self.accounts: dict[str, AccountInfo] = {}
        self.docs: dict[str, dict[str, OpenDoc]] = {entity: {} for entity in _OPEN}
        self.applied: dict[str, dict[str, dict[str, tuple[str, Decimal]]]] = {entity: {} for entity in _OPEN}

    def add(self, entity: str, obj: dict[str, Any], sign: int = 1) -> None:
        """Take `obj` in (`sign` 1) or out again (-1). Items and accounts are only ever taken in."""
        if obj.get("status") == "Deleted":
            return
        oid = str(obj.get("Id"))
        if entity == "Item":
            if sign > 0:
                self.items[oid] = {key: obj[key] for key in ITEM_ACCOUNT_KEYS if key in obj}
            return
        if entity == "Account":
            if sign > 0:
                self.accounts[oid] = AccountInfo.of(obj)
            return
        when = txn_date(obj)
        if entity in POSTING:
            day = self.days.setdefault(when, {})
            for account, amount in postings(entity, obj, self.items):
                day[account] = day.get(account, ZERO) + (amount if sign > 0 else -amount)
            for line in obj.get("Line") or ():
                item = next((line[d]["ItemRef"].get("value") for d in _ITEM_DETAILS if "ItemRef" in line.get(d, ())),
                            None)
                if item is not None:
                    on_item = self.by_item.setdefault(str(item), {}).setdefault(entity, set())
                    if sign > 0:
                        on_item.add(oid)
                    else:
                        on_item.discard(oid)
        if entity in _OPEN:
            if sign > 0:
                ref = obj.get(_OPEN[entity]) or {}
                self.docs[entity][oid] = OpenDoc(when, str(obj.get("DueDate") or when), str(ref.get("value", "")),
                                                 str(ref.get("name", "")), money(obj.get("TotalAmt") or 0))
            else:
                self.docs[entity].pop(oid, None)
        elif entity in _SETTLED:
            target = _SETTLED[entity]
            applied = self.applied[target]
            for (txn_type, txn_id), amount in links(entity, obj).items():
                if txn_type != target:
                    continue
                if sign > 0:
                    applied.setdefault(txn_id, {})[oid] = (when, amount)
                elif txn_id in applied:
                    applied[txn_id].pop(oid, None)
                    if not applied[txn_id]:
                        del applied[txn_id]

    def observe(self, entity: str, old: bytes | None, new: bytes | None) -> None:
        """An EntityStore observer: a record's served text went from `old` to `new`."""
        if entity not in _WATCHED:
            return
        before = orjson.loads(old) if old else None
        after = orjson.loads(new) if new else None
        if entity == "Item" and before is not None and after is not None and any(
                before.get(key) != after.get(key) for key in ITEM_ACCOUNT_KEYS):
            self._repost(str(after["Id"]), after)
            return
        if before is not None:
            self.add(entity, before, -1)
        if after is not None:
            self.add(entity, after)

    def _repost(self, item_id: str, item: dict[str, Any]) -> None:
        """The item's account refs changed: its documents (as stored now) post again."""
        docs = [(entity, orjson.loads(self.stores[entity].records[int(oid)].json))
                for entity, ids in self.by_item.get(item_id, {}).items() for oid in ids]
        for entity, obj in docs:
            self.add(entity, obj, -1)
        self.add("Item", item)
        for entity, obj in docs:
            self.add(entity, obj)

    def net(self, first: str | None, last: str) -> dict[str, Decimal]:
        """Net postings per account of the documents dated `first` (None: ever) to `last`."""
        days = sorted(self.days)
        lo = 0 if first is None else bisect_left(days, first)
        out: dict[str, Decimal] = {}
        for day in days[lo:bisect_right(days, last)]:
            for account, amount in self.days[day].items():
                out[account] = out.get(account, ZERO) + amount
        return out

    def account(self, aid: str) -> AccountInfo:
        return self.accounts.get(aid) or AccountInfo.unknown(aid)


class ReportCompany(Protocol):
    """What a report needs of a realm."""

    realm_id: str
    stores: dict[str, EntityStore]
    company_info: bytes
    journal: Journal


# ---- parameters ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    report: str
    start: date
    end: date
    macro: str | None
    summarize: str
    as_of: date
    aging_date: date
    aging_period: int
    periods: int


def _date(params: Mapping[str, str], key: str) -> date | None:
    text = params.get(key)
    if text is None or text == "":
        return None
    try:
        if not _DATE.match(text):
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise ReportError(f"Invalid date {text!r} for {key}: use YYYY-MM-DD", key) from None


def _positive(params: Mapping[str, str], key: str, default: int) -> int:
    text = params.get(key)
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ReportError(f"{key} must be a whole number of at least 1, not {text!r}", key)
    return int(text)


def _request(report: str, params: Mapping[str, str], today: date) -> Request:
    for key in _FILTERS:
        if params.get(key):
            raise ReportError(f"The emulator's reports take no {key} filter: every report covers the whole company",
                              key)
    if params.get("date_macro"):
        raise ReportError("date_macro is not supported by the emulator: send start_date and end_date", "date_macro")
    method = params.get("accounting_method") or "Accrual"
    if method.lower() == "cash":
        raise ReportError("accounting_method=Cash is not supported by the emulator: cash basis needs QBO's proration "
                          "of each payment over the lines it pays, which the emulator does not model; use Accrual",
                          "accounting_method")
    if method.lower() != "accrual":
        raise ReportError(f"accounting_method must be Accrual or Cash, not {method!r}", "accounting_method")
    summarize = params.get("summarize_column_by") or "Total"
    allowed = ("Total", "Month") if report in ("ProfitAndLoss", "BalanceSheet") else ("Total",)
    match = next((a for a in allowed if a.lower() == summarize.lower()), None)
    if match is None:
        raise ReportError(f"summarize_column_by={summarize} is not supported by the emulator for {report} "
                          f"({' or '.join(allowed)})", "summarize_column_by")
    start, end, report_date = _date(params, "start_date"), _date(params, "end_date"), _date(params, "report_date")
    macro = "this month-to-date" if start is None and end is None and report_date is None else None
    end = end or report_date or today
    start = start or end.replace(day=1)
    if start > end:
        raise ReportError("start_date must be less than end_date", "start_date")
    as_of = report_date or end
    aging_method = params.get("aging_method") or "Report_Date"
    if aging_method.lower() not in ("report_date", "current"):
        raise ReportError(f"aging_method must be Report_Date or Current, not {aging_method!r}", "aging_method")
    aging_date = today if aging_method.lower() == "current" else as_of
    return Request(report, start, end, macro, match, as_of, aging_date, _positive(params, "aging_period", 30),
                   _positive(params, "num_periods", 4))


def adjustments(value: Any) -> list[dict[str, Any]]:
    """The `report_adjustments` setting, checked: a list of {"report", "amount", and
    "account_id" (TrialBalance, ProfitAndLoss, BalanceSheet), "customer_id" (AgedReceivables)
    or "vendor_id" (AgedPayables), optionally "realm_id"}. Raises ValueError."""
    if not isinstance(value, list):
        raise ValueError("report_adjustments must be a list of {report, account_id|customer_id|vendor_id, amount}")
    out = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ValueError(f"a report adjustment must be an object, not {entry!r}")
        report = _NAMES.get(str(entry.get("report", "")).lower())
        if report is None:
            raise ValueError(f"report adjustment for unknown report {entry.get('report')!r} (one of {', '.join(REPORTS)})")
        key = _ADJUSTED[report]
        unknown = set(entry) - {"report", "amount", "realm_id", key}
        if unknown or entry.get(key) in (None, ""):
            raise ValueError(f"a {report} adjustment takes report, {key}, amount and optionally realm_id")
        try:
            amount = money(Decimal(str(entry.get("amount"))))
        except (InvalidOperation, ValueError):
            raise ValueError(f"report adjustment amount {entry.get('amount')!r} is not a number") from None
        fixed: dict[str, Any] = {"report": report, key: str(entry[key]), "amount": amount}
        if entry.get("realm_id") is not None:
            fixed["realm_id"] = str(entry["realm_id"])
        out.append(fixed)
    return out


_ADJUSTED = {"TrialBalance": "account_id", "ProfitAndLoss": "account_id", "BalanceSheet": "account_id",
             "AgedReceivables": "customer_id", "AgedPayables": "vendor_id"}


def _adjusted(config: Mapping[str, Any], report: str, realm_id: str) -> dict[str, Decimal]:
    """{row id: amount} the configured adjustments add to `report` of this realm."""
    key = _ADJUSTED[report]
    out: dict[str, Decimal] = {}
    for entry in config.get("report_adjustments") or ():
        if entry["report"] == report and entry.get("realm_id", realm_id) == realm_id:
            out[entry[key]] = out.get(entry[key], ZERO) + entry["amount"]
    return out


# ---- cells and rows ------------------------------------------------------------------------------
def _cell(value: str, cid: str | None = None) -> dict[str, str]:
    return {"value": value} if cid is None else {"value": value, "id": cid}


def _amount(value: Decimal) -> str:
    return f"{money(value):.2f}"


def _blanks(n: int) -> list[dict[str, str]]:
    return [{"value": ""} for _ in range(n)]


def _data(name: str, cid: str | None, values: Iterable[Decimal]) -> dict[str, Any]:
    """A Data row: zero amounts are blank, as Intuit leaves them."""
    return {"ColData": [_cell(name, cid), *(_cell(_amount(v) if v else "") for v in values)], "type": "Data"}


def _section(title: str, cid: str | None, rows: list[dict[str, Any]], totals: list[Decimal], *,
             group: str | None = None, summary: str | None = None) -> dict[str, Any]:
    """A Section row with a Header, its Rows (left out when empty) and a Summary (blank when empty)."""
    row: dict[str, Any] = {"Header": {"ColData": [_cell(title, cid), *_blanks(len(totals))]}}
    if rows:
        row["Rows"] = {"Row": rows}
    row["Summary"] = {"ColData": [_cell(summary or f"Total {title}"),
                                  *(_cell(_amount(v) if rows else "") for v in totals)]}
    row["type"] = "Section"
    if group is not None:
        row["group"] = group
    return row


def _summary(title: str, group: str, totals: list[Decimal] | None, n: int) -> dict[str, Any]:
    """A computed line (Gross Profit, Net Income, GrandTotal): a Section with a Summary only."""
    cells = _blanks(n) if totals is None else [_cell(_amount(v)) for v in totals]
    return {"Summary": {"ColData": [_cell(title), *cells]}, "type": "Section", "group": group}


def _sum(columns: Iterable[list[Decimal]], n: int) -> list[Decimal]:
    out = [ZERO] * n
    for values in columns:
        out = [a + b for a, b in zip(out, values, strict=True)]
    return out


def _tree(accounts: list[AccountInfo], values: Mapping[str, list[Decimal]], n: int
          ) -> tuple[list[dict[str, Any]], list[Decimal]]:
    """Rows of `accounts` by name, sub-accounts inside a Section of their parent (the parent's
    own amount as its first Data row); accounts with nothing are left out."""
    ids = {a.id for a in accounts}
    children: dict[str | None, list[AccountInfo]] = {}
    for acc in accounts:
        children.setdefault(acc.parent if acc.parent in ids and acc.parent != acc.id else None, []).append(acc)

    def build(acc: AccountInfo) -> tuple[dict[str, Any] | None, list[Decimal]]:
        own = list(values.get(acc.id) or [ZERO] * n)
        kids = [build(child) for child in sorted(children.get(acc.id, []), key=_by_name)]
        rows = [row for row, _t in kids if row is not None]
        total = _sum([own, *(t for _r, t in kids)], n)
        if rows:
            return _section(acc.name, acc.id, ([_data(acc.name, acc.id, own)] if any(own) else []) + rows,
                            total), total
        return (_data(acc.name, acc.id, own) if any(own) else None), own

    built = [build(acc) for acc in sorted(children.get(None, []), key=_by_name)]
    return [row for row, _t in built if row is not None], _sum((t for _r, t in built), n)


def _by_name(acc: AccountInfo) -> str:
    return acc.name.casefold()


def _cells(rows: list[dict[str, Any]]) -> int:
    """ColData cells in `rows`, nested ones included."""
    count, stack = 0, list(rows)
    while stack:
        row = stack.pop()
        count += len(row.get("ColData", ())) + len(row.get("Header", {}).get("ColData", ()))
        count += len(row.get("Summary", {}).get("ColData", ()))
        stack.extend(row.get("Rows", {}).get("Row", ()))
    return count


# ---- header and columns --------------------------------------------------------------------------
def _header(req: Request, now: float, *, basis: bool, summarize: bool, options: list[dict[str, str]]
            ) -> dict[str, Any]:
    head: dict[str, Any] = {"Time": fmt_ts(now), "ReportName": req.report}
    if req.macro:
        head["DateMacro"] = req.macro
    if basis:
        head["ReportBasis"] = "Accrual"
    head["StartPeriod"] = req.start.isoformat()
    head["EndPeriod"] = req.end.isoformat()
    if summarize:
        head["SummarizeColumnsBy"] = req.summarize
    head["Currency"] = "USD"
    head["Option"] = options
    return head


def _no_data(flag: bool) -> dict[str, str]:
    return {"Name": "NoReportData", "Value": "true" if flag else "false"}


def _periods(req: Request) -> list[tuple[date, date]]:
    """The report's columns as date ranges: the whole period, or each (part of a) month."""
    if req.summarize != "Month":
        return [(req.start, req.end)]
    out, first = [], req.start
    while first <= req.end:
        last = min(first.replace(day=calendar.monthrange(first.year, first.month)[1]), req.end)
        out.append((first, last))
        first = last + timedelta(days=1)
    return out


def _month_title(first: date, last: date) -> str:
    """"Apr 2026" for a whole month, "Apr 1-29, 2026" for part of one (as clients expect QBO's)."""
    if first.day == 1 and last.day == calendar.monthrange(last.year, last.month)[1]:
        return f"{calendar.month_abbr[first.month]} {first.year}"
    if first == last:
        return f"{calendar.month_abbr[first.month]} {first.day}, {first.year}"
    return f"{calendar.month_abbr[first.month]} {first.day}-{last.day}, {first.year}"


def _money_columns(req: Request, periods: list[tuple[date, date]], *, total: bool) -> list[dict[str, Any]]:
    cols: list[dict[str, Any]] = [{"ColTitle": "", "ColType": "Account",
                                   "MetaData": [{"Name": "ColKey", "Value": "account"}]}]
    if req.summarize == "Month":
        for first, last in periods:
            cols.append({"ColTitle": _month_title(first, last), "ColType": "Money",
                         "MetaData": [{"Name": "StartDate", "Value": first.isoformat()},
                                      {"Name": "EndDate", "Value": last.isoformat()},
                                      {"Name": "ColKey", "Value": first.strftime("%Y-%m")}]})
    if total:
        cols.append({"ColTitle": "Total", "ColType": "Money", "MetaData": [{"Name": "ColKey", "Value": "total"}]})
    return cols


# ---- the books as of a date ----------------------------------------------------------------------
def _fiscal_start(company: ReportCompany, day: date) -> date:
    month_name = str(orjson.loads(company.company_info or b"{}").get("FiscalYearStartMonth") or "January")
    month = next((n for n in range(1, 13) if calendar.month_name[n].lower() == month_name.lower()), 1)
    return date(day.year if day.month >= month else day.year - 1, month, 1)


def _closed(company: ReportCompany, as_of: date) -> dict[str, Decimal]:
    """Net per account as of `as_of` with the fiscal year closed: income and expense accounts
    for the fiscal year to date, earlier years' in the Retained Earnings account."""
    journal = company.journal
    fiscal = _fiscal_start(company, as_of)
    out = journal.net(None, as_of.isoformat())
    earlier = journal.net(None, (fiscal - timedelta(days=1)).isoformat())
    carried = ZERO
    for aid, amount in earlier.items():
        if journal.account(aid).kind in _PL_TYPES:
            out[aid] -= amount
            carried += amount
    if carried:
        retained = _retained_earnings(journal)
        out[retained] = out.get(retained, ZERO) + carried
    return out


def _retained_earnings(journal: Journal) -> str:
    return next((a.id for a in journal.accounts.values() if a.sub_type == "RetainedEarnings"), "3")


def _display(acc: AccountInfo, net: Decimal) -> Decimal:
    """An account's amount as reports show it: credit-natured accounts credit-positive."""
    return -net if acc.kind in _CREDIT_TYPES else net


def _accounts(journal: Journal, ids: Iterable[str]) -> list[AccountInfo]:
    """Every known account plus any other id posted to or adjusted."""
    known = dict(journal.accounts)
    for aid in ids:
        if aid not in known:
            known[aid] = AccountInfo.unknown(aid)
    return list(known.values())


# ---- TrialBalance --------------------------------------------------------------------------------
def _trial_balance(company: ReportCompany, req: Request, now: float, extra: dict[str, Decimal]) -> dict[str, Any]:
    journal = company.journal
    net = _closed(company, req.end)
    for aid, amount in extra.items():
        net[aid] = net.get(aid, ZERO) + amount  # on the debit side
    accounts = sorted((a for a in _accounts(journal, net) if net.get(a.id)),
                      key=lambda a: (_TYPE_ORDER.index(a.kind), a.full_name.casefold()))
    rows = []
    debits = credits = ZERO
    for acc in accounts:
        amount = net[acc.id]
        debit, credit = (amount, ZERO) if amount > 0 else (ZERO, -amount)
        debits, credits = debits + debit, credits + credit
        rows.append(_data(acc.full_name, acc.id, (debit, credit)))
    rows.append({"group": "GrandTotal", "type": "Section", "Summary": {"ColData": [
        _cell("TOTAL"), *([_cell(_amount(debits)), _cell(_amount(credits))] if accounts else _blanks(2))]}})
    return {"Header": _header(req, now, basis=True, summarize=False, options=[_no_data(not accounts)]),
            "Columns": {"Column": [{"ColTitle": "", "ColType": "Account"}, {"ColTitle": "Debit", "ColType": "Money"},
                                   {"ColTitle": "Credit", "ColType": "Money"}]},
            "Rows": {"Row": rows}}


# ---- ProfitAndLoss -------------------------------------------------------------------------------
_PL_SECTIONS = (("Income", "Income", "Income"), ("COGS", "Cost of Goods Sold", "Cost of Goods Sold"),
                ("Expenses", "Expenses", "Expense"), ("OtherIncome", "Other Income", "Other Income"),
                ("OtherExpenses", "Other Expenses", "Other Expense"))
_PL_ALWAYS = frozenset({"Income", "Expenses"})  # shown even when empty, as Intuit does


def _profit_and_loss(company: ReportCompany, req: Request, now: float, extra: dict[str, Decimal]
                     ) -> dict[str, Any]:
    journal = company.journal
    periods = _periods(req)
    spans = [*periods, (req.start, req.end)] if req.summarize == "Month" else periods
    n = len(spans)
    nets = [journal.net(first.isoformat(), last.isoformat()) for first, last in spans]
    accounts = [a for a in _accounts(journal, [*extra, *(aid for net in nets for aid in net)]) if a.kind in _PL_TYPES]
    values: dict[str, list[Decimal]] = {}
    for acc in accounts:
        row = [_display(acc, net.get(acc.id, ZERO)) for net in nets]
        if acc.id in extra:  # the period ending on end_date: the last month and the Total
            for k in {n - 1, n - 2} if req.summarize == "Month" else {n - 1}:
                row[k] += extra[acc.id]
        values[acc.id] = row
    totals: dict[str, list[Decimal]] = {}
    sections: dict[str, dict[str, Any]] = {}
    for group, title, kind in _PL_SECTIONS:
        rows, totals[group] = _tree([a for a in accounts if a.kind == kind], values, n)
        if rows or group in _PL_ALWAYS:
            sections[group] = _section(title, None, rows, totals[group], group=group)
    t = totals
    gross = [a - b for a, b in zip(t["Income"], t["COGS"], strict=True)]
    operating = [a - b for a, b in zip(gross, t["Expenses"], strict=True)]
    other = [a - b for a, b in zip(t["OtherIncome"], t["OtherExpenses"], strict=True)]
    net_income = [a + b for a, b in zip(operating, other, strict=True)]
    empty = all("Rows" not in s for s in sections.values())
    shown = None if empty else gross
    rows = [sections["Income"], *([sections["COGS"]] if "COGS" in sections else []),
            _summary("Gross Profit", "GrossProfit", shown, n), sections["Expenses"],
            _summary("Net Operating Income", "NetOperatingIncome", None if empty else operating, n)]
    if "OtherIncome" in sections or "OtherExpenses" in sections:
        rows += [sections[g] for g in ("OtherIncome", "OtherExpenses") if g in sections]
        rows.append(_summary("Net Other Income", "NetOtherIncome", other, n))
    rows.append(_summary("Net Income", "NetIncome", None if empty else net_income, n))
    options = [{"Name": "AccountingStandard", "Value": "GAAP"}, _no_data(empty)]
    return {"Header": _header(req, now, basis=True, summarize=True, options=options),
            "Columns": {"Column": _money_columns(req, periods, total=True)}, "Rows": {"Row": rows}}


# ---- BalanceSheet --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Group:
    group: str
    title: str
    parts: tuple[_Group | str, ...]  # sub-groups, or the account types listed in it
    summary: str | None = None


_BALANCE_SHEET = (
    _Group("TotalAssets", "ASSETS", (
        _Group("CurrentAssets", "Current Assets", (
            _Group("BankAccounts", "Bank Accounts", ("Bank",)),
            _Group("AR", "Accounts Receivable", ("Accounts Receivable",)),
            _Group("OtherCurrentAssets", "Other current assets", ("Other Current Asset",)))),
        _Group("FixedAssets", "Fixed Assets", ("Fixed Asset",)),
        _Group("OtherAssets", "Other Assets", ("Other Asset",))), "TOTAL ASSETS"),
    _Group("TotalLiabilitiesAndEquity", "LIABILITIES AND EQUITY", (
        _Group("Liabilities", "Liabilities", (
            _Group("CurrentLiabilities", "Current Liabilities", (
                _Group("AP", "Accounts Payable", ("Accounts Payable",)),
                _Group("CreditCards", "Credit Cards", ("Credit Card",)),
                _Group("OtherCurrentLiabilities", "Other Current Liabilities", ("Other Current Liability",)))),
            _Group("LongTermLiabilities", "Long-Term Liabilities", ("Long Term Liability",)))),
        _Group("Equity", "Equity", ("Equity",))), "TOTAL LIABILITIES AND EQUITY"),
)


def _balance_sheet(company: ReportCompany, req: Request, now: float, extra: dict[str, Decimal]) -> dict[str, Any]:
    journal = company.journal
    periods = _periods(req)
    n = len(periods)
    nets = [_closed(company, last) for _first, last in periods]
    accounts = _accounts(journal, [*extra, *(aid for net in nets for aid in net)])
    values: dict[str, list[Decimal]] = {}
    net_income = [ZERO] * n
    for acc in accounts:
        row = [_display(acc, net.get(acc.id, ZERO)) for net in nets]
        if acc.id in extra:
            row[-1] += extra[acc.id]  # as of end_date
        if acc.kind in _PL_TYPES:
            sign = 1 if acc.kind in _CREDIT_TYPES else -1
            net_income = [a + sign * b for a, b in zip(net_income, row, strict=True)]
        else:
            values[acc.id] = row
    sheet = [a for a in accounts if a.kind not in _PL_TYPES]
    has_data = any(any(v) for v in values.values()) or any(net_income)

    def build(node: _Group, top: bool) -> tuple[dict[str, Any] | None, list[Decimal]]:
        if all(isinstance(p, str) for p in node.parts):
            rows, total = _tree([a for a in sheet if a.kind in node.parts], values, n)
            if node.group == "Equity" and has_data:
                rows.append({**_data("Net Income", None, net_income), "group": "NetIncome"})
                total = _sum([total, net_income], n)
        else:
            built = [build(p, False) for p in node.parts if isinstance(p, _Group)]
            rows = [row for row, _t in built if row is not None]
            total = _sum((t for _r, t in built), n)
        if not rows and not top:
            return None, total
        return _section(node.title, None, rows, total, group=node.group, summary=node.summary), total

    rows = [build(node, True)[0] for node in _BALANCE_SHEET]
    options = [{"Name": "AccountingStandard", "Value": "GAAP"}, _no_data(not has_data)]
    return {"Header": _header(req, now, basis=True, summarize=True, options=options),
            "Columns": {"Column": _money_columns(req, periods, total=req.summarize != "Month")},
            "Rows": {"Row": [row for row in rows if row is not None]}}


# ---- AgedReceivables / AgedPayables ----------------------------------------------------------------
def _aging(company: ReportCompany, req: Request, now: float, extra: dict[str, Decimal]) -> dict[str, Any]:
    doc_entity, party_entity = ("Invoice", "Customer") if req.report == "AgedReceivables" else ("Bill", "Vendor")
    journal = company.journal
    as_of, period, periods = req.as_of.isoformat(), req.aging_period, req.periods
    titles = ["Current", *(f"{(k - 1) * period + 1} - {k * period}" for k in range(1, periods)),
              f"{(periods - 1) * period + 1} and over"]
    width = len(titles)
    parties: dict[str, list[Decimal]] = {}
    names: dict[str, str] = {}
    applied = journal.applied[doc_entity]
    for doc_id, doc in journal.docs[doc_entity].items():
        if doc.date > as_of:
            continue
        still = doc.total - sum((amount for day, amount in applied.get(doc_id, {}).values() if day <= as_of), ZERO)
        if not still:
            continue
        try:
            late = (req.aging_date - date.fromisoformat(doc.due)).days
        except ValueError:  # no date a client could have set: not yet due
            late = 0
        bucket = 0 if late <= 0 else min((late - 1) // period, periods - 1) + 1
        buckets = parties.setdefault(doc.party, [ZERO] * width)
        buckets[bucket] += still
        names.setdefault(doc.party, doc.party_name)
    for pid, amount in extra.items():
        parties.setdefault(pid, [ZERO] * width)[0] += amount  # in Current
    store = company.stores[party_entity]
    for pid in parties:
        rec = store.records.get(int(pid)) if pid.isdigit() else None
        names[pid] = (rec.name if rec is not None and rec.name else None) or names.get(pid) or pid
    rows = []
    grand = [ZERO] * (width + 1)
    for pid in sorted(parties, key=lambda p: (names[p].casefold(), p)):
        buckets = parties[pid]
        line = [*buckets, sum(buckets, ZERO)]
        grand = [a + b for a, b in zip(grand, line, strict=True)]
        rows.append(_data(names[pid], pid, line))
    rows.append({"group": "GrandTotal", "type": "Section",
                 "Summary": {"ColData": [_cell("TOTAL"), *([_cell(_amount(v)) for v in grand] if parties
                                                            else _blanks(width + 1))]}})
    options = [{"Name": "report_date", "Value": as_of}, _no_data(not parties)]
    columns = [{"ColTitle": "", "ColType": party_entity},
               *({"ColTitle": title, "ColType": "Money"} for title in [*titles, "Total"])]
    return {"Header": _header(req, now, basis=False, summarize=False, options=options),
            "Columns": {"Column": columns}, "Rows": {"Row": rows}}


_BUILDERS = {"TrialBalance": _trial_balance, "ProfitAndLoss": _profit_and_loss, "BalanceSheet": _balance_sheet,
             "AgedReceivables": _aging, "AgedPayables": _aging}


def run(company: ReportCompany, name: str, params: Mapping[str, str], *, now: float,
        config: Mapping[str, Any]) -> dict[str, Any]:
    """Report `name` of `company` for the request's `params` at emulator time `now` (see module
    docstring); raises ReportError for a request the emulator refuses."""
    report = _NAMES.get(name.lower())
    if report is None:
        raise ReportError(f"Report {name} is not served by the emulator (it serves {', '.join(REPORTS)})",
                          "ReportName")
    req = _request(report, params, date.fromisoformat(fmt_date(now)))
    body = _BUILDERS[report](company, req, now, _adjusted(config, report, company.realm_id))
    limit = int(config.get("report_cell_limit") or CELL_LIMIT)
    if _cells(body["Rows"]["Row"]) > limit:
        for option in body["Header"]["Option"]:
            if option["Name"] == "NoReportData":
                option["Value"] = "true"
        width = len(body["Columns"]["Column"])
        body["Rows"] = {"Row": [{"ColData": [_cell(TOO_BIG), *_blanks(width - 1)], "type": "Data"}]}
    return body
