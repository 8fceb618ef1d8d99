-- Bodies kept for STK/POS repeats held their secret fields in clear (a prepaid card's PIN, pay, operation and
-- new passwords). From this version they are kept as keyed MACs (recharge/wallet/sequence.py without_secrets);
-- the rows kept before lose those values here (a repeat of such a request now answers 1002, as a changed body).
UPDATE wallet_seq_replies SET body = jsonb_set(body, '{op_password}', '"redacted"')
    WHERE body ? 'op_password' AND jsonb_typeof(body->'op_password') = 'string' AND body->>'op_password' NOT LIKE 'mac:%';
UPDATE wallet_seq_replies SET body = jsonb_set(body, '{params,pin}', '"redacted"')
    WHERE body->'params' ? 'pin' AND body->'params'->>'pin' NOT LIKE 'mac:%';
UPDATE wallet_seq_replies SET body = jsonb_set(body, '{params,pay_password}', '"redacted"')
    WHERE body->'params' ? 'pay_password' AND body->'params'->>'pay_password' NOT LIKE 'mac:%';
UPDATE wallet_seq_replies SET body = jsonb_set(body, '{params,old}', '"redacted"')
    WHERE body->'params' ? 'old' AND body->'params'->>'old' NOT LIKE 'mac:%';
UPDATE wallet_seq_replies SET body = jsonb_set(body, '{params,new}', '"redacted"')
    WHERE body->'params' ? 'new' AND body->'params'->>'new' NOT LIKE 'mac:%';
