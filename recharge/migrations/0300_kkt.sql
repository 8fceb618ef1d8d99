-- KaKaTong card service (SPEC 3.1, seed 002): the trade journal (every successful trade
-- with its 8-digit Stance), REQID replies for idempotent retries, and the columns the
-- card rules need on the shared tables.

ALTER TABLE merchants ADD COLUMN closed boolean NOT NULL DEFAULT false;           -- code 60
ALTER TABLE license_keys ADD COLUMN test_mode boolean NOT NULL DEFAULT false;     -- code 68
ALTER TABLE cards ADD COLUMN activated_at timestamptz;
ALTER TABLE cards ADD COLUMN reissued_to text CHECK (reissued_to ~ '^[0-9]{16}$');
CREATE INDEX cards_merchant ON cards (merchant_id);

-- One row per successful trade (queries included: they get a Stance too). A cancel or a
-- 0400 reversal points at its original with original_id; the original's cancelled_by is
-- then set, once. Money and points moved by a trade are the ledger transfer transfer_id.
CREATE TABLE kkt_trades (
    id                 bigserial PRIMARY KEY,
    merchant_id        bigint NOT NULL REFERENCES merchants(id),  -- consuming merchant (the terminal's)
    stance             text NOT NULL CHECK (stance ~ '^[0-9]{8}$'),
    card_no            text NOT NULL CHECK (card_no ~ '^[0-9]{16}$'),
    terminal_code      text NOT NULL,
    trade_type         text NOT NULL,
    trade_mode         text NOT NULL,
    kind               text NOT NULL,
    amount_cents       bigint NOT NULL DEFAULT 0 CHECK (amount_cents >= 0),  -- AMOUNT as requested
    points             bigint NOT NULL DEFAULT 0 CHECK (points >= 0),        -- points moved
    item_code          text,
    trade_name         text NOT NULL DEFAULT '',
    original_id        bigint REFERENCES kkt_trades(id),
    cancelled_by       bigint REFERENCES kkt_trades(id),
    transfer_id        text REFERENCES transfers(id),
    purse_after_cents  bigint,
    points_after       bigint,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kkt_trades_card ON kkt_trades (card_no, created_at);
CREATE INDEX kkt_trades_card_stance ON kkt_trades (card_no, stance);
CREATE INDEX kkt_trades_merchant ON kkt_trades (merchant_id, created_at);
CREATE INDEX kkt_trades_merchant_stance ON kkt_trades (merchant_id, stance);
CREATE INDEX kkt_trades_terminal ON kkt_trades (terminal_code, created_at);

-- REQID idempotency: the first answer to (terminal, REQID), replayed to retries.
CREATE TABLE kkt_requests (
    terminal_code  text NOT NULL,
    req_id         text NOT NULL,
    digest         text NOT NULL,          -- sha256 of what the request asked
    reply          jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (terminal_code, req_id)
);
