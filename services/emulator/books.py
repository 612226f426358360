"""The emulator's bookkeeping rules, shared by company generation and mutations.

- `postings(entity, obj, items)`: the double-entry lines a document puts on the ledger,
  `(account id, amount)` with debits positive and credits negative; they sum to zero for every
  document (accrual basis; item lines post to the item's income / asset / expense account,
  inventory is not relieved to COGS). Only the `POSTING` entities post; estimates, purchase
  orders and time activities post nothing. `txn_date(obj)`: the date a document posts on.
- `party_effects(entity, obj)`: what a document adds to a customer's or vendor's Balance: an
  invoice its Balance, a credit memo minus its RemainingCredit, a payment minus its UnappliedAmt;
  a bill its Balance, a vendor credit minus its Balance, a bill payment minus what it left
  unapplied. So Customer.Balance = open invoices - unapplied payments - open credits, which is
  the A/R account's balance per customer (and the same for vendors and A/P).
- Settlements: a Payment's lines link Invoices and CreditMemos, a BillPayment's lines Bills and
  VendorCredits, a Deposit's lines Payments and SalesReceipts. `links(entity, obj)` reads them,
  `settle` applies a change of one link to the linked document (its Balance / RemainingCredit and
  its header LinkedTxn: "Payment" on invoices, "BillPaymentCheck" on bills, even for credit-card
  bill payments, as recorded), `deposited` marks a deposited payment, `rebalance` keeps a
  settlement whole after a linked document went away, `retotal_deposit` a deposit.
- `void_document`: the voided form of any voidable transaction (amounts zero, "Voided").
- `refs(entity, obj)`: every reference in an object with the entity it points at.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from services.emulator.fake import ZERO
from services.emulator.jsontext import money

__all__ = ["postings", "party_effects", "links", "settle", "deposited", "rebalance", "retotal_deposit", "unapplied",
           "void_document", "refs", "set_linked", "insert_key", "txn_date", "SETTLES", "BALANCE_FIELD", "DEPOSITABLE",
           "UNDEPOSITED", "POSTING", "ITEM_ACCOUNT_KEYS", "AR", "AP", "SALES_TAX"]

AR, AP, UNDEPOSITED, SALES_TAX, COGS, SERVICES = "84", "33", "4", "89", "80", "1"  # chart.ACCOUNTS ids
# settlement entity -> {linked TxnType: the field of the linked document it pays down}
SETTLES = {"Payment": {"Invoice": "Balance", "CreditMemo": "RemainingCredit"},
           "BillPayment": {"Bill": "Balance", "VendorCredit": "Balance"}}
CREDITS = frozenset({"CreditMemo", "VendorCredit"})
BACKLINK = {"Payment": "Payment", "BillPayment": "BillPaymentCheck"}  # the TxnType on the paid document
BALANCE_FIELD = {"Invoice": "Balance", "Bill": "Balance", "CreditMemo": "RemainingCredit", "VendorCredit": "Balance"}
DEPOSITABLE = frozenset({"Payment", "SalesReceipt"})
_ALWAYS_LINKED = frozenset({"Invoice", "Estimate"})  # these carry "LinkedTxn": [] even when nothing links
_SALES_SIGN = {"Invoice": 1, "SalesReceipt": 1, "CreditMemo": -1, "RefundReceipt": -1}
_EXPENSE_SIGN = {"Bill": 1, "Purchase": 1, "VendorCredit": -1}
# the entities `postings` has lines for; an item's accounts `postings` resolves item lines through
POSTING = frozenset({*_SALES_SIGN, *_EXPENSE_SIGN, "Payment", "BillPayment", "Deposit", "Transfer", "JournalEntry"})
ITEM_ACCOUNT_KEYS = ("IncomeAccountRef", "AssetAccountRef", "ExpenseAccountRef")
_REF_KEYS = {"CustomerRef": "Customer", "VendorRef": "Vendor", "EmployeeRef": "Employee", "ItemRef": "Item",
             "ClassRef": "Class", "DepartmentRef": "Department", "SalesTermRef": "Term", "TermRef": "Term",
             "PaymentMethodRef": "PaymentMethod", "TaxRateRef": "TaxRate", "TxnTaxCodeRef": "TaxCode",
             "TaxCodeRef": "TaxCode", "AgencyRef": "TaxAgency"}


def _amount(value: Any) -> Decimal:
    return value if type(value) is Decimal else money(value or 0)


# ---- postings ----------------------------------------------------------------------------------
def _item_account(items: Mapping[str, dict[str, Any]], line: dict[str, Any], detail: str, default: str,
                  *keys: str) -> str:
    """The first of the line item's `keys` accounts it has, else `default`."""
    item = items.get(str(line.get(detail, {}).get("ItemRef", {}).get("value", ""))) or {}
    for key in keys:
        if key in item:
            return str(item[key]["value"])
    return default


