"""The emulator's reports over real HTTP (SPEC sections 11 and 14, FACTS 6.7): TrialBalance,
ProfitAndLoss, BalanceSheet, AgedReceivables and AgedPayables in the samples' shape, agreeing
with the emulator's own documents as of the date asked (books.postings recomputed here from
the served objects), moving with mutations; the drift switches (report adjustments, `vanish`),
the cell limit's "Unable to display more data" answer, and the "report" request count."""

from __future__ import annotations

import calendar
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import pytest
import requests
from support.samples import SAMPLES
from support.webhooks import WebhookSink

from services.emulator.admin import EmulatorAdminError
from services.emulator.books import POSTING, postings
from services.emulator.jsontext import fmt_date, parse_ts

ZERO = Decimal("0.00")
PL_TYPES = {"Income", "Cost of Goods Sold", "Expense", "Other Income", "Other Expense"}
CREDIT_TYPES = {"Accounts Payable", "Credit Card", "Other Current Liability", "Long Term Liability", "Equity",
                "Income", "Other Income"}
TOO_BIG = "Unable to display more data. Please reduce the date range."
PL_GROUPS = ("Income", "COGS", "GrossProfit", "Expenses", "NetOperatingIncome", "OtherIncome", "OtherExpenses",
             "NetOtherIncome", "NetIncome")
SAMPLE = {"TrialBalance": "report_trialbalance_docs_example.json",
          "ProfitAndLoss": "report_profitandloss_docs_example.json",
          "BalanceSheet": "report_balancesheet_docs_example.json",
          "AgedReceivables": "report_agedreceivables_docs_example.json",
          "AgedPayables": "report_agedreceivables_docs_example.json"}


# ---- helpers -------------------------------------------------------------------------------------
def get(emulator, realm: str, access: str, name: str, **params) -> requests.Response:
    return requests.get(f"{emulator.url}/v3/company/{realm}/reports/{name}", params={**params, "minorversion": "75"},
                        headers={"Authorization": f"Bearer {access}", "Accept": "application/json"}, timeout=60)


