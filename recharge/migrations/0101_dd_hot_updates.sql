-- Recharge steps rewrite the same rows several times (an order three times, the accounts once
-- per post). An update that changes no indexed column can stay on its page with no new index
-- entries (a HOT update), if the page has room.

-- No query ever used orders_expiry (an order's expiry is its reservation's timeout, swept from
-- transfers), and its predicate named `state`: every state change added an entry to every index
-- of orders. Without it a confirm (03 → 04, DD19) touches no indexed column.
DROP INDEX IF EXISTS orders_expiry;

-- Room on each page for those updates (applies to pages written from now on).
ALTER TABLE orders SET (fillfactor = 80);
ALTER TABLE cards SET (fillfactor = 85);
ALTER TABLE accounts SET (fillfactor = 80);

-- A load's balances live in its order (balance before at DD15, after at DD17), so a recharge
-- no longer rewrites the card row twice; the card keeps the balance it reported when DD13 last
-- had to look its row up (first sight, an order paid at the card).
COMMENT ON COLUMN cards.last_balance_cents IS
    'cpu: the balance the card reported when DD13 last looked its row up (a load''s balances are in its order)';

-- DD20 record ids come from blocks of this sequence (server.store.RecordIds, RECORD_ID_BLOCK):
-- one nextval per thousand receipts instead of one per batch of loads.
ALTER SEQUENCE dd_record_seq INCREMENT BY 1000;
