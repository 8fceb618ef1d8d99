"""Idle DD connections stay cheap: one idle wheel instead of a timer per connection (deadlines
honoured never early, at most a tick late, moved by answers, paused while a step runs), slotted
per-connection state, the listen backlog from its setting, and the descriptor limit raised by the
server itself where the process may. The wheel's ticks are proven on a virtual clock (exact,
however loaded the machine), its work on the running loop by waiting for what must happen; the
idle-timeout behaviour end to end is in tests/test_dd_robustness.py."""

from __future__ import annotations

import asyncio
import heapq
import math
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, cast

import asyncpg

from recharge.context import Platform
from server.flow_state import FlowState
from server.idle import IdleWheel
from server.service import DDService
from tests.conftest import ROOT, eventually

TICK_S = 1 / 32  # binary fractions throughout: the virtual clock's arithmetic is exact
BUSY_S = 3 / 32  # how far a busy connection (a step running) names its next deadline
T0 = 1024.0  # the virtual clock's start


class _Conn:
    """A stand-in connection: idle at ``deadline`` unless ``busy`` (a step running); ``asked`` is
    when the wheel asked it."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.idle_slot = -1
        self.busy = False
        self.closed_at: float | None = None
        self.asked: list[float] = []

    @property
    def checks(self) -> int:
        return len(self.asked)

    def idle_check(self, now: float) -> float | None:
        self.asked.append(now)
        if self.busy:
            self.deadline = now + BUSY_S
        elif now >= self.deadline:
            self.closed_at = now
            return None
        return self.deadline


class _Timer:
    __slots__ = ("at", "callback", "cancelled")

    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at, self.callback, self.cancelled = at, callback, False

    def when(self) -> float:
        return self.at

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """The event loop's clock and timers as the wheel uses them (``time``, ``call_at``): time moves
    only when the test moves it (``run_to``), and every timer runs at exactly its time, as on a
    machine that keeps up. What these tests prove of ticks so holds however busy the machine is;
    the wheel on the real loop is tested below and end to end in tests/test_dd_robustness.py."""

    def __init__(self) -> None:
        self.now = T0
        self._timers: list[tuple[float, int, _Timer]] = []
        self._made = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        self._made += 1
        heapq.heappush(self._timers, (when, self._made, timer))
        return timer

    def run_to(self, end: float) -> None:
        while self._timers and self._timers[0][0] <= end:
            at, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self.now = max(self.now, at)
                timer.callback()
        self.now = end


def _wheel(clock: VirtualClock) -> IdleWheel:
    return IdleWheel(TICK_S, cast(asyncio.AbstractEventLoop, clock))


def _first_tick_at_or_after(t: float) -> float:
    return math.ceil(t / TICK_S) * TICK_S


def test_the_wheel_closes_at_the_deadline_never_before_and_at_most_a_tick_after() -> None:
    clock = VirtualClock()
    wheel = _wheel(clock)
    conns = [_Conn(T0 + 1.5 * TICK_S * (i + 1)) for i in range(5)]  # on a tick and between ticks
    for conn in conns:
        wheel.watch(conn, conn.deadline)
    clock.run_to(T0 + 1.0)
    for conn in conns:
        assert conn.asked == [_first_tick_at_or_after(conn.deadline)]  # an idle connection is asked once
        assert conn.closed_at is not None
        assert conn.deadline <= conn.closed_at < conn.deadline + TICK_S
    assert len(wheel) == 0
    wheel.close()


def test_a_deadline_moved_by_an_answer_is_asked_again_then_and_a_busy_one_waits() -> None:
    clock = VirtualClock()
    wheel = _wheel(clock)
    moved, busy = _Conn(T0 + 2 * TICK_S), _Conn(T0 + 2 * TICK_S)
    busy.busy = True
    wheel.watch(moved, moved.deadline)
    wheel.watch(busy, busy.deadline)
    moved.deadline = T0 + 10 * TICK_S  # an answer left since: only the stored float changes
    clock.run_to(T0 + 5 * TICK_S)
    assert moved.closed_at is None and moved.asked == [T0 + 2 * TICK_S]  # asked at the old deadline, filed again
    assert busy.closed_at is None and busy.asked == [T0 + 2 * TICK_S, T0 + 5 * TICK_S]  # asked on, never closed
    busy.busy = False
    clock.run_to(T0 + 1.0)
    assert moved.asked == [T0 + 2 * TICK_S, T0 + 10 * TICK_S] and moved.closed_at == moved.deadline
    assert busy.asked[-1] == busy.closed_at == T0 + 8 * TICK_S  # the deadline it named while still busy
    assert len(wheel) == 0
    wheel.close()


async def test_a_closed_connection_leaves_the_wheel_at_once() -> None:
    """On the running event loop (the production one), waiting for what must happen, not for a time."""
    loop = asyncio.get_running_loop()
    wheel = IdleWheel(0.02)
    gone, stays = _Conn(loop.time() + 0.05), _Conn(loop.time() + 0.05)
    wheel.watch(gone, gone.deadline)
    wheel.watch(stays, stays.deadline)
    wheel.forget(gone)
    assert len(wheel) == 1
    await eventually(lambda: stays.closed_at is not None, "the watched connection closed")
    assert gone.checks == 0 and stays.checks == 1
    assert stays.closed_at is not None and stays.closed_at >= stays.deadline  # never early
    assert len(wheel) == 0
    wheel.close()


async def test_idle_connections_have_slotted_state_and_no_timer_of_their_own(platform: Any, pool: asyncpg.Pool) -> None:
    ctx = platform.ctx
    service = DDService(Platform(settings=ctx.settings.replace(dd_listen_backlog=64), pool=pool, keys=ctx.keys,
                                 dsn=ctx.dsn))
    port = await service.start()
    socks = []
    try:
        for _ in range(20):
            socks.append(await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port)))
        await eventually(lambda: len(service.connections) == 20, "20 connections accepted")
        assert len(service.connections) == 20 and len(service.idle) == 20  # every one on the wheel
        protocol = next(iter(service.connections))
        assert not hasattr(protocol, "__dict__") and not hasattr(FlowState(), "__dict__")
        assert service._server is not None
        listener = service._server.sockets[0]
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        for sock in socks:
            sock.close()
        await service.stop(0.5)
    assert len(service.idle) == 0


def test_serve_raises_the_hard_descriptor_limit_where_the_process_may() -> None:
    """In a child whose hard limit was lowered below what the limits need: a process allowed to
    raise it (CAP_SYS_RESOURCE) gets all it needs; any other gets its soft limit up to the hard one."""
    script = (
        "import resource\nfrom app.runtime import raise_descriptor_limit\n"
        "from recharge.config import Settings\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 300))\n"
        "try:\n    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 301)); may = True\n"
        "except (ValueError, OSError):\n    may = False\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 300))\n"
        "s = Settings(dd_max_connections=300, http_max_connections=100, pool_max_size=20, fd_reserve=80)\n"
        "raise_descriptor_limit(s)\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE), may)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    soft, hard, may = done.stdout.split()
    assert (soft, hard) == (("500", "500") if may == "True" else ("300", "300")), done.stdout + done.stderr


def _sample(name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_frame_metrics_written_in_one_go_equal_one_update_per_frame() -> None:
    """The plain-integer counts, flushed, move the Prometheus series exactly as a counter
    increment and a histogram observation per answer would (same labels, same buckets)."""
    from recharge import metrics
    from server.frame_metrics import FrameMetrics

    answers = [(0x7B, 0x00, 0.0001), (0x7B, 0x00, 0.00011), (0x7B, 0xBB, 0.003), (0x7B, 0x00, 7.0),
               (0x7D, 0x00, 0.025)]
    watched = [("recharge_dd_frames_total", {"stage": "7B", "result": "00"}),
               ("recharge_dd_frames_total", {"stage": "7B", "result": "BB"}),
               ("recharge_dd_stage_duration_seconds_bucket", {"stage": "7B", "le": "0.0001"}),
               ("recharge_dd_stage_duration_seconds_bucket", {"stage": "7B", "le": "0.00025"}),
               ("recharge_dd_stage_duration_seconds_bucket", {"stage": "7B", "le": "0.005"}),
               ("recharge_dd_stage_duration_seconds_bucket", {"stage": "7B", "le": "+Inf"}),
               ("recharge_dd_stage_duration_seconds_bucket", {"stage": "7D", "le": "0.025"}),
               ("recharge_dd_stage_duration_seconds_bucket", {"stage": "7D", "le": "0.01"}),
               ("recharge_dd_stage_duration_seconds_sum", {"stage": "7B"}),
               ("recharge_dd_stage_duration_seconds_count", {"stage": "7B"}),
               ("recharge_dd_connections_total", {}), ("recharge_dd_connections_active", {})]

    def moved(update: Any) -> list[float]:
        before = [_sample(n, labels) for n, labels in watched]
        update()
        return [round(_sample(n, labels) - b, 9) for (n, labels), b in zip(watched, before, strict=True)]

    def one_by_one() -> None:
        for stage, result, seconds in answers:
            metrics.DD_FRAMES.labels(f"{stage:02X}", f"{result:02X}").inc()
            metrics.DD_STAGE_SECONDS.labels(f"{stage:02X}").observe(seconds)
        metrics.DD_CONNECTIONS.inc(2)
        metrics.DD_CONNECTIONS_ACTIVE.inc(1)

    counted = FrameMetrics()

    def in_one_go() -> None:
        for stage, result, seconds in answers:
            counted.answered(stage, result, seconds)
        counted.connected()
        counted.connected()
        counted.disconnected()
        counted.flush()

    expected = moved(one_by_one)
    assert expected[0] == 3 and expected[-1] == 1  # the watched series do move
    assert moved(in_one_go) == expected
    assert moved(counted.flush) == [0.0] * len(watched)  # a flush starts again from zero
