"""After a chaos run: what the clients' journals say against what the database holds.

- nothing acknowledged is lost: every DD load acknowledged (DD18 ``0x00`` or DD22 ``0x00``) is a
  loaded order with its amount; every card-service or SMS trade acknowledged (``11``) is in the
  trade journal under its serial, with its card and amount; every order the order API
  acknowledged exists once under its ``biz_serial_no`` with its amount;
- nothing is duplicated: every trade of a chaos terminal was applied under exactly one request
  id (trades == remembered first answers), no order is credited twice, each biz_serial_no
  names one order;
- mobile payment: every acknowledged card recharge and bill payment (JSON API or STK) has its stored
  reply; the cards redeemed and bills paid of each account are exactly the acknowledged ones;
- the SIM wallet: every acknowledged load posted and every acknowledged purchase cleared, exactly once, each
  chip equal to its ledger shadow ``W``, no load left *loading*;
- the bank: ``rechargectl audit`` passes (every account equals its transfers, each ledger sums
  to zero); each virtual card's chip equals its ledger balance; each card-service card's ledger
  balance equals the sum of what its client was acknowledged; no order left *loading*.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from recharge.ledger.audit import audit
from recharge.orders import model


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Journals:
    acks: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)

    def of(self, channel: str) -> list[dict[str, Any]]:
        return [a for a in self.acks if a["ch"] == channel]


def _check(name: str, problems: list[str], total: int) -> Check:
    if problems:
        return Check(name, False, f"{len(problems)} of {total}: " + "; ".join(problems[:5]))
    return Check(name, True, f"{total} checked")


async def dd_checks(conn: asyncpg.Connection, j: Journals) -> list[Check]:
    acks = j.of("dd")
    rows = {r["order_no"]: r for r in await conn.fetch(
        "SELECT order_no, state, loading, amount_cents, card_no FROM orders WHERE order_no = ANY($1)",
        [a["order"] for a in acks])}
    lost = [a["order"] for a in acks
            if (r := rows.get(a["order"])) is None or r["state"] not in model.DONE
            or r["amount_cents"] != a["amount"] or r["card_no"] != a["card"]]
    chips = {card: balance for end in j.ends for card, balance in end.get("chips", {}).items()}
    ledger = {r["card_no"]: r["balance"] for r in await conn.fetch(
        "SELECT card_no, credits_posted - debits_posted AS balance FROM accounts"
        " WHERE kind = 'card_purse' AND card_no = ANY($1)", list(chips))}
    acked: dict[str, int] = defaultdict(int)
    for a in acks:
        acked[a["card"]] += a["amount"]
    chip_vs_ledger = [f"{c}: chip {b}, ledger {ledger.get(c, 0)}, acknowledged {acked[c]}"
                      for c, b in chips.items() if not b == ledger.get(c, 0) == acked[c]]
    credited_twice = await conn.fetch(
        "SELECT t.reference AS order_no FROM transfers t JOIN accounts a ON a.id = t.credit_account_id"
        " WHERE a.kind = 'card_purse' AND a.card_no = ANY($1) AND t.kind IN ('post', 'single')"
        " GROUP BY t.reference HAVING count(*) > 1", list(chips))
    loading = await conn.fetchval("SELECT count(*) FROM orders WHERE loading")
    pending = [o for end in j.ends for o in end.get("pending", [])]
    return [
        _check("dd: no acknowledged load lost", lost, len(acks)),
        _check("dd: each chip equals its ledger balance and its acknowledged loads", chip_vs_ledger, len(chips)),
        _check("dd: no order credited twice", [r["order_no"] for r in credited_twice], len(rows)),
        _check("dd: no order left loading, no outcome left unknown",
               [f"{loading} loading"] * bool(loading) + pending, len(rows)),
    ]


async def trade_checks(conn: asyncpg.Connection, j: Journals, channel: str, merchant_code: str,
                       terminals: list[str], cards: list[str]) -> list[Check]:
    acks = j.of(channel)
    trades = {(r["stance"]): r for r in await conn.fetch(
        "SELECT t.stance, t.card_no, t.amount_cents, t.kind, t.terminal_code FROM kkt_trades t"
        " JOIN merchants m ON m.id = t.merchant_id WHERE m.code = $1 AND t.terminal_code = ANY($2)"
        " AND t.kind <> 'balance_query'", merchant_code, terminals)}
    lost = [a["key"] for a in acks
            if (t := trades.get(a["stance"])) is None or t["card_no"] != a["card"] or t["amount_cents"] != a["amount"]
            or t["kind"] != a["kind"]]
    answered = await conn.fetchval(
        "SELECT count(*) FROM kkt_requests WHERE terminal_code = ANY($1) AND req_id LIKE 'chaos-%'"
        " AND reply::text LIKE '%\"11\"%'", terminals)
    chaos_trades = sum(1 for t in trades.values() if t["card_no"] in set(cards))
    expected: dict[str, int] = defaultdict(int)
    for a in acks:
        expected[a["card"]] += a["effect"]
    balances = {r["card_no"]: r["balance"] for r in await conn.fetch(
        "SELECT card_no, credits_posted - debits_posted AS balance FROM accounts"
        " WHERE kind = 'card_purse' AND card_no = ANY($1)", cards)}
    off = [f"{c}: ledger {balances.get(c, 0)}, acknowledged {expected[c]}" for c in cards
           if balances.get(c, 0) != expected[c]]
    return [
        _check(f"{channel}: no acknowledged trade lost", lost, len(acks)),
        _check(f"{channel}: every trade applied under exactly one request id",
               [f"{chaos_trades} trades, {answered} successful request ids"] * (chaos_trades != answered),
               chaos_trades),
        _check(f"{channel}: each card's ledger balance equals its acknowledged trades", off, len(cards)),
    ]


async def order_checks(conn: asyncpg.Connection, j: Journals) -> list[Check]:
    acks = j.of("order")
    rows = await conn.fetch(
        "SELECT biz_serial_no, order_no, amount_cents FROM orders WHERE biz_serial_no = ANY($1)",
        [a["serial"] for a in acks])
    by_serial: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_serial[r["biz_serial_no"]].append(r)
    lost = [a["serial"] for a in acks
            if len(found := by_serial.get(a["serial"], [])) != 1 or found[0]["order_no"] != a["order"]
            or found[0]["amount_cents"] != a["amount"]]
    return [_check("order api: every acknowledged order exists once, as acknowledged", lost, len(acks))]


async def mpay_checks(conn: asyncpg.Connection, j: Journals, account_ids: list[int]) -> list[Check]:
    """Mobile payment (JSON API and STK): every acknowledged operation's reply is stored under its key (its
    effects committed with it); each account's redeemed cards and bill payments are exactly its acknowledged
    ones; its ledger balance (cash + card bucket, nothing pending) equals what it was acknowledged."""
    acks = j.of("mpay")
    stored = {(r["principal"], r["request_id"]) for r in await conn.fetch(
        "SELECT principal, request_id FROM mpay_request_replies WHERE principal = ANY($1)"
        " AND convert_from(reply, 'UTF8')::jsonb->>'code' = '0000'", [f"acct:{a}" for a in account_ids])}
    stored |= {(r["sender"], str(r["seq"])) for r in await conn.fetch(
        "SELECT sender, seq FROM wallet_seq_replies WHERE sender LIKE 'stk:%'"
        " AND convert_from(reply, 'UTF8')::jsonb->>'code' = '0000'")}
    stored |= {("mo:" + r["msisdn"], r["message_id"]) for r in await conn.fetch(
        "SELECT msisdn, message_id FROM mpay_mo_replies WHERE reply LIKE '充值成功!%' OR reply LIKE '缴费成功!%'")}
    lost = [f"{a['via']} {a['kind']} {a.get('request_id') or a.get('seq')}" for a in acks
            if (a.get("principal") or a.get("sender"), str(a.get("request_id") or a.get("seq"))) not in stored]
    off, twice = [], []
    for account_id in account_ids:
        mine = [a for a in acks if a["account"] == account_id]
        cards = {r["serial"]: r["face_cents"] for r in await conn.fetch(
            "SELECT serial, face_cents FROM mpay_prepaid_cards WHERE used_by = $1", account_id)}
        acked_cards = {a["serial"]: a["amount"] for a in mine if a["kind"] == "card_recharge"}
        bills = sorted(r["amount"] for r in await conn.fetch(
            "SELECT amount FROM mpay_bill_payments WHERE account_id = $1", account_id))
        acked_bills = sorted(a["amount"] for a in mine if a["kind"] == "hf")
        if cards != acked_cards or bills != acked_bills:
            twice.append(f"account {account_id}: {len(cards)} cards redeemed, {len(acked_cards)} acknowledged;"
                         f" {len(bills)} bills paid ({sum(bills)}), {len(acked_bills)} acknowledged ({sum(acked_bills)})")
        row = await conn.fetchrow(
            "SELECT sum(a.credits_posted - a.debits_posted) AS posted, sum(a.debits_pending) AS pending"
            " FROM mpay_accounts m JOIN accounts a ON a.id IN (m.cash_account, m.card_account) WHERE m.id = $1",
            account_id)
        expected = sum(acked_cards.values()) - sum(acked_bills)
        if (row["posted"], row["pending"]) != (expected, 0):
            off.append(f"account {account_id}: ledger {row['posted']} (pending {row['pending']}), acknowledged {expected}")
    return [
        _check("mpay: no acknowledged operation lost (its reply stored with its effects)", lost, len(acks)),
        _check("mpay: cards redeemed and bills paid are exactly the acknowledged ones", twice, len(account_ids)),
        _check("mpay: each account's ledger balance equals its acknowledged operations", off, len(account_ids)),
    ]


async def wallet_checks(conn: asyncpg.Connection, j: Journals, account_ids: list[int]) -> list[Check]:
    """The SIM wallet: every acknowledged load posted (and no other load of these accounts posted), every
    acknowledged purchase cleared once (and nothing else cleared at these terminals), each chip equal to its
    ledger shadow ``W`` and to its acknowledged loads less its acknowledged purchases, no load left loading."""
    loads_acked, bought = j.of("wallet_load"), j.of("wallet_purchase")
    rows = {r["load_id"]: r for r in await conn.fetch(
        "SELECT load_id, account_id, state, amount, card_no FROM wallet_loads WHERE account_id = ANY($1)",
        account_ids)}
    lost = [a["load_id"] for a in loads_acked if (r := rows.get(a["load_id"])) is None or r["state"] != "posted"
            or r["amount"] != a["amount"] or r["account_id"] != a["account"] or r["card_no"] != a["card"]]
    acked_ids = [a["load_id"] for a in loads_acked]
    posted = {k for k, r in rows.items() if r["state"] == "posted"}
    unexplained = sorted(posted - set(acked_ids)) + sorted({i for i in acked_ids if acked_ids.count(i) > 1})
    cleared = sorted((r["card_no"], r["offline_serial"], r["amount"]) for r in await conn.fetch(
        "SELECT card_no, offline_serial, amount FROM wallet_purchases WHERE terminal_id = ANY($1)",
        sorted({a["terminal"] for a in bought} | {c.get("shop", "") for c in j.ends if "sims" in c})))
    expected = sorted((a["card"], a["serial"], a["amount"]) for a in bought)
    purchases_off = [] if cleared == expected else [
        f"{len(cleared)} cleared, {len(expected)} acknowledged: cleared only {sorted(set(cleared) - set(expected))[:3]},"
        f" acknowledged only {sorted(set(expected) - set(cleared))[:3]}"]
    chips = {card: v for end in j.ends for card, v in end.get("sims", {}).items()}
    shadows = {r["card_no"]: r["balance"] for r in await conn.fetch(
        "SELECT card_no, credits_posted - debits_posted AS balance FROM accounts WHERE kind = 'mpay'"
        " AND card_no = ANY($1)", [f"W/{v['account']}" for v in chips.values()])}
    net: dict[str, int] = defaultdict(int)
    for a in loads_acked:
        net[a["card"]] += a["amount"]
    for a in bought:
        net[a["card"]] -= a["amount"]
    shadow_of = {card: shadows.get(f"W/{v['account']}", 0) for card, v in chips.items()}  # no load yet: none
    chip_off = [f"{card}: chip {v['chip']}, shadow {shadow_of[card]}, acknowledged {net[card]}"
                for card, v in chips.items() if not v["chip"] == shadow_of[card] == net[card]]
    loading = await conn.fetchval("SELECT count(*) FROM wallet_loads WHERE account_id = ANY($1) AND state = 'loading'",
                                  account_ids)
    return [
        _check("wallet: no acknowledged load lost", lost, len(loads_acked)),
        _check("wallet: every posted load acknowledged, none twice", unexplained, len(posted)),
        _check("wallet: every acknowledged purchase cleared exactly once, nothing else", purchases_off, len(bought)),
        _check("wallet: each SIM's chip equals its ledger shadow W and its acknowledged loads less purchases",
               chip_off + ["no SIM reported"] * (not chips), len(chips)),
        _check("wallet: no load left loading", [f"{loading} loading"] * bool(loading), len(rows)),
    ]


def definite_answers(j: Journals) -> Check:
    """Every operation ended with a definite answer: no load left unresolved (DD22 0xA4), no trade or
    order given up after retrying until the end of the recovery time."""
    open_ended = [f"{n['client']}: {n['type']} {n.get('order') or n.get('key') or n.get('serial')}"
                  for n in j.notes if n["type"] in ("unresolved", "gave_up")]
    return _check("every operation got a definite answer", open_ended, len(j.acks) + len(open_ended))


async def bank_checks(conn: asyncpg.Connection) -> list[Check]:
    report = await audit(conn)
    return [Check("audit: every account equals its transfers, every ledger sums to zero", report.ok,
                  "balanced" if report.ok else report.render()[:500])]
