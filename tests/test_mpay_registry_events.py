"""SPEC 6.1's registry events through the BOSS feed (``PUT /mpay/v1/registry/subscribers/{msisdn}``), each
one's effect on the account committed with it and named in the reply's ``events``: suspensions and
arrears lock, 复机 unlocks, a freeze outlives them and its lifting gives the status the number implies,
a changed name unbinds the withdrawal card and voids its unexported withdrawals, incomplete data makes
the account non-real-name, 销号 of a frozen account keeps it frozen (detached)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.mpay_world import Api, MpayWorld

pytestmark = pytest.mark.usefixtures("audited")
RECORD = {"name": "张三", "id_type": "id_card", "id_number": "430102199001011234", "province": "430000",
          "brand": "GOTONE", "status": "normal", "reason": "BOSS 同步"}
CARD = {"bank": "BOC", "province": "430000", "city": "430100", "branch": "b", "number": "6013820000009999",
        "holder": "张三"}


async def _status(w: MpayWorld, msisdn: str) -> tuple[str, str | None, str]:
    async with w.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, lock_reason, kind FROM mpay_accounts WHERE msisdn = $1"
                                  " OR former_msisdn = $1 ORDER BY id DESC LIMIT 1", msisdn)
    return row["status"], row["lock_reason"], row["kind"]


async def test_number_statuses_lock_and_unlock_and_a_freeze_outlives_them(w: MpayWorld) -> None:
    api = Api(w)
    boss, ops = await api.operator("boss"), await api.operator("ops")
    msisdn, _ = await w.opened()

    async def put(**changes: Any) -> list[str]:
        data = await api.ok("PUT", f"/registry/subscribers/{msisdn}", dict(RECORD, **changes), token=boss)
        return list(data["events"])

    assert await put(status="arrears") == ["locked:suspended"]
    assert await _status(w, msisdn) == ("locked", "suspended", "real_name")
    assert await put(status="suspended_twoway") == []  # already locked for a suspension
    assert await put(status="lost") == ["locked:lost"]
    assert await put(status="normal") == ["normal"]  # 复机 / 解挂
    await api.ok("POST", f"/ops/accounts/{msisdn}/freeze", {"reason": "risk"}, token=ops)
    assert await put(status="suspended_oneway") == [] and (await _status(w, msisdn))[0] == "frozen"
    assert (await api.ok("POST", f"/ops/accounts/{msisdn}/unfreeze", {"reason": "cleared"}, token=ops)) == {
        "status": "locked"}  # the status the number implies
    assert await _status(w, msisdn) == ("locked", "suspended", "real_name")
    await api.ok("POST", f"/ops/accounts/{msisdn}/freeze", {"reason": "risk again"}, token=ops)
    assert await put(status="cancelled") == ["detached:frozen"]  # a frozen account stays frozen, detached
    assert await _status(w, msisdn) == ("frozen", None, "real_name")
    async with w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT msisdn FROM mpay_accounts WHERE former_msisdn = $1", msisdn) is None


async def test_a_changed_name_unbinds_the_card_and_voids_its_withdrawals_and_missing_data_demotes(
        w: MpayWorld) -> None:
    api = Api(w)
    boss = await api.operator("boss")
    msisdn, initial = await w.opened()
    token = await api.login(msisdn, initial["login"])
    await api.ok("POST", "/me/password/pay", {"old": initial["pay"], "new": "246810"}, token=token)
    await api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": 3000, "reason": "现金"},
                 token=await api.operator("counter", "HN0001"))
    await api.ok("PUT", "/me/bank-card", dict(CARD, pay_password="246810"), token=token)
    await api.ok("POST", "/me/withdrawals", {"amount": 1000, "pay_password": "246810"}, token=token)
    assert (await w.balances(msisdn)).cash_pending == 1000
    data = await api.ok("PUT", f"/registry/subscribers/{msisdn}", dict(RECORD, name="张三丰"), token=boss)
    assert data["events"] == ["card_unbound"] and data["record"]["name"] == "张三丰"
    assert (await api.ok("GET", "/me", token=token))["bank_card"] is None
    assert (await w.balances(msisdn)).cash_pending == 0  # the withdrawal voided, the cash back
    assert (await w.notices(msisdn))[-1] == "您的提现10元未能汇出,冻结款项已退回现金账户。详询10086。"
    data = await api.ok("PUT", f"/registry/subscribers/{msisdn}", dict(RECORD, name=None, id_type=None,
                                                                       id_number=None), token=boss)
    assert data["events"] == ["non_real_name"] and data["record"]["name"] is None
    assert await _status(w, msisdn) == ("normal", None, "non_real_name")
    assert await api.code("POST", "/me/withdrawals", {"amount": 100, "pay_password": "246810"},
                          token=token) == "2009"
