"""DD port fuzzing at scale: seeded hostile frames over many connections at once.

Each connection carries one case: random bytes; a valid header with a wrong checksum, a wrong
length field, an unknown or a response stage, another version; a legal first frame (DD01 or
DD21 of a terminal nobody registered) whole, in pieces or byte by byte; legal frames in the
wrong order. A legal first frame must be answered (``0xA1`` / ``0xBB``); nothing else is
checked per case — the platform may answer or close — but it must keep serving, its memory
must stay flat once the connections are gone, and the ledger must not move (``chaos.run``
checks those around the run).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core_ext import Frame, FrameDecoder, FrameError, frame_encode

REQUESTS = (0x01, 0x03, 0x05, 0x07, 0x11, 0x13, 0x15, 0x17, 0x19, 0x21, 0x73)
NOT_REQUESTS = (0x00, 0x02, 0x08, 0x12, 0x1A, 0x20, 0x22, 0x74, 0x99, 0xFF)
ANSWER_WAIT_S = 5.0  # a legal frame's answer must come within this (× the run's slack)
QUIET_S = 0.3  # anything else: the connection is dropped after this much silence


@dataclass
class FuzzResult:
    frames: int = 0
    connections: int = 0
    legal: int = 0
    unanswered_legal: list[str] = field(default_factory=list)
    refused_connections: int = 0
    seconds: float = 0.0


def _frame(rng: random.Random, stage: int, *, user: bytes | None = None, step: int = 0) -> bytes:
    user_id = user if user is not None else b"9" + str(rng.randrange(10**7)).zfill(7).encode()
    return frame_encode(Frame(stage=stage, user_id=user_id, pki=b"\xff" * 4,
                              info=rng.randbytes(rng.choice((0, 4, 15, rng.randrange(256)))), step=step))


def _legal(rng: random.Random) -> bytes:
    """A first frame a terminal may send: DD01 (empty info) or DD21 (an order number) of an unknown terminal."""
    user = b"8" + str(rng.randrange(10**7)).zfill(7).encode()
    if rng.random() < 0.5:
        return frame_encode(Frame(stage=0x01, user_id=user, pki=b"\xff" * 4))
    return frame_encode(Frame(stage=0x21, user_id=user, pki=bytes.fromhex("70000472"), info=rng.randbytes(10)))


def _corrupt(rng: random.Random) -> bytes:
    frame = bytearray(_frame(rng, rng.choice(REQUESTS)))
    how = rng.randrange(5)
    if how == 0:
        frame[-1] ^= 1 << rng.randrange(8)  # checksum
    elif how == 1:
        frame[4] ^= 1 << rng.randrange(3)  # length field
    elif how == 2:
        frame[1] = rng.choice(NOT_REQUESTS)  # unknown or response stage
    elif how == 3:
        frame[2] = rng.choice((0x00, 0x02, 0xFF))  # version
    else:
        frame[0] = rng.randrange(256)  # header
    return bytes(frame)


def _pipelined(rng: random.Random) -> tuple[bytes, int]:
    n = rng.randrange(2, 5)
    return _legal(rng) * n, n


# (name, make → (bytes, frames in them), whether the first frame is legal and must be answered)
CASES: tuple[tuple[str, Callable[[random.Random], tuple[bytes, int]], bool], ...] = (
    ("random", lambda rng: (rng.randbytes(rng.randrange(1, 300)), 1), False),
    ("corrupt", lambda rng: (_corrupt(rng), 1), False),
    ("legal", lambda rng: (_legal(rng), 1), True),
    ("wrong_order", lambda rng: (_frame(rng, rng.choice(REQUESTS[1:])) + _frame(rng, 0x01), 2), False),
    ("pipelined", _pipelined, True),
)


async def _one(host: str, port: int, rng: random.Random, result: FuzzResult, wait_s: float) -> None:
    name, make, legal = rng.choice(CASES)
    data, count = make(rng)
    pieces = 1 if rng.random() < 0.7 else (len(data) if rng.random() < 0.3 else rng.randrange(2, 6))
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        result.refused_connections += 1
        return
    result.connections += 1
    result.frames += count
    try:
        step = max(1, len(data) // pieces)
        for at in range(0, len(data), step):
            writer.write(data[at:at + step])
            await writer.drain()
        if legal:
            result.legal += 1
            if not await _answered(reader, wait_s):
                result.unanswered_legal.append(f"{name}:{data.hex()}")
        else:
            try:
                await asyncio.wait_for(reader.read(4096), QUIET_S)
            except TimeoutError:
                pass
    except OSError:
        pass  # the platform closed first: allowed for anything but a legal frame's answer
    finally:
        writer.transport.abort()


async def _answered(reader: asyncio.StreamReader, wait_s: float) -> bool:
    decoder = FrameDecoder(False)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), deadline - time.monotonic())
        except (TimeoutError, OSError):
            return False
        if not chunk:
            return False
        try:
            if decoder.feed(chunk):
                return True
        except FrameError:
            return False
    return False


async def fuzz(host: str, port: int, frames: int, seed: int, concurrency: int = 64,
               answer_wait_s: float = ANSWER_WAIT_S) -> FuzzResult:
    """Send at least ``frames`` frames over as many connections as it takes, ``concurrency`` at once."""
    rng = random.Random(f"{seed}:fuzz")
    result = FuzzResult()
    started = time.monotonic()

    async def worker(n: int) -> None:
        mine = random.Random(f"{seed}:fuzz:{n}:{rng.random()}")
        while result.frames < frames:
            await _one(host, port, mine, result, answer_wait_s)

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    result.seconds = time.monotonic() - started
    return result
