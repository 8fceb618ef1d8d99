"""Chaos clients of the HTTP channels: card-service trades (REST and SOAP), SMS commands, orders.

Each operation carries its own idempotency key — a REQID, the SMS gateway's message id, the
order API's ``biz_serial_no`` — and is sent again with the same key after a busy answer, a
failure or a lost answer, until the platform gives a definite one (acknowledged or refused):
that is what makes a retry after a cut-off commit safe, and what the checks verify (nothing
lost, nothing applied twice). Acknowledged operations are journaled with what the platform
said (serial, balance after, order number).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app import fixtures
from chaos import channels
from chaos.channels import BUSY, OK, REFUSED, Outcome
from chaos.journal import Journal
from chaos.world import World
from core_ext import reply_decode, reply_encode
from core_ext.virtual_card import VirtualCard
from http_api.order_client import ClientIdentity
from recharge.keys import load_keys
from server.flows import READ_CARD_SCRIPT

RECHARGE_TYPE = "1100"  # the seed's recharge kinds are 1100..1103 (mode 0); cancel: mode 1


@dataclass
class TradeClient:
    """The card service over REST or SOAP (chosen per attempt), or SMS commands (``sms=True``)."""

    world: World
    index: int
    journal: Journal
    rng: random.Random
    pace_s: float
    sms: bool = False
    seq: int = 0
    balances: dict[str, int] = field(default_factory=dict)  # what this client believes (acknowledged)
    consumes: list[tuple[str, str, int]] = field(default_factory=list)  # (card, stance, amount) to cancel

    def __post_init__(self) -> None:
        self.cards = (self.world.sms_cards if self.sms else self.world.kkt_cards)[self.index]
        self.balances = dict.fromkeys(self.cards, 0)

    def run(self, until: float, recover_until: float) -> None:
        while self.journal.traffic(until, recover_until):
            self.one_operation(recover_until)
            time.sleep(self.rng.uniform(0, self.pace_s))

    def one_operation(self, give_up_at: float) -> None:
        self.seq += 1
        card = self.rng.choice(self.cards)
        amount = 1000 + self.seq  # unique per card and kind: never the 24-hour duplicate (12)
        roll = self.rng.random()
        if roll < 0.2 and self.consumes and not self.sms:
            card, stance, amount = self.consumes.pop(self.rng.randrange(len(self.consumes)))
            kind, params = "consume_cancel", {"TRADETYPE": "0022", "TRADEMODE": "0", "STANCE_REV": stance}
        elif roll < 0.6 or self.balances[card] < amount:
            kind, params = "recharge", {"TRADETYPE": RECHARGE_TYPE, "TRADEMODE": "0"}
        else:
            kind, params = "consume", {"TRADETYPE": "0022", "TRADEMODE": "1"}
        key = f"chaos-{'s' if self.sms else 'k'}{self.index}-{self.seq}-{self.rng.randrange(10**6)}"
        outcome = self.until_definite(lambda: self.attempt(kind, card, amount, params, key), give_up_at)
        if outcome.status == OK:
            self.acknowledged(kind, card, amount, key, outcome)
        elif outcome.status != REFUSED:
            self.journal.note("gave_up", key=key, card=card, op=kind, amount=amount)

    def attempt(self, kind: str, card: str, amount: int, params: dict[str, str], key: str) -> tuple[Outcome, bool, str]:
        via_proxy = self.rng.random() < 0.5
        api = self.world.http(via_proxy)
        if self.sms:
            code = {"recharge": "CZCZ", "consume": "CZXF"}[kind]
            text = f"{code}*{card}*{amount // 100}.{amount % 100:02d}*{self.world.password}"
            return channels.sms_command(api, self.world.sms_secret, self.world.sms_operators[self.index], text,
                                        key), via_proxy, "sms"
        full = {"LICENSEKEY": self.world.license_key, "CARDNO": card, "CARDPWD": self.world.password_md5,
                "POSCODE": self.world.kkt_terminal, "AMOUNT": str(amount), "REQID": key, **params}
        if self.rng.random() < 0.5:
            return channels.kkt_rest(api, full), via_proxy, "kkt_rest"
        return channels.kkt_soap(api, full), via_proxy, "kkt_soap"

    def until_definite(self, attempt: Callable[[], tuple[Outcome, bool, str]], give_up_at: float) -> Outcome:
        """Send again (same key) until acknowledged or refused, or until ``give_up_at``."""
        delay = 0.05
        while True:
            outcome, via_proxy, channel = attempt()
            self.journal.request(channel, outcome, via_proxy=via_proxy)
            if outcome.status in (OK, REFUSED) or time.time() > give_up_at:
                return outcome
            time.sleep(delay if outcome.status == BUSY else delay / 5)
            delay = min(delay * 2, 1.0)

    def acknowledged(self, kind: str, card: str, amount: int, key: str, outcome: Outcome) -> None:
        stance = outcome.fields.get("Stance") or outcome.fields.get("stance", "")
        effect = {"recharge": amount, "consume": -amount, "consume_cancel": amount}[kind]
        self.balances[card] += effect
        if kind == "consume":
            self.consumes.append((card, stance, amount))
        self.journal.ack("sms" if self.sms else "kkt", key=key, card=card, kind=kind, amount=amount,
                         effect=effect, stance=stance,
                         terminal=self.world.sms_terminals[self.index] if self.sms else self.world.kkt_terminal)


@dataclass
class OrderClient:
    """CreateAutoLoadOrder for virtual cards; the same ``biz_serial_no`` until a definite answer."""

    world: World
    index: int
    journal: Journal
    rng: random.Random
    pace_s: float
    seq: int = 0

    def __post_init__(self) -> None:
        keys = load_keys(Path(self.world.keys_file))
        self.who = ClientIdentity(7, 1, Path(self.world.order_key_file).read_text())
        self.cards = [fixtures.virtual_card(keys, card_no) for card_no in self.world.order_cards[self.index]]

    def run(self, until: float, recover_until: float) -> None:
        while self.journal.traffic(until, recover_until):
            self.seq += 1
            card = self.rng.choice(self.cards)
            amount = 100 + self.rng.randrange(5000)
            serial = f"chaos-o{self.index}-{self.seq}-{self.rng.randrange(10**6)}"
            outcome = self.until_definite(card, amount, serial, recover_until)
            if outcome.status == OK:
                self.journal.ack("order", serial=serial, card=card.card_no, amount=amount,
                                 order=outcome.fields.get("order", ""))
            elif outcome.status != REFUSED:
                self.journal.note("gave_up", serial=serial)
            time.sleep(self.rng.uniform(0, self.pace_s))

    def until_definite(self, card: VirtualCard, amount: int, serial: str, give_up_at: float) -> Outcome:
        reqinfo = card_reqinfo(card)
        while True:
            via_proxy = self.rng.random() < 0.5
            outcome = channels.create_order(self.world.http(via_proxy), self.who, card.card_no, amount, serial,
                                            reqinfo)
            self.journal.request("order", outcome, via_proxy=via_proxy)
            if outcome.status in (OK, REFUSED) or time.time() > give_up_at:
                return outcome
            time.sleep(0.1)


def card_reqinfo(card: VirtualCard) -> list[str]:
    """The card's replies to the reading script, one hex entry each (the order API's ``reqinfo``)."""
    return [reply_encode([r]).hex() for r in reply_decode(card.run_script(READ_CARD_SCRIPT))]
