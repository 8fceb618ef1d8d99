-- The mobile payment account's JSON API (SPEC 6.4, 6.12): operators and their log, replies
-- kept per (principal, X-Request-Id), failed logins per client address.

CREATE TABLE mpay_operators (
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,32}$'),
    role           text NOT NULL CHECK (role IN ('boss', 'counter', 'cs', 'ops')),
    hall           text,
    password_hash  text NOT NULL,
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'counter') = (hall IS NOT NULL))
);
ALTER TABLE mpay_tokens ADD COLUMN system boolean NOT NULL DEFAULT false;  -- a CLI token (BOSS feed): no idle lapse

-- Append-only: every operator write (who, with which token, why).
CREATE TABLE mpay_operator_log (
    id          bigserial PRIMARY KEY,
    operator    text NOT NULL,
    token_id    bigint,
    action      text NOT NULL,
    subject     text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE RULE mpay_operator_log_no_update AS ON UPDATE TO mpay_operator_log DO INSTEAD NOTHING;
CREATE RULE mpay_operator_log_no_delete AS ON DELETE TO mpay_operator_log DO INSTEAD NOTHING;

-- X-Request-Id: the first final reply, byte for byte, per principal, 7 days.
CREATE TABLE mpay_request_replies (
    principal   text NOT NULL,
    request_id  text NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    body_sha    bytea NOT NULL,
    status      integer,
    reply       bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, request_id)
);
CREATE INDEX mpay_request_replies_time ON mpay_request_replies (created_at);

-- Failed logins per client address (mpay_auth_fail_per_ip a minute → 1006).
CREATE TABLE mpay_auth_failures (
    id          bigserial PRIMARY KEY,
    client      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpay_auth_failures_client ON mpay_auth_failures (client, created_at);

-- Merchant signatures seen (replays caught by the decoded bytes however spelled), 7 days.
CREATE TABLE mpay_merchant_signs (
    merchant_id  text NOT NULL,
    sign_sha     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, sign_sha)
);

-- Refunds (SPEC 6.6, behind mpay_refund_enabled): refund_no unique per merchant.
CREATE TABLE mpay_refunds (
    id           text PRIMARY KEY,
    merchant_id  text NOT NULL REFERENCES mpay_merchants(id),
    refund_no    text NOT NULL,
    payment_id   text NOT NULL REFERENCES mpay_payments(id),
    amount       bigint NOT NULL CHECK (amount > 0),
    transfer_id  text NOT NULL REFERENCES transfers(id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, refund_no)
);

-- Bank gateways (icbc, unionpay) and the RSA public keys their notices are signed with.
CREATE TABLE mpay_gateways (
    id              text PRIMARY KEY CHECK (id IN ('icbc', 'unionpay')),
    public_key_pem  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
