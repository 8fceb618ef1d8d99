"""The mobile payment channels under the code base's one retry policy (recharge.db.RetryPolicy): a request,
an MO or a bank notice whose transaction deadlocks is rolled back whole and runs again — what it changed
counted once. The helpers are tests/test_mpay_api.py's; the
fixtures tests/shared_fixtures.py's."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest

from http_api import mpay_gate
from recharge.mpay import bank
from tests.mpay_world import Api, MpayWorld
from tests.test_mpay_api import bank_recharge, customer

pytestmark = pytest.mark.usefixtures("audited")


async def test_a_request_that_meets_a_deadlock_is_run_again_whole(w: MpayWorld, api: Api,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused login deadlocks once after its counters were written: rolled back, run again by the retry
    policy, the failure counted once (four 3001s still come before the lock)."""
    msisdn, _, _ = await customer(w, api)
    real, attempts = mpay_gate._keep, []

    async def deadlocks_once(call: Any, rid: Any, response: Any, code: str) -> None:
        await real(call, rid, response, code)
        attempts.append(code)
        if len(attempts) == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")

    monkeypatch.setattr(mpay_gate, "_keep", deadlocks_once)
    wrong = {"login": msisdn, "password": "Wrong123"}
    assert await api.code("POST", "/auth/login", wrong) == "3001"
    monkeypatch.undo()
    assert attempts == ["3001", "3001"]
    assert [await api.code("POST", "/auth/login", wrong) for _ in range(4)] == ["3001"] * 3 + ["3003"]


async def test_a_bank_notice_that_meets_a_deadlock_is_run_again_whole(w: MpayWorld, api: Api,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attempt stores the notice and credits 50 yuan, then deadlocks: rolled back, run again by
    the retry policy, credited once."""
    msisdn, token, _ = await customer(w, api)
    key, form = await bank_recharge(w, api, token)
    real, attempts = bank.notice, []

    async def deadlocks_once(*args: Any) -> bool:
        ok = await real(*args)
        attempts.append(ok)
        if len(attempts) == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return ok

    monkeypatch.setattr(bank, "notice", deadlocks_once)
    signed = dict(form, sign=bank.sign_form(key.export_key(), form))
    async with w.session.post(f"{w.base}/mpay/v1/bank/notify/unionpay", data=urlencode(signed),
                              headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert (resp.status, await resp.text()) == (200, "OK")
    assert attempts == [True, True]
    assert (await w.balances(msisdn)).cash == 5000
