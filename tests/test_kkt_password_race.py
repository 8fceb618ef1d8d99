"""Issue 14 item 1: parallel password guesses cannot get past the five-failure lockout.

The attack: dozens of guesses at one card sent at once, one of them the right password.
Each test runs it over REST (a balance query, which reads the card without its row lock),
SOAP (the same query) and SMS (an operator's consume). What must hold: the guesses of one
card take effect one at a time, so the right one succeeds only if fewer than five failures
came before it; every wrong guess that was checked is counted; and once the card is locked
nothing is checked (``recharge_kkt_password_checks_total{outcome}`` says which happened).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from http_api.context import KKT_LANE_KEY
from recharge.ledger.group_commit import GroupCommit
from tests.kkt_world import PASSWORD, first_record
from tests.sms_world import SmsWorld, make_sms_world
from tests.test_kkt_soap import SOAP11_REQUEST, php_args, post, returned

CHANNELS = ("rest", "soap", "sms")
WRONG = [f"{n:06d}" for n in range(200000, 200040)]  # never the world's password (111111)
Guess = Callable[[str, int], Awaitable[str]]  # (password, nth guess) -> the two-digit answer


@pytest.fixture
async def w(platform: Any, pool: Any, test_keys: Any) -> SmsWorld:
    return await make_sms_world(pool, test_keys[0], platform.http_port)


def guesser(w: SmsWorld, channel: str, card: str) -> Guess:
    """One password guess at ``card`` over ``channel``, answering its return code."""
    world = w.world

    async def rest(password: str, n: int) -> str:
        return (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, CARDPWD=password))["PayInForm"]

    async def soap(password: str, n: int) -> str:
        args = php_args([world.license_key, "0011", "0", card, password, world.terminal, None, None, None],
                        named=True)
        status, _, body = await post(world, SOAP11_REQUEST.format(args=args))
        assert status == 200, body
        return returned(body)[1]["PayInForm"]

    async def sms(password: str, n: int) -> str:
        reply = await w.send(f"CZXF*{card}*1.{n:02d}*{password}")  # amounts differ: no duplicate (12)
        return "11" if reply.startswith("交易成功") else reply.split("(")[1][:2]

    return {"rest": rest, "soap": soap, "sms": sms}[channel]


def checks_so_far() -> dict[str, float]:
    return {outcome: REGISTRY.get_sample_value("recharge_kkt_password_checks_total", {"outcome": outcome}) or 0.0
            for outcome in ("right", "wrong", "locked")}


def checks_since(before: dict[str, float]) -> dict[str, int]:
    return {outcome: int(value - before[outcome]) for outcome, value in checks_so_far().items()}


async def card_with_failures(w: SmsWorld, failures: int) -> str:
    card = await w.card(balance=10_000)
    async with w.pool.acquire() as conn:
        await conn.execute("UPDATE cards SET password_failures = $2 WHERE card_no = $1", card, failures)
    return card


async def lock_state(w: SmsWorld, card: str) -> tuple[int, bool]:
    """(password_failures, locked for about a day)."""
    async with w.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT password_failures, locked_until FROM cards WHERE card_no = $1", card)
    locked = row["locked_until"] is not None and row["locked_until"] > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)
    return row["password_failures"], locked


def trade_lane(platform: Any) -> GroupCommit | None:
    """The platform's group commit of card trades (``http_api.app``), if it has one."""
    lane: GroupCommit | None = platform.http.runner.app[KKT_LANE_KEY]
    return lane


async def blocked(pool: asyncpg.Pool, lane: GroupCommit | None, count: int, timeout_s: float = 10.0) -> None:
    """Wait until ``count`` guesses wait for the card (the test holds it): a guess waits in a
    session of this database blocked by a lock, or in the trade lane — whose batch waits for the
    lock on one session, the guesses after the first in line behind it."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        async with pool.acquire() as conn:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND cardinality(pg_blocking_pids(pid)) > 0"
            )
        in_lane = lane.in_flight if lane is not None else 0
        arrived = waiting + in_lane - min(waiting, 1 if in_lane else 0)
        if waiting and arrived >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{arrived} of {count} guesses waited for the lock"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("channel", CHANNELS)
async def test_the_right_password_is_refused_when_the_fifth_failure_committed_first(
    w: SmsWorld, channel: str, audited: None, platform: Any
) -> None:
    """A deterministic interleaving of the race: the fifth failure's transaction holds the
    card while the right password and three wrong ones arrive; it commits the lock first."""
    card = await card_with_failures(w, 4)
    guess = guesser(w, channel, card)
    before = checks_so_far()
    async with w.pool.acquire() as fifth:
        async with fifth.transaction():
            await fifth.execute("UPDATE cards SET password_failures = 0, locked_until = now() + interval '1 day'"
                                " WHERE card_no = $1", card)
            guesses = [asyncio.ensure_future(guess(password, n))
                       for n, password in enumerate([PASSWORD, *WRONG[:3]])]
            await blocked(w.pool, trade_lane(platform), len(guesses))
        answers = await asyncio.gather(*guesses)
    assert answers == ["07"] * 4
    assert await lock_state(w, card) == (0, True)
    assert checks_since(before) == {"right": 0, "wrong": 0, "locked": 4}


@pytest.mark.parametrize("channel", CHANNELS)
async def test_parallel_guesses_never_get_the_right_password_past_the_fifth_failure(
    w: SmsWorld, channel: str, audited: None
) -> None:
    card = await card_with_failures(w, 4)  # the next wrong guess locks the card
    guess = guesser(w, channel, card)
    wrong = WRONG[:12]
    before = checks_so_far()
    right, *answers = await asyncio.gather(guess(PASSWORD, 0), *(guess(p, n + 1) for n, p in enumerate(wrong)))
    checked = checks_since(before)
    assert answers == ["07"] * len(wrong)
    if right == "11":  # it came first: then five more failures lock the card, the rest are not checked
        assert checked == {"right": 1, "wrong": 5, "locked": len(wrong) - 5}
    else:  # a wrong one came first and locked the card: nothing else was checked
        assert right == "07"
        assert checked == {"right": 0, "wrong": 1, "locked": len(wrong)}
    assert await lock_state(w, card) == (0, True)


@pytest.mark.parametrize("channel", CHANNELS)
async def test_parallel_wrong_guesses_are_each_counted(w: SmsWorld, channel: str) -> None:
    card = await card_with_failures(w, 0)
    guess = guesser(w, channel, card)
    before = checks_so_far()
    assert await asyncio.gather(*(guess(p, n) for n, p in enumerate(WRONG[:4]))) == ["07"] * 4
    assert await lock_state(w, card) == (4, False)
    assert await guess(WRONG[4], 4) == "07"
    assert await lock_state(w, card) == (0, True)
    assert await guess(PASSWORD, 5) == "07"
    assert checks_since(before) == {"right": 0, "wrong": 5, "locked": 1}


async def test_a_right_password_on_a_clean_card_counts_as_right(
    w: SmsWorld
) -> None:
    card = await card_with_failures(w, 0)
    before = checks_so_far()
    rec = first_record((await w.world.get(
        "cTRequest", LICENSEKEY=w.world.license_key, POSCODE=w.world.terminal, CARDPWD=PASSWORD,
        TRADETYPE="0011", TRADEMODE="0", CARDNO=card))[1])
    assert rec["PayInForm"] == "11" and rec["Integral"] == "10000"
    assert checks_since(before) == {"right": 1, "wrong": 0, "locked": 0}
