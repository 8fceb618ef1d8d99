"""The virtual RFID-SIM, PSAM, POS and handset of SPEC 7, without sockets: purchases, limits, the state file,
the log, batch records and signed requests, checked against core_ext's platform-side functions."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

import core_ext as C
from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import SHANGHAI, PurchaseRecord, PurchaseRefused, VirtualPOS, VirtualPSAM
from core_ext.virtual_sim import (
    STATE_NONE,
    STATE_OPEN,
    STATE_PAUSED,
    LogRecord,
    VirtualRfidSim,
    WalletMasterKeys,
)

KEYS = WalletMasterKeys(
    load=bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
    purchase=bytes.fromhex("11223344556677888877665544332211"),
    tac=bytes.fromhex("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8"),
    maint=bytes.fromhex("C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF"),
    stk=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
    pos=bytes.fromhex("F0E1D2C3B4A5968778695A4B3C2D1E0F"),
)
CARD = "1000581000000125"
WHEN = datetime(2011, 12, 21, 21, 48, 22, tzinfo=SHANGHAI)
DIV = C.card_div_data(CARD)


def sim(balance: int = 50_000, state: int = STATE_OPEN, **kw: int) -> VirtualRfidSim:
    return VirtualRfidSim(CARD, KEYS, balance=balance, state=state, seed=5, **kw)


def pos(code: str = "11552001") -> VirtualPOS:
    return VirtualPOS(code, KEYS.purchase, KEYS.pos)


def fixed_random(card: VirtualRfidSim, hex4: str) -> None:
    card._random4 = lambda: bytes.fromhex(hex4)  # type: ignore[method-assign]


def tac_ok(r: PurchaseRecord) -> bool:
    dtk = C.diversify(KEYS.tac, C.card_div_data(r.card))
    tid = C.terminal_id_bytes("11552001")
    return C.verify_purchase_tac(dtk, r.amount, tid, r.tts, bytes.fromhex(r.date), bytes.fromhex(r.time), r.tac)


def initialize(card: VirtualRfidSim, amount: int, key_index: int = 1) -> bytes:
    card.transmit(bytes.fromhex("00A4000002DDF1"))
    card.transmit(bytes.fromhex("00A4000002ADF1"))
    apdu = bytes.fromhex("80500102 0B") + bytes((key_index,)) + amount.to_bytes(4, "big") + bytes(6) + b"\x0f"
    return card.transmit(apdu)


def test_spec_7_4_purchase_through_the_virtual_devices_byte_for_byte() -> None:
    card = sim(balance=10_000)
    fixed_random(card, "11223344")
    terminal = pos()
    record = terminal.purchase(card, 1234, WHEN)
    assert card.commands[-1].hex().upper() == "805401000F" + "00000001" + "20111221" + "214822" + "28FD555F" + "08"
    assert record.tac == bytes.fromhex("F63B867D")
    assert (record.card, record.offline_serial, record.amount, record.balance_after) == (CARD, 0, 1234, 8766)
    assert record.wire() == {"card": CARD, "offline_serial": 0, "amount": 1234, "balance_after": 8766,
                             "tts": "00000001", "date": "20111221", "time": "214822", "tac": "F63B867D",
                             "void": False}
    assert card.balance == 8766 and card.offline_serial == 1 and terminal.psam.next_tts == 2
    assert tac_ok(record)


def test_initialize_for_purchase_checks_in_spec_order() -> None:
    assert initialize(sim(state=STATE_PAUSED), 0, key_index=2) == b"\x69\x85"
    assert initialize(sim(state=STATE_NONE), 100) == b"\x69\x85"
    assert initialize(sim(), 0, key_index=2) == b"\x94\x03"
    assert initialize(sim(), 0) == b"\x94\x01"
    assert initialize(sim(balance=90_000), 20_001) == b"\x69\x85"
    assert initialize(sim(balance=100), 101) == b"\x94\x01"
    reply = initialize(sim(balance=20_000), 20_000)
    assert reply[-2:] == b"\x90\x00" and len(reply) == 17
    assert reply[:4] == (20_000).to_bytes(4, "big") and reply[6:11] == bytes.fromhex("0000000100")


def test_limits_refuse_through_the_pos_with_the_cards_status_word() -> None:
    for card, amount, sw in ((sim(state=STATE_PAUSED), 100, "6985"), (sim(limit=5_000), 5_001, "6985"),
                             (sim(balance=99), 100, "9401")):
        with pytest.raises(PurchaseRefused) as refused:
            pos().purchase(card, amount, WHEN)
        assert refused.value.sw.hex().upper() == sw
        assert card.offline_serial == 0 and not card.log
    assert pos().purchase(sim(limit=5_000), 5_000, WHEN).balance_after == 45_000


def test_wrong_mac1_is_9302_changes_nothing_and_ends_the_session() -> None:
    card = sim(balance=1_000)
    init = initialize(card, 300)
    psam = VirtualPSAM("11552001", KEYS.purchase)
    tts, mac1 = psam.mac1(CARD, init[11:15], 0, 300, bytes.fromhex("20111221"), bytes.fromhex("214822"))
    debit = bytes.fromhex("805401000F") + tts.to_bytes(4, "big") + bytes.fromhex("20111221214822")
    assert card.transmit(debit + bytes(b ^ 1 for b in mac1) + b"\x08") == b"\x93\x02"
    assert card.transmit(debit + mac1 + b"\x08") == b"\x69\x85", "the refused DEBIT ended the session"
    assert (card.balance, card.offline_serial, len(card.log)) == (1_000, 0, 0)


def test_any_other_command_between_initialize_and_debit_ends_the_session() -> None:
    card = sim(balance=1_000)
    init = initialize(card, 300)
    psam = VirtualPSAM("00000000", KEYS.purchase)
    tts, mac1 = psam.mac1(CARD, init[11:15], 0, 300, bytes.fromhex("20111221"), bytes.fromhex("214822"))
    card.transmit(bytes.fromhex("805C000204"))
    debit = bytes.fromhex("805401000F") + tts.to_bytes(4, "big") + bytes.fromhex("20111221214822") + mac1 + b"\x08"
    assert card.transmit(debit) == b"\x69\x85" and card.balance == 1_000


def test_psam_refuses_a_wrong_mac2_and_never_reuses_a_tts() -> None:
    card = sim()
    card.corrupt_tac = False
    terminal = pos()
    first = terminal.purchase(card, 100, WHEN)
    card.fail_next_debit_with = b"\x65\x81"
    with pytest.raises(PurchaseRefused):
        terminal.purchase(card, 100, WHEN)
    second = terminal.purchase(card, 100, WHEN)
    assert (first.tts, second.tts) == (1, 3) and (first.offline_serial, second.offline_serial) == (0, 1)
    psam = VirtualPSAM("1", KEYS.purchase)
    psam.mac1(CARD, bytes(4), 0, 1, bytes(4), bytes(3))
    with pytest.raises(ValueError):
        psam.check_mac2(bytes(4))
    with pytest.raises(ValueError):
        psam.check_mac2(bytes(4))


def test_a_corrupt_tac_does_not_verify_on_the_platform_side() -> None:
    card = sim()
    card.corrupt_tac = True
    assert not tac_ok(pos().purchase(card, 100, WHEN))


def test_state_file_reads_freely_and_writes_only_with_secure_messaging() -> None:
    card = sim(state=STATE_NONE)
    fixed_random(card, "01020304")
    assert card.transmit(bytes.fromhex("00A4000002DDF1")) == b"\x90\x00"
    card.transmit(bytes.fromhex("00A4000002ADF1"))
    assert card.transmit(bytes.fromhex("00B0970005")) == bytes.fromhex("0000004E20 9000")
    damk = C.diversify(KEYS.maint, DIV)
    assert card.transmit(bytes.fromhex("0084000004")) == bytes.fromhex("01020304 9000")
    write = bytes.fromhex("04D6970009 01 00004E20 694080EB")
    assert C.wallet_state_update_mac(damk, bytes.fromhex("01020304"), 1, 20_000) == write[10:]
    assert card.transmit(write) == b"\x90\x00" and (card.state, card.limit) == (STATE_OPEN, 20_000)
    assert card.transmit(write) == b"\x69\x85", "the challenge is single use"
    challenge = card.transmit(bytes.fromhex("0084000004"))[:4]
    bad = C.WALLET_STATE_UPDATE_HEADER + bytes.fromhex("02 00004E20") + C.wallet_state_update_mac(
        damk, challenge, 1, 20_000)
    assert card.transmit(bad) == b"\x69\x88" and card.state == STATE_OPEN
    for state, limit in ((4, 20_000), (1, 0), (1, 100_001)):
        challenge = card.transmit(bytes.fromhex("0084000004"))[:4]
        command = (C.WALLET_STATE_UPDATE_HEADER + bytes((state,)) + limit.to_bytes(4, "big")
                   + C.wallet_state_update_mac(damk, challenge, state, limit))
        assert card.transmit(command) == b"\x6a\x80"
    assert card.transmit(bytes.fromhex("00B0970005")) == bytes.fromhex("0100004E20 9000")


def test_loads_need_an_open_wallet_and_stop_at_the_cap_then_log_as_type_02() -> None:
    assert initialize_load(sim(state=STATE_PAUSED), 100) == b"\x69\x85"
    assert initialize_load(sim(balance=99_999), 2) == b"\x94\x01"
    card = sim(balance=99_000)
    reply = initialize_load(card, 1_000)
    assert reply[-2:] == b"\x90\x00"
    dlk = C.diversify(KEYS.load, DIV)
    tid, date, time = bytes(6), bytes.fromhex("20250101"), bytes.fromhex("120000")
    mac2 = C.verify_mac1_make_mac2(dlk, reply[8:12], 0, 99_000, 1_000, tid, reply[12:16], date, time)
    assert mac2 is not None
    credit = card.transmit(bytes.fromhex("805200000B") + date + time + mac2 + b"\x04")
    assert credit[-2:] == b"\x90\x00" and card.balance == 100_000
    assert card.log[0] == LogRecord(0, 1_000, 0x02, tid, date, time)


def initialize_load(card: VirtualRfidSim, amount: int) -> bytes:
    card.transmit(bytes.fromhex("00A4000002DDF1"))
    card.transmit(bytes.fromhex("00A4000002ADF1"))
    return card.transmit(bytes.fromhex("805000020B01") + amount.to_bytes(4, "big") + bytes(6) + b"\x10")


def test_log_keeps_the_last_ten_newest_first_with_the_serial_before_the_increment() -> None:
    card = sim(balance=100_000)
    terminal = pos()
    for amount in range(1, 13):
        terminal.purchase(card, amount, WHEN)
    card.transmit(bytes.fromhex("00A4000002ADF1"))
    records = [card.transmit(bytes((0x00, 0xB2, n, 0xC4, 0x17))) for n in range(1, 12)]
    assert records[10] == b"\x6a\x83"
    decoded = [LogRecord.decode(r[:-2]) for r in records[:10]]
    assert [(r.serial, r.amount, r.kind) for r in decoded] == [(11 - i, 12 - i, 0x06) for i in range(10)]
    assert records[0][:-2].hex().upper() == "000B" "000000" "0000000C" "06" "000011552001" "20111221" "214822"
    assert card.transmit(bytes.fromhex("00B201C417"))[-2:] == b"\x90\x00"
    assert card.transmit(bytes.fromhex("00B201CC17")) == b"\x6b\x00"


def test_batch_void_and_return_requests_are_signed_under_k_pos() -> None:
    card, terminal = sim(), pos()
    first = terminal.purchase(card, 500, WHEN)
    second = terminal.purchase(card, 700, WHEN)
    voided = terminal.void(second)
    batch = terminal.batch()
    fields = json.loads(batch.body)
    assert batch.path == "/pos/batches" and list(fields) == ["terminal_id", "pos_seq", "batch_no", "records"]
    assert (fields["terminal_id"], fields["pos_seq"], fields["batch_no"]) == ("000011552001", 1, "000001")
    assert fields["records"] == [first.wire(), voided.wire()] and voided.wire()["void"] is True
    k_pos = C.diversify(KEYS.pos, bytes.fromhex("0000000011552001"))
    assert C.mac(k_pos, batch.body).hex().upper() == batch.mac == batch.headers["X-MAC"]
    assert terminal.pending == [] and terminal.uploaded == [first, voided]
    ret = terminal.return_request(first, 200)
    assert ret.fields == {"terminal_id": "000011552001", "pos_seq": 2, "card": CARD, "offline_serial": 0,
                          "amount": 200}
    reply = b'{"code":"0000"}'
    assert terminal.reply_ok(reply, C.mac(k_pos, reply).hex()) and not terminal.reply_ok(reply, "00000000")
    assert not terminal.reply_ok(reply, None) and not terminal.reply_ok(reply, "zz")


def test_batches_hold_at_most_a_thousand_records() -> None:
    card, terminal = sim(balance=100_000), pos()
    for _ in range(3):
        terminal.purchase(card, 1, WHEN)
    assert len(terminal.batch(limit=2).fields["records"]) == 2
    assert len(terminal.batch().fields["records"]) == 1 and terminal.batch_no == 2


def test_hall_buy_out_takes_the_whole_balance_within_the_cards_limit() -> None:
    card, hall = sim(balance=15_000), pos("11550001")
    record = hall.buy_out(card, WHEN)
    assert (record.amount, record.balance_after, card.balance) == (15_000, 0, 0) and hall.pending == []
    assert hall.swap_request(record).fields["record"] == record.wire()
    with pytest.raises(PurchaseRefused):
        hall.buy_out(sim(balance=30_000), WHEN)  # above the single-purchase limit: raise it first (STK)


def test_stk_request_of_spec_7_4_byte_for_byte_and_the_menu_after_the_script() -> None:
    card = sim(balance=0, state=STATE_NONE)
    phone = VirtualHandset(card)
    request = phone.request("wallet.open", challenge="01020304")
    assert request.body == (b'{"card_no":"1000581000000125","seq":1,"op":"wallet.open","params":{},'
                            b'"challenge":"01020304"}')
    assert request.mac == "2DDC0835"
    assert phone.menu[0] == "开通钱包"
    challenge = bytes.fromhex(phone.challenge())
    damk = C.diversify(KEYS.maint, DIV)
    apdu = C.WALLET_STATE_UPDATE_HEADER + bytes.fromhex("0100004E20") + C.wallet_state_update_mac(
        damk, challenge, 1, 20_000)
    script = C.script_encode([C.Instruction(1, apdu, b"\x90\x00", 0, 0)]).hex().upper()
    body = json.dumps({"code": "0000", "msg_zh": "成功", "msg_en": "OK",
                       "data": {"seq": 1, "text": "钱包开通成功。", "script": script}},
                      ensure_ascii=False).encode()
    k_stk = C.diversify(KEYS.stk, DIV)
    forged = phone.receive(200, body, "00000000")
    assert forged.shown == ["钱包开通请求发送成功!", "钱包开通成功。"] and forged.replies is None
    assert phone.menu[0] == "开通钱包", "no script ran: the menu stays"
    out = phone.receive(200, body, C.mac(k_stk, body).hex().upper())
    assert out.mac_ok and out.script_ok and out.code == "0000"
    assert phone.menu == ["注销钱包", "钱包充值", "钱包余额查询", "钱包暂停"]
    phone.request("wallet.pause")
    assert phone.receive(None, None, None).shown == ["暂停请求发送失败!"]
    assert phone.seq == 2 and phone.request("account.balance").fields.get("challenge") is None
