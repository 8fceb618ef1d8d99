"""The unit of work of a mobile payment operation: one transaction that commits its refusals too.

A refusal (``Refused``) is raised after the checks wrote nothing but attempt counters
(wrong passwords, OTPs, unknown PINs, rate windows) — and those must stay counted. So
``atomic`` commits the transaction when the work raises ``Refused`` and raises it again
after the commit; any other exception rolls everything back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from recharge.mpay.codes import Refused

T = TypeVar("T")


async def atomic(conn: asyncpg.Connection, work: Callable[[], Awaitable[T]]) -> T:
    refused: Refused | None = None
    async with conn.transaction():
        try:
            return await work()
        except Refused as exc:
            refused = exc
    raise refused
