"""The sans-IO DD terminal session: bytes in, requests out, responses to bytes (SPEC 1.1, 1.2).

No sockets and no asyncio here (the h11 model): ``receive_data`` feeds the stream through
``core_ext.FrameDecoder`` and returns the requests the flows must answer; ``send`` turns a
flow's ``Response`` into wire bytes and moves the state machine. Which stage may come next
is data (``NEXT_STAGE``, ``FIRST_STAGES``); a frame that breaks the rules raises
``ProtocolError`` carrying the info code to answer with (``None``: close without answer).

Order of checks on a received frame (SPEC 1.2): framing, header, stage, version and the
length bound (decoder, close silently); checksum ``0xA2``; length vs info length ``0xCC``
(both decoder); then the stage against the one expected next ``0xA0`` (here).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core_ext import (
    INFO_OK,
    INFO_STAGE,
    MAX_LENGTH,
    REQUEST_STAGES,
    Frame,
    FrameDecoder,
    FrameError,
    frame_encode,
)

NO_PKI = b"\xff\xff\xff\xff"
FLOW_CONTINUE = 0x00
FLOW_END = 0xFF
STEP_FIRST = 0x00
STEP_CONTINUE = 0x01


class Flow(enum.Enum):
    SIGNIN = "signin"
    RECHARGE = "recharge"
    QUERY = "query"
    DEPOSIT = "deposit"


# The stage each request stage is answered with ("written as if decimal": 0x19 → 0x20).
RESPONSE_STAGE: dict[int, int] = {
    0x01: 0x02, 0x03: 0x04, 0x05: 0x06, 0x07: 0x08,
    0x11: 0x12, 0x13: 0x14, 0x15: 0x16, 0x17: 0x18, 0x19: 0x20,
    0x21: 0x22, 0x73: 0x74,
}
# A connection's first frame: the stage that opens each flow (step 0x00).
FIRST_STAGES: dict[int, Flow] = {0x01: Flow.SIGNIN, 0x11: Flow.RECHARGE, 0x21: Flow.QUERY, 0x73: Flow.DEPOSIT}
# After a continue/success answer to stage S, the stage the terminal must send next (step 0x01).
NEXT_STAGE: dict[int, int] = {0x01: 0x03, 0x03: 0x05, 0x05: 0x07, 0x11: 0x13, 0x13: 0x15, 0x15: 0x17, 0x21: 0x21}
# After an *ending* success answer to stage S, an optional stage on the same connection.
AFTER_END: dict[int, int] = {0x17: 0x19}


class State(enum.Enum):
    IDLE = "idle"  # connected, no flow yet: a first stage is expected
    WAITING = "waiting"  # a flow is running: ``expected`` is the next stage
    BUSY = "busy"  # a request is being answered: nothing may arrive now
    CLOSED = "closed"  # the flow ended (or broke): the connection closes


class ProtocolError(Exception):
    """A frame that breaks the protocol. ``answer`` holds the bytes to send before closing
    (an error frame with ``info_code``), or ``None`` when the connection closes silently."""

    def __init__(self, message: str, info_code: int | None, answer: bytes | None) -> None:
        super().__init__(message)
        self.info_code = info_code
        self.answer = answer


@dataclass(frozen=True, slots=True)
class Request:
    """A frame the flows must answer, with the flow it belongs to."""

    frame: Frame
    flow: Flow


@dataclass(frozen=True, slots=True)
class Response:
    """A flow's answer. ``pki`` overrides the echoed PKI field (DD04 only)."""

    result: int = INFO_OK
    info: bytes = b""
    end: bool = False
    pki: bytes | None = None

    @classmethod
    def refuse(cls, code: int) -> Response:
        """An error ends the flow: flow 0xFF with the info code, no info."""
        return cls(result=code, end=True)


