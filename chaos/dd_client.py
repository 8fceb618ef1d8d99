"""A chaos DD terminal: loads orders onto virtual cards and recovers every outcome it missed.

One terminal (its own merchant and security module) with a few virtual cards, in a process of
its own. Orders are created by the client as an operator would (``orders.create_order`` on the
database), then loaded over DD (DD11–DD18, sometimes with the DD19 receipt). A DD18 ``0x00`` is
journaled as acknowledged. Any other end — busy, an error, a cut connection, a timeout — leaves
the outcome unknown: the order goes to ``pending`` and DD21 resolves it (posted → acknowledged,
the card's own proof when it is still loading; not credited → loaded again later). At the end the
client keeps asking DD21 until nothing is pending, then journals each chip's balance.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from app import fixtures
from chaos import channels
from chaos.channels import Outcome
from chaos.journal import Journal
from chaos.world import World
from core_ext import Frame
from core_ext.virtual_card import VirtualCard
from recharge.keys import load_keys
from server import terminal_client as tc
from server.stages import (
    FLOW_CONTINUE,
    INFO_BUSY,
    INFO_NOT_LOADABLE,
    INFO_NOT_SIGNED_IN,
    INFO_OK,
    INFO_REVERSAL_OK,
)

CARDS = 3


@dataclass
class Load:
    order_no: str
    card: VirtualCard
    amount: int


@dataclass
class DDClient:
    world: World
    index: int
    journal: Journal
    rng: random.Random
    pace_s: float
    cards: list[VirtualCard] = field(default_factory=list)
    todo: list[Load] = field(default_factory=list)  # paid, not credited: load (again)
    pending: dict[str, Load] = field(default_factory=dict)  # outcome unknown: DD21
    signed_in: bool = False
    seq: int = 0
    observed: int = 0
    via_proxy: bool = False

    def __post_init__(self) -> None:
        keys = load_keys(Path(self.world.keys_file))
        self.terminal = self.world.dd_terminals[self.index]
        self.module = fixtures.virtual_module(keys, self.terminal.pki)
        self.cards = [fixtures.virtual_card(keys, "1680" + fixtures.random_digits(12)) for _ in range(CARDS)]

    def client(self) -> tc.TerminalClient:
        host, port = self.world.dd_target(via_proxy=self.via_proxy)
        return tc.TerminalClient(host, port, self.terminal.code, self.terminal.pki, timeout_s=self.world.timeout_s,
                                 timings=self._observe, source=self.world.source if self.via_proxy else None)

    def _observe(self, request: bytes, answer: Frame | None, seconds: float, error: BaseException | None) -> None:
        status = channels.LOST if answer is None else channels.dd_result_status(answer.result)
        self.journal.request("dd", Outcome(status, seconds=seconds), via_proxy=self.via_proxy)
        self.observed += 1

    def run_flow(self, flow: tc.TerminalFlow) -> Frame:
        """``flow`` on a connection of its own; a connection that could not even open is journaled lost."""
        before, started = self.observed, time.monotonic()
        try:
            return self.client().run_alone(flow)
        except OSError:
            if self.observed == before:
                self.journal.request("dd", Outcome(channels.LOST, seconds=time.monotonic() - started),
                                     via_proxy=self.via_proxy)
            raise

    def run(self, until: float, recover_until: float) -> None:
        while self.journal.traffic(until, recover_until):
            self.via_proxy = self.rng.random() < 0.5
            self.step()
            time.sleep(self.rng.uniform(0, self.pace_s))
        self.recover(recover_until)

    def step(self) -> None:
        if not self.signed_in:
            self.sign_in()
            return
        if self.pending and self.rng.random() < 0.5:
            self.query(self.rng.choice(list(self.pending.values())))
            return
        load = self.todo.pop(0) if self.todo else self.new_order()
        if load is not None:
            self.load(load)

    def sign_in(self) -> None:
        try:
            self.run_flow(tc.sign_in(self.client().messages, self.module))
            self.signed_in = True
        except (tc.FlowFailed, tc.ConnectionClosed, OSError):
            time.sleep(0.2)

    def new_order(self) -> Load | None:
        """An order for a card with no load pending: a terminal recovers a card's unknown load
        (DD21 with GET TRANSACTION PROVE for its online serial) before it loads the card again,
        or the card's proof would answer for the newer load."""
        self.seq += 1
        busy = {load.card.card_no for load in self.pending.values()}
        free = [card for card in self.cards if card.card_no not in busy]
        if not free:
            return None
        card = free[self.seq % len(free)]
        amount = 100 + self.rng.randrange(900)
        try:
            order_no = asyncio.run(_create_order(self.world.database_url, self.terminal.merchant_id, card.card_no,
                                                 amount))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            time.sleep(0.2)  # the database is down: an operator would wait too
            return None
        return Load(order_no, card, amount)

    def load(self, load: Load) -> None:
        receipt = self.rng.random() < 0.3
        try:
            self.run_flow(tc.recharge(self.client().messages, load.card, load.order_no, load.amount, receipt=receipt))
        except tc.FlowFailed as failed:
            self._failed(load, failed)
        except (tc.ConnectionClosed, OSError):
            self.pending[load.order_no] = load  # cut or timed out: DD21 will tell
        else:
            self._acknowledged(load, "dd18")

    def _failed(self, load: Load, failed: tc.FlowFailed) -> None:
        if failed.stage == 0x12 and failed.result in (INFO_BUSY, INFO_NOT_SIGNED_IN):
            self.signed_in = failed.result != INFO_NOT_SIGNED_IN
            self.todo.append(load)  # DD11 refused before anything happened: load it again
        elif failed.stage == 0x12 and failed.result == INFO_NOT_LOADABLE:
            # *loading*: an earlier attempt's DD15 was still on its way when DD21 answered "not
            # credited" (its connection had been cut), and DD16 marked the order after that. A
            # terminal asks DD21 again instead of giving the order up (make chaos, seed 1976022878).
            self.pending[load.order_no] = load
        elif failed.stage == 0x20 and failed.result != INFO_OK:
            self.pending[load.order_no] = load  # the receipt failed after DD18 0x00: ask DD21
        elif failed.stage in (0x12, 0x14) and failed.result not in (INFO_BUSY,):
            self.journal.note("refused", order=load.order_no, stage=failed.stage, result=failed.result)
        else:
            self.pending[load.order_no] = load

    def _acknowledged(self, load: Load, how: str) -> None:
        self.pending.pop(load.order_no, None)
        self.journal.ack("dd", order=load.order_no, card=load.card.card_no, amount=load.amount, how=how)

    def query(self, load: Load) -> None:
        """DD21 for an outcome the terminal did not see (with the card's proof while still loading)."""
        try:
            answer = self.run_flow(_query_any(self.client().messages, load.order_no, load.card))
        except (tc.ConnectionClosed, OSError):
            return
        if answer.result == INFO_OK and answer.flow != FLOW_CONTINUE:
            self._acknowledged(load, "dd21")
        elif answer.result == INFO_REVERSAL_OK:
            self.pending.pop(load.order_no)
            self.todo.append(load)  # not credited, back to paid: load it again
        elif answer.result == INFO_NOT_SIGNED_IN:
            self.signed_in = False
        elif answer.result != INFO_BUSY:
            self.pending.pop(load.order_no)
            self.journal.note("unresolved", order=load.order_no, result=answer.result)

    def recover(self, until: float) -> None:
        """After the run: resolve every pending outcome, then report the chips."""
        self.via_proxy = False
        while self.pending and time.time() < until:
            if not self.signed_in:
                self.sign_in()
                continue
            for load in list(self.pending.values()):
                self.query(load)
            time.sleep(0.2)
        self.journal.note("end", pending=sorted(self.pending), chips={c.card_no: c.balance for c in self.cards})


def _query_any(m: tc.TerminalMessages, order_no: str, card: VirtualCard) -> tc.TerminalFlow:
    """DD21 whatever it answers (a refusal is a value here), with the proof while loading."""
    dd22 = yield m.dd21(order_no)
    if dd22.result == INFO_OK and dd22.flow == FLOW_CONTINUE:
        return (yield m.dd21_reply(order_no, card.run_script(dd22.info)))
    return dd22


async def _create_order(dsn: str, merchant_id: int, card_no: str, amount: int) -> str:
    conn = await asyncpg.connect(dsn, timeout=3)
    try:
        return await fixtures.paid_order(conn, merchant_id, card_no, amount, expires_in_s=24 * 3600)
    finally:
        await conn.close()


def main(world: World, index: int, journal: Journal, seed: int, until: float, recover_until: float,
         pace_s: float) -> None:
    DDClient(world, index, journal, random.Random(seed), pace_s).run(until, recover_until)

