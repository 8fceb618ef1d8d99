-- One index per side of a transfer, not two. 0001 indexed transfers by debit_account_id and by
-- credit_account_id; 0400 added (debit_account_id, created_at) and (credit_account_id, created_at),
-- whose leading column answers every lookup the first two did (equality and = ANY on the account,
-- the console's OR of both sides, the foreign key checks when an account row is removed), so no
-- plan needs them. Each was one more index entry on every transfer written and on every non-HOT
-- update of one: a DD recharge inserts its post and rewrites its reservation twice (DD15 clears
-- its timeout, DD17 posts it; neither can be HOT, both change an indexed column), so these two
-- cost six index entries per recharge (bench/notes.md, issue 20 session 8).
-- tests/test_schema_indexes.py fails if an index is again a leading prefix of another.
DROP INDEX IF EXISTS transfers_debit;
DROP INDEX IF EXISTS transfers_credit;
