-- The operator console (issue 17): operator accounts, their server-side sessions, sign-in
-- attempts, one-time form tokens (a double-submitted form runs once), card batch jobs with
-- their progress, the ledger audit's last results, and DD terminals' sign-in history.

CREATE TABLE operators (
    id                    bigserial PRIMARY KEY,
    name                  text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,32}$'),
    role                  text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    password_hash         text NOT NULL,              -- argon2id (argon2-cffi), never the password
    must_change_password  boolean NOT NULL DEFAULT true,  -- a one-time password until changed
    failed_attempts       integer NOT NULL DEFAULT 0,
    locked_until          timestamptz,
    disabled              boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    password_changed_at   timestamptz,
    last_sign_in_at       timestamptz
);

-- A session is known by the SHA-256 of its cookie token; the token itself is never stored.
CREATE TABLE operator_sessions (
    token_hash     text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    operator_id    bigint NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    csrf_token     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    idle_until     timestamptz NOT NULL,   -- moves forward with use, never past expires_at
    expires_at     timestamptz NOT NULL    -- absolute end of the session
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator_id);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

-- Every sign-in attempt (the dashboard's recent lockouts; an attacker's guesses).
CREATE TABLE operator_signins (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,            -- as typed (cut to 64 characters)
    operator_id bigint REFERENCES operators(id) ON DELETE SET NULL,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'bad_password', 'locked', 'now_locked', 'unknown', 'disabled')),
    remote      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_signins_created ON operator_signins (created_at);

-- One row per changing form submitted: a second submission of the same form finds its token
-- taken and changes nothing. Rows older than a day are purged by the console itself.
CREATE TABLE console_form_tokens (
    token        text PRIMARY KEY CHECK (length(token) BETWEEN 16 AND 64),
    operator_id  bigint NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX console_form_tokens_created ON console_form_tokens (created_at);

-- KaKaTong card batches started from the console, with their progress while they run.
CREATE TABLE card_batch_jobs (
    id            bigserial PRIMARY KEY,
    merchant_code text NOT NULL,
    count         integer NOT NULL CHECK (count > 0),
    kind          text NOT NULL,
    done          integer NOT NULL DEFAULT 0,
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    first_card    text,
    last_card     text,
    error         text,
    actor         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

-- Results of the ledger audit (rechargectl audit, the console's dashboard).
CREATE TABLE ledger_audit_runs (
    id          bigserial PRIMARY KEY,
    ok          boolean NOT NULL,
    report      text NOT NULL,
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- DD terminals' sign-ins, successful or not (the console's sign-in history).
CREATE TABLE terminal_signins (
    id             bigserial PRIMARY KEY,
    terminal_code  text NOT NULL,
    outcome        text NOT NULL,          -- ok, or the failure's reason (pki, cryptogram, proof, locked)
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX terminal_signins_terminal ON terminal_signins (terminal_code, created_at);

-- The console shows an order's or a card's operator decisions, and the latest ones.
CREATE INDEX operator_actions_subject ON operator_actions (subject, created_at);
CREATE INDEX operator_actions_created ON operator_actions (created_at);

-- Seed 000's 所属发卡商户: the merchant whose cards a terminal serves, beside the consuming
-- merchant it belongs to (merchant_id). NULL: the terminal's own merchant.
ALTER TABLE terminals ADD COLUMN issuing_merchant_id bigint REFERENCES merchants(id);
