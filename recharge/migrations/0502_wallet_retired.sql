-- SPEC 7.6, lost or unreadable card: once the wallet reopens on a new card, the old card's
-- balance has been written to RETIRED, and its late purchase records debit RETIRED, not W.
ALTER TABLE wallet_cards ADD COLUMN debits_retired boolean NOT NULL DEFAULT false;
