"""The whole journey of a platform's order: APPLLogin and CreateAutoLoadOrder over HTTP with the
reader replies of a virtual card, a terminal loading it over DD (the real server), AcctQueryLNT
showing it loaded, and ``rechargectl settle`` listing it in the platform's CSV."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

import core_ext
from app import fixtures
from http_api.order_client import ClientIdentity, build_request, open_reply
from recharge.ledger import transfers as ledger
from recharge.orders import model
from recharge.orders import platforms as order_platforms
from tests.test_order_api_cli import rechargectl

pytestmark = pytest.mark.usefixtures("audited")


async def test_order_created_over_http_is_loaded_over_dd_queried_and_settled(
    platform: Any, conn: asyncpg.Connection, test_keys: Any, database_url: str, tmp_path: Path
) -> None:
    term = await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])
    code = await conn.fetchval("SELECT code FROM merchants WHERE id = $1", term.merchant_id)
    raw = "5" + fixtures.random_digits(8)
    registered = await order_platforms.register_platform(
        conn, platform_raw=raw, name="public bicycle", merchant_code=code, pki_no=term.pki
    )
    pem = order_platforms.generate_key_pair(tmp_path / "client.pem")
    await order_platforms.add_public_key(conn, registered.id, "1", pem, min_bits=2048)
    who = ClientIdentity(int(raw), 1, (tmp_path / "client.pem").read_text())
    card = term.card(balance_cents=150)
    await fixtures.register_cpu_cards(conn, [card.card_no])  # its issuer registered it
    userinfo = json.dumps({"userid": "gzzxc001"})

    async with aiohttp.ClientSession(f"http://127.0.0.1:{platform.http_port}") as http:
        async def call(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(f"/{endpoint}", json=body) as resp:
                reply = open_reply(await resp.json())
            assert reply["status"] == 1, reply
            return reply

        login = await call("APPLLogin", build_request(who, {"platform": int(raw), "userinfo": userinfo, "type": 5}))
        replies = core_ext.reply_decode(card.run_script(bytes.fromhex("".join(login["toreader"]))))
        reqinfo = [core_ext.reply_encode([r]).hex() for r in replies]
        created = await call("CreateAutoLoadOrder", build_request(
            who,
            {"platform": int(raw), "userinfo": userinfo, "pki": login["pki"], "chargeamt": 2_000, "chargetype": 0,
             "transtype": 1, "serial": login["serial"], "step": 0, "reqinfo": reqinfo},
            extra_clear={"biz_serial_no": "BIKE-0001"},
        ))
        order_no = created["order"]

        await asyncio.to_thread(term.client().sign_in, term.module())
        dd20 = await asyncio.to_thread(term.client().recharge, card, order_no, 2_000)
        assert dd20.stage == 0x20 and dd20.result == 0 and card.balance == 2_150

        query = {"platform": int(raw), "userinfo": userinfo, "pki": login["pki"], "serial": login["serial"],
                 "step": 0, "reqinfo": reqinfo, "qrycondition": "cardnum,username"}
        listed = await call("AcctQueryLNT", build_request(who, query))
    (record,) = listed["acctresult"]
    assert record["orderseq"] == order_no and record["logiccardnum"] == card.card_no
    assert record["amount"] == 2_000 and record["step"] == model.CONFIRMED and record["paytime"]

    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE, card_no=card.card_no)
    assert (await ledger.get_balance(conn, purse)).posted == 2_000

    day = model.local_date(dt.datetime.now(dt.UTC))
    status, out, err = await rechargectl("settle", "--date", day.isoformat(), database_url=database_url,
                                         data_dir=tmp_path)
    assert status == 0, err
    path = tmp_path / "settlement" / f"{day:%Y%m%d}_{raw}.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [(r["section"], r["biz_serial_no"], r["order_no"], r["card_no"], r["amount_cents"], r["state"],
             r["terminal_code"]) for r in rows] == [
        ("settled", "BIKE-0001", order_no, card.card_no, "2000", model.SETTLED, term.code)
    ]
