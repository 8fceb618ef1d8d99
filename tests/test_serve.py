"""`rechargectl serve` as an operator runs it: starts, answers health, drains on SIGTERM, exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from recharge.keys import MasterKeys, write_keys
from tests.conftest import ROOT


def _start(database_url: str, data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    write_keys(data_dir / "keys.json", MasterKeys.generate(demo=True))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--dd-port", "0", "--http-port", "0",
         "--database-url", database_url, "--data-dir", str(data_dir), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RECHARGE_DD_HOST": "127.0.0.1", "RECHARGE_HTTP_HOST": "127.0.0.1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("READY "):
            fields = dict(item.split("=") for item in line.split()[1:])
            return proc, {k: int(v) for k, v in fields.items()}
    proc.kill()
    raise AssertionError(f"serve did not become ready: {proc.stderr.read() if proc.stderr else ''}")


@pytest.fixture
def served(empty_database: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    proc, ports = _start(empty_database, tmp_path, "--demo")
    try:
        yield proc, ports
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_serve_answers_health_and_readiness_then_sigterm_exits_zero(served: tuple[subprocess.Popen[str], dict[str, int]]) -> None:
    proc, ports = served
    assert _get(ports["http_port"], "/healthz") == (200, {"status": "ok"})
    assert _get(ports["http_port"], "/readyz") == (200, {"status": "ready"})
    socket.create_connection(("127.0.0.1", ports["dd_port"]), timeout=5).close()  # DD accepts
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_serve_sigint_also_drains_and_exits_zero(served: tuple[subprocess.Popen[str], dict[str, int]]) -> None:
    proc, ports = served
    assert _get(ports["http_port"], "/healthz")[0] == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0


def test_serve_with_demo_seeds_the_demo_terminal_and_metrics_are_exposed(served: tuple[subprocess.Popen[str], dict[str, int]]) -> None:
    proc, ports = served
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['http_port']}/metrics", timeout=5) as response:
        body = response.read().decode()
        content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain")
    assert "recharge_http_requests_total" in body
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_serve_with_demo_says_where_the_console_and_the_admins_one_time_password_are(
    served: tuple[subprocess.Popen[str], dict[str, int]], tmp_path: Path
) -> None:
    proc, ports = served
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    said = (proc.stderr.read() if proc.stderr else "") + (proc.stdout.read() if proc.stdout else "")
    password_file = tmp_path / "console-admin-password.txt"
    assert f"operator console: http://127.0.0.1:{ports['http_port']}/console/" in said
    assert str(password_file.resolve()) in said
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert password_file.read_text(encoding="utf-8").strip() not in said  # never in a log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_two_workers(database: str, tmp_path: Path) -> tuple[subprocess.Popen[str], int, set[int]]:
    """``serve --workers 2`` in a session of its own (so a failed test can stop all of it):
    (the supervisor, the HTTP port, the workers' pids) once both workers are ready."""
    dd_port, http_port = _free_port(), _free_port()
    write_keys(tmp_path / "keys.json", MasterKeys.generate(demo=True))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2", "--dd-port", str(dd_port),
         "--http-port", str(http_port), "--database-url", database, "--data-dir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        env={**os.environ, "RECHARGE_DD_HOST": "127.0.0.1", "RECHARGE_HTTP_HOST": "127.0.0.1"},
    )
    assert proc.stdout is not None
    pids: set[int] = set()
    try:
        while len(pids) < 2:
            line = proc.stdout.readline()
            assert line, "serve exited before both workers were ready"
            if line.startswith("READY "):
                pids.add(int(line.split("pid=")[1].strip()))
    except BaseException:
        _stop_session(proc)
        raise
    return proc, http_port, pids


def _stop_session(proc: subprocess.Popen[str]) -> None:
    """Kill what is left of a served session: the supervisor and any worker."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_with_two_workers_shares_the_ports_and_drains_both(empty_database: str, tmp_path: Path) -> None:
    proc, http_port, pids = _serve_two_workers(empty_database, tmp_path)
    try:
        assert len(pids) == 2  # two processes, one port each kind
        for _ in range(6):
            assert _get(http_port, "/healthz")[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
            body = response.read().decode()
        # multiprocess mode: the scrape merges every worker's counters, whichever served it
        healthz_total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("recharge_http_requests_total{") and 'route="/healthz"' in line
        )
        assert healthz_total == 6
        assert (tmp_path / "metrics").is_dir() and any((tmp_path / "metrics").iterdir())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        _stop_session(proc)


def test_workers_stop_when_their_supervisor_is_killed(empty_database: str, tmp_path: Path) -> None:
    proc, _, pids = _serve_two_workers(empty_database, tmp_path)
    try:
        proc.send_signal(signal.SIGKILL)  # the supervisor dies without forwarding anything
        proc.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), "workers outlived their supervisor"
    finally:
        _stop_session(proc)
