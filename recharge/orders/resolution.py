"""Customer service settles a load left *loading* (MAC2 sent, outcome unknown) by hand.

``rechargectl load resolve`` and the operator console call ``resolve_load``: posted when the
card was credited, voided when it was not, recorded with who and why in ``operator_actions``
in the same transaction. Anything but a loading order is refused and nothing changes (a load
DD21 recovery already settled is no longer loading).
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from recharge.ledger import transfers as ledger
from recharge.operators.actions import record_action
from recharge.orders import lifecycle
from recharge.orders.model import OrderError, OrderErrorCode, get_order, single
from recharge.orders.receipts import new_record_id

OUTCOMES = ("posted", "voided")


async def resolve_load(conn: asyncpg.Connection, *, order_no: str, outcome: str, actor: str, reason: str) -> str:
    """Settle a load left *loading*: ``posted`` (the card was credited) or ``voided`` (it was not).

    One transaction with the operator_actions record; returns the order's new state. Raises
    ``OrderError`` (nothing changed) unless the order is loading, the outcome is known and a
    reason is given.
    """
    if outcome not in OUTCOMES:
        raise OrderError(OrderErrorCode.BAD_REQUEST, "outcome must be posted or voided")
    if not reason.strip():
        raise OrderError(OrderErrorCode.BAD_REQUEST, "a reason is required")
    async with conn.transaction():
        order = await get_order(conn, order_no, for_update=True)
        if order is None:
            raise OrderError(OrderErrorCode.NOT_FOUND, "order number unknown")
        if not order.loading or order.pay_transfer_id is None:
            raise OrderError(OrderErrorCode.NOT_LOADABLE,
                                    f"order {order_no} is not loading (already settled: state {order.state})")
        if outcome == "posted":
            record_id = await new_record_id(conn, dt.datetime.now(dt.UTC))
            balance_after = (
                order.balance_before_cents + order.amount_cents if order.balance_before_cents is not None else None
            )
            result = single(await lifecycle.mark_loaded(conn, [lifecycle.Loaded(order_no, balance_after, record_id)]))
        else:
            single(await lifecycle.release_loading(conn, [order_no]))
            result = single(await lifecycle.void_orders(conn, [lifecycle.Void(order_no, reason="operator_void")]))
        transfer = await ledger.get_transfer(conn, order.pay_transfer_id)
        await record_action(conn, actor, f"load_resolve_{outcome}", order_no, reason,
                            transfer_status=transfer.status if transfer else None, state=result.state)
    return result.state
