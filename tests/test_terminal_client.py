"""The terminal client's flows without sockets (sans-IO): what each flow sends, what it does with
each answer, and what its observer sees; and both drivers against the real server."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from app import fixtures
from app.fixtures import SimTerminal
from core_ext import Frame, FrameDecoder, bcd_encode
from server import terminal_client as tc
from server.stages import FLOW_CONTINUE, FLOW_END

M = tc.TerminalMessages("11552001", "70000472")
ORDER = "2026112100000000001"


def answer(stage: int, *, result: int = 0, flow: int = FLOW_CONTINUE, info: bytes = b"") -> Frame:
    return Frame(stage=stage, user_id=b"11552001", pki=bcd_encode("70000472", 4), info=info, flow=flow, result=result)


class EchoCard:
    """A card that answers every script with its own bytes reversed (enough to see them relayed)."""

    def run_script(self, script: bytes) -> bytes:
        return script[::-1]


def requests_of(sent: list[bytes]) -> list[tuple[int, int, bytes]]:
    frames = FrameDecoder(True).feed(b"".join(sent))
    return [(f.stage, f.step, f.info) for f in frames]


def test_recharge_flow_relays_each_script_to_the_card_and_returns_the_receipt() -> None:
    seen: list[tuple[int, int | None, BaseException | None]] = []
    runner = tc.FlowRunner(
        tc.recharge(M, EchoCard(), ORDER + "0", 500),
        lambda request, frame, seconds, error: seen.append((request[1], frame and frame.stage, error)),
    )
    sent = [runner.start()]
    for reply in (answer(0x12, info=b"read"), answer(0x14, info=b"init"), answer(0x16, info=b"credit"),
                  answer(0x18, flow=FLOW_END)):
        request = runner.answer(reply)
        assert request is not None
        sent.append(request)
    assert runner.answer(answer(0x20, flow=FLOW_END, info=b"receipt")) is None
    assert runner.result is not None and runner.result.info == b"receipt"
    assert [(stage, info) for stage, _, info in requests_of(sent)][1:4] == [
        (0x13, b"daer"), (0x15, b"tini"), (0x17, b"tiderc")]
    assert [stage for stage, _, _ in requests_of(sent)] == [0x11, 0x13, 0x15, 0x17, 0x19]
    assert [(s, a) for s, a, _ in seen] == [(0x11, 0x12), (0x13, 0x14), (0x15, 0x16), (0x17, 0x18), (0x19, 0x20)]


def test_a_refusal_ends_the_flow_with_FlowFailed_at_its_stage_and_the_observer_sees_it() -> None:
    errors: list[BaseException | None] = []
    runner = tc.FlowRunner(tc.recharge(M, EchoCard(), ORDER + "0", 500), lambda *a: errors.append(a[3]))
    runner.start()
    with pytest.raises(tc.FlowFailed) as failed:
        runner.answer(answer(0x12, result=0x99, flow=FLOW_END))
    assert (failed.value.stage, failed.value.result, str(failed.value)) == (0x12, 0x99, "DD12 answered 0x99")
    assert len(errors) == 1 and errors[0] is failed.value


def test_a_continue_where_the_flow_must_end_is_a_failure() -> None:
    runner = tc.FlowRunner(tc.sign_in(M, _Module()))
    runner.start()
    for stage in (0x02, 0x04, 0x06):
        assert runner.answer(answer(stage)) is not None
    with pytest.raises(tc.FlowFailed) as failed:
        runner.answer(answer(0x08, flow=FLOW_CONTINUE))
    assert failed.value.expected_end and str(failed.value) == "DD08 flow 0x00, expected the end"


def test_query_proves_a_loading_order_with_the_card_and_stops_at_a_settled_one() -> None:
    runner = tc.FlowRunner(tc.query(M, ORDER + "0", EchoCard()))
    runner.start()
    proof = runner.answer(answer(0x22, info=b"prove"))
    assert proof is not None and requests_of([proof]) == [(0x21, 1, bcd_encode(ORDER + "0", 10) + b"evorp")]
    assert runner.answer(answer(0x22, flow=FLOW_END)) is None
    settled = tc.FlowRunner(tc.query(M, ORDER + "0", EchoCard()))
    settled.start()
    assert settled.answer(answer(0x22, flow=FLOW_END, info=b"receipt")) is None
    assert settled.result is not None and settled.result.info == b"receipt"


def test_a_lost_connection_is_reported_once_and_closes_the_flow() -> None:
    errors: list[BaseException | None] = []
    flow = tc.sign_in(M, _Module())
    runner = tc.FlowRunner(flow, lambda *a: errors.append(a[3]))
    runner.start()
    lost = tc.ConnectionClosed("gone")
    runner.lost(lost)
    assert errors == [lost]
    with pytest.raises(StopIteration):
        next(flow)


class _Module:
    def r_init(self) -> bytes:
        return bcd_encode("70000472", 4) + bytes(8)

    def ac_login1(self, info: bytes) -> bytes:
        return bytes(8)

    def ac_login2(self, info: bytes) -> bytes:
        return bytes(4)


# --- both drivers against the real server --------------------------------------------------------


@pytest.mark.usefixtures("audited")
async def test_the_blocking_and_the_asyncio_driver_run_the_same_flows(
    term: SimTerminal, conn: asyncpg.Connection
) -> None:
    timings = tc.StageTimings()
    blocking = tc.TerminalClient(term.host, term.port, term.code, term.pki, timings=timings)
    assert (await asyncio.to_thread(blocking.sign_in, term.module())).stage == 0x08
    card = term.card(balance_cents=100)
    first = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 300)
    second = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 300)
    dd20 = await asyncio.to_thread(blocking.recharge, card, first, 300)
    client = tc.AsyncTerminalClient(term.host, term.port, term.code, term.pki, timings=timings)
    dd18 = await client.recharge(card, second, 300, receipt=False)
    assert (dd20.stage, dd18.stage, dd18.flow, card.balance) == (0x20, 0x18, FLOW_END, 700)
    assert {stage: len(times) for stage, times in timings.by_stage.items()} == {
        0x01: 1, 0x03: 1, 0x05: 1, 0x07: 1, 0x11: 2, 0x13: 2, 0x15: 2, 0x17: 2, 0x19: 1}
    with pytest.raises(tc.FlowFailed) as failed:
        await client.recharge(card, first, 300)  # loaded already: not loadable
    assert (failed.value.stage, failed.value.result) == (0x12, 0x96)
