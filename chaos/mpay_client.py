"""The chaos client of the mobile payment account (SPEC 6) and the SIM wallet's STK channel (SPEC 7.2).

One subscriber per client, its account opened and its RFID-SIM bound before the run (chaos/world.py). The
client redeems prepaid cards into the account and pays its own phone bill, each operation at random over the
website's JSON API (``/mpay/v1/me/recharges/card``, ``/mpay/v1/me/hf`` with the pay password, the same
``X-Request-Id`` until a definite answer; a lapsed token is replaced by a new login, the id kept) or over
the SIM's STK menu (a virtual handset signing ``account.card_recharge`` / ``hf.self`` with K_stk, the same
``seq`` and body until a definite answer) or by SMS to 10658888 (``CZK <PIN>`` / ``HF <yuan>``, the same
gateway message id until a definite answer). Acknowledged operations (``0000``, an SMS success reply) are
journaled with their key.
"""

from __future__ import annotations

import json
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import channels
from chaos.channels import BUSY, FAILED, OK, REFUSED, Http, Outcome
from chaos.journal import Journal
from chaos.world import World
from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import SignedRequest
from core_ext.virtual_sim import VirtualRfidSim, WalletMasterKeys
from recharge.keys import load_keys
from recharge.mpay import codes

SERVICE_NUMBER = "10658888"
SMS_SUCCESS = ("充值成功!", "缴费成功!")  # SPEC 6.5's replies of CZK and HF

PREFIX = "/mpay/v1"
RELOGIN = "relogin"  # the token lapsed (1003): log in again, then the same request id again


def classify(status: int, raw: bytes) -> Outcome:
    """A ``/mpay/v1`` reply (JSON API or STK) as an outcome: ``0000`` ok, ``9001`` busy, 5xx failed."""
    if channels.gate_busy(status, raw):
        return Outcome(BUSY, "503")
    try:
        reply = json.loads(raw)
        code = str(reply["code"])
    except (ValueError, KeyError, TypeError):
        return Outcome(FAILED, f"http {status}: not an envelope")
    data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
    fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (data or {}).items()}
    if code == "9001":
        return Outcome(BUSY, code, fields)
    if status >= 500 or code == "9002":
        return Outcome(FAILED, f"http {status} {code}", fields)
    if code == "1003":
        return Outcome(RELOGIN, code, fields)
    return Outcome(OK if code == "0000" else REFUSED, code, fields)


