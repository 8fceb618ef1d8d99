"""The virtual card and security module speak the platform's scripts and cryptograms (SPEC 1.3, 1.4, 1.6, 1.7)."""

from __future__ import annotations

import pytest

import core_ext as C
from core_ext.virtual_card import VirtualCard
from core_ext.virtual_sam import SAMError, VirtualSAM

MK_LOAD = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
MK_TAC = bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")
MK_MAINT = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
MK_SIGNIN = bytes.fromhex("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8")
CARD_NO = "5810440100001234"
TID = C.terminal_id_bytes("11552001")
DATE, TIME = bytes.fromhex("20250102"), bytes.fromhex("030405")
DD12 = bytes.fromhex("01 07 00A4000002DDF1 9000 02 00 02 07 00A4000002ADF1 9000 03 00"
                     " 03 05 00B095001E 9000 04 00 04 05 805C000204 9000 00 00")


def card(balance: int = 1000) -> VirtualCard:
    return VirtualCard(CARD_NO, balance, MK_LOAD, MK_TAC, MK_MAINT, seed=7)


def dd14(amount: int, key_index: int = 1) -> bytes:
    apdu = bytes.fromhex("805000020B") + bytes((key_index,)) + amount.to_bytes(4, "big") + TID + b"\x10"
    return C.script_encode([C.Instruction(1, apdu, b"\x90\x00", 0, 0)])


def dd16(mac2: bytes) -> bytes:
    apdu = bytes.fromhex("805200000B") + DATE + TIME + mac2 + b"\x04"
    return C.script_encode([C.Instruction(1, apdu, b"\x90\x00", 0, 0)])


def initialize(vc: VirtualCard, amount: int) -> tuple[int, int, bytes, bytes]:
    """(balance, serial, random, mac1) from the card's DD15 reply."""
    vc.run_script(DD12)
    (reply,) = C.reply_decode(vc.run_script(dd14(amount)))
    assert reply.sw == b"\x90\x00"
    body = reply.body
    assert body[6:8] == b"\x01\x00"  # key version 01, algorithm 00
    return int.from_bytes(body[:4], "big"), int.from_bytes(body[4:6], "big"), body[8:12], body[12:16]


def platform_mac2(balance: int, serial: int, rnd: bytes, mac1: bytes, amount: int) -> bytes:
    dlk = C.diversify(MK_LOAD, C.card_div_data(CARD_NO))
    mac2 = C.verify_mac1_make_mac2(dlk, rnd, serial, balance, amount, TID, mac1, DATE, TIME)
    assert mac2 is not None, "the card's MAC1 must verify with the platform's keys"
    return mac2


def platform_tac_ok(balance_after: int, serial: int, amount: int, tac: bytes) -> bool:
    dtk = C.diversify(MK_TAC, C.card_div_data(CARD_NO))
    return C.verify_tac(dtk, balance_after, serial, amount, TID, DATE, TIME, tac)


def test_dd12_script_reads_issuer_file_and_balance() -> None:
    replies = C.reply_decode(card(1234).run_script(DD12))
    assert [r.seq for r in replies] == [1, 2, 3, 4]
    assert all(r.sw == b"\x90\x00" for r in replies)
    issuer = replies[2].body
    assert len(issuer) == 30
    assert issuer[4] == 0x01 and C.bcd_decode(issuer[8:16]) == CARD_NO
    assert int.from_bytes(replies[3].body, "big") == 1234


def test_full_load_credits_balance_increments_serial_and_tac_verifies() -> None:
    vc = card(1000)
    balance, serial, rnd, mac1 = initialize(vc, 500)
    assert (balance, serial) == (1000, 0)
    (reply,) = C.reply_decode(vc.run_script(dd16(platform_mac2(balance, serial, rnd, mac1, 500))))
    assert reply.sw == b"\x90\x00" and vc.balance == 1500 and vc.online_serial == 1
    assert platform_tac_ok(1500, serial, 500, reply.body)
    assert initialize(vc, 1)[:2] == (1500, 1)


def test_wrong_mac2_is_refused_with_9302_and_nothing_is_credited() -> None:
    vc = card(1000)
    balance, serial, rnd, mac1 = initialize(vc, 500)
    bad = bytes(b ^ 1 for b in platform_mac2(balance, serial, rnd, mac1, 500))
    (reply,) = C.reply_decode(vc.run_script(dd16(bad)))
    assert reply.data == b"\x93\x02" and vc.balance == 1000 and vc.online_serial == 0


def test_transaction_prove_returns_mac2_and_tac_after_a_load_and_9406_before() -> None:
    vc = card(0)
    balance, serial, rnd, mac1 = initialize(vc, 700)
    prove = bytes.fromhex("805A000202") + serial.to_bytes(2, "big") + b"\x08"
    assert vc.transmit(prove) == b"\x94\x06"
    mac2 = platform_mac2(balance, serial, rnd, mac1, 700)
    vc.run_script(dd16(mac2))
    proof = vc.transmit(prove)
    assert proof[-2:] == b"\x90\x00" and proof[:4] == mac2
    assert platform_tac_ok(700, serial, 700, proof[4:8])


