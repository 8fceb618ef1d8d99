"""Property tests: the compiled core agrees with the pure-Python reference, and encodings round-trip."""

from __future__ import annotations

import importlib
import importlib.machinery
import random
import zlib
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import core_ext as C
from core_ext import reference as R
from core_ext._crc import _crc32_paths

key8 = st.binary(min_size=8, max_size=8)
key16 = st.binary(min_size=16, max_size=16)
blocks = st.integers(0, 6).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n))
u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
b4 = st.binary(min_size=4, max_size=4)
b6 = st.binary(min_size=6, max_size=6)
b3 = st.binary(min_size=3, max_size=3)


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """A call's result, or the kind of error it raised, so that failures are compared too."""
    try:
        return "ok", fn(*args, **kwargs)
    except ValueError:
        return "ValueError", None


@given(st.binary(max_size=2048))
def test_crc32_agrees(data: bytes) -> None:
    assert C.crc32(data) == R.crc32(data)


@given(st.text(alphabet="0123456789a ٣", max_size=12), st.integers(0, 6))
def test_bcd_encode_agrees_including_errors(digits: str, nbytes: int) -> None:
    assert outcome(C.bcd_encode, digits, nbytes) == outcome(R.bcd_encode, digits, nbytes)


@given(st.binary(max_size=12))
def test_bcd_decode_agrees_including_errors(data: bytes) -> None:
    assert outcome(C.bcd_decode, data) == outcome(R.bcd_decode, data)


@given(st.integers(0, 10**20).map(str), st.integers(0, 12))
def test_bcd_round_trips(digits: str, nbytes: int) -> None:
    if len(digits) <= 2 * nbytes:
        assert C.bcd_decode(C.bcd_encode(digits, nbytes)) == digits.rjust(2 * nbytes, "0")


@given(st.integers(-5, 2**80), st.integers(0, 10))
def test_be_encode_agrees_and_round_trips(value: int, nbytes: int) -> None:
    got = outcome(C.be_encode, value, nbytes)
    assert got == outcome(R.be_encode, value, nbytes)
    if got[0] == "ok":
        assert C.be_decode(got[1]) == value == R.be_decode(got[1])


stages = st.sampled_from([s for s in range(256) if C.stage_kind(s)])  # every stage byte the frame syntax allows


@st.composite
def frames(draw: st.DrawFn) -> dict[str, Any]:
    stage = draw(stages)
    fields: dict[str, Any] = {
        "stage": stage,
        "user_id": draw(st.binary(max_size=16).map(lambda b: b.rstrip(b"\x00"))),
        "pki": draw(b4),
        "info": draw(st.binary(max_size=255)),
    }
    if stage & 1:
        fields["step"] = draw(st.integers(0, 255))
    else:
        fields["flow"] = draw(st.integers(0, 255))
        fields["result"] = draw(st.integers(0, 255))
    return fields


def as_tuple(frame: Any) -> tuple[Any, ...]:
    return (frame.stage, frame.user_id, frame.pki, frame.info, frame.step, frame.flow, frame.result)


@given(frames())
def test_frame_encode_agrees_and_decode_round_trips(fields: dict[str, Any]) -> None:
    wire = C.frame_encode(C.Frame(**fields))
    assert wire == R.frame_encode(R.Frame(**fields))
    requests = bool(fields["stage"] & 1)
    assert C.frame_decode(wire, requests) == C.Frame(**fields)
    assert as_tuple(R.frame_decode(wire, requests)) == as_tuple(C.Frame(**fields))


def error_view(exc: Any) -> tuple[Any, ...]:
    return (exc.info_code, exc.stage, exc.user_id, exc.pki)


def run_stream(module: Any, chunks: list[bytes], requests: bool) -> list[Any]:
    """Frames as tuples and the error (if any) that ended the stream."""
    decoder = module.FrameDecoder(requests)
    events: list[Any] = []
    for chunk in chunks:
        try:
            events.extend(as_tuple(f) for f in decoder.feed(chunk))
        except module.FrameError as exc:
            events.extend(as_tuple(f) for f in exc.frames)
            events.append(("error", *error_view(exc)))
            break
        assert decoder.buffered <= 287
    return events


