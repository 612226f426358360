"""Intuit's signed webhooks into a durable inbox (the sync worker applies them).

    receiver  the WSGI app and server (`qbsync webhook`): signature, size limits, /oauth/callback
    inbox     parse_events (classic and CloudEvents bodies), store_events (idempotent)
"""

from services.webhook.inbox import InboxEvent, MalformedPayload, parse_events, store_events
from services.webhook.receiver import ReceiverServer, make_app, sign

__all__ = ["InboxEvent", "MalformedPayload", "parse_events", "store_events", "ReceiverServer", "make_app", "sign"]
