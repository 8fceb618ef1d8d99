-- The SIM wallet (SPEC 7): request sequence numbers of STK cards and POS terminals with their
-- stored replies, POS terminals and merchant commission rates, the RFID-SIM registry and the
-- wallets on it, batch uploads and the purchases they carried. Money moves only as ledger
-- transfers (recharge/ledger); purchases name the transfers that cleared them.

-- 7.2 / 7.4: the highest seq accepted from a sender ('stk:<card>' or 'pos:<terminal id>'),
-- and the reply of every accepted one (a parsed-JSON-equal repeat gets it byte for byte).
CREATE TABLE wallet_seq_heads (
    sender    text PRIMARY KEY,
    last_seq  bigint NOT NULL CHECK (last_seq >= 0)
);
CREATE TABLE wallet_seq_replies (
    sender      text NOT NULL,
    seq         bigint NOT NULL CHECK (seq BETWEEN 1 AND 2147483647),
    body        jsonb NOT NULL,
    reply       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender, seq)
);

-- Merchant POS terminals (a merchant's) and hall POS terminals (a hall's).
CREATE TABLE wallet_terminals (
    terminal_id  text PRIMARY KEY CHECK (terminal_id ~ '^[0-9]{12}$'),
    merchant     text CHECK (merchant ~ '^[A-Z0-9]{4,16}$'),
    hall         text CHECK (hall ~ '^[A-Za-z0-9]{1,16}$'),
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((merchant IS NULL) <> (hall IS NULL))
);
CREATE INDEX wallet_terminals_merchant ON wallet_terminals (merchant) WHERE merchant IS NOT NULL;

-- Commission on uploaded purchases, per merchant, in hundredths of a per cent (60 = 0.60 %).
CREATE TABLE wallet_merchant_rates (
    merchant        text PRIMARY KEY CHECK (merchant ~ '^[A-Z0-9]{4,16}$'),
    commission_bp   integer NOT NULL CHECK (commission_bp BETWEEN 0 AND 10000),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- RFID-SIMs: stock until the counter's SIM swap binds one to a number; retired by the next swap.
CREATE TABLE wallet_cards (
    card_no     text PRIMARY KEY CHECK (card_no ~ '^[0-9]{16}$'),
    status      text NOT NULL CHECK (status IN ('stock', 'bound', 'retired')),
    msisdn      text CHECK (msisdn ~ '^1[3-9][0-9]{9}$'),
    account_id  bigint,                           -- the mobile payment account (SPEC 6) it serves
    bound_at    timestamptz,
    retired_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'stock') = (msisdn IS NULL))
);
CREATE UNIQUE INDEX wallet_cards_bound ON wallet_cards (msisdn) WHERE status = 'bound';
CREATE INDEX wallet_cards_account ON wallet_cards (account_id);

-- One wallet per mobile payment account, on the card it was opened on (SPEC 7.2).
CREATE TABLE wallets (
    account_id    bigint PRIMARY KEY,
    card_no       text NOT NULL REFERENCES wallet_cards(card_no),
    state         text NOT NULL CHECK (state IN ('open', 'paused', 'pending_closure', 'cancelled')),
    limit_cents   bigint NOT NULL DEFAULT 20000 CHECK (limit_cents BETWEEN 100 AND 100000),
    opened_at     timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallets_card ON wallets (card_no);

-- Batch uploads (批上送): one row per (terminal, batch_no), the first reply kept for repeats.
CREATE TABLE wallet_batches (
    terminal_id  text NOT NULL REFERENCES wallet_terminals(terminal_id),
    batch_no     text NOT NULL,
    records      integer NOT NULL,
    reply        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (terminal_id, batch_no)
);

-- Every accepted purchase record (a void included), unique by (card, offline serial) and by
-- (card, terminal, TTS); the transfers that cleared it; what was refunded by returns since.
CREATE TABLE wallet_purchases (
    id              bigserial PRIMARY KEY,
    card_no         text NOT NULL,
    offline_serial  integer NOT NULL CHECK (offline_serial BETWEEN 0 AND 65535),
    terminal_id     text NOT NULL,
    tts             bigint NOT NULL CHECK (tts BETWEEN 0 AND 4294967295),
    merchant        text,
    account_id      bigint,
    amount          bigint NOT NULL CHECK (amount > 0),
    balance_after   bigint NOT NULL CHECK (balance_after >= 0),
    trade_date      text NOT NULL,
    trade_time      text NOT NULL,
    void            boolean NOT NULL,
    commission      bigint NOT NULL DEFAULT 0 CHECK (commission >= 0),
    refunded        bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    batch_no        text,
    transfer_id     text REFERENCES transfers(id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (refunded <= amount)
);
CREATE UNIQUE INDEX wallet_purchases_serial ON wallet_purchases (card_no, offline_serial);
CREATE UNIQUE INDEX wallet_purchases_tts ON wallet_purchases (card_no, terminal_id, tts);
CREATE INDEX wallet_purchases_account ON wallet_purchases (account_id, created_at);
