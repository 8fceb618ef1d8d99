"""The sans-IO TerminalSession without sockets: stage order, error answers, flow bytes, closing."""

from __future__ import annotations

import pytest

from core_ext import (
    Frame,
    FrameDecoder,
    bcd_encode,
    frame_encode,
)
from server.dispatch import STAGES
from server.session import (
    ProtocolError,
    Response,
    State,
)
from server.session import TerminalSession as _Session
from server.stages import INFO_CHECKSUM, INFO_LENGTH, INFO_STAGE, Flow, Stage, StageTable

# The views of the platform's stage table the session reads.
FIRST_STAGES = {row.request: row.flow for row in STAGES.opening.values()}
NEXT_STAGE = {row.request: row.next for row in STAGES.rows.values() if row.next is not None}
RESPONSE_STAGE = STAGES.response_of


def TerminalSession(max_length: int | None = None) -> _Session:  # noqa: N802 - stands in for the class
    """A session over the platform's stage table."""
    return _Session(STAGES) if max_length is None else _Session(STAGES, max_length)

USER = b"11552001"
PKI = bcd_encode("70000472", 4)


def request(stage: int, info: bytes = b"", step: int = 0, pki: bytes = PKI) -> bytes:
    return frame_encode(Frame(stage=stage, user_id=USER, pki=pki, info=info, step=step))


def answer_of(data: bytes) -> Frame:
    frames = FrameDecoder(False).feed(data)
    assert len(frames) == 1
    return frames[0]


def test_first_frame_opens_its_flow_and_session_becomes_busy() -> None:
    s = TerminalSession()
    [req] = s.receive_data(request(0x11, b"x" * 15))
    assert req.flow is Flow.RECHARGE and req.frame.stage == 0x11 and s.state is State.BUSY


def test_continue_answer_expects_next_stage_with_step_one() -> None:
    s = TerminalSession()
    s.receive_data(request(0x01))
    out = answer_of(s.send(Response(info=b"\xbb\x10\x00\x00\x00")))
    assert (out.stage, out.flow, out.result, out.user_id) == (0x02, 0x00, 0x00, USER)
    assert s.state is State.WAITING and s.expected == 0x03 and s.expected_step == 1


def test_response_echoes_request_pki_unless_overridden() -> None:
    s = TerminalSession()
    s.receive_data(request(0x01, pki=b"\xff" * 4))
    assert answer_of(s.send(Response())).pki == b"\xff" * 4
    s.receive_data(request(0x03, b"\x00" * 12, step=1, pki=b"\xff" * 4))
    assert answer_of(s.send(Response(pki=PKI))).pki == PKI


def test_stage_out_of_order_raises_with_A0_answer_and_closes() -> None:
    s = TerminalSession()
    with pytest.raises(ProtocolError) as err:
        s.receive_data(request(0x13, step=1))
    assert err.value.info_code == INFO_STAGE
    assert err.value.answer is not None
    out = answer_of(err.value.answer)
    assert (out.stage, out.flow, out.result) == (0x14, 0xFF, INFO_STAGE)
    assert s.closed


def test_wrong_step_is_out_of_order() -> None:
    s = TerminalSession()
    with pytest.raises(ProtocolError) as err:
        s.receive_data(request(0x11, b"x" * 15, step=1))
    assert err.value.info_code == INFO_STAGE


def test_frame_while_busy_is_out_of_order() -> None:
    s = TerminalSession()
    with pytest.raises(ProtocolError) as err:
        s.receive_data(request(0x01) + request(0x03, b"\x00" * 12, step=1))
    assert err.value.info_code == INFO_STAGE


def test_error_result_ends_flow_with_FF_and_closes() -> None:
    s = TerminalSession()
    s.receive_data(request(0x11, b"x" * 15))
    out = answer_of(s.send(Response.refuse(0x99)))
    assert (out.stage, out.flow, out.result) == (0x12, 0xFF, 0x99)
    assert s.closed


def test_successful_dd18_waits_for_optional_dd19() -> None:
    s = TerminalSession()
    s.state, s.expected, s.expected_step, s.flow = State.WAITING, 0x17, 1, Flow.RECHARGE
    s.receive_data(request(0x17, b"", step=1))
    out = answer_of(s.send(Response(end=True)))
    assert (out.stage, out.flow, out.result) == (0x18, 0xFF, 0)
    assert s.state is State.WAITING and s.expected == 0x19 and s.optional_next
    s.receive_data(request(0x19, b"\x00" * 10, step=1))
    assert answer_of(s.send(Response(end=True))).stage == 0x20
    assert s.closed