def _sales(entity: str, obj: dict[str, Any], items: Mapping[str, dict[str, Any]]) -> list[tuple[str, Decimal]]:
    sign = _SALES_SIGN[entity]
    counter = AR if entity in ("Invoice", "CreditMemo") else str(obj.get("DepositToAccountRef", {}).get("value"))
    out = [(counter, sign * _amount(obj.get("TotalAmt")))]
    for line in obj.get("Line", []):
        kind = line.get("DetailType")
        if kind == "SalesItemLineDetail":
            income = _item_account(items, line, kind, SERVICES, "IncomeAccountRef")
            out.append((income, -sign * _amount(line.get("Amount"))))
        elif kind == "DiscountLineDetail":
            account = str(line[kind].get("DiscountAccountRef", {}).get("value", ""))
            out.append((account, sign * _amount(line.get("Amount"))))
    out.append((SALES_TAX, -sign * _amount(obj.get("TxnTaxDetail", {}).get("TotalTax"))))
    return out


def _expense_lines(obj: dict[str, Any], items: Mapping[str, dict[str, Any]], sign: int) -> list[tuple[str, Decimal]]:
    out = []
    for line in obj.get("Line", []):
        kind = line.get("DetailType")
        if kind == "AccountBasedExpenseLineDetail":
            out.append((str(line[kind]["AccountRef"]["value"]), sign * _amount(line.get("Amount"))))
        elif kind == "ItemBasedExpenseLineDetail":
            account = _item_account(items, line, kind, COGS, "AssetAccountRef", "ExpenseAccountRef")
            out.append((account, sign * _amount(line.get("Amount"))))
    return out


def _expense(entity: str, obj: dict[str, Any], items: Mapping[str, dict[str, Any]]) -> list[tuple[str, Decimal]]:
    sign = _EXPENSE_SIGN[entity]
    if entity == "Purchase":
        counter = str(obj["AccountRef"]["value"])
        sign = -sign if obj.get("Credit") else sign
    else:
        counter = str(obj.get("APAccountRef", {}).get("value", AP))
    return [(counter, -sign * _amount(obj.get("TotalAmt"))), *_expense_lines(obj, items, sign)]


def _deposit(obj: dict[str, Any]) -> list[tuple[str, Decimal]]:
    out = [(str(obj["DepositToAccountRef"]["value"]), _amount(obj.get("TotalAmt")))]
    for line in obj.get("Line", []):
        account = line.get("DepositLineDetail", {}).get("AccountRef", {}).get("value")
        out.append((str(account) if account and not line.get("LinkedTxn") else UNDEPOSITED, -_amount(line["Amount"])))
    cashback = obj.get("CashBack")
    if cashback:
        out.append((str(cashback["AccountRef"]["value"]), _amount(cashback.get("Amount"))))
    return out


def txn_date(obj: dict[str, Any]) -> str:
    """The `YYYY-MM-DD` a document posts on: its TxnDate ("" when it has none)."""
    return str(obj.get("TxnDate") or "")


def postings(entity: str, obj: dict[str, Any], items: Mapping[str, dict[str, Any]]) -> list[tuple[str, Decimal]]:
    """The ledger lines of one document (see module docstring); [] for non-posting entities."""
    if obj.get("status") == "Deleted":
        return []
    if entity in _SALES_SIGN:
        out = _sales(entity, obj, items)
    elif entity in _EXPENSE_SIGN:
        out = _expense(entity, obj, items)
    elif entity == "Payment":
        total = _amount(obj.get("TotalAmt"))
        out = [(str(obj["DepositToAccountRef"]["value"]), total), (AR, -total)]
    elif entity == "BillPayment":
        total = _amount(obj.get("TotalAmt"))
        paid_from = (obj.get("CheckPayment") or {}).get("BankAccountRef") or obj["CreditCardPayment"]["CCAccountRef"]
        out = [(AP, total), (str(paid_from["value"]), -total)]
    elif entity == "Deposit":
        out = _deposit(obj)
    elif entity == "Transfer":
        amount = _amount(obj.get("Amount"))
        out = [(str(obj["ToAccountRef"]["value"]), amount), (str(obj["FromAccountRef"]["value"]), -amount)]
    elif entity == "JournalEntry":
        out = [(str(ln["JournalEntryLineDetail"]["AccountRef"]["value"]),
                _amount(ln["Amount"]) * (1 if ln["JournalEntryLineDetail"]["PostingType"] == "Debit" else -1))
               for ln in obj.get("Line", []) if ln.get("DetailType") == "JournalEntryLineDetail"]
    else:
        out = []
    return [(account, amount) for account, amount in out if amount]


