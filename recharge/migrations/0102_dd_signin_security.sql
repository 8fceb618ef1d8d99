-- DD sign-in hardening (issue 14 items 2 and 3; docs/PROTOCOL.md "Sign-in failures and the lockout",
-- "Where a step came from").

-- The lockout is a bounded time, growing with each lock in a row: a terminal is locked while
-- signin_locked_until is in the future; signin_locks counts the locks since its last successful
-- sign-in (the next lasts twice as long, up to signin_lock_max_s). `locked` stays an operator's
-- hard lock (nothing sets it automatically any more; terminals the old rule locked stay locked
-- until an operator unlocks them).
ALTER TABLE terminals ADD COLUMN IF NOT EXISTS signin_locked_until timestamptz;
ALTER TABLE terminals ADD COLUMN IF NOT EXISTS signin_locks integer NOT NULL DEFAULT 0;

-- Sign-ins that failed before the module proved its key (anyone who saw the terminal's code and
-- PKI number on the wire can cause those): counted per window for the "terminal targeted" gauge,
-- never towards the lock.
ALTER TABLE terminals ADD COLUMN IF NOT EXISTS signin_probes integer NOT NULL DEFAULT 0;
ALTER TABLE terminals ADD COLUMN IF NOT EXISTS signin_probes_since timestamptz;

-- Where the terminal's valid sign-in came from: recharges, queries and deposits must come from
-- the same address (or network: dd_signin_bind_ipv4_prefix / _ipv6_prefix).
ALTER TABLE terminals ADD COLUMN IF NOT EXISTS signin_peer text;

-- Where each money step came from: the load (DD15 marks it loading and sends MAC2 there; DD17 and
-- DD19 come on the same connection), its DD21 recovery, and a card's last deposit move (DD73).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS load_peer text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS recovery_peer text;
ALTER TABLE cards ADD COLUMN IF NOT EXISTS deposit_peer text;
