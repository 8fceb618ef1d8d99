-- The security centre (SPEC 6.3): 3 question answers per account (hashed like passwords) and
-- the failed identity checks of password resets, counted per Shanghai day (3008).
CREATE TABLE mpay_security_answers (
    account_id   bigint NOT NULL REFERENCES mpay_accounts(id),
    question_id  integer NOT NULL,
    answer_hash  text NOT NULL,
    PRIMARY KEY (account_id, question_id)
);
CREATE TABLE mpay_reset_failures (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES mpay_accounts(id),
    channel     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mpay_reset_failures_account ON mpay_reset_failures (account_id, channel, created_at);
