-- KaKaTong: which merchants serve which issuer's cards (issue 14 item 9, docs/PROTOCOL.md
-- "Who may serve a card"). A card is served at its issuing merchant's terminals and at the
-- terminals of the merchants its issuer accepts here; any other merchant's trade, query,
-- password change or binding on it answers 52. Set by an operator (rechargectl kkt accept,
-- PUT /admin/kkt/acceptance/{issuer}/{merchant}); read with the card, never cached.
CREATE TABLE kkt_acceptance (
    issuer_id    bigint NOT NULL REFERENCES merchants(id),
    merchant_id  bigint NOT NULL REFERENCES merchants(id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer_id, merchant_id),
    CHECK (issuer_id <> merchant_id)
);
