"""``make bench``'s aggregator: every figure lands in results.json and BENCHMARKS.md with its
goal and the machine; a failing benchmark module is reported, not fatal to the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run_all


@pytest.mark.parametrize(
    ("value", "goal", "met"),
    [(21.0, ">= 20", True), (19.9, ">= 20", False), (0.2, "<= 0.25", True), (0.3, "<= 0.25", False),
     (5.0, "5", True), (1.0, None, None)],
)
def test_goals_compare_in_their_direction(value: float, goal: str | None, met: bool | None) -> None:
    assert run_all.goal_met(value, goal) is met


@pytest.mark.parametrize(("value", "text"), [(22.71, "22.7"), (0.0598, "0.0598"), (1550.4, "1,550"), (92.6, "92.6")])
def test_figures_print_without_exponents(value: float, text: str) -> None:
    assert run_all.fmt(value) == text


def test_a_module_that_cannot_run_is_reported_with_its_error() -> None:
    outcome = run_all.run_module("bench_that_does_not_exist", timeout_s=60)
    assert outcome["figures"] == {}
    assert "No module named" in outcome["error"]


def test_bench_writes_every_figure_with_goal_and_machine(tmp_path: Path) -> None:
    first = run_all.bench_modules()[0]  # the fastest is bench_core; one module keeps this test short
    results_path, report_path = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    results_path.write_text(json.dumps({"cluster": {"acknowledged_lost": 0}, "cluster_throughput_ratio_2_vs_1_node": 0.9,
                                        "figures": {"stale": 1.0}}))  # make cluster-test's figures, an old run's
    status = run_all.main(["--only", first, "--settle-s", "0", "--results", str(results_path),
                           "--report", str(report_path)])
    assert status == 0
    results = json.loads(results_path.read_text(encoding="utf-8"))
    for fact in ("cpu_model", "cores", "python", "commit"):
        assert results["machine"][fact], fact
    assert results["date"]
    module = results["modules"][first]
    figures = module["figures"]
    assert figures and results["figures"] == figures
    assert results["cluster"] == {"acknowledged_lost": 0} and results["cluster_throughput_ratio_2_vs_1_node"] == 0.9
    assert len(module["load_average"]) == 2
    report = report_path.read_text(encoding="utf-8")
    for name, value in figures.items():
        goal = module["goals"].get(name, "—")
        extent = module["spread"][name]  # bench_core's figures are medians of paired rounds
        assert extent["min"] <= value <= extent["max"] and len(extent["runs"]) >= 3
        row = f"| `{name}` | {run_all.fmt(value)} | {run_all.fmt(extent['min'])} | {run_all.fmt(extent['max'])} | "
        assert f"{row}{len(extent['runs'])} | {goal} |" in report
    assert results["machine"]["cpu_model"] in report


def test_figures_measured_under_load_are_labelled_so() -> None:
    results = {
        "date": "2026-12-02T00:00:00+00:00", "quick": True,
        "machine": {"cpu_model": "x", "cores": 2, "memory_gib": 1, "os": "linux", "python": "3.11",
                    "implementation": "CPython", "commit": "abc"},
        "modules": {
            "bench_busy": {"figures": {"a_ratio": 0.5}, "spread": {"a_ratio": {"min": 0.4, "max": 0.6,
                                                                                "runs": [0.4, 0.5, 0.6]}},
                           "goals": {"a_ratio": ">= 1.0"}, "notes": {"a_ratio": "wall clock"}, "how": "",
                           "error": None, "seconds": 1.0, "load_average": [9.5, 10.0]},
            "bench_quiet": {"figures": {"b": 2.0}, "spread": {}, "goals": {}, "notes": {}, "how": "",
                            "error": None, "seconds": 1.0, "load_average": [0.3, 4.6]},  # after: its own work
        },
    }
    report = run_all.render_report(results, "## Analysis\n\nby hand")
    assert "| `a_ratio` | 0.5 | 0.4 | 0.6 | 3 | >= 1.0 | **no** | wall clock; under load |" in report
    assert "| `b` | 2 |  |  | 1 | — |  |  |" in report
    assert "**Measured under load**" in report and "bench_busy" in report.split("## Figures")[0]
    assert "bench_quiet" not in report.split("## Figures")[0]
    assert "**quick**" in report and report.rstrip().endswith("by hand")


async def test_wire_ceiling_replays_a_recharges_message_sizes_and_closes_like_the_dd_server() -> None:
    """bench_dd's ceiling: each request of the recorded sizes gets an answer of the recorded size,
    even when a request arrives in pieces, and the server closes after the last answer."""
    import asyncio

    from bench.bench_dd import _FixedExchange, _WireRecharge

    wire = [26, 40, 81, 30, 34, 41, 22, 24, 27, 56]  # request, answer, ... (a recharge's ten messages)
    requests, answers = wire[0::2], wire[1::2]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _FixedExchange(requests, [bytes([i]) * n for i, n in enumerate(answers)]), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(3):
            done: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: _WireRecharge([b"\x00" * n for n in requests], answers, done),  # noqa: B023
                "127.0.0.1", port,
            )
            await asyncio.wait_for(done, 5)
        # a request in two pieces is still one request; the server answers and then closes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for size, answer in zip(requests, answers, strict=True):
            writer.write(b"\x00" * (size - 5))
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"\x00" * 5)
            assert len(await asyncio.wait_for(reader.readexactly(answer), 5)) == answer
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_the_stage_benchmarks_server_view_keeps_every_answers_seconds_beside_the_histogram() -> None:
    from bench.dd_servers import RecordingFrameMetrics
    from recharge import metrics

    recorder = RecordingFrameMetrics()
    before = metrics.DD_STAGE_SECONDS.labels("15")._sum.get()
    for seconds in (0.002, 0.004, 0.250):
        recorder.answered(0x15, 0x00, seconds)
    recorder.answered(0x17, 0x00, 0.001)
    recorder.flush()
    assert recorder.take() == {0x15: [0.002, 0.004, 0.250], 0x17: [0.001]}
    assert recorder.take() == {}  # each run's seconds, not the ones before
    assert metrics.DD_STAGE_SECONDS.labels("15")._sum.get() == pytest.approx(before + 0.256)
