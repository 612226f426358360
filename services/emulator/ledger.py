"""Factories for the ledger beyond sales documents, and the plans that settle documents.

`LedgerGenerator(fake)` makes, from the company's one seeded Random, objects shaped like the
recorded samples: vendors (some inactive and renamed " (deleted)", some 1099 contractors),
employees, classes and departments with a sub-level, new accounts / terms / payment methods /
tax objects for mutations; bills (account and item lines, terms, A/P), bill payments (Check
or CreditCard), purchases (Cash, Check, CreditCard, a credit-card refund with Credit true),
vendor credits, transfers, journal entries (debits equal credits, line Ids from "0", Entity on
some lines, never on A/R or A/P so party balances stay the documents' business), purchase
orders (Open or Closed, linked to the bill that closed them), time activities; payments and
deposits.

`plan_settlements` decides, in time order, which payment pays which invoice (or bill payment
which bill): credits applied to the document they were raised against, then full, partial and
multi-document payments, payments with nothing left to pay staying unapplied. `materialize`
turns a plan into Payment / BillPayment objects and applies them with `books.settle`, so every
document's Balance is its TotalAmt minus the lines that link it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from services.emulator.books import settle
from services.emulator.chart import TERM_DAYS, Picker, account_obj
from services.emulator.fake import ADJ, DAY, FAMILY, GIVEN, SUFFIXES, USD, ZERO, Faker, cents, metadata
from services.emulator.jsontext import fmt_date, fmt_ts, money

__all__ = ["LedgerGenerator", "Made", "Plan", "plan_settlements", "materialize", "ledger_sizes", "SIZED",
           "name_ref", "line_ex"]

# entity: (per invoice, at least when there are invoices)
_PER_INVOICE = {"Payment": (0.8, 2), "SalesReceipt": (0.1, 2), "CreditMemo": (0.05, 1), "RefundReceipt": (0.02, 1),
                "Deposit": (0.1, 2), "Transfer": (0.02, 1), "Bill": (0.4, 2), "BillPayment": (0.3, 1),
                "Purchase": (0.4, 4), "VendorCredit": (0.03, 1), "JournalEntry": (0.1, 2),
                "PurchaseOrder": (0.05, 2), "TimeActivity": (0.1, 2)}
# name lists: (per invoice, at least)
_LISTS = {"Vendor": (0.04, 4), "Employee": (0.002, 3), "Class": (0.0, 5), "Department": (0.0, 4)}
SIZED = (*_LISTS, *_PER_INVOICE)
_SUPPLIES = ["Lumber and Building Materials", "Hardware", "Properties", "Insurance Agency", "Telephone",
             "Gas and Oil", "Nursery", "Office Supply", "Equipment Rental", "Electric Co.", "Water Works",
             "Sprinkler Supply", "Tree Service", "Concrete", "Printing"]
# name, parent index, active (an inactive one renamed as QBO renames it)
_CLASSES = (("Landscaping", None, True), ("Maintenance", None, True), ("Design", None, True),
            ("Residential", 0, True), ("Commercial", 0, False))
_DEPARTMENTS = (("Downtown", None, True), ("Midtown", None, True), ("Uptown", None, False), ("North", 1, True))
_NOTES = ["Lumber", "Fuel", "Crew lunch", "Office supplies", "Monthly rent", "Phone bill", "Equipment hire",
          "Garden supplies", "Advertising flyers", "Insurance premium", "Bank fee", "Concrete mix"]
_METHOD_NAMES = ["Venmo", "PayPal", "Zelle", "ACH", "Wire", "Money order"]
_CUSTOM_FIELDS = [{"DefinitionId": "1", "Name": "Crew #", "Type": "StringType"},
                  {"DefinitionId": "2", "Name": "Sales Rep", "Type": "StringType"}]
_SHIP_TO = {"Line1": "2700 Coast Ave", "City": "Mountain View", "CountrySubDivisionCode": "CA", "PostalCode": "94043"}
_NV = "{http://schema.intuit.com/finance/v3}NameValue"


def ledger_sizes(invoices: int, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """How many of each new entity a company gets: proportional to `invoices` (transactions none
    without invoices, name lists a few always), overridden per QBO entity name by `sizes`."""
    out = {e: max(floor, round(ratio * invoices)) if invoices else 0 for e, (ratio, floor) in _PER_INVOICE.items()}
    out.update({e: max(floor, round(ratio * invoices)) for e, (ratio, floor) in _LISTS.items()})
    if not isinstance(sizes or {}, dict):
        raise ValueError("sizes must map QBO entity names to counts")
    for entity, count in (sizes or {}).items():
        if entity not in out:
            raise ValueError(f"unknown size {entity!r} (sizes may set {', '.join(SIZED)})")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"size of {entity} must be a whole number >= 0")
        out[entity] = count
    return out


def name_ref(obj: dict[str, Any]) -> dict[str, str]:
    """A reference to a name-list object: its id and display name (Name for lists without one)."""
    return {"value": obj["Id"], "name": obj.get("DisplayName") or obj["Name"]}


def _name_value(name: str, value: str) -> dict[str, Any]:
    return {"name": _NV, "declaredType": "com.intuit.schema.finance.v3.NameValue",
            "scope": "javax.xml.bind.JAXBElement$GlobalScope", "value": {"Name": name, "Value": value},
            "nil": False, "globalScope": True, "typeSubstituted": False}


def line_ex(entity: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The JAXB artifact real Payment lines carry (samples/payment.json): the linked document's
    id, open amount and number as strings."""
    open_amount = doc.get("RemainingCredit" if entity == "CreditMemo" else "Balance", ZERO)
    values = [_name_value("txnId", doc["Id"]), _name_value("txnOpenBalance", str(money(open_amount)))]
    if doc.get("DocNumber"):
        values.append(_name_value("txnReferenceNumber", str(doc["DocNumber"])))
    return {"any": values}


