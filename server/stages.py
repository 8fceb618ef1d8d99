"""The DD protocol's vocabulary as data (SPEC 1.1, 1.2, 1.5): flows, info codes and the stage table.

One ``StageTable`` says everything about the stages, a row per request stage and step: the
flow it belongs to, the handler that answers it (and a synchronous one that may answer
without a task), the stage the terminal must send after a continue answer, and the optional
stage it may send after an ending success. The sans-IO session (server/session.py) and the
dispatcher (server/dispatch.py, which holds the platform's table) are derived from it, and the
codec accepts exactly its stage bytes (``FrameDecoder(stages=...)``) — as h11 keeps its state
machine as data. Nothing here does I/O; the handlers are opaque values to this module.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from core_ext import INFO_CHECKSUM as INFO_CHECKSUM  # raised by the codec; re-exported with the rest
from core_ext import INFO_LENGTH as INFO_LENGTH
from core_ext import stage_kind

# --- info codes (SPEC 1.5); the codec raises 0xA2 and 0xCC itself ---------------------------
INFO_OK = 0x00
INFO_STAGE = 0xA0
INFO_PKI = 0xA1
INFO_PURSE_TYPE = 0xA3
INFO_REVERSAL_FAILED = 0xA4
INFO_REVERSAL_OK = 0xA5
INFO_APP_TYPE = 0xA6
INFO_FUND_EMPTY = 0xA7
INFO_CARD_ERROR = 0xAA
INFO_NOT_SIGNED_IN = 0xBB
INFO_BUSY = 0xDD
INFO_INTERNAL = 0xEE
INFO_NOT_LOADABLE = 0x96
INFO_AMOUNT = 0x97
INFO_CARD_MISMATCH = 0x98
INFO_UNKNOWN_ORDER = 0x99

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


def response_stage(stage: int) -> int:
    """The stage answering a request stage: the next number written as if decimal (0x19 → 0x20)."""
    if stage_kind(stage) != 1:
        raise ValueError(f"0x{stage:02X} is not a request stage")
    return stage + 7 if stage & 0x0F == 9 else stage + 1


H = TypeVar("H")  # the handler type (the dispatcher's coroutine function)
S = TypeVar("S")  # the synchronous handler type


@dataclass(frozen=True, slots=True)
class Stage(Generic[H, S]):
    """One request stage and step. ``next``: after a continue answer, the stage the terminal must
    send (step 0x01); ``follow_up``: after an ending success, a stage it may send on the same
    connection (step 0x01) instead of closing."""

    request: int
    step: int
    flow: Flow
    handler: H
    sync: S | None = None
    next: int | None = None
    follow_up: int | None = None

    @property
    def response(self) -> int:
        return response_stage(self.request)

    @property
    def key(self) -> tuple[int, int]:
        return self.request, self.step


class StageTable(Generic[H, S]):
    """The rows, checked on construction, and the views the session and the codec need."""

    def __init__(self, rows: Iterable[Stage[H, S]]) -> None:
        self.rows: dict[tuple[int, int], Stage[H, S]] = {}
        for row in rows:
            if row.key in self.rows:
                raise ValueError(f"stage 0x{row.request:02X} step {row.step} twice")
            if row.step not in (STEP_FIRST, STEP_CONTINUE):
                raise ValueError(f"stage 0x{row.request:02X}: step must be 0x00 or 0x01")
            response_stage(row.request)  # a request stage byte, or ValueError
            self.rows[row.key] = row
        for row in self.rows.values():
            for then in (row.next, row.follow_up):
                target = self.rows.get((then, STEP_CONTINUE)) if then is not None else row
                if target is None or target.flow is not row.flow:
                    raise ValueError(f"stage 0x{row.request:02X} leads to 0x{then:02X}, no step 0x01 of its flow")
        # The stage bytes the codec accepts from a terminal, and which stage answers each.
        self.request_stages = frozenset(request for request, _ in self.rows)
        self.response_of = {stage: response_stage(stage) for stage in self.request_stages}
        # A connection's first frame: the stages that open a flow (step 0x00).
        self.opening = {row.request: row for row in self.rows.values() if row.step == STEP_FIRST}

    def first(self, stage: int, step: int) -> Stage[H, S] | None:
        """The row a connection's first frame opens, or None (out of order)."""
        row = self.opening.get(stage)
        return row if row is not None and step == STEP_FIRST else None
