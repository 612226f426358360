"""Deterministic generator of realistic, Intuit-shaped QBO companies whose books balance.

`CompanyGenerator(seed)` produces the same objects for the same seed, sizes and `now`
(everything comes from one seeded `random.Random`). Objects follow the recorded samples in
shared/qbo/samples (key order included): customers with unique, varied DisplayNames
(accents, apostrophes, CJK, ampersands), ~5% inactive, one in eight a job (sub-customer) of
an earlier customer; Service/Inventory/NonInventory items; invoices with 1-4 item lines, a
SubTotal line, sometimes a discount line, a class, a department, terms, consistent totals and
at least one voided invoice; estimates in every TxnStatus; sales receipts, credit memos and
refund receipts. With `sales_tax` the sales documents of taxable customers billed in CA or AZ
carry TxnTaxDetail (TotalAmt = lines - discount + tax); without it their tax is 0.

`generate_company` builds a whole company around them (services/emulator/ledger.py for the
rest of the ledger): payments settle invoices and credit memos (each invoice's Balance is its
TotalAmt minus the payment lines linking it), deposits take payments and sales receipts out of
Undeposited Funds, bill payments settle bills and vendor credits, and Customer.Balance,
Vendor.Balance and the balance-sheet accounts' CurrentBalance are computed from the documents
(services/emulator/books.py). Money is always a two-place Decimal. Times are epoch seconds;
MetaData strings use the company's Pacific offset (-08:00, -07:00 in daylight saving time).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from services.emulator.books import deposited, party_effects, postings, void_document
from services.emulator.chart import (
    TERM_DAYS,
    ListPicker,
    Picker,
    fixed_lists,
    sales_tax_rate_max,
    tax_code_for,
    tax_detail,
    term_ref,
)
from services.emulator.fake import ADJ, DAY, FAMILY, GIVEN, SUFFIXES, TRADES, USD, ZERO, Faker, cents, metadata, slug
from services.emulator.jsontext import fmt_date, fmt_ts, money
from services.emulator.ledger import LedgerGenerator, Made, Plan, ledger_sizes, materialize, name_ref, plan_settlements
from services.emulator.traits import ENTITIES, TRAITS

__all__ = ["CompanyGenerator", "SPECIAL_CUSTOMER_NAMES", "generate_company", "retotal_sales", "USD", "DAY"]

SPECIAL_CUSTOMER_NAMES = [
    "Café Müller", "O'Brien's Plumbing", "東京商事", "Smith & Sons Landscaping",
    "Zoë's Crème Brûlée", "Jäger & Björk AB", "D'Angelo Pizzería", "北京贸易有限公司",
    "Łódź Textiles", "São Paulo Café & Co.", "Ñandú Imports", "Amy's Bird Sanctuary",
    "Müller-Lüdenscheidt GmbH", "대한 무역", "Crêperie du Coin",
]
_ITEMS = [("Design", "Service", "Custom Design"), ("Installation", "Service", "Installation of landscape design"),
          ("Rock Fountain", "Inventory", "Rock Fountain"), ("Pest Control", "Service", "Pest Control Services"),
          ("Gardening", "Service", "Weekly Gardening Service"), ("Hours", "Service", "Hourly labor"),
          ("Lighting", "NonInventory", "Garden Lighting"), ("Maintenance & Repair", "Service", "Maintenance & Repair"),
          ("Sprinklers", "Inventory", "Sprinkler Heads"), ("Pump", "Inventory", "Fountain Pump"),
          ("Concrete", "Service", "Concrete for fountain installation"), ("Trimming", "Service", "Tree and Shrub Trimming"),
          ("Rocks", "NonInventory", "Garden Rocks"), ("Sod", "NonInventory", "Sod"), ("Soil", "NonInventory", "2 cubic ft. bag"),
          ("Café Crème Blend", "Inventory", "Café crème coffee, 1 kg"), ("Consulting", "Service", "Consulting (per hour)")]
_ITEM_NOUNS = ["Widget", "Gadget", "Bracket", "Valve", "Panel", "Hinge", "Filter", "Cable", "Lamp",
               "Planter", "Bench", "Tile", "Paver", "Trellis", "Hose"]
_INCOME = {"Service": {"value": "1", "name": "Services"},
           "Inventory": {"value": "79", "name": "Sales of Product Income"},
           "NonInventory": {"value": "79", "name": "Sales of Product Income"}}
_EXPENSE = {"value": "80", "name": "Cost of Goods Sold"}
_ASSET = {"value": "81", "name": "Inventory Asset"}
_DISCOUNT_ACCOUNT = {"value": "86", "name": "Discounts given"}
_CUSTOM_FIELD = [{"DefinitionId": "1", "Name": "Crew #", "Type": "StringType"}]
_MEMO = {"value": "Thank you for your business and have a great day!"}
_PROJECTS = ["Ocean View Road", "Backyard Remodel", "Patio", "Front Garden", "Office Park", "Rooftop Terrace",
             "Pool House", "Orchard", "Courtyard", "Driveway"]


class CompanyGenerator(Faker):
    """One company's object factory; all randomness comes from `random.Random(seed)`."""

    def __init__(self, seed: int, *, sales_tax: bool = False) -> None:
        super().__init__(random.Random(seed))
        self.seed = seed
        self.sales_tax = sales_tax
        self.item_names: set[str] = set()
        self.ledger = LedgerGenerator(self)

    # ---- name lists -------------------------------------------------------------------
    def _unique_display_name(self, index: int) -> tuple[str, str, str, str | None]:
        rng = self.rng
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        if index < len(SPECIAL_CUSTOMER_NAMES) and SPECIAL_CUSTOMER_NAMES[index] not in self.names:
            return SPECIAL_CUSTOMER_NAMES[index], given, family, SPECIAL_CUSTOMER_NAMES[index]
        for attempt in range(50):
            pattern = rng.randrange(6)
            if pattern == 0:
                name, company = f"{given} {family}", None
            elif pattern == 1:
                name = company = f"{family} {rng.choice(TRADES)}"
            elif pattern == 2:
                name = company = f"{given}'s {rng.choice(TRADES)}"
            elif pattern == 3:
                name = company = f"{family} & {rng.choice(FAMILY)} {rng.choice(SUFFIXES)}"
            elif pattern == 4:
                name = company = f"{rng.choice(ADJ)} {rng.choice(TRADES)}"
            else:
                name = company = f"{family} {rng.choice(TRADES)} {rng.choice(SUFFIXES)}"
            if attempt > 10:
                name = f"{name} {rng.randint(2, 99999)}"
                company = company and name
            if name not in self.names:
                return name, given, family, company
            given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        raise RuntimeError("could not find a unique DisplayName")  # pragma: no cover

    def customer(self, cid: int, created: float, updated: float, *, index: int = 10**9,
                 active: bool | None = None) -> dict[str, Any]:
        """A Customer shaped like samples/customer.json (Balance 0 until invoices add to it)."""
        rng = self.rng
        name, given, family, company = self._unique_display_name(index)
        self.names.add(name)
        if active is None:
            active = rng.random() >= 0.05
        bill = self.address()
        obj: dict[str, Any] = {
            "Taxable": rng.random() < 0.6, "BillAddr": bill,
        }
        if rng.random() < 0.5:
            obj["ShipAddr"] = dict(bill)
        obj.update({
            "Job": False, "BillWithParent": False, "Balance": ZERO, "BalanceWithJobs": ZERO,
            "CurrencyRef": dict(USD), "PreferredDeliveryMethod": rng.choice(["Print", "Email", "None"]),
            "domain": "QBO", "sparse": False, "Id": str(cid), "SyncToken": self.sync_token(created, updated),
            "MetaData": metadata(created, updated),
            "GivenName": given, "FamilyName": family, "FullyQualifiedName": name,
        })
        if company:
            obj["CompanyName"] = company
        obj.update({"DisplayName": name, "PrintOnCheckName": name, "Active": active, "PrimaryPhone": self.phone(),
                    "PrimaryEmailAddr": self.email(given, family)})
        return obj

    def make_job(self, obj: dict[str, Any], parent: dict[str, Any], rng: random.Random) -> None:
        """Turn a generated customer into a sub-customer of `parent` in place
        (samples/customer_job.json): Job, ParentRef without a name, Level 1, the DisplayName a
        project (the leaf), FullyQualifiedName "Parent:Project", the parent's company and address.
        `rng` is a stream of its own, so the seed's other customers and items stay as they were."""
        leaf = f"{rng.randint(0, 9999):04d} {rng.choice(_PROJECTS)}"
        while leaf in self.names:
            leaf = f"{rng.randint(0, 9999):04d} {rng.choice(_PROJECTS)}"
        self.names.add(leaf)
        bill = {**parent["BillAddr"], "Id": self.address_id()}
        job: dict[str, Any] = {
            "Taxable": parent["Taxable"], "BillAddr": bill, "ShipAddr": dict(bill), "Job": True,
            "BillWithParent": rng.random() < 0.3, "ParentRef": {"value": parent["Id"]}, "Level": 1,
            **{k: obj[k] for k in ("Balance", "BalanceWithJobs", "CurrencyRef", "PreferredDeliveryMethod", "domain",
                                   "sparse", "Id", "SyncToken", "MetaData", "GivenName", "FamilyName")},
            "FullyQualifiedName": f"{parent['FullyQualifiedName']}:{leaf}",
        }
        if "CompanyName" in parent:
            job["CompanyName"] = parent["CompanyName"]
        job.update({"DisplayName": leaf, "PrintOnCheckName": parent.get("CompanyName", parent["DisplayName"]),
                    **{k: obj[k] for k in ("Active", "PrimaryPhone", "PrimaryEmailAddr")}})
        obj.clear()
        obj.update(job)

    def item(self, iid: int, created: float, updated: float, *, index: int = 10**9,
             active: bool | None = None) -> dict[str, Any]:
        """An Item (Service, Inventory or NonInventory) shaped like samples/item.json."""
        rng = self.rng
        if index < len(_ITEMS) and _ITEMS[index][0] not in self.item_names:
            name, kind, description = _ITEMS[index]
        else:
            kind = rng.choice(["Service", "Inventory", "NonInventory"])
            name = f"{rng.choice(ADJ)} {rng.choice(_ITEM_NOUNS)}"
            while name in self.item_names:
                name = f"{rng.choice(ADJ)} {rng.choice(_ITEM_NOUNS)} {rng.randint(2, 9999)}"
            description = f"{name} ({kind.lower()})"
        self.item_names.add(name)
        if active is None:
            active = rng.random() >= 0.05
        price = cents(rng.randint(500, 50000))
        cost = cents(rng.randint(100, int(price * 70))) if kind != "Service" else ZERO
        obj: dict[str, Any] = {
            "FullyQualifiedName": name, "domain": "QBO", "Id": str(iid), "Name": name,
            "Sku": f"SKU-{iid:05d}", "TrackQtyOnHand": kind == "Inventory", "Type": kind,
            "PurchaseCost": cost, "IncomeAccountRef": dict(_INCOME[kind]),
        }
        if kind == "Inventory":
            obj["QtyOnHand"] = rng.randint(0, 500)
            obj["AssetAccountRef"] = dict(_ASSET)
            obj["InvStartDate"] = fmt_date(created)
            obj["ExpenseAccountRef"] = dict(_EXPENSE)
        obj.update({
            "Taxable": rng.random() < 0.7, "MetaData": metadata(created, updated), "sparse": False, "Active": active,
            "SyncToken": self.sync_token(created, updated), "UnitPrice": price, "Description": description,
        })
        return obj

    # ---- sales documents --------------------------------------------------------------
    def _line(self, n: int, item: dict[str, Any], qty: int, price: Decimal) -> dict[str, Any]:
        return {"Id": str(n), "LineNum": n, "Description": item.get("Description", item["Name"]),
                "Amount": price * qty, "DetailType": "SalesItemLineDetail",
                "SalesItemLineDetail": {"ItemRef": {"value": item["Id"], "name": item["Name"]},
                                        "UnitPrice": price, "Qty": qty,
                                        "TaxCodeRef": {"value": "TAX" if item.get("Taxable") else "NON"}}}

    def _lines(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """1-4 item lines, the SubTotal line, sometimes a percent discount (totals: retotal_sales)."""
        rng = self.rng
        lines = []
        for n in range(1, rng.randint(1, 4) + 1):
            item = rng.choice(items)
            lines.append(self._line(n, item, rng.randint(1, 10), item["UnitPrice"]))
        lines.append({"Amount": ZERO, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        if rng.random() < 0.15:
            lines.append({"Amount": ZERO, "DetailType": "DiscountLineDetail",
                          "DiscountLineDetail": {"PercentBased": True, "DiscountPercent": rng.choice([5, 10, 15]),
                                                 "DiscountAccountRef": dict(_DISCOUNT_ACCOUNT)}})
        return lines

    def _sales(self, did: int, doc: str, created: float, updated: float, customer: dict[str, Any] | None,
               lines: list[dict[str, Any]], picker: Picker | None, *, before_lines: dict[str, Any] | None = None,
               memo: bool = True, ship: bool = True, tag: float | None = None) -> dict[str, Any]:
        """The part every sales document shares, up to its addresses (samples/invoice*.json,
        salesreceipt.json, creditmemo.json, refundreceipt.json), its totals computed. With a
        `picker`, a quarter get a department and three in ten a class (`tag` decides, drawn
        from the picker when not given)."""
        obj: dict[str, Any] = {"domain": "QBO", "sparse": False, "Id": str(did),
                               "SyncToken": self.sync_token(created, updated), "MetaData": metadata(created, updated),
                               "CustomField": [dict(f) for f in _CUSTOM_FIELD], "DocNumber": doc,
                               "TxnDate": fmt_date(created)}
        department = klass = None
        if picker is not None:
            tag = picker.rng.random() if tag is None else tag
            department = picker.pick("Department") if tag < 0.25 else None
            klass = picker.pick("Class") if 0.15 <= tag < 0.45 else None
        if department is not None:
            obj["DepartmentRef"] = name_ref(department)
        obj["CurrencyRef"] = dict(USD)
        obj.update(before_lines or {})
        code = tax_code_for(customer) if self.sales_tax and customer is not None else None
        obj.update({"Line": lines, "TxnTaxDetail": tax_detail(code, ZERO)})
        if customer is not None:
            obj["CustomerRef"] = {"value": customer["Id"], "name": customer["DisplayName"]}
            if klass is not None:
                obj["ClassRef"] = name_ref(klass)
            if memo:
                obj["CustomerMemo"] = dict(_MEMO)
            obj["BillAddr"] = dict(customer["BillAddr"])
            if ship and "ShipAddr" in customer:
                obj["ShipAddr"] = dict(customer["ShipAddr"])
        retotal_sales(obj)
        return obj

    def _email_status(self) -> str:
        return self.rng.choice(["NotSet", "NeedToSend", "EmailSent", "EmailSent"])

    def _tail(self, obj: dict[str, Any], customer: dict[str, Any] | None, email_status: str | None) -> None:
        """TotalAmt (moved last), the print and e-mail statuses and the customer's e-mail."""
        obj.update({"TotalAmt": obj.pop("TotalAmt"), "ApplyTaxAfterDiscount": False,
                    "PrintStatus": self.rng.choice(["NotSet", "NeedToPrint", "PrintComplete"])})
        if email_status is not None:
            obj["EmailStatus"] = email_status
        if customer is not None and "PrimaryEmailAddr" in customer:
            obj["BillEmail"] = {"Address": customer["PrimaryEmailAddr"]["Address"]}

    def invoice(self, iid: int, doc_number: str, created: float, updated: float,
                customer: dict[str, Any], items: list[dict[str, Any]], *, voided: bool = False,
                picker: Picker | None = None) -> dict[str, Any]:
        """An Invoice shaped like samples/invoice_created_real.json (tax, terms and links like
        invoice_with_tax_and_payments.json; voided like invoice_voided_real.json), unpaid:
        Balance = TotalAmt (payments lower it)."""
        rng = self.rng
        lines = self._lines(items)
        tag = rng.random()  # the draws come in the order they always did: a seed's invoices stay the same
        days = rng.choice([15, 30, 30, 45])
        email_status = self._email_status()
        obj: dict[str, Any] = {"AllowIPNPayment": False, "AllowOnlinePayment": False,
                               "AllowOnlineCreditCardPayment": False, "AllowOnlineACHPayment": False}
        obj.update(self._sales(iid, doc_number, created, updated, customer, lines, picker,
                               before_lines={"LinkedTxn": []}, memo=False, tag=tag))
        if picker is not None:
            obj["SalesTermRef"] = term_ref(TERM_DAYS[days])
        obj["DueDate"] = fmt_date(created + DAY * days)
        self._tail(obj, customer, email_status)
        obj["Balance"] = obj["TotalAmt"]
        if obj["EmailStatus"] == "EmailSent":
            obj["DeliveryInfo"] = {"DeliveryType": "Email", "DeliveryTime": fmt_ts(created + 600)}
        if voided:
            void_document("Invoice", obj)
            if obj["SyncToken"] == "0":
                obj["SyncToken"] = "1"
        return obj

    def estimate(self, eid: int, doc_number: str, created: float, updated: float,
                 customer: dict[str, Any], items: list[dict[str, Any]], *,
                 picker: Picker | None = None) -> dict[str, Any]:
        """An Estimate shaped like samples/estimate.json, TxnStatus Pending/Accepted/Closed/Rejected."""
        rng = self.rng
        lines = self._lines(items)
        status = rng.choice(["Pending", "Pending", "Accepted", "Closed", "Rejected"])
        obj = self._sales(eid, doc_number, created, updated, customer, lines, picker,
                          before_lines={"TxnStatus": status, "LinkedTxn": []}, ship=False)
        obj.update({"TotalAmt": obj.pop("TotalAmt"), "ApplyTaxAfterDiscount": False,
                    "PrintStatus": rng.choice(["NotSet", "NeedToPrint"]),
                    "EmailStatus": rng.choice(["NotSet", "NeedToSend", "EmailSent"]),
                    "ExpirationDate": fmt_date(created + 30 * DAY)})
        if "PrimaryEmailAddr" in customer:
            obj["BillEmail"] = {"Address": customer["PrimaryEmailAddr"]["Address"]}
        if status == "Accepted":
            obj["AcceptedBy"] = customer["DisplayName"]
            obj["AcceptedDate"] = fmt_date(min(updated, created + 2 * DAY))
        return obj

    def sales_receipt(self, sid: int, doc: str, created: float, updated: float, customer: dict[str, Any] | None,
                      items: list[dict[str, Any]], picker: Picker) -> dict[str, Any]:
        """A SalesReceipt (samples/salesreceipt.json): paid on the spot, into Undeposited Funds
        mostly (a deposit takes it to the bank) or straight into Checking; some have no customer."""
        obj = self._sales(sid, doc, created, updated, customer, self._lines(items), picker, ship=False)
        self._tail(obj, customer, self._email_status())
        obj["Balance"] = ZERO
        method = picker.pick("PaymentMethod")
        if method is not None:
            obj["PaymentMethodRef"] = name_ref(method)
        obj["DepositToAccountRef"] = picker.account("undeposited" if self.rng.random() < 0.7 else "checking")
        return obj

    def credit_memo(self, cid: int, doc: str, created: float, updated: float, customer: dict[str, Any],
                    items: list[dict[str, Any]], picker: Picker, *, cap: Decimal | None = None) -> dict[str, Any]:
        """A CreditMemo (samples/creditmemo.json), unapplied: RemainingCredit = Balance = TotalAmt.
        With `cap`, one unit of one item, its total (tax included) at most `cap`."""
        if cap is None:
            lines = self._lines(items)
        else:
            item = self.rng.choice(items)
            price = item["UnitPrice"]
            if price * (1 + sales_tax_rate_max() / 100) > cap:
                price = money(cap / 2)
            lines = [self._line(1, item, 1, price),
                     {"Amount": ZERO, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}]
        obj = {"RemainingCredit": ZERO, **self._sales(cid, doc, created, updated, customer, lines, picker)}
        self._tail(obj, customer, self._email_status())
        obj["RemainingCredit"] = obj["Balance"] = obj["TotalAmt"]
        return obj

    def refund_receipt(self, rid: int, doc: str, created: float, updated: float, customer: dict[str, Any],
                       items: list[dict[str, Any]], picker: Picker) -> dict[str, Any]:
        """A RefundReceipt (samples/refundreceipt.json): money paid back from Checking."""
        obj = self._sales(rid, doc, created, updated, customer, self._lines(items), picker, ship=False)
        self._tail(obj, customer, None)
        obj["Balance"] = ZERO
        method = picker.pick("PaymentMethod", lambda m: m["Type"] == "NON_CREDIT_CARD")
        if method is not None:
            obj["PaymentMethodRef"] = name_ref(method)
        obj["DepositToAccountRef"] = picker.account("checking")
        return obj

    def company_info(self, realm_id: str, name: str, created: float) -> dict[str, Any]:
        """CompanyInfo shaped like samples/companyinfo.json (Country USA, ISO alpha-3 addresses)."""
        addr = {"Id": "1", "Line1": "2700 Coast Ave", "City": "Mountain View", "Country": "USA",
                "CountrySubDivisionCode": "CA", "PostalCode": "94043"}
        web = slug(name) or "company"
        return {
            "CompanyName": name, "LegalName": f"{name} LLC", "CompanyAddr": dict(addr),
            "CustomerCommunicationAddr": dict(addr), "LegalAddr": dict(addr),
            "PrimaryPhone": {"FreeFormNumber": "(650) 555-0100"}, "CompanyStartDate": fmt_date(created - 400 * DAY),
            "FiscalYearStartMonth": "January", "Country": "USA", "Email": {"Address": f"office@{web}.example.com"},
            "WebAddr": {"URI": f"https://{web}.example.com"}, "SupportedLanguages": "en",
            "NameValue": [{"Name": "NeoEnabled", "Value": "true"},
                          {"Name": "IndustryType", "Value": "Landscaping Services"},
                          {"Name": "SubscriptionStatus", "Value": "SUBSCRIBED"},
                          {"Name": "OfferingSku", "Value": "QuickBooks Online Plus"},
                          {"Name": "PayrollFeature", "Value": "false"},
                          {"Name": "AccountantFeature", "Value": "false"}],
            "domain": "QBO", "sparse": False, "Id": "1", "SyncToken": "0",
            "MetaData": {"CreateTime": fmt_ts(created), "LastUpdatedTime": fmt_ts(created)},
        }


def retotal_sales(obj: dict[str, Any]) -> None:
    """A sales document's totals from its item lines, in place: the SubTotal line, percent
    discounts, the tax lines (each rate on the taxable lines, before discount as
    ApplyTaxAfterDiscount false says) and TotalAmt = subtotal - discount + tax."""
    lines = obj.get("Line", [])
    items = [ln for ln in lines if ln.get("DetailType") == "SalesItemLineDetail"]
    subtotal = sum((money(ln["Amount"]) for ln in items), ZERO)
    taxable = sum((money(ln["Amount"]) for ln in items
                   if ln["SalesItemLineDetail"].get("TaxCodeRef", {}).get("value") == "TAX"), ZERO)
    total = subtotal
    for ln in lines:
        if ln.get("DetailType") == "SubTotalLineDetail":
            ln["Amount"] = subtotal
        elif ln.get("DetailType") == "DiscountLineDetail":
            pct = ln.get("DiscountLineDetail", {}).get("DiscountPercent")
            if pct is not None:
                ln["Amount"] = money(subtotal * Decimal(str(pct)) / 100)
            total -= money(ln["Amount"])
    code = obj.get("TxnTaxDetail", {}).get("TxnTaxCodeRef", {}).get("value")
    if code is not None:
        obj["TxnTaxDetail"] = tax_detail(str(code), taxable)
    obj["TotalAmt"] = money(total + money(obj.get("TxnTaxDetail", {}).get("TotalTax", ZERO)))


def _spread(rng: random.Random, n: int, start: float, end: float) -> list[float]:
    """n increasing whole-second times in [start, end)."""
    if n <= 0:
        return []
    step = (end - start) / n
    return [float(int(start + i * step + rng.random() * step * 0.9)) for i in range(n)]


def generate_company(seed: int, *, now: float, customers: int = 50, items: int = 20, invoices: int = 100,
                     estimates: int = 20, realm_id: str = "0", company_name: str | None = None,
                     generator: CompanyGenerator | None = None, sizes: dict[str, int] | None = None,
                     sales_tax: bool = False) -> Iterator[tuple[str, dict[str, Any], float, float]]:
    """Yield `(entity, object, created_ts, updated_ts)` for a whole company: CompanyInfo first,
    then every entity of services.emulator.traits (sizes of the new ones: ledger.ledger_sizes;
    `sales_tax` for a generator made here, else the generator's own). Deterministic for the same
    seed, sizes and `now`; all data lies 1-30 days before `now`."""
    gen = generator or CompanyGenerator(seed, sales_tax=sales_tax)
    want = ledger_sizes(invoices, sizes)
    company = _Company(gen, now)
    name = company_name or f"{gen.rng.choice(ADJ)} {gen.rng.choice(TRADES)} {gen.rng.choice(SUFFIXES)}"
    yield "CompanyInfo", gen.company_info(realm_id, name, company.setup), company.setup, company.setup
    company.name_lists(customers, items, want)
    company.sales(invoices, estimates, want)
    company.receivables(want)
    company.payables(want)
    company.banking(want)
    company.rollups()
    company.pairs.clear()
    for entity in ENTITIES:  # each entity's objects are let go once served
        for made in company.made.pop(entity, []):
            yield entity, made.obj, made.created, made.updated


class _Company:
    """One company being generated: what is made so far (by entity) and the picker over it."""

    def __init__(self, gen: CompanyGenerator, now: float) -> None:
        self.gen = gen
        self.rng = gen.rng
        self.base = float(int(now // 3600 * 3600))  # whole hour: realms created within the hour match
        self.setup = self.base - 30 * DAY
        self.limit = self.base - DAY - 3600  # the last moment anything happens
        self.made: dict[str, list[Made]] = {}
        self.pairs: dict[str, list[tuple[Made, Made]]] = {}  # credit -> the document it was raised against
        # the seed's customers, items, invoices and estimates draw from `rng` as they always did;
        # what the ledger adds to them (jobs, classes, departments) comes from a stream of its own
        self.picker = ListPicker(random.Random(gen.seed * 31 + 7), {})

    def add(self, entity: str, obj: dict[str, Any], created: float, updated: float) -> Made:
        made = Made(entity, obj, created, updated)
        self.made.setdefault(entity, []).append(made)
        if TRAITS[entity].name_list or entity == "TaxAgency":
            self.picker.add(entity, obj)
        return made

    def objs(self, entity: str) -> list[dict[str, Any]]:
        return [m.obj for m in self.made.get(entity, [])]

    def touched(self, created: float, limit: float) -> float:
        if self.rng.random() < 0.7:
            return created
        return float(min(int(created + self.rng.random() * 3 * DAY), int(limit)))

    def spread(self, n: int, start_days: float, end_days: float, *, edited_by: float = 1
               ) -> Iterator[tuple[int, float, float]]:
        """(id, created, updated) for n objects created between the two day offsets before now,
        some edited again up to `edited_by` days before now (drawn as each object is made)."""
        times = _spread(self.rng, n, self.base - start_days * DAY, self.base - end_days * DAY)
        for i, t in enumerate(times):
            yield i + 1, t, self.touched(t, self.base - edited_by * DAY)

    def doc(self, entity: str, n: int) -> str:
        return str((TRAITS[entity].doc_start or 1) + n - 1)

    # ---- steps -------------------------------------------------------------------------------
    def name_lists(self, customers: int, items: int, want: dict[str, int]) -> None:
        gen = self.gen
        for cid, created, updated in self.spread(customers, 25, 20, edited_by=2):
            self.add("Customer", gen.customer(cid, created, updated, index=cid - 1), created, updated)
        for iid, created, updated in self.spread(items, 25, 20, edited_by=2):
            self.add("Item", gen.item(iid, created, updated, index=iid - 1), created, updated)
        parents: list[dict[str, Any]] = []
        for obj in self.objs("Customer"):  # one in eight a job of an earlier customer
            if int(obj["Id"]) % 8 == 4 and parents:
                gen.make_job(obj, self.picker.rng.choice(parents), self.picker.rng)
            elif obj["Active"]:
                parents.append(obj)
        for entity, obj in fixed_lists(self.setup):
            self.add(entity, obj, self.setup, self.setup)
        for entity, first in (("Class", 5000000000000007280), ("Department", 1)):
            for obj, ts in gen.ledger.list_entries(entity, first, want[entity], self.setup + DAY):
                self.add(entity, obj, ts, ts)

    def sales(self, invoices: int, estimates: int, want: dict[str, int]) -> None:
        gen, rng, picker = self.gen, self.rng, self.picker
        sell = [it for it in self.objs("Item") if it["Active"]] or self.objs("Item")
        buyers = [c for c in self.objs("Customer") if c["Active"]] or self.objs("Customer")
        if not sell or not buyers:
            return
        void_at = min(3, invoices)
        for iid, created in enumerate(_spread(rng, invoices, self.base - 20 * DAY, self.base - 2 * DAY), 1):
            customer = rng.choice(buyers)
            voided = iid == void_at or rng.random() < 0.01
            updated = self.touched(created, self.base - DAY)
            self.add("Invoice", gen.invoice(iid, self.doc("Invoice", iid), created, updated, customer, sell,
                                            voided=voided, picker=picker), created, updated)
        for eid, created, updated in self.spread(estimates, 20, 2):
            self.add("Estimate", gen.estimate(eid, self.doc("Estimate", eid), created, updated, rng.choice(buyers),
                                              sell, picker=picker), created, updated)
        for sid, created, updated in self.spread(want["SalesReceipt"], 20, 2):
            buyer = rng.choice(buyers) if rng.random() < 0.8 else None
            self.add("SalesReceipt", gen.sales_receipt(sid, self.doc("SalesReceipt", sid), created, updated, buyer,
                                                       sell, picker), created, updated)
        for rid, created, updated in self.spread(want["RefundReceipt"], 18, 2):
            self.add("RefundReceipt", gen.refund_receipt(rid, self.doc("RefundReceipt", rid), created, updated,
                                                         rng.choice(buyers), sell, picker), created, updated)
        customers = {c["Id"]: c for c in self.objs("Customer")}
        self._credits("CreditMemo", "Invoice", want["CreditMemo"], lambda n, t, doc, cap: gen.credit_memo(
            n, self.doc("CreditMemo", n), t, t, customers[doc.obj["CustomerRef"]["value"]] if doc else rng.choice(buyers),
            sell, picker, cap=cap))

    def _credits(self, entity: str, against: str, count: int,
                 make: Callable[[int, float, Made | None, Decimal | None], dict[str, Any]]) -> None:
        """`count` credits (credit memos or vendor credits), most raised against an open
        document of the same party (paired, for the settlement plan to apply), ids in time order."""
        open_docs = [m for m in self.made.get(against, []) if m.obj["Balance"] > 0]
        targets = self.rng.sample(open_docs, min(count, len(open_docs)))
        times = _spread(self.rng, count, self.base - 18 * DAY, self.base - 2 * DAY)
        specs = sorted(((max(t, doc.created + 3600) if doc else t, doc) for t, doc in
                        zip(times, [*targets, *[None] * (count - len(targets))])), key=lambda s: s[0])
        for n, (t, doc) in enumerate(specs, 1):
            made = self.add(entity, make(n, t, doc, doc.obj["Balance"] if doc else None), t, t)
            if doc is not None:
                self.pairs.setdefault(entity, []).append((made, doc))

    def receivables(self, want: dict[str, int]) -> None:
        customers = {c["Id"]: c for c in self.objs("Customer")}
        plans = plan_settlements(self.rng, self.made.get("Invoice", []), self.pairs.get("CreditMemo", []),
                                 want["Payment"], parties=customers, party_key="CustomerRef", limit=self.limit,
                                 unapplied=True)
        self._settlements("Payment", plans, self.gen.ledger.payment)

    def _settlements(self, entity: str, plans: list[Plan], make: Callable[[int, Plan, Picker], dict[str, Any]]) -> None:
        for made in materialize(plans, entity, lambda n, plan: make(n, plan, self.picker)):
            self.made.setdefault(entity, []).append(made)

    def payables(self, want: dict[str, int]) -> None:
        gen, rng, picker = self.gen, self.rng, self.picker
        for vid, created, updated in self.spread(want["Vendor"], 25, 20, edited_by=2):
            self.add("Vendor", gen.ledger.vendor(vid, created, updated, index=vid - 1), created, updated)
        for eid, created, updated in self.spread(want["Employee"], 25, 20, edited_by=2):
            self.add("Employee", gen.ledger.employee(eid, created, updated, index=eid - 1), created, updated)
        vendors = [v for v in self.objs("Vendor") if v["Active"]]
        if vendors:
            for bid, created, updated in self.spread(want["Bill"], 20, 2):
                self.add("Bill", gen.ledger.bill(bid, created, updated, rng.choice(vendors), picker), created, updated)
            by_id = {v["Id"]: v for v in self.objs("Vendor")}
            self._credits("VendorCredit", "Bill", want["VendorCredit"], lambda n, t, doc, cap: gen.ledger.vendor_credit(
                n, t, t, by_id[doc.obj["VendorRef"]["value"]] if doc else rng.choice(vendors), picker, cap=cap))
            plans = plan_settlements(rng, self.made.get("Bill", []), self.pairs.get("VendorCredit", []),
                                     want["BillPayment"], parties=by_id, party_key="VendorRef", limit=self.limit,
                                     unapplied=False)
            self._settlements("BillPayment", plans, gen.ledger.bill_payment)
            self._purchase_orders(want["PurchaseOrder"], vendors)
        kinds = ["Cash", "Check", "CreditCard", "CreditCard"]
        for pid, created, updated in self.spread(want["Purchase"], 20, 2):
            kind = kinds[pid - 1] if pid <= len(kinds) else rng.choice(["Cash", "Check", "Check", "CreditCard",
                                                                         "CreditCard", "CreditCard"])
            credit = pid == 4 or (kind == "CreditCard" and rng.random() < 0.05)
            self.add("Purchase", gen.ledger.purchase(pid, created, updated, picker, kind=kind, credit=credit),
                     created, updated)
        for tid, created, updated in self.spread(want["TimeActivity"], 20, 2):
            self.add("TimeActivity", gen.ledger.time_activity(tid, created, updated, picker), created, updated)

    def _purchase_orders(self, count: int, vendors: list[dict[str, Any]]) -> None:
        """Purchase orders, 40 % closed by a later bill of their vendor (linked to it)."""
        rng = self.rng
        bills: dict[str, list[Made]] = {}
        for made in self.made.get("Bill", []):
            bills.setdefault(made.obj["VendorRef"]["value"], []).append(made)
        specs: list[tuple[float, float, dict[str, Any], Made | None]] = []
        for _n, created, updated in self.spread(count, 20, 2):
            vendor = rng.choice(vendors)
            bill = rng.choice(bills[vendor["Id"]]) if vendor["Id"] in bills and rng.random() < 0.4 else None
            if bill is not None:
                created = updated = max(self.base - 24 * DAY, float(int(bill.created - rng.uniform(1, 5) * DAY)))
            specs.append((created, updated, vendor, bill))
        specs.sort(key=lambda s: s[0])
        for n, (created, updated, vendor, bill) in enumerate(specs, 1):
            self.add("PurchaseOrder", self.gen.ledger.purchase_order(
                n, self.doc("PurchaseOrder", n), created, updated, vendor, self.picker,
                bill.obj["Id"] if bill else None), created, updated)

    def banking(self, want: dict[str, int]) -> None:
        gen, picker = self.gen, self.picker
        for tid, created, updated in self.spread(want["Transfer"], 20, 2):
            self.add("Transfer", gen.ledger.transfer(tid, created, updated, picker), created, updated)
        journals = self.spread(want["JournalEntry"], 20, 2)
        for jid, created, updated in journals:
            opening = jid == 1
            if opening:
                created = updated = self.setup + 2 * DAY
            self.add("JournalEntry", gen.ledger.journal_entry(jid, None if opening else self.doc("JournalEntry", jid),
                                                              created, updated, picker, opening=opening),
                     created, updated)
        self._deposits(want["Deposit"])

    def _deposits(self, count: int) -> None:
        """The opening-balance deposit into Savings, then deposits of the undeposited payments
        and sales receipts in time order (the newest ~15 % stay undeposited), one with cash back;
        with nothing left to deposit, a direct deposit of other income."""
        gen, rng, picker = self.gen, self.rng, self.picker
        waiting = sorted((m for e in ("Payment", "SalesReceipt") for m in self.made.get(e, [])
                          if m.obj["DepositToAccountRef"]["value"] == "4" and m.obj["TotalAmt"] > 0),
                         key=lambda m: (m.created, m.entity, int(m.obj["Id"])))
        groups = max(count - 1, 0)
        cut = int(len(waiting) * 0.85)
        specs: list[tuple[float, list[Made], str]] = []
        if count:
            specs.append((self.setup + DAY, [], "opening"))
        buyers = [c for c in self.objs("Customer") if c["Active"]]
        for k in range(groups):
            chunk = waiting[k * cut // groups:(k + 1) * cut // groups]
            if chunk:
                after = max(m.updated for m in chunk)
                specs.append((float(int(max(min(after + rng.uniform(0.1, 1.5) * DAY, self.limit), after + 60))),
                              chunk, "payments"))
            else:
                specs.append((self.base - rng.uniform(2, 20) * DAY, [], "direct"))
        specs.sort(key=lambda s: s[0])
        cashback = True
        for did, (ts, chunk, kind) in enumerate(specs, 1):
            ts = float(int(ts))
            if kind == "opening":
                lines = [gen.ledger.direct_line(1, picker.account("opening"), cents(rng.randint(50, 200) * 10000))]
                obj = gen.ledger.deposit(did, ts, picker.account("savings"), lines, picker, note="Opening Balance")
            elif kind == "direct":
                lines = [gen.ledger.direct_line(1, picker.account("income"), cents(rng.randint(5000, 90000)),
                                                rng.choice(buyers) if buyers else None)]
                obj = gen.ledger.deposit(did, ts, picker.account("checking"), lines, picker)
            else:
                lines = [gen.ledger.deposit_line(m.entity, m.obj) for m in chunk]
                back = cashback and sum((ln["Amount"] for ln in lines), ZERO) > 300
                cashback = cashback and not back
                obj = gen.ledger.deposit(did, ts, picker.account("bank"), lines, picker, cashback=back)
                for m in chunk:
                    deposited(m.entity, m.obj, obj["Id"], True)
                    m.touch(ts, bump=False)
            self.add("Deposit", obj, ts, ts)

    def rollups(self) -> None:
        """Customer.Balance / BalanceWithJobs, Vendor.Balance and the balance-sheet accounts'
        CurrentBalance (and WithSubAccounts) from every document's effects and postings."""
        items = {o["Id"]: o for o in self.objs("Item")}
        ledger: dict[str, Decimal] = {}
        parties: dict[tuple[str, str], Decimal] = {}
        for entity, made in self.made.items():
            for m in made:
                for account, amount in postings(entity, m.obj, items):
                    ledger[account] = ledger.get(account, ZERO) + amount
                for party, pid, amount in party_effects(entity, m.obj):
                    parties[(party, pid)] = parties.get((party, pid), ZERO) + amount
        customers = self.objs("Customer")
        for obj in customers:
            obj["Balance"] = obj["BalanceWithJobs"] = money(parties.get(("Customer", obj["Id"]), ZERO))
        by_id = {c["Id"]: c for c in customers}
        for obj in customers:
            if "ParentRef" in obj:
                parent = by_id[obj["ParentRef"]["value"]]
                parent["BalanceWithJobs"] = money(parent["BalanceWithJobs"] + obj["Balance"])
        for obj in self.objs("Vendor"):
            obj["Balance"] = money(parties.get(("Vendor", obj["Id"]), ZERO))
        accounts = self.objs("Account")
        for obj in accounts:
            sign = {"Asset": 1, "Liability": -1, "Equity": -1}.get(obj["Classification"], 0)
            obj["CurrentBalance"] = obj["CurrentBalanceWithSubAccounts"] = money(sign * ledger.get(obj["Id"], ZERO))
        by_id = {a["Id"]: a for a in accounts}
        for obj in reversed(accounts):  # children come after their parents
            if "ParentRef" in obj:
                parent = by_id[obj["ParentRef"]["value"]]
                parent["CurrentBalanceWithSubAccounts"] = money(parent["CurrentBalanceWithSubAccounts"] +
                                                                obj["CurrentBalanceWithSubAccounts"])
