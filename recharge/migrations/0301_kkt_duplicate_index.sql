-- KaKaTong: the duplicate rule (12) looks for the same card, terminal, trade and amount in
-- the last 24 hours on every money trade; this index makes that one index probe however
-- many trades the card has made.
CREATE INDEX kkt_trades_duplicate ON kkt_trades (card_no, terminal_code, trade_type, trade_mode, amount_cents, created_at);
