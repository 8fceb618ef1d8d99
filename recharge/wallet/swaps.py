"""SIM swap with the balance carried over (SPEC 7.6), in the caller's transaction.

- ① 换卡登记, ``POST /pos/swaps`` (``hall_swap``): the hall POS buys the old card's whole balance B (the checks
  of ``recharge.wallet.buyouts``); one transaction keeps the record, posts ``W → C`` B, creates the earmark — a
  waiting load of path ``swap`` (``recharge.wallet.loads.earmark``: its pending ``C → W`` B waits, without
  expiry, to be driven onto the new card) — and retires the old card. ``data`` = ``{load_id, amount}``.
- ② ``POST /counter/sim-swap`` (``bind_new_card``): the number in the registry and not cancelled (``2008``),
  the new card a registered stock card (``5007``; the same card already bound to this number answers as the
  first time), the handset model not blacklisted (``5012``), the ID given equal to the registry's (``3007``,
  checked last, as a credential). The number's bound card retires; a wallet whose old card was bought out
  (①) moves to the new card with its waiting loads; otherwise (lost or unreadable card) the wallet stays on the
  old card until STK ``wallet.open`` on the new one reopens it (``recharge.wallet.stk``: W's balance to
  ``RETIRED``).
- ③ 换卡圈存 is the load engine's (``recharge.wallet.stk_loads``): the swap's load is driven by ``/pos/loads
  {card}`` on the new card, its first script writing ``0x17`` with ``01`` ‖ the wallet's limit.
"""

from __future__ import annotations

import unicodedata

import asyncpg

from recharge import metrics
from recharge.mpay import registry
from recharge.mpay.codes import Refused
from recharge.mpay.text import compact
from recharge.wallet import buyouts, cards, loads
from recharge.wallet.clearing import Books
from recharge.wallet.crypto import WalletCrypto
from recharge.wallet.terminals import Result, Terminal
from recharge.wallet.wire import Record


async def hall_swap(conn: asyncpg.Connection, crypto: WalletCrypto, books: Books, terminal: Terminal,
                    record: Record) -> dict[str, object]:
    """① at the hall POS; ``Refused`` before anything is written, else ``{load_id, amount}``."""
    bo = await buyouts.check(conn, crypto, terminal, record)
    purchase_id = await buyouts.take(conn, books, bo, "swap")
    amount = record.amount
    load = await loads.earmark(conn, bo.account["id"], amount, path="swap", request_key=f"swap:{purchase_id}")
    await conn.execute(
        "INSERT INTO wallet_swaps (account_id, old_card, amount, limit_cents, purchase_id, terminal_id, load_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        bo.account["id"], record.card, amount, bo.wallet["limit_cents"], purchase_id, terminal.terminal_id,
        load.load_id,
    )
    await conn.execute("UPDATE wallet_cards SET status = 'retired', retired_at = now() WHERE card_no = $1",
                       record.card)
    metrics.WALLET_SWAPS.labels("buy_out").inc()
    return {"load_id": load.load_id, "amount": amount}


def model_key(model: str) -> str:
    """A handset model as the blacklist compares it: NFKC, case-folded, without spaces."""
    return "".join(unicodedata.normalize("NFKC", model).casefold().split())


def blacklisted(model: str, blacklist: str) -> bool:
    """Whether ``model`` is on the comma-separated ``wallet_handset_blacklist``."""
    return model_key(model) in {model_key(m) for m in blacklist.split(",") if m.strip()}


async def bind_new_card(conn: asyncpg.Connection, msisdn: str, new_card: str, model: str, blacklist: str,
                        id_type: str, id_number: str) -> str:
    """② at the counter; ``Refused`` before anything is written; the event recorded (``bound`` or
    ``bound:carried`` when the wallet moved to the new card)."""
    sub = await registry.get(conn, msisdn, lock=True)
    if sub is None or sub.status == "cancelled":
        raise Refused("2008")
    card = await conn.fetchrow("SELECT status, msisdn FROM wallet_cards WHERE card_no = $1 FOR UPDATE", new_card)
    again = card is not None and card["status"] == "bound" and card["msisdn"] == msisdn
    if card is None or (card["status"] != "stock" and not again):
        raise Refused("5007")
    if blacklisted(model, blacklist):
        raise Refused("5012")
    if not registry_id_matches(sub, id_type, id_number):
        raise Refused("3007")
    if again:
        return "bound"
    old = await conn.fetchval("SELECT card_no FROM wallet_cards WHERE msisdn = $1 AND status = 'bound'", msisdn)
    (result,) = await cards.bind(conn, [(msisdn, new_card)])
    assert result == Result.CREATED
    swap = await conn.fetchrow(
        "SELECT s.id, s.account_id FROM wallet_swaps s JOIN wallets w ON w.account_id = s.account_id"
        " AND w.card_no = s.old_card WHERE s.new_card IS NULL AND s.old_card IN (SELECT card_no FROM wallet_cards"
        " WHERE msisdn = $1 AND status = 'retired') FOR UPDATE OF s, w", msisdn,
    )
    metrics.WALLET_SWAPS.labels("bind").inc()
    if swap is None:
        return "bound" if old is None else "bound:old_card_retired"
    await conn.execute("UPDATE wallet_swaps SET new_card = $2, bound_at = now() WHERE id = $1", swap["id"], new_card)
    await conn.execute("UPDATE wallets SET card_no = $2, updated_at = now() WHERE account_id = $1",
                       swap["account_id"], new_card)
    await conn.execute("UPDATE wallet_cards SET account_id = $2 WHERE card_no = $1", new_card, swap["account_id"])
    return "bound:carried"


def registry_id_matches(sub: registry.Subscriber, id_type: str, id_number: str) -> bool:
    """The counter's identity check (SPEC 6.4): the registry's real-name data, the ID type and number equal."""
    return bool(sub.real_name and sub.id_type == id_type and compact(sub.id_number or "") == compact(id_number))