def json_call(api: Http, method: str, path: str, body: dict[str, Any] | None, token: str = "",
              request_id: str = "") -> Outcome:
    """One JSON API request (blocking), classified and timed."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if request_id:
        headers["X-Request-Id"] = request_id

    def call() -> Outcome:
        status, _, raw = api.request(method, PREFIX + path, json.dumps(body).encode() if body is not None else None,
                                     headers)
        return classify(status, raw)

    return channels.timed(call)


def sms_call(api: Http, secret: str, sender: str, text: str, message_id: str) -> Outcome:
    """One MO to 10658888 through the gateway hook: a success reply ok, the 9001 text busy, 9002 failed."""
    def call() -> Outcome:
        query = urllib.parse.urlencode({"from": sender, "to": SERVICE_NUMBER, "text": text, "id": message_id})
        status, _, body = api.request("GET", "/sms/inbound?" + query, headers={"X-SMS-Secret": secret})
        reply = body.decode("utf-8", errors="replace")
        if channels.gate_busy(status, body) or reply == codes.zh("9001"):
            return Outcome(BUSY, "9001")
        if status != 200 or reply == codes.zh("9002"):
            return Outcome(FAILED, f"http {status}")
        return Outcome(OK if reply.startswith(SMS_SUCCESS) else REFUSED, "", {"reply": reply})

    return channels.timed(call)


def stk_call(api: Http, request: SignedRequest) -> Outcome:
    def call() -> Outcome:
        status, _, raw = api.request("POST", PREFIX + request.path, request.body, request.headers)
        return classify(status, raw)

    return channels.timed(call)


@dataclass
class MpayClient:
    world: World
    index: int
    journal: Journal
    rng: random.Random
    pace_s: float
    seq: int = 0
    token: str = ""
    balance: int = 0  # what this client was acknowledged: Σ recharges − Σ bills
    pins: list[list[Any]] = field(default_factory=list)  # [serial, pin, face cents] not yet redeemed

    def __post_init__(self) -> None:
        self.me: dict[str, Any] = self.world.mpay_accounts[self.index]
        self.pins = [list(p) for p in self.me["pins"]]
        keys = load_keys(Path(self.world.keys_file))
        assert keys.wallet is not None, "the SIM wallet's master keys"
        names = ("load", "purchase", "tac", "maint", "stk", "pos")
        sim = VirtualRfidSim(self.me["sim"], WalletMasterKeys(**{n: getattr(keys.wallet, n) for n in names}))
        self.handset = VirtualHandset(sim)

    def run(self, until: float, recover_until: float) -> None:
        self.until_definite(lambda: self.stk(self.handset.request("wallet.open")), recover_until, "wallet.open")
        while self.journal.traffic(until, recover_until):
            self.one_operation(recover_until)
            time.sleep(self.rng.uniform(0, self.pace_s))
        self.journal.note("end", balance=self.balance, account=self.me["account_id"])

    def one_operation(self, give_up_at: float) -> None:
        self.seq += 1
        via = self.rng.choice(("stk", "web", "sms"))
        amount = 100 + self.rng.randrange(900)
        if self.pins and (self.rng.random() < 0.45 or self.balance < amount):
            serial, pin, face = self.pins.pop()
            kind, key, params = "card_recharge", serial, {"pin": pin}
            amount = face
        elif self.balance >= amount:
            kind, key, params = "hf", "", {"amount": amount}
        else:
            return  # nothing left to redeem and too little to pay: this client is done
        if via == "sms":
            mid = f"chaos-m{self.index}-{self.seq}-{self.rng.randrange(10**6)}"
            text = f"CZK {params['pin']}" if kind == "card_recharge" else f"HF {amount // 100}.{amount % 100:02d}"
            outcome = self.until_definite(lambda: self.sms(text, mid), give_up_at, key or mid)
            ref = {"sender": f"mo:{self.me['msisdn']}", "seq": mid}
        elif via == "stk":
            request = self.handset.request("account.card_recharge" if kind == "card_recharge" else "hf.self", params)
            key = key or f"seq{request.fields['seq']}"
            outcome = self.until_definite(lambda: self.stk(request), give_up_at, key)
            ref = {"sender": f"stk:{self.me['sim']}", "seq": request.fields["seq"]}
        else:
            rid = f"chaos-m{self.index}-{self.seq}-{self.rng.randrange(10**6)}"
            path, body = ("/me/recharges/card", params) if kind == "card_recharge" else (
                "/me/hf", {"target": self.me["msisdn"], "amount": amount, "pay_password": self.me["pay_password"]})
            outcome = self.until_definite(lambda: self.web(path, body, rid), give_up_at, key or rid)
            ref = {"principal": f"acct:{self.me['account_id']}", "request_id": rid}
        if outcome.status == OK:
            self.balance += amount if kind == "card_recharge" else -amount
            self.journal.ack("mpay", kind=kind, via=via, amount=amount, serial=key if kind == "card_recharge" else "",
                             account=self.me["account_id"], **ref)

    def web(self, path: str, body: dict[str, Any], rid: str) -> tuple[Outcome, bool, str]:
        via_proxy = self.rng.random() < 0.5
        api = self.world.http(via_proxy)
        if not self.token:
            login = json_call(api, "POST", "/auth/login", {"login": self.me["msisdn"],
                                                           "password": self.me["login_password"]})
            self.journal.request("mpay_web", login, via_proxy=via_proxy)
            if login.status != OK:
                return login, via_proxy, ""  # no token yet: busy, lost or refused, try again
            self.token = login.fields["token"].strip('"')
        outcome = json_call(api, "POST", path, body, self.token, rid)
        if outcome.status == RELOGIN:
            self.token = ""
            outcome.status = BUSY
        return outcome, via_proxy, "mpay_web"

    def sms(self, text: str, message_id: str) -> tuple[Outcome, bool, str]:
        via_proxy = self.rng.random() < 0.5
        return sms_call(self.world.http(via_proxy), self.world.sms_secret, self.me["msisdn"], text,
                        message_id), via_proxy, "mpay_sms"

    def stk(self, request: SignedRequest) -> tuple[Outcome, bool, str]:
        via_proxy = self.rng.random() < 0.5
        return stk_call(self.world.http(via_proxy), request), via_proxy, "stk"

    def until_definite(self, attempt: Callable[[], tuple[Outcome, bool, str]], give_up_at: float,
                       key: str) -> Outcome:
        """The same request (same X-Request-Id, same seq and body) until acknowledged or refused."""
        delay = 0.05
        while True:
            outcome, via_proxy, channel = attempt()
            if channel:
                self.journal.request(channel, outcome, via_proxy=via_proxy)
            if outcome.status in (OK, REFUSED):
                return outcome
            if time.time() > give_up_at:
                self.journal.note("gave_up", key=key, op="mpay")
                return outcome
            time.sleep(delay if outcome.status == BUSY else delay / 5)
            delay = min(delay * 2, 1.0)
