-- The shared schema: merchants, terminals, cards, accounts and the double-entry ledger,
-- orders and the order-API platforms, KaKaTong reference data (license keys, service
-- codes, points rules). Money is integer cents (bigint); times are UTC timestamptz.

CREATE TABLE merchants (
    id            bigserial PRIMARY KEY,
    code          text NOT NULL UNIQUE CHECK (code ~ '^[0-9]{4}$'),   -- 4 digits, e.g. 1155
    name          text NOT NULL,
    is_issuing    boolean NOT NULL DEFAULT true,    -- 发卡商户: cards carry its code
    is_consuming  boolean NOT NULL DEFAULT true,    -- 消费商户: its terminals take trades
    stance_seq    bigint NOT NULL DEFAULT 0,        -- last 8-digit Stance serial issued
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Ledgers: 'CNY' (cents) and 'PTS' (points). A transfer never crosses ledgers.
CREATE TABLE accounts (
    id               bigserial PRIMARY KEY,
    ledger           text NOT NULL CHECK (ledger IN ('CNY', 'PTS')),
    kind             text NOT NULL,          -- see recharge/ledger.py AccountKind
    merchant_id      bigint REFERENCES merchants(id),
    card_no          text,
    name             text NOT NULL DEFAULT '',
    -- debits_must_not_exceed_credits (TigerBeetle's flag): posted + pending debits <= posted credits
    no_overdraft     boolean NOT NULL DEFAULT true,
    debits_pending   bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted    bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending  bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted   bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT no_overdraft OR debits_posted + debits_pending <= credits_posted)
);
CREATE UNIQUE INDEX accounts_merchant_kind ON accounts (merchant_id, kind, ledger) WHERE card_no IS NULL;
CREATE UNIQUE INDEX accounts_card_kind ON accounts (card_no, kind) WHERE card_no IS NOT NULL;

-- The ledger. Rows are never deleted; the only update is a pending transfer's status
-- moving once from 'pending' to 'posted' or 'voided' (with the post/void transfer row
-- that did it appended beside it).
CREATE TABLE transfers (
    id                 text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 100),
    kind               text NOT NULL CHECK (kind IN ('single', 'pending', 'post', 'void')),
    debit_account_id   bigint NOT NULL REFERENCES accounts(id),
    credit_account_id  bigint NOT NULL REFERENCES accounts(id),
    amount             bigint NOT NULL CHECK (amount > 0),
    ledger             text NOT NULL,
    code               text NOT NULL DEFAULT '',        -- business reason, e.g. order_pay
    pending_id         text REFERENCES transfers(id),   -- for post / void
    status             text NOT NULL CHECK (status IN ('posted', 'pending', 'voided')),
    timeout_at         timestamptz,                     -- pending only; NULL = never times out
    reference          text NOT NULL DEFAULT '',        -- order number, stance, ...
    created_at         timestamptz NOT NULL DEFAULT now(),
    resolved_at        timestamptz,
    CHECK (debit_account_id <> credit_account_id),
    CHECK ((kind IN ('post', 'void')) = (pending_id IS NOT NULL))
);
CREATE INDEX transfers_debit ON transfers (debit_account_id);
CREATE INDEX transfers_credit ON transfers (credit_account_id);
CREATE INDEX transfers_pending_timeout ON transfers (timeout_at) WHERE status = 'pending' AND timeout_at IS NOT NULL;
CREATE UNIQUE INDEX transfers_one_resolution ON transfers (pending_id) WHERE pending_id IS NOT NULL;

