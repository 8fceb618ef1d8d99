"""The SIM wallet's JSON routes under ``/mpay/v1`` beside STK and POS (SPEC 6.13, 7.6, 7.7): the counter's SIM
swap and wallet cancellation (role ``counter``, its hall). They go through mpay's gate (``mpay_gate``): operator
token, ``X-Request-Id`` replay, fields by name, a refusal that writes nothing; the rules are
``recharge.wallet``'s, each handler finds what it names and calls them, then records the operator's write in
``operator_actions`` with its required ``reason`` (as the counter's other writes: docs/PROTOCOL.md "Reasons")."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from http_api.mpay_customer import rfc3339
from http_api.mpay_gate import Call, Endpoint, endpoint
from recharge.mpay import sessions
from recharge.mpay.codes import Refused
from recharge.wallet import cancels, swaps, wire


async def _log(call: Call, action: str, subject: str, **detail: object) -> None:
    """The operator's write in ``operator_actions`` with its required reason and the counter's hall."""
    assert call.operator is not None and call.session is not None
    await sessions.log_action(call.conn, call.operator["id"], call.session.token_id, action, subject,
                              call.fields["reason"], hall=call.operator["hall"], **detail)


def _card(value: str) -> str:
    try:
        return wire.card16(value)
    except wire.WireError:
        raise Refused("1001") from None


async def counter_sim_swap(call: Call) -> dict[str, Any]:
    """SIM swap at the counter (SPEC 7.6 ②): bind a stock RFID-SIM to the number"""
    f = call.fields
    new_card = _card(f["new_card"])
    if not f["handset_model"].strip() or len(f["handset_model"]) > 64:
        raise Refused("1001")
    event = await swaps.bind_new_card(call.conn, f["msisdn"], new_card, f["handset_model"],
                                      call.env.settings.wallet_handset_blacklist, f["id_type"], f["id_number"])
    await _log(call, "wallet_counter_sim_swap", f["msisdn"], card_no=new_card, event=event)
    return {"msisdn": f["msisdn"], "card_no": new_card}


async def counter_wallet_cancel(call: Call) -> dict[str, Any]:
    """Wallet cancellation at the counter (SPEC 7.7 退订): the hall POS may buy the wallet out"""
    f = call.fields
    assert call.operator is not None
    if not call.operator["hall"]:
        raise Refused("1004")
    expires = await cancels.permit(call.conn, call.env, f["msisdn"], f["id_type"], f["id_number"],
                                   hall=call.operator["hall"], operator_id=call.operator["id"])
    await _log(call, "wallet_counter_cancel", f["msisdn"], expires_at=rfc3339(expires))
    return {"expires_at": rfc3339(expires)}


def _counter(handler: Any, fields: dict[str, str]) -> Endpoint:
    return Endpoint(handler, "operator", fields, roles=("counter",), channel="counter")


ROUTES: list[tuple[str, str, Endpoint]] = [
    ("POST", "/counter/sim-swap", _counter(counter_sim_swap, {
        "msisdn": "msisdn", "new_card": "digits", "handset_model": "str", "id_type": "str", "id_number": "str",
        "reason": "reason"})),
    ("POST", "/counter/wallet-cancel", _counter(counter_wallet_cancel, {
        "msisdn": "msisdn", "id_type": "str", "id_number": "str", "reason": "reason"})),
]


def setup(app: web.Application) -> None:
    for method, path, ep in ROUTES:
        app.router.add_route(method, path, endpoint(ep))
