"""The SIM wallet's loads (SPEC 7.3): creation with its checks, the waiting loads, and the wallet's ``Book`` of
the load engine (recharge/loads/engine.py) — the batch functions its group-commit lanes run.

Every load is a **pending** ``C/<acct> → W/<acct>`` transfer (``wload:<id>:pay``) made when the load is created,
without a timeout: the money stays in cash, frozen, until the card proves the load (posted: ``wload:<id>:post``)
or the load is voided (website cancel, wallet cancellation, 销号: ``void_waiting``, never a load *loading*).
Paths: ``air`` (STK 空中充值, driven at once), ``pos`` (hall POS转存, at once), ``transfer`` (website 网络侧转存),
``bank`` (online banking), ``swap`` (7.6) — the last three wait for the next STK or hall POS contact.

``create_load`` runs 7.3's creation checks, in order, in the caller's transaction with the account row locked;
``queue_waiting_load`` is its form for other rooms (mpay's bank recharge into the wallet, the website).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import asyncpg

from recharge.ledger.group_commit import Group
from recharge.loads.engine import Book, Marking, Proven
from recharge.loads.lanes import in_rounds
from recharge.mpay import accounts, credentials, matrix, outbox, postings
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.keyring import MpayKeys
from recharge.mpay.text import day_start, today, yuan

PATHS = ("air", "pos", "transfer", "bank", "swap")
WAITING, LOADING, POSTED, VOIDED = "waiting", "loading", "posted", "voided"
LOAD_CODE = "wallet_load"
LOADED_TEXT = "钱包充值成功,充值{amt}元,钱包余额{bal}元。"
COLUMNS = ("load_id, account_id, path, amount, state, step, request_key, pay_transfer_id, driver, terminal_id,"
           " card_no, balance_before, balance_after, online_serial, load_date, load_time, load_random, created_at")


@dataclass(frozen=True, slots=True)
class Load:
    load_id: str
    account_id: int
    path: str
    amount: int
    state: str
    step: str
    request_key: str | None
    pay_transfer_id: str
    driver: str | None
    terminal_id: str | None
    card_no: str | None
    balance_before: int | None
    balance_after: int | None
    online_serial: int | None
    load_date: str | None
    load_time: str | None
    load_random: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> Load:
        return cls(**{name: row[name] for name in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class LoadRefused:
    """A lane's refusal of a load step (nothing written): the SPEC 6.10 code and the load as it is."""

    code: str
    load: Load | None = None


def pay_id(load_id: str) -> str:
    return f"wload:{load_id}:pay"


async def get(conn: asyncpg.Connection, load_id: str, *, lock: bool = False) -> Load | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM wallet_loads WHERE load_id = $1{' FOR UPDATE' if lock else ''}",
                              load_id)
    return Load.of(row) if row is not None else None


async def waiting(conn: asyncpg.Connection, account_id: int) -> list[Load]:
    """The account's waiting loads, oldest first."""
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM wallet_loads WHERE account_id = $1 AND state = 'waiting'"
                            " ORDER BY created_at, load_id", account_id)
    return [Load.of(r) for r in rows]


async def any_loading(conn: asyncpg.Connection, account_id: int) -> bool:
    return await conn.fetchval("SELECT EXISTS (SELECT 1 FROM wallet_loads WHERE account_id = $1"
                               " AND state = 'loading')", account_id)


# --- creation (SPEC 7.3) ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewLoad:
    """What to create: ``pay_password`` for the paths that ask for it (air, website), else None."""

    path: str
    amount: int
    pay_password: str | None = None
    request_key: str | None = None


