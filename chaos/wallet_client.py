"""The chaos client of the SIM wallet (SPEC 7): virtual RFID-SIMs loaded over STK and at a hall POS, spent at a
merchant POS whose purchases go up in batches.

One client owns a few subscribers, each with an opened account holding cash and a bound RFID-SIM in a virtual
handset (chaos/world.py), one merchant POS and one hall POS (each with its PSAM). It opens every wallet over STK,
then at random: an air recharge (``wallet.load.init {amount, pay_password}`` and its rounds), a hall POS load
(POS转存 ``/pos/loads {card, amount}`` and its rounds), an offline purchase at the merchant POS, or a batch upload
(批上送) of the purchases kept. Every request is sent again with the same sequence number and body until a
definite answer. A round after MAC1 whose answer was lost is sometimes given up, as a handset switched off
would: the load's outcome is then unknown, and the card is neither loaded nor spent again until a recovery
(``wallet.load.recover`` over STK or ``/pos/loads/{id}/recover`` at the hall: GET TRANSACTION PROVE on the card)
settles it — posted, or waiting again (then driven again later, from its first round). Acknowledged: a load whose
last round answered 钱包充值成功 (or whose recovery proved it), a purchase whose batch answered ``0000`` for it.
The end note gives each chip's balance, to be checked against its ledger shadow ``W``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import mpay_client
from chaos.channels import BUSY, FAILED, LOST, OK, REFUSED, Outcome, timed
from chaos.journal import Journal
from chaos.world import World
from core_ext import script_decode
from core_ext.virtual_handset import Outcome as Shown
from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import PurchaseRefused, SignedRequest, VirtualPOS
from core_ext.virtual_sim import VirtualRfidSim, WalletMasterKeys
from recharge.keys import load_keys

LOADED = "钱包充值成功"  # SPEC 7.3's text of a posted load
GIVE_UP = 0.3  # share of lost answers after MAC1 a handset or POS walks away from (a recovery settles them)
ANSWERED = (OK, REFUSED)
INITIALIZE_FOR_LOAD = bytes.fromhex("80500002")
LOADING_ALREADY = "5006"  # a load of the account is loading


@dataclass
class Load:
    load_id: str
    amount: int
    path: str  # air or pos


@dataclass
class Sim:
    """One subscriber's card in its handset, its account, and the loads of it not settled."""

    handset: VirtualHandset
    account_id: int
    unknown: Load | None = None  # its outcome was missed: recover before the card does anything else
    waiting: list[Load] = field(default_factory=list)  # back to waiting: driven again later

    @property
    def card(self) -> VirtualRfidSim:
        return self.handset.sim


@dataclass
class Reply:
    """A definite answer: its code and data, and (on a script) the card's reply list."""

    code: str
    data: dict[str, Any]
    replies: bytes | None = None


