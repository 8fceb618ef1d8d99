"""The DD frame decoder's stream semantics and its order of checks (SPEC 1.1, 1.2), compiled and reference."""

from __future__ import annotations

import random
import time
from types import ModuleType

import pytest

import core_ext
from core_ext import reference
from tests.fuzz_decoder import fuzz

IMPLS = [pytest.param(core_ext, id="compiled"), pytest.param(reference, id="reference")]
USER = b"11552001"
PKI = bytes.fromhex("70000472")


def request(impl: ModuleType, stage: int = 0x11, info: bytes = b"\x00" * 15) -> bytes:
    return bytes(impl.frame_encode(impl.Frame(stage=stage, user_id=USER, pki=PKI, info=info, step=0)))


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_style_dd01_frame_bytes(impl: ModuleType) -> None:
    wire = impl.frame_encode(impl.Frame(stage=0x01, user_id=USER, pki=b"\xff" * 4, info=b"", step=0))
    assert wire[:5] == bytes.fromhex("DD01010016")
    assert wire[5:21] == USER + bytes(8)
    assert wire[-4:] == impl.crc32(wire[5:-4]).to_bytes(4, "big")
    assert len(wire) == 5 + 22 + 4


@pytest.mark.parametrize("impl", IMPLS)
def test_response_frame_carries_flow_and_result(impl: ModuleType) -> None:
    frame = impl.Frame(stage=0x12, user_id=USER, pki=PKI, info=b"abc", flow=0xFF, result=0xBB)
    wire = impl.frame_encode(frame)
    assert int.from_bytes(wire[3:5], "big") == 23 + 3
    (got,) = impl.FrameDecoder(requests=False).feed(wire)
    assert (got.flow, got.result, got.info, got.is_request) == (0xFF, 0xBB, b"abc", False)


@pytest.mark.parametrize("impl", IMPLS)
def test_byte_by_byte_and_several_frames_in_one_read(impl: ModuleType) -> None:
    stream = request(impl, 0x11) + request(impl, 0x13, b"x" * 200) + request(impl, 0x21, b"")
    decoder = impl.FrameDecoder()
    frames = [f for i in range(len(stream)) for f in decoder.feed(stream[i:i + 1])]
    assert [f.stage for f in frames] == [0x11, 0x13, 0x21]
    assert [f.stage for f in impl.FrameDecoder().feed(stream)] == [0x11, 0x13, 0x21]
    assert frames[0].user_id == USER and frames[0].pki == PKI


@pytest.mark.parametrize("impl", IMPLS)
def test_largest_legal_frame_is_287_bytes_and_decodes(impl: ModuleType) -> None:
    wire = request(impl, 0x17, b"\xaa" * 255)
    assert len(wire) == 287 - 1  # a request has one code byte; a response with 255 info bytes is 287
    response = impl.frame_encode(impl.Frame(stage=0x18, user_id=USER, pki=PKI, info=b"\xaa" * 255))
    assert len(response) == 287
    assert impl.FrameDecoder(requests=False).feed(response)[0].info == b"\xaa" * 255


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mutate", [
    pytest.param(lambda w: b"\xde" + w[1:], id="header"),
    pytest.param(lambda w: w[:1] + b"\x1a" + w[2:], id="unknown-stage"),
    pytest.param(lambda w: w[:1] + b"\x12" + w[2:], id="platform-stage"),
    pytest.param(lambda w: w[:2] + b"\x02" + w[3:], id="version"),
    pytest.param(lambda w: w[:3] + (279).to_bytes(2, "big") + w[5:], id="length-above-278"),
])
def test_untrusted_header_closes_without_answer(impl: ModuleType, mutate: object) -> None:
    with pytest.raises(impl.FrameError) as err:
        impl.FrameDecoder().feed(mutate(request(impl)))  # type: ignore[operator]
    assert err.value.info_code is None


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_checksum_is_a2_with_stage_user_and_pki_to_answer(impl: ModuleType) -> None:
    wire = bytearray(request(impl))
    wire[-1] ^= 0xFF
    with pytest.raises(impl.FrameError) as err:
        impl.FrameDecoder().feed(bytes(wire))
    assert (err.value.info_code, err.value.stage, err.value.user_id, err.value.pki) == (0xA2, 0x11, USER, PKI)


@pytest.mark.parametrize("impl", IMPLS)
def test_length_disagreeing_with_info_length_is_cc_after_a_good_crc(impl: ModuleType) -> None:
    wire = bytearray(request(impl, info=b"12345"))
    wire[5 + 21] = 4  # info length byte says 4, the length field delimits 5
    wire[-4:] = impl.crc32(bytes(wire[5:-4])).to_bytes(4, "big")
    with pytest.raises(impl.FrameError) as err:
        impl.FrameDecoder().feed(bytes(wire))
    assert err.value.info_code == 0xCC and err.value.stage == 0x11 and err.value.pki == PKI


@pytest.mark.parametrize("impl", IMPLS)
def test_checksum_is_checked_before_length(impl: ModuleType) -> None:
    wire = bytearray(request(impl, info=b"12345"))
    wire[5 + 21] = 4
    with pytest.raises(impl.FrameError) as err:
        impl.FrameDecoder().feed(bytes(wire))
    assert err.value.info_code == 0xA2


@pytest.mark.parametrize("impl", IMPLS)
def test_decoder_is_dead_after_an_error_and_reports_earlier_frames(impl: ModuleType) -> None:
    decoder = impl.FrameDecoder()
    with pytest.raises(impl.FrameError) as err:
        decoder.feed(request(impl) + b"\x00")
    assert [f.stage for f in err.value.frames] == [0x11]
    assert decoder.dead
    with pytest.raises(impl.FrameError):
        decoder.feed(request(impl))


@pytest.mark.parametrize("impl", IMPLS)
def test_never_buffers_more_than_one_frame(impl: ModuleType) -> None:
    decoder = impl.FrameDecoder()
    wire = request(impl, info=b"z" * 255)
    assert decoder.feed(wire[:-1]) == [] and decoder.buffered == len(wire) - 1
    frames = decoder.feed(wire[-1:] + wire[:100])
    assert len(frames) == 1 and decoder.buffered == 100


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_rejects_oversize_fields(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.frame_encode(impl.Frame(stage=0x11, user_id=b"x" * 17, pki=PKI))
    with pytest.raises(ValueError):
        impl.frame_encode(impl.Frame(stage=0x11, user_id=USER, pki=PKI, info=bytes(256)))
    with pytest.raises(ValueError):
        impl.frame_encode(impl.Frame(stage=0x1A, user_id=USER, pki=PKI))


def test_frames_are_immutable_and_compare_by_value() -> None:
    a = core_ext.Frame(stage=0x02, user_id=USER, pki=PKI, info=b"", flow=0, result=0)
    b = core_ext.Frame(stage=0x02, user_id=USER, pki=PKI, info=b"", flow=0, result=0)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.stage = 3  # type: ignore[misc]


def test_short_fuzz_compiled_agrees_with_reference() -> None:
    started = time.perf_counter()
    cases = fuzz(seconds=3.0, rng=random.Random(20251121))
    assert cases > 200
    assert time.perf_counter() - started < 10
