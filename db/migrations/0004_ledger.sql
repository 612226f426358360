-- The ledger (SPEC section 10): every accounting entity a finance user needs, their lines, and
-- every LinkedTxn. Each entity table is keyed (realm_id, id) with the common columns of section 8;
-- each lines table (realm_id, <entity>_id, position) with the one set of line columns. Generated
-- from services/model/entities.py once and kept by hand; tests/test_entities.py checks they agree.

CREATE TABLE quickbooks.payments (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    txn_date               date,
    customer_id            text,
    customer_name          text,
    total_amt              numeric,
    unapplied_amt          numeric,
    currency               text,
    payment_method_id      text,
    deposit_to_account_id  text,
    payment_ref_num        text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.payments SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.payment_line_items (
    realm_id               text NOT NULL,
    payment_id             text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, payment_id, position)
);

CREATE TABLE quickbooks.sales_receipts (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    customer_id            text,
    customer_name          text,
    total_amt              numeric,
    currency               text,
    deposit_to_account_id  text,
    payment_method_id      text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.sales_receipts SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.sales_receipt_line_items (
    realm_id               text NOT NULL,
    sales_receipt_id       text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, sales_receipt_id, position)
);

CREATE TABLE quickbooks.credit_memos (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    customer_id            text,
    customer_name          text,
    total_amt              numeric,
    remaining_credit       numeric,
    currency               text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.credit_memos SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.credit_memo_line_items (
    realm_id               text NOT NULL,
    credit_memo_id         text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, credit_memo_id, position)
);

CREATE TABLE quickbooks.refund_receipts (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    customer_id            text,
    customer_name          text,
    total_amt              numeric,
    currency               text,
    deposit_to_account_id  text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.refund_receipts SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.refund_receipt_line_items (
    realm_id               text NOT NULL,
    refund_receipt_id      text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, refund_receipt_id, position)
);