@dataclass
class Made:
    """A generated object with its times, changed in place until the company is served."""

    entity: str
    obj: dict[str, Any]
    created: float
    updated: float

    def touch(self, ts: float, *, bump: bool) -> None:
        """Changed at `ts` (a later time only); `bump` also raises its SyncToken."""
        if ts > self.updated:
            self.updated = ts
            self.obj["MetaData"]["LastUpdatedTime"] = fmt_ts(ts)
        if bump:
            self.obj["SyncToken"] = str(int(self.obj["SyncToken"]) + 1)


@dataclass
class Plan:
    """One settlement to make: when, for whom, what it pays and what it takes from credits."""

    time: float
    party: dict[str, Any]
    docs: list[tuple[Made, Decimal]] = field(default_factory=list)
    credits: list[tuple[Made, Decimal]] = field(default_factory=list)
    extra: Decimal = ZERO  # paid beyond the documents: a Payment's UnappliedAmt

    @property
    def total(self) -> Decimal:
        return money(sum((a for _d, a in self.docs), ZERO) - sum((a for _c, a in self.credits), ZERO) + self.extra)


def plan_settlements(rng: random.Random, docs: list[Made], pairs: list[tuple[Made, Made]], count: int, *,
                     parties: dict[str, dict[str, Any]], party_key: str, limit: float,
                     unapplied: bool) -> list[Plan]:
    """`count` settlements of the open `docs`, oldest first. Each (credit, document) pair is
    applied first (the credit against the document it was raised for), then payments pick open
    documents: 70 % pay one in full, the rest part of it, some in full with more of the same
    party's; when nothing is open, a payment stays unapplied (if `unapplied`) or is not made."""
    remaining = {id(d): money(d.obj["Balance"]) for d in docs if d.obj["Balance"] > 0}
    last = {id(d): d.created for d in docs}
    pool = [d for d in docs if id(d) in remaining]
    at = {id(d): n for n, d in enumerate(pool)}
    by_party: dict[str, list[Made]] = {}
    for d in pool:
        by_party.setdefault(d.obj[party_key]["value"], []).append(d)

    def when(group: list[Made], earliest: float) -> float:
        after = max([earliest, *(last[id(d)] for d in group)])
        return float(int(max(min(after + rng.uniform(0.3, 9) * DAY, limit), after + 60)))

    def take(doc: Made, amount: Decimal, ts: float) -> None:
        remaining[id(doc)] -= amount
        last[id(doc)] = ts
        if remaining[id(doc)] <= 0:  # swap-remove: a big company has tens of thousands open
            moved = pool[-1]
            pool[at[id(doc)]] = moved
            at[id(moved)] = at.pop(id(doc))
            pool.pop()
            by_party[doc.obj[party_key]["value"]].remove(doc)

    plans: list[Plan] = []
    for credit, doc in pairs[:count]:
        amount = min(money(credit.obj["TotalAmt"]), remaining.get(id(doc), ZERO))
        if amount <= 0:
            continue
        ts = when([doc], credit.created)
        take(doc, amount, ts)
        plans.append(Plan(ts, parties[doc.obj[party_key]["value"]], [(doc, amount)], [(credit, amount)]))
    payers = [p for p in parties.values() if p.get("Active", True)]
    while len(plans) < count:
        if not pool:
            if not unapplied or not payers:
                break
            plans.append(Plan(float(int(limit - rng.uniform(0, 15) * DAY)), rng.choice(payers),
                              extra=cents(rng.randint(5000, 100000))))
            continue
        doc = pool[rng.randrange(len(pool))]
        rest = remaining[id(doc)]
        amount = money(rest * Decimal(rng.randint(20, 80)) / 100) if rng.random() < 0.3 and rest >= 2 else rest
        group = [(doc, amount)]
        if amount == rest and rng.random() < 0.15:
            group += [(d, remaining[id(d)]) for d in by_party[doc.obj[party_key]["value"]] if d is not doc][:2]
        ts = when([d for d, _a in group], 0.0)
        for d, a in group:
            take(d, a, ts)
        plans.append(Plan(ts, parties[doc.obj[party_key]["value"]], group))
    plans.sort(key=lambda p: p.time)
    return plans


