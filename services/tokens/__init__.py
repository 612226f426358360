"""A company's OAuth tokens: kept, refreshed, connected, revoked.

    vault     refresh_realm (THE refresh path), access_token_for, add/store/revoke, client_for
              (a Data API client on the stored tokens)
    connect   `qbsync connect`: the authorization-code flow and its single-use states
    worker    `qbsync tokenup` and `qbsync token add|refresh|revoke`
"""

from services.tokens.vault import (
    RealmTokens,
    RefreshResult,
    TokenRow,
    access_token_for,
    active_realms,
    add_tokens,
    client_for,
    read_token,
    refresh_realm,
    revoke_realm,
)

__all__ = ["RealmTokens", "RefreshResult", "TokenRow", "access_token_for", "active_realms", "add_tokens",
           "client_for", "read_token", "refresh_realm", "revoke_realm"]
