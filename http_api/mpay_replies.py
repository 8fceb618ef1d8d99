"""The ``data`` of every ``/mpay/v1`` success reply (SPEC 6.13), as JSON Schema for the OpenAPI document.

``DATA`` maps (method, path) to the schema of a ``0000`` reply's ``data``; a refusal's
``data`` is ``null`` (6.12). Field types follow 6.12's rules by name: cents are integers
(signed only in a history item), times RFC 3339 with ``+08:00`` and whole seconds, MSISDNs
11 digits. Every field a handler writes is listed and required, nothing else is allowed,
so a reply that gains, loses or retypes a field fails the tests that validate real replies
(tests/test_mpay_openapi.py and every test speaking through ``tests.mpay_world.Api``).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

CENTS: Schema = {"type": "integer", "minimum": 0, "description": "integer cents"}
SIGNED_CENTS: Schema = {"type": "integer", "description": "integer cents, negative for money out"}
TIME: Schema = {"type": "string", "format": "date-time",
                "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\+08:00$"}
MSISDN: Schema = {"type": "string", "pattern": "^1[3-9][0-9]{9}$"}
ID: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}
TEXT: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
ALIAS: Schema = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]{5,19}$"}
KIND: Schema = {"enum": ["real_name", "non_real_name"]}
BUCKET: Schema = {"enum": ["cash", "card"]}
PAYMENT_STATE: Schema = {"enum": ["created", "reserved", "paid", "expired", "failed"]}
ACCOUNT_STATUS: Schema = {"enum": ["normal", "locked", "frozen", "pending_closure", "closed"]}
EMPTY: Schema = {"type": "object", "additionalProperties": False, "properties": {}}
WALLET_STATE: Schema = {"enum": ["open", "paused", "pending_closure", "cancelled"]}
CARD_NO: Schema = {"type": "string", "pattern": "^[0-9]{16}$"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(**props: Schema) -> Schema:
    """An object with exactly these fields, all present (a value may still be ``null``)."""
    return {"type": "object", "additionalProperties": False, "required": list(props), "properties": props}


EXPIRES = obj(expires_at=TIME)
OPENED = obj(alias=ALIAS, kind=KIND)
PROFILE_FIELDS: dict[str, Schema] = {
    "msisdn": MSISDN, "alias": ALIAS, "kind": KIND, "status": ACCOUNT_STATUS,
    "lock_reason": nullable({"enum": ["suspended", "lost"]}), "name_masked": nullable(TEXT),
    "bank_card": nullable(obj(bank=TEXT, last4={"type": "string", "pattern": "^[0-9]{4}$"})),
    "wallet": nullable(obj(state=WALLET_STATE, card_no=CARD_NO)),
}
BALANCE_FIELDS: dict[str, Schema] = {"cash_balance": CENTS, "card_balance": CENTS, "cash_pending": CENTS,
                                     "card_pending": CENTS, "available": CENTS}
HISTORY = obj(items={"type": "array", "items": obj(
    id=TEXT, created_at=TIME, type=TEXT, amount=SIGNED_CENTS, bucket=BUCKET, state={"enum": ["posted", "pending"]})},
    next_cursor=nullable(TEXT))
CARD_RECHARGE = obj(amount=CENTS, card_balance=CENTS)
RECORD = obj(msisdn=MSISDN, name=nullable(TEXT),
             id_type=nullable({"enum": ["id_card", "passport", "officer", "hk_mo_permit", "tw_permit", "other"]}),
             id_number=nullable(TEXT), province={"type": "string", "pattern": "^[0-9]{6}$"}, brand=TEXT,
             status={"enum": ["normal", "suspended_oneway", "suspended_twoway", "arrears", "lost", "cancelled"]})

DATA: dict[tuple[str, str], Schema] = {
    # anyone
    ("POST", "/auth/otp"): EXPIRES,
    ("POST", "/auth/open"): OPENED,
    ("POST", "/auth/login"): obj(token=TEXT, expires_at=TIME, must_change_password=BOOL),
    ("POST", "/auth/login-reset"): EMPTY,
    ("POST", "/ops/login"): obj(token=TEXT, expires_at=TIME, role={"enum": ["boss", "counter", "cs", "ops"]},
                                hall=nullable(TEXT)),
    # customer
    ("POST", "/auth/logout"): EMPTY,
    ("GET", "/me"): obj(**PROFILE_FIELDS),
    ("GET", "/me/balance"): obj(**BALANCE_FIELDS),
    ("GET", "/me/history"): HISTORY,
    ("POST", "/me/password/login"): EMPTY,
    ("POST", "/me/password/pay"): EMPTY,
    ("POST", "/me/password/pay/reset"): EMPTY,
    ("PUT", "/me/security"): EMPTY,
    ("POST", "/me/otp"): EXPIRES,
    ("PUT", "/me/security/phone"): EMPTY,
    ("POST", "/me/real-name"): obj(kind=KIND),
    ("PUT", "/me/alias"): obj(alias=ALIAS),
    ("POST", "/me/recharges/bank"): obj(order_id=ID, redirect_url={"type": "string", "format": "uri"},
                                        expires_at=TIME),
    ("POST", "/me/recharges/card"): CARD_RECHARGE,
    ("PUT", "/me/bank-card"): obj(bank=TEXT, last4={"type": "string", "pattern": "^[0-9]{4}$"}),
    ("POST", "/me/withdrawals"): obj(withdrawal_id=ID, state={"const": "submitted"}),
    ("POST", "/me/hf"): obj(bucket=BUCKET, amount=CENTS),
    ("POST", "/me/close"): EMPTY,
    ("GET", "/payments/{id}"): obj(payment_id=ID, merchant_name=TEXT, amount=CENTS, state=PAYMENT_STATE,
                                   otp_required=BOOL, expires_at=TIME),
    ("POST", "/payments/{id}/otp"): obj(otp_expires_at=TIME),
    ("POST", "/payments/{id}/confirm"): obj(state={"const": "paid"}, bucket=BUCKET),
    # the SIM wallet on the website (SPEC 7.3)
    ("POST", "/me/wallet/transfers"): obj(load_id=TEXT, waiting=CENTS),
    ("POST", "/me/wallet/loads/{load_id}/cancel"): EMPTY,
    ("GET", "/me/wallet"): obj(state=WALLET_STATE, card_no=CARD_NO, shadow=SIGNED_CENTS, limit=CENTS, waiting=CENTS),
    ("GET", "/me/wallet/history"): obj(items={"type": "array", "items": obj(
        id=ID, created_at=TIME, type={"enum": ["load", "purchase", "void", "buy_out", "retired"]},
        amount=SIGNED_CENTS, state={"enum": ["waiting", "loading", "posted", "voided"]})}),
    ("GET", "/me/wallet/log"): obj(card_no=CARD_NO, items={"type": "array", "maxItems": 10, "items": obj(
        serial={"type": "integer", "minimum": 0, "maximum": 65535}, type={"enum": ["load", "purchase"]},
        amount=CENTS, terminal_id={"type": "string", "pattern": "^[0-9]{12}$"},
        date={"type": "string", "pattern": "^[0-9]{8}$"}, time={"type": "string", "pattern": "^[0-9]{6}$"})}),
    # merchant
    ("POST", "/merchant/payments"): obj(payment_id=ID, state=PAYMENT_STATE, pay_url={"type": "string", "format": "uri"},
                                        expires_at=TIME),
    ("GET", "/merchant/payments/{order_no}"): obj(payment_id=ID, merchant_order_no=ID, amount=CENTS,
                                                  state=PAYMENT_STATE, bucket=nullable(BUCKET),
                                                  paid_at=nullable(TIME), refunded=CENTS),
    ("POST", "/merchant/refunds"): obj(refund_id=TEXT, refunded=CENTS),
    # counter
    ("POST", "/counter/otp"): EXPIRES,
    ("POST", "/counter/accounts"): OPENED,
    ("POST", "/counter/close"): EMPTY,
    ("POST", "/counter/cash"): obj(cash_balance=CENTS),
    ("POST", "/counter/sim-swap"): obj(msisdn=MSISDN, card_no=CARD_NO),
    ("POST", "/counter/wallet-cancel"): EXPIRES,
    # 10086 agents and the IVRs
    ("GET", "/cs/account"): obj(**PROFILE_FIELDS, **BALANCE_FIELDS),
    ("GET", "/cs/history"): HISTORY,
    ("POST", "/cs/resets/login"): EMPTY,
    ("POST", "/cs/resets/pay"): EMPTY,
    ("POST", "/cs/resets/operation"): EMPTY,
    ("POST", "/cs/close"): EMPTY,
    ("POST", "/cs/ivr/resets/login"): EMPTY,
    ("GET", "/cs/ivr/balance"): obj(cash_balance=CENTS, card_balance=CENTS, available=CENTS),
    ("POST", "/cs/ivr/password/pay"): EMPTY,
    ("POST", "/ivr/card-recharge"): CARD_RECHARGE,
    # ops and BOSS
    ("POST", "/ops/accounts/{login}/freeze"): obj(status=ACCOUNT_STATUS),
    ("POST", "/ops/accounts/{login}/unfreeze"): obj(status=ACCOUNT_STATUS),
    ("POST", "/ops/withdrawals/{id}/void"): obj(state={"const": "voided"}),
    ("GET", "/ops/sms-sink"): obj(items={"type": "array", "items": obj(id=TEXT, created_at=TIME, text=TEXT)}),
    ("PUT", "/registry/subscribers/{msisdn}"): obj(record=RECORD, created=BOOL,
                                                   events={"type": "array", "items": TEXT}),
    ("GET", "/registry/subscribers/{msisdn}"): obj(record=RECORD),
    # gateways
    ("GET", "/sms/dlr"): EMPTY,
}