def error_frame(stage: int, user_id: bytes, pki: bytes | None, code: int) -> bytes:
    """The wire bytes of an error answer to a request of ``stage``."""
    return frame_encode(
        Frame(stage=RESPONSE_STAGE[stage], user_id=user_id, pki=pki or NO_PKI, flow=FLOW_END, result=code)
    )


class TerminalSession:
    """One connection's protocol state; feed it bytes, ask it for the answer's bytes."""

    __slots__ = ("_decoder", "state", "flow", "expected", "expected_step", "current", "frames_seen")

    def __init__(self, max_length: int = MAX_LENGTH) -> None:
        self._decoder = FrameDecoder(True, max_length)
        self.state = State.IDLE
        self.flow: Flow | None = None
        self.expected: int | None = None
        self.expected_step = STEP_FIRST
        self.current: Frame | None = None  # the request being answered
        self.frames_seen = 0

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def receive_data(self, data: bytes) -> list[Request]:
        """The requests completed by ``data``, in order; raises ``ProtocolError`` on a bad one.

        A request returned moves the session to BUSY until ``send`` answers it; any further
        frame before that answer is out of order (the protocol is strictly request/response).
        """
        if self.state is State.CLOSED:
            raise ProtocolError("data after the flow ended", None, None)
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            self.state = State.CLOSED
            if exc.info_code is None or exc.stage not in RESPONSE_STAGE:
                raise ProtocolError(str(exc), None, None) from None
            answer = error_frame(exc.stage, exc.user_id or b"", exc.pki, exc.info_code)
            raise ProtocolError(str(exc), exc.info_code, answer) from None
        requests = []
        for frame in frames:
            self.frames_seen += 1
            requests.append(self._accept(frame))
        return requests

    def _accept(self, frame: Frame) -> Request:
        stage = frame.stage
        if self.state is State.IDLE:
            flow = FIRST_STAGES.get(stage)
            ok = flow is not None and frame.step == STEP_FIRST
        elif self.state is State.WAITING:
            flow = self.flow
            ok = stage == self.expected and frame.step == self.expected_step
        else:  # BUSY: the terminal did not wait for the answer
            flow, ok = None, False
        if not ok or flow is None:
            self.state = State.CLOSED
            raise ProtocolError(
                f"stage 0x{stage:02X} out of order", INFO_STAGE,
                error_frame(stage, frame.user_id, frame.pki, INFO_STAGE),
            )
        self.flow = flow
        self.state = State.BUSY
        self.current = frame
        return Request(frame, flow)

    def send(self, response: Response) -> bytes:
        """The wire bytes answering the current request; moves to the next state."""
        request = self.current
        if self.state is not State.BUSY or request is None:
            raise RuntimeError("no request to answer")
        ends = response.end or response.result != INFO_OK
        stage = request.stage
        if not ends and stage in NEXT_STAGE:
            self.state, self.expected, self.expected_step = State.WAITING, NEXT_STAGE[stage], STEP_CONTINUE
        elif response.result == INFO_OK and stage in AFTER_END:
            self.state, self.expected, self.expected_step = State.WAITING, AFTER_END[stage], STEP_CONTINUE
        else:
            self.state, self.expected = State.CLOSED, None
        self.current = None
        return frame_encode(
            Frame(
                stage=RESPONSE_STAGE[stage],
                user_id=request.user_id,
                pki=response.pki if response.pki is not None else (request.pki or NO_PKI),
                info=response.info,
                flow=FLOW_CONTINUE if self.state is State.WAITING and not ends else FLOW_END,
                result=response.result,
            )
        )

    def abort(self, code: int) -> bytes:
        """An error answer to the current request (busy, internal error), ending the flow."""
        return self.send(Response.refuse(code))

    @property
    def optional_next(self) -> bool:
        """True while only an optional stage may follow (DD19): closing is not an error."""
        return self.state is State.WAITING and self.expected in AFTER_END.values()


assert set(RESPONSE_STAGE) == set(REQUEST_STAGES), "stage table out of step with core_ext"
