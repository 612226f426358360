-- A first (full) load of a (realm, entity) killed mid-way resumes where its committed pages end
-- (SPEC section 13: another process takes over "from the committed cursor"). While a first load
-- of a CDC entity runs, each page's transaction also records how far the listing is committed:
-- `listing_time` is QBO's server time of the listing's first page (the cursor it sets when
-- done) and `listing_resume_position` the STARTPOSITION below which every row is committed
-- (the contiguous prefix of committed pages). Both are cleared in the transaction that moves
-- the cursor, so a non-NULL pair always means "an unfinished listing, committed this far".
ALTER TABLE quickbooks.sync_state
    ADD COLUMN listing_time             timestamptz,
    ADD COLUMN listing_resume_position  integer;
