"""The SMS command language without sockets or a database: seed 000's table, both forms of
every code, field rules, amounts, and replies that always fit one Chinese SMS."""

from __future__ import annotations

import itertools

import pytest

from http_api.sms import authorised, normalise_msisdn
from recharge.kkt import service as kkt
from recharge.kkt import sms

LIMIT = 160
SEED_TABLE = {  # seed 000: operation name, letter code, digit code
    "储值充值": ("CZCZ", "2929"), "储值消费": ("CZXF", "2993"), "积分累加": ("JFLJ", "5355"),
    "积分消费": ("JFXF", "5393"), "交易撤销": ("JYCX", "5929"), "余额查询": ("YECX", "9329"),
    "积分查询": ("JFCX", "5329"), "号码绑定": ("HMBD", "4623"), "绑定撤销": ("BDCX", "2329"),
    "密码修改": ("MMXG", "6694"), "密码重置": ("MMCZ", "6629"),
}
CARD = "1680100100000001"
VALID = {  # one well-formed message per command (fields after the code)
    "CZCZ": f"{CARD}*10.5*123456*12", "CZXF": f"{CARD}*10.5*123456*888", "JFLJ": f"{CARD}*10.5*888",
    "JFXF": f"{CARD}*50*888", "JYCX": f"{CARD}*00000001", "YECX": CARD, "JFCX": CARD,
    "HMBD": f"{CARD}*123456*13811111111", "BDCX": f"{CARD}*123456*13811111111",
    "MMXG": f"{CARD}*111111*123456", "MMCZ": f"{CARD}*111111",
}


def ok(text: str) -> sms.SmsCommand:
    parsed = sms.parse(text, LIMIT)
    assert isinstance(parsed, sms.SmsCommand), parsed
    return parsed


def rejected(text: str, max_chars: int = LIMIT) -> sms.Rejected:
    parsed = sms.parse(text, max_chars)
    assert isinstance(parsed, sms.Rejected), parsed
    return parsed


def test_the_command_table_is_seed_000s_with_keypad_digits_derived_from_the_letters() -> None:
    assert {c.name: (c.code, c.digits) for c in sms.COMMANDS} == SEED_TABLE
    assert len(sms.BY_CODE) == 22  # no digit code collides with another
    assert sms.keypad_digits("YECX") == "9329"  # the seed's worked example: Y(u)EC(ha)X(un)


@pytest.mark.parametrize(("code", "form"), list(itertools.product(VALID, ("letters", "digits", "lower"))))
def test_every_command_parses_in_letter_digit_and_lower_case_form(code: str, form: str) -> None:
    command = sms.BY_CODE[code]
    typed = {"letters": code, "digits": command.digits, "lower": code.lower()}[form]
    parsed = ok(f"{typed}*{VALID[code]}")
    assert parsed.command is command and parsed.card == CARD


def test_fields_land_where_the_seed_puts_them() -> None:
    assert ok(f"CZCZ*{CARD}*10.5*123456*12") == sms.SmsCommand(
        sms.BY_CODE["CZCZ"], CARD, amount_cents=1050, password="123456", item_code="012")
    assert ok(f"JFXF*{CARD}*50*888") == sms.SmsCommand(sms.BY_CODE["JFXF"], CARD, points=50, item_code="888")
    assert ok(f"JYCX*{CARD}*1").serial == "00000001"
    assert ok(f"MMXG*{CARD}*111111*123456") == sms.SmsCommand(
        sms.BY_CODE["MMXG"], CARD, password="111111", new_password="123456")
    assert ok(f"MMCZ*{CARD}*111111").new_password == "111111"
    assert ok(f"HMBD*{CARD}*123456*13811111 111").id_num == "13811111111"
    assert ok("YECX*00000001").card == "00000001"
    assert ok(f"CZXF*{CARD}*10*123456*").item_code is None  # a trailing * is ignored


@pytest.mark.parametrize(("raw", "cents"), [("10.5", 1050), ("10.50", 1050), ("100", 10000), ("0.01", 1),
                                            ("00100.00", 10000), ("9999999999.99", 999999999999)])
