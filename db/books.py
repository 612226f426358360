"""The books the synced ledger implies, derived in SQL (SPEC section 11; posting rules:
docs/POSTING_RULES.md): every posting transaction type turned into double-entry lines
(account, amount: debits positive, credits negative), summed per account as of a date.

This is qbsync's own derivation from its own tables; it shares nothing with the emulator's
bookkeeping, so a reconciliation against QBO's TrialBalance (or the emulator's) tests it.
Voided documents post nothing (their amounts are zero); deleted ones are excluded; estimates,
purchase orders and time activities do not post.

Accounts the rules need but documents do not name are the company's own: its Accounts
Receivable, Accounts Payable, Undeposited Funds, Sales Tax Payable and Retained Earnings
accounts (by AccountType / AccountSubType, the active one with the lowest id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import psycopg

from db.connection import one

__all__ = ["AccountBalance", "postings_sql", "trial_balance", "open_balances", "POSTING_TYPES"]

# QBO transaction types that post to the ledger (what docs/POSTING_RULES.md lists)
POSTING_TYPES = ("Invoice", "SalesReceipt", "CreditMemo", "RefundReceipt", "Payment", "Deposit", "Transfer",
                 "Bill", "BillPayment", "Purchase", "VendorCredit", "JournalEntry")

_SPECIAL = {
    "ar": "account_type = 'Accounts Receivable'",
    "ap": "account_type = 'Accounts Payable'",
    "uf": "account_sub_type = 'UndepositedFunds'",
    "tax": "account_sub_type IN ('SalesTaxPayable', 'GlobalTaxPayable')",
    "cogs": "account_type = 'Cost of Goods Sold'",
    "retained": "account_sub_type = 'RetainedEarnings'",
}

_ACCOUNTS = "WITH acct AS (SELECT " + ", ".join(
    f"(SELECT id FROM quickbooks.accounts WHERE realm_id = %(realm)s AND deleted_at IS NULL AND {cond}"
    f" ORDER BY active DESC, length(id), id LIMIT 1) AS {name}" for name, cond in _SPECIAL.items()) + ")"
# each item's accounts (the planner joins them to the lines like the items table itself)
_ITEMS = (", item_acct AS (SELECT id, raw #>> '{IncomeAccountRef,value}' AS income,"
          " COALESCE(raw #>> '{AssetAccountRef,value}', raw #>> '{ExpenseAccountRef,value}') AS expense"
          " FROM quickbooks.items WHERE realm_id = %(realm)s)")

_LIVE = "d.realm_id = %(realm)s AND d.deleted_at IS NULL AND d.txn_date <= %(as_of)s"
_TAX = "COALESCE((d.raw #>> '{TxnTaxDetail,TotalTax}')::numeric, 0)"


def _sales(table: str, lines: str, fk: str, sign: int, counter: str, tax: str = _TAX) -> str:
    """Invoice, SalesReceipt (+1) and CreditMemo, RefundReceipt (-1): the counter account (A/R, or
    where the money went) takes TotalAmt; income lines, discounts and sales tax the rest."""
    return f"""
    SELECT {counter}, {sign} * d.total_amt, d.txn_date FROM quickbooks.{table} d, acct WHERE {_LIVE}
    UNION ALL
    SELECT CASE l.detail_type WHEN 'DiscountLineDetail' THEN l.account_id ELSE COALESCE(l.account_id, i.income) END,
           CASE l.detail_type WHEN 'DiscountLineDetail' THEN {sign} ELSE {-sign} END * l.amount, d.txn_date
      FROM quickbooks.{table} d
      JOIN quickbooks.{lines} l ON l.realm_id = d.realm_id AND l.{fk} = d.id
      LEFT JOIN item_acct i ON i.id = l.item_id
     WHERE {_LIVE} AND l.detail_type IN ('SalesItemLineDetail', 'DiscountLineDetail')
    UNION ALL
    SELECT acct.tax, {-sign} * {tax}, d.txn_date FROM quickbooks.{table} d, acct WHERE {_LIVE}"""


def _expense(table: str, lines: str, fk: str, sign: str, counter: str) -> str:
    """Bill, Purchase (+1; a credit-card credit -1) and VendorCredit (-1): the counter account
    (A/P, or the bank/card paid from) takes TotalAmt, the expense lines their accounts."""
    return f"""
    SELECT {counter}, -({sign}) * d.total_amt, d.txn_date FROM quickbooks.{table} d, acct WHERE {_LIVE}
    UNION ALL
    SELECT CASE l.detail_type WHEN 'AccountBasedExpenseLineDetail' THEN l.account_id
                ELSE COALESCE(i.expense, acct.cogs) END, ({sign}) * l.amount, d.txn_date
      FROM quickbooks.{table} d
      JOIN quickbooks.{lines} l ON l.realm_id = d.realm_id AND l.{fk} = d.id
      LEFT JOIN item_acct i ON i.id = l.item_id
      CROSS JOIN acct
     WHERE {_LIVE} AND l.detail_type IN ('AccountBasedExpenseLineDetail', 'ItemBasedExpenseLineDetail')"""


def postings_sql() -> str:
    """SELECT account_id, amount, txn_date: every posting of realm %(realm)s up to %(as_of)s."""
    parts = [
        _sales("invoices", "invoice_line_items", "invoice_id", 1, "acct.ar", "COALESCE(d.total_tax, 0)"),
        _sales("sales_receipts", "sales_receipt_line_items", "sales_receipt_id", 1,
               "COALESCE(d.deposit_to_account_id, acct.uf)"),
        _sales("credit_memos", "credit_memo_line_items", "credit_memo_id", -1, "acct.ar"),
        _sales("refund_receipts", "refund_receipt_line_items", "refund_receipt_id", -1,
               "COALESCE(d.deposit_to_account_id, acct.uf)"),
        _expense("bills", "bill_line_items", "bill_id", "1", "COALESCE(d.ap_account_id, acct.ap)"),
        _expense("purchases", "purchase_line_items", "purchase_id", "CASE WHEN d.credit THEN -1 ELSE 1 END",
                 "d.account_id"),
        _expense("vendor_credits", "vendor_credit_line_items", "vendor_credit_id", "-1",
                 "COALESCE(d.raw #>> '{APAccountRef,value}', acct.ap)"),
        # a payment: the money where it was deposited (Undeposited Funds by default), out of A/R
        f"""
    SELECT COALESCE(d.deposit_to_account_id, acct.uf), d.total_amt, d.txn_date FROM quickbooks.payments d, acct
     WHERE {_LIVE}
    UNION ALL
    SELECT acct.ar, -d.total_amt, d.txn_date FROM quickbooks.payments d, acct WHERE {_LIVE}""",
        # a bill payment: out of A/P, from the bank or card it was paid from
        f"""
    SELECT acct.ap, d.total_amt, d.txn_date FROM quickbooks.bill_payments d, acct WHERE {_LIVE}
    UNION ALL
    SELECT d.pay_from_account_id, -d.total_amt, d.txn_date FROM quickbooks.bill_payments d WHERE {_LIVE}""",
        # a deposit: into its account; linked lines (payments, sales receipts) out of Undeposited
        # Funds, other lines out of their own account; cash back into its account
        f"""
    SELECT d.deposit_to_account_id, d.total_amt, d.txn_date FROM quickbooks.deposits d WHERE {_LIVE}
    UNION ALL
    SELECT CASE WHEN EXISTS (SELECT 1 FROM quickbooks.linked_txns t WHERE t.realm_id = d.realm_id
                             AND t.entity = 'Deposit' AND t.txn_id = d.id AND t.line_position = l.position)
                THEN acct.uf ELSE l.account_id END, -l.amount, d.txn_date
      FROM quickbooks.deposits d JOIN quickbooks.deposit_line_items l ON l.realm_id = d.realm_id AND l.deposit_id = d.id
      CROSS JOIN acct WHERE {_LIVE}
    UNION ALL
    SELECT d.raw #>> '{{CashBack,AccountRef,value}}', (d.raw #>> '{{CashBack,Amount}}')::numeric, d.txn_date
      FROM quickbooks.deposits d WHERE {_LIVE} AND d.raw ? 'CashBack'""",
        f"""
    SELECT d.to_account_id, d.amount, d.txn_date FROM quickbooks.transfers d WHERE {_LIVE}
    UNION ALL
    SELECT d.from_account_id, -d.amount, d.txn_date FROM quickbooks.transfers d WHERE {_LIVE}""",
        f"""
    SELECT l.account_id, CASE l.posting_type WHEN 'Debit' THEN l.amount ELSE -l.amount END, d.txn_date
      FROM quickbooks.journal_entries d
      JOIN quickbooks.journal_entry_line_items l ON l.realm_id = d.realm_id AND l.journal_entry_id = d.id
     WHERE {_LIVE} AND l.detail_type = 'JournalEntryLineDetail'""",
    ]
    return _ACCOUNTS + _ITEMS + ", p(account_id, amount, txn_date) AS (" + "\n    UNION ALL".join(parts) + "\n)"


@dataclass(frozen=True)
class AccountBalance:
    account_id: str | None
    name: str | None
    classification: str | None
    net: Decimal  # debits minus credits

    @property
    def debit(self) -> Decimal:
        return self.net if self.net > 0 else Decimal(0)

    @property
    def credit(self) -> Decimal:
        return -self.net if self.net < 0 else Decimal(0)


def trial_balance(conn: psycopg.Connection, realm_id: str, as_of: date,
                  fiscal_year_start: date | None = None) -> list[AccountBalance]:
    """Net debit per account as of `as_of` (accounts with a zero net are left out). With
    `fiscal_year_start`, income and expense accounts show only that fiscal year and the earlier
    years' net income sits in Retained Earnings, as QBO's TrialBalance shows it. A posting to
    no account (a document naming none, the company lacking a special account) shows as None."""
    rows = conn.execute(
        postings_sql() + """,
        pl AS (SELECT p.account_id, p.amount, p.txn_date,
                      a.classification IN ('Revenue', 'Expense') AS income_statement
                 FROM p LEFT JOIN quickbooks.accounts a ON a.realm_id = %(realm)s AND a.id = p.account_id),
        moved AS (SELECT CASE WHEN %(fy)s::date IS NOT NULL AND income_statement AND txn_date < %(fy)s::date
                              THEN (SELECT retained FROM acct) ELSE account_id END AS account_id, amount FROM pl)
        SELECT m.account_id, a.name, a.classification, sum(m.amount)
          FROM moved m LEFT JOIN quickbooks.accounts a ON a.realm_id = %(realm)s AND a.id = m.account_id
         GROUP BY m.account_id, a.name, a.classification
        HAVING sum(m.amount) <> 0
         ORDER BY m.account_id""",
        {"realm": realm_id, "as_of": as_of, "fy": fiscal_year_start}).fetchall()
    return [AccountBalance(account, name, classification, net) for account, name, classification, net in rows]


def open_balances(conn: psycopg.Connection, realm_id: str, as_of: date) -> dict[str, Decimal]:
    """The open balances of the synced invoices (receivable) and bills (payable) dated by `as_of`."""
    receivable, payable = one(
        conn, "SELECT (SELECT COALESCE(sum(balance), 0) FROM quickbooks.invoices WHERE realm_id = %(realm)s"
        "        AND deleted_at IS NULL AND txn_date <= %(as_of)s),"
        "       (SELECT COALESCE(sum(balance), 0) FROM quickbooks.bills WHERE realm_id = %(realm)s"
        "        AND deleted_at IS NULL AND txn_date <= %(as_of)s)",
        {"realm": realm_id, "as_of": as_of})
    return {"receivable": receivable, "payable": payable}