def test_failed_dd18_closes_without_waiting_for_dd19() -> None:
    s = TerminalSession()
    s.state, s.expected, s.expected_step, s.flow = State.WAITING, 0x17, 1, Flow.RECHARGE
    s.receive_data(request(0x17, b"", step=1))
    s.send(Response.refuse(0xAA))
    assert s.closed


def test_bad_checksum_answers_A2_with_the_request_user_id() -> None:
    data = bytearray(request(0x11, b"x" * 15))
    data[-1] ^= 0xFF
    with pytest.raises(ProtocolError) as err:
        TerminalSession().receive_data(bytes(data))
    assert err.value.info_code == INFO_CHECKSUM and err.value.answer is not None
    out = answer_of(err.value.answer)
    assert (out.stage, out.result, out.user_id) == (0x12, INFO_CHECKSUM, USER)


def test_length_disagreeing_with_info_length_answers_CC() -> None:
    good = request(0x11, b"x" * 15)
    body = bytearray(good[5:-4])
    body[16 + 1 + 4] = 14  # info length byte says 14, the length field says 15
    import zlib

    data = good[:5] + bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "big")
    with pytest.raises(ProtocolError) as err:
        TerminalSession().receive_data(data)
    assert err.value.info_code == INFO_LENGTH


@pytest.mark.parametrize(
    "data",
    [b"\xde\x11\x01\x00\x10", b"\xdd\x12\x01", b"\xdd\x1a\x01", b"\xdd\x11\x02", b"\xdd\x11\x01\x01\x17"],
    ids=["header", "platform_stage", "unknown_stage", "version", "oversize_length"],
)
def test_untrustworthy_bytes_close_silently(data: bytes) -> None:
    s = TerminalSession()
    with pytest.raises(ProtocolError) as err:
        s.receive_data(data)
    assert err.value.info_code is None and err.value.answer is None and s.closed


def test_configured_max_length_below_protocol_max_closes_silently() -> None:
    with pytest.raises(ProtocolError) as err:
        TerminalSession(max_length=40).receive_data(request(0x11, b"x" * 30))
    assert err.value.answer is None


def test_frame_split_byte_by_byte_is_one_request() -> None:
    s = TerminalSession()
    data = request(0x21, b"\x00" * 10)
    got = []
    for i in range(len(data)):
        got.extend(s.receive_data(data[i : i + 1]))
    assert len(got) == 1 and got[0].flow is Flow.QUERY


def test_stage_tables_are_consistent() -> None:
    for stage, nxt in NEXT_STAGE.items():
        assert stage in RESPONSE_STAGE and nxt in RESPONSE_STAGE
    assert set(FIRST_STAGES) <= set(RESPONSE_STAGE)
    assert RESPONSE_STAGE[0x19] == 0x20 and RESPONSE_STAGE[0x73] == 0x74


def test_send_without_request_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        TerminalSession().send(Response())


def noop() -> None:
    return None


@pytest.mark.parametrize(
    "rows",
    [
        [Stage(0x01, 0, Flow.SIGNIN, noop), Stage(0x01, 0, Flow.SIGNIN, noop)],
        [Stage(0x02, 0, Flow.SIGNIN, noop)],
        [Stage(0x1B, 0, Flow.SIGNIN, noop)],
        [Stage(0x01, 2, Flow.SIGNIN, noop)],
        [Stage(0x01, 0, Flow.SIGNIN, noop, next=0x03)],
        [Stage(0x01, 0, Flow.SIGNIN, noop, next=0x13), Stage(0x13, 1, Flow.RECHARGE, noop)],
    ],
    ids=["twice", "platform_stage", "not_decimal", "bad_step", "next_missing", "next_of_another_flow"],
)
def test_a_stage_table_that_breaks_the_rules_is_refused_on_construction(rows: list[Stage[object, object]]) -> None:
    with pytest.raises(ValueError):
        StageTable(rows)


def test_the_decoder_accepts_only_the_table_stages() -> None:
    small = StageTable([Stage(0x11, 0, Flow.RECHARGE, noop)])
    with pytest.raises(ProtocolError) as err:
        _Session(small).receive_data(request(0x21, b"\x00" * 10))
    assert err.value.info_code is None and err.value.answer is None  # an unknown stage: close silently
    [req] = _Session(small).receive_data(request(0x11, b"x" * 15))
    assert req.stage is small.rows[0x11, 0]
