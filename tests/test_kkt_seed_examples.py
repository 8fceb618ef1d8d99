"""Seed 002's test section, run unchanged but for the host against the demo data: every
example URL, in the seed's order, answers with the records the seed shows."""

from __future__ import annotations

from typing import Any

import aiohttp
from defusedxml import ElementTree

from app import demo

SEED_URLS = {
    "activate": "/s/get?method=aCRequest&LICENSEKEY=NV41VDlSNldhFTFeYw0z&COPNO=1155&POSCODE=11552001"
                "&CARDNO=1680115500000125&CARDPWD=111111",
    "recharge": "/s/get?method=cTRequest&LANG=GB2312&LICENSEKEY=NV41VDlSNldhFTFeYw0z&TRADETYPE=1102&TRADEMODE=0"
                "&CARDNO=1680115500000125&CARDPWD=96e79218965eb72c92a549dd5a330112&POSCODE=11552001&AMOUNT=200"
                "&ITEMCODE=&STANCE_REV=&COPNO=1155",
    "reset": "/s/get?method=rSCardPwd&LANG=GB2312&LICENSEKEY=NV41VDlSNldhFTFeYw0z&CARDNO=1680115500000125"
             "&NEW_PWD=111111&POSCODE=11552001&OLD_PWD=&COPNO=1155",
    "history": "/s/get?method=tSRequest&LANG=GB2312&LICENSEKEY=NV41VDlSNldhFTFeYw0z&TRADETYPE=0012&TRADEMODE=0"
               "&POSCODE=0&CARDNO=&START=2007-01-14+00%3A14%3A48&END=2008-01-15+15%3A14%3A48&COPNO=1155"
               "&STANCE_NO=00000010",
    "info": "/s/get?method=cIRequest&LANG=GB2312&LICENSEKEY=NV41VDlSNldhFTFeYw0z&CARDNO=1680115500000125"
            "&COPNO=1155&USR_CH_NAME=&USR_EN_NAME=&USR_ADDR=&USR_EMAIL=&USR_MOBILE_NO=&USR_TEL_PHONE=&USR_BIRTHDAY=",
    "info_update": "/s/get?method=cIRequest&LANG=GB2312&LICENSEKEY=NV41VDlSNldhFTFeYw0z&CARDNO=1680115500000125"
                   "&COPNO=1155&USR_CH_NAME=&USR_EN_NAME=ceraki&USR_ADDR=&USR_EMAIL=czx@kakatong.com"
                   "&USR_MOBILE_NO=13611935449&USR_TEL_PHONE=&USR_BIRTHDAY=",
    "bind": "/s/get?method=bCRequest&LANG=GB2312&LICENSEKEY=NV41VDlSNldhFTFeYw0z&CARDNO=1680115500000125"
            "&CARDPWD=111111&IDNUM=13611935449&TRADEMODE=1&POSCODE=11552001&COPNO=1155",
    "unbind": "/s/get?method=bCRequest&LANG=GB2312&LICENSEKEY=NV41VDlSNldhFTFeYw0z&CARDNO=1680115500000125"
              "&CARDPWD=111111&IDNUM=13611935449&TRADEMODE=0&POSCODE=11552001&COPNO=1155",
}

INFO_EMPTY = [("Result", ""), ("CardNo", "1680115500000125"), ("CopNo", "1155"), ("UsrChName", ""),
              ("UsrEnName", ""), ("UsrAddr", ""), ("UsrEmail", ""), ("UsrMobile", ""), ("UsrTel", ""),
              ("UsrBirthday", "0000-00-00")]
BOUND = [("Result", "11"), ("CardNo", "1680115500000125"), ("CopNo", "1155"), ("IDNum", "13611935449"),
         ("TmnNo", "11552001")]


def as_pairs(body: str) -> list[list[tuple[str, str]]]:
    root = ElementTree.fromstring(body.encode("utf-8"))
    assert root.tag == "TradeResult"
    return [[(child.tag, child.text or "") for child in record] for record in root.findall("Record")]


async def test_seed_examples_answer_as_the_seed_shows(platform: Any, pool: Any, test_keys: Any) -> None:
    async with pool.acquire() as conn:
        await demo.seed(conn, test_keys[0])
        # a fresh demo merchant starts at the seed's 00006698; tests before us may have traded
        stance = f"{await conn.fetchval('SELECT stance_seq FROM merchants WHERE code = $1', '1155') + 1:08d}"
    answers = {}
    async with aiohttp.ClientSession() as session:
        for name, path in SEED_URLS.items():
            async with session.get(f"http://127.0.0.1:{platform.http_port}{path}") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
                body = await resp.text()
                assert body.startswith('<?xml version="1.0" encoding="UTF-8" ?>')
                answers[name] = as_pairs(body)
    assert answers["activate"] == [[("Result", "11"), ("CardNo", "1680115500000125")]]
    assert answers["recharge"] == [[("PayInForm", "11"), ("PayInResult", "(11)交易成功！"), ("Stance", stance),
                                    ("Integral", "200"), ("Points", ""), ("CardNo", "1680115500000125"),
                                    ("TradeName", "储值充值")]]
    assert answers["reset"] == [[("PayInForm", "11"), ("CardNo", "1680115500000125"),
                                 ("TradeName", "修改/重置密码")]]
    assert answers["history"] == [[("stanceNo", "00000010"), ("CardNo", "1680115500000126"), ("Amount", "0.00"),
                                   ("Points", "0.00"), ("TradeTime", "2007-06-01 13:27:37"), ("TmnNo", "11552001"),
                                   ("TradeName", "储值查询")]]
    assert answers["info"] == [INFO_EMPTY]
    updated = dict(INFO_EMPTY, UsrEnName="ceraki", UsrEmail="czx@kakatong.com", UsrMobile="13611935449")
    assert answers["info_update"] == [list(updated.items())]
    assert answers["bind"] == [BOUND]
    assert answers["unbind"] == [BOUND]


async def test_demo_seed_is_idempotent_and_starts_serials_at_6698(pool: Any, test_keys: Any) -> None:
    async with pool.acquire() as conn:
        await demo.seed(conn, test_keys[0])
        await demo.seed(conn, test_keys[0])
        cards = await conn.fetch("SELECT card_no, state FROM cards WHERE card_no BETWEEN '1680115500000100'"
                                 " AND '1680115500000199' ORDER BY 1")
        assert [r["card_no"] for r in cards] == [f"16801155{n:08d}" for n in range(125, 134)]
        assert await conn.fetchval("SELECT stance_seq FROM merchants WHERE code = '1155'") >= 6697
