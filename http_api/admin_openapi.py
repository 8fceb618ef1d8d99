"""The OpenAPI 3.1 description of the admin API (``/admin/kkt/…``, ``http_api.admin``), part of
the platform's ``GET /openapi.json`` (``http_api.openapi``).

Bodies list what each endpoint reads (other members are ignored); a wrong type or a value the
domain refuses answers 400 ``{"error": …}`` and changes nothing, a missing or wrong token 403.
"""

from __future__ import annotations

from typing import Any

from http_api.admin import MAX_BATCH_CARDS_HTTP
from recharge.kkt import cards

_STR: dict[str, Any] = {"type": "string"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_CENTS: dict[str, Any] = {"type": ["integer", "null"], "minimum": 0, "maximum": 2**63 - 1}
_DATE: dict[str, Any] = {"type": ["string", "null"], "format": "date"}
_ERROR = {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {"error": _STR}}


def _obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required or [], "properties": props}


def _reply(**props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "additionalProperties": False, "properties": props}


CARD = _reply(
    card_no=_STR, merchant={"type": ["string", "null"]}, kind={"enum": list(cards.CARD_KINDS)}, state=_STR,
    valid_from={"type": ["string", "null"]}, valid_to={"type": ["string", "null"]},
    password_failures={"type": "integer"}, locked_until={"type": ["string", "null"]},
    per_txn_limit_cents={"type": ["integer", "null"]}, daily_count_limit={"type": ["integer", "null"]},
    bound_mobile={"type": ["string", "null"]}, bound_id_no={"type": ["string", "null"]},
    holder={"type": "object"}, reissued_to={"type": ["string", "null"]}, activated_at={"type": ["string", "null"]},
    created_at=_STR, balance_cents={"type": "integer"}, points={"type": "integer"},
)

# (method, path, summary, request body or None, success reply)
ENDPOINTS: list[tuple[str, str, str, dict[str, Any] | None, dict[str, Any]]] = [
    ("put", "/admin/kkt/merchants/{code}", "Create or change a merchant (a 4-digit code)",
     _obj(name=_STR, issuing=_BOOL, consuming=_BOOL, closed=_BOOL), _reply(code=_STR, id={"type": "integer"})),
    ("put", "/admin/kkt/terminals/{code}", "Create or change a terminal",
     _obj(merchant=_STR, kind={"type": "string", "enum": list(cards.TERMINAL_KINDS)},
          msisdn={"type": ["string", "null"]}, enabled=_BOOL, daily_recharge_limit_cents=_CENTS),
     _reply(code=_STR)),
    ("put", "/admin/kkt/license-keys", "Create or change a license key",
     _obj(key=_STR, merchant=_STR, valid_to={"type": ["string", "null"], "format": "date-time"},
          networks={"type": ["array", "null"], "items": _STR}, enabled=_BOOL, test_mode=_BOOL),
     _reply(key_tail=_STR)),
    ("put", "/admin/kkt/service-codes/{merchant}/{item_code}", "Name a service code (ITEMCODE)",
     _obj(name=_STR), _reply(merchant=_STR, item_code=_STR)),
    ("put", "/admin/kkt/points-rules/{merchant}", "Set a merchant's points rule",
     _obj(["cents_per_point"], cents_per_point={"type": "integer", "minimum": 1, "maximum": 100_000_000}),
     _reply(merchant=_STR, cents_per_point={"type": "integer"})),
    ("put", "/admin/kkt/acceptance/{issuer}/{merchant}", "Let a merchant serve (or not) an issuer's cards",
     _obj(accepted=_BOOL), _reply(issuer=_STR, merchant=_STR, accepted=_BOOL)),
    ("post", "/admin/kkt/card-batches", "Generate a batch of inactive cards",
     _obj(["count"], merchant=_STR, count={"type": "integer", "minimum": 1, "maximum": MAX_BATCH_CARDS_HTTP},
          kind={"type": "string", "enum": list(cards.CARD_KINDS)}, valid_from=_DATE, valid_to=_DATE,
          per_txn_limit_cents=_CENTS, daily_count_limit={"type": ["integer", "null"], "minimum": 0}),
     _reply(first=_STR, last=_STR, count={"type": "integer"})),
    ("get", "/admin/kkt/cards/{card_no}", "What an operator may see of a card (never its password)", None, CARD),
    ("post", "/admin/kkt/cards/{card_no}/state", "Lose, find, freeze, unfreeze or cancel a card",
     _obj(["action", "reason"], action={"type": "string", "enum": ["lose", "found", "freeze", "unfreeze", "cancel"]},
          reason={"type": "string", "minLength": 1}),
     _reply(card_no=_STR, state=_STR)),
    ("post", "/admin/kkt/cards/{card_no}/reissue", "Reissue a card: its value and points move to the new card",
     _obj(["reason"], reason={"type": "string", "minLength": 1}, new_card_no={"type": ["string", "null"]}),
     _reply(card_no=_STR, new_card_no=_STR)),
]


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def paths() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for method, path, summary, body, reply in ENDPOINTS:
        op_id = "admin_" + "_".join(p.strip("{}").replace("-", "_") for p in path.split("/")[3:])
        operation: dict[str, Any] = {
            "operationId": f"{method}_{op_id}", "summary": summary,
            "security": [{"adminBearer": []}, {"adminToken": []}],
            "parameters": [{"name": "X-Admin-Actor", "in": "header", "required": False, "schema": _STR,
                            "description": "the operator's name for operator_actions (first 64 characters)"}]
            + [{"name": name.strip("{}"), "in": "path", "required": True, "schema": _STR}
               for name in path.split("/") if name.startswith("{")],
            "responses": {
                "200": _json("done", reply),
                "400": _json("refused: a body that is not a JSON object, a wrong type, a value refused; nothing changed",
                             _ERROR),
                "403": _json("no admin token configured, or a missing or wrong one", _ERROR),
                "503": {"description": "busy: the database is unreachable",
                        "content": {"text/plain": {"schema": _STR}}},
            },
        }
        if method == "get":
            operation["responses"]["404"] = _json("no such card", _ERROR)
        if body is not None:
            operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
        found.setdefault(path, {})[method] = operation
    return found


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "adminBearer": {"type": "http", "scheme": "bearer", "description": "settings.admin_token"},
    "adminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"},
}
