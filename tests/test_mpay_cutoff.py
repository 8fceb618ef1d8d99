"""The operator calendar and the 17:00 cut-off (SPEC 6 preamble, 6.6): which working day's batch
takes a withdrawal or a merchant's money, the payout export and the merchant payout cut at that
batch's cut-off, and the unexported-withdrawal deadline two working days later."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import asyncpg
import pytest

from recharge import metrics
from recharge.mpay import calendar, dispatcher, postings, withdrawals
from recharge.mpay.text import SHANGHAI
from tests.mpay_world import Api, MpayWorld

pytestmark = pytest.mark.usefixtures("audited")
FIVE = dt.time(17, 0)
CARD = {"bank": "ABC", "province": "430000", "city": "430100", "branch": "b", "number": "6228480000002468",
        "holder": "张三"}


def at(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=SHANGHAI)


async def _cli(database_url: str, *argv: str) -> int:
    from app.cli import main

    return await asyncio.to_thread(main, [*argv[:3], "--database-url", database_url, *argv[3:]])


async def _set_days(conn: asyncpg.Connection, **kinds: str) -> None:
    for day, kind in kinds.items():
        await conn.execute("INSERT INTO mpay_calendar (day, kind) VALUES ($1, $2) ON CONFLICT (day) DO UPDATE"
                           " SET kind = $2", dt.date.fromisoformat(day.lstrip("d").replace("_", "-")), kind)


async def test_batch_days_cutoffs_and_deadlines_follow_the_operator_calendar(conn: asyncpg.Connection) -> None:
    # The week of Monday 2031-03-03: Wednesday a holiday, Saturday a working day.
    await _set_days(conn, d2031_03_05="holiday", d2031_03_08="workday")
    assert calendar.cutoff_at(dt.date(2031, 3, 3), FIVE) == at("2031-03-03", "17:00")
    for moment, day in ((at("2031-03-03", "16:59:59"), "2031-03-03"), (at("2031-03-03", "17:00"), "2031-03-04"),
                        (at("2031-03-04", "18:00"), "2031-03-06"), (at("2031-03-07", "17:30"), "2031-03-08"),
                        (at("2031-03-09", "10:00"), "2031-03-10"), (at("2031-03-05", "09:00"), "2031-03-06"),
                        (dt.datetime(2031, 3, 3, 8, 59, tzinfo=dt.UTC), "2031-03-03")):
        assert await calendar.batch_day(conn, moment, FIVE) == dt.date.fromisoformat(day), moment
    for moment, day in ((at("2031-03-03", "16:00"), "2031-02-28"), (at("2031-03-03", "17:00"), "2031-03-03"),
                        (at("2031-03-05", "18:00"), "2031-03-04"), (at("2031-03-09", "12:00"), "2031-03-08")):
        assert await calendar.last_cutoff(conn, moment, FIVE) == dt.date.fromisoformat(day), moment
    assert await calendar.due(conn, at("2031-03-03", "10:00"), FIVE, 2) == at("2031-03-06", "17:00")
    assert await calendar.due(conn, at("2031-03-07", "17:01"), FIVE, 2) == at("2031-03-11", "17:00")
    assert calendar.cutoff_time("16:30") == dt.time(16, 30)
    for bad in ("1700", "17:00:00", "25:00"):
        with pytest.raises(ValueError):
            calendar.cutoff_time(bad)


async def _withdrawing(w: MpayWorld, api: Api) -> tuple[str, str, str]:
    msisdn, initial = await w.opened()
    token = await api.login(msisdn, initial["login"])
    await api.ok("POST", "/me/password/pay", {"old": initial["pay"], "new": "246810"}, token=token)
    await api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": 10_000, "reason": "现金"},
                 token=await api.operator("counter", "HN0001"))
    await api.ok("PUT", "/me/bank-card", dict(CARD, pay_password="246810"), token=token)
    return msisdn, token, "246810"


async def _backdate(w: MpayWorld, table: str, column: str, value: Any, moment: dt.datetime) -> None:
    async with w.pool.acquire() as conn:  # as if it happened then (names from the tests, never from input)
        await conn.execute(f"UPDATE {table} SET created_at = $2 WHERE {column} = $1", value, moment)


async def test_the_payout_export_takes_what_was_submitted_before_the_batchs_cutoff(
        w: MpayWorld, api: Api, database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
        test_keys: Any) -> None:
    monkeypatch.setenv("RECHARGE_KEY_FILE", str(test_keys[1]))
    _, token, pay = await _withdrawing(w, api)
    early, late = [(await api.ok("POST", "/me/withdrawals", {"amount": amount, "pay_password": pay}, token=token))[
        "withdrawal_id"] for amount in (1000, 2000)]
    await _backdate(w, "mpay_withdrawals", "id", early, at("2026-11-02", "16:59:59"))  # before a Monday's cut-off
    export = tmp_path / "payout.csv"
    tomorrow = (dt.datetime.now(SHANGHAI).date() + dt.timedelta(days=1)).isoformat()
    assert await _cli(database_url, "mpay", "payout", "export", str(export), "--day", tomorrow) == 0
    assert not export.exists()  # its cut-off is still to come: no batch
    assert await _cli(database_url, "mpay", "payout", "export", str(export)) == 0  # the latest complete batch
    exported = {line.split(",")[0] for line in export.read_text(encoding="utf-8").splitlines()[1:]}
    assert early in exported and late not in exported
    async with w.pool.acquire() as conn:
        states = dict(await conn.fetch("SELECT id, state FROM mpay_withdrawals WHERE id = ANY($1::text[])",
                                       [early, late]))
    assert states == {early: "exported", late: "submitted"}  # the later one waits for its own batch


async def test_the_merchant_payout_pays_what_came_in_before_the_cutoff(
        w: MpayWorld, api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch, test_keys: Any) -> None:
    monkeypatch.setenv("RECHARGE_KEY_FILE", str(test_keys[1]))
    msisdn, token, pay = await _withdrawing(w, api)
    merchant = await w.merchant("GENERAL")
    for order_no, amount in (("before", 500), ("after", 300)):
        _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/payments", {
            "merchant_order_no": order_no, "msisdn": msisdn, "amount": amount, "subject": "x"})
        await api.ok("POST", f"/payments/{reply['data']['payment_id']}/confirm", {"pay_password": pay}, token=token)
        if order_no == "before":
            await _backdate(w, "transfers", "id", f"mpay:pay:{reply['data']['payment_id']}", at("2026-11-02", "09:00"))
    assert await _cli(database_url, "mpay", "merchant", "payout") == 0
    assert await _cli(database_url, "mpay", "merchant", "payout") == 0  # once a day
    async with w.pool.acquire() as conn:
        mer = await postings.account_id(conn, f"MER/{merchant}")
        assert (await postings.buckets(conn, mer))[mer].available == 300  # the next batch's
        assert await conn.fetchval("SELECT sum(amount) FROM transfers WHERE debit_account_id = $1"
                                   " AND code = 'mpay_merchant_payout'", mer) == 500


async def test_an_unexported_withdrawal_falls_due_two_working_days_after_its_batch_day(
        w: MpayWorld, api: Api) -> None:
    _, token, pay = await _withdrawing(w, api)
    wid = (await api.ok("POST", "/me/withdrawals", {"amount": 1000, "pay_password": pay}, token=token))[
        "withdrawal_id"]
    await _backdate(w, "mpay_withdrawals", "id", wid, at("2016-12-05", "10:00"))  # a Monday, the oldest of all
    async with w.pool.acquire() as conn:
        await _set_days(conn, d2016_12_06="holiday")
        assert await withdrawals.overdue_seconds(conn, w.env, at("2016-12-08", "16:59")) == 0
        assert await withdrawals.overdue_seconds(conn, w.env, at("2016-12-08", "17:01")) == 60  # Wed, Thu
    await dispatcher.upkeep(w.pool, w.env)
    assert metrics.MPAY_WITHDRAWALS_OVERDUE._value.get() > 0
    bad = dataclasses.replace(w.env, settings=w.env.settings.replace(mpay_cutoff="1700"))
    await dispatcher.upkeep(w.pool, bad)  # a bad setting is logged; the outbox loop goes on
    ops = await api.operator("ops")
    await api.ok("POST", f"/ops/withdrawals/{wid}/void", {"reason": "test over"}, token=ops)
    await dispatcher.upkeep(w.pool, w.env)
    assert metrics.MPAY_WITHDRAWALS_OVERDUE._value.get() == 0
