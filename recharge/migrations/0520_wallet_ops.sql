-- The SIM wallet's counter and hall steps (SPEC 7.6, 7.7): buy-outs of a card's whole balance
-- (换卡登记 for a swap, 退订 for a counter cancellation), the swap that carries the balance to
-- the new card as a waiting load, and the counter's ten-minute permit for a hall buy-out.

-- A purchase record is a merchant's sale, or a hall POS's buy-out for a swap or a cancellation.
ALTER TABLE wallet_purchases ADD COLUMN kind text NOT NULL DEFAULT 'sale'
    CHECK (kind IN ('sale', 'swap', 'cancel'));

-- 7.6 readable swap: the old card's buy-out, the waiting load (path swap, 0510) that carries its
-- balance to the new card, and the new card the counter bound afterwards.
CREATE TABLE wallet_swaps (
    id                bigserial PRIMARY KEY,
    account_id        bigint NOT NULL REFERENCES mpay_accounts(id),
    old_card          text NOT NULL REFERENCES wallet_cards(card_no),
    new_card          text REFERENCES wallet_cards(card_no),
    amount            bigint NOT NULL CHECK (amount > 0),
    limit_cents       bigint NOT NULL CHECK (limit_cents BETWEEN 100 AND 100000),  -- the old card's limit
    purchase_id       bigint NOT NULL UNIQUE REFERENCES wallet_purchases(id),
    terminal_id       text NOT NULL REFERENCES wallet_terminals(terminal_id),
    load_id           text NOT NULL UNIQUE REFERENCES wallet_loads(load_id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    bound_at          timestamptz
);
CREATE INDEX wallet_swaps_account ON wallet_swaps (account_id, created_at);
CREATE UNIQUE INDEX wallet_swaps_old_card ON wallet_swaps (old_card);

-- 7.7 counter cancellation (退订): the hall whose POS may buy the wallet out, until expires_at.
CREATE TABLE wallet_cancel_permits (
    account_id   bigint PRIMARY KEY REFERENCES mpay_accounts(id),
    hall         text NOT NULL,
    operator_id  text NOT NULL,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
