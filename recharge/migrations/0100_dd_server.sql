-- DD server (SPEC 1.2-1.7): what the terminal flows need beyond the shared schema.

-- The PKI number a terminal signed in with (SPEC 1.2: later flows must carry the same one).
ALTER TABLE terminals ADD COLUMN IF NOT EXISTS signin_pki text CHECK (signin_pki ~ '^[0-9]{8}$');

-- The card's random of INITIALIZE FOR LOAD (4 bytes, hex): DD21 recovery re-derives the
-- session key from it to check the MAC2 the card proves (GET TRANSACTION PROVE).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS load_random text CHECK (load_random ~ '^[0-9A-F]{8}$');

-- Handshake serials of DD08 (16 digits) and the record ids of DD20 (date ‖ 12 digits).
CREATE SEQUENCE IF NOT EXISTS dd_signin_serial_seq;
CREATE SEQUENCE IF NOT EXISTS dd_record_seq;
