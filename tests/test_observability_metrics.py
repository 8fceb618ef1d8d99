"""The platform's own metrics: the loop-lag probe, the pool gauges, multiprocess merging,
and a scrape of the running platform that is valid exposition and identifies no one."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from recharge import db, metrics, observability
from recharge.config import Settings
from tests.conftest import eventually, unique_digits

ROOT = Path(__file__).resolve().parent.parent
# Label names that would identify a card, terminal, order or person: never allowed.
IDENTIFYING_LABELS = frozenset(
    {"card", "card_no", "cardno", "terminal", "terminal_code", "user_id", "order", "order_no", "pki",
     "msisdn", "mobile", "phone", "from", "biz_serial_no", "stance", "serial"}
)
# 6 or more digits in a row: terminal codes (8), PKI numbers (8), cards (16), orders (20).
LONG_NUMBER = re.compile(r"\d{6,}")


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- event-loop lag


async def test_loop_lag_probe_measures_how_long_a_blocking_call_held_the_loop() -> None:
    # A histogram of its own: a running platform's monitor observes the shared one too.
    registry = CollectorRegistry()
    private = Histogram("probe_lag_seconds", "test", buckets=metrics.LATENCY_BUCKETS_S, registry=registry)
    loop = asyncio.get_running_loop()
    loop.call_later(0.002, time.sleep, 0.08)  # blocks the loop for 80 ms while the probe sleeps 10 ms
    lag = await observability.measure_loop_lag(0.01, private)
    assert 0.06 <= lag < 2.0
    assert registry.get_sample_value("probe_lag_seconds_count") == 1
    assert registry.get_sample_value("probe_lag_seconds_sum") == pytest.approx(lag)


async def test_monitor_task_samples_lag_repeatedly_and_exports_the_order_expiry(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    before = sample("recharge_event_loop_lag_seconds_count")
    task = asyncio.create_task(
        observability.run_monitors(pool, settings.replace(loop_lag_interval_s=0.01, order_expiry_s=4321))
    )
    await eventually(lambda: sample("recharge_event_loop_lag_seconds_count") >= before + 5, "five lag samples")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sample("recharge_order_expiry_seconds") == 4321
    observability.export_settings(settings)  # put the session's value back for other tests


# --- database pool


async def test_pool_gauges_count_connections_in_use_and_tasks_waiting(database_url: str, settings: Settings) -> None:
    pool = await db.create_pool(database_url, settings.replace(pool_min_size=1, pool_max_size=1))
    try:
        held = await pool.acquire()

        async def borrow() -> None:
            async with pool.acquire():
                await asyncio.sleep(0)

        waiters = [asyncio.create_task(borrow()) for _ in range(2)]
        await eventually(lambda: observability.pool_waiting(pool) == 2, "two tasks waiting for the pool")
        observability.sample_pool(pool)
        assert sample("recharge_db_pool_waiting") == 2
        assert sample("recharge_db_pool_connections", state="in_use") == 1
        assert sample("recharge_db_pool_connections", state="max") == 1
        await pool.release(held)
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        assert observability.pool_waiting(pool) == 0
        observability.sample_pool(pool)
        assert sample("recharge_db_pool_waiting") == 0
        assert sample("recharge_db_pool_connections", state="in_use") == 0
    finally:
        await pool.close()


async def test_a_timed_out_acquire_is_not_counted_as_waiting(database_url: str, settings: Settings) -> None:
    pool = await db.create_pool(database_url, settings.replace(pool_min_size=1, pool_max_size=1))
    try:
        async with pool.acquire():
            with pytest.raises(asyncio.TimeoutError):
                await pool.acquire(timeout=0.02)
            assert observability.pool_waiting(pool) == 0
    finally:
        await pool.close()


# --- multiprocess mode (--workers N)

_WRITER = """
import sys
from recharge import metrics
n, open_conns, seconds, age = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
metrics.HTTP_REQUESTS.labels("/healthz", "GET", "200").inc(n)
metrics.DD_CONNECTIONS_ACTIVE.inc(open_conns)
metrics.DD_STAGE_SECONDS.labels("01").observe(seconds)
metrics.LOADS_LOADING_OLDEST_AGE.set(age)
"""
_READER = "import sys; from recharge import metrics; sys.stdout.write(metrics.render()[0].decode())"


def _python(code: str, *args: str, multiproc_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_two_worker_processes_values_are_merged_in_one_scrape(tmp_path: Path) -> None:
    _python(_WRITER, "3", "2", "0.0004", "120", multiproc_dir=tmp_path)
    _python(_WRITER, "5", "4", "0.02", "900", multiproc_dir=tmp_path)
    values = _values(_python(_READER, multiproc_dir=tmp_path))
    route = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert values[("recharge_http_requests_total", route)] == 8
    assert values[("recharge_dd_connections_active", ())] == 6  # livesum
    assert values[("recharge_loads_loading_oldest_age_seconds", ())] == 900  # max
    assert values[("recharge_dd_stage_duration_seconds_count", (("stage", "01"),))] == 2
    assert values[("recharge_dd_stage_duration_seconds_bucket", (("le", "0.0005"), ("stage", "01")))] == 1
    assert values[("recharge_dd_stage_duration_seconds_bucket", (("le", "0.025"), ("stage", "01")))] == 2


def test_serving_wipes_the_previous_runs_multiprocess_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    from app.runtime import _prepare_metrics_dir

    folder = tmp_path / "metrics"
    folder.mkdir()
    _python(_WRITER, "7", "1", "0.001", "5", multiproc_dir=folder)
    assert list(folder.iterdir())
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # restored to unset afterwards
    _prepare_metrics_dir(settings.replace(workers=2, prometheus_multiproc_dir=folder))
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder.resolve())
    assert list(folder.iterdir()) == []
    assert "recharge_http_requests_total{" not in _python(_READER, multiproc_dir=folder)


# --- a scrape of the running platform


def _dd_probe(port: int, user_id: str) -> None:
    """A sign-in attempt by an unknown terminal, then garbage: DD traffic with a user id."""
    from core_ext import Frame, frame_encode

    hello = frame_encode(Frame(stage=0x01, user_id=user_id.encode().ljust(16, b"\0"), pki=b"\xff" * 4, step=0))
    for payload in (hello, b"GET /" + user_id.encode() + b" HTTP/1.0\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(2)
            try:
                while sock.recv(4096):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass


async def test_metrics_scrape_is_valid_exposition_and_carries_no_identifying_label(
    platform: object, settings: Settings
) -> None:
    http_port, dd_port = platform.http_port, platform.dd_port  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{http_port}"
    terminal, card, order = unique_digits(8), "1680" + unique_digits(12), unique_digits(20)
    await asyncio.to_thread(_dd_probe, dd_port, terminal)
    async with aiohttp.ClientSession() as session:
        for path in (
            "/healthz",
            f"/orders/{order}",
            f"/s/get?method=cTRequest&CARDNO={card}&TERMINALID={terminal}&LICENSEKEY={secrets.token_hex(8)}",
            f"/sms/inbound?from=138{unique_digits(8)}&to=10086&text=YECX*{card}",
        ):
            async with session.get(base + path) as response:
                await response.read()
        await asyncio.sleep(settings.loop_lag_interval_s * 2)
        async with session.get(base + "/metrics") as response:
            assert response.status == 200
            content_type = response.headers["Content-Type"]
            body = await response.text()

    # prometheus_client 0.26 announces text format 1.0.0 (0.0.4 plus UTF-8 name escaping).
    assert content_type == "text/plain; version=0.0.4; charset=utf-8", content_type
    for secret in (terminal, card, order):
        assert secret not in body
    families = list(text_string_to_metric_families(body))  # raises on invalid exposition
    names = {f.name for f in families}
    for needed in ("recharge_http_requests", "recharge_db_pool_connections", "recharge_event_loop_lag_seconds",
                   "recharge_dd_connections", "recharge_order_expiry_seconds"):
        assert needed in names, needed
    for family in families:
        for s in family.samples:
            assert not IDENTIFYING_LABELS & set(s.labels), (s.name, s.labels)
            for label, value in s.labels.items():
                assert label == "le" or not LONG_NUMBER.search(value), (s.name, s.labels)
    values = _values(body)
    assert values[("recharge_db_pool_connections", (("state", "max"),))] == settings.pool_max_size
    assert values[("recharge_order_expiry_seconds", ())] == settings.order_expiry_s
    assert values[("recharge_event_loop_lag_seconds_count", ())] >= 1
    assert values[("recharge_dd_connections_total", ())] >= 2
    assert values[("recharge_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] >= 1
