"""The order-API envelope (http_api/order_envelope.py): the seed's worked example byte for byte, its
errors, and agreement with a pure-Python oracle (pycryptodome 3DES via core_ext.reference)."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core_ext import reference
from http_api import order_envelope

# Seed 004, 3.2.1: the APPLLogin request.
REQUEST_TIMESTAMP = "1428042275"
REQUEST_PLAINTEXT = '{"platform":1, "userinfo": "{\\"openid\\":\\"1234567890\\"}", "type":1}'
REQUEST_DATA = (
    "C99486C1AA1897DE48650DC10C2BECB796D3F43CA80F884DE22023F22E0C35939"
    "8EA8F3C3A8D3965024F8FFEF9F4E4F17AACBFEF799F113279B4BEDEA9B3541D1A0E156475F7E2DC"
)
# The same ciphertext as printed in the seed: one 'F' dropped, one 'E' printed as '9'.
REQUEST_DATA_PRINTED = (
    "C99486C1AA1897DE48650DC10C2BECB796D3F43CA80F884DE22023F22E0C35939"
    "8EA8F3C3A8D3965024F8FFE9F4E4F17AACBF9F799F113279B4BEDEA9B3541D1A0E156475F7E2DC"
)
REQUEST_MAC = "D99C278A"

# Seed 004, 3.2.1: the APPLLogin reply (key from timestamp 1433296168984, as its step 3 says).
REPLY_TIMESTAMP = "1433296168984"
REPLY_PLAINTEXT = (
    '{"pki":"70000472","serial":"0000000000003309","key":"00000000","toreader":["010700a4000002ddf190000200",'
    '"0205c4fe00000090000300","030500b095080890000000","040700a4000002adf16a810400","050700a4000002adf390000500"]}'
)
REPLY_DATA_PRINTED = (
    "1452106a861ae1c0ba56f4865b13aa9b0002fcbc4a093bb9ba3930be69f72290aa5564acea2278c37c02e67de748999ff2c2068a6f"
    "e666fa143ec3309471496a259411a60393298d7335a4f2c08f3ff4eae fcf88de4bf7482e3f13083638d77b8d34afef2b97a78929"
    "19631aab015c13e2bdfd5158399ffe050d5c84111d7f8b5fa46d09d08aeae99c1d10f3876b773c1f9a47bfd351154627bd6a7623d2"
    "2641fa9da8342518fe378788a383e1acab6bb45d27376797f7ce810140b840c73a5702f2874ad1710bc076c246baf071faaf0cd76d"
    "09518819e"
)
# The printed reply without its stray space and with the one 'f' the transcription dropped (offset 297).
REPLY_DATA = REPLY_DATA_PRINTED.replace(" ", "")[:297] + "f" + REPLY_DATA_PRINTED.replace(" ", "")[297:]
REPLY_MAC = "5E1A42E3"
REPLY_CLEAR = {"status": 1, "errmsg": ""}


def _lcs_len(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for ch in a:
        cur = [0]
        for j, other in enumerate(b):
            cur.append(prev[j] + 1 if ch == other else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]



def test_printed_request_ciphertext_differs_from_ours_only_by_two_transcription_errors() -> None:
    assert len(REQUEST_DATA) == 144 and len(REQUEST_DATA_PRINTED) == 143
    assert _lcs_len(REQUEST_DATA_PRINTED, REQUEST_DATA) == 142


def test_envelope_request_example_ciphertext_and_mac_byte_for_byte() -> None:
    data, mac = order_envelope.envelope_encrypt(REQUEST_TIMESTAMP, REQUEST_PLAINTEXT)
    assert data == REQUEST_DATA
    assert mac == REQUEST_MAC
    assert order_envelope.envelope_decrypt(REQUEST_TIMESTAMP, data, mac) == REQUEST_PLAINTEXT


def test_envelope_mac_is_md5_tail_of_compact_json_in_wire_order() -> None:
    fields = {"timestamp": int(REQUEST_TIMESTAMP), "data": REQUEST_DATA, "mac": "ignored"}
    assert order_envelope.envelope_mac(fields) == REQUEST_MAC


def test_envelope_reply_example_decrypts_to_the_json_shown() -> None:
    plain = order_envelope.envelope_decrypt(REPLY_TIMESTAMP, REPLY_DATA, REPLY_MAC, clear=REPLY_CLEAR)
    assert plain == REPLY_PLAINTEXT
    assert json.loads(plain)["pki"] == "70000472"
    data, mac = order_envelope.envelope_encrypt(REPLY_TIMESTAMP, REPLY_PLAINTEXT, clear=REPLY_CLEAR, lowercase=True)
    assert (data, mac) == (REPLY_DATA, REPLY_MAC)


def test_envelope_rejects_wrong_mac_bad_hex_odd_length_and_printed_typos() -> None:
    with pytest.raises(order_envelope.EnvelopeError):
        order_envelope.envelope_decrypt(REQUEST_TIMESTAMP, REQUEST_DATA, "00000000")
    with pytest.raises(order_envelope.EnvelopeError):
        order_envelope.envelope_decrypt(REQUEST_TIMESTAMP, REQUEST_DATA_PRINTED, REQUEST_MAC)
    with pytest.raises(order_envelope.EnvelopeError):
        order_envelope.envelope_decrypt(REPLY_TIMESTAMP, REPLY_DATA_PRINTED, REPLY_MAC, clear=REPLY_CLEAR)
    with pytest.raises(order_envelope.EnvelopeError):
        order_envelope.envelope_decrypt(REQUEST_TIMESTAMP, "ZZ" * 8, REQUEST_MAC)
    with pytest.raises(order_envelope.EnvelopeError):
        order_envelope.envelope_decrypt(REQUEST_TIMESTAMP, REQUEST_DATA, REQUEST_MAC, clear={"status": 1})
    assert issubclass(order_envelope.EnvelopeError, ValueError)


def test_envelope_rejects_a_whole_block_of_padding() -> None:
    key_ts = "1428042275"
    data, _ = order_envelope.envelope_encrypt(key_ts, "{}")
    padded_block = reference.des3_encrypt(hashlib.md5(key_ts.encode()).digest(), bytes(8)).hex().upper()
    bad = data + padded_block
    mac = order_envelope.envelope_mac({"timestamp": int(key_ts), "data": bad})
    with pytest.raises(order_envelope.EnvelopeError):
        order_envelope.envelope_decrypt(key_ts, bad, mac)


def _oracle_data(timestamp: str, plaintext: str) -> str:
    """The envelope's data as the SPEC defines it, from the reference 3DES (pycryptodome)."""
    raw = plaintext.encode("utf-8")
    return reference.des3_encrypt(hashlib.md5(timestamp.encode()).digest(), raw + bytes(-len(raw) % 8)).hex()


@given(st.integers(0, 2**41).map(str), st.text(max_size=60).filter(lambda t: not t.endswith("\x00")),
       st.booleans())
def test_envelope_agrees_with_the_reference_3des_and_round_trips(timestamp: str, plaintext: str, lowercase: bool) -> None:
    clear = {"status": 1, "errmsg": "错误"}
    data, mac = order_envelope.envelope_encrypt(timestamp, plaintext, clear=clear, lowercase=lowercase)
    oracle = _oracle_data(timestamp, plaintext)
    assert data == (oracle if lowercase else oracle.upper())
    fields = {"timestamp": int(timestamp), **clear, "data": data}
    compact = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    assert mac == hashlib.md5(compact.encode()).hexdigest()[-8:].upper()
    assert order_envelope.envelope_decrypt(timestamp, data, mac, clear=clear) == plaintext
    assert order_envelope.open_envelope({**fields, "mac": mac}) == plaintext
