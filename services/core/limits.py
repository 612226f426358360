"""Intuit's limits, written down once (FACTS.md §2-3); the client, the sync engine, the config's
bounds and the emulator all read them from here.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = ["MAX_RESULTS", "DEFAULT_MAX_RESULTS", "CDC_MAX_OBJECTS", "CDC_LOOKBACK", "REQUESTS_PER_MINUTE",
           "CONCURRENT_REQUESTS"]

MAX_RESULTS = 1000                # a query page: MAXRESULTS at most 1000 (more: 400, code 4000)
DEFAULT_MAX_RESULTS = 100         # a query without MAXRESULTS
CDC_MAX_OBJECTS = 1000            # one CDC response, across all its entities, with no paging
CDC_LOOKBACK = timedelta(days=30)  # CDC refuses an older changedSince ("older than fixed days")
REQUESTS_PER_MINUTE = 500         # Data API requests per realm per minute (more: 429)
CONCURRENT_REQUESTS = 10          # Data API requests in flight per realm (more: 429)
