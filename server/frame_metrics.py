"""``FrameMetrics``: the DD listener's per-frame and per-connection metrics, counted in plain
integers on the event loop and written to Prometheus in one go.

A Prometheus counter or histogram takes a lock on every update (``prometheus_client``'s values are
thread-safe), and a histogram walks its buckets in Python: three locks and a loop for each DD
answer, three more for each connection, a measurable share of a frame's cost (docs/BENCHMARKS.md).
Here an answer adds one to an integer keyed by stage and result, one to its latency bucket (found
by bisection) and its seconds to a float; ``flush`` hands the sums to the same Prometheus metrics
(``recharge_dd_frames_total``, ``recharge_dd_stage_duration_seconds``,
``recharge_dd_connections_total``, ``recharge_dd_connections_active``), with the same labels and
buckets. The DD service flushes every ``dd_metrics_flush_s`` and before every scrape this process
serves (``metrics.before_render``), so a scrape is exact for its own process and at most that
interval behind for the other workers.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from recharge import metrics

_LABELS = [f"{code:02X}" for code in range(256)]


class FrameMetrics:
    """Counts since the last flush; one per DD service."""

    __slots__ = ("_answers", "_latency", "_seconds", "_connections", "_active", "_bounds", "_children")

    def __init__(self) -> None:
        self._answers: dict[int, int] = {}  # stage << 8 | result → answers
        self._latency: dict[int, list[int]] = {}  # stage → answers per bucket (the last is +Inf)
        self._seconds: dict[int, float] = {}  # stage → seconds summed
        self._connections = 0  # accepted
        self._active = 0  # opened less closed
        # The histogram's own upper bounds, +Inf last: an answer of x seconds goes to the first
        # bucket whose bound is >= x, as Histogram.observe puts it.
        self._bounds: list[float] = list(metrics.DD_STAGE_SECONDS.labels("01")._upper_bounds)
        self._children: dict[tuple[str, int], Any] = {}

    def connected(self) -> None:
        self._connections += 1
        self._active += 1

    def disconnected(self) -> None:
        self._active -= 1

    def answered(self, stage: int, result: int, seconds: float) -> None:
        key = stage << 8 | result
        self._answers[key] = self._answers.get(key, 0) + 1
        buckets = self._latency.get(stage)
        if buckets is None:
            buckets = self._latency[stage] = [0] * len(self._bounds)
            self._seconds[stage] = 0.0
        buckets[bisect_left(self._bounds, seconds)] += 1
        self._seconds[stage] += seconds

    def flush(self) -> None:
        """Write the counts into Prometheus and start again from zero."""
        answers, latency, seconds = self._answers, self._latency, self._seconds
        self._answers, self._latency, self._seconds = {}, {}, {}
        for key, count in answers.items():
            self._child("frames", key).inc(count)
        for stage, buckets in latency.items():
            child = self._child("stage", stage)
            child._sum.inc(seconds[stage])
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)
        if self._connections:
            metrics.DD_CONNECTIONS.inc(self._connections)
            self._connections = 0
        if self._active:
            metrics.DD_CONNECTIONS_ACTIVE.inc(self._active)  # several services may share a process
            self._active = 0

    def _child(self, kind: str, key: int) -> Any:
        child = self._children.get((kind, key))
        if child is None:
            if kind == "frames":
                child = metrics.DD_FRAMES.labels(_LABELS[key >> 8], _LABELS[key & 0xFF])
            else:
                child = metrics.DD_STAGE_SECONDS.labels(_LABELS[key])
            self._children[kind, key] = child
        return child
