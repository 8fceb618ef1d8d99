"""The SIM wallet's demo data (SPEC 5): hall POS 000000000099 of hall HN0001, merchant POS 000011552001 of
DEMODIG, and ten stock RFID-SIMs from SPEC 7.4's test card 1000581000000125 on; idempotent."""

from __future__ import annotations

import asyncpg

from recharge.wallet import cards, terminals

DEMO_HALL = "HN0001"
DEMO_HALL_POS = "000000000099"
DEMO_MERCHANT = "DEMODIG"
DEMO_MERCHANT_POS = "000011552001"
DEMO_FIRST_SIM = 1000581000000125
DEMO_SIMS = 10


async def seed(conn: asyncpg.Connection) -> None:
    await terminals.register(conn, [terminals.Terminal(DEMO_HALL_POS, hall=DEMO_HALL),
                                    terminals.Terminal(DEMO_MERCHANT_POS, merchant=DEMO_MERCHANT)])
    await cards.add_stock(conn, [str(DEMO_FIRST_SIM + i) for i in range(DEMO_SIMS)])
