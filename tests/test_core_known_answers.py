"""Known answers for core_ext: SPEC 1.6 vectors, FIPS DES, and the seed's toreader scripts.

Every test runs against both the compiled core and the pure-Python reference.
"""

from __future__ import annotations

from types import ModuleType

import pytest

import core_ext
from core_ext import reference

IMPLS = [pytest.param(core_ext, id="compiled"), pytest.param(reference, id="reference")]

PASSBOOK_KEY = bytes.fromhex("11223344556677888877665544332211")
TERMINAL = bytes.fromhex("001122334455")

@pytest.mark.parametrize("impl", IMPLS)
def test_des_fips_vector(impl: ModuleType) -> None:
    key = bytes.fromhex("133457799BBCDFF1")
    assert impl.des_encrypt(key, bytes.fromhex("0123456789ABCDEF")) == bytes.fromhex("85E813540F0AB405")
    assert impl.des_decrypt(key, bytes.fromhex("85E813540F0AB405")) == bytes.fromhex("0123456789ABCDEF")


@pytest.mark.parametrize("impl", IMPLS)
def test_passbook_load_seslk_mac1_mac2_match_spec(impl: ModuleType) -> None:
    seslk = impl.pboc_seslk(PASSBOOK_KEY, bytes.fromhex("11223344"), 0x0000)
    assert seslk == bytes.fromhex("9B1D924E05595603")
    assert impl.pboc_mac1(seslk, 0, 0x1000, TERMINAL, trans_type=0x01) == bytes.fromhex("2988AE5A")
    mac2 = impl.pboc_mac2(seslk, 0x1000, TERMINAL, bytes.fromhex("20111221"), bytes.fromhex("214822"), trans_type=0x01)
    assert mac2 == bytes.fromhex("3A845BF0")


@pytest.mark.parametrize("impl", IMPLS)
def test_retail_mac_matches_spec(impl: ModuleType) -> None:
    key = bytes.fromhex("5775204D69616F6A756E404726444311")
    data = b"CHENHAO-PC|BFEBFBFF000306C3~9BP0PD2CN7016366I0043|20240111|20250101|8191|0"
    assert len(data) == 74
    assert impl.mac8(key, data) == bytes.fromhex("4089819D3D991CC7")
    assert impl.mac(key, data) == bytes.fromhex("4089819D")


@pytest.mark.parametrize("impl", IMPLS)
def test_mac_pads_aligned_data_with_a_full_block(impl: ModuleType) -> None:
    key = bytes(range(8))
    block = bytes(8)
    assert impl.mac8(key, block) == _cbc_two_blocks(impl, key, block)


def _cbc_two_blocks(impl: ModuleType, key: bytes, block: bytes) -> bytes:
    first = impl.des_encrypt(key, block)
    pad = b"\x80" + bytes(7)
    return bytes(impl.des_encrypt(key, bytes(a ^ b for a, b in zip(first, pad, strict=True))))


@pytest.mark.parametrize("impl", IMPLS)
def test_terminal_pki_and_card_diversification_data(impl: ModuleType) -> None:
    assert impl.terminal_id_bytes("11552001") == bytes.fromhex("000011552001")
    assert impl.pki_div_data(bytes.fromhex("70000472")) == bytes.fromhex("0000000070000472")
    assert impl.card_div_data("1680115500000125") == bytes.fromhex("1680115500000125")
    with pytest.raises(ValueError):
        impl.terminal_id_bytes("1234567890123")
    with pytest.raises(ValueError):
        impl.card_div_data("16801155000001x5")


@pytest.mark.parametrize("impl", IMPLS)
def test_diversify_is_3des_of_data_and_its_complement(impl: ModuleType) -> None:
    x = bytes.fromhex("1680115500000125")
    left = impl.des3_encrypt(PASSBOOK_KEY, x)
    right = impl.des3_encrypt(PASSBOOK_KEY, bytes(b ^ 0xFF for b in x))
    assert impl.diversify(PASSBOOK_KEY, x) == left + right


SEED_SCRIPT_ACCOUNT = [
    "010700A4000002DDF190000200", "0205C4FE00000090000300", "050500B095080890000000",
    "030700A4000002ADF16A810400", "040700A4000002ADF390000500",
]
SEED_SCRIPT_AIRLOAD = [
    "010700A4000002DDF190000200", "0205C4FE00000090000300", "030500B095005890000400", "0405008400000890000500",
    "050500B091000190000600", "060700A4000002ADF16A810700", "070700A4000002ADF390000800",
    "0805805C00020490000900", "090500B0951D0490000A00", "0A05C4FB00020090000B00", "0B05008400000490000000",
]


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_account_query_script_decodes_into_its_instructions(impl: ModuleType) -> None:
    script = impl.script_decode(bytes.fromhex("".join(SEED_SCRIPT_ACCOUNT)))
    assert [(i.seq, i.apdu.hex().upper(), i.expected_sw.hex().upper(), i.next_ok, i.next_fail) for i in script] == [
        (1, "00A4000002DDF1", "9000", 2, 0),
        (2, "C4FE000000", "9000", 3, 0),
        (5, "00B0950808", "9000", 0, 0),
        (3, "00A4000002ADF1", "6A81", 4, 0),
        (4, "00A4000002ADF3", "9000", 5, 0),
    ]
    assert impl.script_encode(script).hex().upper() == "".join(SEED_SCRIPT_ACCOUNT)


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_air_load_script_decodes_eleven_chained_instructions(impl: ModuleType) -> None:
    script = impl.script_decode(bytes.fromhex("".join(SEED_SCRIPT_AIRLOAD)))
    assert [i.seq for i in script] == list(range(1, 12))
    assert [i.next_ok for i in script] == [*range(2, 12), 0]
    assert script[7].apdu == bytes.fromhex("805C000204")
    assert script[10].apdu == bytes.fromhex("0084000004")


