"""QuickBooks -> PostgreSQL: the engine, the webhook inbox's application, the worker.

    engine    sync_realm / RealmSync: full load, CDC, windows, tombstones; enqueue_sync_request
    apply     process_inbox: webhook events applied with the fewest Data API calls
    worker    `qbsync sync`: due realms, requested syncs and the inbox, under PM2 semantics
"""

from services.sync.apply import InboxStats, process_inbox
from services.sync.engine import EntityOutcome, RealmSync, enqueue_sync_request, sync_realm

__all__ = ["InboxStats", "process_inbox", "EntityOutcome", "RealmSync", "enqueue_sync_request", "sync_realm"]