@dataclass
class WalletClient:
    world: World
    index: int
    journal: Journal
    rng: random.Random
    pace_s: float
    sims: list[Sim] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)  # the kinds acknowledged so far (load, purchase)

    def __post_init__(self) -> None:
        me = self.world.wallet_clients[self.index]
        wallet = load_keys(Path(self.world.keys_file)).wallet
        assert wallet is not None, "the SIM wallet's master keys"
        keys = WalletMasterKeys(**{n: getattr(wallet, n) for n in ("load", "purchase", "tac", "maint", "stk", "pos")})
        self.pay_password = me["pay_password"]
        self.sims = [Sim(VirtualHandset(VirtualRfidSim(s["card"], keys)), s["account_id"]) for s in me["sims"]]
        self.shop = VirtualPOS(me["merchant_pos"], keys.purchase, keys.pos)
        self.hall = VirtualPOS(me["hall_pos"], keys.purchase, keys.pos)

    # --- the run ---------------------------------------------------------------------------------------------

    def run(self, until: float, recover_until: float) -> None:
        for sim in self.sims:
            opened = self.stk(sim, sim.handset.request("wallet.open"), recover_until)
            if opened is None or opened.code != "0000":
                self.journal.note("gave_up", key=f"open {sim.card.card_no}", op="wallet")
                return
        while self.more_traffic(until, recover_until):
            self.one_operation(self.rng.choice(self.sims), recover_until)
            time.sleep(self.rng.uniform(0, self.pace_s))
        self.settle(recover_until)
        self.journal.note("end", shop=self.shop.terminal_code,
                          sims={s.card.card_no: {"chip": s.card.balance, "account": s.account_id} for s in self.sims})

    def more_traffic(self, until: float, recover_until: float) -> bool:
        """Until ``until``; past it (as ``Journal.traffic``) while a load or a purchase was never acknowledged."""
        now = time.time()
        return now < until or (len(self.acked) < 2 and now < until + (recover_until - until) / 2)

    def one_operation(self, sim: Sim, give_up_at: float) -> None:
        if sim.unknown is not None:
            self.recover(sim, give_up_at)
            return
        roll = self.rng.random()
        if roll < 0.25 or len(self.shop.pending) >= 6:
            if self.shop.pending:
                self.upload(give_up_at)
                return
        if roll < 0.55 and sim.card.balance >= 100:
            self.purchase(sim)
        elif sim.waiting and self.rng.random() < 0.5:
            self.drive(sim, sim.waiting.pop(0), self.rng.choice(("stk", "pos")), give_up_at)
        else:
            self.new_load(sim, self.rng.choice(("air", "pos")), give_up_at)

    def settle(self, give_up_at: float) -> None:
        """After the traffic: every missed outcome recovered, every purchase uploaded."""
        while time.time() < give_up_at and (any(s.unknown for s in self.sims) or self.shop.pending):
            for sim in self.sims:
                if sim.unknown is not None:
                    self.recover(sim, give_up_at)
            if self.shop.pending:
                self.upload(give_up_at)
            time.sleep(self.rng.uniform(0, self.pace_s))
        for sim in self.sims:
            if sim.unknown is not None:
                self.journal.note("unresolved", key=sim.unknown.load_id, card=sim.card.card_no)
        if self.shop.pending:
            self.journal.note("gave_up", key=f"{len(self.shop.pending)} purchases not uploaded", op="wallet")

    # --- loads -----------------------------------------------------------------------------------------------

    def new_load(self, sim: Sim, path: str, give_up_at: float) -> None:
        amount = 100 + self.rng.randrange(1900)
        if path == "air":
            request = sim.handset.request("wallet.load.init", {"amount": amount, "pay_password": self.pay_password})
            first = self.stk(sim, request, give_up_at)
        else:
            first = self.pos(self.hall, self.hall.load_request(sim.card.card_no, amount), give_up_at)
        if first is None or first.code != "0000":
            return  # refused (the cap, a load still loading): nothing was created
        load = Load(first.data["load_id"], amount, path)
        if path == "air":
            self.rounds(sim, load, "stk", first, give_up_at)
        else:
            self.drive(sim, load, "pos", give_up_at)

    def drive(self, sim: Sim, load: Load, via: str, give_up_at: float) -> None:
        """A waiting load from its first round (the card read), over STK or at the hall POS."""
        if via == "stk":
            first = self.stk(sim, sim.handset.request("wallet.load.init", {"load_id": load.load_id}), give_up_at)
        else:
            first = self.pos(self.hall, self.hall.continue_request(load.load_id), give_up_at, sim)
        if first is None:
            sim.waiting.append(load)
            return
        self.rounds(sim, load, via, first, give_up_at)

    def rounds(self, sim: Sim, load: Load, via: str, answer: Reply, give_up_at: float, *,
               after_mac1: bool = False, how: str = "rounds") -> None:
        """Each script's replies sent back until an answer carries no script: posted, or refused."""
        while answer.code == "0000" and answer.data.get("script"):
            assert answer.replies is not None
            after_mac1 = after_mac1 or _is_initialize(answer.data["script"])
            if via == "stk":
                request = sim.handset.request("wallet.load.continue",
                                              {"load_id": load.load_id, "replies": answer.replies.hex().upper()})
                got = self.stk(sim, request, give_up_at, may_walk_away=after_mac1)
            else:
                got = self.pos(self.hall, self.hall.continue_request(load.load_id, answer.replies), give_up_at, sim,
                               may_walk_away=after_mac1)
            if got is None:
                if after_mac1:
                    sim.unknown = load  # the card may be credited, the load may be loading: recover it
                else:
                    sim.waiting.append(load)
                return
            answer = got
        if answer.code == "0000" and str(answer.data.get("text", "")).startswith(LOADED):
            self.acknowledge(sim, load, via, how)
        elif after_mac1 or answer.code == LOADING_ALREADY:
            sim.unknown = load  # 5008 after CREDIT: loading or waiting again, the proof says which
        else:
            sim.waiting.append(load)  # refused before MAC1: the load waits again

    def recover(self, sim: Sim, give_up_at: float) -> None:
        """GET TRANSACTION PROVE of the load whose outcome was missed: posted, waiting again, or still unknown."""
        load = sim.unknown
        assert load is not None
        via = self.rng.choice(("stk", "pos"))
        if via == "stk":
            first = self.stk(sim, sim.handset.request("wallet.load.recover", {"load_id": load.load_id}), give_up_at)
        else:
            first = self.pos(self.hall, self.hall.recover_request(load.load_id), give_up_at, sim)
        if first is None:
            return
        if first.code == "4011":  # neither loading nor posted: the load never reached the card
            sim.unknown = None
            sim.waiting.append(load)
            return
        if first.code != "0000":
            return  # asked again later
        sim.unknown = None
        self.rounds(sim, load, via, first, give_up_at, after_mac1=True, how="recovered")

    def acknowledge(self, sim: Sim, load: Load, via: str, how: str) -> None:
        self.acked.add("load")
        self.journal.ack("wallet_load", load_id=load.load_id, path=load.path, via=via, how=how,
                         amount=load.amount, card=sim.card.card_no, account=sim.account_id)

    # --- purchases -------------------------------------------------------------------------------------------

    def purchase(self, sim: Sim) -> None:
        amount = min(sim.card.balance, 50 + self.rng.randrange(2500))
        try:
            self.shop.purchase(sim.card, amount)
        except PurchaseRefused as refused:
            self.journal.note("purchase_refused", card=sim.card.card_no, why=str(refused))

    def upload(self, give_up_at: float) -> None:
        """批上送 of the purchases kept; each record cleared is acknowledged."""
        records = {(r.card, r.offline_serial): r for r in self.shop.pending}
        request = self.shop.batch()
        answer = self.pos(self.shop, request, give_up_at)
        if answer is None or answer.code != "0000":
            self.journal.note("batch_refused", batch=request.fields["batch_no"], code=answer.code if answer else "")
            return
        accounts = {s.card.card_no: s.account_id for s in self.sims}
        for result in answer.data.get("results", []):
            record = records.get((result.get("card"), result.get("offline_serial")))
            if record is None or result.get("code") != "0000":
                self.journal.note("purchase_not_cleared", result=result)
                continue
            self.acked.add("purchase")
            self.journal.ack("wallet_purchase", card=record.card, serial=record.offline_serial,
                             amount=record.amount, terminal=self.shop.terminal_code, batch=request.fields["batch_no"],
                             account=accounts[record.card])

    # --- the wire --------------------------------------------------------------------------------------------

    def stk(self, sim: Sim, request: SignedRequest, give_up_at: float, *, may_walk_away: bool = False) -> Reply | None:
        """One STK request until a definite answer (the handset runs its script); None: given up."""
        def attempt(via_proxy: bool) -> tuple[Outcome, Reply | None]:
            return self._exchange(request, via_proxy, lambda s, b, m: _shown(sim.handset.receive(s, b, m)))

        return self._until_definite(attempt, "wallet_stk", give_up_at, may_walk_away)

    def pos(self, device: VirtualPOS, request: SignedRequest, give_up_at: float, sim: Sim | None = None, *,
            may_walk_away: bool = False) -> Reply | None:
        """One POS request until a definite answer; a script is relayed to ``sim``'s card; None: given up."""
        def on_answer(status: int, body: bytes, mac: str | None) -> Reply | None:
            if not device.reply_ok(body, mac):
                return None
            reply = _envelope(body)
            script = reply.data.get("script") if reply.code == "0000" else None
            if script and sim is not None:
                reply.replies = device.run_script(sim.card, script)
            return reply

        def attempt(via_proxy: bool) -> tuple[Outcome, Reply | None]:
            return self._exchange(request, via_proxy, on_answer)

        return self._until_definite(attempt, "wallet_pos", give_up_at, may_walk_away)

    def _exchange(self, request: SignedRequest, via_proxy: bool,
                  on_answer: Callable[[int, bytes, str | None], Reply | None]) -> tuple[Outcome, Reply | None]:
        api = self.world.http(via_proxy)
        got: list[Reply | None] = [None]

        def call() -> Outcome:
            status, headers, raw = api.request("POST", mpay_client.PREFIX + request.path, request.body,
                                               request.headers)
            outcome = mpay_client.classify(status, raw)
            if outcome.status in ANSWERED:
                got[0] = on_answer(status, raw, headers.get("x-mac"))
                if got[0] is None:
                    return Outcome(FAILED, "reply MAC")
            return outcome

        return timed(call), got[0]

    def _until_definite(self, attempt: Callable[[bool], tuple[Outcome, Reply | None]], channel: str,
                        give_up_at: float, may_walk_away: bool) -> Reply | None:
        delay = 0.05
        while True:
            via_proxy = self.rng.random() < 0.5
            outcome, reply = attempt(via_proxy)
            self.journal.request(channel, outcome, via_proxy=via_proxy)
            if reply is not None:
                return reply
            if outcome.status == LOST and may_walk_away and self.rng.random() < GIVE_UP:
                return None
            if time.time() > give_up_at:
                return None
            time.sleep(delay if outcome.status == BUSY else delay / 5)
            delay = min(delay * 2, 1.0)


def _envelope(body: bytes) -> Reply:
    reply = json.loads(body)
    data = reply.get("data")
    return Reply(str(reply["code"]), data if isinstance(data, dict) else {})


def _shown(shown: Shown) -> Reply | None:
    if shown.code is None or not shown.mac_ok:
        return None
    return Reply(shown.code, shown.data or {}, shown.replies)


def _is_initialize(script_hex: str) -> bool:
    """Whether a script is INITIALIZE FOR LOAD's (``80 50 00 02``): its answer carries MAC1, after which the
    platform may mark the load *loading*."""
    found = script_decode(bytes.fromhex(script_hex))
    return bool(found) and found[0].apdu[:4] == INITIALIZE_FOR_LOAD