def test_initialize_refuses_unsupported_key_index_and_zero_amount() -> None:
    vc = card()
    vc.run_script(DD12)
    assert C.reply_decode(vc.run_script(dd14(100, key_index=2)))[0].data == b"\x94\x03"
    assert C.reply_decode(vc.run_script(dd14(0)))[0].data == b"\x94\x01"


def test_credit_without_initialize_is_6985_and_unknown_file_is_6a82() -> None:
    vc = card()
    vc.run_script(DD12)
    assert C.reply_decode(vc.run_script(dd16(bytes(4))))[0].data == b"\x69\x85"
    assert vc.transmit(bytes.fromhex("00A4000002DF01")) == b"\x6a\x82"


def test_fault_knobs_fail_credit_drop_or_corrupt_tac() -> None:
    vc = card(0)
    vc.fail_next_credit_with = b"\x65\x81"
    b, s, r, m = initialize(vc, 10)
    assert C.reply_decode(vc.run_script(dd16(platform_mac2(b, s, r, m, 10))))[0].data == b"\x65\x81"
    assert vc.balance == 0
    vc.corrupt_tac = True
    b, s, r, m = initialize(vc, 10)
    (reply,) = C.reply_decode(vc.run_script(dd16(platform_mac2(b, s, r, m, 10))))
    assert vc.balance == 10 and not platform_tac_ok(10, s, 10, reply.body)
    vc.corrupt_tac, vc.drop_tac = False, True
    b, s, r, m = initialize(vc, 10)
    assert C.reply_decode(vc.run_script(dd16(platform_mac2(b, s, r, m, 10))))[0].data == b"\x90\x00"


def test_script_follows_next_fail_and_stops_at_zero() -> None:
    script = C.script_encode([
        C.Instruction(1, bytes.fromhex("00A4000002DDF1"), b"\x90\x00", 2, 0),
        C.Instruction(2, bytes.fromhex("00A4000002DF99"), b"\x90\x00", 3, 4),
        C.Instruction(3, bytes.fromhex("805C000204"), b"\x90\x00", 0, 0),
        C.Instruction(4, bytes.fromhex("00A4000002ADF1"), b"\x90\x00", 0, 0),
    ])
    assert [r.seq for r in C.reply_decode(card().run_script(script))] == [1, 2, 4]


def test_deposit_update_with_secure_messaging_needs_the_challenge_and_mac() -> None:
    vc = card()
    vc.run_script(DD12)
    damk = C.diversify(MK_MAINT, C.card_div_data(CARD_NO))
    challenge = vc.transmit(bytes.fromhex("0084000004"))[:4]
    update = C.DEPOSIT_UPDATE_HEADER + b"\x01" + C.deposit_update_mac(damk, challenge, 0x01)
    assert vc.transmit(update) == b"\x90\x00" and vc.deposit_flag == 1
    assert vc.transmit(update) == b"\x69\x85", "the challenge is single use"
    challenge = vc.transmit(bytes.fromhex("0084000004"))[:4]
    wrong = C.DEPOSIT_UPDATE_HEADER + b"\x00" + C.deposit_update_mac(damk, challenge, 0x01)
    assert vc.transmit(wrong) == b"\x69\x88" and vc.deposit_flag == 1
    assert vc.transmit(bytes.fromhex("00B0960001")) == b"\x01\x90\x00"


def test_sam_and_platform_complete_a_sign_in() -> None:
    sam = VirtualSAM.from_master("70000472", MK_SIGNIN, seed=3)
    dd03 = sam.r_init()
    pki, rt = dd03[:4], dd03[4:]
    assert pki == bytes.fromhex("70000472")
    k_pki = C.signin_pki_key(MK_SIGNIN, pki)
    rp = bytes(range(8))
    dd05 = sam.ac_login1(rp + C.signin_cryptogram(k_pki, rt))
    assert C.constant_time_eq(dd05, C.signin_cryptogram(k_pki, rp))
    sk = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
    dd07 = sam.ac_login2(C.signin_wrap_session_key(k_pki, sk))
    assert dd07 == C.signin_proof(sk, pki, rt, rp)


def test_sam_refuses_a_wrong_platform_cryptogram_and_a_bad_check_value() -> None:
    sam = VirtualSAM.from_master("70000472", MK_SIGNIN)
    rt = sam.r_init()[4:]
    k_pki = C.signin_pki_key(MK_SIGNIN, bytes.fromhex("70000472"))
    with pytest.raises(SAMError):
        sam.ac_login1(bytes(8) + C.signin_cryptogram(MK_SIGNIN, rt))
    sam.ac_login1(bytes(8) + C.signin_cryptogram(k_pki, rt))
    wrapped = bytearray(C.signin_wrap_session_key(k_pki, bytes(16)))
    wrapped[-1] ^= 1
    with pytest.raises(SAMError):
        sam.ac_login2(bytes(wrapped))
