"""Books that match QuickBooks (SPEC section 11): QBO's reports read and kept, and the synced copy
checked against them.

    reports   the Reports API: explicit dates, split periods when Intuit says the answer is too large,
              the Header/Columns/Rows tree flattened to rows
    checks    counts, the trial balance and the aging totals per realm; `qbsync reconcile`
"""
