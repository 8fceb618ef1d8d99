"""Slow and stuck clients: connections that stop reading, half-sent frames, idle connections.

They hold ``connections`` sockets open against the DD and HTTP ports at all times: some idle
(nothing sent: to the platform a peer gone without a FIN, i.e. half-open), some with half a DD
frame or half an HTTP request sent, some that sent a burst of requests and never read the
answers, some that sent a whole request and shut their sending side (half-closed). On top of
them, ``world.http_limit`` + 16 idle HTTP connections: past the HTTP side's connection limit
(``http_max_connections`` per worker, lowered for the run), so the limit is reached all the time
and the longest-idle connections must make room for real clients; likewise ``world.dd_limit`` + 16 idle DD
connections, past the DD side's limit (``dd_max_connections`` per worker, lowered for the run; the slow DD
sockets above count), where the connection quiet longest between flows makes room. A socket the platform closed
(idle timeout, eviction) is opened again. The other clients must keep being served meanwhile
(the liveness figures show it).
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass, field

from chaos.journal import Journal
from chaos.world import World
from server.terminal_client import TerminalMessages

KINDS = ("idle_dd", "half_frame", "no_read_dd", "half_closed_dd", "half_http", "no_read_http", "half_closed_http")
FILLER = "idle_http"  # the connections that keep the HTTP side at its limit
DD_FILLER = "idle_dd_to_limit"  # the connections that keep the DD side at its limit
DD_KINDS = frozenset(("idle_dd", "half_frame", "no_read_dd", "half_closed_dd", DD_FILLER))
PAST_LIMIT = 16  # idle connections past each side's limit: the limit is reached all the time


@dataclass
class SlowClient:
    world: World
    index: int
    journal: Journal
    rng: random.Random
    connections: int = 40
    held: list[socket.socket] = field(default_factory=list)
    fillers: list[socket.socket] = field(default_factory=list)
    dd_fillers: list[socket.socket] = field(default_factory=list)
    held_dd: set[socket.socket] = field(default_factory=set)  # those of ``held`` on the DD port
    opened: dict[str, int] = field(default_factory=dict)

    def run(self, until: float, recover_until: float) -> None:
        while time.time() < until:
            self.held = [s for s in self.held if _open(s)]
            self.held_dd &= set(self.held)
            self.fillers = [s for s in self.fillers if _idle(s)]
            self.fill_dd(until)
            while len(self.held) < self.connections and time.time() < until:
                kind = self.rng.choice(KINDS)
                if (s := self.open_one(kind)) is None:
                    break
                self.held.append(s)
                if kind in DD_KINDS:
                    self.held_dd.add(s)
            while len(self.fillers) < self.world.http_limit + PAST_LIMIT and time.time() < until:
                if (s := self.open_one(FILLER)) is None:
                    break
                self.fillers.append(s)
            time.sleep(0.5)
        for s in self.held + self.fillers + self.dd_fillers:
            s.close()
        self.journal.note("end", opened=self.opened)

    def fill_dd(self, until: float) -> None:
        """Idle DD connections past the platform's DD limit (the other slow DD sockets count)."""
        self.dd_fillers = [s for s in self.dd_fillers if _idle(s)]
        while len(self.dd_fillers) + len(self.held_dd) < self.world.dd_limit + PAST_LIMIT and time.time() < until:
            if (new := self.open_one(DD_FILLER)) is None:
                break
            self.dd_fillers.append(new)

    def open_one(self, kind: str) -> socket.socket | None:
        port = self.world.dd_port if kind in DD_KINDS else self.world.http_port
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            time.sleep(0.2)  # the platform is down (a kill): come back later
            return None
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills up soon
        s.setblocking(False)
        frame = TerminalMessages(f"9{self.rng.randrange(10**7):07d}", "70000472").dd01()
        payload = {
            "idle_dd": b"",
            "half_frame": frame[: self.rng.randrange(1, len(frame))],
            "no_read_dd": frame * 50,
            "half_http": b"GET /healthz HTTP/1.1\r\nHost: chaos\r\n",
            "no_read_http": b"GET /metrics HTTP/1.1\r\nHost: chaos\r\n\r\n" * 20,
            "half_closed_dd": frame,
            "half_closed_http": b"GET /healthz HTTP/1.1\r\nHost: chaos\r\n\r\n",
            FILLER: b"",
            DD_FILLER: b"",
        }[kind]
        try:
            s.send(payload)
            if kind.startswith("half_closed"):
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.opened[kind] = self.opened.get(kind, 0) + 1
        return s


def _open(s: socket.socket) -> bool:
    """False (and closed) once the platform closed it."""
    try:
        data = s.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        data = b""
    if data:
        return True  # answers wait unread: that is the point
    s.close()
    return False


def _idle(s: socket.socket) -> bool:
    """An idle connection that nothing arrived on: False (and closed) once the platform answered (408,
    eviction) or closed it."""
    try:
        s.recv(4096)
    except BlockingIOError:
        return True
    except OSError:
        pass
    s.close()
    return False
