"""The admin API's changes to a company: create, update, delete, void, inactivate, merge.

`apply(company, entity, op, ...)` is one mutation. Its `Change` (the unit of work) loads each
object it touches once, changes it in memory and carries the consequences through the books
before anything is saved:
- a Payment's / BillPayment's lines move the Balance and header LinkedTxn of the invoices,
  credit memos, bills and vendor credits they link (create, update with new lines, void,
  delete all go through the same difference of links); a Deposit's lines mark its payments
  and sales receipts deposited or not;
- voiding or deleting a document first releases what links it (a payment that paid a voided
  invoice keeps its money as UnappliedAmt; a deleted payment leaves its deposit);
- a merge moves every reference of the merged-away row to the survivor (sub-customers,
  sub-accounts and sub-classes included) and adds its balance to the survivor's.
Then every changed object is saved once at `now`: the primary object and each linked document
with SyncToken + 1, a payment marked deposited with a new LastUpdatedTime only. Customer and
Vendor Balance and Account CurrentBalance are the generated company's: mutations other than
merges leave them as they are (see docs/INTERNALS.md, "Emulator").

`update` without fields makes a visible change per entity (a name "(rev n)", a price, a
quantity, an amount, a memo); documents keep their totals and open amounts consistent.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from services.emulator.books import (
    BALANCE_FIELD,
    DEPOSITABLE,
    SETTLES,
    UNDEPOSITED,
    deposited,
    insert_key,
    links,
    rebalance,
    refs,
    retotal_deposit,
    settle,
    void_document,
)
from services.emulator.chart import Picker, account_ref
from services.emulator.data import CompanyGenerator, retotal_sales
from services.emulator.fake import ZERO, cents
from services.emulator.jsontext import loads, money
from services.emulator.ledger import Made, Plan, name_ref
from services.emulator.store import EntityStore, Record
from services.emulator.traits import ENTITIES, TRAITS

__all__ = ["Company", "apply", "OPS", "MutationError"]

OPS = ("create", "update", "delete", "void", "merge", "inactivate")
_SALES = frozenset({"Invoice", "Estimate", "SalesReceipt", "CreditMemo", "RefundReceipt"})
_EXPENSES = frozenset({"Bill", "Purchase", "VendorCredit", "PurchaseOrder"})
# who may link a document: the settlements of invoices and bills, the deposits of payments
_HOLDERS = {"Invoice": "Payment", "CreditMemo": "Payment", "Bill": "BillPayment", "VendorCredit": "BillPayment",
            "Payment": "Deposit", "SalesReceipt": "Deposit"}
Key = tuple[str, int]


class MutationError(Exception):
    """A refused mutation: `status` is the HTTP status for the admin API."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Company(Protocol):
    """What a mutation needs of a realm."""

    stores: dict[str, EntityStore]
    generator: CompanyGenerator
    next_doc: dict[str, int]


