"""The wallet's door to the ledger: SPEC 6.2's named accounts (``W/<acct>``, ``C/<acct>``, ``MER/<merchant>``,
``FEE``, …) through the mobile payment room's postings, so both rooms keep one account model."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from recharge.mpay import postings
from recharge.wallet.clearing import Posting


class MpayBooks:
    """``Books`` over ``recharge.mpay.postings``: one ``ok`` per posting, in order."""

    async def post(self, conn: asyncpg.Connection, items: Sequence[Posting]) -> list[bool]:
        moves = [postings.Move(p.id, await postings.account_id(conn, p.debit), await postings.account_id(conn, p.credit),
                               p.amount, p.code) for p in items]
        return [outcome.ok for outcome in await postings.move(conn, moves)]


BOOKS = MpayBooks()
