"""How a wallet ends (SPEC 7.3, 7.7): its waiting loads voided, 销号 (the number cancelled), and the closing of a
wallet left pending closure once the uploads bring its shadow to zero. In the caller's transaction.

- **Waiting loads** (``void_waiting``): every load of the account in state ``waiting`` is voided, its money
  staying in cash (a swap's earmark included); a load already *loading* is left alone.
- **销号** (``on_number_event``, registered in ``recharge.mpay.events.NUMBER_EVENT_HOOKS`` at start-up, so it
  commits with the registry change): an open or paused wallet's waiting loads void; then the wallet is
  ``cancelled`` when its shadow ``W`` is 0 with nothing pending (W ≥ the card's balance, so the card is empty),
  else ``pending_closure`` — purchases still upload, and the account (``pending_closure`` too, the wallet being
  open) closes later. A suspended or lost number changes nothing here: loads are refused by the status matrix,
  waiting loads wait, purchases continue.
- **Closed by the upload** (``after_upload``): a ``pending_closure`` wallet whose shadow a batch left at 0 with
  nothing pending becomes ``cancelled``, and its account closes if cash and card are 0 too (C8).
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from recharge import metrics
from recharge.mpay import accounts
from recharge.mpay.env import Env
from recharge.wallet import loads


async def void_waiting(conn: asyncpg.Connection, account_id: int, reason: str) -> int:
    """Void every waiting load of the account (``recharge.wallet.loads.void_waiting``); how many."""
    return len(await loads.void_waiting(conn, account_id, reason))


async def shadow_settled(conn: asyncpg.Connection, account_id: int) -> bool:
    """Whether ``W/<acct>`` is 0 with nothing pending on it."""
    row = await conn.fetchrow(
        "SELECT credits_posted - debits_posted AS posted, credits_pending + debits_pending AS pending"
        " FROM accounts WHERE kind = 'mpay' AND card_no = $1", f"W/{account_id}",
    )
    return row is None or (row["posted"] == 0 and row["pending"] == 0)


async def _set(conn: asyncpg.Connection, account_id: int, state: str) -> None:
    await conn.execute("UPDATE wallets SET state = $2, updated_at = now() WHERE account_id = $1", account_id, state)


async def on_number_event(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, status: str) -> list[str]:
    """A registry status change of the account's number; the events it caused (recorded with the change)."""
    if status != "cancelled":
        return []
    state = await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1 FOR UPDATE", account["id"])
    if state not in ("open", "paused"):
        return []
    events = []
    voided = await void_waiting(conn, account["id"], "number_cancelled")
    if voided:
        events.append(f"wallet:waiting_voided:{voided}")
    new_state = "cancelled" if await shadow_settled(conn, account["id"]) else "pending_closure"
    await _set(conn, account["id"], new_state)
    metrics.WALLET_CANCELS.labels("number_event").inc()
    return [*events, f"wallet:{new_state}"]


async def after_upload(conn: asyncpg.Connection, env: Env, account_ids: Iterable[int]) -> None:
    """After a batch cleared: close each pending-closure wallet it emptied, then its account if settled."""
    for account_id in sorted(set(account_ids)):
        state = await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1 FOR UPDATE", account_id)
        if state != "pending_closure" or not await shadow_settled(conn, account_id):
            continue
        await _set(conn, account_id, "cancelled")
        metrics.WALLET_CANCELS.labels("closed_by_upload").inc()
        await accounts.close_if_settled(conn, env.keys, account_id)
