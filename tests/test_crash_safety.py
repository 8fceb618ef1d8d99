"""Kill -9 the server in the middle of recharges: nothing acknowledged is lost, the books balance.

A seeded run (the seed is printed, so a failure can be replayed): terminals load many orders
concurrently while the server process is SIGKILLed at a random moment. After a restart,
every recharge the platform acknowledged (DD18 result 00) is posted; every load left
*loading* is settled by DD21 recovery with the card's own proof; then, for every card,
the money on the chip equals the card's posted balance in the ledger, and the audit passes.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from app.fixtures import paid_order, sim_terminal
from core_ext.virtual_card import VirtualCard
from recharge.ledger.audit import audit
from recharge.orders import model
from server.terminal_client import AsyncTerminalClient, ConnectionClosed, FlowFailed
from tests.crash_world import Progress, crash_rig

ORDERS = 24
AMOUNT_CENTS = 500


async def _load(
    client: AsyncTerminalClient, card: VirtualCard, order_no: str, acknowledged: set[str], progress: Progress
) -> None:
    """One recharge; records the order when the platform acknowledged it (DD18 result 00)."""
    m = client.messages
    try:
        await client.connect()
        dd12 = await client.call(m.dd11(AMOUNT_CENTS, order_no))
        progress.tick()
        dd14 = await client.call(m.dd13(card.run_script(dd12.info)))
        progress.tick()
        dd16 = await client.call(m.dd15(card.run_script(dd14.info)))
        progress.tick()
        dd18 = await client.call(m.dd17(card.run_script(dd16.info)))
        progress.tick()
        if dd18.result == 0:
            acknowledged.add(order_no)
    except (ConnectionClosed, OSError, TimeoutError, FlowFailed):
        return  # the server died under us: what happened is settled by DD21 below
    finally:
        await client.close()


async def _recover(client: AsyncTerminalClient, card: VirtualCard, order_no: str) -> int:
    """DD21 query, and the card's proof when the platform asks for it; the final result code."""
    m = client.messages
    await client.connect()
    try:
        dd22 = await client.call(m.dd21(order_no))
        if dd22.result == 0 and dd22.flow == 0x00:  # still loading: prove it with the card
            dd22 = await client.call(m.dd21_reply(order_no, card.run_script(dd22.info)))
        return dd22.result
    finally:
        await client.close()


@pytest.mark.parametrize("seed", [20261121, 7])
async def test_sigkill_during_recharges_loses_no_acknowledged_load(empty_database: str, tmp_path: Path, seed: int) -> None:
    print(f"crash-safety seed: {seed}")
    rng = random.Random(seed)
    async with crash_rig(empty_database, tmp_path) as rig:
        conn, port = rig.conn, rig.served.dd_port
        terminal = await sim_terminal(conn, "127.0.0.1", port, rig.keys)
        cards = {}
        for _ in range(ORDERS):
            card = terminal.card(balance_cents=0, seed=rng.randrange(2**32))
            cards[await paid_order(conn, terminal.merchant_id, card.card_no, AMOUNT_CENTS)] = card
        signer = AsyncTerminalClient("127.0.0.1", port, terminal.code, terminal.pki, timeout_s=10)
        await signer.sign_in(terminal.module())

        acknowledged: set[str] = set()
        clients = [AsyncTerminalClient("127.0.0.1", port, terminal.code, terminal.pki, timeout_s=10) for _ in cards]
        # the kill comes after a seeded number of answers, while the other loads are in flight
        progress = Progress(kill_after_answers=rng.randint(ORDERS, ORDERS * 3))
        loads = [
            asyncio.create_task(_load(c, card, no, acknowledged, progress))
            for c, (no, card) in zip(clients, cards.items(), strict=True)
        ]
        await rig.kill_when(progress, loads)

        print(f"acknowledged before the kill: {len(acknowledged)} of {len(cards)}")
        assert len(acknowledged) < len(cards), "the kill came after every load: nothing was tested"
        port = rig.restart().dd_port
        for order_no in acknowledged:
            order = await model.get_order(conn, order_no)
            assert order is not None and order.state in (model.LOADED, model.CONFIRMED), order_no
        outcomes: dict[int, int] = {}
        for order_no, card in cards.items():
            client = AsyncTerminalClient("127.0.0.1", port, terminal.code, terminal.pki, timeout_s=10)
            result = await _recover(client, card, order_no)
            outcomes[result] = outcomes.get(result, 0) + 1
            assert result in (0x00, 0xA5), f"order {order_no}: DD22 0x{result:02X}"
            assert (result == 0x00) == (card.balance == AMOUNT_CENTS), order_no
            posted = await conn.fetchval(
                "SELECT credits_posted - debits_posted FROM accounts WHERE card_no = $1 AND kind = 'card_purse'",
                card.card_no,
            )
            assert (posted or 0) == card.balance, f"card {card.card_no}: chip {card.balance}, ledger {posted}"
        print(f"after recovery, DD22 results: {outcomes}")
        report = await audit(conn)
        assert report.ok, report.render()
