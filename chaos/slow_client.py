"""Slow and stuck clients: connections that stop reading, half-sent frames, idle connections.

They hold ``connections`` sockets open against the DD and HTTP ports at all times: some idle
(nothing sent), some with half a DD frame or half an HTTP request sent, some that sent a burst
of requests and never read the answers. A socket the platform closed (idle timeout) is opened
again. The other clients must keep being served meanwhile (the liveness figures show it).
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass, field

from chaos.journal import Journal
from chaos.world import World
from server.terminal_client import TerminalMessages

KINDS = ("idle_dd", "half_frame", "no_read_dd", "half_http", "no_read_http")


@dataclass
class SlowClient:
    world: World
    index: int
    journal: Journal
    rng: random.Random
    connections: int = 40
    held: list[socket.socket] = field(default_factory=list)
    opened: dict[str, int] = field(default_factory=dict)

    def run(self, until: float, recover_until: float) -> None:
        while time.time() < until:
            self.held = [s for s in self.held if _open(s)]
            while len(self.held) < self.connections and time.time() < until:
                self.open_one()
            time.sleep(0.5)
        for s in self.held:
            s.close()
        self.journal.note("end", opened=self.opened)

    def open_one(self) -> None:
        kind = self.rng.choice(KINDS)
        port = self.world.dd_port if kind.endswith("dd") or kind == "half_frame" else self.world.http_port
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            time.sleep(0.2)  # the platform is down (a kill): come back later
            return
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills up soon
        s.setblocking(False)
        frame = TerminalMessages(f"9{self.rng.randrange(10**7):07d}", "70000472").dd01()
        payload = {
            "idle_dd": b"",
            "half_frame": frame[: self.rng.randrange(1, len(frame))],
            "no_read_dd": frame * 50,
            "half_http": b"GET /healthz HTTP/1.1\r\nHost: chaos\r\n",
            "no_read_http": b"GET /metrics HTTP/1.1\r\nHost: chaos\r\n\r\n" * 20,
        }[kind]
        try:
            s.send(payload)
        except OSError:
            pass
        self.held.append(s)
        self.opened[kind] = self.opened.get(kind, 0) + 1


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