def chop(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Valid frames of one direction, optionally with a few bytes flipped or random bytes spliced in."""
    requests = draw(st.booleans())
    pool = [f for f in range(256) if C.stage_kind(f) == (1 if requests else 2)]
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        fields = draw(frames())
        fields["stage"] = draw(st.sampled_from(pool))
        fields.pop("step", None), fields.pop("flow", None), fields.pop("result", None)
        parts.append(C.frame_encode(C.Frame(**fields)))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data += draw(st.binary(max_size=40))
    return bytes(data), requests


@settings(max_examples=300)
@given(streams(), st.lists(st.integers(0, 2000), max_size=8))
def test_decoders_agree_on_mutated_streams_at_any_chunking(stream: tuple[bytes, bool], cuts: list[int]) -> None:
    data, requests = stream
    chunks = chop(data, cuts)
    compiled = run_stream(C, chunks, requests)
    assert compiled == run_stream(R, chunks, requests)
    assert compiled == run_stream(C, [data], requests)


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6), st.booleans())
def test_random_bytes_never_crash_the_decoder(data: bytes, cuts: list[int], requests: bool) -> None:
    assert run_stream(C, chop(data, cuts), requests) == run_stream(R, chop(data, cuts), requests)


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[int, bytes, bytes, int, int]]:
    return draw(st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40), st.binary(min_size=2, max_size=2),
                                   st.integers(0, 255), st.integers(0, 255)), max_size=6))


@given(scripts())
def test_scripts_encode_agree_and_round_trip(items: list[tuple[int, bytes, bytes, int, int]]) -> None:
    wire = C.script_encode([C.Instruction(*i) for i in items])
    assert wire == R.script_encode([R.Instruction(*i) for i in items])
    assert C.script_decode(wire) == [C.Instruction(*i) for i in items]
    assert R.script_decode(wire) == [R.Instruction(*i) for i in items]


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(min_size=2, max_size=60)), max_size=6))
def test_replies_encode_agree_and_round_trip(items: list[tuple[int, bytes]]) -> None:
    wire = C.reply_encode([C.Reply(*i) for i in items])
    assert wire == R.reply_encode([R.Reply(*i) for i in items])
    decoded = C.reply_decode(wire)
    assert decoded == [C.Reply(*i) for i in items]
    assert [(r.sw, r.body) for r in decoded] == [(d[-2:], d[:-2]) for _, d in items]


@given(st.binary(max_size=80))
def test_script_and_reply_decoders_agree_on_garbage(data: bytes) -> None:
    def view(module: Any, fn: str) -> Any:
        kind, value = outcome(getattr(module, fn), data)
        if fn == "script_decode" and value is not None:
            return kind, [(i.seq, i.apdu, i.expected_sw, i.next_ok, i.next_fail) for i in value]
        return kind, value and [(r.seq, r.data) for r in value]

    assert view(C, "script_decode") == view(R, "script_decode")
    assert view(C, "reply_decode") == view(R, "reply_decode")


@given(key8, blocks)
def test_des_agrees(key: bytes, data: bytes) -> None:
    assert C.des_encrypt(key, data) == R.des_encrypt(key, data)
    assert C.des_decrypt(key, C.des_encrypt(key, data)) == data


@given(key16, blocks)
def test_des3_agrees_and_round_trips(key: bytes, data: bytes) -> None:
    assert C.des3_encrypt(key, data) == R.des3_encrypt(key, data)
    assert C.des3_decrypt(key, data) == R.des3_decrypt(key, data)
    assert C.des3_decrypt(key, C.des3_encrypt(key, data)) == data


@given(key16, key8)
def test_diversify_agrees(mk: bytes, data: bytes) -> None:
    assert C.diversify(mk, data) == R.diversify(mk, data)


@given(st.one_of(key8, key16), st.binary(max_size=70), key8)
def test_mac_agrees(key: bytes, data: bytes, iv: bytes) -> None:
    assert C.mac8(key, data, iv) == R.mac8(key, data, iv)
    assert C.mac(key, data) == R.mac(key, data)


@given(key16, b4, u16, u32, u32, b6, b4, b3, st.booleans())
def test_pboc_load_functions_agree(dlk: bytes, rnd: bytes, serial: int, balance: int, amount: int, tid: bytes,
                                   date: bytes, time: bytes, right_mac1: bool) -> None:
    seslk = C.pboc_seslk(dlk, rnd, serial)
    assert seslk == R.pboc_seslk(dlk, rnd, serial)
    mac1 = C.pboc_mac1(seslk, balance, amount, tid)
    assert mac1 == R.pboc_mac1(seslk, balance, amount, tid)
    assert C.pboc_mac2(seslk, amount, tid, date, time) == R.pboc_mac2(seslk, amount, tid, date, time)
    assert C.pboc_tac(dlk, balance, serial, amount, tid, date, time) == R.pboc_tac(
        dlk, balance, serial, amount, tid, date, time)
    sent = mac1 if right_mac1 else bytes(b ^ 1 for b in mac1)
    expected = C.pboc_mac2(seslk, amount, tid, date, time) if right_mac1 else None
    assert C.verify_mac1_make_mac2(dlk, rnd, serial, balance, amount, tid, sent, date, time) == expected
    assert R.verify_mac1_make_mac2(dlk, rnd, serial, balance, amount, tid, sent, date, time) == expected
    tac = C.pboc_tac(dlk, balance, serial, amount, tid, date, time)
    assert C.verify_tac(dlk, balance, serial, amount, tid, date, time, tac)
    assert not C.verify_tac(dlk, balance, serial, amount, tid, date, time, bytes(b ^ 0x80 for b in tac))


@given(key16, b4, key16, key8, key8)
def test_signin_helpers_agree(mk: bytes, pki: bytes, sk: bytes, rt: bytes, rp: bytes) -> None:
    k_pki = C.signin_pki_key(mk, pki)
    assert k_pki == R.signin_pki_key(mk, pki)
    assert C.signin_cryptogram(k_pki, rt) == R.signin_cryptogram(k_pki, rt)
    wrapped = C.signin_wrap_session_key(k_pki, sk)
    assert wrapped == R.signin_wrap_session_key(k_pki, sk)
    assert C.signin_unwrap_session_key(k_pki, wrapped) == sk == R.signin_unwrap_session_key(k_pki, wrapped)
    assert C.signin_proof(sk, pki, rt, rp) == R.signin_proof(sk, pki, rt, rp)


@given(key16, b4, st.integers(0, 255))
def test_deposit_update_mac_agrees(damk: bytes, challenge: bytes, flag: int) -> None:
    assert C.deposit_update_mac(damk, challenge, flag) == R.deposit_update_mac(damk, challenge, flag)


def test_both_short_crc_paths_match_zlib_at_every_length_up_to_the_zlib_threshold() -> None:
    rng = random.Random(3)
    for n in range(1025):
        for _ in range(3):
            data = rng.randbytes(n)
            table, clmul = _crc32_paths(data)
            assert table == zlib.crc32(data), n
            assert clmul is None or clmul == zlib.crc32(data), n


def test_crc32_of_a_mebibyte_and_of_buffer_types_matches_zlib() -> None:
    data = bytes(range(256)) * 4096 + b"tail"
    assert C.crc32(data) == zlib.crc32(data)
    assert C.crc32(bytearray(data[:1000])) == C.crc32(memoryview(data)[:1000]) == zlib.crc32(data[:1000])


@given(key16, key16, b4, u16, u32, u32, b6, b4, b3, st.booleans())
def test_pboc_purchase_functions_agree(dpk: bytes, dtk: bytes, rnd: bytes, serial: int, tts: int, amount: int,
                                       tid: bytes, date: bytes, time: bytes, right_mac1: bool) -> None:
    sespk = C.pboc_sespk(dpk, rnd, serial, tts)
    assert sespk == R.pboc_sespk(dpk, rnd, serial, tts)
    mac1 = C.pboc_purchase_mac1(sespk, amount, tid, date, time)
    assert mac1 == R.pboc_purchase_mac1(sespk, amount, tid, date, time)
    mac2 = C.pboc_purchase_mac2(sespk, amount)
    assert mac2 == R.pboc_purchase_mac2(sespk, amount)
    sent = mac1 if right_mac1 else bytes(b ^ 1 for b in mac1)
    expected = mac2 if right_mac1 else None
    args = (dpk, rnd, serial, tts, amount, tid, date, time, sent)
    assert C.verify_purchase_mac1_make_mac2(*args) == expected == R.verify_purchase_mac1_make_mac2(*args)
    tac = C.pboc_purchase_tac(dtk, amount, tid, tts, date, time)
    assert tac == R.pboc_purchase_tac(dtk, amount, tid, tts, date, time)
    bad = bytes(b ^ 0x80 for b in tac)
    for impl in (C, R):
        assert impl.verify_purchase_tac(dtk, amount, tid, tts, date, time, tac)
        assert not impl.verify_purchase_tac(dtk, amount, tid, tts, date, time, bad)


@given(st.binary(min_size=15, max_size=17), st.binary(min_size=3, max_size=5), st.integers(-1, 256),
       st.integers(-1, 2**32))
def test_wallet_state_update_mac_agrees_including_errors(damk: bytes, challenge: bytes, state: int,
                                                         limit: int) -> None:
    assert outcome(C.wallet_state_update_mac, damk, challenge, state, limit) == outcome(
        R.wallet_state_update_mac, damk, challenge, state, limit)


@given(st.text(alphabet="0123456789x", max_size=14))
def test_pos_div_data_agrees_including_errors(code: str) -> None:
    assert outcome(C.pos_div_data, code) == outcome(R.pos_div_data, code)


def test_every_cython_module_is_built_and_the_api_is_the_references() -> None:
    """Each core_ext/*.pyx is imported compiled (an extension module, not a stale or missing one), and the
    package's API is the reference's, name for name."""
    sources = sorted(path.stem for path in Path(C.__file__).parent.glob("*.pyx"))
    assert len(sources) >= 7
    for stem in sources:
        module = importlib.import_module(f"core_ext.{stem}")
        assert module.__file__ is not None
        assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), stem
    assert [name for name in C.__all__ if not hasattr(R, name)] == []