-- Terminals of every kind: KaKaTong POS, operator, administrator and SMS terminals. A
-- terminal with a PKI number (its security module) is also a DD recharge terminal.
CREATE TABLE terminals (
    id                 bigserial PRIMARY KEY,
    code               text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 16),
    merchant_id        bigint NOT NULL REFERENCES merchants(id),
    kind               text NOT NULL CHECK (kind IN ('pos', 'operator', 'admin', 'sms')),
    enabled            boolean NOT NULL DEFAULT true,
    pki_no             text UNIQUE CHECK (pki_no ~ '^[0-9]{8}$'),
    pki_enabled        boolean NOT NULL DEFAULT true,
    msisdn             text UNIQUE,                     -- SMS terminals: the operator's phone
    signed_in_until    timestamptz,
    signin_serial      text,
    signin_failures    integer NOT NULL DEFAULT 0,
    locked             boolean NOT NULL DEFAULT false,
    daily_recharge_limit_cents bigint,                  -- KaKaTong code 58
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- Cards: KaKaTong host cards ('sv', 'points', 'both') and transit CPU cards ('cpu', the
-- balance on the chip mirrored by a ledger account).
CREATE TABLE cards (
    card_no            text PRIMARY KEY CHECK (card_no ~ '^[0-9]{16}$'),
    merchant_id        bigint REFERENCES merchants(id),   -- issuing merchant
    kind               text NOT NULL CHECK (kind IN ('sv', 'points', 'both', 'cpu')),
    state              text NOT NULL DEFAULT 'active'
                       CHECK (state IN ('inactive', 'active', 'lost', 'cancelled', 'frozen', 'reissued')),
    valid_from         date,
    valid_to           date,
    password_hash      text,
    password_failures  integer NOT NULL DEFAULT 0,
    locked_until       timestamptz,
    per_txn_limit_cents bigint,
    daily_count_limit  integer,
    bound_mobile       text,
    bound_id_no        text,
    holder             jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_balance_cents bigint,                          -- cpu: the balance the card last reported
    deposit_open       boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cards_bound_mobile ON cards (bound_mobile) WHERE bound_mobile IS NOT NULL;

-- Third-party platforms of the order API (seed 004: platformRaw, crt_version).
CREATE TABLE platforms (
    id           bigserial PRIMARY KEY,
    platform_raw text NOT NULL UNIQUE,
    name         text NOT NULL DEFAULT '',
    merchant_id  bigint NOT NULL REFERENCES merchants(id),  -- its recharge fund pays orders
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE platform_keys (
    platform_id    bigint NOT NULL REFERENCES platforms(id),
    crt_version    text NOT NULL,
    public_key_pem text NOT NULL,
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_id, crt_version)
);

-- Recharge orders (SPEC 2): 01 submitted, 02 paid (+ loading), 03 loaded, 04 confirmed,
-- 05 settled, 06 voided/expired.
CREATE TABLE orders (
    order_no         text PRIMARY KEY CHECK (order_no ~ '^[0-9]{20}$'),
    merchant_id      bigint NOT NULL REFERENCES merchants(id),
    platform_id      bigint REFERENCES platforms(id),
    biz_serial_no    text,
    request_digest   text,                 -- what the creating request said, for idempotency
    card_no          text CHECK (card_no ~ '^[0-9]{16}$'),
    amount_cents     bigint NOT NULL CHECK (amount_cents > 0),
    state            text NOT NULL DEFAULT '01' CHECK (state IN ('01', '02', '03', '04', '05', '06')),
    loading          boolean NOT NULL DEFAULT false,
    pay_transfer_id  text REFERENCES transfers(id),
    terminal_code    text,
    online_serial    integer,
    balance_before_cents bigint,
    balance_after_cents  bigint,
    load_date        text,                 -- YYYYMMDD hhmmss used in MAC2/TAC
    load_time        text,
    record_id        text,
    extra            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    paid_at          timestamptz,
    expires_at       timestamptz,
    loading_since    timestamptz,
    loaded_at        timestamptz,
    confirmed_at     timestamptz,
    settled_at       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (platform_id, biz_serial_no)
);
CREATE INDEX orders_card ON orders (card_no);
CREATE INDEX orders_loading ON orders (loading_since) WHERE loading;
CREATE INDEX orders_expiry ON orders (expires_at) WHERE state IN ('01', '02') AND NOT loading;
CREATE SEQUENCE order_no_seq;

-- Audit trail of operator decisions (load resolve, unlock, card state changes ...).
CREATE TABLE operator_actions (
    id          bigserial PRIMARY KEY,
    actor       text NOT NULL,
    action      text NOT NULL,
    subject     text NOT NULL,
    reason      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- KaKaTong reference data (seed 002).
CREATE TABLE license_keys (
    license_key      text PRIMARY KEY,
    merchant_id      bigint NOT NULL REFERENCES merchants(id),
    enabled          boolean NOT NULL DEFAULT true,
    valid_to         timestamptz,
    allowed_networks text[] NOT NULL DEFAULT ARRAY['0.0.0.0/0', '::/0'],
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE service_codes (
    merchant_id  bigint NOT NULL REFERENCES merchants(id),
    item_code    text NOT NULL,
    name         text NOT NULL,
    PRIMARY KEY (merchant_id, item_code)
);
CREATE TABLE points_rules (
    merchant_id        bigint PRIMARY KEY REFERENCES merchants(id),
    cents_per_point    bigint NOT NULL DEFAULT 100 CHECK (cents_per_point > 0)
);