def test_yuan_amounts_become_cents(raw: str, cents: int) -> None:
    assert sms.parse_yuan(raw) == cents
    assert ok(f"CZXF*{CARD}*{raw}*123456").amount_cents == cents


@pytest.mark.parametrize("raw", ["10.555", "-1", "1e3", "0", "0.0", "0.00", ".5", "10.", "1,5", "10 元", "",
                                 "١٠", "१०", "²", "10000000000", "+1", "0x1", "inf", "NaN", "1_000"])
def test_malformed_yuan_amounts_are_rejected(raw: str) -> None:
    assert sms.parse_yuan(raw) is None
    assert rejected(f"CZXF*{CARD}*{raw}*123456").outcome == "bad_amount"


def test_full_width_digits_are_normalised_and_other_unicode_digits_are_not() -> None:
    assert ok(f"CZXF*{CARD}*１０*123456").amount_cents == 1000
    assert ok("２９２９＊" + CARD + "＊１０．５＊１２３４５６").amount_cents == 1050
    assert ok(f"ｙｅｃｘ　*{CARD}").command.code == "YECX"  # full-width letters, ideographic space
    assert rejected(f"CZXF*{CARD}*١٠*123456").outcome == "bad_amount"  # Arabic-Indic digits
    assert rejected(f"YECX*{'①' * 16}").outcome == "bad_card"


def test_whitespace_anywhere_is_dropped() -> None:
    assert ok(f" C Z C Z \t* {CARD[:5]} {CARD[5:]} *\n10.5* 123 456 ").amount_cents == 1050


@pytest.mark.parametrize("text", ["", "   ", "*", "**", "HELLO", "1234*5", "YECXX*" + CARD, "YEC*" + CARD,
                                  "帮助", "ΥECX*" + CARD, "9329" + CARD, "\x00"])
def test_unknown_commands_are_rejected_with_help(text: str) -> None:
    result = rejected(text)
    assert result.outcome in ("unknown_command", "empty") and result.reply.startswith("无法识别的指令。")
    assert result.command is None


@pytest.mark.parametrize("code", list(VALID))
def test_too_few_or_too_many_fields_answer_the_usage(code: str) -> None:
    command = sms.BY_CODE[code]
    fields = VALID[code].split("*")
    for wrong in (fields[: len(command.required) - 1], fields + ["1"] * (len(command.optional) + 1)):
        text = "*".join([code, *wrong])
        result = rejected(text)
        assert (result.outcome, result.reply, result.command) == ("field_count", f"格式错误，应为{command.usage}",
                                                                  command), text


@pytest.mark.parametrize(("text", "outcome"), [
    (f"YECX*{CARD}1", "bad_card"), ("YECX*1234567", "bad_card"), ("YECX*16801001000000001", "bad_card"),
    ("YECX*12345678a", "bad_card"), (f"JFXF*{CARD}*1.5", "bad_points"), (f"JFXF*{CARD}*0", "bad_points"),
    (f"CZXF*{CARD}*1*12345", "bad_password"), (f"CZXF*{CARD}*1*1234567", "bad_password"),
    (f"CZXF*{CARD}*1*abcdef", "bad_password"), (f"CZXF*{CARD}*1*123456*12a", "bad_item"),
    (f"CZXF*{CARD}*1*123456*123456789", "bad_item"), (f"JYCX*{CARD}*123456789", "bad_serial"),
    (f"JYCX*{CARD}*", "field_count"), (f"JYCX*{CARD}*-1", "bad_serial"), (f"MMXG*{CARD}*111111*1", "bad_password"),
    (f"HMBD*{CARD}*123456*1381111111111111111", "bad_id_num"), (f"HMBD*{CARD}*123456*138-1111", "bad_id_num"),
])
def test_malformed_fields_are_rejected_with_a_reason(text: str, outcome: str) -> None:
    assert rejected(text).outcome == outcome


def test_a_message_over_the_limit_is_rejected_before_it_is_read() -> None:
    text = f"YECX*{CARD}"
    assert isinstance(sms.parse(text, len(text)), sms.SmsCommand)
    result = rejected(text + " ", len(text))
    assert result.outcome == "too_long" and result.reply.startswith(f"短信过长(最多{len(text)}字)")


