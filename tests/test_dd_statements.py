"""The database statements one DD recharge costs, counted: a count, not a speed, so that a change adding
a statement (a round trip to PostgreSQL, and its share of the CPU docs/BENCHMARKS.md measures) to a
recharge cannot go in unnoticed.

One terminal recharges a paid order of a CPU card the platform knows (the benchmark's recharge) against
the real DD server, alone, so every batch of the group commit holds that one step. Every statement the
DD server's lanes and read gate send while it does is logged (asyncpg's query logger on the connections
they take), stage by stage. ``BEGIN`` and ``COMMIT`` count; the receipts' ``nextval`` (one per
``RECORD_ID_BLOCK`` receipts) and asyncpg's type introspection (once per connection) do not.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from app import fixtures
from app.fixtures import SimTerminal
from tests.statement_log import logged, without_introspection

pytestmark = pytest.mark.usefixtures("audited")

# Statements per request stage of a recharge (DD11 → DD19), each a round trip to PostgreSQL.
# DD11: the lookup (terminal, order, card kind) on the read gate; DD13: none (the known card);
# DD15: BEGIN, the ledger holds the reservation (its timeout cleared), the order *loading*, COMMIT;
# DD17: BEGIN, the ledger's post, the order loaded, COMMIT; DD19: BEGIN, the confirm, COMMIT.
STATEMENTS_PER_STAGE = {"DD11": 1, "DD13": 0, "DD15": 4, "DD17": 4, "DD19": 3}


def _statements(seen: list[str]) -> list[str]:
    return [
        q for q in without_introspection(seen) if "nextval('dd_record_seq')" not in q
    ]


async def test_a_recharge_of_a_known_cpu_card_costs_the_pinned_statements_per_stage(
    platform: Any, conn: asyncpg.Connection, test_keys: Any
) -> None:
    term: SimTerminal = await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card(balance_cents=700)
    await conn.execute("INSERT INTO cards (card_no, kind, last_balance_cents) VALUES ($1, 'cpu', 700)", card.card_no)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 250)
    loop = asyncio.get_running_loop()
    await platform.dd.dd.wait_idle()  # no connection kept from earlier tests: every one is taken (and logged) anew

    def settled() -> None:  # the query logger's callbacks run on the loop, soon after each statement
        for _ in range(3):
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01), loop).result(5)

    per_stage: dict[int, list[str]] = {}
    with logged([platform.dd.dd.lanes.kept, platform.dd.dd.lanes.fund_writer.connections]) as seen:

        def talk() -> None:
            client = term.client()

            def step(stage: int, answer: Any) -> Any:
                assert answer.result == 0, (stage, answer)
                settled()
                per_stage[stage] = _statements(seen)
                seen.clear()
                return answer

            with client.connect():
                dd12 = step(0x11, client.dd11(250, order_no))
                dd14 = step(0x13, client.dd13(card.run_script(dd12.info)))
                dd16 = step(0x15, client.dd15(card.run_script(dd14.info)))
                step(0x17, client.dd17(card.run_script(dd16.info)))
                step(0x19, client.dd19(order_no))

        await asyncio.to_thread(talk)

    counts = {f"DD{stage:02X}": len(statements) for stage, statements in per_stage.items()}
    assert counts == STATEMENTS_PER_STAGE, per_stage
    row = await conn.fetchrow("SELECT state, loading FROM orders WHERE order_no = $1", order_no)
    assert (row["state"], row["loading"]) == ("04", False)
