-- qbsync schema, version 2: pending OAuth authorizations for `qbsync connect`.
-- A state is created by the `connect` process and may be completed either by that process
-- (pasted redirect URL, --listen) or by the webhook server's /oauth/callback route, which
-- runs in another process: hence Postgres, not memory. A state is single-use
-- (consumed_at) and short-lived (expires_at).

CREATE TABLE quickbooks.oauth_states (
    state              text PRIMARY KEY,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    expected_realm_id  text,                              -- `connect --realm-id R`: only R is accepted
    consumed_at        timestamptz,                       -- a callback presented this state
    completed_at       timestamptz,                       -- tokens stored for realm_id
    realm_id           text,
    error              text                               -- why completion failed (redacted)
);
CREATE INDEX oauth_states_created ON quickbooks.oauth_states (created_at);
