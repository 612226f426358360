"""What each QBO entity the emulator serves may do: one row per entity, read by query, CDC,
read-by-id, mutations and webhooks instead of scattered lists.

| trait | meaning |
|---|---|
| `name_list` | has `Active`: plain queries hide inactive rows (`Active IN (true,false)` shows them), op `inactivate` |
| `name_key` | the field `Name`/`DisplayName` queries compare (None: a transaction) |
| `deletable` | hard delete: gone from query and read, a CDC tombstone (transactions) |
| `voidable` | op `void`: amounts to zero, the object stays (FACTS 6.4/6.6) |
| `mergeable` | op `merge`: the merged-away row becomes a CDC tombstone, references move to the survivor |
| `in_cdc` | Intuit's CDC covers it (FACTS 6.2: not TaxAgency, TaxCode, TaxRate, TimeActivity) |
| `webhooks` | changes are announced by webhook (FACTS 6.6: not TaxCode, TaxRate) |
| `renames` | inactivation appends " (deleted)" to Name/DisplayName/FullyQualifiedName, as QBO does |
| `doc_start` | the first DocNumber the emulator numbers this entity's documents from (None: no numbering) |

TaxCode and TaxRate are read-only through Intuit's API; the emulator's admin API may still
create and change them so tests have changes to sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Traits", "TRAITS", "ENTITIES", "NAME_LIST", "TRANSACTIONS", "CANONICAL", "CDC_EXCLUDED"]


@dataclass(frozen=True)
class Traits:
    entity: str
    name_list: bool = False
    name_key: str | None = None
    deletable: bool = False
    voidable: bool = False
    mergeable: bool = False
    in_cdc: bool = True
    webhooks: bool = True
    renames: bool = False
    doc_start: int | None = None


def _names(entity: str, key: str = "Name", *, mergeable: bool = False, renames: bool = True,
           listed: bool = True) -> Traits:
    return Traits(entity, name_list=True, name_key=key, mergeable=mergeable, renames=renames,
                  in_cdc=listed, webhooks=listed)


def _txn(entity: str, *, voidable: bool = False, doc_start: int | None = None, in_cdc: bool = True) -> Traits:
    return Traits(entity, deletable=True, voidable=voidable, doc_start=doc_start, in_cdc=in_cdc)


TRAITS: dict[str, Traits] = {t.entity: t for t in (
    # the seed's entities: Customer and Item keep their original inactivation (no rename)
    _names("Customer", "DisplayName", mergeable=True, renames=False),
    _names("Item", mergeable=True, renames=False),
    _txn("Invoice", voidable=True, doc_start=1001),
    _txn("Estimate", doc_start=5001),
    # name lists
    _names("Account", mergeable=True),
    _names("Vendor", "DisplayName", mergeable=True),
    _names("Employee", "DisplayName", mergeable=True),
    _names("Class", mergeable=True),
    _names("Department"),
    _names("Term"),
    _names("PaymentMethod"),
    _names("TaxCode", listed=False),
    _names("TaxRate", listed=False),
    Traits("TaxAgency", name_key="DisplayName", in_cdc=False),
    # transactions
    _txn("Payment", voidable=True),
    _txn("SalesReceipt", voidable=True, doc_start=8001),
    _txn("CreditMemo", voidable=True, doc_start=9001),
    _txn("RefundReceipt", voidable=True, doc_start=9501),
    _txn("Deposit"),
    _txn("Transfer", voidable=True),
    _txn("Bill"),
    _txn("BillPayment", voidable=True),
    _txn("Purchase", voidable=True),
    _txn("VendorCredit"),
    _txn("JournalEntry", doc_start=1),
    _txn("PurchaseOrder", doc_start=1001),
    _txn("TimeActivity", in_cdc=False),
)}
ENTITIES: tuple[str, ...] = tuple(TRAITS)
NAME_LIST = frozenset(e for e, t in TRAITS.items() if t.name_list)
TRANSACTIONS = frozenset(e for e, t in TRAITS.items() if t.deletable)
CANONICAL = {e.lower(): e for e in ENTITIES + ("CompanyInfo",)}
# Intuit's CDC refuses these (FACTS 6.2); JournalCode is not served at all, but named here so a
# CDC request for it gets the same clear refusal
CDC_EXCLUDED = {e.lower(): e for e in [*(e for e, t in TRAITS.items() if not t.in_cdc), "JournalCode"]}
