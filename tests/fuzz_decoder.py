"""Mutation fuzzer of the DD frame decoder: compiled and reference must agree on every stream and chunking.

``python -m tests.fuzz_decoder --seconds N [--seed S]`` (``make fuzz``); a failure prints the seed and the
stream so it replays exactly. The pytest suite runs it for a few seconds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

import core_ext
from core_ext import reference
from server.dispatch import STAGES

MAX_BUFFERED = 287


def _stages(requests: bool) -> list[int]:
    """The platform's stage bytes of one direction (the stage table the server's decoder is given)."""
    return sorted(STAGES.request_stages if requests else set(STAGES.response_of.values()))


def _valid_frame(rng: random.Random, requests: bool) -> bytes:
    stages = _stages(requests)
    info = rng.randbytes(rng.choice((0, 1, 15, rng.randrange(256))))
    frame = core_ext.Frame(stage=rng.choice(stages), user_id=rng.randbytes(rng.randrange(17)).rstrip(b"\x00"),
                           pki=rng.randbytes(4), info=info, step=rng.randrange(256), flow=rng.randrange(256),
                           result=rng.randrange(256))
    return core_ext.frame_encode(frame)


def _mutate(rng: random.Random, data: bytearray) -> None:
    kind = rng.randrange(6)
    if not data or kind == 0:
        data += rng.randbytes(rng.randrange(1, 20))
    elif kind == 1:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 2:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 3:
        del data[rng.randrange(len(data))]
    elif kind == 4:
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randrange(1, 5))
    else:
        # A header field the checks care about: stage, version or length.
        at = rng.choice((1, 2, 3, 4)) if len(data) > 5 else 0
        data[at] = rng.choice((0x00, 0x01, 0x02, 0x1A, 0x74, 0xFF, 0xDD))


def _events(module: Any, chunks: list[bytes], requests: bool) -> list[Any]:
    decoder = module.FrameDecoder(requests, module.MAX_LENGTH, _stages(requests))
    events: list[Any] = []
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except module.FrameError as exc:
            events += [(f.stage, f.user_id, f.pki, f.info, f.step, f.flow, f.result) for f in exc.frames]
            events.append(("error", exc.info_code, exc.stage, exc.user_id, exc.pki))
            return events
        events += [(f.stage, f.user_id, f.pki, f.info, f.step, f.flow, f.result) for f in frames]
        if decoder.buffered > MAX_BUFFERED:
            raise AssertionError(f"decoder holds {decoder.buffered} bytes")
    return events


def one_case(rng: random.Random) -> None:
    """One random stream, decoded by both implementations at one random chunking; AssertionError on a diff."""
    requests = rng.random() < 0.5
    data = bytearray(b"".join(_valid_frame(rng, requests) for _ in range(rng.randrange(4))))
    for _ in range(rng.choice((0, 0, 1, 2, 5))):
        _mutate(rng, data)
    raw = bytes(data)
    cuts = sorted(rng.randrange(len(raw) + 1) for _ in range(rng.randrange(6)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    compiled = _events(core_ext, chunks, requests)
    expected = _events(reference, chunks, requests)
    if compiled != expected or compiled != _events(core_ext, [raw], requests):
        raise AssertionError(f"decoders disagree on requests={requests} stream={raw.hex()} cuts={cuts}")


def fuzz(seconds: float, rng: random.Random) -> int:
    """Run cases until ``seconds`` have passed; the number of cases run."""
    deadline = time.perf_counter() + seconds
    cases = 0
    while time.perf_counter() < deadline:
        for _ in range(100):
            one_case(rng)
        cases += 100
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"fuzz_decoder: seed {seed}, {args.seconds:g} s", flush=True)
    try:
        cases = fuzz(args.seconds, random.Random(seed))
    except AssertionError as exc:
        print(f"fuzz_decoder: FAILED with seed {seed}: {exc}", file=sys.stderr)
        return 1
    print(f"fuzz_decoder: {cases} cases, no disagreement, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