class StorePicker(Picker):
    """A Picker over a realm's live records (random ones, from the company's Random)."""

    def __init__(self, company: Company) -> None:
        super().__init__(company.generator.rng)
        self.stores = company.stores

    def pick(self, entity: str, where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        store = self.stores[entity]
        live = store.live
        tries = [live[self.rng.randrange(len(live))] for _ in range(20)] if live else []
        for rid in [*tries, *live]:  # random first; a full scan only when those all miss
            rec = store.records[rid]
            if rec.active:
                obj: dict[str, Any] = loads(rec.json)
                if where is None or where(obj):
                    return obj
        return None

    def get(self, entity: str, oid: str) -> dict[str, Any] | None:
        rec = self.stores[entity].get(oid)
        return loads(rec.json) if rec is not None else None


class Change:
    """One mutation's unit of work (see module docstring)."""

    def __init__(self, company: Company, now: float, seq: Callable[[], int]) -> None:
        self.company = company
        self.now = now
        self.seq = seq
        self.objs: dict[Key, dict[str, Any]] = {}
        self.recs: dict[Key, Record | None] = {}
        self.how: dict[Key, str] = {}  # "new" | "bump" (SyncToken + 1) | "touch" (LastUpdatedTime only)
        self.deleted: set[Key] = set()
        self.linked: dict[Key, dict[tuple[str, str], Decimal]] = {}  # links as last carried through

    def load(self, entity: str, oid: Any) -> dict[str, Any] | None:
        """The live object (the same dict for every call), or None."""
        rec = self.company.stores[entity].get(oid)
        if rec is None:
            return None
        key = (entity, rec.id)
        if key not in self.objs:
            self.objs[key] = loads(rec.json)
            self.recs[key] = rec
            self.linked[key] = links(entity, self.objs[key])
        return self.objs[key]

    def require(self, entity: str, oid: Any) -> dict[str, Any]:
        obj = self.load(entity, oid)
        if obj is None:
            raise MutationError(f"{entity} {oid} not found", 404)
        return obj

    def add(self, entity: str, obj: dict[str, Any]) -> None:
        key = (entity, int(obj["Id"]))
        self.objs[key], self.recs[key], self.how[key], self.linked[key] = obj, None, "new", {}

    def mark(self, entity: str, oid: Any, how: str = "bump") -> None:
        key = (entity, int(str(oid)))
        if self.how.get(key) not in ("new", "bump"):
            self.how[key] = how

    def delete(self, entity: str, oid: Any) -> None:
        self.deleted.add((entity, int(str(oid))))

    def carry(self) -> None:
        """Carry every changed link of a settlement or deposit to the documents it links."""
        for (entity, rid), before in list(self.linked.items()):
            if entity not in SETTLES and entity != "Deposit":
                continue
            gone = (entity, rid) in self.deleted
            after = {} if gone else links(entity, self.objs[(entity, rid)])
            for (txn_type, txn_id) in before.keys() | after.keys():
                was, now = before.get((txn_type, txn_id), ZERO), after.get((txn_type, txn_id), ZERO)
                target = self.load(txn_type, txn_id) if was != now else None
                if target is None:
                    continue
                if entity == "Deposit":
                    deposited(txn_type, target, str(rid), now > 0)
                    self.mark(txn_type, txn_id, "touch")
                else:
                    settle(txn_type, target, entity, str(rid), was, now)
                    self.mark(txn_type, txn_id)
            self.linked[(entity, rid)] = after

    def commit(self) -> dict[Key, Record]:
        """Save every change at `now`; returns the records by key."""
        out: dict[Key, Record] = {}
        for key, obj in self.objs.items():
            store = self.company.stores[key[0]]
            rec = self.recs[key]
            if key in self.deleted:
                if rec is not None:
                    store.tombstone(rec, self.now, self.seq())
                    out[key] = rec
                continue
            how = self.how.get(key)
            if how is None:
                continue
            if how == "bump":
                obj["SyncToken"] = str(int(obj.get("SyncToken", "0")) + 1)
            out[key] = store.save(rec, obj, self.now, self.seq())
        return out


def apply(company: Company, entity: str, op: str, object_id: Any, fields: dict[str, Any], merge_into: Any,
          now: float, seq: Callable[[], int]) -> tuple[Record, str | None]:
    """One mutation (see module docstring): (the resulting record, the merged-away id for a merge)."""
    traits = TRAITS[entity]
    change = Change(company, now, seq)
    deleted_id = None
    if op == "create":
        obj = _create(change, entity)
        obj.update(fields)
        change.add(entity, obj)
        key = (entity, int(obj["Id"]))
    else:
        obj = change.require(entity, object_id)
        key = (entity, int(obj["Id"]))
        if op == "update":
            _update(change, entity, obj, fields)
        elif op == "delete":
            if not traits.deletable:
                raise MutationError(f"{entity} is a name-list entity: it cannot be deleted, only made inactive "
                                    "(op inactivate)" if traits.name_list else f"a {entity} cannot be deleted")
            _release(change, entity, obj["Id"])
            change.delete(entity, obj["Id"])
        elif op == "void":
            if not traits.voidable:
                voidable = ", ".join(e for e in ENTITIES if TRAITS[e].voidable)
                raise MutationError(f"a {entity} cannot be voided (voidable: {voidable})")
            _release(change, entity, obj["Id"])
            void_document(entity, obj)
        elif op == "inactivate":
            if not traits.name_list:
                raise MutationError(f"a {entity} cannot be made inactive: it is not a name list")
            _inactivate(entity, obj)
        else:
            if not traits.mergeable:
                mergeable = ", ".join(e for e in ENTITIES if TRAITS[e].mergeable)
                raise MutationError(f"a {entity} cannot be merged (mergeable: {mergeable})")
            deleted_id = obj["Id"]
            survivor = change.require(entity, merge_into)
            _merge(change, entity, obj, survivor)
            key = (entity, int(survivor["Id"]))
        if op != "delete":
            change.mark(*key)
    change.carry()
    return change.commit()[key], deleted_id


# ---- create ------------------------------------------------------------------------------------
def _taken(company: Company, *entities: str) -> set[str]:
    return {rec.name for e in entities for rec in company.stores[e].records.values() if rec.name}


def _doc(company: Company, entity: str) -> str:
    start = TRAITS[entity].doc_start or 1
    number = company.next_doc.get(entity, start)
    company.next_doc[entity] = number + 1
    return str(number)


def _party(picker: Picker, entity: str, ref: dict[str, Any]) -> dict[str, Any]:
    return picker.get(entity, str(ref["value"])) or {"Id": ref["value"], "DisplayName": ref.get("name", "")}


def _open(change: Change, entity: str) -> dict[str, Any] | None:
    """A random open document (Balance > 0) of `entity`, or None."""
    store = change.company.stores[entity]
    live = store.live
    if not live:
        return None
    start = change.company.generator.rng.randrange(len(live))
    for n in range(len(live)):
        rec = store.records[live[(start + n) % len(live)]]
        if b'"Balance":0.00' not in rec.json:
            obj = change.load(entity, rec.id)
            if obj is not None and money(obj.get("Balance", 0)) > 0:
                return obj
    return None


def _create(change: Change, entity: str) -> dict[str, Any]:
    """A new, realistic object with the next id (references drawn from the live company)."""
    company = change.company
    gen, now = company.generator, change.now
    new_id = company.stores[entity].next_id
    picker = StorePicker(company)
    if entity in ("Customer", "Vendor", "Employee"):
        gen.names.update(_taken(company, "Customer", "Vendor", "Employee"))
        if entity == "Customer":
            return gen.customer(new_id, now, now, active=True)
        make = gen.ledger.vendor if entity == "Vendor" else gen.ledger.employee
        return make(new_id, now, now, active=True)
    if entity == "Item":
        gen.item_names.update(_taken(company, "Item"))
        return gen.item(new_id, now, now, active=True)
    if entity in ("Class", "Department"):
        return gen.ledger.new_list_entry(entity, new_id, now, _taken(company, entity))
    if entity in ("Account", "Term", "PaymentMethod", "TaxAgency", "TaxRate", "TaxCode"):
        return gen.ledger.new_fixed(entity, new_id, now, _taken(company, entity), picker)
    if entity in ("Payment", "BillPayment"):
        return _settlement(change, entity, new_id, picker)
    if entity == "Deposit":
        return _deposit(change, new_id, picker)
    if entity in ("Transfer", "TimeActivity", "Purchase", "JournalEntry"):
        if entity == "Purchase":
            kind = gen.rng.choice(["Cash", "Check", "CreditCard"])
            return gen.ledger.purchase(new_id, now, now, picker, kind=kind)
        if entity == "JournalEntry":
            return gen.ledger.journal_entry(new_id, _doc(company, entity), now, now, picker)
        make_other = gen.ledger.transfer if entity == "Transfer" else gen.ledger.time_activity
        return make_other(new_id, now, now, picker)
    if entity in ("Bill", "VendorCredit", "PurchaseOrder"):
        vendor = picker.pick("Vendor")
        if vendor is None:
            raise MutationError(f"the realm needs an active vendor before a {entity} can be created")
        if entity == "Bill":
            return gen.ledger.bill(new_id, now, now, vendor, picker)
        if entity == "VendorCredit":
            return gen.ledger.vendor_credit(new_id, now, now, vendor, picker)
        return gen.ledger.purchase_order(new_id, _doc(company, entity), now, now, vendor, picker, None)
    customer = picker.pick("Customer")
    item = picker.pick("Item")
    if customer is None or item is None:
        raise MutationError(f"the realm needs a customer and an item before an {entity} can be created")
    items = [item] + [i for i in (picker.pick("Item") for _ in range(2)) if i]
    doc = _doc(company, entity)
    if entity == "Invoice":
        return gen.invoice(new_id, doc, now, now, customer, items, picker=picker)
    if entity == "Estimate":
        return gen.estimate(new_id, doc, now, now, customer, items, picker=picker)
    if entity == "SalesReceipt":
        return gen.sales_receipt(new_id, doc, now, now, customer, items, picker)
    if entity == "CreditMemo":
        return gen.credit_memo(new_id, doc, now, now, customer, items, picker)
    return gen.refund_receipt(new_id, doc, now, now, customer, items, picker)


def _settlement(change: Change, entity: str, new_id: int, picker: Picker) -> dict[str, Any]:
    """A payment of the whole balance of a random open invoice (bill), or, with none open, a
    customer's unapplied payment; carrying the links then applies it."""
    gen = change.company.generator
    target = "Invoice" if entity == "Payment" else "Bill"
    party_entity, party_key = ("Customer", "CustomerRef") if entity == "Payment" else ("Vendor", "VendorRef")
    doc = _open(change, target)
    if doc is not None:
        plan = Plan(change.now, _party(picker, party_entity, doc[party_key]),
                    [(Made(target, doc, change.now, change.now), money(doc["Balance"]))])
    else:
        party = picker.pick(party_entity)
        if party is None or entity == "BillPayment":
            raise MutationError(f"a {entity} needs an open {target} (none is open)")
        plan = Plan(change.now, party, extra=cents(gen.rng.randint(5000, 100000)))
    if entity == "Payment":
        return gen.ledger.payment(new_id, plan, picker)
    return gen.ledger.bill_payment(new_id, plan, picker)


def _deposit(change: Change, new_id: int, picker: Picker) -> dict[str, Any]:
    """A deposit of up to five undeposited payments and sales receipts, or, with none waiting,
    a direct deposit of other income."""
    ledger = change.company.generator.ledger
    waiting: list[tuple[str, dict[str, Any]]] = []
    needle = b'"DepositToAccountRef":{"value":"' + UNDEPOSITED.encode() + b'"'
    for entity in sorted(DEPOSITABLE):
        for rec in change.company.stores[entity].live_records():
            if len(waiting) < 5 and needle in rec.json and b'"TxnType":"Deposit"' not in rec.json:
                obj = loads(rec.json)
                if money(obj.get("TotalAmt", 0)) > 0:
                    waiting.append((entity, obj))
    if waiting:
        lines = [ledger.deposit_line(entity, obj) for entity, obj in waiting]
    else:
        lines = [ledger.direct_line(1, picker.account("income"), cents(ledger.rng.randint(5000, 90000)),
                                    picker.pick("Customer"))]
    return ledger.deposit(new_id, change.now, picker.account("bank"), lines, picker)


# ---- update ------------------------------------------------------------------------------------
def _update(change: Change, entity: str, obj: dict[str, Any], fields: dict[str, Any]) -> None:
    old_total = obj.get("TotalAmt")
    if fields:
        obj.update(fields)
    else:
        _default_update(entity, obj)
    field = BALANCE_FIELD.get(entity)
    if field and field not in fields and old_total is not None and obj.get("TotalAmt") != old_total:
        obj[field] = money(money(obj.get(field, 0)) + money(obj["TotalAmt"]) - money(old_total))
        if entity == "CreditMemo":
            obj["Balance"] = obj[field]


def _revised(text: str, rev: int) -> str:
    return f"{text.split(' (rev ')[0]} (rev {rev})"


def _default_update(entity: str, obj: dict[str, Any]) -> None:
    """A realistic, visible change (see module docstring)."""
    rev = int(obj.get("SyncToken", "0")) + 1
    if entity in ("Customer", "Vendor", "Employee"):
        name = _revised(str(obj.get("DisplayName", entity)), rev)
        obj["DisplayName"] = obj["PrintOnCheckName"] = name
        if entity == "Customer":
            obj["FullyQualifiedName"] = name if "ParentRef" not in obj else \
                f"{str(obj['FullyQualifiedName']).rsplit(':', 1)[0]}:{name}"
        local = str(obj.get("PrimaryEmailAddr", {}).get("Address", "info@example.com")).split("@")[0]
        obj["PrimaryEmailAddr"] = {"Address": f"{local.split('+')[0]}+r{rev}@example.com"}
    elif entity == "Item":
        obj["UnitPrice"] = money(obj.get("UnitPrice", 0)) + Decimal("1.00")
    elif entity in ("Account", "TaxCode", "TaxRate"):
        obj["Description"] = _revised(str(obj.get("Description") or "Updated"), rev)
    elif entity in ("Class", "Department", "Term", "PaymentMethod"):
        obj["Name"] = _revised(str(obj["Name"]), rev)
        if "FullyQualifiedName" in obj:
            parent = str(obj["FullyQualifiedName"]).rsplit(":", 1)[0] if "ParentRef" in obj else None
            obj["FullyQualifiedName"] = f"{parent}:{obj['Name']}" if parent else obj["Name"]
    elif entity == "TaxAgency":
        obj["DisplayName"] = _revised(str(obj["DisplayName"]), rev)
    elif entity in _SALES:
        _more_sales(obj, rev)
    elif entity in _EXPENSES:
        _more_expense(obj, rev)
    elif entity == "Transfer":
        obj["Amount"] = money(obj["Amount"]) + Decimal("1.00") if obj["Amount"] else obj["Amount"]
        _note(obj, rev)
    elif entity == "JournalEntry":
        for posting in ("Debit", "Credit"):
            line = next(ln for ln in obj["Line"] if ln["JournalEntryLineDetail"]["PostingType"] == posting)
            line["Amount"] = money(line["Amount"]) + Decimal("1.00")
    elif entity == "TimeActivity":
        obj["Hours"] = int(obj.get("Hours", 0)) + 1
    else:  # Payment, BillPayment, Deposit: a memo (their amounts are their links)
        _note(obj, rev)


def _note(obj: dict[str, Any], rev: int) -> None:
    insert_key(obj, "PrivateNote", _revised(str(obj.get("PrivateNote") or "Updated"), rev), after="CurrencyRef")


def _more_sales(obj: dict[str, Any], rev: int) -> None:
    first = next((ln for ln in obj.get("Line", []) if ln.get("DetailType") == "SalesItemLineDetail"), None)
    detail = (first or {}).get("SalesItemLineDetail", {})
    if first is None or "Qty" not in detail or "UnitPrice" not in detail:  # voided
        obj["CustomerMemo"] = {"value": f"Updated (rev {rev})"}
        return
    detail["Qty"] = int(detail["Qty"]) + 1
    first["Amount"] = money(Decimal(detail["UnitPrice"]) * detail["Qty"])
    retotal_sales(obj)


def _more_expense(obj: dict[str, Any], rev: int) -> None:
    lines = obj.get("Line", [])
    if not lines or not obj.get("TotalAmt"):  # voided
        _note(obj, rev)
        return
    first = lines[0]
    detail = first.get("ItemBasedExpenseLineDetail")
    if detail is not None and "Qty" in detail:
        detail["Qty"] = int(detail["Qty"]) + 1
        first["Amount"] = money(Decimal(detail["UnitPrice"]) * detail["Qty"])
    else:
        first["Amount"] = money(first["Amount"]) + Decimal("1.00")
    obj["TotalAmt"] = money(sum((money(ln["Amount"]) for ln in lines), ZERO))


# ---- delete, void, inactivate ------------------------------------------------------------------------
def _release(change: Change, entity: str, oid: str) -> None:
    """Before `entity` `oid` is voided or deleted, whatever links it lets go of it: the lines
    of payments (bill payments) that paid it, or of deposits that banked it."""
    holder = _HOLDERS.get(entity)
    if holder is None:
        return
    needle = b'{"TxnId":"' + oid.encode() + b'","TxnType":"' + entity.encode() + b'"'
    for rec in change.company.stores[holder].live_records():
        if needle not in rec.json:
            continue
        obj = change.require(holder, rec.id)
        obj["Line"] = [ln for ln in obj["Line"] if not any(
            lt.get("TxnId") == oid and lt.get("TxnType") == entity for lt in ln.get("LinkedTxn", []))]
        if holder == "Deposit":
            retotal_deposit(obj)
        else:
            rebalance(holder, obj)
        change.mark(holder, rec.id)
    change.carry()


def _inactivate(entity: str, obj: dict[str, Any]) -> None:
    obj["Active"] = False
    if TRAITS[entity].renames:
        for key in ("Name", "DisplayName", "FullyQualifiedName"):
            if key in obj and not str(obj[key]).endswith(" (deleted)"):
                obj[key] = f"{obj[key]} (deleted)"


# ---- merge -------------------------------------------------------------------------------------------
def _merge(change: Change, entity: str, loser: dict[str, Any], survivor: dict[str, Any]) -> None:
    """`loser` merged into `survivor`: references move, balances add up, the loser is deleted."""
    if loser["Id"] == survivor["Id"]:
        raise MutationError(f"cannot merge a {entity} into itself")
    if entity == "Account" and loser["AccountType"] != survivor["AccountType"]:
        raise MutationError(f"accounts of different types cannot be merged ({loser['AccountType']} into "
                            f"{survivor['AccountType']})")
    _move_balances(change, entity, loser, survivor)
    _repoint(change, entity, loser["Id"], survivor)
    change.delete(entity, loser["Id"])


def _move_balances(change: Change, entity: str, loser: dict[str, Any], survivor: dict[str, Any]) -> None:
    """The survivor takes the loser's balance; parents up the tree follow their children."""
    own, rolled = {"Customer": ("Balance", "BalanceWithJobs"), "Vendor": ("Balance", None),
                   "Account": ("CurrentBalance", "CurrentBalanceWithSubAccounts")}.get(entity, (None, None))
    if own is None:
        return
    survivor[own] = money(money(survivor.get(own, 0)) + money(loser.get(own, 0)))
    if rolled is None:
        return
    moved = money(loser.get(rolled, 0))
    if survivor.get("ParentRef", {}).get("value") == loser["Id"]:
        moved -= money(survivor.get(rolled, 0))  # the survivor was one of the loser's children
    survivor[rolled] = money(money(survivor.get(rolled, 0)) + moved)
    for start, amount in ((loser, -money(loser.get(rolled, 0))), (survivor, moved)):
        parent_id = start.get("ParentRef", {}).get("value")
        while parent_id and parent_id != loser["Id"]:
            parent = change.load(entity, parent_id)
            if parent is None:
                break
            parent[rolled] = money(money(parent.get(rolled, 0)) + amount)
            change.mark(entity, parent_id, "touch")
            parent_id = parent.get("ParentRef", {}).get("value")


def _repoint(change: Change, entity: str, old_id: str, survivor: dict[str, Any]) -> None:
    """Every reference to `entity` `old_id`, in every store, now points at the survivor (with
    its name where the reference carries one); children of the loser become the survivor's."""
    new_id = str(survivor["Id"])
    name = account_ref(survivor)["name"] if entity == "Account" else name_ref(survivor)["name"]
    needle = b'{"value":"' + old_id.encode() + b'"'
    for holder in ENTITIES:
        for rec in change.company.stores[holder].live_records():
            if needle not in rec.json or (holder == entity and str(rec.id) in (old_id, new_id)):
                continue
            if not any(t == entity and ref["value"] == old_id for t, ref in refs(holder, loads(rec.json))):
                continue
            obj = change.require(holder, rec.id)
            for target, ref in refs(holder, obj):
                if target == entity and ref["value"] == old_id:
                    ref["value"] = new_id
                    if "name" in ref:
                        ref["name"] = name
            if holder == entity:  # a child of the loser
                leaf = obj.get("DisplayName") or obj["Name"]
                obj["FullyQualifiedName"] = f"{survivor.get('FullyQualifiedName', name)}:{leaf}"
            change.mark(holder, rec.id)
    if survivor.get("ParentRef", {}).get("value") == old_id:  # the survivor was the loser's child: now top level
        del survivor["ParentRef"]
        survivor["FullyQualifiedName"] = survivor.get("DisplayName") or survivor["Name"]
        for flag in ("Job", "SubAccount", "SubClass"):
            if flag in survivor:
                survivor[flag] = False
        survivor.pop("Level", None)
