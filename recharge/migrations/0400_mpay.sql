-- The mobile payment account (SPEC 6, seeds 001 and 003): the subscriber registry (BOSS
-- stand-in), one account per subscriber with its cash (C/<id>) and prepaid-card (K/<id>)
-- ledger accounts, credentials, one-time codes, prepaid recharge cards, the SMS dialogue
-- state of 10658888 and the outbound SMS outbox. Money moves only as ledger transfers
-- (recharge/ledger); the ledger accounts of SPEC 6.2 are rows of `accounts` whose
-- card_no holds their SPEC name (`C/17`, `PPC/430000`, `MER/DEMODIG`, `BILL`, ...).

CREATE TABLE mpay_subscribers (
    msisdn      text PRIMARY KEY CHECK (msisdn ~ '^1[3-9][0-9]{9}$'),
    name        text,
    id_type     text CHECK (id_type IN ('id_card', 'passport', 'officer', 'hk_mo_permit', 'tw_permit', 'other')),
    id_number   text,
    province    text NOT NULL CHECK (province ~ '^[0-9]{2}0000$'),
    brand       text NOT NULL DEFAULT '' CHECK (length(brand) <= 16),
    status      text NOT NULL CHECK (status IN ('normal', 'suspended_oneway', 'suspended_twoway',
                                                'arrears', 'lost', 'cancelled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every registry change and the account changes it caused (committed together).
CREATE TABLE mpay_registry_events (
    id          bigserial PRIMARY KEY,
    msisdn      text NOT NULL,
    actor       text NOT NULL,
    before      jsonb,
    after       jsonb NOT NULL,
    effects     jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpay_registry_events_msisdn ON mpay_registry_events (msisdn, id);

CREATE TABLE mpay_accounts (
    id                  bigserial PRIMARY KEY,
    msisdn              text UNIQUE,               -- NULL once detached (pending_closure, closed)
    former_msisdn       text,
    alias               text NOT NULL,
    alias_replaced      boolean NOT NULL DEFAULT false,
    kind                text NOT NULL CHECK (kind IN ('real_name', 'non_real_name')),
    status              text NOT NULL CHECK (status IN ('normal', 'locked', 'frozen', 'pending_closure', 'closed')),
    lock_reason         text CHECK (lock_reason IN ('suspended', 'lost')),
    freeze_reason       text,
    province            text NOT NULL,             -- the number's province, the last known after 销号
    cash_account        bigint NOT NULL REFERENCES accounts(id),
    card_account        bigint NOT NULL REFERENCES accounts(id),
    login_hash          text NOT NULL,
    login_initial       boolean NOT NULL DEFAULT true,
    login_failures      integer NOT NULL DEFAULT 0,
    login_locked_until  timestamptz,
    pay_hash            text NOT NULL,
    pay_initial         boolean NOT NULL DEFAULT true,
    pay_failures        integer NOT NULL DEFAULT 0,
    pay_locked_until    timestamptz,
    op_hash             text,                      -- NULL: the operation password is off
    op_failures         integer NOT NULL DEFAULT 0,
    op_locked_until     timestamptz,
    security_phone      text,
    bank_card           jsonb,                     -- {bank, province, city, branch, number, holder}
    opened_at           timestamptz NOT NULL DEFAULT now(),
    closed_at           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((status IN ('normal', 'locked', 'frozen')) OR msisdn IS NULL),
    CHECK ((status = 'locked') = (lock_reason IS NOT NULL))
);
CREATE UNIQUE INDEX mpay_accounts_alias ON mpay_accounts (lower(alias));
CREATE INDEX mpay_accounts_former ON mpay_accounts (former_msisdn) WHERE former_msisdn IS NOT NULL;

-- Every alias ever given (never reused, SPEC 6.2), lower-cased.
CREATE TABLE mpay_aliases (
    alias       text PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES mpay_accounts(id)
);

-- One-time codes: HMAC of the code, one purpose and object; a new one voids the last.
CREATE TABLE mpay_otps (
    id           bigserial PRIMARY KEY,
    destination  text NOT NULL,
    purpose      text NOT NULL,
    object       text NOT NULL DEFAULT '',
    mac          bytea NOT NULL,
    failures     integer NOT NULL DEFAULT 0,
    state        text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'used', 'void')),
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpay_otps_destination ON mpay_otps (destination, created_at);
CREATE INDEX mpay_otps_object ON mpay_otps (purpose, object) WHERE state = 'open';

-- Prepaid recharge cards (充值卡): imported pools; the PIN only as HMAC-SHA256 under K_pin.
CREATE TABLE mpay_prepaid_cards (
    serial       text PRIMARY KEY CHECK (serial ~ '^[0-9]{5}18[0-9]{10}$'),
    pin_mac      bytea NOT NULL UNIQUE,
    face_cents   bigint NOT NULL CHECK (face_cents IN (1000, 2000, 3000, 5000, 10000, 20000, 30000, 50000)),
    province     text NOT NULL,
    expiry       date NOT NULL,
    used_by      bigint REFERENCES mpay_accounts(id),
    used_at      timestamptz,
    transfer_id  text REFERENCES transfers(id),
    imported_at  timestamptz NOT NULL DEFAULT now()
);
-- Unknown PINs: per MSISDN (5 in 24 h block it 24 h) and platform-wide (1,000 an hour pause 15 min).
CREATE TABLE mpay_pin_failures (
    id          bigserial PRIMARY KEY,
    msisdn      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpay_pin_failures_msisdn ON mpay_pin_failures (msisdn, created_at);
CREATE INDEX mpay_pin_failures_time ON mpay_pin_failures (created_at);
CREATE TABLE mpay_blocks (
    subject     text PRIMARY KEY,        -- 'pin:<msisdn>' or 'pin:platform'
    until       timestamptz NOT NULL
);

-- The SMS dialogue of one MSISDN (SPEC 6.5) and the replies to Kannel message ids.
CREATE TABLE mpay_dialogues (
    msisdn      text PRIMARY KEY,
    command     text NOT NULL,
    step        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    expires_at  timestamptz NOT NULL
);
CREATE TABLE mpay_mo_replies (
    msisdn      text NOT NULL,
    message_id  text NOT NULL,
    reply       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (msisdn, message_id)
);

-- Outbound SMS (SPEC 6.8), written in the business transaction, delivered by the dispatcher.
CREATE TABLE mpay_outbox (
    id           uuid PRIMARY KEY,
    msisdn       text NOT NULL,
    account_id   bigint REFERENCES mpay_accounts(id),
    text         text,                   -- NULL for a sensitive text (text_enc) and once erased
    text_enc     bytea,                  -- AES-GCM under the outbox key; NULL once sent or failed
    sensitive    boolean NOT NULL DEFAULT false,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed', 'suppressed')),
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    dlr_status   integer,
    dlr_at       timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
CREATE INDEX mpay_outbox_due ON mpay_outbox (next_at) WHERE state = 'pending';
CREATE INDEX mpay_outbox_msisdn ON mpay_outbox (msisdn, created_at);
CREATE INDEX mpay_outbox_account ON mpay_outbox (account_id, created_at);

-- History reads (CXLS): the transfers of an account's C and K since a date.
CREATE INDEX transfers_debit_time ON transfers (debit_account_id, created_at);
CREATE INDEX transfers_credit_time ON transfers (credit_account_id, created_at);

-- Working days and holidays of the operator calendar (default Monday–Friday).
CREATE TABLE mpay_calendar (
    day   date PRIMARY KEY,
    kind  text NOT NULL CHECK (kind IN ('workday', 'holiday'))
);

-- Bearer tokens of the website (account) and of operators (SPEC 6.4), stored hashed.
CREATE TABLE mpay_tokens (
    id            bigserial PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE,
    account_id    bigint REFERENCES mpay_accounts(id),
    operator_id   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked       boolean NOT NULL DEFAULT false,
    CHECK ((account_id IS NULL) <> (operator_id IS NULL))
);
CREATE INDEX mpay_tokens_account ON mpay_tokens (account_id) WHERE account_id IS NOT NULL;

-- Merchants of remote payments (SPEC 6.4): RSA public key, category (the card bucket pays
-- DIGITAL, LOTTERY, INSURANCE, EDUCATION), ledger account MER/<id>.
CREATE TABLE mpay_merchants (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Z0-9]{4,16}$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 20),
    category        text NOT NULL CHECK (category IN ('DIGITAL', 'LOTTERY', 'INSURANCE', 'EDUCATION',
                                                      'UTILITY', 'TICKETING', 'GENERAL')),
    public_key_pem  text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Remote payments (SPEC 6.6): created → (reserved →) paid | expired | failed.
CREATE TABLE mpay_payments (
    id                 text PRIMARY KEY,
    merchant_id        text NOT NULL REFERENCES mpay_merchants(id),
    merchant_order_no  text NOT NULL,
    payer              text NOT NULL,                 -- the MSISDN or alias the merchant named
    account_id         bigint REFERENCES mpay_accounts(id),
    amount             bigint NOT NULL CHECK (amount > 0),
    subject            text NOT NULL,
    state              text NOT NULL DEFAULT 'created'
                       CHECK (state IN ('created', 'reserved', 'paid', 'expired', 'failed')),
    bucket             text CHECK (bucket IN ('cash', 'card')),
    transfer_id        text REFERENCES transfers(id),
    otp_failures       integer NOT NULL DEFAULT 0,
    refunded           bigint NOT NULL DEFAULT 0,
    expires_at         timestamptz NOT NULL,
    paid_at            timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, merchant_order_no)
);
CREATE INDEX mpay_payments_account_paid ON mpay_payments (account_id, paid_at) WHERE state = 'paid';
CREATE INDEX mpay_payments_open ON mpay_payments (merchant_id, payer) WHERE state IN ('created', 'reserved');

-- Phone-bill payments (缴话费, SPEC 6.6): K|C → BILL, exported daily for BOSS.
CREATE TABLE mpay_bill_payments (
    id           text PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES mpay_accounts(id),
    target       text NOT NULL,
    amount       bigint NOT NULL CHECK (amount > 0),
    bucket       text NOT NULL CHECK (bucket IN ('cash', 'card')),
    transfer_id  text NOT NULL REFERENCES transfers(id),
    channel      text NOT NULL,
    exported_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpay_bill_payments_export ON mpay_bill_payments (created_at) WHERE exported_at IS NULL;

-- Bank recharge orders (SPEC 6.6): open (30 min) → paid | failed | expired; the notices
-- of the bank gateways, stored once by (gw, order_id, result, bank_serial).
CREATE TABLE mpay_bank_orders (
    id          text PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES mpay_accounts(id),
    bank        text NOT NULL,
    gateway     text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    into_       text NOT NULL CHECK (into_ IN ('account', 'wallet')),
    state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'paid', 'failed', 'expired')),
    expires_at  timestamptz NOT NULL,
    paid_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpay_bank_orders_account ON mpay_bank_orders (account_id, state);
CREATE TABLE mpay_bank_notices (
    id           bigserial PRIMARY KEY,
    gateway      text NOT NULL,
    order_id     text NOT NULL,
    result       text NOT NULL,
    bank_serial  text NOT NULL,
    amount       bigint,
    paid_at      text,
    outcome      text NOT NULL,         -- posted | suspense | failed | ignored | unknown_order
    transfer_id  text REFERENCES transfers(id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gateway, order_id, result, bank_serial)
);

-- Withdrawals (SPEC 6.6): submitted (pending C → PAYOUT) → exported → paid | failed; voided.
CREATE TABLE mpay_withdrawals (
    id           text PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES mpay_accounts(id),
    amount       bigint NOT NULL CHECK (amount > 0),
    card         jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'submitted'
                 CHECK (state IN ('submitted', 'exported', 'paid', 'failed', 'voided')),
    transfer_id  text NOT NULL REFERENCES transfers(id),
    reference    text,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    exported_at  timestamptz,
    settled_at   timestamptz
);
CREATE INDEX mpay_withdrawals_account ON mpay_withdrawals (account_id, created_at);
CREATE INDEX mpay_withdrawals_state ON mpay_withdrawals (state) WHERE state IN ('submitted', 'exported');
-- Card bindings, counted per Shanghai month (3 successful, SPEC 6.6).
CREATE TABLE mpay_bindings (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES mpay_accounts(id),
    bank        text NOT NULL,
    last4       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpay_bindings_account ON mpay_bindings (account_id, created_at);
