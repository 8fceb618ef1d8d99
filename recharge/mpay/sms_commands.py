"""The SMS commands of 10658888 and their dialogue steps (SPEC 6.5), over the domain modules.

Each handler gets an ``Mo`` (connection, environment, sender) and returns the reply text,
or raises ``Refused``. Handlers set the sender's dialogue themselves (``mo.ask`` for the
next step, ``mo.done`` when it ends); the channel ends it on any refusal but ``3002`` and
``7003`` (kept). Checks run in 6.5's order — number (``2008``), account (``2003``),
status (6.7), at the command word the needed password's state, the row's codes, the amount,
the password last — and again at a dialogue's final reply.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from recharge.mpay import (
    accounts,
    bills,
    cards,
    closure,
    credentials,
    dialogues,
    history,
    matrix,
    profile,
    registry,
    withdrawals,
)
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import day_start, mask_name, parse_yuan, today, yuan

WELCOME = "欢迎开通手机支付!回复A同意《手机支付业务客户服务协议》并开户,10分钟内有效。"
OPENED = "手机支付开户成功!初始密码及别名将另行短信发送至本机,请及时修改。"
GX_ASK = "将为您升级为实名账户(姓名:{name}),回复Y确认,10分钟内有效。"
BALANCE = "现金账户余额:{cash}元;充值卡账户余额:{card}元,可用余额{avail}元。"
CXLS_ASK = "请回复查询起始日期(8位),如20091101。"
XH_MENU = "手机支付服务菜单:回复9业务管理,回复0退出。"
XH_MANAGE = "业务管理:回复6注销手机支付账户,回复0退出。"
XH_ASK = "注销后之前的交易无法退款。请回复6位支付密码确认注销。"
CLOSED = "您的手机支付账户已注销,感谢使用!"
M_ASK = "回复Y确认重置手机支付登录密码,新密码将短信发送至本机。"
M_DONE = "登录密码已重置,新密码将另行短信发送至本机。"
EXITED = "已退出。"
PASSWORD_RE = re.compile(r"[0-9]{6}")
DATE_RE = re.compile(r"[0-9]{8}")


@dataclass
class Mo:
    conn: asyncpg.Connection
    env: Env
    sender: str
    now: dt.datetime

    async def ask(self, command: str, step: str, **data: object) -> None:
        await dialogues.start(self.conn, self.sender, dialogues.Dialogue(command, step, dict(data)),
                              self.env.settings.mpay_dialogue_ttl_s)

    async def done(self) -> None:
        await dialogues.end(self.conn, self.sender)

    async def account(self, operation: str | None) -> asyncpg.Record:
        """6.5's common checks: number normal (2008), a live account (2003, locked), 6.7's cells."""
        sub = await registry.get(self.conn, self.sender)
        if sub is None or sub.status != "normal":
            raise Refused("2008")
        account = await accounts.live_by_msisdn(self.conn, self.sender, lock=True)
        if account is None:
            raise Refused("2003")
        matrix.require(account, "sms_stk", "sms")
        if operation is not None:
            matrix.require(account, operation, "sms")
        return account

    async def password(self, account: asyncpg.Record, text: str) -> None:
        """A password step: 6 digits are checked (and counted); anything else is a wrong
        password that is not counted (3002 with the same n)."""
        if not PASSWORD_RE.fullmatch(text):
            if credentials.locked(account, "pay", self.now):
                raise Refused("3003")
            raise Refused("3002", credentials.tries_left(account, "pay", self.env.policy))
        await credentials.check(self.conn, self.env.hasher, self.env.policy, account, "pay", text, self.now)


# --- KT: open
async def kt(mo: Mo, arg: str | None) -> str:
    if arg == "A":
        return await kt_agree(mo, "A")
    await accounts.check_can_open(mo.conn, mo.sender)
    await mo.ask("KT", "A")
    return WELCOME


async def kt_agree(mo: Mo, _text: str) -> str:
    await accounts.open_account(mo.conn, mo.env, mo.sender)
    await mo.done()
    return OPENED


# --- GX: real-name upgrade
async def gx(mo: Mo, _arg: str | None) -> str:
    sub = await profile.check_upgrade(mo.conn, await mo.account(None), "sms")
    await mo.ask("GX", "Y")
    return GX_ASK.format(name=mask_name(sub.name or ""))


async def gx_confirm(mo: Mo, _text: str) -> str:
    reply = await profile.upgrade(mo.conn, mo.env, await mo.account(None), "sms")
    await mo.done()
    return reply


# --- CZK: prepaid card
async def czk(mo: Mo, arg: str | None) -> str:
    account = await mo.account(None)
    return (await cards.recharge(mo.conn, mo.env, account, mo.sender, arg or "", "sms")).reply


# --- CX, CXLS: queries
async def cx(mo: Mo, _arg: str | None) -> str:
    figures = await accounts.balances(mo.conn, await mo.account("query_login"))
    return BALANCE.format(cash=yuan(figures.cash), card=yuan(figures.card), avail=yuan(figures.available))


async def cxls(mo: Mo, _arg: str | None) -> str:
    await mo.account("query_login")
    await mo.ask("CXLS", "date")
    return CXLS_ASK


def read_date(text: str, now: dt.datetime) -> dt.date:
    if not DATE_RE.fullmatch(text):
        raise Refused("7003")
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise Refused("7003") from None
    if day > today(now):
        raise Refused("7003")
    return day


async def cxls_date(mo: Mo, text: str) -> str:
    day = read_date(text, mo.now)
    account = await mo.account("query_login")
    await mo.done()
    items = await history.entries(mo.conn, account, day_start(day), mo.now + dt.timedelta(seconds=1), limit=3)
    return history.cxls_reply(items, text)


# --- HF: own phone bill
async def hf(mo: Mo, arg: str | None) -> str:
    account = await mo.account(None)
    amount = parse_yuan(arg) if arg else None
    return (await bills.pay(mo.conn, mo.env, account, mo.sender, amount, "sms")).reply


# --- TX: withdrawal
async def _tx_checks(mo: Mo) -> tuple[asyncpg.Record, dict[str, object]]:
    account = await mo.account("withdrawal")
    credentials.ensure_usable(account, "pay", mo.now)
    return account, await withdrawals.check(mo.conn, account, "sms")


async def tx(mo: Mo, arg: str | None) -> str:
    account, card = await _tx_checks(mo)
    if arg is None:
        await mo.ask("TX", "amount")
        return withdrawals.ASK_AMOUNT.format(last4=str(card["number"])[-4:])
    return await tx_amount(mo, arg)


async def tx_amount(mo: Mo, text: str) -> str:
    account, _card = await _tx_checks(mo)
    amount = await withdrawals.check_amount(mo.conn, account, parse_yuan(text))
    await mo.ask("TX", "password", amount=amount)
    return withdrawals.ASK_PASSWORD.format(amt=yuan(amount))


async def tx_password(mo: Mo, text: str, amount: int) -> str:
    account, card = await _tx_checks(mo)
    await withdrawals.check_amount(mo.conn, account, amount)
    await mo.password(account, text)
    _, reply = await withdrawals.submit(mo.conn, mo.env, account, card, amount, "sms")
    await mo.done()
    return reply


# --- XH: close
async def _xh_checks(mo: Mo) -> asyncpg.Record:
    account = await mo.account("pay_reset_close")
    credentials.ensure_usable(account, "pay", mo.now)
    return account


async def xh(mo: Mo, _arg: str | None) -> str:
    await _xh_checks(mo)
    await mo.ask("XH", "9")
    return XH_MENU


async def xh_manage(mo: Mo, _text: str) -> str:
    await mo.ask("XH", "6")
    return XH_MANAGE


async def xh_six(mo: Mo, _text: str) -> str:
    await closure.check(mo.conn, await _xh_checks(mo), "sms")
    await mo.ask("XH", "password")
    return XH_ASK


async def xh_password(mo: Mo, text: str) -> str:
    account = await _xh_checks(mo)
    await closure.check(mo.conn, account, "sms")
    await mo.password(account, text)
    await closure.close(mo.conn, mo.env, account, notify=False)
    await mo.done()
    return CLOSED


# --- M: login password reset
async def m(mo: Mo, _arg: str | None) -> str:
    await profile.check_login_reset(mo.conn, await mo.account(None), "sms")
    await mo.ask("M", "Y")
    return M_ASK


async def m_confirm(mo: Mo, _text: str) -> str:
    await profile.reset_login(mo.conn, mo.env, await mo.account(None), "sms")
    await mo.done()
    return M_DONE


Handler = Callable[[Mo, str | None], Awaitable[str]]
COMMANDS: dict[str, Handler] = {
    "KT": kt, "GX": gx, "CZK": czk, "TX": tx, "CX": cx, "CXLS": cxls, "HF": hf, "XH": xh, "M": m,
}
# (command, step) → (the text the step expects, or None for a free-text step; its handler)
StepHandler = Callable[[Mo, str], Awaitable[str]]
CHOICES: dict[tuple[str, str], StepHandler] = {
    ("KT", "A"): kt_agree, ("GX", "Y"): gx_confirm, ("XH", "9"): xh_manage, ("XH", "6"): xh_six,
    ("M", "Y"): m_confirm,
}


async def step(mo: Mo, dialogue: dialogues.Dialogue, text: str) -> str:
    """Answer a text inside the sender's dialogue (``0`` was handled by the channel)."""
    key = (dialogue.command, dialogue.step)
    if key in CHOICES:
        if text != dialogue.step:
            raise Refused("7002")
        return await CHOICES[key](mo, text)
    if key == ("CXLS", "date"):
        return await cxls_date(mo, text)
    if key == ("TX", "amount"):
        return await tx_amount(mo, text)
    if key == ("TX", "password"):
        return await tx_password(mo, text, int(dialogue.data["amount"]))
    if key == ("XH", "password"):
        return await xh_password(mo, text)
    raise Refused("7001")  # a step this version does not know: as if there were no dialogue
