"""Idle DD connections stay cheap: one idle wheel instead of a timer per connection (deadlines
honoured never early, at most a tick late, moved by answers, paused while a step runs), slotted
per-connection state, the listen backlog from its setting, and the descriptor limit raised by the
server itself where the process may. The idle-timeout behaviour end to end is in
tests/test_dd_robustness.py."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from typing import Any

import asyncpg

from recharge.context import Platform
from server.flow_state import FlowState
from server.idle import IdleWheel
from server.service import DDService
from tests.conftest import ROOT


class _Conn:
    """A stand-in connection: idle at ``deadline`` unless ``busy`` (a step running)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.loop, self.deadline = loop, deadline
        self.idle_slot = -1
        self.busy = False
        self.closed_at: float | None = None
        self.checks = 0

    def idle_check(self, now: float) -> float | None:
        self.checks += 1
        if self.busy:
            self.deadline = now + 0.1
        elif now >= self.deadline:
            self.closed_at = now
            return None
        return self.deadline


async def test_the_wheel_closes_at_the_deadline_never_before_and_at_most_a_tick_after() -> None:
    loop = asyncio.get_running_loop()
    wheel = IdleWheel(0.02)
    conns = [_Conn(loop, loop.time() + 0.05 * (i + 1)) for i in range(5)]
    for conn in conns:
        wheel.watch(conn, conn.deadline)
    await asyncio.sleep(0.5)
    for conn in conns:
        assert conn.closed_at is not None
        assert conn.deadline <= conn.closed_at <= conn.deadline + 0.02 + 0.1  # a tick, and a loaded machine
    assert len(wheel) == 0
    wheel.close()


async def test_a_deadline_moved_by_an_answer_is_asked_again_then_and_a_busy_one_waits() -> None:
    loop = asyncio.get_running_loop()
    wheel = IdleWheel(0.02)
    moved, busy = _Conn(loop, loop.time() + 0.05), _Conn(loop, loop.time() + 0.05)
    busy.busy = True
    wheel.watch(moved, moved.deadline)
    wheel.watch(busy, busy.deadline)
    moved.deadline = loop.time() + 0.3  # an answer left since: only the stored float changes
    await asyncio.sleep(0.15)
    assert moved.closed_at is None and moved.checks == 1  # asked once at the old deadline, filed again
    assert busy.closed_at is None and busy.checks >= 1
    busy.busy = False
    await asyncio.sleep(0.45)
    assert moved.closed_at is not None and moved.closed_at >= moved.deadline
    assert busy.closed_at is not None
    wheel.close()


async def test_a_closed_connection_leaves_the_wheel_at_once() -> None:
    loop = asyncio.get_running_loop()
    wheel = IdleWheel(0.02)
    gone, stays = _Conn(loop, loop.time() + 0.05), _Conn(loop, loop.time() + 0.05)
    wheel.watch(gone, gone.deadline)
    wheel.watch(stays, stays.deadline)
    wheel.forget(gone)
    assert len(wheel) == 1
    await asyncio.sleep(0.2)
    assert gone.checks == 0 and stays.closed_at is not None
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
        for _ in range(100):
            if len(service.connections) == 20:
                break
            await asyncio.sleep(0.02)
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
