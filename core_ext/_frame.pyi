"""Type stub of the compiled DD frames (core_ext/_frame.pyx)."""

from collections.abc import Iterable

from typing_extensions import Buffer

INFO_CHECKSUM: int
INFO_LENGTH: int
MAX_LENGTH: int

def stage_kind(stage: int) -> int: ...

class FrameError(Exception):
    """info_code None: close without an answer. stage/user_id/pki: None where unreadable."""

    info_code: int | None
    stage: int | None
    user_id: bytes | None
    pki: bytes | None
    frames: list[Frame]
    def __init__(
        self,
        message: str,
        info_code: int | None = ...,
        stage: int | None = ...,
        user_id: bytes | None = ...,
        pki: bytes | None = ...,
    ) -> None: ...

class Frame:
    @property
    def stage(self) -> int: ...
    @property
    def user_id(self) -> bytes: ...
    @property
    def pki(self) -> bytes: ...
    @property
    def info(self) -> bytes: ...
    @property
    def step(self) -> int: ...
    @property
    def flow(self) -> int: ...
    @property
    def result(self) -> int: ...
    @property
    def is_request(self) -> bool: ...
    def __init__(
        self,
        *,
        stage: int,
        user_id: bytes,
        pki: bytes = ...,
        info: bytes = ...,
        step: int = ...,
        flow: int = ...,
        result: int = ...,
    ) -> None: ...
    def __hash__(self) -> int: ...

def frame_encode(frame: Frame) -> bytes: ...
def frame_decode(
    data: Buffer, requests: bool = ..., max_length: int = ..., stages: Iterable[int] | None = ...
) -> Frame: ...

class FrameDecoder:
    @property
    def requests(self) -> bool: ...
    @property
    def max_length(self) -> int: ...
    @property
    def dead(self) -> bool: ...
    @property
    def buffered(self) -> int: ...
    def __init__(self, requests: bool = ..., max_length: int = ..., stages: Iterable[int] | None = ...) -> None: ...
    def feed(self, data: Buffer) -> list[Frame]: ...