# ---- customers' and vendors' balances ------------------------------------------------------------
def _linked_sums(entity: str, obj: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """(paid to documents, taken from credits) by a settlement's lines."""
    docs = credits = ZERO
    for (txn_type, _tid), amount in links(entity, obj).items():
        if txn_type in CREDITS:
            credits += amount
        else:
            docs += amount
    return docs, credits


def unapplied(entity: str, obj: dict[str, Any]) -> Decimal:
    """What a Payment or BillPayment paid beyond the documents it settles (credits count as money in)."""
    docs, credits = _linked_sums(entity, obj)
    return _amount(obj.get("TotalAmt")) - docs + credits


def party_effects(entity: str, obj: dict[str, Any]) -> list[tuple[str, str, Decimal]]:
    """(Customer or Vendor, id, amount) this document adds to that party's Balance."""
    if obj.get("status") == "Deleted":
        return []
    if entity in ("Invoice", "CreditMemo", "Payment"):
        party, key = "Customer", "CustomerRef"
    elif entity in ("Bill", "VendorCredit", "BillPayment"):
        party, key = "Vendor", "VendorRef"
    else:
        return []
    if entity in ("Invoice", "Bill"):
        amount = _amount(obj.get("Balance"))
    elif entity in CREDITS:
        amount = -_amount(obj.get(BALANCE_FIELD[entity]))
    elif entity == "Payment":
        amount = -_amount(obj.get("UnappliedAmt"))
    else:
        amount = -unapplied(entity, obj)
    return [(party, str(obj[key]["value"]), amount)] if amount else []


# ---- settlements ---------------------------------------------------------------------------------
def links(entity: str, obj: dict[str, Any]) -> dict[tuple[str, str], Decimal]:
    """What a Payment / BillPayment / Deposit applies to each linked document: {(TxnType, TxnId): amount}."""
    wanted = SETTLES.get(entity) or (DEPOSITABLE if entity == "Deposit" else ())
    out: dict[tuple[str, str], Decimal] = {}
    for line in obj.get("Line", []):
        for link in line.get("LinkedTxn", []):
            if link.get("TxnType") in wanted:
                key = (str(link["TxnType"]), str(link["TxnId"]))
                out[key] = out.get(key, ZERO) + _amount(line.get("Amount"))
    return {k: v for k, v in out.items() if v}


def set_linked(entity: str, obj: dict[str, Any], txn_id: str, txn_type: str, linked: bool) -> None:
    """Add (newest first, as recorded) or remove a header LinkedTxn entry; the key sits before Line."""
    entries = [e for e in obj.get("LinkedTxn", []) if not (e.get("TxnId") == txn_id and e.get("TxnType") == txn_type)]
    if linked:
        entries.insert(0, {"TxnId": txn_id, "TxnType": txn_type})
    if "LinkedTxn" in obj:
        if entries or entity in _ALWAYS_LINKED:
            obj["LinkedTxn"] = entries
        else:
            del obj["LinkedTxn"]
    elif entries:
        insert_key(obj, "LinkedTxn", entries, before="Line")


def insert_key(obj: dict[str, Any], key: str, value: Any, *, before: str | None = None,
               after: str | None = None) -> None:
    """Set `obj[key]`; a new key goes where QBO writes it (before or after a neighbour, else last)."""
    if key in obj or (before not in obj and after not in obj):
        obj[key] = value
        return
    items = []
    for k, v in obj.items():
        if k == before:
            items.append((key, value))
        items.append((k, v))
        if k == after:
            items.append((key, value))
    obj.clear()
    obj.update(items)


def settle(entity: str, doc: dict[str, Any], settlement: str, settlement_id: str,
           before: Decimal, after: Decimal) -> None:
    """The link from `settlement` `settlement_id` to `doc` went from `before` to `after`:
    move the document's open amount and its header LinkedTxn accordingly."""
    field = BALANCE_FIELD[entity]
    doc[field] = money(_amount(doc.get(field)) - (after - before))
    if entity == "CreditMemo":
        doc["Balance"] = doc[field]
    if entity in ("Invoice", "Bill") and (before == 0) != (after == 0):
        set_linked(entity, doc, settlement_id, BACKLINK[settlement], after != 0)


def deposited(entity: str, obj: dict[str, Any], deposit_id: str, linked: bool) -> None:
    """Mark (or unmark) a Payment / SalesReceipt as deposited by Deposit `deposit_id`."""
    set_linked(entity, obj, deposit_id, "Deposit", linked)


def rebalance(entity: str, obj: dict[str, Any]) -> None:
    """After lines were removed from a Payment / BillPayment, keep it whole: credits only offset
    documents (credit lines shrink to what the document lines hold) and it never applies more
    than it holds (document lines shrink); lines shrink last first, a Payment's UnappliedAmt is
    what is left."""
    docs, credits = _linked_sums(entity, obj)
    _shrink(obj, credits - docs, credit=True)
    _shrink(obj, -unapplied(entity, obj), credit=False)
    if entity == "Payment":
        obj["UnappliedAmt"] = max(unapplied(entity, obj), ZERO)


def _shrink(obj: dict[str, Any], excess: Decimal, *, credit: bool) -> None:
    lines = obj.get("Line", [])
    for line in reversed(list(lines)):
        if excess <= 0:
            return
        if any(lt.get("TxnType") in CREDITS for lt in line.get("LinkedTxn", [])) != credit:
            continue
        cut = min(excess, _amount(line["Amount"]))
        line["Amount"] = money(_amount(line["Amount"]) - cut)
        excess -= cut
        if line["Amount"] == 0:
            lines.remove(line)


def retotal_deposit(obj: dict[str, Any]) -> None:
    """A deposit's TotalAmt from its lines (cash back subtracted, never more than the lines)."""
    lines = sum((_amount(line["Amount"]) for line in obj.get("Line", [])), ZERO)
    cashback = obj.get("CashBack")
    if cashback:
        cashback["Amount"] = min(_amount(cashback["Amount"]), lines)
        lines -= cashback["Amount"]
    obj["TotalAmt"] = money(lines)


# ---- void ----------------------------------------------------------------------------------------
def void_document(entity: str, obj: dict[str, Any]) -> None:
    """The voided form, in place (samples/invoice_voided_real.json generalised): every line
    Amount 0 (item lines lose Qty/UnitPrice; a Payment or BillPayment loses its lines, so what
    it paid goes back), totals and open amounts 0, tax 0, PrivateNote "Voided" after CurrencyRef."""
    if entity in SETTLES:
        obj["Line"] = []
    for line in obj.get("Line", []):
        line["Amount"] = ZERO
        for detail in ("SalesItemLineDetail", "ItemBasedExpenseLineDetail"):
            if detail in line:
                line[detail].pop("Qty", None)
                line[detail].pop("UnitPrice", None)
    for key in ("TotalAmt", "Amount", "Balance", "RemainingCredit", "UnappliedAmt"):
        if key in obj:
            obj[key] = ZERO
    if "TxnTaxDetail" in obj:
        obj["TxnTaxDetail"] = {"TotalTax": ZERO}
    obj.pop("DeliveryInfo", None)
    insert_key(obj, "PrivateNote", "Voided", after="CurrencyRef")


# ---- references ----------------------------------------------------------------------------------
def refs(entity: str, obj: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every reference in `obj` as (entity it points at, the ref dict): `*Ref` keys by name,
    `*AccountRef` to Account, `ParentRef` to the owner's own entity, `EntityRef` by its type
    (`{"type": "Vendor"}` on purchases, `Entity.Type` on journal lines, `"CUSTOMER"` on deposits).
    The US pseudo tax codes TAX and NON are not objects and are skipped."""
    stack: list[tuple[Any, str | None]] = [(obj, None)]
    while stack:
        node, entity_type = stack.pop()
        if isinstance(node, list):
            stack.extend((child, None) for child in node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if not isinstance(value, dict):
                if isinstance(value, list):
                    stack.append((value, None))
                continue
            target = _target(entity, key, value, entity_type)
            if target is not None and "value" in value:
                if target != "TaxCode" or value["value"] not in ("TAX", "NON"):
                    yield target, value
            elif key == "Entity" and "EntityRef" not in value and "value" in value:
                yield str(value.get("type", "")).title(), value  # a deposit line's Entity is the ref itself
            else:
                stack.append((value, str(value.get("Type")) if key == "Entity" and "Type" in value else None))


def _target(entity: str, key: str, value: dict[str, Any], entity_type: str | None) -> str | None:
    if key in _REF_KEYS:
        return _REF_KEYS[key]
    if key.endswith("AccountRef"):
        return "Account"
    if key == "ParentRef":
        return entity
    if key == "EntityRef":
        return entity_type or (str(value["type"]) if "type" in value else None)
    return None