CREATE TABLE quickbooks.vendors (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    display_name           text,
    company_name           text,
    given_name             text,
    family_name            text,
    email                  text,
    phone                  text,
    balance                numeric,
    currency               text,
    vendor_1099            boolean,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.vendors SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.purchase_orders (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    vendor_id              text,
    vendor_name            text,
    total_amt              numeric,
    po_status              text,
    currency               text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.purchase_orders SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.purchase_order_line_items (
    realm_id               text NOT NULL,
    purchase_order_id      text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, purchase_order_id, position)
);

CREATE TABLE quickbooks.bills (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    due_date               date,
    vendor_id              text,
    vendor_name            text,
    ap_account_id          text,
    total_amt              numeric,
    balance                numeric,
    currency               text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.bills SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.bill_line_items (
    realm_id               text NOT NULL,
    bill_id                text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, bill_id, position)
);

CREATE TABLE quickbooks.bill_payments (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    vendor_id              text,
    vendor_name            text,
    pay_type               text,
    pay_from_account_id    text,
    total_amt              numeric,
    currency               text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.bill_payments SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.bill_payment_line_items (
    realm_id               text NOT NULL,
    bill_payment_id        text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, bill_payment_id, position)
);

CREATE TABLE quickbooks.purchases (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    payment_type           text,
    account_id             text,
    entity_type            text,
    entity_id              text,
    total_amt              numeric,
    currency               text,
    credit                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.purchases SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.purchase_line_items (
    realm_id               text NOT NULL,
    purchase_id            text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, purchase_id, position)
);

CREATE TABLE quickbooks.vendor_credits (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    vendor_id              text,
    vendor_name            text,
    total_amt              numeric,
    balance                numeric,
    currency               text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.vendor_credits SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.vendor_credit_line_items (
    realm_id               text NOT NULL,
    vendor_credit_id       text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, vendor_credit_id, position)
);

CREATE TABLE quickbooks.deposits (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    txn_date               date,
    deposit_to_account_id  text,
    total_amt              numeric,
    currency               text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.deposits SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.deposit_line_items (
    realm_id               text NOT NULL,
    deposit_id             text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, deposit_id, position)
);

CREATE TABLE quickbooks.transfers (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    txn_date               date,
    from_account_id        text,
    to_account_id          text,
    amount                 numeric,
    currency               text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.transfers SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.journal_entries (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    doc_number             text,
    txn_date               date,
    total_amt              numeric,
    currency               text,
    adjustment             boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.journal_entries SET (toast_tuple_target = 8160);
CREATE TABLE quickbooks.journal_entry_line_items (
    realm_id               text NOT NULL,
    journal_entry_id       text NOT NULL,
    position               integer NOT NULL,
    line_id                text,
    line_num               integer,
    detail_type            text,
    description            text,
    amount                 numeric,
    item_id                text,
    item_name              text,
    qty                    numeric,
    unit_price             numeric,
    account_id             text,
    account_name           text,
    class_id               text,
    tax_code_id            text,
    posting_type           text,
    entity_type            text,
    entity_id              text,
    billable_status        text,
    PRIMARY KEY (realm_id, journal_entry_id, position)
);

CREATE TABLE quickbooks.accounts (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    name                   text,
    fully_qualified_name   text,
    account_type           text,
    account_sub_type       text,
    classification         text,
    acct_num               text,
    parent_id              text,
    current_balance        numeric,
    currency               text,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.accounts SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.employees (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    display_name           text,
    given_name             text,
    family_name            text,
    email                  text,
    phone                  text,
    hired_date             date,
    released_date          date,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.employees SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.time_activities (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    txn_date               date,
    name_of                text,
    employee_id            text,
    vendor_id              text,
    customer_id            text,
    item_id                text,
    hours                  integer,
    minutes                integer,
    hourly_rate            numeric,
    billable_status        text,
    description            text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.time_activities SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.classes (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    name                   text,
    fully_qualified_name   text,
    parent_id              text,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.classes SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.departments (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    name                   text,
    fully_qualified_name   text,
    parent_id              text,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.departments SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.terms (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    name                   text,
    type                   text,
    due_days               integer,
    discount_percent       numeric,
    discount_days          integer,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.terms SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.payment_methods (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    name                   text,
    type                   text,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.payment_methods SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.tax_codes (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    name                   text,
    description            text,
    taxable                boolean,
    tax_group              boolean,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.tax_codes SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.tax_rates (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    name                   text,
    description            text,
    rate_value             numeric,
    agency_id              text,
    active                 boolean,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.tax_rates SET (toast_tuple_target = 8160);

CREATE TABLE quickbooks.tax_agencies (
    realm_id               text NOT NULL,
    id                     text NOT NULL,
    display_name           text,
    sync_token             text,
    qbo_created_at         timestamptz,
    qbo_updated_at         timestamptz,
    raw                    jsonb,
    deleted_at             timestamptz,
    merged_into            text,
    synced_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, id)
);
ALTER TABLE quickbooks.tax_agencies SET (toast_tuple_target = 8160);

-- Sub-customers and projects; invoice/estimate tax totals, class and department.
ALTER TABLE quickbooks.customers ADD COLUMN parent_id text, ADD COLUMN job boolean, ADD COLUMN level integer, ADD COLUMN fully_qualified_name text;
ALTER TABLE quickbooks.invoices ADD COLUMN total_tax numeric, ADD COLUMN class_id text, ADD COLUMN department_id text;
ALTER TABLE quickbooks.estimates ADD COLUMN total_tax numeric, ADD COLUMN class_id text, ADD COLUMN department_id text;
-- The line columns every lines table carries (section 10), added to the two of section 8.
ALTER TABLE quickbooks.invoice_line_items ADD COLUMN account_id text, ADD COLUMN account_name text, ADD COLUMN class_id text, ADD COLUMN tax_code_id text, ADD COLUMN posting_type text, ADD COLUMN entity_type text, ADD COLUMN entity_id text, ADD COLUMN billable_status text;
ALTER TABLE quickbooks.estimate_line_items ADD COLUMN account_id text, ADD COLUMN account_name text, ADD COLUMN class_id text, ADD COLUMN tax_code_id text, ADD COLUMN posting_type text, ADD COLUMN entity_type text, ADD COLUMN entity_id text, ADD COLUMN billable_status text;

-- Every LinkedTxn entry of every synced document, replaced with its document: `entity` is the QBO
-- name of the document holding it, `line_position` its line (-1: the header's LinkedTxn), `position`
-- the index in that LinkedTxn array. "Which payments paid invoice 130" is one join.
CREATE TABLE quickbooks.linked_txns (
    realm_id            text NOT NULL,
    entity              text NOT NULL,
    txn_id              text NOT NULL,
    line_position       integer NOT NULL,
    position            integer NOT NULL,
    linked_txn_id       text,
    linked_txn_type     text,
    linked_txn_line_id  text,
    PRIMARY KEY (realm_id, entity, txn_id, line_position, position)
);
CREATE INDEX linked_txns_target ON quickbooks.linked_txns (realm_id, linked_txn_type, linked_txn_id);
COMMENT ON COLUMN quickbooks.sync_runs.kind IS 'full | cdc | window | sweep | webhook';
