"""Everything that speaks HTTP to Intuit, and nothing that knows where tokens are stored:

    client    QBOClient: the Data API (query, count, read, CompanyInfo, CDC), given a TokenProvider
    faults    Intuit's error bodies (JSON either case, XML 429, HTML) -> services.core.errors
    budget    RateBudget: the per-realm request budget shared by every process (PostgreSQL)
    oauth     the OAuth 2.0 token endpoint, revocation and the consent URL
"""

from services.intuit.client import PAGE_SIZE, CDCResult, QBOClient, QueryPage, RawPage, TokenProvider
from services.intuit.oauth import TokenGrant, authorization_url, exchange_code, refresh_grant, revoke_token

__all__ = ["PAGE_SIZE", "CDCResult", "QBOClient", "QueryPage", "RawPage", "TokenProvider", "TokenGrant",
           "authorization_url", "exchange_code", "refresh_grant", "revoke_token"]