@pytest.mark.parametrize("impl", IMPLS)
def test_spec_dd12_script_is_select_select_read_balance(impl: ModuleType) -> None:
    dd12 = bytes.fromhex("01 07 00A4000002DDF1 9000 02 00 02 07 00A4000002ADF1 9000 03 00"
                         " 03 05 00B095001E 9000 04 00 04 05 805C000204 9000 00 00")
    script = impl.script_decode(dd12)
    assert [i.apdu.hex().upper() for i in script] == ["00A4000002DDF1", "00A4000002ADF1", "00B095001E", "805C000204"]
    assert impl.script_encode(script) == dd12


# SPEC 7.4: the SIM wallet's purchase, state-file write and STK MAC, byte for byte.
W_MK_PURCHASE = bytes.fromhex("11223344556677888877665544332211")
W_MK_TAC = bytes.fromhex("A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8")
W_MK_MAINT = bytes.fromhex("C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF")
W_MK_STK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
W_CARD = "1000581000000125"
W_TID = bytes.fromhex("000011552001")
W_DATE, W_TIME = bytes.fromhex("20111221"), bytes.fromhex("214822")
W_STK_BODY = b'{"card_no":"1000581000000125","seq":1,"op":"wallet.open","params":{},"challenge":"01020304"}'


@pytest.mark.parametrize("impl", IMPLS)
def test_spec_7_4_purchase_keys_macs_and_tac(impl: ModuleType) -> None:
    div = impl.card_div_data(W_CARD)
    dpk = impl.diversify(W_MK_PURCHASE, div)
    assert dpk == bytes.fromhex("93EF5089B0FDB1B94D239E932FC70264")
    sespk = impl.pboc_sespk(dpk, bytes.fromhex("11223344"), 0x0000, 0x00000001)
    assert sespk == bytes.fromhex("C4E19CD664B00184")
    mac1 = impl.pboc_purchase_mac1(sespk, 1234, W_TID, W_DATE, W_TIME)
    assert mac1 == bytes.fromhex("28FD555F")
    assert impl.pboc_purchase_mac2(sespk, 1234) == bytes.fromhex("AEEF25E5")
    assert impl.verify_purchase_mac1_make_mac2(dpk, bytes.fromhex("11223344"), 0, 1, 1234, W_TID, W_DATE, W_TIME,
                                               mac1) == bytes.fromhex("AEEF25E5")
    dtk = impl.diversify(W_MK_TAC, div)
    assert dtk == bytes.fromhex("96A0F61AA70235E9DE6E2152F2A694A5")
    tac = impl.pboc_purchase_tac(dtk, 1234, W_TID, 1, W_DATE, W_TIME)
    assert tac == bytes.fromhex("F63B867D")
    assert impl.verify_purchase_tac(dtk, 1234, W_TID, 1, W_DATE, W_TIME, tac)
    assert not impl.verify_purchase_tac(dtk, 1235, W_TID, 1, W_DATE, W_TIME, tac)


@pytest.mark.parametrize("impl", IMPLS)
def test_spec_7_4_wallet_state_write_and_stk_mac(impl: ModuleType) -> None:
    div = impl.card_div_data(W_CARD)
    damk = impl.diversify(W_MK_MAINT, div)
    assert damk == bytes.fromhex("60BDEEC04565B04F5FC3214CC4D981F4")
    assert impl.WALLET_STATE_UPDATE_HEADER == bytes.fromhex("04D6970009")
    assert impl.wallet_state_update_mac(damk, bytes.fromhex("01020304"), 0x01, 0x4E20) == bytes.fromhex("694080EB")
    k_stk = impl.diversify(W_MK_STK, div)
    assert k_stk == bytes.fromhex("E639D0EFA63C8C0689063039097AB49C")
    assert len(W_STK_BODY) == 92
    assert impl.mac(k_stk, W_STK_BODY) == bytes.fromhex("2DDC0835")


@pytest.mark.parametrize("impl", IMPLS)
def test_pos_diversification_data_and_purchase_argument_checks(impl: ModuleType) -> None:
    assert impl.pos_div_data("11552001") == bytes.fromhex("0000000011552001")
    with pytest.raises(ValueError):
        impl.pos_div_data("1234567890123")
    with pytest.raises(ValueError):
        impl.pboc_sespk(bytes(16), bytes(4), 0x10000, 0)
    with pytest.raises(ValueError):
        impl.pboc_sespk(bytes(16), bytes(4), 0, 1 << 32)
    with pytest.raises(ValueError):
        impl.wallet_state_update_mac(bytes(16), bytes(4), 0x100, 0)
    with pytest.raises(ValueError):
        impl.wallet_state_update_mac(bytes(16), bytes(3), 1, 0)
    with pytest.raises(ValueError):
        impl.verify_purchase_tac(bytes(16), 1, W_TID, 1, W_DATE, W_TIME, bytes(3))
