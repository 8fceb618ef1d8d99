-- Order JSON API (SPEC 2, seed 004 3.2): what the third-party platforms' requests need
-- beyond the shared schema.

-- The PKI number a platform's replies carry (APPLLogin / AcctQueryLNT / CreateAutoLoadOrder
-- "pki"); NULL answers an empty string.
ALTER TABLE platforms ADD COLUMN IF NOT EXISTS pki_no text CHECK (pki_no ~ '^[0-9]{8}$');

-- APPLLogin handshake serials (16 digits, "serial"): AcctQueryLNT needs one, and a
-- CreateAutoLoadOrder that names one must name a live one of its own platform.
CREATE SEQUENCE IF NOT EXISTS order_api_serial_seq;
CREATE TABLE IF NOT EXISTS order_api_sessions (
    serial       text PRIMARY KEY CHECK (serial ~ '^[0-9]{16}$'),
    platform_id  bigint NOT NULL REFERENCES platforms(id),
    userid       text NOT NULL DEFAULT '',
    login_type   integer NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,   -- the optional APPLLogin fields, for audit
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS order_api_sessions_expiry ON order_api_sessions (expires_at);

-- Signatures already accepted (sha256 of the Sign bytes): the same signed request twice
-- within the timestamp window is a replay. Rows older than twice the window are purged;
-- the window check refuses anything older anyway.
CREATE TABLE IF NOT EXISTS order_api_nonces (
    platform_id  bigint NOT NULL REFERENCES platforms(id),
    sign_digest  text NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform_id, sign_digest)
);
CREATE INDEX IF NOT EXISTS order_api_nonces_seen ON order_api_nonces (seen_at);

-- AcctQueryLNT filters a platform's orders by user and state.
CREATE INDEX IF NOT EXISTS orders_platform_created ON orders (platform_id, created_at) WHERE platform_id IS NOT NULL;
