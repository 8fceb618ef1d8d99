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
    status = run_all.main(["--only", first, "--results", str(results_path), "--report", str(report_path)])
    assert status == 0
    results = json.loads(results_path.read_text(encoding="utf-8"))
    for fact in ("cpu_model", "cores", "python", "commit"):
        assert results["machine"][fact], fact
    assert results["date"]
    figures = results["modules"][first]["figures"]
    assert figures and results["figures"] == figures
    report = report_path.read_text(encoding="utf-8")
    for name, value in figures.items():
        goal = results["modules"][first]["goals"].get(name, "—")
        assert f"| `{name}` | {run_all.fmt(value)} | {goal} |" in report
    assert results["machine"]["cpu_model"] in report