def report(emulator, realm: str, access: str, name: str, **params) -> dict:
    resp = get(emulator, realm, access, name, **params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def fault(resp: requests.Response) -> str:
    assert resp.status_code == 400, resp.text
    return resp.json()["Fault"]["Error"][0]["Detail"]


def walk(rows: list[dict]) -> Iterator[dict]:
    for row in rows:
        yield row
        yield from walk(row.get("Rows", {}).get("Row", []))


def money(value: str) -> Decimal:
    return Decimal(value) if value else ZERO


def lines(body: dict) -> dict[str, list[Decimal]]:
    """The amounts of every Data row that carries an id, by that id."""
    out = {}
    for row in walk(body["Rows"]["Row"]):
        if "ColData" in row and "id" in row["ColData"][0]:
            assert row["ColData"][0]["id"] not in out
            out[row["ColData"][0]["id"]] = [money(c["value"]) for c in row["ColData"][1:]]
    return out


def section(body: dict, group: str) -> dict:
    (found,) = [row for row in walk(body["Rows"]["Row"]) if row.get("group") == group]
    return found


def summary(body: dict, group: str) -> list[Decimal]:
    return [money(c["value"]) for c in section(body, group)["Summary"]["ColData"][1:]]


def trial_balance_net(body: dict) -> dict[str, Decimal]:
    return {aid: debit - credit for aid, (debit, credit) in lines(body).items()}


def books_of(admin, realm: str) -> dict[str, list[dict]]:
    """The posting documents, items and chart exactly as the emulator serves them."""
    return {e: admin.entities(realm, e) for e in (*sorted(POSTING), "Item", "Account", "CompanyInfo")}


def open_books(admin, realm: str) -> dict[str, list[dict]]:
    """Just what aging reads: invoices and bills with their payments."""
    return {e: admin.entities(realm, e) for e in ("Invoice", "Payment", "Bill", "BillPayment")}


def expected_net(company: dict[str, list[dict]], first: str | None, last: str, *, close: bool = False
                 ) -> dict[str, Decimal]:
    """Net postings per account of the documents dated first..last (books.postings); `close`:
    income and expense of years before the fiscal year of `last` moved to Retained Earnings."""
    assert company["CompanyInfo"][0]["FiscalYearStartMonth"] == "January"
    items = {o["Id"]: o for o in company["Item"]}
    kinds = {a["Id"]: a["AccountType"] for a in company["Account"]}
    retained = next(a["Id"] for a in company["Account"] if a["AccountSubType"] == "RetainedEarnings")
    fiscal = last[:4] + "-01-01"
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for entity in sorted(POSTING):
        for obj in company[entity]:
            day = obj["TxnDate"]
            if day > last or (first is not None and day < first):
                continue
            for account, amount in postings(entity, obj, items):
                out[retained if close and kinds[account] in PL_TYPES and day < fiscal else account] += amount
    return {a: v for a, v in out.items() if v}


def open_amounts(company: dict[str, list[dict]], doc: str, as_of: str | None = None) -> dict[str, Decimal]:
    """Open Invoice (Bill) amounts per customer (vendor) as of a date: TotalAmt - the Payment
    (BillPayment) lines dated on or before it; without a date, the served Balance."""
    settlement, party = ("Payment", "CustomerRef") if doc == "Invoice" else ("BillPayment", "VendorRef")
    paid: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for obj in company[settlement]:
        for line in obj["Line"]:
            for link in line.get("LinkedTxn", []):
                if link["TxnType"] == doc and (as_of is None or obj["TxnDate"] <= as_of):
                    paid[link["TxnId"]] += line["Amount"]
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for obj in company[doc]:
        if as_of is None:
            out[obj[party]["value"]] += obj["Balance"]
            assert obj["Balance"] == obj["TotalAmt"] - paid[obj["Id"]]
        elif obj["TxnDate"] <= as_of:
            out[obj[party]["value"]] += obj["TotalAmt"] - paid[obj["Id"]]
    return {p: v for p, v in out.items() if v}


def aging_rows(body: dict) -> dict[str, Decimal]:
    """Each party's Total, after checking that its buckets add up to it."""
    out = {}
    for pid, values in lines(body).items():
        assert sum(values[:-1], ZERO) == values[-1]
        out[pid] = values[-1]
    return out


def assert_balanced(body: dict) -> tuple[Decimal, Decimal]:
    """The TrialBalance's GrandTotal is its rows' sums; returns (debits, credits)."""
    rows = lines(body).values()
    debits, credits = summary(body, "GrandTotal")
    assert debits == sum((r[0] for r in rows), ZERO) and credits == sum((r[1] for r in rows), ZERO)
    return debits, credits


@pytest.fixture
def books(emulator):
    realm = emulator.admin.create_realm(customers=30, items=8, invoices=60, estimates=4, seed=4242)
    return realm, emulator.admin.issue_tokens(realm)["access_token"]


def today(emulator) -> date:
    return date.fromisoformat(fmt_date(emulator.admin.now()))


def dated(company: dict[str, list[dict]]) -> list[str]:
    return sorted({o["TxnDate"] for e in POSTING for o in company[e]})


# ---- shape ---------------------------------------------------------------------------------------
def assert_shape(body: dict, sample: dict) -> None:
    """Structure as Intuit's sample: top-level and Header keys, Option names, Columns, and rows
    that are Sections (Header?, Rows?, Summary, type, group?) or Data rows (ColData, type,
    group?) with one string cell per column (`value`, and `id` only on first cells)."""
    assert list(body) == ["Header", "Columns", "Rows"] and set(sample) == set(body)
    optional = {"DateMacro", "Customer"}  # the samples' date macro and customer filter echo
    assert set(sample["Header"]) - optional <= set(body["Header"]) <= set(sample["Header"]) | {"DateMacro"}
    assert all(isinstance(v, str) for k, v in body["Header"].items() if k != "Option")
    assert [o["Name"] for o in sample["Header"]["Option"]] == [o["Name"] for o in body["Header"]["Option"]]
    assert all(isinstance(o["Value"], str) for o in body["Header"]["Option"])
    columns, model = body["Columns"]["Column"], sample["Columns"]["Column"]
    assert [set(c) for c in columns] == [set(model[0])] + [set(model[-1])] * (len(columns) - 1)
    assert [c["ColType"] for c in columns[1:]] == ["Money"] * (len(columns) - 1)
    width = len(columns)
    for row in walk(body["Rows"]["Row"]):
        if row["type"] == "Section":
            assert set(row) <= {"Header", "Rows", "Summary", "type", "group"} and "Summary" in row
            assert "Rows" not in row or row["Rows"]["Row"]
            colsets = [row[k]["ColData"] for k in ("Header", "Summary") if k in row]
        else:
            assert row["type"] == "Data" and set(row) <= {"ColData", "type", "group"}
            colsets = [row["ColData"]]
        for cells in colsets:
            assert len(cells) == width
            for n, cell in enumerate(cells):
                assert set(cell) <= ({"value", "id"} if n == 0 else {"value"}), cell
                assert all(isinstance(v, str) for v in cell.values())
                if n:
                    assert cell["value"] == "" or cell["value"] == f"{Decimal(cell['value']):.2f}"
    titles = {row["group"]: (row.get("Header", {}).get("ColData", [{}])[0].get("value"),
                             row["Summary"]["ColData"][0]["value"])
              for row in walk(sample["Rows"]["Row"]) if row.get("group") and "Summary" in row}
    for row in walk(body["Rows"]["Row"]):
        if row.get("group") in titles:  # the same section is titled as Intuit titles it
            assert (row.get("Header", {}).get("ColData", [{}])[0].get("value"),
                    row["Summary"]["ColData"][0]["value"]) == titles[row["group"]]


def test_every_report_has_the_samples_shape(emulator, books):
    realm, access = books
    end = today(emulator).isoformat()
    for name, sample_file in SAMPLE.items():
        sample = json.loads((SAMPLES / sample_file).read_text())
        body = report(emulator, realm, access, name, start_date=f"{end[:4]}-01-01", end_date=end)
        assert_shape(body, sample)
        head = body["Header"]
        assert head["ReportName"] == name and head["EndPeriod"] == end and head["Currency"] == "USD"
        assert {"Name": "NoReportData", "Value": "false"} in head["Option"]
        assert lines(body), name  # a company with data has rows with ids
        if name in ("TrialBalance", "AgedReceivables", "AgedPayables"):
            assert body["Rows"]["Row"][-1]["group"] == "GrandTotal"
            assert [c["ColTitle"] for c in body["Columns"]["Column"][1:]] == \
                [c["ColTitle"] for c in sample["Columns"]["Column"][1:]]
            assert body["Columns"]["Column"][0]["ColType"] == {"AgedPayables": "Vendor"}.get(
                name, sample["Columns"]["Column"][0]["ColType"])
        if name.startswith("Aged"):
            assert "ReportBasis" not in head and head["Option"][0] == {"Name": "report_date", "Value": end}
        else:
            assert head["ReportBasis"] == "Accrual"
    pl = report(emulator, realm, access, "ProfitAndLoss", start_date=f"{end[:4]}-01-01", end_date=end)
    groups = [row["group"] for row in pl["Rows"]["Row"]]
    assert groups == [g for g in PL_GROUPS if g in groups] and {"Income", "GrossProfit", "Expenses",
                                                                "NetOperatingIncome", "NetIncome"} <= set(groups)
    bs = report(emulator, realm, access, "BalanceSheet", end_date=end)
    assert [row["group"] for row in bs["Rows"]["Row"]] == ["TotalAssets", "TotalLiabilitiesAndEquity"]
    assert section(bs, "NetIncome")["ColData"][0] == {"value": "Net Income"}


def test_every_profit_and_loss_group_appears_when_its_accounts_have_amounts(emulator, books):
    realm, access = books
    admin = emulator.admin
    end = today(emulator).isoformat()
    other_income = admin.mutate(realm, "Account", "create", fields={
        "Name": "Interest Earned", "FullyQualifiedName": "Interest Earned", "AccountType": "Other Income",
        "AccountSubType": "InterestEarned", "Classification": "Revenue"})
    other_expense = admin.mutate(realm, "Account", "create", fields={
        "Name": "Penalties", "FullyQualifiedName": "Penalties", "AccountType": "Other Expense",
        "AccountSubType": "PenaltiesSettlements", "Classification": "Expense"})
    entry = admin.mutate(realm, "JournalEntry", "create")
    amount = Decimal("250.00")

    def line(n: int, posting: str, account: str) -> dict:
        return {"Id": str(n), "Amount": amount, "DetailType": "JournalEntryLineDetail",
                "JournalEntryLineDetail": {"PostingType": posting, "AccountRef": {"value": account}}}
    admin.mutate(realm, "JournalEntry", "update", id=entry["Id"], fields={"Line": [
        line(0, "Debit", "35"), line(1, "Credit", other_income["Id"]), line(2, "Debit", other_expense["Id"]),
        line(3, "Credit", "35"), line(4, "Debit", "80"), line(5, "Credit", "35")]})
    pl = report(emulator, realm, access, "ProfitAndLoss", start_date=end, end_date=end)
    assert [row["group"] for row in pl["Rows"]["Row"]] == list(PL_GROUPS)
    assert lines(pl)[other_income["Id"]] == [amount] and lines(pl)[other_expense["Id"]] == [amount]
    t = {g: summary(pl, g)[0] for g in PL_GROUPS}
    assert t["GrossProfit"] == t["Income"] - t["COGS"]
    assert t["NetOperatingIncome"] == t["GrossProfit"] - t["Expenses"]
    assert t["NetOtherIncome"] == t["OtherIncome"] - t["OtherExpenses"] == ZERO
    assert t["NetIncome"] == t["NetOperatingIncome"] + t["NetOtherIncome"]
    company = books_of(admin, realm)
    kinds = {a["Id"]: a["AccountType"] for a in company["Account"]}
    expected = expected_net(company, end, end)
    assert t["NetIncome"] == -sum((v for a, v in expected.items() if kinds[a] in PL_TYPES), ZERO)


def test_a_period_without_documents_is_intuits_no_data_skeleton(emulator, books):
    realm, access = books
    sample = json.loads((SAMPLES / "report_profitandloss_by_customers_nodata.json").read_text())
    pl = report(emulator, realm, access, "ProfitAndLoss", start_date="2015-01-01", end_date="2015-07-31")
    assert {"Name": "NoReportData", "Value": "true"} in pl["Header"]["Option"]
    assert pl["Rows"] == sample["Rows"]  # Income, GrossProfit, Expenses, NetOperatingIncome, NetIncome, all blank
    tb = report(emulator, realm, access, "TrialBalance", start_date="2015-01-01", end_date="2015-07-31")
    assert tb["Rows"]["Row"] == [{"group": "GrandTotal", "type": "Section", "Summary": {"ColData": [
        {"value": "TOTAL"}, {"value": ""}, {"value": ""}]}}]
    assert {"Name": "NoReportData", "Value": "true"} in tb["Header"]["Option"]
    for name in ("AgedReceivables", "AgedPayables", "BalanceSheet"):
        body = report(emulator, realm, access, name, end_date="2015-07-31")
        assert not lines(body) and {"Name": "NoReportData", "Value": "true"} in body["Header"]["Option"]


# ---- the numbers -----------------------------------------------------------------------------------
def test_trial_balance_balances_and_is_the_emulators_postings(emulator, books):
    realm, access = books
    company = books_of(emulator.admin, realm)
    days = dated(company)
    for as_of in (days[len(days) // 2], today(emulator).isoformat()):
        tb = report(emulator, realm, access, "TrialBalance", start_date=f"{as_of[:4]}-01-01", end_date=as_of)
        debits, credits = assert_balanced(tb)
        assert debits == credits > 0
        assert trial_balance_net(tb) == expected_net(company, None, as_of, close=True)
    earlier = report(emulator, realm, access, "TrialBalance", end_date=days[len(days) // 2])
    later = report(emulator, realm, access, "TrialBalance", end_date=days[-1])
    assert assert_balanced(earlier)[0] < assert_balanced(later)[0]  # the later documents are left out before


def test_balance_sheet_balances_with_the_profit_and_losss_net_income(emulator, books):
    realm, access = books
    admin = emulator.admin
    company = books_of(admin, realm)
    kinds = {a["Id"]: a["AccountType"] for a in company["Account"]}
    for as_of in (dated(company)[len(dated(company)) // 2], today(emulator).isoformat()):
        bs = report(emulator, realm, access, "BalanceSheet", end_date=as_of)
        (assets,), (both,) = summary(bs, "TotalAssets"), summary(bs, "TotalLiabilitiesAndEquity")
        assert assets == both == summary(bs, "Liabilities")[0] + summary(bs, "Equity")[0] > 0
        pl = report(emulator, realm, access, "ProfitAndLoss", start_date=f"{as_of[:4]}-01-01", end_date=as_of)
        (net_income,) = summary(pl, "NetIncome")
        assert [money(c["value"]) for c in section(bs, "NetIncome")["ColData"][1:]] == [net_income]
        expected = expected_net(company, None, as_of, close=True)
        shown = {aid: v for aid, (v,) in lines(bs).items()}
        assert shown == {a: (-v if kinds[a] in CREDIT_TYPES else v) for a, v in expected.items()
                         if kinds[a] not in PL_TYPES}
        assert {aid: v for aid, (v,) in lines(pl).items()} == {
            a: (-v if kinds[a] in CREDIT_TYPES else v)
            for a, v in expected_net(company, f"{as_of[:4]}-01-01", as_of).items() if kinds[a] in PL_TYPES}


def test_profit_and_loss_by_month_adds_up_to_its_total(emulator, books):
    realm, access = books
    end = today(emulator)
    start = (end.replace(day=1) - timedelta(days=40)).replace(day=15)
    pl = report(emulator, realm, access, "ProfitAndLoss", start_date=start.isoformat(), end_date=end.isoformat(),
                summarize_column_by="Month")
    titles = [c["ColTitle"] for c in pl["Columns"]["Column"]]
    assert pl["Header"]["SummarizeColumnsBy"] == "Month" and titles[-1] == "Total" and len(titles) >= 4
    assert titles[1] == f"{start:%b} 15-{calendar.monthrange(start.year, start.month)[1]}, {start.year}"
    assert titles[2] == f"{start.replace(day=28) + timedelta(days=4):%b %Y}"
    for values in [*lines(pl).values(), summary(pl, "NetIncome")]:
        assert sum(values[:-1], ZERO) == values[-1]
    whole = report(emulator, realm, access, "ProfitAndLoss", start_date=start.isoformat(), end_date=end.isoformat())
    assert summary(whole, "NetIncome") == summary(pl, "NetIncome")[-1:]
    bs = report(emulator, realm, access, "BalanceSheet", start_date=start.isoformat(), end_date=end.isoformat(),
                summarize_column_by="Month")
    assert len(bs["Columns"]["Column"]) == len(titles) - 1  # a column per month end, no Total
    last = report(emulator, realm, access, "BalanceSheet", end_date=end.isoformat())
    assert summary(bs, "TotalAssets")[-1:] == summary(last, "TotalAssets")


def test_aging_totals_are_the_open_invoice_and_bill_balances(emulator, books):
    realm, access = books
    admin = emulator.admin
    end = today(emulator).isoformat()
    for name, doc in (("AgedReceivables", "Invoice"), ("AgedPayables", "Bill")):
        body = report(emulator, realm, access, name, report_date=end)
        company = open_books(admin, realm)
        owed = open_amounts(company, doc)
        assert aging_rows(body) == owed and owed
        assert summary(body, "GrandTotal")[-1] == sum(owed.values(), ZERO)
        totals = summary(body, "GrandTotal")
        assert sum(totals[:-1], ZERO) == totals[-1]
        days = sorted({o["TxnDate"] for o in company[doc]})
        middle = days[len(days) // 2]
        earlier = report(emulator, realm, access, name, report_date=middle)
        assert aging_rows(earlier) == open_amounts(company, doc, middle)
        assert summary(earlier, "GrandTotal")[-1] != summary(body, "GrandTotal")[-1]
    shorter = report(emulator, realm, access, "AgedReceivables", report_date=end, aging_period="10", num_periods="3")
    assert [c["ColTitle"] for c in shorter["Columns"]["Column"][1:]] == ["Current", "1 - 10", "11 - 20",
                                                                         "21 and over", "Total"]
    assert aging_rows(shorter) == open_amounts(open_books(admin, realm), "Invoice")


def test_mutations_move_the_reports(emulator, books):
    realm, access = books
    admin = emulator.admin
    end = today(emulator).isoformat()

    def state() -> tuple[dict[str, Decimal], Decimal, Decimal]:
        tb = report(emulator, realm, access, "TrialBalance", end_date=end)
        debits, credits = assert_balanced(tb)
        assert debits == credits
        company = books_of(admin, realm)
        assert trial_balance_net(tb) == expected_net(company, None, end, close=True)
        ar = summary(report(emulator, realm, access, "AgedReceivables", report_date=end), "GrandTotal")[-1]
        ap = summary(report(emulator, realm, access, "AgedPayables", report_date=end), "GrandTotal")[-1]
        assert ar == sum(open_amounts(company, "Invoice").values(), ZERO)
        assert ap == sum(open_amounts(company, "Bill").values(), ZERO)
        return trial_balance_net(tb), ar, ap

    net, ar, ap = state()
    payment = admin.mutate(realm, "Payment", "create")
    assert payment["TotalAmt"] > 0 and payment["Line"]  # it pays an open invoice in full
    after, ar2, ap2 = state()
    assert ar2 == ar - payment["TotalAmt"] and ap2 == ap
    assert after["84"] == net["84"] - payment["TotalAmt"]
    deposit_to = payment["DepositToAccountRef"]["value"]
    assert after[deposit_to] == net.get(deposit_to, ZERO) + payment["TotalAmt"]

    invoice = next(i for i in admin.entities(realm, "Invoice") if i["Balance"] > 0)
    admin.mutate(realm, "Invoice", "void", id=invoice["Id"])
    after2, ar3, _ap = state()
    assert ar3 == ar2 - invoice["Balance"]
    assert after2["84"] == after["84"] - invoice["TotalAmt"]

    bill = next(b for b in admin.entities(realm, "Bill") if b["Balance"] > 0)
    admin.mutate(realm, "Bill", "delete", id=bill["Id"])
    after3, _ar, ap3 = state()
    assert ap3 == ap2 - bill["Balance"]
    assert after3.get("33", ZERO) == after2.get("33", ZERO) + bill["TotalAmt"]  # its credit to A/P is gone


def test_the_fiscal_year_closes_into_retained_earnings(emulator, books):
    realm, _access = books
    admin = emulator.admin
    new_year = date(today(emulator).year + 1, 1, 10)
    admin.advance_clock(parse_ts(f"{new_year.isoformat()}T12:00:00") - admin.now())
    access = admin.issue_tokens(realm)["access_token"]
    invoice = admin.mutate(realm, "Invoice", "create")
    assert invoice["TxnDate"] == new_year.isoformat()
    company = books_of(admin, realm)
    kinds = {a["Id"]: a["AccountType"] for a in company["Account"]}
    tb = report(emulator, realm, access, "TrialBalance", start_date=f"{new_year.year}-01-01",
                end_date=new_year.isoformat())
    debits, credits = assert_balanced(tb)
    assert debits == credits
    net = trial_balance_net(tb)
    assert net == expected_net(company, None, new_year.isoformat(), close=True)
    this_year = expected_net(company, f"{new_year.year}-01-01", new_year.isoformat())
    assert {a: v for a, v in net.items() if kinds[a] in PL_TYPES} == {
        a: v for a, v in this_year.items() if kinds[a] in PL_TYPES} != {}
    last_year = report(emulator, realm, access, "ProfitAndLoss", start_date="2000-01-01",
                       end_date=f"{new_year.year - 1}-12-31")
    own = expected_net(company, None, new_year.isoformat()).get("3", ZERO)  # what documents post to it
    assert -net["3"] == summary(last_year, "NetIncome")[0] - own and summary(last_year, "NetIncome")[0] != 0
    bs = report(emulator, realm, access, "BalanceSheet", end_date=new_year.isoformat())
    pl = report(emulator, realm, access, "ProfitAndLoss", start_date=f"{new_year.year}-01-01",
                end_date=new_year.isoformat())
    assert [money(c["value"]) for c in section(bs, "NetIncome")["ColData"][1:]] == summary(pl, "NetIncome")
    assert summary(bs, "TotalAssets") == summary(bs, "TotalLiabilitiesAndEquity")


# ---- drift switches --------------------------------------------------------------------------------
def test_an_adjustment_moves_exactly_one_account_of_one_report(emulator, books):
    realm, access = books
    admin = emulator.admin
    end = today(emulator).isoformat()
    before = report(emulator, realm, access, "TrialBalance", end_date=end)
    other = report(emulator, realm, access, "BalanceSheet", end_date=end)
    shown = admin.configure(report_adjustments=[{"report": "TrialBalance", "account_id": "35", "amount": "12.34"}])
    assert shown["report_adjustments"] == [{"report": "TrialBalance", "account_id": "35", "amount": Decimal("12.34")}]
    after = report(emulator, realm, access, "TrialBalance", end_date=end)
    was, now = trial_balance_net(before), trial_balance_net(after)
    assert {a for a in was.keys() | now.keys() if was.get(a) != now.get(a)} == {"35"}
    assert now["35"] - was["35"] == Decimal("12.34")
    debits, credits = assert_balanced(after)  # the report agrees with itself, not with the data
    assert debits - credits == Decimal("12.34")
    assert lines(report(emulator, realm, access, "BalanceSheet", end_date=end)) == lines(other)

    pl = report(emulator, realm, access, "ProfitAndLoss", start_date=f"{end[:4]}-01-01", end_date=end)
    admin.configure(report_adjustments=[{"report": "BalanceSheet", "account_id": "35", "amount": "12.34"},
                                        {"report": "ProfitAndLoss", "account_id": "1", "amount": "-1.00"}])
    moved = report(emulator, realm, access, "BalanceSheet", end_date=end)
    assert lines(moved)["35"][0] - lines(other)["35"][0] == Decimal("12.34")
    assert summary(moved, "TotalAssets")[0] - summary(moved, "TotalLiabilitiesAndEquity")[0] == Decimal("12.34")
    assert summary(moved, "BankAccounts")[0] == sum((lines(moved)[a][0] for a in ("35", "36")), ZERO)
    shifted = report(emulator, realm, access, "ProfitAndLoss", start_date=f"{end[:4]}-01-01", end_date=end)
    assert summary(shifted, "NetIncome")[0] == summary(pl, "NetIncome")[0] - 1
    assert lines(report(emulator, realm, access, "TrialBalance", end_date=end)) == lines(before)
    owed = open_amounts(open_books(admin, realm), "Invoice")
    customer = next(iter(owed))
    admin.configure(report_adjustments=[{"report": "AgedReceivables", "customer_id": customer, "amount": -5,
                                         "realm_id": realm}])
    aged = aging_rows(report(emulator, realm, access, "AgedReceivables", report_date=end))
    assert aged[customer] == owed[customer] - 5
    admin.configure(report_adjustments=[])
    assert lines(report(emulator, realm, access, "TrialBalance", end_date=end)) == lines(before)
    for wrong in ([{"report": "GeneralLedger", "account_id": "35", "amount": 1}],
                  [{"report": "TrialBalance", "customer_id": "35", "amount": 1}],
                  [{"report": "TrialBalance", "account_id": "35", "amount": "lots"}], "35"):
        with pytest.raises(EmulatorAdminError):
            admin.configure(report_adjustments=wrong)


def test_vanish_leaves_no_trace_but_a_count(emulator, books):
    realm, access = books
    admin = emulator.admin
    hooks = WebhookSink()
    try:
        admin.configure(webhook_url=hooks.url, webhook_format="cloudevents")
        end = today(emulator).isoformat()
        headers = {"Authorization": f"Bearer {access}", "Accept": "application/json"}

        def data(path: str, **params) -> requests.Response:
            return requests.get(f"{emulator.url}/v3/company/{realm}/{path}", params={**params, "minorversion": "75"},
                                headers=headers, timeout=30)
        count = data("query", query="SELECT COUNT(*) FROM Invoice").json()["QueryResponse"]["totalCount"]
        invoice = next(i for i in admin.entities(realm, "Invoice") if i["Balance"] > 0)
        tb = trial_balance_net(report(emulator, realm, access, "TrialBalance", end_date=end))
        ar = summary(report(emulator, realm, access, "AgedReceivables", report_date=end), "GrandTotal")[-1]
        admin.vanish(realm, "Invoice", invoice["Id"])
        assert data("query", query="SELECT COUNT(*) FROM Invoice").json()["QueryResponse"] == {"totalCount": count - 1}
        assert data("query", query=f"SELECT * FROM Invoice WHERE Id = '{invoice['Id']}'").json()["QueryResponse"] == {}
        missing = data(f"invoice/{invoice['Id']}")
        assert missing.status_code == 400 and missing.json()["Fault"]["Error"][0]["code"] == "610"
        since = fmt_date(admin.now() - 29 * 86400)
        changes = data("cdc", entities="Invoice", changedSince=since).json()["CDCResponse"][0]["QueryResponse"]
        served = [o["Id"] for element in changes for o in element.get("Invoice", [])]
        assert served and invoice["Id"] not in served  # neither the object nor a Deleted marker
        assert invoice["Id"] not in [o["Id"] for o in admin.entities(realm, "Invoice", include_deleted=True)]
        customer = admin.mutate(realm, "Customer", "update", id=invoice["CustomerRef"]["value"])
        deliveries = admin.wait_webhooks()
        assert [json.loads(d["body"])[0]["intuitentityid"] for d in deliveries] == [customer["Id"]]
        after = trial_balance_net(report(emulator, realm, access, "TrialBalance", end_date=end))
        assert after["84"] == tb["84"] - invoice["TotalAmt"]  # QBO's books no longer have it
        aged = report(emulator, realm, access, "AgedReceivables", report_date=end)
        assert summary(aged, "GrandTotal")[-1] == ar - invoice["Balance"]
        assert aging_rows(aged) == open_amounts(open_books(admin, realm), "Invoice")
        with pytest.raises(EmulatorAdminError) as gone:
            admin.vanish(realm, "Invoice", invoice["Id"])
        assert gone.value.status == 404
    finally:
        admin.configure(webhook_url=None)
        hooks.stop()


# ---- limits, refusals, counts ----------------------------------------------------------------------
def test_too_many_cells_answers_intuits_message_and_a_shorter_period_succeeds(emulator, books):
    realm, access = books
    end = today(emulator)
    long = {"start_date": (end.replace(day=1) - timedelta(days=70)).replace(day=1).isoformat(),
            "end_date": end.isoformat(), "summarize_column_by": "Month"}
    short = {**long, "start_date": end.replace(day=1).isoformat()}

    def cells(body: dict) -> int:
        return sum(len(row.get("ColData", [])) + len(row.get("Header", {}).get("ColData", [])) +
                   len(row.get("Summary", {}).get("ColData", [])) for row in walk(body["Rows"]["Row"]))
    whole = report(emulator, realm, access, "ProfitAndLoss", **long)
    brief = report(emulator, realm, access, "ProfitAndLoss", **short)
    assert cells(brief) < cells(whole)
    emulator.admin.configure(report_cell_limit=cells(whole) - 1)
    resp = get(emulator, realm, access, "ProfitAndLoss", **long)
    assert resp.status_code == 200 and TOO_BIG in resp.text
    capped = resp.json()
    assert {"Name": "NoReportData", "Value": "true"} in capped["Header"]["Option"]
    assert capped["Columns"] == whole["Columns"] and capped["Rows"]["Row"][0]["ColData"][0]["value"] == TOO_BIG
    again = report(emulator, realm, access, "ProfitAndLoss", **short)
    assert TOO_BIG not in json.dumps(again) and again["Rows"] == brief["Rows"]
    with pytest.raises(EmulatorAdminError):
        emulator.admin.configure(report_cell_limit=0)


def test_refused_requests_say_why(emulator, books):
    realm, access = books
    assert "Cash" in fault(get(emulator, realm, access, "ProfitAndLoss", accounting_method="Cash"))
    assert "GeneralLedger" in fault(get(emulator, realm, access, "GeneralLedger"))
    assert "summarize_column_by" in fault(get(emulator, realm, access, "TrialBalance", summarize_column_by="Month"))
    assert "start_date must be less than end_date" in fault(
        get(emulator, realm, access, "BalanceSheet", start_date="2026-02-01", end_date="2026-01-01"))
    assert "YYYY-MM-DD" in fault(get(emulator, realm, access, "BalanceSheet", end_date="2026-13-01"))
    assert "customer" in fault(get(emulator, realm, access, "AgedReceivables", customer="4"))
    defaulted = report(emulator, realm, access, "TrialBalance")
    assert defaulted["Header"]["DateMacro"] == "this month-to-date"
    assert defaulted["Header"]["StartPeriod"] == today(emulator).replace(day=1).isoformat()


def test_reports_are_counted(emulator, books):
    realm, access = books
    admin = emulator.admin
    admin.reset_counts()
    for name in SAMPLE:
        report(emulator, realm, access, name)
    get(emulator, realm, access, "ProfitAndLoss", accounting_method="Cash")
    counts = admin.request_counts(realm)
    assert counts["report"] == len(SAMPLE) + 1 and counts["query"] == 0
    assert admin.minor_versions() == {"75": len(SAMPLE) + 1}
    unauthorized = requests.get(f"{emulator.url}/v3/company/{realm}/reports/TrialBalance", timeout=10)
    assert unauthorized.status_code == 401 and admin.request_counts(realm)["report"] == len(SAMPLE) + 2
