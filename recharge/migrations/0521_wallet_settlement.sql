-- The wallet merchants' daily settlement (SPEC 7.4, 6.6): one statement per merchant and day with
-- the payout of its available balance (MER → PAYOUT); a day is settled once.
CREATE TABLE wallet_settlement_days (
    day         date PRIMARY KEY,
    settled_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE wallet_settlements (
    day               date NOT NULL REFERENCES wallet_settlement_days(day) DEFERRABLE INITIALLY DEFERRED,
    merchant          text NOT NULL CHECK (merchant ~ '^[A-Z0-9]{4,16}$'),
    sales             integer NOT NULL,
    sales_cents       bigint NOT NULL,
    commission_cents  bigint NOT NULL,
    voids             integer NOT NULL,
    void_cents        bigint NOT NULL,
    returned_cents    bigint NOT NULL,
    payout_cents      bigint NOT NULL CHECK (payout_cents >= 0),
    transfer_id       text REFERENCES transfers(id),
    PRIMARY KEY (day, merchant)
);

-- SPEC 7.6: value on lost cards (RETIRED) idle for wallet_writeoff_idle_months is written off to FEE.
CREATE TABLE wallet_writeoffs (
    id           bigserial PRIMARY KEY,
    card_no      text NOT NULL REFERENCES wallet_cards(card_no),
    amount       bigint NOT NULL CHECK (amount > 0),
    last_moved   timestamptz NOT NULL,
    transfer_id  text NOT NULL UNIQUE REFERENCES transfers(id),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_writeoffs_card ON wallet_writeoffs (card_no);
