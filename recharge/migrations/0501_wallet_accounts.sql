-- The SIM wallet's cards, wallets and purchases belong to mobile payment accounts (SPEC 6, 0400).
ALTER TABLE wallet_cards ADD CONSTRAINT wallet_cards_account_fk FOREIGN KEY (account_id) REFERENCES mpay_accounts(id);
ALTER TABLE wallets ADD CONSTRAINT wallets_account_fk FOREIGN KEY (account_id) REFERENCES mpay_accounts(id);
ALTER TABLE wallet_purchases ADD CONSTRAINT wallet_purchases_account_fk
    FOREIGN KEY (account_id) REFERENCES mpay_accounts(id);
