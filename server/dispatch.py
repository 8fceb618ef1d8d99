"""The platform's DD stage table and the dispatcher derived from it (SPEC 1.2–1.7).

``STAGES`` is the one place that says, for every request stage and step, which flow it
belongs to, which step function answers it (and which synchronous one may answer without a
task), what must follow a continue answer and what may follow an ending success. The
session (server/session.py) reads its transitions from it, the codec accepts exactly its
stage bytes, and ``handle_sync``/``handle`` run the row a request arrived with: errors
become values here (an info code), never escape.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg

from core_ext import Frame
from recharge import metrics
from recharge.context import Busy
from recharge.db import unavailable
from recharge.orders.model import OrderError
from server import flows, signin
from server.dd_context import DDContext
from server.flow_state import FlowState, Refuse
from server.session import Request, Response
from server.stages import INFO_BUSY, INFO_INTERNAL, Flow, Stage, StageTable

log = logging.getLogger(__name__)

Step = Callable[[DDContext, FlowState, Frame], Awaitable[Response]]
# A step that can often answer at once, without a task; None means "run the row's handler".
SyncStep = Callable[[DDContext, FlowState, Frame], Response | None]

S, R, Q, D = Flow.SIGNIN, Flow.RECHARGE, Flow.QUERY, Flow.DEPOSIT
STAGES: StageTable[Step, SyncStep] = StageTable([
    Stage(0x01, 0, S, signin.dd01, sync=signin.dd01_sync, next=0x03),  # DD02 R-INIT
    Stage(0x03, 1, S, signin.dd03, next=0x05),  # DD04 R-AC-Login1
    Stage(0x05, 1, S, signin.dd05, next=0x07),  # DD06 R-AC-Login2
    Stage(0x07, 1, S, signin.dd07),  # DD08 serial, expiry: the end
    Stage(0x11, 0, R, flows.dd11, next=0x13),  # DD12 read the card
    Stage(0x13, 1, R, flows.dd13, sync=flows.dd13_sync, next=0x15),  # DD14 INITIALIZE FOR LOAD
    Stage(0x15, 1, R, flows.dd15, next=0x17),  # DD16 CREDIT FOR LOAD
    Stage(0x17, 1, R, flows.dd17, follow_up=0x19),  # DD18 the end, or the receipt if asked
    Stage(0x19, 1, R, flows.dd19),  # DD20 receipt
    Stage(0x21, 0, Q, flows.dd21_query, next=0x21),  # DD22 outcome, or GET TRANSACTION PROVE
    Stage(0x21, 1, Q, flows.dd21_recover),  # DD22 recovered outcome
    Stage(0x73, 0, D, flows.dd73),  # DD74 secured UPDATE BINARY
])

def handle_sync(dd: DDContext, st: FlowState, request: Request) -> Response | None:
    """Answer without the database when the row's synchronous step can (DD01 with the terminal
    cached, DD13 of a known card), else None: ``handle`` runs the row's step in a task."""
    step = request.stage.sync
    if step is None:
        return None
    try:
        answer: Response | None = step(dd, st, request.frame)
        return answer
    except Refuse as refused:
        return Response.refuse(refused.code)
    except Exception:  # a defect: answer 0xEE, as a step run in a task would
        log.exception("stage 0x%02X: unexpected error", request.frame.stage)
        return Response.refuse(INFO_INTERNAL)


async def handle(dd: DDContext, st: FlowState, request: Request) -> Response:
    """Run the row's step for a request; errors become values here (an info code), never escape."""
    stage = request.frame.stage
    try:
        answer: Response = await request.stage.handler(dd, st, request.frame)
        return answer
    except Refuse as refused:
        return Response.refuse(refused.code)
    except Busy:
        metrics.BUSY_ANSWERS.labels("dd").inc()
        return Response.refuse(INFO_BUSY)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, OrderError,
            ValueError) as exc:
        if unavailable(exc):  # down, restarting, cut off, saturated: busy, nothing acknowledged
            metrics.BUSY_ANSWERS.labels("dd").inc()
            log.warning("stage 0x%02X: database unavailable (%s)", stage, type(exc).__name__)
            return Response.refuse(INFO_BUSY)
        log.error("stage 0x%02X failed: %s%s", stage, type(exc).__name__,
                  f" ({exc})" if isinstance(exc, asyncpg.InterfaceError) else "")  # client-side text, no data
        return Response.refuse(INFO_INTERNAL)
