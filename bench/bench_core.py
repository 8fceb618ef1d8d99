"""Benchmark of the compiled core against its baselines, each figure a ratio measured within one run
(the median of ``PAIRED_RUNS`` rounds; each round times the two sides alternately and keeps each one's best).

- ``codec_speedup_vs_reference``: decode + encode of a realistic mix of DD frames (a sign-in and a recharge,
  both directions), compiled core_ext vs the pure-Python reference (struct + zlib).
- ``crc32_ratio_vs_zlib``: CRC-32 throughput on 1 MiB, core_ext.crc32 / zlib.crc32 (1.0 = same speed).
- ``mac_speedup_vs_pycryptodome``: one load's platform cryptography (DLK and DTK diversification, SESLK,
  MAC1 check, MAC2, TAC check), compiled vs the reference's straightforward per-call pycryptodome code.

``python -m bench.bench_core`` prints the figures; ``run()`` returns them for the aggregator.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import core_ext
from bench.measure import PAIRED_RUNS, spread
from core_ext import reference

USER = b"11552001"
PKI = bytes.fromhex("70000472")
NO_PKI = b"\xff" * 4


def _mix(impl: ModuleType) -> tuple[list[bytes], list[bytes]]:
    """Wire bytes of one sign-in and one recharge: (requests, responses), as a terminal exchanges them."""
    f = impl.Frame
    dd12 = bytes.fromhex("010700A4000002DDF1900002000207""00A4000002ADF19000030003""0500B095001E90000400"
                         "0405805C00020490000000")
    reqs = [
        f(stage=0x01, user_id=USER, pki=NO_PKI, info=b"", step=0),
        f(stage=0x03, user_id=USER, pki=NO_PKI, info=PKI + bytes(8), step=1),
        f(stage=0x05, user_id=USER, pki=PKI, info=bytes(8), step=1),
        f(stage=0x07, user_id=USER, pki=PKI, info=bytes(4), step=1),
        f(stage=0x11, user_id=USER, pki=PKI, info=b"\x00" + bytes(4) + bytes(10), step=0),
        f(stage=0x13, user_id=USER, pki=PKI, info=bytes(2 + 2 + 2 + 2 + 32 + 2 + 6), step=1),
        f(stage=0x15, user_id=USER, pki=PKI, info=bytes(2 + 18), step=1),
        f(stage=0x17, user_id=USER, pki=PKI, info=bytes(2 + 6), step=1),
    ]
    resps = [
        f(stage=0x02, user_id=USER, pki=NO_PKI, info=bytes.fromhex("BB10000000"), flow=0, result=0),
        f(stage=0x04, user_id=USER, pki=PKI, info=bytes(16), flow=0, result=0),
        f(stage=0x06, user_id=USER, pki=PKI, info=bytes(19), flow=0, result=0),
        f(stage=0x08, user_id=USER, pki=PKI, info=bytes(15), flow=0xFF, result=0),
        f(stage=0x12, user_id=USER, pki=PKI, info=dd12, flow=0, result=0),
        f(stage=0x14, user_id=USER, pki=PKI, info=bytes(23), flow=0, result=0),
        f(stage=0x16, user_id=USER, pki=PKI, info=bytes(23), flow=0, result=0),
        f(stage=0x18, user_id=USER, pki=PKI, info=b"", flow=0xFF, result=0),
    ]
    return [impl.frame_encode(x) for x in reqs], [impl.frame_encode(x) for x in resps]


def _codec_round(impl: ModuleType) -> Callable[[], None]:
    requests, responses = _mix(impl)
    decoder_cls, encode = impl.FrameDecoder, impl.frame_encode

    def work() -> None:
        # One decoder per connection, as the server and the terminal each keep one.
        inbound = decoder_cls(True)
        outbound = decoder_cls(False)
        for wire in requests:
            for frame in inbound.feed(wire):
                encode(frame)
        for wire in responses:
            for frame in outbound.feed(wire):
                encode(frame)

    return work


def _load_round(impl: ModuleType) -> Callable[[], None]:
    mk_load = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    mk_tac = bytes.fromhex("0F1E2D3C4B5A69788796A5B4C3D2E1F0")
    div = core_ext.card_div_data("5810440100001234")
    tid = core_ext.terminal_id_bytes("11552001")
    rnd, serial, balance, amount = bytes.fromhex("A1B2C3D4"), 7, 1000, 5000
    date, tm = bytes.fromhex("20250102"), bytes.fromhex("030405")
    dlk = core_ext.diversify(mk_load, div)
    mac1 = core_ext.pboc_mac1(core_ext.pboc_seslk(dlk, rnd, serial), balance, amount, tid)
    tac = core_ext.pboc_tac(core_ext.diversify(mk_tac, div), balance + amount, serial, amount, tid, date, tm)
    diversify, check_mac1, check_tac = impl.diversify, impl.verify_mac1_make_mac2, impl.verify_tac

    def work() -> None:
        mac2 = check_mac1(diversify(mk_load, div), rnd, serial, balance, amount, tid, mac1, date, tm)
        ok = check_tac(diversify(mk_tac, div), balance + amount, serial, amount, tid, date, tm, tac)
        if mac2 is None or not ok:
            raise AssertionError("benchmark load does not verify")

    return work


def _seconds(work: Callable[[], None], loops: int) -> float:
    started = time.perf_counter()
    for _ in range(loops):
        work()
    return time.perf_counter() - started


def _ratio(slow: Callable[[], None], fast: Callable[[], None], loops: int, repeats: int = 15) -> float:
    """Best-of-``repeats`` time of ``slow`` over that of ``fast``, the two timed alternately.

    Alternating, and keeping each side's fastest run, cancels most of the noise of a shared machine.
    """
    slow()  # warm caches and lazily built tables on both sides
    fast()
    best_slow = best_fast = float("inf")
    for _ in range(repeats):
        best_slow = min(best_slow, _seconds(slow, loops))
        best_fast = min(best_fast, _seconds(fast, loops))
    return best_slow / best_fast


def run() -> dict[str, Any]:
    """The three figures; each the median of ``PAIRED_RUNS`` ratios of two timings taken here."""
    mib = bytes(range(256)) * 4096
    rounds = {
        "codec_speedup_vs_reference": lambda: _ratio(_codec_round(reference), _codec_round(core_ext), 200),
        "crc32_ratio_vs_zlib": lambda: _ratio(lambda: None if zlib.crc32(mib) else None,
                                              lambda: None if core_ext.crc32(mib) else None, 10, repeats=25),
        "mac_speedup_vs_pycryptodome": lambda: _ratio(_load_round(reference), _load_round(core_ext), 300),
    }
    return {name: spread(one() for _ in range(PAIRED_RUNS)) for name, one in rounds.items()}


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name}: {value['median']:.2f} [{value['min']:.2f} … {value['max']:.2f}]")