def materialize(plans: list[Plan], entity: str, make: Callable[[int, Plan], dict[str, Any]],
                first_id: int = 1) -> list[Made]:
    """Settlement objects for `plans` (ids in time order from `first_id`), each applied to the
    documents and credits it links (their Balance, LinkedTxn, LastUpdatedTime and SyncToken)."""
    out = []
    for n, plan in enumerate(plans):
        obj = make(first_id + n, plan)
        for target, amount in (*plan.docs, *plan.credits):
            settle(target.entity, target.obj, entity, obj["Id"], ZERO, amount)
            target.touch(plan.time, bump=True)
        out.append(Made(entity, obj, plan.time, plan.time))
    return out


class LedgerGenerator:
    """Object factories for one company, sharing its Faker (and so its Random and used names)."""

    def __init__(self, fake: Faker) -> None:
        self.fake = fake
        self.rng = fake.rng
        self._checks = 100

    def _head(self, oid: int, created: float, updated: float) -> dict[str, Any]:
        return {"domain": "QBO", "sparse": False, "Id": str(oid), "SyncToken": self.fake.sync_token(created, updated),
                "MetaData": metadata(created, updated)}

    def next_check(self) -> str:
        """The next check number (bill payments and check purchases share the checkbook)."""
        self._checks += 1
        return str(self._checks)

    # ---- name lists ------------------------------------------------------------------------
    def vendor(self, vid: int, created: float, updated: float, *, index: int = 10**9,
               active: bool | None = None) -> dict[str, Any]:
        """A Vendor shaped like samples/vendor.json; inactive ones renamed " (deleted)", contractors 1099."""
        rng, fake = self.rng, self.fake
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        pattern = rng.randrange(4)
        company = (f"{family} {rng.choice(_SUPPLIES)}" if pattern == 0 else
                   f"{rng.choice(ADJ)} {rng.choice(_SUPPLIES)}" if pattern == 1 else
                   f"{family} & {rng.choice(FAMILY)} {rng.choice(SUFFIXES)}" if pattern == 2 else None)
        name = fake.unique(company or f"{given} {family}")
        if active is None:
            active = index % 10 != 3 and rng.random() >= 0.03
        obj: dict[str, Any] = {"BillAddr": fake.address()}
        if rng.random() < 0.3:
            obj["TermRef"] = {"value": rng.choice(["2", "3"])}
        obj["Balance"] = ZERO
        if rng.random() < 0.6:
            obj["AcctNum"] = f"{rng.randint(1000, 99999999):09d}"
        obj.update({"Vendor1099": company is None or index % 4 == 1, "CurrencyRef": dict(USD),
                    **self._head(vid, created, updated), "GivenName": given, "FamilyName": family})
        if company is not None:
            obj["CompanyName"] = name
        obj.update({"DisplayName": name if active else f"{name} (deleted)", "PrintOnCheckName": name,
                    "Active": active, "PrimaryPhone": fake.phone()})
        if rng.random() < 0.7:
            obj["PrimaryEmailAddr"] = fake.email(given, family)
        return obj

    def employee(self, eid: int, created: float, updated: float, *, index: int = 10**9,
                 active: bool | None = None) -> dict[str, Any]:
        """An Employee shaped like samples/employee*.json (an inactive one renamed and released)."""
        rng, fake = self.rng, self.fake
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        name = fake.unique(f"{given} {family}")
        if active is None:
            active = index % 7 != 2
        billable = rng.random() < 0.4
        obj: dict[str, Any] = {"BillableTime": billable}
        if billable:
            obj["BillRate"] = cents(rng.randint(35, 125) * 100)
        if rng.random() < 0.5:
            obj["BirthDate"] = fmt_date(created - rng.randint(20, 60) * 365 * DAY)
        obj["HiredDate"] = fmt_date(created - rng.randint(30, 3000) * DAY)
        if not active:
            obj["ReleasedDate"] = fmt_date(updated)
        obj.update({**self._head(eid, created, updated), "GivenName": given, "FamilyName": family,
                    "DisplayName": name if active else f"{name} (deleted)", "PrintOnCheckName": name,
                    "Active": active, "PrimaryPhone": fake.phone()})
        if rng.random() < 0.6:
            obj["PrimaryEmailAddr"] = fake.email(given, family)
        return obj

    def list_entry(self, entity: str, oid: int, created: float, updated: float, name: str,
                   parent: dict[str, Any] | None, *, active: bool = True) -> dict[str, Any]:
        """A Class or Department (samples/*_docs_example.json); a sub-level carries ParentRef
        and the colon-joined FullyQualifiedName; an inactive one is renamed " (deleted)"."""
        head = self._head(oid, created, updated)
        if not active:
            name = f"{name} (deleted)"
        obj: dict[str, Any] = {"FullyQualifiedName": f"{parent['FullyQualifiedName']}:{name}" if parent else name,
                               "domain": "QBO", "Name": name, "SyncToken": head["SyncToken"],
                               "SubClass" if entity == "Class" else "SubDepartment": parent is not None}
        if parent is not None:
            obj["ParentRef"] = {"value": parent["Id"]}
        obj.update({"sparse": False, "Active": active, "Id": str(oid), "MetaData": head["MetaData"]})
        return obj

    def list_entries(self, entity: str, first_id: int, count: int, created: float) -> list[tuple[dict[str, Any], float]]:
        """`count` Classes (from `first_id`: QBO's long class ids) or Departments, a minute apart
        from `created` (with that time), the first from a fixed tree with a sub-level and an
        inactive row."""
        names = _CLASSES if entity == "Class" else _DEPARTMENTS
        out: list[tuple[dict[str, Any], float]] = []
        for i in range(count):
            name, parent, active = names[i] if i < len(names) else (f"Region {i + 1}", None, True)
            ts = created + i * 60
            out.append((self.list_entry(entity, first_id + i, ts, ts, name,
                                        out[parent][0] if parent is not None else None, active=active), ts))
        return out

    def new_list_entry(self, entity: str, oid: int, now: float, taken: set[str]) -> dict[str, Any]:
        """A new top-level Class or Department (a mutation's create)."""
        name = self.fake.unique(f"{self.rng.choice(ADJ)} {'Projects' if entity == 'Class' else 'Office'}", taken)
        return self.list_entry(entity, oid, now, now, name, None)

    def new_fixed(self, entity: str, oid: int, now: float, taken: set[str],
                  picker: Picker) -> dict[str, Any]:
        """A new Account (an expense account), Term, PaymentMethod, TaxAgency, TaxRate or TaxCode."""
        rng = self.rng
        fresh = self.fake.unique
        head = self._head(oid, now, now)
        if entity == "Account":
            return account_obj(str(oid), fresh(f"{rng.choice(ADJ)} Expenses", taken), None, "Expense", "SuppliesMaterials",
                               now)
        if entity == "Term":
            days = rng.choice([7, 10, 20, 21, 75, 120])
            return {"Name": fresh(f"Net {days}", taken), "Active": True, "Type": "STANDARD", "DueDays": days,
                    "DiscountDays": 0, **head}
        if entity == "PaymentMethod":
            return {"Name": fresh(rng.choice(_METHOD_NAMES), taken), "Active": True, "Type": "NON_CREDIT_CARD", **head}
        city = rng.choice(["Tucson", "Phoenix", "San Jose", "Oakland", "Fresno"])
        if entity == "TaxAgency":
            return {"TaxTrackedOnPurchases": False, "TaxTrackedOnSales": True, **head,
                    "DisplayName": fresh(f"{city} Tax Department", taken)}
        if entity == "TaxRate":
            agency = picker.pick("TaxAgency")  # there is always one: agencies are never deleted nor inactive
            return {"Name": fresh(f"{city} City", taken), "Description": "Sales Tax", "Active": True,
                    "RateValue": Decimal(rng.randint(5, 30)) / 10, "AgencyRef": {"value": agency["Id"] if agency else "2"},
                    "SpecialTaxType": "NONE", "DisplayType": "ReadOnly", **head}
        rate = picker.pick("TaxRate")
        details = [{"TaxRateRef": name_ref(rate), "TaxTypeApplicable": "TaxOnAmount", "TaxOrder": 0}] if rate else []
        name = fresh(city, taken)
        return {"Name": name, "Description": name, "Active": True, "Taxable": True, "TaxGroup": True,
                "SalesTaxRateList": {"TaxRateDetail": details}, "PurchaseTaxRateList": {"TaxRateDetail": []}, **head}

    # ---- purchases -------------------------------------------------------------------------
    def expense_lines(self, picker: Picker, *, numbered: bool, item_share: float = 0.3,
                      cap: Decimal | None = None) -> tuple[list[dict[str, Any]], Decimal]:
        """1-3 expense lines (an inventory item bought, or an expense account, sometimes billable
        to a customer, sometimes with a class) and their total (a single line of at most `cap`)."""
        rng = self.rng
        lines: list[dict[str, Any]] = []
        total = ZERO
        for n in range(1, (1 if cap is not None else rng.choice((1, 1, 1, 2, 2, 3))) + 1):
            item = picker.pick("Item", _inventory) if cap is None and rng.random() < item_share else None
            customer = picker.pick("Customer") if rng.random() < 0.25 else None
            detail: dict[str, Any] = {"CustomerRef": name_ref(customer)} if customer else {}
            status = rng.choice(["Billable", "HasBeenBilled"]) if customer else "NotBillable"
            line: dict[str, Any] = {"Id": str(n), "LineNum": n} if numbered else {"Id": str(n)}
            if item is not None:
                qty = rng.randint(1, 20)
                price = money(item["PurchaseCost"] or item["UnitPrice"] / 2)
                amount = money(price * qty)
                detail.update({"BillableStatus": status, "ItemRef": {"value": item["Id"], "name": item["Name"]},
                               "UnitPrice": price, "Qty": qty, "TaxCodeRef": {"value": "NON"}})
                line.update({"Description": item.get("Description", item["Name"]), "Amount": amount,
                             "DetailType": "ItemBasedExpenseLineDetail", "ItemBasedExpenseLineDetail": detail})
            else:
                amount = cents(rng.randint(1000, 250000))
                if cap is not None:
                    amount = max(min(amount, cap), Decimal("0.01"))
                detail["AccountRef"] = picker.account("job" if customer else "expense")
                klass = picker.pick("Class") if rng.random() < 0.2 else None
                if klass is not None:
                    detail["ClassRef"] = name_ref(klass)
                detail.update({"BillableStatus": status, "TaxCodeRef": {"value": "NON"}})
                if rng.random() < 0.6:
                    line["Description"] = rng.choice(_NOTES)
                line.update({"Amount": amount, "DetailType": "AccountBasedExpenseLineDetail",
                             "AccountBasedExpenseLineDetail": detail})
            lines.append(line)
            total += amount
        return lines, money(total)

    def _department(self, obj: dict[str, Any], picker: Picker, share: float) -> None:
        if self.rng.random() < share:
            department = picker.pick("Department")
            if department is not None:
                obj["DepartmentRef"] = name_ref(department)

    def bill(self, bid: int, created: float, updated: float, vendor: dict[str, Any], picker: Picker) -> dict[str, Any]:
        """A Bill (samples/bill.json, bill_item_based.json), open: Balance = TotalAmt."""
        rng = self.rng
        lines, total = self.expense_lines(picker, numbered=True)
        days = rng.choice([15, 30, 30, 45])
        obj: dict[str, Any] = {"SalesTermRef": {"value": TERM_DAYS[days]}} if rng.random() < 0.7 else {}
        obj.update({"DueDate": fmt_date(created + days * DAY), "Balance": total, **self._head(bid, created, updated)})
        if rng.random() < 0.6:
            obj["DocNumber"] = str(rng.randint(1000, 99999))
        obj["TxnDate"] = fmt_date(created)
        self._department(obj, picker, 0.2)
        obj.update({"CurrencyRef": dict(USD), "Line": lines, "VendorRef": name_ref(vendor),
                    "APAccountRef": picker.account("ap"), "TotalAmt": total})
        return obj

    def vendor_credit(self, vid: int, created: float, updated: float, vendor: dict[str, Any], picker: Picker,
                      cap: Decimal | None = None) -> dict[str, Any]:
        """A VendorCredit (samples/vendorcredit_docs_example.json), unapplied: Balance = TotalAmt."""
        lines, total = self.expense_lines(picker, numbered=False, cap=cap)
        return {**self._head(vid, created, updated), "TxnDate": fmt_date(created), "CurrencyRef": dict(USD),
                "Line": lines, "VendorRef": name_ref(vendor), "APAccountRef": picker.account("ap"),
                "TotalAmt": total, "Balance": total}

    def bill_payment(self, bpid: int, plan: Plan, picker: Picker) -> dict[str, Any]:
        """A BillPayment (samples/billpayment_*.json) of `plan`: Check from Checking or CreditCard
        on the Mastercard; one line per bill or vendor credit it links."""
        total = plan.total
        check = total == 0 or self.rng.random() < 0.7
        obj: dict[str, Any] = {"VendorRef": name_ref(plan.party), "PayType": "Check" if check else "CreditCard"}
        if check:
            obj["CheckPayment"] = {"BankAccountRef": picker.account("checking"),
                                   "PrintStatus": self.rng.choice(["NotSet", "NeedToPrint", "PrintComplete"])}
        else:
            obj["CreditCardPayment"] = {"CCAccountRef": picker.account("card")}
        obj.update({"TotalAmt": total, **self._head(bpid, plan.time, plan.time), "DocNumber": self.next_check(),
                    "TxnDate": fmt_date(plan.time), "CurrencyRef": dict(USD),
                    "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": doc.obj["Id"], "TxnType": doc.entity}]}
                             for doc, amount in (*plan.docs, *plan.credits)]})
        return obj

    def purchase(self, pid: int, created: float, updated: float, picker: Picker, *, kind: str,
                 credit: bool = False) -> dict[str, Any]:
        """A Purchase (samples/purchase_creditcard.json; Cash and Check from Checking, a check
        numbered from the checkbook); `credit` is a credit-card refund."""
        rng = self.rng
        lines, total = self.expense_lines(picker, numbered=False)
        obj: dict[str, Any] = {"AccountRef": picker.account("card" if kind == "CreditCard" else "checking"),
                               "PaymentType": kind}
        payee_type = rng.choices(["Vendor", "Customer", "Employee"], weights=[8, 1, 1])[0]
        payee = picker.pick(payee_type)
        if payee is not None:
            obj["EntityRef"] = {**name_ref(payee), "type": payee_type}
        if kind == "CreditCard":
            obj["Credit"] = credit
        obj["TotalAmt"] = total
        if kind == "CreditCard":
            obj["PurchaseEx"] = {"any": [_name_value("TxnType", "1")]}
        obj.update(self._head(pid, created, updated))
        if kind == "Check":
            obj["DocNumber"] = self.next_check()
        obj["TxnDate"] = fmt_date(created)
        self._department(obj, picker, 0.2)
        obj["CurrencyRef"] = dict(USD)
        if rng.random() < 0.4:
            obj["PrivateNote"] = rng.choice(_NOTES)
        obj["Line"] = lines
        return obj

    def purchase_order(self, pid: int, doc: str, created: float, updated: float, vendor: dict[str, Any],
                       picker: Picker, closed_by: str | None) -> dict[str, Any]:
        """A PurchaseOrder (samples/purchaseorder.json): item lines mostly; Closed and linked to
        the Bill `closed_by` when one came of it."""
        lines, total = self.expense_lines(picker, numbered=True, item_share=0.9)
        obj: dict[str, Any] = {"VendorAddr": dict(vendor.get("BillAddr") or self.fake.address()),
                               "ShipAddr": {"Id": "1", **_SHIP_TO},
                               "POStatus": "Closed" if closed_by else self.rng.choice(["Open", "Open", "Closed"]),
                               **self._head(pid, created, updated), "CustomField": [dict(f) for f in _CUSTOM_FIELDS],
                               "DocNumber": doc, "TxnDate": fmt_date(created), "CurrencyRef": dict(USD)}
        if closed_by:
            obj["LinkedTxn"] = [{"TxnId": closed_by, "TxnType": "Bill"}]
        obj.update({"Line": lines, "VendorRef": name_ref(vendor), "APAccountRef": picker.account("ap"),
                    "TotalAmt": total})
        return obj

    # ---- money in and between accounts --------------------------------------------------------
    def payment(self, pid: int, plan: Plan, picker: Picker) -> dict[str, Any]:
        """A Payment (samples/payment*.json) of `plan`: most into Undeposited Funds (a credit
        application, TotalAmt 0, always), one line per invoice or credit memo it links."""
        rng = self.rng
        total = plan.total
        method = picker.pick("PaymentMethod") if total > 0 else None
        into = picker.account("undeposited" if total == 0 or rng.random() < 0.85 else "checking")
        obj: dict[str, Any] = {"CustomerRef": name_ref(plan.party), "DepositToAccountRef": {"value": into["value"]}}
        if method is not None:
            obj["PaymentMethodRef"] = {"value": method["Id"]}
            if method["Name"] == "Check":
                obj["PaymentRefNum"] = str(rng.randint(1000, 9999))
        obj.update({"TotalAmt": total, "UnappliedAmt": plan.extra, "ProcessPayment": False,
                    **self._head(pid, plan.time, plan.time), "TxnDate": fmt_date(plan.time), "CurrencyRef": dict(USD),
                    "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": doc.obj["Id"], "TxnType": doc.entity}],
                              "LineEx": line_ex(doc.entity, doc.obj)} for doc, amount in (*plan.docs, *plan.credits)]})
        return obj

    def deposit_line(self, entity: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A deposit line carrying a payment or sales receipt out of Undeposited Funds
        (samples/deposit*.json: LinkedTxn, sometimes a DepositLineDetail without DetailType)."""
        line: dict[str, Any] = {"Amount": obj["TotalAmt"],
                                "LinkedTxn": [{"TxnId": obj["Id"], "TxnType": entity, "TxnLineId": "0"}]}
        method = obj.get("PaymentMethodRef")
        if method and self.rng.random() < 0.5:
            line["DepositLineDetail"] = {"PaymentMethodRef": {"value": method["value"]}}
            if obj.get("PaymentRefNum"):
                line["DepositLineDetail"]["CheckNum"] = obj["PaymentRefNum"]
        return line

    def direct_line(self, n: int, account: dict[str, str], amount: Decimal,
                    customer: dict[str, Any] | None = None) -> dict[str, Any]:
        """A deposit line straight to an account (samples/deposit_account_line.json)."""
        detail: dict[str, Any] = {}
        if customer is not None:
            detail["Entity"] = {**name_ref(customer), "type": "CUSTOMER"}
        detail["AccountRef"] = account
        return {"Id": str(n), "LineNum": n, "Amount": amount, "DetailType": "DepositLineDetail",
                "DepositLineDetail": detail}

    def deposit(self, did: int, created: float, to: dict[str, str], lines: list[dict[str, Any]], picker: Picker,
                *, cashback: bool = False, note: str | None = None) -> dict[str, Any]:
        """A Deposit of `lines` into `to`; with `cashback` a quarter goes to Savings
        (samples/deposit_cashback.json: TotalAmt = lines - CashBack.Amount)."""
        gross = money(sum((ln["Amount"] for ln in lines), ZERO))
        obj: dict[str, Any] = {"DepositToAccountRef": to}
        if cashback:
            obj["CashBack"] = {"AccountRef": picker.account("savings"), "Amount": money(gross / 4),
                               "Memo": "Money to savings"}
            gross -= obj["CashBack"]["Amount"]
        obj.update({"TotalAmt": gross, **self._head(did, created, created), "TxnDate": fmt_date(created),
                    "CurrencyRef": dict(USD)})
        if note:
            obj["PrivateNote"] = note
        obj["Line"] = lines
        return obj

    def transfer(self, tid: int, created: float, updated: float, picker: Picker) -> dict[str, Any]:
        """A Transfer (samples/transfer.json) between the bank accounts, or paying the card."""
        rng = self.rng
        source, target = rng.choice([("checking", "savings"), ("savings", "checking"), ("checking", "card")])
        obj: dict[str, Any] = {"FromAccountRef": picker.account(source), "ToAccountRef": picker.account(target),
                               "Amount": cents(rng.randint(5000, 500000)), **self._head(tid, created, updated),
                               "TxnDate": fmt_date(created), "CurrencyRef": dict(USD)}
        if rng.random() < 0.5:
            obj["PrivateNote"] = "Paying the card" if target == "card" else "Move between accounts"
        return obj

    def journal_entry(self, jid: int, doc: str | None, created: float, updated: float, picker: Picker, *,
                      opening: bool = False) -> dict[str, Any]:
        """A JournalEntry (samples/journalentry*.json): the opening balances, or a reclass, a loan,
        an inventory adjustment, a split card expense or depreciation; debits equal credits."""
        rng = self.rng
        lines = self._journal_lines(picker, opening)
        obj: dict[str, Any] = {"Adjustment": not opening and rng.random() < 0.3, **self._head(jid, created, updated)}
        if doc:
            obj["DocNumber"] = doc
        obj.update({"TxnDate": fmt_date(created), "CurrencyRef": dict(USD)})
        if opening:
            obj["PrivateNote"] = "Opening Balance"
        out = []
        for n, (posting, account, amount, text, entity) in enumerate(lines):
            detail: dict[str, Any] = {"PostingType": posting, "AccountRef": account}
            if entity is not None:
                detail["Entity"] = {"Type": entity[0], "EntityRef": name_ref(entity[1])}
            if not opening and rng.random() < 0.2:
                klass = picker.pick("Class")
                if klass is not None:
                    detail["ClassRef"] = name_ref(klass)
            out.append({"Id": str(n), "Description": text, "Amount": amount, "DetailType": "JournalEntryLineDetail",
                        "JournalEntryLineDetail": detail})
        obj.update({"Line": out, "TxnTaxDetail": {}})
        return obj

    def _journal_lines(self, picker: Picker, opening: bool
                       ) -> list[tuple[str, dict[str, str], Decimal, str, tuple[str, dict[str, Any]] | None]]:
        rng = self.rng
        if opening:
            cash, truck = cents(rng.randint(25000, 60000) * 100), Decimal("13495.00")
            return [("Debit", picker.account("checking"), cash, "Opening Balance", None),
                    ("Debit", picker.account("truck"), truck, "Opening Balance", None),
                    ("Credit", picker.account("opening"), cash + truck, "Opening Balance", None)]
        kind = rng.choice(["reclass", "loan", "inventory", "split", "depreciation"])
        customer = picker.pick("Customer")
        on_customer = ("Customer", customer) if customer is not None and rng.random() < 0.5 else None
        if kind == "reclass":
            amount = cents(rng.randint(5000, 200000))
            return [("Debit", picker.account("job"), amount, "Reclassify job costs", on_customer),
                    ("Credit", picker.account("expense"), amount, "Reclassify job costs", None)]
        if kind == "loan":
            amount = cents(rng.randint(5000, 25000) * 100)
            vendor = picker.pick("Vendor")
            return [("Debit", picker.account("checking"), amount, "Loan proceeds", None),
                    ("Credit", picker.account("notes"), amount, "Loan proceeds",
                     ("Vendor", vendor) if vendor is not None else None)]
        if kind == "inventory":
            amount = cents(rng.randint(1000, 20000))
            return [("Debit", picker.account("job"), amount, "Inventory adjustment", on_customer),
                    ("Credit", picker.account("inventory"), amount, "Inventory adjustment", None)]
        if kind == "split":
            first, second = cents(rng.randint(1000, 90000)), cents(rng.randint(1000, 90000))
            return [("Debit", picker.account("expense"), first, "Card statement", None),
                    ("Debit", picker.account("expense"), second, "Card statement", None),
                    ("Credit", picker.account("card"), first + second, "Card statement", None)]
        amount = cents(rng.randint(10000, 60000))
        return [("Debit", picker.account("depreciation"), amount, "Truck depreciation", None),
                ("Credit", picker.account("truck_depreciation"), amount, "Truck depreciation", None)]

    def time_activity(self, tid: int, created: float, updated: float, picker: Picker) -> dict[str, Any]:
        """A TimeActivity (samples/timeactivity*.json) of an employee or a vendor, billable to a
        customer or not, with an hourly rate."""
        rng = self.rng
        vendor = picker.pick("Vendor", lambda v: bool(v.get("Vendor1099"))) if rng.random() < 0.2 else None
        worker = vendor or picker.pick("Employee") or picker.pick("Vendor")
        customer = picker.pick("Customer") if rng.random() < 0.8 else None
        item = picker.pick("Item", lambda i: i.get("Type") == "Service")
        status = rng.choice(["Billable", "Billable", "NotBillable", "HasBeenBilled"]) if customer else "NotBillable"
        obj: dict[str, Any] = {"TxnDate": fmt_date(created)}
        if worker is not None:
            kind = "Vendor" if "Vendor1099" in worker else "Employee"
            obj.update({"NameOf": kind, f"{kind}Ref": name_ref(worker)})
        if customer is not None:
            obj["CustomerRef"] = name_ref(customer)
        if item is not None:
            obj["ItemRef"] = {"value": item["Id"], "name": item["Name"]}
        rate = ZERO
        if status != "NotBillable":
            rate = money((item or {}).get("UnitPrice") or (worker or {}).get("BillRate") or cents(7500))
        hours = rng.randint(0, 8)
        obj.update({"BillableStatus": status, "Taxable": False, "HourlyRate": rate, "Hours": hours,
                    "Minutes": rng.choice([15, 30, 45]) if hours == 0 else rng.choice([0, 0, 15, 30, 45]),
                    "Description": (item or {}).get("Description", "Labor"), **self._head(tid, created, updated)})
        return obj


def _inventory(item: dict[str, Any]) -> bool:
    return item.get("Type") == "Inventory"
