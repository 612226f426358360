"""The fixed lists every emulated company starts with, and how generators pick references.

- The chart of accounts (`ACCOUNTS`): ids and names of a QBO sample company where the samples
  show them (Checking 35, Savings 36, Undeposited Funds 4, A/P 33, Mastercard 41, Opening
  Balance Equity 34, Services 1, Sales of Product Income 79, ...), sub-accounts with colon-joined
  FullyQualifiedNames ("Job Expenses:Job Materials:Decks and Patios") and one inactive account
  renamed "Fees Billed (deleted)" as recorded. `ROLES` names the accounts documents post to.
- Terms, payment methods, the tax agencies, rates and codes (California 8 % is TaxCode 2 /
  TaxRate 3 / TaxAgency 2, as in the recorded invoice), each list with one inactive row.
- `tax_detail`: a document's `TxnTaxDetail` for a tax code and taxable amount.
- `Picker`: random live references for a new object (generation picks from lists, mutations
  from the stores): `pick(entity)` an active row, `account(role)` an account ref.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from services.emulator.fake import USD, ZERO, metadata
from services.emulator.jsontext import money

__all__ = ["ACCOUNTS", "ROLES", "CLASSIFICATION", "Picker", "ListPicker", "account_ref", "account_obj",
           "fixed_lists", "tax_code_for", "tax_detail", "term_ref", "TERM_DAYS", "sales_tax_rate_max"]

# id, name, parent id, AccountType, AccountSubType, active
ACCOUNTS: tuple[tuple[str, str, str | None, str, str, bool], ...] = (
    ("1", "Services", None, "Income", "ServiceFeeIncome", True),
    ("2", "Design income", None, "Income", "ServiceFeeIncome", True),
    ("3", "Retained Earnings", None, "Equity", "RetainedEarnings", True),
    ("4", "Undeposited Funds", None, "Other Current Asset", "UndepositedFunds", True),
    ("5", "Fees Billed", None, "Income", "ServiceFeeIncome", False),
    ("7", "Advertising", None, "Expense", "AdvertisingPromotional", True),
    ("8", "Bank Charges", None, "Expense", "BankCharges", True),
    ("13", "Meals and Entertainment", None, "Expense", "EntertainmentMeals", True),
    ("15", "Insurance", None, "Expense", "Insurance", True),
    ("16", "Office Expenses", None, "Expense", "OfficeGeneralAdministrativeExpenses", True),
    ("17", "Rent or Lease", None, "Expense", "RentOrLeaseOfBuildings", True),
    ("24", "Utilities", None, "Expense", "Utilities", True),
    ("33", "Accounts Payable (A/P)", None, "Accounts Payable", "AccountsPayable", True),
    ("34", "Opening Balance Equity", None, "Equity", "OpeningBalanceEquity", True),
    ("35", "Checking", None, "Bank", "Checking", True),
    ("36", "Savings", None, "Bank", "Savings", True),
    ("37", "Truck", None, "Fixed Asset", "Vehicles", True),
    ("38", "Original Cost", "37", "Fixed Asset", "Vehicles", True),
    ("39", "Depreciation", "37", "Fixed Asset", "AccumulatedDepreciation", True),
    ("41", "Mastercard", None, "Credit Card", "CreditCard", True),
    ("44", "Notes Payable", None, "Long Term Liability", "NotesPayable", True),
    ("55", "Job Expenses", None, "Expense", "OtherMiscellaneousServiceCost", True),
    ("58", "Job Materials", "55", "Expense", "SuppliesMaterials", True),
    ("60", "Equipment Rental", "55", "Expense", "EquipmentRental", True),
    ("64", "Decks and Patios", "58", "Expense", "SuppliesMaterials", True),
    ("65", "Fountain and Garden Lighting", "58", "Expense", "SuppliesMaterials", True),
    ("70", "Depreciation Expense", None, "Expense", "Depreciation", True),
    ("79", "Sales of Product Income", None, "Income", "SalesOfProductIncome", True),
    ("80", "Cost of Goods Sold", None, "Cost of Goods Sold", "SuppliesMaterialsCogs", True),
    ("81", "Inventory Asset", None, "Other Current Asset", "Inventory", True),
    ("84", "Accounts Receivable (A/R)", None, "Accounts Receivable", "AccountsReceivable", True),
    ("86", "Discounts given", None, "Income", "DiscountsRefundsGiven", True),
    ("89", "Sales Tax Payable", None, "Other Current Liability", "SalesTaxPayable", True),
)
CLASSIFICATION = {"Bank": "Asset", "Accounts Receivable": "Asset", "Other Current Asset": "Asset",
                  "Fixed Asset": "Asset", "Accounts Payable": "Liability", "Credit Card": "Liability",
                  "Other Current Liability": "Liability", "Long Term Liability": "Liability", "Equity": "Equity",
                  "Income": "Revenue", "Cost of Goods Sold": "Expense", "Expense": "Expense"}
ROLES: dict[str, tuple[str, ...]] = {
    "checking": ("35",), "savings": ("36",), "bank": ("35", "35", "36"), "ar": ("84",), "undeposited": ("4",),
    "inventory": ("81",), "truck": ("38",), "truck_depreciation": ("39",), "ap": ("33",), "card": ("41",),
    "sales_tax": ("89",), "notes": ("44",), "opening": ("34",), "income": ("1", "2"), "cogs": ("80",),
    "depreciation": ("70",), "job": ("58", "60", "64", "65"),
    "expense": ("7", "8", "13", "15", "16", "17", "24", "58", "60", "64", "65"),
}
# id, name, DueDays, DiscountPercent, DiscountDays, active
_TERMS = (("1", "Due on receipt", 0, None, 0, True), ("2", "Net 15", 15, None, 0, True),
          ("3", "Net 30", 30, None, 0, True), ("4", "Net 45", 45, None, 0, True), ("5", "Net 60", 60, None, 0, True),
          ("6", "1% 10 Net 30", 30, 1, 10, True), ("7", "Net 90", 90, None, 0, False))
TERM_DAYS = {days: tid for tid, _n, days, _p, _d, active in _TERMS if active and _p is None}
_METHODS = (("1", "Cash", "NON_CREDIT_CARD", True), ("2", "Check", "NON_CREDIT_CARD", True),
            ("3", "Visa", "CREDIT_CARD", True), ("4", "MasterCard", "CREDIT_CARD", True),
            ("5", "American Express", "CREDIT_CARD", True), ("6", "Discover", "CREDIT_CARD", True),
            ("7", "Diners Club", "CREDIT_CARD", False))
_AGENCIES = (("1", "Arizona Dept. of Revenue"), ("2", "Board of Equalization"))
# id, name, description, rate %, agency, active
_RATES = (("1", "AZ State tax", "Sales Tax", Decimal("5.6"), "1", True),
          ("2", "Tucson City", "Sales Tax", Decimal("2.6"), "1", True),
          ("3", "California", "Sales Tax", 8, "2", True),
          ("4", "California (2019)", "Sales Tax", Decimal("7.25"), "2", False))
# id, name, rate ids, active
_CODES = (("1", "Tucson", ("1", "2"), True), ("2", "California", ("3",), True), ("3", "California (2019)", ("4",), False))
_CODE_BY_STATE = {"AZ": "1", "CA": "2"}  # destination-based: other states are out of state, untaxed


def _deleted(name: str, active: bool) -> str:
    return name if active else f"{name} (deleted)"


def _with_meta(head: dict[str, Any], oid: str, created: float, tail: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**head, "domain": "QBO", "sparse": False, "Id": oid, "SyncToken": "0",
            "MetaData": metadata(created, created), **(tail or {})}


def account_obj(aid: str, name: str, parent: dict[str, Any] | None, account_type: str, sub_type: str,
                created: float, *, active: bool = True) -> dict[str, Any]:
    """An Account shaped like samples/account.json (a sub-account carries ParentRef and the
    parent's FullyQualifiedName before its own Name; an inactive one is renamed " (deleted)")."""
    head: dict[str, Any] = {"Name": _deleted(name, active), "SubAccount": parent is not None}
    if parent is not None:
        head["ParentRef"] = {"value": parent["Id"]}
    head.update({"FullyQualifiedName": _deleted(f"{parent['FullyQualifiedName']}:{name}" if parent else name, active),
                 "Active": active, "Classification": CLASSIFICATION[account_type], "AccountType": account_type,
                 "AccountSubType": sub_type, "CurrentBalance": ZERO, "CurrentBalanceWithSubAccounts": ZERO,
                 "CurrencyRef": dict(USD)})
    return _with_meta(head, aid, created)


def account_ref(account: dict[str, Any]) -> dict[str, str]:
    """How documents point at an account: its id and full name (`Truck:Original Cost`)."""
    return {"value": account["Id"], "name": account["FullyQualifiedName"]}


def term_ref(term_id: str) -> dict[str, str]:
    name = next(n for tid, n, *_rest in _TERMS if tid == term_id)
    return {"value": term_id, "name": name}


def tax_code_for(customer: dict[str, Any]) -> str | None:
    """The tax code a taxable customer's documents use (by the state it is billed in), or None."""
    if not customer.get("Taxable"):
        return None
    return _CODE_BY_STATE.get(str(customer.get("BillAddr", {}).get("CountrySubDivisionCode", "")))


def sales_tax_rate_max() -> Decimal:
    """The highest combined active rate of any tax code, in percent."""
    return max(sum((Decimal(str(r[3])) for r in _RATES if r[0] in rates), Decimal(0))
               for _i, _n, rates, active in _CODES if active)


def tax_detail(code_id: str | None, taxable: Decimal) -> dict[str, Any]:
    """`TxnTaxDetail` as invoice_with_tax_and_payments.json: one TaxLine per rate of the code,
    each rounded to the cent on the taxable amount; `{"TotalTax": 0.00}` without a code."""
    code = next((c for c in _CODES if c[0] == code_id), None)
    if code is None:
        return {"TotalTax": ZERO}
    if taxable <= 0:
        return {"TxnTaxCodeRef": {"value": code[0]}, "TotalTax": ZERO}
    lines: list[dict[str, Any]] = []
    total = ZERO
    for rate_id in code[2]:
        rate = next(r for r in _RATES if r[0] == rate_id)
        lines.append({"Amount": money(taxable * Decimal(str(rate[3])) / 100), "DetailType": "TaxLineDetail",
                      "TaxLineDetail": {"TaxRateRef": {"value": rate_id}, "PercentBased": True,
                                        "TaxPercent": rate[3], "NetAmountTaxable": taxable}})
        total += lines[-1]["Amount"]
    return {"TxnTaxCodeRef": {"value": code[0]}, "TotalTax": total, "TaxLine": lines}


def fixed_lists(created: float) -> list[tuple[str, dict[str, Any]]]:
    """Every company's starting lists, as (entity, object): the chart of accounts, terms,
    payment methods, tax agencies, tax rates and tax codes (shapes from the samples)."""
    out: list[tuple[str, dict[str, Any]]] = []
    accounts: dict[str, dict[str, Any]] = {}
    for aid, name, parent, account_type, sub_type, active in ACCOUNTS:
        accounts[aid] = account_obj(aid, name, accounts.get(parent or ""), account_type, sub_type, created,
                                    active=active)
        out.append(("Account", accounts[aid]))
    for tid, name, days, pct, discount_days, active in _TERMS:
        head: dict[str, Any] = {"Name": _deleted(name, active), "Active": active, "Type": "STANDARD", "DueDays": days}
        if pct is not None:
            head["DiscountPercent"] = pct
        head["DiscountDays"] = discount_days
        out.append(("Term", _with_meta(head, tid, created)))
    for mid, name, kind, active in _METHODS:
        out.append(("PaymentMethod", _with_meta({"Name": _deleted(name, active), "Active": active, "Type": kind},
                                                mid, created)))
    for gid, name in _AGENCIES:
        out.append(("TaxAgency", _with_meta({"TaxTrackedOnPurchases": False, "TaxTrackedOnSales": True}, gid,
                                            created, {"DisplayName": name})))
    for rid, name, description, value, agency, active in _RATES:
        out.append(("TaxRate", _with_meta({"Name": _deleted(name, active), "Description": description,
                                           "Active": active, "RateValue": value, "AgencyRef": {"value": agency},
                                           "SpecialTaxType": "NONE", "DisplayType": "ReadOnly"}, rid, created)))
    rate_names = {r[0]: r[1] for r in _RATES}
    for cid, name, rates, active in _CODES:
        details = [{"TaxRateRef": {"value": r, "name": rate_names[r]}, "TaxTypeApplicable": "TaxOnAmount",
                    "TaxOrder": 0} for r in rates]
        out.append(("TaxCode", _with_meta({"Name": _deleted(name, active), "Description": name, "Active": active,
                                           "Taxable": True, "TaxGroup": True,
                                           "SalesTaxRateList": {"TaxRateDetail": details},
                                           "PurchaseTaxRateList": {"TaxRateDetail": []}}, cid, created)))
    return out


class Picker(ABC):
    """Random references for a new object, all drawn from `rng`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    @abstractmethod
    def pick(self, entity: str, where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """A random live, active object of `entity` (satisfying `where`), or None if there is none."""

    @abstractmethod
    def get(self, entity: str, oid: str) -> dict[str, Any] | None:
        """The live object `entity` `oid`, or None."""

    def accounts(self, role: str) -> list[dict[str, Any]]:
        """The active accounts of `role` (ROLES), as they are now."""
        return [a for a in (self.get("Account", i) for i in ROLES[role]) if a is not None and a.get("Active", True)]

    def account(self, role: str) -> dict[str, str]:
        """A ref to an active account of `role` (ROLES); when every one of them is gone (merged,
        inactive), another active account of the same type."""
        ids = ROLES[role]
        found = self.accounts(role)
        if found:
            return account_ref(self.rng.choice(found))
        wanted = next(t for aid, _n, _p, t, _s, _a in ACCOUNTS if aid == ids[0])
        other = self.pick("Account", lambda a: a.get("AccountType") == wanted)
        if other is None:
            raise LookupError(f"no active {wanted} account left for {role}")
        return account_ref(other)


class ListPicker(Picker):
    """A Picker over objects held in memory (company generation)."""

    def __init__(self, rng: random.Random, pools: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(rng)
        self.pools = pools
        self._by_id = {e: {o["Id"]: o for o in objs} for e, objs in pools.items()}
        self._roles: dict[str, list[dict[str, Any]]] = {}  # the chart does not change while a company is made

    def accounts(self, role: str) -> list[dict[str, Any]]:
        if role not in self._roles:
            self._roles[role] = super().accounts(role)
        return self._roles[role]

    def add(self, entity: str, obj: dict[str, Any]) -> None:
        self.pools.setdefault(entity, []).append(obj)
        self._by_id.setdefault(entity, {})[obj["Id"]] = obj

    def pick(self, entity: str, where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        pool = self.pools.get(entity) or []
        if not pool:
            return None
        for _ in range(20):
            obj = pool[self.rng.randrange(len(pool))]
            if obj.get("Active", True) and (where is None or where(obj)):
                return obj
        return next((o for o in pool if o.get("Active", True) and (where is None or where(o))), None)

    def get(self, entity: str, oid: str) -> dict[str, Any] | None:
        return self._by_id.get(entity, {}).get(oid)
