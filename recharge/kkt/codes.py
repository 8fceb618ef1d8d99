"""The card service's return codes (seed 002's ``00``–``71``) and their texts, Chinese or English.

``OK`` is ``11``; ``text(code, chinese)`` is the seed's text for a code (``{IDNUM}`` filled
in), ``非法操作！`` / ``Illegal operation!`` for a code the seed does not list. ``LANG=GB2312``
(any case) selects Chinese: ``is_chinese``.
"""

from __future__ import annotations

CHINESE = "GB2312"  # LANG value that selects Chinese texts (case-insensitive); else English

OK = "11"
TEXTS: dict[str, tuple[str, str]] = {
    "00": ("交易失败！", "Transaction failed!"),
    "01": ("卡号输入错误！", "Card number is malformed!"),
    "02": ("交易金额输入错误！", "Amount is malformed!"),
    "03": ("交易类型校验错误！", "Trade type is invalid!"),
    "04": ("交易模式校验错误！", "Trade mode is invalid!"),
    "05": ("卡号不存在！", "Card does not exist!"),
    "06": ("原始交易校验失败！", "Original transaction check failed!"),
    "07": ("校验失败，密码错误！", "Check failed: wrong password!"),
    "08": ("卡的可用额度不够！", "Insufficient card balance!"),
    "09": ("卡单笔交易额度超出限额", "Amount exceeds the card's per-transaction limit"),
    "10": ("卡有效期已过！", "Card has expired!"),
    "11": ("交易成功！", "Transaction succeeded!"),
    "12": ("重复交易！", "Duplicate transaction!"),
    "13": ("此卡启用时间未到！", "Card is not valid yet!"),
    "14": ("此卡已挂失！", "Card is reported lost!"),
    "15": ("此卡已注销！", "Card is cancelled!"),
    "16": ("积分规则不存在！", "No points rule exists!"),
    "17": ("此卡尚未被激活，请先激活后再交易！", "Card is not activated; activate it first!"),
    "18": ("自动冲正成功！", "Automatic reversal succeeded!"),
    "19": ("此卡已补办！", "Card has been reissued!"),
    "20": ("积分卡不能进行储值相关操作！", "A points card cannot do stored-value trades!"),
    "21": ("转入卡号与转出卡号不能相同！", "Source and target cards must differ!"),
    "22": ("请输入转帐交易中的转出卡号！", "Enter the source card of the transfer!"),
    "23": ("转入卡启用时间未到！", "Target card is not valid yet!"),
    "24": ("转入卡已挂失！", "Target card is reported lost!"),
    "25": ("转入卡已注销！", "Target card is cancelled!"),
    "26": ("转入卡号不支持储值功能！", "Target card does not support stored value!"),
    "27": ("转入卡号不支持积分功能！", "Target card does not support points!"),
    "28": ("请正确设置次卡的次数和价格！", "Set the count card's uses and price correctly!"),
    "31": ("此卡不支持储值卡功能！", "Card does not support stored value!"),
    "32": ("此卡不支持积分卡功能！", "Card does not support points!"),
    "40": ("绑定成功:被绑定手机/身份证号码：{IDNUM}！", "Bound: mobile/ID number {IDNUM}!"),
    "41": ("请求绑定的手机/身份证号码错误!", "The mobile/ID number to bind is invalid!"),
    "42": ("此卡号已和其他手机/身份证绑定!", "Card is already bound to another mobile/ID number!"),
    "43": ("此卡号在系统中没有与之绑定的手机号码/身份证!", "Card has no such bound mobile/ID number!"),
    "44": ("绑定撤销成功！", "Binding removed!"),
    "45": ("密码修改成功!", "Password changed!"),
    "46": ("本卡原密码输入不正确!", "The card's old password is wrong!"),
    "47": ("密码重置成功!", "Password reset!"),
    "50": ("非法版本网关！", "Illegal gateway version!"),
    "51": ("网关服务关闭，暂停交易！", "Gateway closed; trading suspended!"),
    "52": ("请确认所领卡为本发卡商户所申请之卡！", "Card was not issued by this merchant!"),
    "53": ("领卡失败，请确认卡号已生成且废卡回收卡不能领卡", "Activation failed: card not generated, or scrapped"),
    "54": ("发卡商户帐户余额不足，不足以对此卡充值", "Issuing merchant's fund is insufficient for this recharge"),
    "55": ("领卡成功，充值失败", "Card activated; recharge failed"),
    "56": ("领卡失败！", "Activation failed!"),
    "57": ("领卡成功！", "Card activated!"),
    "58": ("终端当天最大充值额已达到！", "Terminal's daily recharge maximum reached!"),
    "59": ("领卡失败，持卡人手机号码在系统中已存在！", "Activation failed: holder's mobile already exists!"),
    "60": ("商户被封闭，请联系发卡机构", "Merchant is closed; contact the issuer"),
    "61": ("输入交易流水号不存在！", "Serial number does not exist!"),
    "62": ("此交易流水号为已撤销交易流水号！", "This serial is itself a cancellation!"),
    "63": ("此交易已经被撤销！", "This trade is already cancelled!"),
    "64": ("不能撤销不同消费商户所做交易！", "Cannot cancel another consuming merchant's trade!"),
    "65": ("消费商户余额不足，不能对此卡充值！", "Consuming merchant's fund is insufficient!"),
    "66": ("积分卡积分余额不足，不能进行积分消费！", "Insufficient points!"),
    "67": ("已达到当天最大交易次数！", "Daily trade count reached!"),
    "68": ("测试模式下当天交易次数不能超过100！", "Test mode: at most 100 trades a day!"),
    "69": ("此卡已冻结！", "Card is frozen!"),  # the seed's unnumbered "frozen" text; 69 is ours
    "70": ("非网关支持POS机具！", "Terminal is not supported by the gateway!"),
    "71": ("请确认在系统中已申请考勤服务!", "Attendance service is not enabled!"),
}
ILLEGAL = ("非法操作！", "Illegal operation!")
# Busy: the platform is saturated or its database unreachable. The gateway answers the seed's
# "not trading now" code 51 with this text and HTTP 503 (Retry-After); nothing was done, and a
# retry with the same REQID is safe. 51 with HTTP 200 is the operator's closed gateway.
BUSY = "51"
BUSY_TEXTS = ("系统繁忙，请稍后再试", "System busy; retry later")


def busy_text(chinese: bool) -> str:
    return BUSY_TEXTS[0] if chinese else BUSY_TEXTS[1]


def is_chinese(lang: str | None) -> bool:
    return (lang or "").strip().upper() == CHINESE


def text(code: str, chinese: bool, **values: str) -> str:
    """The seed's text for a return code (``{IDNUM}`` filled in), Chinese or English."""
    zh, en = TEXTS.get(code, ILLEGAL)
    return (zh if chinese else en).format_map(_Missing(values))


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""

