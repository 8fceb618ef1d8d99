"""The SMS hook end to end: the real platform over HTTP, every command in both forms, the
operator/cardholder split, hostile messages and gateway requests. Every refusal is checked
to have changed nothing (ledger balances, journal, serials, the card's row)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import REGISTRY

from recharge.kkt import sms
from tests.conftest import settings_changed
from tests.sms_world import SECRET, SmsWorld, make_sms_world, new_mobile, send_raw

STANCE = re.compile(r"流水([0-9]{8})")


@pytest.fixture
async def w(platform: Any, pool: Any, test_keys: Any) -> SmsWorld:
    return await make_sms_world(pool, test_keys[0], platform.http_port)


def code_of(command: str, form: str) -> str:
    return sms.BY_CODE[command].digits if form == "digits" else command


def stance_of(reply: str) -> str:
    found = STANCE.search(reply)
    assert found, reply
    return found.group(1)


async def assert_unchanged(w: SmsWorld, card: str, reply_coro: Any) -> str:
    before = await w.state(card)
    reply = await reply_coro
    assert await w.state(card) == before, reply
    return str(reply)


FORMS = ("letters", "digits")


# --- every command, both forms, as an operator ---------------------------------------------


@pytest.mark.parametrize("form", FORMS)
async def test_czcz_recharge_moves_yuan_from_the_merchant_fund_to_the_card(w: SmsWorld, form: str,
                                                                          audited: None) -> None:
    card = await w.card(balance=100)
    before = await w.state(card)
    reply = await w.send(f"{code_of('CZCZ', form)}*{card}*10.5*111111")
    assert reply.startswith("交易成功！卡尾号" + card[-4:] + "储值充值10.50元，余额11.50元，流水"), reply
    after = await w.state(card)
    assert after["purse"] == before["purse"] + 1050
    assert after["merchant_accounts"] == before["merchant_accounts"] - 1050
    assert after["trades"] == before["trades"] + 1
    assert int(stance_of(reply)) == after["stance_seq"]


@pytest.mark.parametrize("form", FORMS)
async def test_czxf_consume_takes_yuan_from_the_card(w: SmsWorld, form: str, audited: None) -> None:
    card = await w.card(balance=5000)
    reply = await w.send(f"{code_of('CZXF', form)}*{card}*10.5*111111*888")
    assert reply.startswith("交易成功！") and "储值消费10.50元，余额39.50元" in reply, reply
    assert (await w.state(card))["purse"] == 3950


@pytest.mark.parametrize("form", FORMS)
async def test_jflj_accumulates_points_for_a_yuan_amount(w: SmsWorld, form: str, audited: None) -> None:
    card = await w.card(points=5)
    reply = await w.send(f"{code_of('JFLJ', form)}*{card}*10.5")  # 1050 cents at 100 cents a point
    assert "积分累加10分，积分余额15分" in reply, reply
    assert (await w.state(card))["points"] == 15


@pytest.mark.parametrize("form", FORMS)
async def test_jfxf_consumes_whole_points(w: SmsWorld, form: str, audited: None) -> None:
    card = await w.card(points=60)
    reply = await w.send(f"{code_of('JFXF', form)}*{card}*50*888")
    assert "积分消费50分，积分余额10分" in reply, reply
    assert (await w.state(card))["points"] == 10


@pytest.mark.parametrize("form", FORMS)
async def test_jycx_cancels_the_trade_its_serial_names(w: SmsWorld, form: str, audited: None) -> None:
    card = await w.card(balance=5000, points=100)
    consumed = stance_of(await w.send(f"CZXF*{card}*12*111111"))
    used = stance_of(await w.send(f"JFXF*{card}*30"))
    reply = await w.send(f"{code_of('JYCX', form)}*{card}*{consumed}")
    assert reply.startswith("交易成功！") and "消费撤销12.00元，余额50.00元" in reply, reply
    reply = await w.send(f"{code_of('JYCX', form)}*{card}*{int(used)}")  # a short serial is zero-padded
    assert "积分消费撤销30分，积分余额100分" in reply, reply
    state = await w.state(card)
    assert (state["purse"], state["points"]) == (5000, 100)
    again = await assert_unchanged(w, card, w.send(f"JYCX*{card}*{consumed}"))
    assert "(63)" in again


@pytest.mark.parametrize("form", FORMS)
async def test_yecx_answers_the_balance_with_a_serial(w: SmsWorld, form: str) -> None:
    card = await w.card(balance=12345)
    reply = await w.send(f"{code_of('YECX', form)}*{card}")
    assert reply.startswith(f"交易成功！卡尾号{card[-4:]}余额123.45元，流水"), reply
    assert (await w.state(card))["purse"] == 12345


@pytest.mark.parametrize("form", FORMS)
async def test_jfcx_answers_the_points(w: SmsWorld, form: str) -> None:
    card = await w.card(points=77)
    reply = await w.send(f"{code_of('JFCX', form)}*{card}")
    assert reply.startswith(f"交易成功！卡尾号{card[-4:]}积分余额77分，流水"), reply


@pytest.mark.parametrize("form", FORMS)
async def test_hmbd_binds_a_mobile_or_an_id_number(w: SmsWorld, form: str) -> None:
    card, mobile = await w.card(), new_mobile()
    reply = await w.send(f"{code_of('HMBD', form)}*{card}*111111*{mobile}")
    assert reply == f"卡尾号{card[-4:]}绑定成功:被绑定手机/身份证号码：{mobile}！"
    reply = await w.send(f"{code_of('HMBD', form)}*{card}*111111*11010519491231002x")
    assert "绑定成功" in reply and "11010519491231002X" in reply
    row = (await w.state(card))["card"]
    assert (row["bound_mobile"], row["bound_id_no"]) == (mobile, "11010519491231002X")


@pytest.mark.parametrize("form", FORMS)
async def test_bdcx_unbinds_the_mobile(w: SmsWorld, form: str) -> None:
    card, mobile = await w.card(), new_mobile()
    await w.bind(card, mobile)
    reply = await w.send(f"{code_of('BDCX', form)}*{card}*111111*{mobile}")
    assert reply == f"卡尾号{card[-4:]}绑定撤销成功！"
    assert (await w.state(card))["card"]["bound_mobile"] is None


@pytest.mark.parametrize("form", FORMS)
async def test_mmxg_changes_the_password_given_the_old_one(w: SmsWorld, form: str) -> None:
    card = await w.card()
    assert await w.send(f"{code_of('MMXG', form)}*{card}*111111*246810") == f"卡尾号{card[-4:]}密码修改成功!"
    assert await w.password_is(card, "246810")
    wrong = await w.send(f"{code_of('MMXG', form)}*{card}*111111*135790")
    assert wrong == f"卡尾号{card[-4:]}密码修改失败(46)：本卡原密码输入不正确!"
    assert await w.password_is(card, "246810")


@pytest.mark.parametrize("form", FORMS)
async def test_mmcz_resets_the_password_of_a_card_the_operators_merchant_issued(w: SmsWorld, form: str) -> None:
    card = await w.card()
    assert await w.send(f"{code_of('MMCZ', form)}*{card}*654321") == f"卡尾号{card[-4:]}密码重置成功!"
    assert await w.password_is(card, "654321")


async def test_mmcz_of_another_issuers_card_is_refused(w: SmsWorld, pool: Any, test_keys: Any,
                                                       platform: Any) -> None:
    other = await make_sms_world(pool, test_keys[0], platform.http_port)
    card = await other.card()
    reply = await assert_unchanged(w, card, w.send(f"MMCZ*{card}*654321"))
    assert "(52)" in reply and await w.password_is(card, "111111")


async def test_lower_case_letters_and_spaces_and_full_width_forms_are_read(w: SmsWorld, audited: None) -> None:
    card = await w.card(balance=100)
    assert "余额1.00元" in await w.send(f" yecx * {card[:8]} {card[8:]} ")
    full_width = f"ＣＺＣＺ＊{card}＊１０＊１１１１１１".translate({ord(c): ord(c) + 0xFEE0 for c in card})
    assert "储值充值10.00元，余额11.00元" in await w.send(full_width)


async def test_eight_digit_card_numbers_are_expanded_with_the_operators_merchant(w: SmsWorld) -> None:
    card = await w.card(balance=250)
    assert card[4:8] == w.world.merchant_code
    assert "余额2.50元" in await w.send(f"YECX*{card[8:]}")


# --- amounts ---------------------------------------------------------------------------------


async def test_amount_10_5_is_1050_cents(w: SmsWorld, audited: None) -> None:
    card = await w.card(balance=2000)
    await w.send(f"CZXF*{card}*10.5*111111")
    assert (await w.state(card))["purse"] == 950


@pytest.mark.parametrize("amount", ["10.555", "-1", "1e3", "0", "0.00", ".5", "10.", "1,000", "١٠", "10元",
                                    "99999999999", "0x10", "+5", "NaN"])
async def test_malformed_amounts_are_refused_and_change_nothing(w: SmsWorld, amount: str) -> None:
    card = await w.card(balance=5000)
    for command in ("CZCZ", "CZXF"):
        reply = await assert_unchanged(w, card, w.send(f"{command}*{card}*{amount}*111111"))
        assert reply.startswith("金额输入错误！"), reply
    reply = await assert_unchanged(w, card, w.send(f"JFLJ*{card}*{amount}"))
    assert reply.startswith("金额输入错误！"), reply


async def test_full_width_digits_are_normalised_deliberately(w: SmsWorld, audited: None) -> None:
    card = await w.card(balance=5000)
    assert "储值消费10.00元，余额40.00元" in await w.send(f"CZXF*{card}*１０*111111")
    assert (await w.state(card))["purse"] == 4000


async def test_amount_above_the_card_service_maximum_is_refused(w: SmsWorld, platform: Any) -> None:
    card = await w.card(balance=5000)
    with settings_changed(platform, kkt_max_amount_cents=1000):
        reply = await assert_unchanged(w, card, w.send(f"CZXF*{card}*10.01*111111"))
    assert "储值消费失败(02)" in reply


@pytest.mark.parametrize("points", ["10.5", "-1", "0", "1e3"])
async def test_points_must_be_a_positive_whole_number(w: SmsWorld, points: str) -> None:
    card = await w.card(points=100)
    reply = await assert_unchanged(w, card, w.send(f"JFXF*{card}*{points}"))
    assert reply.startswith("积分输入错误！")


# --- refusals of the card service, nothing changed ----------------------------------------


async def test_wrong_card_password_is_refused_and_counted(w: SmsWorld) -> None:
    card = await w.card(balance=5000)
    before = await w.state(card)
    reply = await w.send(f"CZXF*{card}*1*999999")
    assert reply == f"卡尾号{card[-4:]}储值消费失败(07)：校验失败，密码错误！"
    after = await w.state(card)
    assert after["card"]["password_failures"] == before["card"]["password_failures"] + 1
    after["card"]["password_failures"] = before["card"]["password_failures"]
    assert after == before


async def test_insufficient_balance_answers_08_and_moves_nothing(w: SmsWorld) -> None:
    card = await w.card(balance=100)
    reply = await assert_unchanged(w, card, w.send(f"CZXF*{card}*1.01*111111"))
    assert "储值消费失败(08)：卡的可用额度不够！" in reply


async def test_unknown_card_answers_05(w: SmsWorld) -> None:
    reply = await w.send(f"YECX*1680{w.world.merchant_code}99999999")
    assert "(05)" in reply


async def test_disabled_operator_terminal_answers_70(w: SmsWorld, pool: Any) -> None:
    card = await w.card(balance=100)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE terminals SET enabled = false WHERE code = $1", w.sms_terminal)
    reply = await assert_unchanged(w, card, w.send(f"CZXF*{card}*1*111111"))
    assert "(70)" in reply


async def test_a_repeated_gateway_message_id_replays_the_first_answer(w: SmsWorld, audited: None) -> None:
    card = await w.card(balance=1000)
    first = await w.send(f"CZXF*{card}*1*111111", id="kannel-0001")
    state = await w.state(card)
    assert await w.send(f"CZXF*{card}*1*111111", id="kannel-0001") == first
    assert await w.state(card) == state


# --- malformed messages ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["HELLO", "", "*", "1234*1680000000000000", "CZC*1", "YECXX*1", "帮助",
                                  "ＹＥＣＸ１", "\x00YECX*1", "YECX\u200b*1680000000000000"])
async def test_unknown_commands_answer_help_and_change_nothing(w: SmsWorld, text: str) -> None:
    card = await w.card(balance=100)
    reply = await assert_unchanged(w, card, w.send(text))
    assert reply.startswith("无法识别的指令。"), reply


WRONG_COUNTS = {
    "CZCZ": ["{card}*10", "{card}*10*111111*888*1"],
    "CZXF": ["{card}", "{card}*10*111111*888*1"],
    "JFLJ": ["{card}", "{card}*10*888*1"],
    "JFXF": ["{card}", "{card}*10*888*1"],
    "JYCX": ["{card}", "{card}*00000001*1"],
    "YECX": ["", "{card}*1"],
    "JFCX": ["", "{card}*111111"],
    "HMBD": ["{card}*111111", "{card}*111111*13800000000*1"],
    "BDCX": ["{card}*111111", "{card}*111111*13800000000*1"],
    "MMXG": ["{card}*111111", "{card}*111111*222222*333333"],
    "MMCZ": ["{card}", "{card}*111111*222222"],
}


@pytest.mark.parametrize("command", list(WRONG_COUNTS))
async def test_wrong_field_counts_answer_the_usage_and_change_nothing(w: SmsWorld, command: str) -> None:
    card = await w.card(balance=5000, points=100)
    for fields in WRONG_COUNTS[command]:
        for code in (command, sms.BY_CODE[command].digits):
            text = f"{code}*{fields.format(card=card)}" if fields else code
            reply = await assert_unchanged(w, card, w.send(text))
            assert reply == f"格式错误，应为{sms.BY_CODE[command].usage}", (text, reply)


async def test_malformed_fields_are_refused_before_the_card_service(w: SmsWorld) -> None:
    card = await w.card(balance=5000)
    cases = {
        f"CZXF*{card}1*1*111111": "卡号输入错误！",
        f"CZXF*{card}*1*11111": "卡密码应为6位数字",
        f"CZXF*{card}*1*111111*88A": "服务代码应为数字",
        f"JYCX*{card}*123456789": "流水号输入错误！",
        f"MMXG*{card}*111111*12345a": "新密码应为6位数字",
        f"HMBD*{card}*111111*138-0000-0000": "请求绑定的手机/身份证号码错误!",
    }
    for text, expected in cases.items():
        assert (await assert_unchanged(w, card, w.send(text))).startswith(expected), text


async def test_an_overlong_message_is_refused_unread(w: SmsWorld, platform: Any) -> None:
    card = await w.card(balance=5000)
    limit = platform.ctx.settings.sms_max_message_chars
    text = f"CZXF*{card}*1*111111*888" + " " * (limit - len(f"CZXF*{card}*1*111111*888") + 1)
    reply = await assert_unchanged(w, card, w.send(text))
    assert reply.startswith(f"短信过长(最多{limit}字)")
    assert (await assert_unchanged(w, card, w.send("9" * 5000))).startswith("短信过长")


# --- the cardholder ---------------------------------------------------------------------------


async def test_cardholder_queries_a_card_bound_to_their_number(w: SmsWorld) -> None:
    card, holder = await w.card(balance=888, points=9), new_mobile()
    await w.bind(card, holder)
    assert "余额8.88元" in await w.send(f"YECX*{card}", sender=holder)
    assert "积分余额9分" in await w.send(f"5329*{card[8:]}", sender="+86" + holder)  # short number, +86
    async with w.pool.acquire() as conn:
        terminals = await conn.fetch("SELECT DISTINCT terminal_code FROM kkt_trades WHERE card_no = $1", card)
    assert [r["terminal_code"] for r in terminals] == [f"SMSH{w.world.merchant_code}"]


async def test_cardholder_cannot_act_on_a_card_not_bound_to_them(w: SmsWorld) -> None:
    card, holder, other = await w.card(balance=500), new_mobile(), new_mobile()
    await w.bind(card, other)
    for text in (f"YECX*{card}", f"JFCX*{card[8:]}", f"MMXG*{card}*111111*222222",
                 f"BDCX*{card}*111111*{other}", f"HMBD*{card}*111111*{holder}"):
        assert await assert_unchanged(w, card, w.send(text, sender=holder)) == sms.NOT_BOUND, text
    unbound = await w.card(balance=500)
    assert await assert_unchanged(w, unbound, w.send(f"YECX*{unbound}", sender=holder)) == sms.NOT_BOUND
    assert await w.password_is(card, "111111")


@pytest.mark.parametrize("text", ["CZCZ*{card}*1*111111", "CZXF*{card}*1*111111", "JFLJ*{card}*1",
                                  "JFXF*{card}*1", "JYCX*{card}*00000001", "MMCZ*{card}*222222"])
async def test_cardholder_cannot_move_money_cancel_or_reset(w: SmsWorld, text: str) -> None:
    card, holder = await w.card(balance=500, points=10), new_mobile()
    await w.bind(card, holder)
    reply = await assert_unchanged(w, card, w.send(text.format(card=card), sender=holder))
    assert "须由商户操作员办理" in reply


async def test_cardholder_changes_password_binds_id_and_unbinds_with_the_password(w: SmsWorld) -> None:
    card, holder = await w.card(), new_mobile()
    await w.bind(card, holder)
    wrong = await w.send(f"HMBD*{card}*999999*110105194912310021", sender=holder)
    assert "(07)" in wrong
    assert "绑定成功" in await w.send(f"HMBD*{card}*111111*110105194912310021", sender=holder)
    assert "密码修改成功" in await w.send(f"MMXG*{card}*111111*222222", sender=holder)
    assert await w.password_is(card, "222222")
    assert "绑定撤销成功" in await w.send(f"BDCX*{card}*222222*{holder}", sender=holder)
    assert await w.send(f"YECX*{card}", sender=holder) == sms.NOT_BOUND


# --- the gateway: secret, methods, conventions ------------------------------------------------


async def test_missing_or_wrong_secret_is_403_and_changes_nothing(w: SmsWorld) -> None:
    card = await w.card(balance=5000)
    params = {"from": w.operator, "to": "10658000", "text": f"CZXF*{card}*1*111111"}
    before = await w.state(card)
    for extra, headers in (({}, {}), ({"secret": "wrong"}, {}), ({"secret": ""}, {}),
                           ({}, {"X-SMS-Secret": "wrong"}), ({"secret": SECRET + "x"}, {}),
                           ({"secret": SECRET[:-1]}, {})):
        reply = await send_raw(w.url, {**params, **extra}, headers=headers)
        assert (reply.status, reply.text) == (403, "forbidden"), (extra, headers)
    assert await w.state(card) == before
    assert (await send_raw(w.url, params, headers={"X-SMS-Secret": SECRET})).status == 200


async def test_an_unset_secret_disables_the_hook(w: SmsWorld, platform: Any) -> None:
    card = await w.card(balance=5000)
    before = await w.state(card)
    with settings_changed(platform, sms_shared_secret=None):
        reply = await send_raw(w.url, {"secret": SECRET, "from": w.operator, "text": f"CZXF*{card}*1*111111"})
    assert reply.status == 403
    assert await w.state(card) == before


async def test_a_client_outside_the_allowed_networks_is_403_even_with_the_secret(w: SmsWorld, platform: Any) -> None:
    card = await w.card(balance=5000)
    params = {"secret": SECRET, "from": w.operator, "text": f"YECX*{card}"}
    with settings_changed(platform, sms_allowed_networks="10.20.0.0/16, 192.0.2.7"):
        assert (await send_raw(w.url, params)).status == 403  # the test client is 127.0.0.1
    with settings_changed(platform, sms_allowed_networks="10.20.0.0/16,127.0.0.0/8"):
        assert (await send_raw(w.url, params)).status == 200


async def test_post_form_and_kannel_post_url_bodies(w: SmsWorld, audited: None) -> None:
    card = await w.card(balance=5000)
    form = await send_raw(w.url, {}, method="POST",
                          data={"secret": SECRET, "from": w.operator, "to": "10658000", "text": f"YECX*{card}"})
    assert form.status == 200 and "余额50.00元" in form.text
    # Kannel post-url: the text is the body in its charset, the numbers in X-Kannel-* headers
    body = f"ＣＺＸＦ*{card}*1*111111".encode("utf-16-be")
    kannel = await send_raw(w.url, {}, method="POST", data=body, headers={
        "Content-Type": "text/plain; charset=UTF-16BE", "X-Kannel-From": "+86" + w.operator,
        "X-Kannel-To": "10658000", "X-SMS-Secret": SECRET})
    assert kannel.status == 200 and "储值消费1.00元，余额49.00元" in kannel.text, kannel


async def test_malformed_gateway_requests_are_400_and_change_nothing(w: SmsWorld) -> None:
    card = await w.card(balance=5000)
    before = await w.state(card)
    text = f"CZXF*{card}*1*111111"
    for params in ({"text": text}, {"from": "not-a-number", "text": text},
                   {"from": w.operator, "text": text, "id": "bad id!"},
                   {"from": w.operator, "text": text, "id": ""}):  # chaos seed 1870027274: an empty id was read as none
        reply = await send_raw(w.url, {"secret": SECRET, **params})
        assert reply.status == 400, params
    bad_body = await send_raw(w.url, {"secret": SECRET, "from": w.operator}, method="POST", data=b"\xff\xfe\xfa",
                              headers={"Content-Type": "text/plain; charset=utf-8"})
    assert bad_body.status == 400
    assert await w.state(card) == before


async def test_a_busy_database_is_answered_with_a_text_not_a_5xx(w: SmsWorld, platform: Any) -> None:
    card = await w.card(balance=5000)
    pool = platform.ctx.pool
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        with settings_changed(platform, pool_acquire_timeout_s=0.05):
            reply = await w.send(f"CZXF*{card}*1*111111")
    finally:
        for conn in held:
            await pool.release(conn)
    assert reply == sms.BUSY
    assert (await w.state(card))["purse"] == 5000


async def test_requests_are_counted_by_command_and_outcome(w: SmsWorld) -> None:
    card = await w.card(balance=100)

    def count(command: str, outcome: str) -> float:
        value = REGISTRY.get_sample_value("recharge_sms_requests_total", {"command": command, "outcome": outcome})
        return value or 0.0

    before = {k: count(*k) for k in (("YECX", "11"), ("CZXF", "08"), ("unknown", "unknown_command"),
                                     ("none", "forbidden"))}
    await w.send(f"9329*{card}")
    await w.send(f"CZXF*{card}*5*111111")
    await w.send("HELLO")
    await send_raw(w.url, {"from": w.operator, "text": "YECX"})
    for key, value in before.items():
        assert count(*key) == value + 1, key


async def test_head_requests_run_nothing(w: SmsWorld) -> None:
    card = await w.card(balance=5000)
    before = await w.state(card)
    reply = await send_raw(w.url, {"secret": SECRET, "from": w.operator, "text": f"CZXF*{card}*1*111111"},
                           method="HEAD")
    assert reply.status == 405
    assert await w.state(card) == before
