"""KaKaTong REST (SPEC 3.1): every return code a request can provoke, one test per code,
through the real HTTP app and database; money tests also check that the ledger balances."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.parse
from typing import Any

import aiohttp
import pytest

from recharge.kkt import reference as kkt_reference
from recharge.kkt import service as kkt
from tests.conftest import settings_changed
from tests.kkt_world import PASSWORD_MD5, World, accept, first_record, make_world, records

# --- successes (11) for every trade of the seed's table ----------------------------------


async def test_code_11_consume_moves_value_to_the_merchant(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="300", LANG="GB2312")
    assert rec["PayInForm"] == "11"
    assert rec["PayInResult"] == "(11)交易成功！"
    assert rec["Integral"] == "700" and rec["Points"] == ""
    assert len(rec["Stance"]) == 8 and rec["Stance"].isdigit()
    assert rec["TradeName"] == "储值消费" and rec["CardNo"] == card
    assert await world.balance(card) == (700, 0)


async def test_code_11_every_recharge_kind_and_its_cancel(world: World, audited: None) -> None:
    card = await world.new_card()
    for i, trade_type in enumerate(("1100", "1101", "1102", "1103")):
        amount = str(100 + i)
        rec = await world.ct(TRADETYPE=trade_type, TRADEMODE="0", CARDNO=card, AMOUNT=amount)
        assert rec["PayInForm"] == "11", rec
        assert rec["PayInResult"] == "(11)Transaction succeeded!"
        cancel = await world.ct(TRADETYPE=trade_type, TRADEMODE="1", CARDNO=card, STANCE_REV=rec["Stance"])
        assert cancel["PayInForm"] == "11", cancel
        assert cancel["Integral"] == "0"
    assert await world.balance(card) == (0, 0)


async def test_code_11_consume_cancel_returns_the_value(world: World, audited: None) -> None:
    card = await world.new_card(balance=500)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="200")
    cancel = await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV=rec["Stance"], AMOUNT="200")
    assert cancel["PayInForm"] == "11" and cancel["Integral"] == "500"
    assert cancel["Stance"] != rec["Stance"]
    assert await world.balance(card) == (500, 0)


async def test_code_11_points_accumulate_consume_and_cancels(world: World, audited: None) -> None:
    card = await world.new_card()
    add = await world.ct(TRADETYPE="0033", TRADEMODE="0", CARDNO=card, AMOUNT="1050")  # 100 cents a point
    assert add["PayInForm"] == "11" and add["Points"] == "10" and add["Integral"] == "10"
    use = await world.ct(TRADETYPE="0034", TRADEMODE="1", CARDNO=card, AMOUNT="4")
    assert use["PayInForm"] == "11" and use["Points"] == "6"
    undo_use = await world.ct(TRADETYPE="0034", TRADEMODE="0", CARDNO=card, STANCE_REV=use["Stance"])
    assert undo_use["PayInForm"] == "11" and undo_use["Points"] == "10"
    undo_add = await world.ct(TRADETYPE="0033", TRADEMODE="1", CARDNO=card, STANCE_REV=add["Stance"])
    assert undo_add["PayInForm"] == "11" and undo_add["Points"] == "0"
    assert await world.balance(card) == (0, 0)


async def test_code_11_balance_and_points_queries(world: World) -> None:
    card = await world.new_card(balance=321, points=7)
    sv = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, LANG="GB2312")
    assert (sv["PayInForm"], sv["Integral"], sv["TradeName"]) == ("11", "321", "储值查询")
    pts = await world.ct(TRADETYPE="0011", TRADEMODE="1", CARDNO=card)
    assert (pts["PayInForm"], pts["Integral"], pts["Points"], pts["TradeName"]) == ("11", "7", "7", "Points query")


async def test_code_11_short_card_number_and_bare_password(world: World) -> None:
    card = await world.new_card(balance=50)
    rec = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card[-8:], CARDPWD="111111")
    assert rec["PayInForm"] == "11" and rec["CardNo"] == card


async def test_code_11_service_code_names_the_trade(world: World, pool: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO service_codes (merchant_id, item_code, name) VALUES ($1,'888','洗车')",
                           world.merchant_id)
        kkt_reference.invalidate()  # a direct SQL edit applies within the cache TTL; skip the wait
    card = await world.new_card(balance=100)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="10", ITEMCODE="888", LANG="GB2312")
    assert rec["TradeName"] == "洗车"


async def test_stance_is_the_merchants_next_serial(world: World, pool: Any) -> None:
    card = await world.new_card(balance=100)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE merchants SET stance_seq = 99999998 WHERE id = $1", world.merchant_id)
    first = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card)
    second = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card)
    assert (first["Stance"], second["Stance"]) == ("99999999", "00000001")


# --- refusals, one per code --------------------------------------------------------------


async def test_code_00_reqid_reused_for_another_request(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    first = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="100", REQID="r-1")
    other = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="101", REQID="r-1")
    assert first["PayInForm"] == "11" and other["PayInForm"] == "00"
    malformed = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="102", REQID="bad id!")
    assert malformed["PayInForm"] == "00"
    assert await world.balance(card) == (900, 0)


async def test_reqid_retry_returns_the_first_answer_and_moves_once(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    answers = await asyncio.gather(*[
        world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="250", REQID="same-key") for _ in range(5)
    ])
    assert {a["PayInForm"] for a in answers} == {"11"}
    assert len({a["Stance"] for a in answers}) == 1
    assert await world.balance(card) == (750, 0)


@pytest.mark.parametrize("card_no", ["", "16801234abcd5678", "168012345678901", "16801234567890123",
                                     "1" * 600, "１６８０１１５５００００００１２", "0x1680115500000125"])
async def test_code_01_malformed_card_number(world: World, card_no: str) -> None:
    rec = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card_no)
    assert rec["PayInForm"] == "01"


@pytest.mark.parametrize("amount", ["", "-100", "1.5", "0", "10.00", "abc", "1e3", "9" * 13, "100000001", " "])
async def test_code_02_malformed_amount_changes_nothing(world: World, amount: str, audited: None) -> None:
    card = await world.new_card(balance=1000)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT=amount)
    assert rec["PayInForm"] == "02"
    assert await world.balance(card) == (1000, 0)


async def test_code_02_missing_amount(world: World) -> None:
    card = await world.new_card(balance=1000)
    status, body = await world.get("cTRequest", LICENSEKEY=world.license_key, POSCODE=world.terminal,
                                   CARDPWD=PASSWORD_MD5, TRADETYPE="1102", TRADEMODE="0", CARDNO=card)
    assert first_record(body)["PayInForm"] == "02"


@pytest.mark.parametrize("trade_type", ["", "9999", "0012", "00220", "x"])
async def test_code_03_unknown_trade_type(world: World, trade_type: str) -> None:
    card = await world.new_card()
    assert (await world.ct(TRADETYPE=trade_type, TRADEMODE="1", CARDNO=card))["PayInForm"] == "03"


@pytest.mark.parametrize("mode", ["", "2", "01", "x"])
async def test_code_04_invalid_trade_mode(world: World, mode: str) -> None:
    card = await world.new_card()
    assert (await world.ct(TRADETYPE="0022", TRADEMODE=mode, CARDNO=card, AMOUNT="1"))["PayInForm"] == "04"


async def test_code_05_unknown_card(world: World) -> None:
    rec = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=f"1680{world.merchant_code}99999999")
    assert rec["PayInForm"] == "05"


async def test_code_06_original_trade_check_fails(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="100")
    # a recharge cancel naming a consume, a wrong amount, a malformed or missing serial
    assert (await world.ct(TRADETYPE="1102", TRADEMODE="1", CARDNO=card, STANCE_REV=rec["Stance"]))["PayInForm"] == "06"
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV=rec["Stance"],
                           AMOUNT="99"))["PayInForm"] == "06"
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV="12ab"))["PayInForm"] == "06"
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card))["PayInForm"] == "06"
    assert await world.balance(card) == (900, 0)


async def test_code_07_wrong_password_and_five_strike_lockout(world: World, pool: Any) -> None:
    card = await world.new_card(balance=100)
    for _ in range(4):
        assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, CARDPWD="222222"))["PayInForm"] == "07"
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "11"  # resets the count
    for _ in range(5):
        assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, CARDPWD="222222"))["PayInForm"] == "07"
    # locked: even the right password is refused for 24 hours
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "07"
    async with pool.acquire() as conn:
        locked_until = await conn.fetchval("SELECT locked_until FROM cards WHERE card_no = $1", card)
    assert locked_until > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)


@pytest.mark.parametrize("password", ["", "12345", "1234567", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "96E79218965EB72C"])
async def test_code_07_malformed_password(world: World, password: str) -> None:
    card = await world.new_card(balance=100)
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, CARDPWD=password))["PayInForm"] == "07"


async def test_password_md5_in_upper_case_is_accepted(world: World) -> None:
    card = await world.new_card(balance=100)
    rec = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, CARDPWD=PASSWORD_MD5.upper())
    assert rec["PayInForm"] == "11"


async def test_code_08_insufficient_balance(world: World, audited: None) -> None:
    card = await world.new_card(balance=100)
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="101"))["PayInForm"] == "08"
    assert await world.balance(card) == (100, 0)


async def test_code_09_per_transaction_limit(world: World) -> None:
    card = await world.new_card(balance=1000, per_txn_limit_cents=500)
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="501"))["PayInForm"] == "09"
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="500"))["PayInForm"] == "11"


async def test_code_10_expired_card(world: World) -> None:
    card = await world.new_card(balance=10, valid_to=dt.date(2020, 1, 1))
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "10"


async def test_code_12_duplicate_within_24_hours(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="100"))["PayInForm"] == "11"
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="100"))["PayInForm"] == "12"
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="101"))["PayInForm"] == "11"
    assert await world.balance(card) == (799, 0)


async def test_code_13_not_yet_valid(world: World) -> None:
    card = await world.new_card(valid_from=dt.date.today() + dt.timedelta(days=30))
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "13"


@pytest.mark.parametrize(("state", "code"), [("lost", "14"), ("cancelled", "15"), ("inactive", "17"),
                                             ("reissued", "19"), ("frozen", "69")])
async def test_codes_14_15_17_19_69_card_states(world: World, state: str, code: str) -> None:
    card = await world.new_card(state=state, balance=100)
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="1"))["PayInForm"] == code


async def test_code_16_no_points_rule(world: World, pool: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM points_rules WHERE merchant_id = $1", world.merchant_id)
        kkt_reference.invalidate()  # a direct SQL edit applies within the cache TTL; skip the wait
    card = await world.new_card()
    assert (await world.ct(TRADETYPE="0033", TRADEMODE="0", CARDNO=card, AMOUNT="100"))["PayInForm"] == "16"


async def test_code_18_reversal_undoes_the_terminals_last_trade(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="400")
    rev = await world.ct(TRADETYPE="0400", TRADEMODE="", CARDNO=card, CARDPWD="")
    assert rev["PayInForm"] == "18" and rev["Integral"] == "1000"
    assert (await world.ct(TRADETYPE="0400", TRADEMODE="", CARDNO=card))["PayInForm"] == "61"
    assert await world.balance(card) == (1000, 0)


async def test_code_20_points_card_refuses_stored_value(world: World) -> None:
    card = await world.new_card(kind="points")
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "20"


async def test_code_31_card_without_stored_value(world: World) -> None:
    card = await world.new_card(kind="cpu")
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="5"))["PayInForm"] == "31"


async def test_code_32_card_without_points(world: World) -> None:
    card = await world.new_card(kind="sv")
    assert (await world.ct(TRADETYPE="0033", TRADEMODE="0", CARDNO=card, AMOUNT="500"))["PayInForm"] == "32"


async def test_code_50_unknown_method(world: World) -> None:
    status, body = await world.get("nope", LICENSEKEY=world.license_key)
    assert status == 400 and first_record(body)["PayInForm"] == "50"


async def test_code_51_gateway_closed(world: World, platform: Any) -> None:
    card = await world.new_card(balance=10)
    with settings_changed(platform, kkt_gateway_open=False):
        assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "51"


async def test_code_54_issuing_merchant_fund_insufficient(platform: Any, pool: Any, test_keys: Any,
                                                          audited: None) -> None:
    world = await make_world(pool, test_keys[0], platform.http_port, fund=100)
    card = await world.new_card()
    assert (await world.ct(TRADETYPE="1102", TRADEMODE="0", CARDNO=card, AMOUNT="101"))["PayInForm"] == "54"
    assert await world.balance(card) == (0, 0)


async def test_code_65_consuming_merchant_fund_insufficient(platform: Any, pool: Any, test_keys: Any) -> None:
    issuer = await make_world(pool, test_keys[0], platform.http_port)
    shop = await make_world(pool, test_keys[0], platform.http_port, fund=0)
    await accept(issuer, shop)
    card = await issuer.new_card()
    rec = await shop.ct(TRADETYPE="1102", TRADEMODE="0", CARDNO=card, AMOUNT="100")
    assert rec["PayInForm"] == "65"


async def test_code_58_terminal_daily_recharge_limit(world: World, pool: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute("UPDATE terminals SET daily_recharge_limit_cents = 1000 WHERE code = $1", world.terminal)
    card = await world.new_card()
    assert (await world.ct(TRADETYPE="1102", TRADEMODE="0", CARDNO=card, AMOUNT="600"))["PayInForm"] == "11"
    assert (await world.ct(TRADETYPE="1100", TRADEMODE="0", CARDNO=card, AMOUNT="401"))["PayInForm"] == "58"
    assert (await world.ct(TRADETYPE="1100", TRADEMODE="0", CARDNO=card, AMOUNT="400"))["PayInForm"] == "11"


async def test_code_60_merchant_closed(world: World, pool: Any) -> None:
    card = await world.new_card(balance=10)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE merchants SET closed = true WHERE id = $1", world.merchant_id)
        kkt_reference.invalidate()  # a direct SQL edit applies within the cache TTL; skip the wait
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "60"


async def test_code_61_cancel_of_an_unknown_serial(world: World) -> None:
    card = await world.new_card(balance=10)
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV="00000000"))["PayInForm"] == "61"


async def test_code_62_cancel_of_a_cancellation(world: World) -> None:
    card = await world.new_card(balance=1000)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="10")
    cancel = await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV=rec["Stance"])
    again = await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV=cancel["Stance"])
    assert again["PayInForm"] == "62"


async def test_code_63_cancel_twice(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="10")
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV=rec["Stance"]))["PayInForm"] == "11"
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV=rec["Stance"],
                           AMOUNT="10"))["PayInForm"] == "63"
    assert await world.balance(card) == (1000, 0)


async def test_code_64_cancel_from_another_consuming_merchant(platform: Any, pool: Any, test_keys: Any) -> None:
    issuer = await make_world(pool, test_keys[0], platform.http_port)
    shop = await make_world(pool, test_keys[0], platform.http_port)
    card = await issuer.new_card(balance=1000)
    rec = await issuer.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="10")
    assert (await shop.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV=rec["Stance"]))["PayInForm"] == "64"


async def test_code_66_insufficient_points(world: World) -> None:
    card = await world.new_card(points=5)
    assert (await world.ct(TRADETYPE="0034", TRADEMODE="1", CARDNO=card, AMOUNT="6"))["PayInForm"] == "66"


async def test_code_67_daily_trade_count(world: World) -> None:
    card = await world.new_card(balance=1000, daily_count_limit=2)
    for amount in ("1", "2"):
        assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT=amount))["PayInForm"] == "11"
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="3"))["PayInForm"] == "67"


async def test_code_68_test_mode_daily_limit(world: World, pool: Any, platform: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute("UPDATE license_keys SET test_mode = true WHERE license_key = $1", world.license_key)
        kkt_reference.invalidate()  # a direct SQL edit applies within the cache TTL; skip the wait
    card = await world.new_card(balance=100)
    with settings_changed(platform, kkt_test_mode_daily_max=2):
        assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "11"
        assert (await world.ct(TRADETYPE="0011", TRADEMODE="1", CARDNO=card))["PayInForm"] == "11"
        assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "68"


async def test_code_70_terminal_not_a_gateway_pos(world: World, pool: Any) -> None:
    card = await world.new_card(balance=10)
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, POSCODE="00000000"))["PayInForm"] == "70"
    async with pool.acquire() as conn:
        await conn.execute("UPDATE terminals SET kind = 'sms', msisdn = $2 WHERE code = $1", world.terminal,
                           "139" + world.terminal[:8])
        kkt_reference.invalidate()  # a direct SQL edit applies within the cache TTL; skip the wait
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "70"


# --- the license key (bare codes 1–4, checked first) ------------------------------------


async def _bare(world: World, **params: str) -> tuple[int, str]:
    return await world.get("cTRequest", TRADETYPE="0011", TRADEMODE="0", CARDNO="x", POSCODE=world.terminal,
                           **params)


async def test_license_code_1_unknown_or_missing_key(world: World) -> None:
    assert await _bare(world, LICENSEKEY="NoSuchKeyNoSuchKey") == (200, "1")
    assert await _bare(world) == (200, "1")
    assert await _bare(world, LICENSEKEY="short") == (200, "1")
    assert await _bare(world, LICENSEKEY="A" * 513) == (200, "1")


async def test_license_code_2_expired_key(world: World, pool: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute("UPDATE license_keys SET valid_to = now() - interval '1 day' WHERE license_key = $1",
                           world.license_key)
        kkt_reference.invalidate()  # a direct SQL edit applies within the cache TTL; skip the wait
    assert await _bare(world, LICENSEKEY=world.license_key) == (200, "2")


async def test_license_code_3_disabled_or_other_merchant(world: World, pool: Any) -> None:
    assert await _bare(world, LICENSEKEY=world.license_key, COPNO="0000") == (200, "3")
    async with pool.acquire() as conn:
        await conn.execute("UPDATE license_keys SET enabled = false WHERE license_key = $1", world.license_key)
        kkt_reference.invalidate()  # a direct SQL edit applies within the cache TTL; skip the wait
    assert await _bare(world, LICENSEKEY=world.license_key) == (200, "3")


async def test_license_code_4_caller_outside_allowed_networks(world: World, pool: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute("UPDATE license_keys SET allowed_networks = ARRAY['10.9.8.0/24'] WHERE license_key = $1",
                           world.license_key)
        kkt_reference.invalidate()  # a direct SQL edit applies within the cache TTL; skip the wait
    assert await _bare(world, LICENSEKEY=world.license_key) == (200, "4")


async def test_license_key_is_checked_before_anything_else(world: World) -> None:
    status, body = await world.get("cTRequest", LICENSEKEY="bogus-bogus-bogus", TRADETYPE="zz")
    assert body == "1"


# --- the other methods --------------------------------------------------------------------


async def test_activation_then_trading(world: World, pool: Any, audited: None) -> None:
    card = await world.new_card(state="inactive", password=None)
    status, body = await world.get("aCRequest", LICENSEKEY=world.license_key, COPNO=world.merchant_code,
                                   POSCODE=world.terminal, CARDNO=card, CARDPWD="654321")
    assert first_record(body) == {"Result": "11", "CardNo": card}
    rec = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, CARDPWD="654321")
    assert rec["PayInForm"] == "11"


async def _activate(world: World, card: str, **extra: str) -> str:
    _, body = await world.get("aCRequest", LICENSEKEY=world.license_key, POSCODE=world.terminal, CARDNO=card,
                              CARDPWD="111111", **extra)
    return first_record(body)["Result"]


async def test_code_52_activation_of_another_issuers_card(platform: Any, pool: Any, test_keys: Any) -> None:
    issuer = await make_world(pool, test_keys[0], platform.http_port)
    other = await make_world(pool, test_keys[0], platform.http_port)
    card = await issuer.new_card(state="inactive", password=None)
    assert await _activate(other, card) == "52"


async def test_code_53_activation_of_a_missing_or_scrapped_card(world: World) -> None:
    assert await _activate(world, f"1680{world.merchant_code}88888888") == "53"
    card = await world.new_card(state="cancelled")
    assert await _activate(world, card) == "53"


async def test_code_55_activated_but_first_recharge_failed(platform: Any, pool: Any, test_keys: Any,
                                                           audited: None) -> None:
    world = await make_world(pool, test_keys[0], platform.http_port, fund=100)
    card = await world.new_card(state="inactive", password=None)
    assert await _activate(world, card, AMOUNT="500") == "55"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM cards WHERE card_no = $1", card) == "active"
    assert await world.balance(card) == (0, 0)


async def test_activation_with_first_recharge(world: World, audited: None) -> None:
    card = await world.new_card(state="inactive", password=None)
    assert await _activate(world, card, AMOUNT="500") == "11"
    assert await world.balance(card) == (500, 0)


async def test_code_56_activation_of_an_active_card(world: World) -> None:
    card = await world.new_card()
    assert await _activate(world, card) == "56"


async def test_code_59_activation_with_a_mobile_already_in_use(world: World) -> None:
    await world.new_card(bound_mobile=f"139{world.merchant_code}0001")
    card = await world.new_card(state="inactive", password=None)
    assert await _activate(world, card, USR_MOBILE_NO=f"139{world.merchant_code}0001") == "59"


async def _pwd(world: World, card: str, new: str, old: str = "") -> dict[str, str]:
    _, body = await world.get("rSCardPwd", LANG="GB2312", LICENSEKEY=world.license_key, CARDNO=card, NEW_PWD=new,
                              POSCODE=world.terminal, OLD_PWD=old, COPNO=world.merchant_code)
    return first_record(body)


async def test_password_change_reset_and_code_46(world: World) -> None:
    card = await world.new_card(balance=10)
    assert await _pwd(world, card, "222222", old="333333") == {"PayInForm": "46", "CardNo": card,
                                                               "TradeName": "修改/重置密码"}
    assert (await _pwd(world, card, "222222", old="111111"))["PayInForm"] == "11"
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, CARDPWD="222222"))["PayInForm"] == "11"
    assert (await _pwd(world, card, "444444"))["PayInForm"] == "11"  # the issuer's reset
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card, CARDPWD="444444"))["PayInForm"] == "11"
    assert (await _pwd(world, card, "12ab56"))["PayInForm"] == "07"


async def _bind(world: World, card: str, id_num: str, mode: str) -> str:
    _, body = await world.get("bCRequest", LANG="GB2312", LICENSEKEY=world.license_key, CARDNO=card,
                              CARDPWD="111111", IDNUM=id_num, TRADEMODE=mode, POSCODE=world.terminal,
                              COPNO=world.merchant_code)
    return first_record(body)["Result"]


async def test_bind_unbind_and_codes_41_42_43(world: World) -> None:
    card = await world.new_card()
    mobile, other = f"137{world.merchant_code}1234", f"137{world.merchant_code}5678"
    assert await _bind(world, card, "12345", "1") == "41"
    assert await _bind(world, card, mobile, "1") == "11"
    assert await _bind(world, card, other, "1") == "42"
    assert await _bind(world, card, other, "0") == "43"
    assert await _bind(world, card, mobile, "0") == "11"
    assert await _bind(world, card, mobile, "0") == "43"
    assert await _bind(world, card, "11010519491231002X", "1") == "11"
    assert await _bind(world, card, mobile, "7") == "04"


async def test_card_info_read_and_update(world: World) -> None:
    card = await world.new_card()
    params = {"LANG": "GB2312", "LICENSEKEY": world.license_key, "CARDNO": card, "COPNO": world.merchant_code}
    empty = {f: "" for f in ("USR_CH_NAME", "USR_EN_NAME", "USR_ADDR", "USR_EMAIL", "USR_MOBILE_NO",
                             "USR_TEL_PHONE", "USR_BIRTHDAY")}
    _, body = await world.get("cIRequest", **params, **empty)
    assert first_record(body) == {"Result": "", "CardNo": card, "CopNo": world.merchant_code, "UsrChName": "",
                                  "UsrEnName": "", "UsrAddr": "", "UsrEmail": "", "UsrMobile": "", "UsrTel": "",
                                  "UsrBirthday": "0000-00-00"}
    _, body = await world.get("cIRequest", **params, **{**empty, "USR_EN_NAME": "ceraki",
                                                        "USR_EMAIL": "czx@kakatong.com", "USR_CH_NAME": "<张三>"})
    rec = first_record(body)
    assert (rec["UsrEnName"], rec["UsrEmail"], rec["UsrChName"]) == ("ceraki", "czx@kakatong.com", "<张三>")
    _, body = await world.get("cIRequest", **params, **{**empty, "USR_BIRTHDAY": "1990-02-30"})
    assert first_record(body)["Result"] == "00"


async def test_history_by_card_stance_and_time(world: World) -> None:
    card = await world.new_card(balance=5000)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="1234", LANG="GB2312")
    base = {"LANG": "GB2312", "LICENSEKEY": world.license_key, "TRADETYPE": "0012", "TRADEMODE": "0",
            "COPNO": world.merchant_code, "START": "0", "END": "0"}
    _, body = await world.get("tSRequest", **base, POSCODE="0", CARDNO=card, STANCE_NO="0")
    found = records(body)
    assert found[0]["stanceNo"] == rec["Stance"] and found[0]["Amount"] == "12.34"
    assert found[0]["TradeName"] == "储值消费" and found[0]["TmnNo"] == world.terminal
    _, body = await world.get("tSRequest", **base, POSCODE="0", CARDNO="", STANCE_NO=rec["Stance"])
    assert [r["stanceNo"] for r in records(body)] == [rec["Stance"]]
    _, body = await world.get("tSRequest", **base, POSCODE="0", CARDNO="", STANCE_NO="99999990")
    assert first_record(body)["Result"] == "61"
    _, body = await world.get("tSRequest", **{**base, "START": "2001-01-01 00:00:00", "END": "2001-12-31 00:00:00"},
                              POSCODE=world.terminal, CARDNO="", STANCE_NO="0")
    assert records(body) == []
    _, body = await world.get("tSRequest", **{**base, "START": "yesterday"}, POSCODE="0", CARDNO=card)
    assert first_record(body)["Result"] == "00"
    _, body = await world.get("tSRequest", **{**base, "TRADETYPE": "0022"}, POSCODE="0", CARDNO=card)
    assert first_record(body)["Result"] == "03"


async def test_concurrent_consumes_never_overdraw(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    answers = await asyncio.gather(*[
        world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT=str(100 + i)) for i in range(12)
    ])
    spent = sum(100 + i for i, a in enumerate(answers) if a["PayInForm"] == "11")
    assert {a["PayInForm"] for a in answers} <= {"11", "08"}
    assert spent <= 1000
    assert await world.balance(card) == (1000 - spent, 0)
    stances = [a["Stance"] for a in answers if a["PayInForm"] == "11"]
    assert len(set(stances)) == len(stances)


def test_every_code_has_a_chinese_and_an_english_text() -> None:
    for code in [f"{n:02d}" for n in (*range(0, 29), 31, 32, *range(40, 48), *range(50, 72))]:
        zh, en = kkt.TEXTS[code]
        assert zh and en
    assert kkt.text("40", True, IDNUM="13611935449") == "绑定成功:被绑定手机/身份证号码：13611935449！"
    assert kkt.text("99", True) == "非法操作！"


async def test_saturated_pool_answers_503_with_retry_after_and_moves_nothing(world: World, platform: Any) -> None:
    card = await world.new_card(balance=5_000)
    pool = platform.ctx.pool
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    query = urllib.parse.urlencode({
        "method": "cTRequest", "LICENSEKEY": world.license_key, "POSCODE": world.terminal, "CARDPWD": PASSWORD_MD5,
        "TRADETYPE": "1101", "TRADEMODE": "0", "CARDNO": card, "AMOUNT": "100",
    })
    try:
        with settings_changed(platform, pool_acquire_timeout_s=0.05):
            async with aiohttp.ClientSession() as session, session.get(f"{world.base}/s/get?{query}") as resp:
                status, retry_after = resp.status, resp.headers.get("Retry-After")
    finally:
        for conn in held:
            await pool.release(conn)
    assert status == 503 and retry_after == "1"
    assert (await world.balance(card))[0] == 5_000
