"""Deterministic generator of realistic, Intuit-shaped QBO companies.

`CompanyGenerator(seed)` produces the same objects for the same seed, sizes and `now`
(everything comes from one seeded `random.Random`). Objects follow the recorded samples in
shared/qbo/samples (key order included): customers with unique, varied DisplayNames
(accents, apostrophes, CJK, ampersands), ~5% inactive; Service/Inventory/NonInventory items;
invoices with 1-4 item lines, a SubTotal line, sometimes a discount line, consistent totals,
paid/partly paid/open balances and at least one voided invoice; estimates in every TxnStatus.
Money is always a two-place Decimal. Times are epoch seconds; MetaData strings use the
company's Pacific offset (-08:00, -07:00 in daylight saving time).
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from services.emulator.jsontext import fmt_date, fmt_ts

__all__ = ["CompanyGenerator", "SPECIAL_CUSTOMER_NAMES", "generate_company", "void_invoice", "USD", "DAY"]

DAY = 86400.0
USD = {"value": "USD", "name": "United States Dollar"}
ZERO = Decimal("0.00")

SPECIAL_CUSTOMER_NAMES = [
    "Café Müller", "O'Brien's Plumbing", "東京商事", "Smith & Sons Landscaping",
    "Zoë's Crème Brûlée", "Jäger & Björk AB", "D'Angelo Pizzería", "北京贸易有限公司",
    "Łódź Textiles", "São Paulo Café & Co.", "Ñandú Imports", "Amy's Bird Sanctuary",
    "Müller-Lüdenscheidt GmbH", "대한 무역", "Crêperie du Coin",
]
_GIVEN = ["Amy", "Bill", "Grace", "Peter", "Kathy", "Stephanie", "José", "Zoë", "Sean", "Aoife",
          "Hiroshi", "Mei", "Olga", "Renée", "Björn", "Chloé", "Dmitri", "Fatima", "Gunnar",
          "Ingrid", "Jamal", "Keiko", "Lars", "Marta", "Noor", "Oscar", "Priya", "Quentin",
          "Rosa", "Søren", "Tomás", "Uma", "Valentina", "Wei", "Xavier", "Yusuf", "Zainab",
          "Anaïs", "Maëlle", "Joël", "Linnea", "Mateo", "Nadia", "Pablo", "Rahul", "Sven"]
_FAMILY = ["Lauterbach", "Lucchini", "Pariente", "Dukes", "Paulsen", "Martini", "O'Neil",
           "D'Souza", "Müller", "García", "Núñez", "Søndergaard", "Åberg", "Nakamura", "Chen",
           "Kowalski", "Dubois", "Rossi", "Fischer", "Schröder", "Yamamoto", "Okafor", "Patel",
           "Haddad", "Ivanova", "Jensen", "Kim", "Larsen", "Moreau", "Novak", "Olsen", "Peña",
           "Quinn", "Ramírez", "Silva", "Tanaka", "Urquhart", "Vásquez", "Weiß", "Young",
           "Zielinski", "McAllister", "O'Connor", "Brontë", "Cruz", "Baker", "Ellis", "Ford"]
_TRADES = ["Plumbing", "Landscaping", "Bakery", "Windsurf Shop", "Basketball Camp", "Diner",
           "Medical Supplies", "Auto Repair", "Books", "Florist", "Catering", "Bike Shop",
           "Dental", "Design Studio", "Pet Care", "Roofing", "Tailoring", "Wine Bar",
           "Hardware", "Electric", "Pottery", "Coffee Roasters", "Yoga Studio", "Print Shop"]
_SUFFIXES = ["LLC", "Inc.", "& Co.", "LLP", "Group", "Partners", "Ltd."]
_ADJ = ["Red Rock", "Blue Lake", "Golden Gate", "Silver Pine", "Green Valley", "Cedar Hill",
        "Ocean View", "Maple Leaf", "Sunset", "Northwind", "Harbor", "Summit", "Riverside"]
_ADDRESSES = [("Tucson", "AZ", "85719"), ("Bayshore", "CA", "94326"), ("Half Moon Bay", "CA", "94213"),
              ("Palo Alto", "CA", "94303"), ("Middlefield", "CA", "94304"), ("Sunnyvale", "CA", "94086"),
              ("Portland", "OR", "97205"), ("Seattle", "WA", "98101"), ("Austin", "TX", "78701"),
              ("Boulder", "CO", "80302"), ("Brooklyn", "NY", "11201"), ("Santa Fe", "NM", "87501")]
_STREETS = ["Court St.", "Finch St.", "Ocean Dr.", "Channing", "Main St.", "Red Rock Rd.",
            "S. Boise Ave", "Elm Ave.", "Pine St.", "Cedar Ln.", "Rue de la Paix", "Market St."]
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


def _cents(value: int) -> Decimal:
    return Decimal(value).scaleb(-2)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


class CompanyGenerator:
    """One company's object factory; all randomness comes from `random.Random(seed)`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.names: set[str] = set()
        self.item_names: set[str] = set()
        self._addr_id = 100

    # ---- name lists -------------------------------------------------------------------
    def _unique_display_name(self, index: int) -> tuple[str, str, str, str | None]:
        rng = self.rng
        given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
        if index < len(SPECIAL_CUSTOMER_NAMES) and SPECIAL_CUSTOMER_NAMES[index] not in self.names:
            return SPECIAL_CUSTOMER_NAMES[index], given, family, SPECIAL_CUSTOMER_NAMES[index]
        for attempt in range(50):
            pattern = rng.randrange(6)
            if pattern == 0:
                name, company = f"{given} {family}", None
            elif pattern == 1:
                name = company = f"{family} {rng.choice(_TRADES)}"
            elif pattern == 2:
                name = company = f"{given}'s {rng.choice(_TRADES)}"
            elif pattern == 3:
                name = company = f"{family} & {rng.choice(_FAMILY)} {rng.choice(_SUFFIXES)}"
            elif pattern == 4:
                name = company = f"{rng.choice(_ADJ)} {rng.choice(_TRADES)}"
            else:
                name = company = f"{family} {rng.choice(_TRADES)} {rng.choice(_SUFFIXES)}"
            if attempt > 10:
                name = f"{name} {rng.randint(2, 99999)}"
                company = company and name
            if name not in self.names:
                return name, given, family, company
            given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
        raise RuntimeError("could not find a unique DisplayName")  # pragma: no cover

    def _address(self) -> dict[str, Any]:
        self._addr_id += 1
        city, state, postal = self.rng.choice(_ADDRESSES)
        return {"Id": str(self._addr_id), "Line1": f"{self.rng.randint(1, 9999)} {self.rng.choice(_STREETS)}",
                "City": city, "CountrySubDivisionCode": state, "PostalCode": postal}

    def customer(self, cid: int, created: float, updated: float, *, index: int = 10**9,
                 active: bool | None = None) -> dict[str, Any]:
        """A Customer shaped like samples/customer.json (Balance 0 until invoices add to it)."""
        rng = self.rng
        name, given, family, company = self._unique_display_name(index)
        self.names.add(name)
        if active is None:
            active = rng.random() >= 0.05
        bill = self._address()
        email_local = f"{_ascii(given) or 'info'}.{_ascii(family) or 'contact'}"
        obj: dict[str, Any] = {
            "Taxable": rng.random() < 0.6, "BillAddr": bill,
        }
        if rng.random() < 0.5:
            obj["ShipAddr"] = dict(bill)
        obj.update({
            "Job": False, "BillWithParent": False, "Balance": ZERO, "BalanceWithJobs": ZERO,
            "CurrencyRef": dict(USD), "PreferredDeliveryMethod": rng.choice(["Print", "Email", "None"]),
            "domain": "QBO", "sparse": False, "Id": str(cid),
            "SyncToken": "0" if updated == created else str(rng.randint(1, 3)),
            "MetaData": {"CreateTime": fmt_ts(created), "LastUpdatedTime": fmt_ts(updated)},
            "GivenName": given, "FamilyName": family, "FullyQualifiedName": name,
        })
        if company:
            obj["CompanyName"] = company
        obj.update({
            "DisplayName": name, "PrintOnCheckName": name, "Active": active,
            "PrimaryPhone": {"FreeFormNumber": f"({rng.randint(201, 989)}) 555-{rng.randint(0, 9999):04d}"},
            "PrimaryEmailAddr": {"Address": f"{email_local}@{rng.choice(['example.com', 'example.org', 'example.net'])}"},
        })
        return obj

    def item(self, iid: int, created: float, updated: float, *, index: int = 10**9,
             active: bool | None = None) -> dict[str, Any]:
        """An Item (Service, Inventory or NonInventory) shaped like samples/item.json."""
        rng = self.rng
        if index < len(_ITEMS) and _ITEMS[index][0] not in self.item_names:
            name, kind, description = _ITEMS[index]
        else:
            kind = rng.choice(["Service", "Inventory", "NonInventory"])
            name = f"{rng.choice(_ADJ)} {rng.choice(_ITEM_NOUNS)}"
            while name in self.item_names:
                name = f"{rng.choice(_ADJ)} {rng.choice(_ITEM_NOUNS)} {rng.randint(2, 9999)}"
            description = f"{name} ({kind.lower()})"
        self.item_names.add(name)
        if active is None:
            active = rng.random() >= 0.05
        price = _cents(rng.randint(500, 50000))
        cost = _cents(rng.randint(100, int(price * 70))) if kind != "Service" else ZERO
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
            "Taxable": rng.random() < 0.7,
            "MetaData": {"CreateTime": fmt_ts(created), "LastUpdatedTime": fmt_ts(updated)},
            "sparse": False, "Active": active,
            "SyncToken": "0" if updated == created else str(rng.randint(1, 3)),
            "UnitPrice": price, "Description": description,
        })
        return obj

    # ---- transactions -----------------------------------------------------------------
    def _lines(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Decimal]:
        rng = self.rng
        lines: list[dict[str, Any]] = []
        subtotal = ZERO
        for n in range(1, rng.randint(1, 4) + 1):
            item = rng.choice(items)
            qty = rng.randint(1, 10)
            price: Decimal = item["UnitPrice"]
            amount = price * qty
            subtotal += amount
            lines.append({"Id": str(n), "LineNum": n, "Description": item.get("Description", item["Name"]),
                          "Amount": amount, "DetailType": "SalesItemLineDetail",
                          "SalesItemLineDetail": {"ItemRef": {"value": item["Id"], "name": item["Name"]},
                                                  "UnitPrice": price, "Qty": qty,
                                                  "TaxCodeRef": {"value": "TAX" if item.get("Taxable") else "NON"}}})
        lines.append({"Amount": subtotal, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        total = subtotal
        if rng.random() < 0.15:
            pct = rng.choice([5, 10, 15])
            discount = (subtotal * pct / 100).quantize(Decimal("0.01"))
            lines.append({"Amount": discount, "DetailType": "DiscountLineDetail",
                          "DiscountLineDetail": {"PercentBased": True, "DiscountPercent": pct,
                                                 "DiscountAccountRef": dict(_DISCOUNT_ACCOUNT)}})
            total = subtotal - discount
        return lines, total

    def invoice(self, iid: int, doc_number: str, created: float, updated: float,
                customer: dict[str, Any], items: list[dict[str, Any]], *, voided: bool = False) -> dict[str, Any]:
        """An Invoice shaped like samples/invoice_created_real.json (voided like invoice_voided_real.json)."""
        rng = self.rng
        lines, total = self._lines(items)
        paid = rng.random()
        balance = ZERO if paid < 0.4 else (total if paid > 0.5 else (total / 2).quantize(Decimal("0.01")))
        txn_day = fmt_date(created)
        due = fmt_date(created + DAY * rng.choice([15, 30, 30, 45]))
        email_status = rng.choice(["NotSet", "NeedToSend", "EmailSent", "EmailSent"])
        obj: dict[str, Any] = {
            "AllowIPNPayment": False, "AllowOnlinePayment": False, "AllowOnlineCreditCardPayment": False,
            "AllowOnlineACHPayment": False, "domain": "QBO", "sparse": False, "Id": str(iid),
            "SyncToken": "0" if updated == created else str(rng.randint(1, 3)),
            "MetaData": {"CreateTime": fmt_ts(created), "LastUpdatedTime": fmt_ts(updated)},
            "CustomField": [dict(f) for f in _CUSTOM_FIELD], "DocNumber": doc_number, "TxnDate": txn_day,
            "CurrencyRef": dict(USD), "LinkedTxn": [], "Line": lines, "TxnTaxDetail": {"TotalTax": ZERO},
            "CustomerRef": {"value": customer["Id"], "name": customer["DisplayName"]},
            "BillAddr": dict(customer["BillAddr"]),
        }
        if "ShipAddr" in customer:
            obj["ShipAddr"] = dict(customer["ShipAddr"])
        obj.update({"DueDate": due, "TotalAmt": total, "ApplyTaxAfterDiscount": False,
                    "PrintStatus": rng.choice(["NotSet", "NeedToPrint", "PrintComplete"]),
                    "EmailStatus": email_status})
        if "PrimaryEmailAddr" in customer:
            obj["BillEmail"] = {"Address": customer["PrimaryEmailAddr"]["Address"]}
        obj["Balance"] = balance
        if email_status == "EmailSent":
            obj["DeliveryInfo"] = {"DeliveryType": "Email", "DeliveryTime": fmt_ts(created + 600)}
        if voided:
            void_invoice(obj)
            if obj["SyncToken"] == "0":
                obj["SyncToken"] = "1"
        return obj

    def estimate(self, eid: int, doc_number: str, created: float, updated: float,
                 customer: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
        """An Estimate shaped like samples/estimate.json, TxnStatus Pending/Accepted/Closed/Rejected."""
        rng = self.rng
        lines, total = self._lines(items)
        status = rng.choice(["Pending", "Pending", "Accepted", "Closed", "Rejected"])
        obj: dict[str, Any] = {
            "domain": "QBO", "sparse": False, "Id": str(eid),
            "SyncToken": "0" if updated == created else str(rng.randint(1, 3)),
            "MetaData": {"CreateTime": fmt_ts(created), "LastUpdatedTime": fmt_ts(updated)},
            "CustomField": [dict(f) for f in _CUSTOM_FIELD], "DocNumber": doc_number,
            "TxnDate": fmt_date(created), "CurrencyRef": dict(USD), "TxnStatus": status,
            "LinkedTxn": [], "Line": lines, "TxnTaxDetail": {"TotalTax": ZERO},
            "CustomerRef": {"value": customer["Id"], "name": customer["DisplayName"]},
            "CustomerMemo": {"value": "Thank you for your business and have a great day!"},
            "BillAddr": dict(customer["BillAddr"]),
            "TotalAmt": total, "ApplyTaxAfterDiscount": False,
            "PrintStatus": rng.choice(["NotSet", "NeedToPrint"]),
            "EmailStatus": rng.choice(["NotSet", "NeedToSend", "EmailSent"]),
            "ExpirationDate": fmt_date(created + 30 * DAY),
        }
        if "PrimaryEmailAddr" in customer:
            obj["BillEmail"] = {"Address": customer["PrimaryEmailAddr"]["Address"]}
        if status == "Accepted":
            obj["AcceptedBy"] = customer["DisplayName"]
            obj["AcceptedDate"] = fmt_date(min(updated, created + 2 * DAY))
        return obj

    def company_info(self, realm_id: str, name: str, created: float) -> dict[str, Any]:
        """CompanyInfo shaped like samples/companyinfo.json (Country USA, ISO alpha-3 addresses)."""
        addr = {"Id": "1", "Line1": "2700 Coast Ave", "City": "Mountain View", "Country": "USA",
                "CountrySubDivisionCode": "CA", "PostalCode": "94043"}
        slug = _ascii(name) or "company"
        return {
            "CompanyName": name, "LegalName": f"{name} LLC", "CompanyAddr": dict(addr),
            "CustomerCommunicationAddr": dict(addr), "LegalAddr": dict(addr),
            "PrimaryPhone": {"FreeFormNumber": "(650) 555-0100"}, "CompanyStartDate": fmt_date(created - 400 * DAY),
            "FiscalYearStartMonth": "January", "Country": "USA", "Email": {"Address": f"office@{slug}.example.com"},
            "WebAddr": {"URI": f"https://{slug}.example.com"}, "SupportedLanguages": "en",
            "NameValue": [{"Name": "NeoEnabled", "Value": "true"},
                          {"Name": "IndustryType", "Value": "Landscaping Services"},
                          {"Name": "SubscriptionStatus", "Value": "SUBSCRIBED"},
                          {"Name": "OfferingSku", "Value": "QuickBooks Online Plus"},
                          {"Name": "PayrollFeature", "Value": "false"},
                          {"Name": "AccountantFeature", "Value": "false"}],
            "domain": "QBO", "sparse": False, "Id": "1", "SyncToken": "0",
            "MetaData": {"CreateTime": fmt_ts(created), "LastUpdatedTime": fmt_ts(created)},
        }


def void_invoice(obj: dict[str, Any]) -> None:
    """Turn an invoice into its voided form in place (samples/invoice_voided_real.json):
    every line Amount 0 (item lines lose Qty/UnitPrice), TotalAmt 0, Balance 0, PrivateNote Voided."""
    for line in obj["Line"]:
        line["Amount"] = ZERO
        detail = line.get("SalesItemLineDetail")
        if detail is not None:
            detail.pop("Qty", None)
            detail.pop("UnitPrice", None)
    obj["TotalAmt"] = ZERO
    obj["Balance"] = ZERO
    obj["TxnTaxDetail"] = {"TotalTax": ZERO}
    obj.pop("DeliveryInfo", None)
    new = {}
    for key, value in obj.items():  # PrivateNote sits after CurrencyRef, as recorded
        new[key] = value
        if key == "CurrencyRef":
            new["PrivateNote"] = "Voided"
    obj.clear()
    obj.update(new)
    obj.setdefault("PrivateNote", "Voided")


def _spread(rng: random.Random, n: int, start: float, end: float) -> list[float]:
    """n increasing whole-second times in [start, end)."""
    if n <= 0:
        return []
    step = (end - start) / n
    return [float(int(start + i * step + rng.random() * step * 0.9)) for i in range(n)]


def generate_company(seed: int, *, now: float, customers: int = 50, items: int = 20, invoices: int = 100,
                     estimates: int = 20, realm_id: str = "0", company_name: str | None = None,
                     generator: CompanyGenerator | None = None) -> Iterator[tuple[str, dict[str, Any], float, float]]:
    """Yield `(entity, object, created_ts, updated_ts)` for a whole company: CompanyInfo, Items,
    Invoices, Estimates, then Customers (whose Balance sums their invoices' balances).
    Deterministic for the same seed, sizes and `now`; all data lies 2-25 days before `now`."""
    gen = generator or CompanyGenerator(seed)
    rng = gen.rng
    base = float(int(now // 3600 * 3600))  # whole hour: realms created within the hour match
    name = company_name or f"{rng.choice(_ADJ)} {rng.choice(_TRADES)} {rng.choice(_SUFFIXES)}"
    yield "CompanyInfo", gen.company_info(realm_id, name, base - 30 * DAY), base - 30 * DAY, base - 30 * DAY

    def touched(created: float, limit: float) -> float:
        if rng.random() < 0.7:
            return created
        return float(min(int(created + rng.random() * 3 * DAY), int(limit)))

    cust_objs: list[dict[str, Any]] = []
    cust_times: list[tuple[float, float]] = []
    for i, created in enumerate(_spread(rng, customers, base - 25 * DAY, base - 20 * DAY)):
        upd = touched(created, base - 2 * DAY)
        cust_times.append((created, upd))
        cust_objs.append(gen.customer(i + 1, created, upd, index=i))
    item_objs: list[dict[str, Any]] = []
    for i, created in enumerate(_spread(rng, items, base - 25 * DAY, base - 20 * DAY)):
        upd = touched(created, base - 2 * DAY)
        obj = gen.item(i + 1, created, upd, index=i)
        item_objs.append(obj)
        yield "Item", obj, created, upd
    sell = [it for it in item_objs if it["Active"]] or item_objs
    buyers = [c for c in cust_objs if c["Active"]] or cust_objs
    balances: dict[str, Decimal] = {}
    if sell and buyers:
        void_at = min(2, invoices - 1)
        for i, created in enumerate(_spread(rng, invoices, base - 20 * DAY, base - 2 * DAY)):
            cust = rng.choice(buyers)
            voided = i == void_at or rng.random() < 0.01
            upd = touched(created, base - DAY)
            inv = gen.invoice(i + 1, str(1001 + i), created, upd, cust, sell, voided=voided)
            balances[cust["Id"]] = balances.get(cust["Id"], ZERO) + inv["Balance"]
            yield "Invoice", inv, created, upd
        for i, created in enumerate(_spread(rng, estimates, base - 20 * DAY, base - 2 * DAY)):
            upd = touched(created, base - DAY)
            est = gen.estimate(i + 1, str(5001 + i), created, upd, rng.choice(buyers), sell)
            yield "Estimate", est, created, upd
    for cust, (created, upd) in zip(cust_objs, cust_times):
        bal = balances.get(cust["Id"], ZERO)
        cust["Balance"] = cust["BalanceWithJobs"] = bal
        yield "Customer", cust, created, upd
