"""Back-pressure: when the peer stops reading, the DD connection stops reading too."""

from __future__ import annotations

from typing import Any

from server.protocol import DDProtocol


class FakeTransport:
    """The parts of an asyncio transport the DD protocol uses, recording what it was told."""

    def __init__(self) -> None:
        self.reading = True
        self.closed = False
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_pause_writing_stops_reading_until_resume_writing(platform: Any) -> None:
    protocol = DDProtocol(platform.dd)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    try:
        protocol.pause_writing()  # the kernel buffer towards the terminal is full
        assert transport.reading is False
        protocol.resume_writing()  # drained: take requests again
        assert transport.reading is True
    finally:
        protocol.connection_lost(None)
    assert protocol not in platform.dd.connections


async def test_resume_writing_after_close_does_not_resume_reading(platform: Any) -> None:
    protocol = DDProtocol(platform.dd)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    try:
        protocol.pause_writing()
        transport.close()
        protocol.resume_writing()
        assert transport.reading is False
    finally:
        protocol.connection_lost(None)