# --- replies ---------------------------------------------------------------------------------

BIG = 10**12  # larger than any balance the card service allows


def test_every_reply_of_every_command_and_return_code_fits_one_sms() -> None:
    longest_id = "11010519491231002X"
    for command, code, points_trade in itertools.product(sms.COMMANDS, [*kkt.TEXTS, "99"], (False, True)):
        # absurd numbers are cut to fit; realistic extremes (the largest amount the card service
        # takes, a 100-million-yuan balance) fit whole
        for value, limit in ((BIG, 70), (10**10, 1000)):
            result = kkt.TradeResult(code, CARD, "99999999", value, value if points_trade else None, value,
                                     value, value, "积分消费撤销", "x", text_code=code, id_num=longest_id)
            for reply in (sms.trade_reply(command, result, limit), sms.account_reply(command, result, limit)):
                assert sms.sms_chars(reply) <= 70, reply
    fixed = [sms.HELP, sms.NOT_BOUND, sms.BUSY, *(c.name + sms.HOLDER_FORBIDDEN for c in sms.COMMANDS)]
    for text in fixed + [rejected("x" * 200).reply, *(rejected(c.code).reply for c in sms.COMMANDS)]:
        assert sms.sms_chars(text) <= 70, text


def test_success_replies_carry_the_result_the_movement_the_balance_and_the_serial() -> None:
    consume = kkt.TradeResult("11", CARD, "00000042", 8950, None, 8950, 1050, 0, "储值消费")
    assert sms.trade_reply(sms.BY_CODE["CZXF"], consume, 70) == \
        "交易成功！卡尾号0001储值消费10.50元，余额89.50元，流水00000042"
    points = kkt.TradeResult("11", CARD, "00000043", 0, 60, 60, 1050, 10, "积分累加")
    assert sms.trade_reply(sms.BY_CODE["JFLJ"], points, 70) == "交易成功！卡尾号0001积分累加10分，积分余额60分，流水00000043"
    query = kkt.TradeResult("11", CARD, "00000044", 5, None, 5)
    assert sms.trade_reply(sms.BY_CODE["YECX"], query, 70) == "交易成功！卡尾号0001余额0.05元，流水00000044"
    refused = kkt.TradeResult("08", CARD)
    assert sms.trade_reply(sms.BY_CODE["CZXF"], refused, 70) == "卡尾号0001储值消费失败(08)：卡的可用额度不够！"


def test_fit_cuts_in_ucs2_units_with_an_ellipsis() -> None:
    assert sms.fit("余额" * 10, 70) == "余额" * 10
    cut = sms.fit("余" * 100, 70)
    assert cut.endswith("…") and sms.sms_chars(cut) == 70
    assert sms.sms_chars(sms.fit("😀" * 50, 70)) <= 70  # outside the BMP: two units each


def test_yuan_formats_cents_with_two_decimals() -> None:
    assert [sms.yuan(c) for c in (0, 5, 1050, 123456, -250)] == ["0.00", "0.05", "10.50", "1234.56", "-2.50"]


# --- the gateway's fields ----------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("13811111111", "13811111111"), ("+8613811111111", "13811111111"), ("8613811111111", "13811111111"),
    ("008613811111111", "13811111111"), (" 13811111111 ", "13811111111"), ("+447700900123", "447700900123"),
    ("10658000", "10658000"), ("", None), (None, None), ("138-1111-1111", None), ("abc", None),
    ("1" * 21, None), ("+", None),
])
def test_sender_numbers_are_normalised_to_mainland_mobiles(raw: str | None, expected: str | None) -> None:
    assert normalise_msisdn(raw) == expected


def test_the_secret_comparison_refuses_missing_wrong_and_unset() -> None:
    assert authorised("s3cret", "s3cret")
    assert not authorised("s3cre", "s3cret")
    assert not authorised("", "s3cret") and not authorised(None, "s3cret")
    assert not authorised("", "") and not authorised("x", None) and not authorised(None, None)
    assert authorised("密钥", "密钥")
