-- Intuit's metered calls (SPEC section 12): Data API calls per realm, UTC day, kind (query, read,
-- cdc, report, companyinfo) and the service that made them; processes add their counts in
-- batches (db/usage.py), never a transaction per call.
CREATE TABLE quickbooks.api_usage (
    realm_id  text NOT NULL,
    day       date NOT NULL,
    kind      text NOT NULL,
    service   text NOT NULL,
    calls     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (realm_id, day, kind, service)
);
CREATE INDEX api_usage_day ON quickbooks.api_usage (day);
