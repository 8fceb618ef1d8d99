"""A virtual handset's STK application (SPEC 7.2): signed requests with rising ``seq``, the card's challenge
for writes, the scripts a reply carries run on the RFID-SIM, the texts shown and the menu the card implies.

Written from SPEC 7 alone, beside the platform: it is the counterpart the platform is tested against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core_ext import reply_decode
from core_ext.virtual_pos import GET_CHALLENGE, SELECT_ADF1, SELECT_DDF1, SignedRequest, reply_mac_ok, sign
from core_ext.virtual_sim import STATE_OPEN, STATE_PAUSED, VirtualRfidSim

WRITE_OPS = frozenset(("wallet.open", "wallet.pause", "wallet.resume", "wallet.limit", "wallet.cancel"))
# {menu item} of 请求发送成功!/失败! (001 names three; the others are the menu's own labels).
MENU_LABELS = {
    "wallet.open": "钱包开通", "wallet.pause": "暂停", "wallet.resume": "恢复", "wallet.limit": "单次消费限额",
    "wallet.cancel": "注销钱包", "wallet.load.init": "钱包充值", "wallet.load.continue": "钱包充值",
    "wallet.load.recover": "钱包充值", "account.balance": "支付账户余额查询", "account.history": "支付账户明细查询",
    "account.card_recharge": "充值卡充值", "hf.self": "缴本机话费", "hf.other": "缴他人话费",
    "pwd.pay.change": "支付密码设置", "pwd.op.enable": "操作密码设置", "pwd.op.disable": "操作密码设置",
    "pwd.op.change": "操作密码设置",
}


@dataclass
class Outcome:
    """What one exchange showed: the texts on screen, the reply's ``data`` and the reply list of its script."""

    shown: list[str] = field(default_factory=list)
    code: str | None = None
    data: dict[str, Any] | None = None
    replies: bytes | None = None
    mac_ok: bool = False

    @property
    def script_ok(self) -> bool:
        """Whether a script ran and its last reply was 9000."""
        return self.replies is not None and reply_decode(self.replies)[-1].sw == b"\x90\x00"


class VirtualHandset:
    """The STK menu of one RFID-SIM: ``request`` builds the next signed request, ``receive`` handles its reply."""

    def __init__(self, sim: VirtualRfidSim, *, seq: int = 0) -> None:
        self.sim = sim
        self.seq = seq
        self._op: str | None = None

    @property
    def menu(self) -> list[str]:
        """【我的钱包】 as the card's state file makes it (the menu changes only when a script wrote the card)."""
        if self.sim.state in (STATE_OPEN, STATE_PAUSED):
            toggle = "钱包暂停" if self.sim.state == STATE_OPEN else "钱包恢复"
            return ["注销钱包", "钱包充值", "钱包余额查询", toggle]
        return ["开通钱包", "钱包充值", "钱包余额查询", "钱包暂停"]

    def challenge(self) -> str:
        """SELECT ADF1 then GET CHALLENGE, as the handset does just before a write."""
        for apdu in (SELECT_DDF1, SELECT_ADF1):
            self.sim.transmit(apdu)
        data = self.sim.transmit(GET_CHALLENGE)
        return data[:4].hex().upper()

    def request(self, op: str, params: dict[str, Any] | None = None, *, op_password: str | None = None,
                challenge: str | None = None, seq: int | None = None) -> SignedRequest:
        """The next request; a write op takes the card's challenge unless one is given."""
        self.seq = self.seq + 1 if seq is None else seq
        fields: dict[str, Any] = {"card_no": self.sim.card_no, "seq": self.seq, "op": op, "params": params or {}}
        if op in WRITE_OPS:
            fields["challenge"] = challenge or self.challenge()
        if op_password is not None:
            fields["op_password"] = op_password
        self._op = op
        return sign(self.sim.k_stk, "/stk", fields)

    def receive(self, status: int | None, body: bytes | None, mac_hex: str | None) -> Outcome:
        """A reply (``status`` None: none came): the texts shown; a script is run on the card when the MAC holds."""
        label = MENU_LABELS.get(self._op or "", self._op or "")
        if status is None or not 200 <= status < 300 or body is None:
            return Outcome([f"{label}请求发送失败!"])
        out = Outcome([f"{label}请求发送成功!"])
        out.mac_ok = reply_mac_ok(self.sim.k_stk, body, mac_hex)
        try:
            reply = json.loads(body)
        except ValueError:
            return out
        out.code = reply.get("code")
        out.data = reply.get("data")
        if not isinstance(out.data, dict):
            return out
        if out.data.get("text"):
            out.shown.append(out.data["text"])
        if out.mac_ok and out.data.get("script"):
            out.replies = self.sim.run_script(bytes.fromhex(out.data["script"]))
        return out
