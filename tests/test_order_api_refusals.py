"""The order JSON API's refusals over real HTTP (the platform fixture): every kind of bad input —
bodies, fields, encryption, MAC, signature, platform, version, time window, replay, amounts, funds,
queries, logins, size — each answered ``status: 0`` with an ``errmsg`` and nothing changed in the
database. The helpers and fixtures are tests/test_order_api.py's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

import core_ext
from http_api.order_client import ClientIdentity, build_request, remac, seal
from recharge.ledger import transfers as ledger
from recharge.orders import platforms as order_platforms
from tests import test_order_api as base
from tests.test_order_api import (
    ApiPlatform,
    create_body,
    fresh_raw,
    login,
    new_card,
    order_fields,
    post,
    refused,
    register,
    reqinfo_for,
)

# The same module fixtures as tests/test_order_api.py (a platform registered for this module).
known_cards = base.known_cards
api = base.api


# --- bad input: each answered status 0 with an errmsg, nothing changed


async def test_body_not_json_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    await refused(http, conn, api, "CreateAutoLoadOrder", b"{not json", "not JSON")


async def test_body_json_but_not_an_object_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    await refused(http, conn, api, "APPLLogin", b"[1, 2]", "not a JSON object")


async def test_duplicate_field_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    text = json.dumps(create_body(api, new_card()))
    await refused(http, conn, api, "CreateAutoLoadOrder", text[:-1] + ', "version": "v2"}', "appears twice")


@pytest.mark.parametrize(
    "field", ["timestamp", "version", "platformRaw", "crt_version", "data", "Sign", "mac", "biz_serial_no"]
)
async def test_missing_clear_field_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, field: str
) -> None:
    body = create_body(api, new_card())
    del body[field]
    await refused(http, conn, api, "CreateAutoLoadOrder", body, f"missing field: {field}")


@pytest.mark.parametrize("field", ["userinfo", "chargeamt", "chargetype", "transtype", "step", "reqinfo"])
async def test_missing_encrypted_field_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, field: str
) -> None:
    fields = order_fields(api, new_card())
    del fields[field]
    body = build_request(api.who, fields, extra_clear={"biz_serial_no": "M-" + field})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, f"missing field: {field}")


@pytest.mark.parametrize(("field", "value"), [("timestamp", "1428042275"), ("platformRaw", "7"),
                                              ("crt_version", True), ("data", 12), ("biz_serial_no", 5)])
async def test_clear_field_of_wrong_type_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, field: str, value: Any
) -> None:
    body = create_body(api, new_card())
    body[field] = value
    await refused(http, conn, api, "CreateAutoLoadOrder", body, f"field {field} must be")


@pytest.mark.parametrize(("field", "value"), [("chargeamt", "1000"), ("chargeamt", 10.5), ("step", None),
                                              ("reqinfo", "0105"), ("platform", "x")])
async def test_encrypted_field_of_wrong_type_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, field: str, value: Any
) -> None:
    body = build_request(api.who, order_fields(api, new_card(), **{field: value}),
                         extra_clear={"biz_serial_no": "T-" + field})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, f"field {field}" if value is not None else "missing")


async def test_reqinfo_entry_not_a_reader_reply_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = create_body(api, new_card(), reqinfo=["03ff9000"])
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "reqinfo[0]")


async def test_reqinfo_without_the_card_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = create_body(api, new_card(), reqinfo=reqinfo_for(new_card())[:2])
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "READ BINARY")


async def test_m1_card_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    card = new_card()
    body = create_body(api, card, reqinfo=reqinfo_for(card, card_type=0x02))
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "card type")


async def test_odd_length_data_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    good = create_body(api, new_card())
    body = seal(api.who, good["data"][:-1], timestamp=good["timestamp"], extra_clear={"biz_serial_no": "odd"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "bad envelope")


async def test_non_hex_data_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    good = create_body(api, new_card())
    data = "ZZ" + good["data"][2:]
    body = seal(api.who, data, timestamp=good["timestamp"], extra_clear={"biz_serial_no": "nonhex"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "not hex")


async def test_bad_padding_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    ts = int(time.time())
    plain = json.dumps(order_fields(api, new_card())).encode()
    padded = plain + b"\x00" * (-len(plain) % 8) + b"\x00" * 8  # a whole block of padding
    data = core_ext.des3_encrypt(__import__("hashlib").md5(str(ts).encode()).digest(), padded).hex().upper()
    body = seal(api.who, data, timestamp=ts, extra_clear={"biz_serial_no": "pad"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "padding")


async def test_data_that_decrypts_to_non_json_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = build_request(api.who, {}, plaintext="platform=7&chargeamt=100", extra_clear={"biz_serial_no": "nj"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "data is not JSON")


async def test_wrong_mac_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    body = create_body(api, new_card())
    body["mac"] = "00000000" if body["mac"] != "00000000" else "11111111"
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "mac does not match")


async def test_mac_over_the_clear_fields_catches_a_changed_serial(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = create_body(api, new_card())
    body["biz_serial_no"] = body["biz_serial_no"] + "x"  # Sign does not cover it; the mac does
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "mac does not match")


async def test_bad_sign_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    good = create_body(api, new_card())
    other = build_request(api.who, order_fields(api, new_card(), chargeamt=1))  # a valid Sign of other data
    body = remac({**good, "Sign": other["Sign"]})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "Sign does not verify")


async def test_sign_not_base64_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    body = remac({**create_body(api, new_card()), "Sign": "not base64!"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "Sign does not verify")


async def test_sign_by_another_key_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, tmp_path: Path
) -> None:
    order_platforms.generate_key_pair(tmp_path / "intruder.pem")
    intruder = ClientIdentity(api.who.platform_raw, api.who.crt_version, (tmp_path / "intruder.pem").read_text())
    body = build_request(intruder, order_fields(api, new_card()), extra_clear={"biz_serial_no": "intr"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "Sign does not verify")


async def test_missing_sign_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    body = create_body(api, new_card())
    del body["Sign"]
    await refused(http, conn, api, "CreateAutoLoadOrder", remac(body), "missing field: Sign")


async def test_unknown_platform_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    stranger = ClientIdentity(fresh_raw(), 1, api.who.private_key_pem)
    body = build_request(stranger, {**order_fields(api, new_card()), "platform": stranger.platform_raw},
                         extra_clear={"biz_serial_no": "u"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "unknown platform")


async def test_unknown_crt_version_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    who = ClientIdentity(api.who.platform_raw, 99, api.who.private_key_pem)
    body = build_request(who, order_fields(api, new_card()), extra_clear={"biz_serial_no": "crt"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "unknown crt_version")


async def test_platform_in_data_differing_from_platform_raw_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = create_body(api, new_card(), platform=api.who.platform_raw + 1)
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "differs from platformRaw")


async def test_unsupported_version_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    who = ClientIdentity(api.who.platform_raw, api.who.crt_version, api.who.private_key_pem, version="v1")
    body = build_request(who, order_fields(api, new_card()), extra_clear={"biz_serial_no": "v1"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "unsupported version")


@pytest.mark.parametrize("offset_s", [-305, 305])  # the window is ±300 s; whole seconds truncate
async def test_stale_timestamp_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, offset_s: int
) -> None:
    body = build_request(api.who, order_fields(api, new_card()), timestamp=int(time.time()) + offset_s,
                         extra_clear={"biz_serial_no": "stale"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "timestamp outside")


async def test_stale_millisecond_timestamp_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = build_request(api.who, order_fields(api, new_card()), timestamp=int(time.time() * 1000) - 400_000,
                         extra_clear={"biz_serial_no": "stale-ms"})
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "timestamp outside")


async def test_replayed_request_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    body = create_body(api, new_card(), 1_100)
    first = await post(http, "CreateAutoLoadOrder", body)
    assert first["status"] == 1
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "replayed request")


async def test_replayed_login_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform) -> None:
    body = build_request(api.who, {"platform": api.who.platform_raw, "userinfo": '{"userid":"u"}', "type": 5})
    assert (await post(http, "APPLLogin", body))["status"] == 1
    await refused(http, conn, api, "APPLLogin", body, "replayed request")


@pytest.mark.parametrize("amount", [0, -100])
async def test_non_positive_amount_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, amount: int
) -> None:
    await refused(http, conn, api, "CreateAutoLoadOrder", create_body(api, new_card(), amount), "amount")


async def test_amount_over_the_limit_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, platform: Any
) -> None:
    limit = platform.ctx.settings.order_max_amount_cents
    assert (await post(http, "CreateAutoLoadOrder", create_body(api, new_card(), limit)))["status"] == 1
    await refused(http, conn, api, "CreateAutoLoadOrder", create_body(api, new_card(), limit + 1), "above the limit")


async def test_empty_fund_is_refused_and_nothing_is_reserved(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    poor = await register(conn, tmp_path, fresh_raw(), 0)
    await refused(http, conn, poor, "CreateAutoLoadOrder", create_body(poor, new_card(), 100), "fund is empty")
    fund = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.RECHARGE_FUND,
                                       merchant_id=poor.merchant_id)
    assert (await ledger.get_balance(conn, fund)).debits_pending == 0
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE merchant_id = $1", poor.merchant_id) == 0


async def test_fund_short_of_the_amount_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    small = await register(conn, tmp_path, fresh_raw(), 500)
    await refused(http, conn, small, "CreateAutoLoadOrder", create_body(small, new_card(), 501), "fund is empty")
    assert (await post(http, "CreateAutoLoadOrder", create_body(small, new_card(), 500)))["status"] == 1


@pytest.mark.parametrize(("field", "value"), [("chargetype", 1), ("transtype", 2)])
async def test_unsupported_charge_or_trans_type_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, field: str, value: int
) -> None:
    over: dict[str, Any] = {field: value}
    await refused(http, conn, api, "CreateAutoLoadOrder", create_body(api, new_card(), 1_000, None, **over),
                  "not supported")


async def test_create_naming_an_unknown_serial_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = create_body(api, new_card(), serial="9999999999999999")
    await refused(http, conn, api, "CreateAutoLoadOrder", body, "unknown or expired serial")


async def test_query_without_a_login_serial_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    query = {"platform": api.who.platform_raw, "userinfo": '{"userid":"u"}', "serial": "", "step": 0,
             "reqinfo": [], "qrycondition": ""}
    await refused(http, conn, api, "AcctQueryLNT", build_request(api.who, query), "serial is required")


async def test_query_with_unknown_condition_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    session = await login(http, api)
    query = {"platform": api.who.platform_raw, "userinfo": '{"userid":"u"}', "serial": session["serial"],
             "step": 0, "reqinfo": [], "qrycondition": "cardnum,color"}
    await refused(http, conn, api, "AcctQueryLNT", build_request(api.who, query), "unknown qrycondition: color")


async def test_query_with_bad_date_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    session = await login(http, api)
    query = {"platform": api.who.platform_raw, "userinfo": '{"userid":"u"}', "serial": session["serial"],
             "step": 0, "reqinfo": [], "qrycondition": "time", "starttime": "20241340"}
    await refused(http, conn, api, "AcctQueryLNT", build_request(api.who, query), "YYYYMMDD")


async def test_login_with_unknown_type_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = build_request(api.who, {"platform": api.who.platform_raw, "userinfo": '{"userid":"u"}', "type": 9})
    await refused(http, conn, api, "APPLLogin", body, "operation type not supported")


async def test_login_without_userid_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    body = build_request(api.who, {"platform": api.who.platform_raw, "userinfo": "{}", "type": 5})
    await refused(http, conn, api, "APPLLogin", body, "userid or openid")


async def test_oversized_body_is_refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform,
                                         platform: Any) -> None:
    big = b'{"x":"' + b"a" * (platform.ctx.settings.http_max_body_bytes + 10) + b'"}'
    await refused(http, conn, api, "CreateAutoLoadOrder", big, "too large")
