"""Attacks on the order API (issue 14, items 5, 6 and 9), each performed over real HTTP: a
captured request replayed under every other base64 spelling of its signature, numbers and
texts no field can hold, an order for a card that does not exist, dates at the calendar's
ends. Each is answered ``status: 0`` (or served) and changes nothing it should not."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import aiohttp
import asyncpg
import pytest

from app import fixtures
from http_api.order_client import build_request, open_reply, remac
from tests import test_order_api as base
from tests.test_order_api import (
    ApiPlatform,
    create_body,
    login,
    new_card,
    order_fields,
    post,
    refused,
    reqinfo_for,
)

known_cards = base.known_cards  # registers the cards new_card() hands out


@pytest.fixture(scope="module")
async def api(pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory, known_cards: None) -> ApiPlatform:
    async with pool.acquire() as conn:
        return await base.register(conn, tmp_path_factory.mktemp("attacks"), base.fresh_raw(), base.FUND_CENTS)


pytestmark = pytest.mark.usefixtures("audited")

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def other_spellings(sign: str) -> list[str]:
    """Every other base64 text that decodes to the same bytes: the spare low bits of the last
    character before the padding (4 bits with ``==``, 2 with ``=``) take every value."""
    padding = len(sign) - len(sign.rstrip("="))
    spare = {0: 0, 1: 2, 2: 4}[padding]
    last = len(sign) - padding - 1
    index = _B64.index(sign[last])
    spellings = [sign[:last] + _B64[(index >> spare << spare) | low] + sign[last + 1:] for low in range(2**spare)]
    return [s for s in spellings if s != sign]


async def test_other_spellings_decode_to_the_same_signature() -> None:
    sign = base64.b64encode(bytes(range(256))).decode()
    spellings = other_spellings(sign)
    assert len(spellings) == 15 and len(set(spellings)) == 15
    assert all(base64.b64decode(s, validate=True) == bytes(range(256)) for s in spellings)


def respelled(body: dict[str, Any], sign: str, **clear: Any) -> dict[str, Any]:
    """What an eavesdropper sends: the captured body, Sign re-spelled, clear fields changed,
    the (keyless) mac recomputed."""
    return remac({**body, **clear, "Sign": sign})


async def test_a_login_replayed_under_every_other_spelling_of_its_sign_opens_no_session(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = build_request(api.who, {"platform": api.who.platform_raw, "userinfo": '{"userid":"u"}', "type": 5})
    assert (await post(http, "APPLLogin", body))["status"] == 1
    spellings = other_spellings(body["Sign"])
    assert len(spellings) == 15  # a 2048-bit key: 256 bytes, "…X==", four spare bits
    for sign in spellings:
        await refused(http, conn, api, "APPLLogin", respelled(body, sign), "replayed request")


async def test_an_order_replayed_under_another_spelling_and_serial_reserves_nothing_twice(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = create_body(api, new_card(), 1_500)
    assert (await post(http, "CreateAutoLoadOrder", body))["status"] == 1
    for n, sign in enumerate(other_spellings(body["Sign"])):
        # biz_serial_no is outside Sign (covered only by the keyless mac): a new one must not
        # make the same signed content a new order.
        replay = respelled(body, sign, biz_serial_no=f"{body['biz_serial_no']}-{n}")
        await refused(http, conn, api, "CreateAutoLoadOrder", replay, "replayed request")


async def test_a_timestamp_of_400_digits_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = build_request(api.who, {"platform": api.who.platform_raw, "userinfo": '{"userid":"u"}', "type": 5},
                         timestamp=int("9" * 400))
    await refused(http, conn, api, "APPLLogin", body, "field timestamp is out of range")


@pytest.mark.parametrize("field", ["step", "chargeamt", "chargetype", "transtype", "platform"])
async def test_order_numbers_of_400_digits_are_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, field: str
) -> None:
    body = create_body(api, new_card(), 1_000, None, **{field: int("9" * 400)})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, f"field {field} is out of range")


@pytest.mark.parametrize(("step", "accepted"), [(0, True), (255, True), (256, False), (-1, False)])
async def test_step_is_a_reader_instruction_number(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, step: int, accepted: bool
) -> None:
    body = create_body(api, new_card(), 1_000, None, step=step)
    if accepted:
        assert (await post(http, "CreateAutoLoadOrder", body))["status"] == 1
    else:
        await refused(http, conn, api, "CreateAutoLoadOrder", body, "step must be 0 to 255")


@pytest.mark.parametrize("money", [pytest.param(int("9" * 400), id="400_digits"), 100_001, -1])
async def test_login_money_outside_an_order_amount_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, money: int
) -> None:
    body = build_request(api.who, {"platform": api.who.platform_raw, "userinfo": '{"userid":"u"}', "type": 5,
                                   "money": money})
    await refused(http, conn, api, "APPLLogin", body, "money")


def sealed(api: ApiPlatform, fields: dict[str, Any]) -> dict[str, Any]:
    """A signed request whose data is ASCII JSON: a lone surrogate travels as its escape."""
    return build_request(api.who, fields, plaintext=json.dumps(fields, separators=(",", ":")))


@pytest.mark.parametrize("value", ["a\x00b", "\ud800", "x\x1by", "\x7f"])
async def test_texts_no_database_can_hold_are_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, value: str
) -> None:
    raw = api.who.platform_raw
    login_body = sealed(api, {"platform": raw, "userinfo": '{"userid":"u"}', "type": 5, "mobile_imei": value})
    await refused(http, conn, api, "APPLLogin", login_body, "control characters")
    user = sealed(api, {"platform": raw, "userinfo": {"userid": value}, "type": 5})
    await refused(http, conn, api, "APPLLogin", user, "userid or openid")
    session = await login(http, api)
    query = {"platform": raw, "userinfo": '{"userid":"u"}', "serial": session["serial"],
             "step": 0, "reqinfo": [], "qrycondition": "payway", "payway": value}
    await refused(http, conn, api, "AcctQueryLNT", sealed(api, query), "control characters")
    serial = sealed(api, {**query, "qrycondition": "", "serial": value})
    await refused(http, conn, api, "AcctQueryLNT", serial, "control characters")


async def test_a_nul_in_a_clear_field_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = create_body(api, new_card(), 1_000, "serial\x00")
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "control characters")
    raw = json.dumps({**create_body(api, new_card()), "version": "v2\x00"})
    await refused(http, conn, api, "CreateAutoLoadOrder", raw, "control characters")


async def test_an_order_for_a_card_that_does_not_exist_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    nobody = "1680" + fixtures.random_digits(12)
    await refused(http, conn, api, "CreateAutoLoadOrder", create_body(api, nobody, 1_000), "unknown card")
    assert await conn.fetchval("SELECT count(*) FROM accounts WHERE card_no = $1", nobody) == 0


async def test_an_order_for_a_host_card_or_a_lost_card_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    host, lost = new_card(), new_card()
    await conn.execute("UPDATE cards SET kind = 'sv' WHERE card_no = $1", host)
    await conn.execute("UPDATE cards SET state = 'lost' WHERE card_no = $1", lost)
    await refused(http, conn, api, "CreateAutoLoadOrder", create_body(api, host, 1_000), "not a CPU card")
    await refused(http, conn, api, "CreateAutoLoadOrder", create_body(api, lost, 1_000), "card is lost")


async def test_query_dates_at_the_calendars_ends_bound_nothing(
    http: aiohttp.ClientSession, api: ApiPlatform
) -> None:
    card = new_card()
    order = open_reply(await post(http, "CreateAutoLoadOrder", create_body(api, card, 900)))["order"]
    session = await login(http, api)
    query = {"platform": api.who.platform_raw, "userinfo": '{"userid":"gzzxc001"}', "serial": session["serial"],
             "step": 0, "reqinfo": reqinfo_for(card), "qrycondition": "time,cardnum",
             "starttime": "00010101", "endtime": "99991231"}
    result = open_reply(await post(http, "AcctQueryLNT", build_request(api.who, query)))
    assert result["status"] == 1 and [r["orderseq"] for r in result["acctresult"]] == [order]


async def test_a_refused_request_can_be_corrected_and_sent_with_a_new_timestamp(
    http: aiohttp.ClientSession, api: ApiPlatform
) -> None:
    """The refusals above record no signature: the same client can go on."""
    card = new_card()
    fields = order_fields(api, card, 1_000, step=int("9" * 400))
    assert (await post(http, "CreateAutoLoadOrder", build_request(
        api.who, fields, extra_clear={"biz_serial_no": f"fix-{card}"})))["status"] == 0
    fields["step"] = 0
    again = build_request(api.who, fields, timestamp=time.time_ns() // 1_000_000 + 1,
                          extra_clear={"biz_serial_no": f"fix-{card}"})
    assert (await post(http, "CreateAutoLoadOrder", again))["status"] == 1