async def wallet_of(conn: asyncpg.Connection, account_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM wallets WHERE account_id = $1", account_id)


def check_wallet(wallet: asyncpg.Record | None) -> asyncpg.Record:
    """``5001`` without an open or paused wallet, ``5002`` paused."""
    if wallet is None or wallet["state"] not in ("open", "paused"):
        raise Refused("5001")
    if wallet["state"] == "paused":
        raise Refused("5002")
    return wallet


async def create_load(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, new: NewLoad,
                      now: dt.datetime, *, channel: str) -> Load:
    """7.3's creation checks in order, then the pending ``C → W`` and the load, waiting. ``account`` is the
    locked row; ``Refused`` with the first failing check's code (only password counters were written)."""
    if new.request_key is not None:
        found = await conn.fetchrow(f"SELECT {COLUMNS} FROM wallet_loads WHERE request_key = $1", new.request_key)
        if found is not None:
            assert found["account_id"] == account["id"], f"request key {new.request_key!r} is another account's load"
            return Load.of(found)
    check_wallet(await wallet_of(conn, account["id"]))
    matrix.require(account, "recharge", channel)
    if await any_loading(conn, account["id"]):
        raise Refused("5006")
    s = env.settings
    low, high = {"air": (s.wallet_air_min_cents, s.wallet_air_max_cents),
                 "swap": (1, s.wallet_cap_cents)}.get(new.path, (s.wallet_load_min_cents, s.wallet_load_max_cents))
    if not low <= new.amount <= high:
        raise Refused("4001")
    if new.pay_password is not None:
        credentials.ensure_usable(account, "pay", now)
    if new.path == "air":
        await _check_air_day(conn, env, account["id"], new.amount, now)
    await _check_cap(conn, env, account["id"], new.amount)
    cash = (await postings.buckets(conn, account["cash_account"]))[account["cash_account"]]
    if cash.available < new.amount:
        raise Refused("4002")
    if new.pay_password is not None:
        await credentials.check(conn, env.hasher, env.policy, account, "pay", new.pay_password, now)
    return await _insert(conn, account, new)


async def _check_air_day(conn: asyncpg.Connection, env: Env, account_id: int, amount: int, now: dt.datetime) -> None:
    """≤ 5 air recharges **and** ≤ 500.00 in total a Shanghai day, counted at creation (voided ones too)."""
    row = await conn.fetchrow("SELECT count(*) AS n, coalesce(sum(amount), 0) AS total FROM wallet_loads"
                              " WHERE account_id = $1 AND path = 'air' AND created_at >= $2",
                              account_id, day_start(today(now)))
    s = env.settings
    if row["n"] + 1 > s.wallet_air_day_count or row["total"] + amount > s.wallet_air_day_cents:
        raise Refused("5004")


async def _check_cap(conn: asyncpg.Connection, env: Env, account_id: int, amount: int) -> None:
    """The shadow W (posted) + the loads not yet posted (W's pending credits) + the amount ≤ the cap."""
    shadow = await postings.account_id(conn, f"W/{account_id}")
    row = await conn.fetchrow("SELECT credits_posted - debits_posted AS posted, credits_pending FROM accounts"
                              " WHERE id = $1", shadow)
    if row["posted"] + row["credits_pending"] + amount > env.settings.wallet_cap_cents:
        raise Refused("5003")


async def _insert(conn: asyncpg.Connection, account: asyncpg.Record, new: NewLoad) -> Load:
    load_id = f"L{await conn.fetchval('SELECT nextval($1::regclass)', 'wallet_load_seq')}"
    cash, shadow = account["cash_account"], await postings.account_id(conn, f"W/{account['id']}")
    await postings.must(conn, [postings.Move(pay_id(load_id), cash, shadow, new.amount, LOAD_CODE, load_id,
                                             pending=True)])
    row = await conn.fetchrow(
        "INSERT INTO wallet_loads (load_id, account_id, path, amount, request_key, pay_transfer_id)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}",
        load_id, account["id"], new.path, new.amount, new.request_key, pay_id(load_id))
    return Load.of(row)


async def queue_waiting_load(conn: asyncpg.Connection, env: Env, account_id: int, amount: int, *, path: str,
                             request_key: str | None = None, pay_password: str | None = None,
                             channel: str = "web", now: dt.datetime | None = None) -> Load:
    """A load that waits for the next STK or hall POS contact (网络侧转存 ``transfer``, online banking ``bank``,
    ``swap``): the creation checks of 7.3, the pending ``C → W``, nothing driven. Idempotent by
    ``request_key`` (a repeat returns the first load). Runs in the caller's transaction; locks the account."""
    assert path in ("transfer", "bank", "swap"), path
    account = await accounts.by_id(conn, account_id, lock=True)
    if account is None:
        raise Refused("2003")
    return await create_load(conn, env, account, NewLoad(path, amount, pay_password, request_key),
                             now or dt.datetime.now(dt.UTC), channel=channel)


async def earmark(conn: asyncpg.Connection, account_id: int, amount: int, *, path: str,
                  request_key: str) -> Load:
    """A waiting load without 7.3's creation checks, for money the caller's transaction has just put in cash
    for it (7.6 ①: the old card's bought-out balance, earmarked for the new card): the pending ``C → W`` and
    the load, ``swap`` path. Idempotent by ``request_key``."""
    found = await conn.fetchrow(f"SELECT {COLUMNS} FROM wallet_loads WHERE request_key = $1", request_key)
    if found is not None:
        assert found["account_id"] == account_id, f"request key {request_key!r} is another account's load"
        return Load.of(found)
    account = await accounts.by_id(conn, account_id, lock=True)
    assert account is not None and amount > 0
    return await _insert(conn, account, NewLoad(path, amount, None, request_key))


async def void_all_waiting(conn: asyncpg.Connection, account_id: int) -> int:
    """``void_waiting`` as a hook of the wallet's closing (wallet cancellation, 销号): how many were voided."""
    return len(await void_waiting(conn, account_id, "void"))


async def void_load(conn: asyncpg.Connection, load: Load, reason: str) -> bool:
    """Void one waiting load (the website's cancel): False when it is no longer waiting."""
    voided = await conn.fetchval("UPDATE wallet_loads SET state = 'voided', step = 'none', voided_at = now(),"
                                 " updated_at = now() WHERE load_id = $1 AND state = 'waiting' RETURNING load_id",
                                 load.load_id)
    if voided is None:
        return False
    await postings.must_settle(conn, [postings.Settle(f"{pay_id(load.load_id)}:{reason}", pay_id(load.load_id),
                                                      post=False)])
    return True


async def void_waiting(conn: asyncpg.Connection, account_id: int, reason: str) -> list[str]:
    """Void the account's waiting loads (website cancel, wallet cancellation, 销号): the money stays in cash.
    A load *loading* is never voided (only the card's proof or customer service settles it)."""
    rows = await conn.fetch("UPDATE wallet_loads SET state = 'voided', step = 'none', voided_at = now(),"
                            " updated_at = now() WHERE account_id = $1 AND state = 'waiting' RETURNING load_id",
                            account_id)
    ids = sorted(r["load_id"] for r in rows)
    await postings.must_settle(conn, [postings.Settle(f"{pay_id(i)}:{reason}", pay_id(i), post=False) for i in ids])
    return ids


async def resolve(conn: asyncpg.Connection, keys: MpayKeys, load_id: str, posted: bool) -> Load | LoadRefused:
    """Customer service settles a load left *loading* (the card's log decided it): posted (balance after =
    before + amount, the SMS) or back to waiting; ``4011`` for a load that is not loading. The same batch
    functions the lanes run, in the caller's transaction."""
    load = await get(conn, load_id, lock=True)
    if load is None or load.state != LOADING or load.balance_before is None:
        return LoadRefused("4011", load)
    if posted:
        answers = await mark_posted(conn, keys, [Proven(load_id, load.balance_before + load.amount)])
    else:
        answers = await release(conn, [load_id])
    return answers[load_id]


# --- the wallet's book of the load engine: the batch functions of its lanes ------------------------------------


def _load_of(item: Marking | Proven) -> str:
    return item.load_id


def _itself(load_id: str) -> str:
    return load_id


def _answers(rows: list[asyncpg.Record], wanted: list[str], code: str) -> dict[str, Load | LoadRefused]:
    """Each wanted load: changed (its row came back as ``changed``), else refused with ``code``."""
    found = {r["load_id"]: (r["changed"], Load.of(r)) for r in rows}
    answers: dict[str, Load | LoadRefused] = {}
    for load_id in wanted:
        changed, load = found.get(load_id, (False, None))
        answers[load_id] = load if changed and load is not None else LoadRefused(code, load)
    return answers


_QUALIFIED = ", ".join(f"wallet_loads.{c.strip()}" for c in COLUMNS.split(","))


def _changing(update: str) -> str:
    """Lock the loads ($1), apply ``update`` (ends in a WHERE clause) and answer every one found."""
    return (f"WITH o AS MATERIALIZED (SELECT {COLUMNS} FROM wallet_loads WHERE load_id = ANY($1::text[])"
            "   ORDER BY load_id FOR UPDATE),"
            f" u AS ({update} AND wallet_loads.load_id IN (SELECT load_id FROM o) RETURNING {_QUALIFIED})"
            f" SELECT true AS changed, {COLUMNS} FROM u"
            f" UNION ALL SELECT false, {COLUMNS} FROM o WHERE load_id NOT IN (SELECT load_id FROM u)")


_MARK_LOADING = _changing(
    "UPDATE wallet_loads SET state = 'loading', step = 'credit', loading_since = now(), updated_at = now(),"
    " card_no = v.card_no, terminal_id = v.terminal_id, balance_before = v.balance_before,"
    " online_serial = v.serial, load_date = v.load_date, load_time = v.load_time, load_random = v.load_random"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::integer[], $6::text[], $7::text[],"
    "   $8::text[]) AS v(load_id, card_no, terminal_id, balance_before, serial, load_date, load_time, load_random)"
    " WHERE wallet_loads.load_id = v.load_id AND wallet_loads.state = 'waiting' AND wallet_loads.step = 'initialize'")


async def mark_loading(conn: asyncpg.Connection, items: list[Marking]) -> dict[str, Load | LoadRefused]:
    """The MAC2 is about to leave: waiting loads whose INITIALIZE was sent become *loading* (one statement);
    a load that is not (driven elsewhere, voided, loading already) is refused ``5006``."""
    ls = [m.load for m in items]
    rows = await conn.fetch(_MARK_LOADING, [m.load_id for m in items], [x.card_no for x in ls],
                            [x.terminal_id.rjust(12, "0") for x in ls], [x.balance_before for x in ls],
                            [x.serial for x in ls], [x.load_date for x in ls], [x.load_time for x in ls],
                            [x.load_random for x in ls])
    return _answers(rows, [m.load_id for m in items], "5006")


_MARK_POSTED = _changing(
    "UPDATE wallet_loads SET state = 'posted', step = 'none', loading_since = NULL, posted_at = now(),"
    " updated_at = now(), balance_after = v.balance_after"
    " FROM unnest($1::text[], $2::bigint[]) AS v(load_id, balance_after)"
    " WHERE wallet_loads.load_id = v.load_id AND wallet_loads.state = 'loading'")


async def mark_posted(conn: asyncpg.Connection, keys: MpayKeys, items: list[Proven]) -> dict[str, Load | LoadRefused]:
    """The cards proved their loads: the loads *loading* posted (one statement), then their pending ``C → W``
    posted (one statement), the holder told by SMS. A load posted already is answered as it is."""
    ids = [p.load_id for p in items]
    rows = await conn.fetch(_MARK_POSTED, ids, [p.balance_after for p in items])
    changed = [r for r in rows if r["changed"]]
    await postings.must_settle(conn, [postings.Settle(f"wload:{r['load_id']}:post", r["pay_transfer_id"], post=True)
                                      for r in changed])
    answers = _answers(rows, ids, "4011")
    for load_id, answer in list(answers.items()):
        if isinstance(answer, LoadRefused) and answer.load is not None and answer.load.state == POSTED:
            answers[load_id] = answer.load
    holders = {r["id"]: r for r in await conn.fetch("SELECT * FROM mpay_accounts WHERE id = ANY($1::bigint[])",
                                                    [r["account_id"] for r in changed])}
    for r in changed:
        await outbox.notify(conn, keys, holders[r["account_id"]],
                            LOADED_TEXT.format(amt=yuan(r["amount"]), bal=yuan(r["balance_after"])))
    return answers


_RELEASE = _changing(
    "UPDATE wallet_loads SET state = 'waiting', loading_since = NULL, updated_at = now()"
    " WHERE wallet_loads.state = 'loading'")


async def release(conn: asyncpg.Connection, load_ids: list[str]) -> dict[str, Load | LoadRefused]:
    """The cards prove they were not credited: the loads wait again (their pending ``C → W`` stays). Their
    ``step`` (``credit`` or ``prove``) and ``driver`` stay as they were: the round whose reply released the
    load, sent again by its driver, is answered as the first time (recharge/wallet/driving.py); the next start
    overwrites both."""
    return _answers(await conn.fetch(_RELEASE, load_ids), load_ids, "4011")


@functools.cache
def book(keys: MpayKeys) -> Book[Load | LoadRefused]:
    """The wallet's groups of the shared load lanes (one set per process and key set)."""

    async def loading(conn: asyncpg.Connection, items: list[Marking]) -> list[Load | LoadRefused]:
        return await in_rounds(conn, mark_loading, items, _load_of)

    async def post(conn: asyncpg.Connection, items: list[Proven]) -> list[Load | LoadRefused]:
        return await in_rounds(conn, lambda c, batch: mark_posted(c, keys, batch), items, _load_of)

    async def back(conn: asyncpg.Connection, items: list[str]) -> list[Load | LoadRefused]:
        return await in_rounds(conn, release, items, _itself)

    return Book(Group("wallet_loading", loading), Group("wallet_post", post), Group("wallet_release", back))
