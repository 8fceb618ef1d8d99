"""Online banking into the SIM wallet (SPEC 6.6 bank recharge ``into: wallet``, 7.3's ``bank`` path).

At the order, 7.3's creation checks that apply to money coming from the bank, in 7.3's order: a
wallet open (``5001``; paused ``5002``), 6.7's recharge cell, no load *loading* (``5006``), the
load's amount (``4001``), the cap (``5003``: shadow + loads not yet posted + amount); no pay
password and no available-cash check (the bank pays). At the notice, after the bank's money is
posted ``BANK → C``: a waiting load (``queue_waiting_load``, request key ``bank:<order>`` so a
repeated notice makes none) if the wallet is still open, driven at the next STK or hall POS
contact; any refusal then leaves the money in cash (the customer may move it with the website's
网络侧转存). ``SEAM`` is what the composition root registers in ``recharge.mpay.bank.WALLET``.
"""

from __future__ import annotations

import asyncpg

from recharge.mpay import matrix
from recharge.mpay.bank import WalletLoads
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.wallet import loads


async def check_order(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, amount: int) -> None:
    loads.check_wallet(await loads.wallet_of(conn, account["id"]))
    matrix.require(account, "recharge", "web")
    if await loads.any_loading(conn, account["id"]):
        raise Refused("5006")
    if not env.settings.wallet_load_min_cents <= amount <= env.settings.wallet_load_max_cents:
        raise Refused("4001")
    await loads._check_cap(conn, env, account["id"], amount)


async def queue(conn: asyncpg.Connection, env: Env, account_id: int, amount: int, order_id: str) -> str | None:
    """The waiting load of a paid order (its id), or None when the wallet is no longer open or a
    creation check refuses now (nothing of the load written: it runs in a savepoint)."""
    wallet = await loads.wallet_of(conn, account_id)
    if wallet is None or wallet["state"] != "open":
        return None
    try:
        async with conn.transaction():
            load = await loads.queue_waiting_load(conn, env, account_id, amount, path="bank",
                                                  request_key=f"bank:{order_id}")
    except Refused:
        return None
    return load.load_id


SEAM = WalletLoads(check_order, queue)
