"""The load engine's card steps (recharge/loads/pboc.py, engine.judge_proof), sans-IO against virtual cards: the
same functions drive a DD card under MK_load/MK_tac and an RFID-SIM under MKW_load/MKW_tac."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from core_ext.virtual_card import VirtualCard
from core_ext.virtual_sim import STATE_OPEN, VirtualRfidSim, WalletMasterKeys
from recharge.loads import engine, pboc
from recharge.loads.engine import Result
from recharge.loads.pboc import CardStepError, LoadKeys

NOW = dt.datetime(2026, 1, 5, 2, 0, 0, tzinfo=dt.UTC)


def _keys() -> tuple[LoadKeys, WalletMasterKeys]:
    k = WalletMasterKeys(*(os.urandom(16) for _ in range(6)))
    return LoadKeys(k.load, k.tac), k


def _cards() -> list[tuple[VirtualCard, LoadKeys, str]]:
    dd_keys = LoadKeys(os.urandom(16), os.urandom(16))
    dd_card = VirtualCard("1000581000000125", 1_000, dd_keys.load, dd_keys.tac, os.urandom(16), seed=1)
    wallet_keys, masters = _keys()
    sim = VirtualRfidSim("7310000000000042", masters, balance=1_000, state=STATE_OPEN, seed=2)
    return [(dd_card, dd_keys, "11552001"), (sim, wallet_keys, "990000000001")]


@pytest.mark.parametrize("k", [0, 1])
def test_one_load_through_the_engine_steps(k: int) -> None:
    card, keys, terminal = _cards()[k]
    read = pboc.read_card(card.run_script(pboc.READ_CARD_SCRIPT))
    assert (read.card_no, read.balance) == (card.card_no, 1_000)
    init = card.run_script(pboc.initialize_script(500, terminal))
    made = engine.credit(keys, read.card_no, 500, terminal, init, NOW)
    assert made.load.balance_before == 1_000 and made.load.load_date == "20260105" and made.load.load_time == "100000"
    with pytest.raises(CardStepError):
        engine.credit(LoadKeys(os.urandom(16), keys.tac), read.card_no, 500, terminal, init, NOW)
    reply = pboc.single_reply(card.run_script(made.script))
    assert reply.sw == pboc.SW_OK and pboc.tac_ok(keys, made.load, reply.body) and card.balance == 1_500
    assert not pboc.tac_ok(LoadKeys(keys.load, os.urandom(16)), made.load, reply.body)
    proof = card.run_script(pboc.prove_script(made.load.serial))
    assert engine.judge_proof(keys, made.load, proof) is Result.POSTED
    assert engine.judge_proof(LoadKeys(keys.load, os.urandom(16)), made.load, proof) is Result.LOADING
    never = card.run_script(pboc.prove_script(made.load.serial + 1))
    assert engine.judge_proof(keys, made.load, never) is Result.RELEASED


def test_a_read_after_a_state_write_and_a_wrong_purse_type() -> None:
    card, _, _ = _cards()[1]
    script = pboc.READ_CARD_SCRIPT
    with pytest.raises(CardStepError):
        pboc.read_card(card.run_script(script), first=2)
    assert [i.seq for i in pboc.read_card_instructions(2)] == [2, 3, 4, 5]
    m1, _ = _keys()
    m1_card = VirtualCard("1000581000000126", 0, m1.load, m1.tac, os.urandom(16), card_type=0x02)
    with pytest.raises(CardStepError) as refused:
        pboc.read_card(m1_card.run_script(script))
    assert refused.value.reason == "purse_type"
