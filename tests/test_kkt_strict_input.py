"""Issue 14 item 9: REST takes amounts, card numbers and license keys exactly as sent. A
padded value (blanks around it, a zero-padded amount) is refused with the documented code —
02 amount, 01 card number, the bare license code 1 — and changes nothing."""

from __future__ import annotations

import pytest

from tests.kkt_world import World


async def journalled(world: World, card: str) -> int:
    async with world.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM kkt_trades WHERE card_no = $1", card))


@pytest.mark.parametrize("amount", [" 100", "100 ", "\t100", "+100", "0100", "000000000100", "100\n"])
async def test_a_padded_amount_answers_02(world: World, amount: str, audited: None) -> None:
    card = await world.new_card(balance=1000)
    for trade_type, mode in (("0022", "1"), ("1102", "0")):
        assert (await world.ct(TRADETYPE=trade_type, TRADEMODE=mode, CARDNO=card, AMOUNT=amount))["PayInForm"] == "02"
    assert await world.balance(card) == (1000, 0) and await journalled(world, card) == 0
    assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="100"))["PayInForm"] == "11"


@pytest.mark.parametrize("padding", [" {}", "{} ", "{}\n", "\t{}", "0{}"])
@pytest.mark.parametrize("short", [False, True], ids=["16_digits", "8_digits"])
async def test_a_padded_card_number_answers_01(world: World, padding: str, short: bool, audited: None) -> None:
    card = await world.new_card(balance=1000)
    sent = padding.format(card[8:] if short else card)
    rec = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=sent, AMOUNT="100")
    assert rec["PayInForm"] == "01"
    assert await world.balance(card) == (1000, 0) and await journalled(world, card) == 0


@pytest.mark.parametrize("padding", [" {}", "{} ", "{}\n", "\t{}"])
async def test_a_padded_license_key_answers_1(world: World, padding: str) -> None:
    card = await world.new_card(balance=1000)
    status, body = await world.get("cTRequest", LICENSEKEY=padding.format(world.license_key),
                                   POSCODE=world.terminal, TRADETYPE="0022", TRADEMODE="1", CARDNO=card,
                                   CARDPWD="111111", AMOUNT="100")
    assert (status, body) == (200, "1")
    assert await world.balance(card) == (1000, 0)
