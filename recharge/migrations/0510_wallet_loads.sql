-- SPEC 7.3: the SIM wallet's loads. Every load is a pending C/<acct> → W/<acct> transfer made when the load
-- is created, without a timeout (an undriven load waits until it is driven or voided); driving it is the load
-- engine's PBOC load (recharge/loads): waiting → loading (committed before the MAC2 leaves) → posted by the
-- card's TAC or proof, or back to waiting when the card proves it was not credited.
CREATE SEQUENCE wallet_load_seq;
CREATE TABLE wallet_loads (
    load_id          text PRIMARY KEY CHECK (load_id ~ '^L[0-9]{1,18}$'),
    account_id       bigint NOT NULL REFERENCES mpay_accounts(id),
    path             text NOT NULL CHECK (path IN ('air', 'pos', 'transfer', 'bank', 'swap')),
    amount           bigint NOT NULL CHECK (amount > 0),
    state            text NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'loading', 'posted', 'voided')),
    -- the script last sent: none (not being driven), read (DD12's), initialize, credit, prove
    step             text NOT NULL DEFAULT 'none' CHECK (step IN ('none', 'read', 'initialize', 'credit', 'prove')),
    request_key      text UNIQUE,          -- the creating request, for idempotency (a bank order, a web request)
    pay_transfer_id  text NOT NULL REFERENCES transfers(id),
    driver           text,                 -- 'stk' or 'pos:<terminal id>' of the drive in progress
    terminal_id      text CHECK (terminal_id ~ '^[0-9]{12}$'),
    card_no          text CHECK (card_no ~ '^[0-9]{16}$'),
    balance_before   bigint,
    balance_after    bigint,
    online_serial    integer,
    load_date        text,                 -- BCD YYYYMMDD / hhmmss of MAC2 and TAC, as hex
    load_time        text,
    load_random      text CHECK (load_random ~ '^[0-9A-F]{8}$'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    loading_since    timestamptz,
    posted_at        timestamptz,
    voided_at        timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'loading') = (loading_since IS NOT NULL))
);
CREATE INDEX wallet_loads_account ON wallet_loads (account_id, created_at);
CREATE INDEX wallet_loads_open ON wallet_loads (account_id, created_at) WHERE state IN ('waiting', 'loading');
CREATE INDEX wallet_loads_loading ON wallet_loads (loading_since) WHERE state = 'loading';
