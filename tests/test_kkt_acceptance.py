"""Issue 14 item 9: a merchant's license key trades on another issuer's cards only when that
issuer accepts the merchant (docs/PROTOCOL.md "Who may serve a card"); otherwise 52, before
the password is looked at, over REST, SOAP and SMS. Set by an operator (admin API, CLI)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kkt_world import World, accept, first_record, make_world
from tests.sms_world import make_sms_world
from tests.test_kkt_admin import _cli, admin
from tests.test_kkt_soap import SOAP11_REQUEST, php_args, post, returned

WRONG_MD5 = "0" * 32


@pytest.fixture
async def issuer(platform: Any, pool: Any, test_keys: Any) -> World:
    return await make_world(pool, test_keys[0], platform.http_port)


@pytest.fixture
async def shop(platform: Any, pool: Any, test_keys: Any) -> World:
    return await make_world(pool, test_keys[0], platform.http_port)


async def card_row(world: World, card: str) -> tuple[int, Any, str | None]:
    async with world.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT password_failures, locked_until, bound_mobile FROM cards"
                                  " WHERE card_no = $1", card)
    return row["password_failures"], row["locked_until"], row["bound_mobile"]


@pytest.mark.parametrize(("trade_type", "mode", "amount"), [
    ("0011", "0", ""), ("0011", "1", ""), ("0022", "1", "100"), ("1102", "0", "100"), ("0033", "0", "100"),
    ("0034", "1", "1"),
])
async def test_another_merchants_key_gets_52_and_its_guesses_are_not_checked(
    issuer: World, shop: World, trade_type: str, mode: str, amount: str, audited: None
) -> None:
    card = await issuer.new_card(balance=1000, points=10)
    for password in (WRONG_MD5, "111111"):
        rec = await shop.ct(TRADETYPE=trade_type, TRADEMODE=mode, CARDNO=card, AMOUNT=amount, CARDPWD=password)
        assert (rec["PayInForm"], rec["Stance"]) == ("52", "")
    assert await card_row(issuer, card) == (0, None, None)  # no wrong password was counted
    assert await issuer.balance(card) == (1000, 10)


async def test_an_accepted_merchant_trades_until_the_issuer_revokes_it(
    issuer: World, shop: World, audited: None
) -> None:
    card = await issuer.new_card(balance=1000)
    path = f"/admin/kkt/acceptance/{issuer.merchant_code}/{shop.merchant_code}"
    assert await admin(shop, "PUT", path, {"accepted": True}) == (200, {
        "issuer": issuer.merchant_code, "merchant": shop.merchant_code, "accepted": True})
    consume = await shop.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="100")
    assert (consume["PayInForm"], consume["Integral"]) == ("11", "900")
    assert (await shop.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "11"
    assert (await admin(shop, "PUT", path, {"accepted": False}))[0] == 200
    assert (await shop.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="101"))["PayInForm"] == "52"
    # its own earlier trade can still be cancelled: the money goes back where it came from
    cancel = await shop.ct(TRADETYPE="0022", TRADEMODE="0", CARDNO=card, STANCE_REV=consume["Stance"])
    assert (cancel["PayInForm"], cancel["Integral"]) == ("11", "1000")
    assert (await issuer.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="100"))["PayInForm"] == "11"


async def test_acceptance_of_oneself_or_an_unknown_merchant_is_refused(issuer: World) -> None:
    for merchant in (issuer.merchant_code, "0000"):
        status, reply = await admin(issuer, "PUT", f"/admin/kkt/acceptance/{issuer.merchant_code}/{merchant}",
                                    {"accepted": True})
        assert status == 400 and reply["error"]


async def test_password_change_and_binding_by_another_merchant_answer_52(issuer: World, shop: World) -> None:
    card = await issuer.new_card()
    _, body = await shop.get("rSCardPwd", LICENSEKEY=shop.license_key, CARDNO=card, NEW_PWD="222222",
                             POSCODE=shop.terminal, OLD_PWD="333333")
    assert first_record(body)["PayInForm"] == "52"
    _, body = await shop.get("bCRequest", LICENSEKEY=shop.license_key, CARDNO=card, CARDPWD="111111",
                             IDNUM="13800000000", TRADEMODE="1", POSCODE=shop.terminal)
    assert first_record(body)["Result"] == "52"
    assert await card_row(issuer, card) == (0, None, None)
    await accept(issuer, shop)
    _, body = await shop.get("rSCardPwd", LICENSEKEY=shop.license_key, CARDNO=card, NEW_PWD="222222",
                             POSCODE=shop.terminal, OLD_PWD="333333")
    assert first_record(body)["PayInForm"] == "46"  # now the old password is checked (and wrong)


async def test_soap_and_sms_answer_52_too(issuer: World, platform: Any, pool: Any, test_keys: Any) -> None:
    card = await issuer.new_card(balance=500)
    sms_shop = await make_sms_world(pool, test_keys[0], platform.http_port)
    shop = sms_shop.world
    args = php_args([shop.license_key, "0011", "0", card, "111111", shop.terminal, None, None, None], named=True)
    _, _, body = await post(shop, SOAP11_REQUEST.format(args=args))
    assert returned(body)[1]["PayInForm"] == "52"
    assert "(52)" in await sms_shop.send(f"CZXF*{card}*1*111111")
    assert await issuer.balance(card) == (500, 0)


async def test_cli_accepts_and_revokes(issuer: World, shop: World, settings: Any) -> None:
    card = await issuer.new_card(balance=300)
    done = await asyncio.to_thread(_cli, settings, "accept", issuer.merchant_code, shop.merchant_code)
    assert done.returncode == 0, done.stderr
    assert (await shop.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "11"
    done = await asyncio.to_thread(_cli, settings, "accept", issuer.merchant_code, shop.merchant_code, "--revoke")
    assert done.returncode == 0 and "no longer serves" in done.stdout
    assert (await shop.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "52"
    async with issuer.pool.acquire() as conn:
        actions = await conn.fetch("SELECT action, detail::text AS detail FROM operator_actions WHERE subject = $1"
                                   " ORDER BY id", f"{issuer.merchant_code}:{shop.merchant_code}")
    assert [a["action"] for a in actions] == ["acceptance_set", "acceptance_set"]
