-- One operator identity (issue 17, docs/OPERATIONS.md "Operator console"): the console's
-- operators also carry the mobile payment API role (SPEC 6.4: boss, counter, cs, ops) and, for a
-- counter clerk, the business hall. A hall clerk signs in to the console and to POST /ops/login
-- with the same name and password; the counter API and the counter pages see the same operator.
ALTER TABLE operators
    ADD COLUMN mpay_role text CHECK (mpay_role IN ('boss', 'counter', 'cs', 'ops')),
    ADD COLUMN hall text CHECK (length(hall) BETWEEN 1 AND 32),
    -- a hash carried over from mpay_operators: argon2id of HMAC(pepper, password); the first
    -- successful sign-in (console or /ops/login) rewrites it as the console's plain argon2id
    ADD COLUMN password_peppered boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT operators_hall_of_counter CHECK ((mpay_role IS NOT DISTINCT FROM 'counter') = (hall IS NOT NULL));

-- A console operator of the same name gains the API role and keeps its console password.
UPDATE operators o SET mpay_role = m.role, hall = m.hall FROM mpay_operators m WHERE m.id = o.name;
INSERT INTO operators (name, role, password_hash, must_change_password, disabled, created_at, mpay_role, hall,
                       password_peppered)
SELECT m.id, CASE WHEN m.role = 'counter' THEN 'operator' ELSE 'viewer' END, m.password_hash, true, NOT m.enabled,
       m.created_at, m.role, m.hall, true
  FROM mpay_operators m
 WHERE NOT EXISTS (SELECT 1 FROM operators o WHERE o.name = m.id);

-- One audit trail: the API's operator log joins operator_actions (the token id in its detail),
-- which becomes append-only as the log was (SPEC 6.4).
INSERT INTO operator_actions (actor, action, subject, reason, detail, created_at)
SELECT 'mpay:' || operator, action, subject, reason, jsonb_build_object('token_id', token_id), created_at
  FROM mpay_operator_log ORDER BY id;
DROP TABLE mpay_operator_log;
DROP TABLE mpay_operators;
CREATE RULE operator_actions_no_update AS ON UPDATE TO operator_actions DO INSTEAD NOTHING;
CREATE RULE operator_actions_no_delete AS ON DELETE TO operator_actions DO INSTEAD NOTHING;

-- terminal_signins retention (terminal_signin_history_days): the sweeper deletes by age.
CREATE INDEX terminal_signins_created ON terminal_signins USING brin (created_at);
