-- Sync write path (BENCHMARKS.md, Sync): rows up to 8 KB are stored without compression.
-- A synced invoice row is ~2 KB (mostly `raw`), just over PostgreSQL's 2 KB toast threshold,
-- so by default most rows were pglz-compressed on every write: ~13 % of the CPU of a page
-- write. Rows stay inline either way; `raw` takes ~1.8 KB instead of ~1.4 KB per invoice.
ALTER TABLE quickbooks.invoices SET (toast_tuple_target = 8160);
ALTER TABLE quickbooks.estimates SET (toast_tuple_target = 8160);
ALTER TABLE quickbooks.customers SET (toast_tuple_target = 8160);
ALTER TABLE quickbooks.items SET (toast_tuple_target = 8160);
