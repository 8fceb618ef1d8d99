"""Locust users of the SIM wallet (SPEC 7), each owning one provisioned wallet (``loadtest.wallet_provision``)
for the run, claimed across worker processes like the DD terminals:

- ``WalletPosUser``: the wallet's card at a merchant POS — one to three offline purchases (PSAM MAC1, the card's
  MAC2 and TAC), then the batch upload (批上送, ``POST /mpay/v1/pos/batches``, X-MAC both ways); a failure is
  any reply but ``0000`` with every record ``0000``.
- ``WalletStkUser``: the wallet's handset over STK (``account.balance``, ``POST /mpay/v1/stk``, X-MAC both
  ways); a failure is any reply but ``0000``.

Air recharges over STK and hall POS loads are the load engine's users."""

from __future__ import annotations

import itertools
import json
import os
import random
from functools import cache
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant_pacing, task

from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import PurchaseRefused, SignedRequest, VirtualPOS
from core_ext.virtual_sim import STATE_OPEN, VirtualRfidSim, WalletMasterKeys
from loadtest.provision import Plan
from recharge.keys import load_keys


@cache
def _plan() -> Plan:
    return Plan.read(Path(os.environ["LOADTEST_PLAN"]))


@cache
def _keys() -> WalletMasterKeys:
    wallet = load_keys(Path(_plan().key_file)).wallet
    if wallet is None:
        raise RuntimeError("the platform has no SIM wallet keys")
    return WalletMasterKeys(**{n: getattr(wallet, n) for n in ("load", "purchase", "tac", "maint", "stk", "pos")})


_next = itertools.count()


def claim(role: str) -> dict[str, Any]:
    """One provisioned wallet for this user and role, across processes (O_EXCL files)."""
    wallets = _plan().wallet.get("wallets", [])
    folder = Path(os.environ.get("LOADTEST_CLAIMS", Path(os.environ["LOADTEST_PLAN"]).parent / "claims"))
    folder.mkdir(parents=True, exist_ok=True)
    start = next(_next) * 7919 + os.getpid()
    for offset in range(len(wallets)):
        wallet = wallets[(start + offset) % len(wallets)]
        try:
            os.close(os.open(folder / f"wallet-{role}-{wallet['card_no']}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return dict(wallet)
    raise RuntimeError(f"more wallet {role} users than the {len(wallets)} provisioned wallets")


def pacing_s() -> float:
    return float(os.environ.get("LOADTEST_PACING_S", "10"))


def _post(user: FastHttpUser, request: SignedRequest, name: str, mac_ok: Any) -> dict[str, Any] | None:
    headers = {**request.headers, "X-MAC": request.mac}
    with user.client.post("/mpay/v1" + request.path, data=request.body.decode("utf-8"), headers=headers, name=name,
                          catch_response=True) as response:
        raw = response.content or b""
        if response.status_code != 200 or not mac_ok(raw, response.headers.get("X-MAC")):
            response.failure(f"HTTP {response.status_code} or a reply X-MAC that does not verify")
            return None
        reply = json.loads(raw)
        if reply.get("code") != "0000":
            response.failure(f"code {reply.get('code')}")
            return None
        return dict(reply["data"])


class WalletPosUser(FastHttpUser):
    """A merchant POS where one customer's RFID-SIM spends, uploading each round's purchases."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    def on_start(self) -> None:
        wallet, keys = claim("pos"), _keys()
        self.sim = VirtualRfidSim(wallet["card_no"], keys, balance=wallet["balance"], state=STATE_OPEN,
                                  limit=wallet["limit"])
        self.pos = VirtualPOS(wallet["terminal_id"], keys.purchase, keys.pos)

    @task
    def spend_and_upload(self) -> None:
        for _ in range(random.randint(1, 3)):
            amount = random.randint(100, 500)
            if self.sim.balance < amount:
                break
            try:
                self.pos.purchase(self.sim, amount)
            except PurchaseRefused as refused:
                self.environment.events.request.fire(request_type="CARD", name="purchase", response_time=0,
                                                     response_length=0, exception=refused, context={})
                return
        data = _post(self, self.pos.batch(), "/mpay/v1/pos/batches", self.pos.reply_ok)
        if data is not None and any(r["code"] != "0000" for r in data["results"]):
            self.environment.events.request.fire(request_type="POS", name="batch record refused", response_time=0,
                                                 response_length=0, exception=RuntimeError(str(data["results"])),
                                                 context={})


class WalletStkUser(FastHttpUser):
    """A customer's handset asking the platform over STK."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    def on_start(self) -> None:
        wallet = claim("stk")
        self.phone = VirtualHandset(VirtualRfidSim(wallet["card_no"], _keys(), state=STATE_OPEN))

    @task
    def balance(self) -> None:
        _post(self, self.phone.request("account.balance"), "/mpay/v1/stk account.balance",
              lambda body, mac: self.phone.receive(200, body, mac).mac_ok)
