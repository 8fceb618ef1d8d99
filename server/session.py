"""The sans-IO DD terminal session: bytes in, requests out, responses to bytes (SPEC 1.1, 1.2).

No sockets and no asyncio here (the h11 model): ``receive_data`` feeds the stream through
``core_ext.FrameDecoder`` and returns the requests the flows must answer; ``send`` turns a
flow's ``Response`` into wire bytes and moves the state machine. Which stage may come next
is read from the stage table the session is given (``server.stages.StageTable``); a frame
that breaks the rules raises ``ProtocolError`` carrying the info code to answer with
(``None``: close without answer).

Order of checks on a received frame (SPEC 1.2): framing, header, stage (the table's stage
bytes only), version and the length bound (decoder, close silently); checksum ``0xA2``;
length vs info length ``0xCC`` (both decoder); then the stage against the one expected next
``0xA0`` (here).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from core_ext import MAX_LENGTH, Frame, FrameDecoder, FrameError, frame_encode
from server.stages import (
    FLOW_CONTINUE,
    FLOW_END,
    INFO_OK,
    INFO_STAGE,
    NO_PKI,
    STEP_CONTINUE,
    STEP_FIRST,
    Flow,
    Stage,
    StageTable,
)


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
    """A frame the flows must answer, with its row of the stage table."""

    frame: Frame
    stage: Stage[Any, Any]

    @property
    def flow(self) -> Flow:
        return self.stage.flow


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


def error_frame(response_stage: int, user_id: bytes, pki: bytes | None, code: int) -> bytes:
    """The wire bytes of an error answer (stage ``response_stage``)."""
    return frame_encode(Frame(stage=response_stage, user_id=user_id, pki=pki or NO_PKI, flow=FLOW_END, result=code))


class TerminalSession:
    """One connection's protocol state; feed it bytes, ask it for the answer's bytes."""

    __slots__ = ("_decoder", "table", "state", "flow", "expected", "expected_step", "optional", "current",
                 "frames_seen")

    def __init__(self, table: StageTable[Any, Any], max_length: int = MAX_LENGTH) -> None:
        self._decoder = FrameDecoder(True, max_length, table.request_stages)
        self.table = table
        self.state = State.IDLE
        self.flow: Flow | None = None
        self.expected: int | None = None  # WAITING: the stage and step the next frame must have
        self.expected_step = STEP_FIRST
        self.optional = False  # WAITING for a follow-up the terminal may skip by closing (DD19)
        self.current: Request | None = None  # the request being answered
        self.frames_seen = 0

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def optional_next(self) -> bool:
        """True while only an optional stage may follow (DD19): closing is not an error."""
        return self.state is State.WAITING and self.optional

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
            if exc.info_code is None or exc.stage not in self.table.response_of:
                raise ProtocolError(str(exc), None, None) from None
            answer = error_frame(self.table.response_of[exc.stage], exc.user_id or b"", exc.pki, exc.info_code)
            raise ProtocolError(str(exc), exc.info_code, answer) from None
        requests = []
        for frame in frames:
            self.frames_seen += 1
            requests.append(self._accept(frame))
        return requests

    def _accept(self, frame: Frame) -> Request:
        row: Stage[Any, Any] | None = None
        if self.state is State.IDLE:
            row = self.table.first(frame.stage, frame.step)
        elif self.state is State.WAITING and frame.stage == self.expected and frame.step == self.expected_step:
            row = self.table.rows[frame.stage, frame.step]
        # else BUSY: the terminal did not wait for the answer
        if row is None:
            self.state = State.CLOSED
            raise ProtocolError(
                f"stage 0x{frame.stage:02X} out of order", INFO_STAGE,
                error_frame(self.table.response_of[frame.stage], frame.user_id, frame.pki, INFO_STAGE),
            )
        self.flow = row.flow
        self.state = State.BUSY
        self.current = Request(frame, row)
        return self.current

    def send(self, response: Response) -> bytes:
        """The wire bytes answering the current request; moves to the next state."""
        request = self.current
        if self.state is not State.BUSY or request is None:
            raise RuntimeError("no request to answer")
        row, frame = request.stage, request.frame
        ends = response.end or response.result != INFO_OK
        if not ends and row.next is not None:
            self._wait_for(row.next, optional=False)
        elif response.result == INFO_OK and row.follow_up is not None:
            self._wait_for(row.follow_up, optional=True)
        else:
            self.state, self.expected = State.CLOSED, None
        self.current = None
        return frame_encode(
            Frame(
                stage=self.table.response_of[row.request],
                user_id=frame.user_id,
                pki=response.pki if response.pki is not None else (frame.pki or NO_PKI),
                info=response.info,
                flow=FLOW_CONTINUE if self.state is State.WAITING and not ends else FLOW_END,
                result=response.result,
            )
        )

    def _wait_for(self, stage: int, *, optional: bool) -> None:
        self.state, self.expected, self.expected_step, self.optional = State.WAITING, stage, STEP_CONTINUE, optional

    def abort(self, code: int) -> bytes:
        """An error answer to the current request (busy, internal error), ending the flow."""
        return self.send(Response.refuse(code))
